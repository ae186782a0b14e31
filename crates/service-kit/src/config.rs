//! Settings from three layers: built-in defaults, then an optional TOML file, then
//! environment variables.
//!
//! Every setting is a top-level key; its environment variable is the key in upper case
//! (`database_url` ↔ `DATABASE_URL`), so the seed's variables work unchanged. The file is
//! `CONFIG_FILE` when set (it must exist), else `config/<service>.toml` when present. A key
//! in the file that the service does not know is an error naming it, not silently ignored.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use config::{Config, File, FileFormat, ValueKind};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("unknown setting `{key}` in {path} (known settings: {known})")]
    UnknownKey {
        key: String,
        path: String,
        known: String,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Settings a service loads: serializable (to learn their keys and defaults from
/// `Default`), deserializable, and able to check themselves.
pub trait Settings: Default + Serialize + DeserializeOwned {
    /// Other names a key is also read by, as `(alias, key)`: an environment variable or file
    /// key named `alias` sets `key` (both set is an error unless they agree).
    const ALIASES: &'static [(&'static str, &'static str)] = &[];

    /// Checks values that parse but make no sense, naming the offending key.
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// Loads `T` for `service` from the real environment and file system.
pub fn load<T: Settings>(service: &str) -> Result<T, ConfigError> {
    let file = match std::env::var_os("CONFIG_FILE") {
        Some(path) => Some((PathBuf::from(path), true)),
        None => {
            let path = PathBuf::from(format!("config/{service}.toml"));
            path.exists().then_some((path, false))
        }
    };
    load_from(file, std::env::vars())
}

/// [`load`] with the file and the environment given, for tests.
pub fn load_from<T: Settings>(
    file: Option<(PathBuf, bool)>,
    env_vars: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let defaults = T::default();
    let kinds = Kinds::of(&defaults)?;

    let mut builder = Config::builder()
        .add_source(Config::try_from(&defaults).map_err(|e| ConfigError::Invalid(e.to_string()))?);

    if let Some((path, required)) = &file {
        let shown = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(ConfigError::File {
                    path: shown,
                    reason: e.to_string(),
                });
            }
        };
        let table: toml_keys::Table =
            toml_keys::parse(&text).map_err(|reason| ConfigError::File {
                path: shown.clone(),
                reason,
            })?;
        if let Some((alias, key)) = T::ALIASES
            .iter()
            .find(|(alias, _)| table.keys.iter().any(|k| k == alias))
        {
            return Err(ConfigError::File {
                path: shown,
                reason: format!("`{alias}` is read from the environment only; write `{key}`"),
            });
        }
        if let Some(key) = table.keys.iter().find(|k| !kinds.knows(k)) {
            return Err(ConfigError::UnknownKey {
                key: key.clone(),
                path: shown,
                known: kinds.0.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
    }

    // Only variables that name a known key (or an alias of one): the rest of the environment
    // (PATH, HOME, …) is none of our business, and would only collide with keys.
    let mut env: HashMap<String, String> = HashMap::new();
    for (name, value) in env_vars {
        // An empty variable is unset.
        if value.is_empty() {
            continue;
        }
        let lower = name.to_ascii_lowercase();
        let key = match T::ALIASES.iter().find(|(alias, _)| *alias == lower) {
            Some((alias, key)) => {
                record_once(&mut env, alias, key, value)?;
                continue;
            }
            None => lower,
        };
        if kinds.knows(&key) {
            record_once(&mut env, &key, &key, value)?;
        }
    }
    // Each variable is given the type of its key's default: a number, a boolean or a list
    // (split at commas) only where the default is one, text everywhere else. So a secret such
    // as `007` stays text, and a number still reaches a field of a `#[serde(flatten)]` group
    // as a number (serde hands such a field the source's value as it is, never asking for
    // the field's type).
    for (key, text) in env {
        let value = kinds.typed(&key, &text).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "{}={text:?} is not {} (setting `{key}`)",
                key.to_ascii_uppercase(),
                kinds.describe(&key)
            ))
        })?;
        builder = builder
            .set_override(key.as_str(), value)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    }

    let settings: T = builder
        .build()
        .and_then(Config::try_deserialize)
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    settings.validate()?;
    Ok(settings)
}

/// Records `value` for `key` (given as `name`); a second value for the same key must agree.
fn record_once(
    env: &mut HashMap<String, String>,
    name: &str,
    key: &str,
    value: String,
) -> Result<(), ConfigError> {
    match env.get(key) {
        Some(earlier) if *earlier != value => Err(ConfigError::Invalid(format!(
            "{} is set twice with different values (also through {}): set it once",
            key.to_ascii_uppercase(),
            name.to_ascii_uppercase()
        ))),
        _ => {
            env.insert(key.to_owned(), value);
            Ok(())
        }
    }
}

/// The keys of the settings and the kind of value each holds, learnt from the defaults.
struct Kinds(BTreeMap<String, Kind>);

#[derive(Clone, Copy)]
enum Kind {
    Integer,
    Float,
    Bool,
    List,
    Text,
}

impl Kinds {
    fn of<T: Serialize>(defaults: &T) -> Result<Self, ConfigError> {
        let Ok(serde_json::Value::Object(map)) = serde_json::to_value(defaults) else {
            return Err(ConfigError::Invalid(
                "settings must serialize to a map".into(),
            ));
        };
        let kind = |value: &serde_json::Value| match value {
            serde_json::Value::Number(n) if n.is_f64() => Kind::Float,
            serde_json::Value::Number(_) => Kind::Integer,
            serde_json::Value::Bool(_) => Kind::Bool,
            serde_json::Value::Array(_) => Kind::List,
            _ => Kind::Text,
        };
        Ok(Self(
            map.iter()
                .map(|(key, value)| (key.clone(), kind(value)))
                .collect(),
        ))
    }

    fn knows(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// `text` as a value of `key`'s kind, or `None` when it is not one.
    fn typed(&self, key: &str, text: &str) -> Option<ValueKind> {
        let trimmed = text.trim();
        Some(match self.0.get(key).copied().unwrap_or(Kind::Text) {
            Kind::Integer => match trimmed.parse::<i64>() {
                Ok(value) => ValueKind::I64(value),
                Err(_) => ValueKind::U64(trimmed.parse().ok()?),
            },
            Kind::Float => ValueKind::Float(trimmed.parse().ok()?),
            Kind::Bool => ValueKind::Boolean(match trimmed.to_ascii_lowercase().as_str() {
                "true" | "on" | "yes" | "1" => true,
                "false" | "off" | "no" | "0" => false,
                _ => return None,
            }),
            Kind::List => ValueKind::Array(
                text.split(',')
                    .map(|item| item.trim().to_owned().into())
                    .collect(),
            ),
            Kind::Text => ValueKind::String(text.to_owned()),
        })
    }

    fn describe(&self, key: &str) -> &'static str {
        match self.0.get(key) {
            Some(Kind::Integer) => "a whole number",
            Some(Kind::Float) => "a number",
            Some(Kind::Bool) => "true or false",
            _ => "valid",
        }
    }
}

/// Just enough TOML reading to list the top-level keys of a settings file.
mod toml_keys {
    pub struct Table {
        pub keys: Vec<String>,
    }

    pub fn parse(text: &str) -> Result<Table, String> {
        let value = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .map_err(|e| e.to_string())?;
        let map = value
            .try_deserialize::<std::collections::HashMap<String, config::Value>>()
            .map_err(|e| e.to_string())?;
        Ok(Table {
            keys: map.into_keys().collect(),
        })
    }
}

/// Fails naming the first key whose duration is zero: a zero timeout or interval would mean
/// "never wait" or "spin", never what an operator meant.
pub fn require_positive(durations: &[(&str, std::time::Duration)]) -> Result<(), ConfigError> {
    match durations.iter().find(|(_, value)| value.is_zero()) {
        Some((key, _)) => Err(ConfigError::Invalid(format!(
            "{key} must be greater than 0"
        ))),
        None => Ok(()),
    }
}

/// Deserializes a duration given in milliseconds (`*_ms` settings).
pub mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use serde::Deserialize;

    use super::*;
    use crate::SecretUrl;

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(default)]
    struct Sample {
        database_url: SecretUrl,
        port: u16,
        replica_urls: Vec<String>,
        #[serde(with = "millis")]
        timeout_ms: Duration,
        log_format: String,
        token: crate::SecretText,
        run_migrations: bool,
    }

    impl Default for Sample {
        fn default() -> Self {
            Self {
                database_url: SecretUrl::new("postgres://localhost/products"),
                port: 8000,
                replica_urls: Vec::new(),
                timeout_ms: Duration::from_millis(500),
                log_format: "text".into(),
                token: crate::SecretText::default(),
                run_migrations: true,
            }
        }
    }

    impl Settings for Sample {
        fn validate(&self) -> Result<(), ConfigError> {
            if self.port == 0 {
                return Err(ConfigError::Invalid("port must not be 0".into()));
            }
            Ok(())
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn file(text: &str) -> (tempfile_path::TempPath, Option<(PathBuf, bool)>) {
        let temp = tempfile_path::TempPath::new(text);
        let path = temp.path.clone();
        (temp, Some((path, true)))
    }

    /// A file that removes itself, without pulling in a crate for it.
    mod tempfile_path {
        use super::*;
        pub struct TempPath {
            pub path: PathBuf,
        }
        impl TempPath {
            pub fn new(text: &str) -> Self {
                let path = std::env::temp_dir().join(format!(
                    "service-kit-{}-{}.toml",
                    std::process::id(),
                    rand::random::<u64>()
                ));
                let mut f = std::fs::File::create(&path).unwrap();
                f.write_all(text.as_bytes()).unwrap();
                Self { path }
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let s: Sample = load_from(None, env(&[])).unwrap();
        assert_eq!(s.port, 8000);
        assert_eq!(s.timeout_ms, Duration::from_millis(500));
        assert!(s.replica_urls.is_empty());
    }

    #[test]
    fn environment_overrides_file_overrides_defaults() {
        let (_keep, file) = file("port = 9000\nlog_format = \"json\"\n");
        let s: Sample = load_from(file, env(&[("PORT", "9100"), ("PATH", "/bin")])).unwrap();
        assert_eq!(s.port, 9100);
        assert_eq!(s.log_format, "json");
    }

    #[test]
    fn reads_the_seed_variables_and_lists() {
        let s: Sample = load_from(
            None,
            env(&[
                ("DATABASE_URL", "postgres://u:p@db/x"),
                ("REPLICA_URLS", "postgres://a/x,postgres://b/x"),
                ("TIMEOUT_MS", "250"),
            ]),
        )
        .unwrap();
        assert_eq!(s.database_url.expose(), "postgres://u:p@db/x");
        assert_eq!(s.replica_urls, ["postgres://a/x", "postgres://b/x"]);
        assert_eq!(s.timeout_ms, Duration::from_millis(250));
    }

    #[test]
    fn an_empty_list_variable_is_an_empty_list() {
        let s: Sample = load_from(None, env(&[("REPLICA_URLS", "")])).unwrap();
        assert!(s.replica_urls.is_empty());
    }

    #[test]
    fn unknown_file_keys_are_named() {
        let (_keep, file) = file("prot = 1\n");
        let error = load_from::<Sample>(file, env(&[])).unwrap_err().to_string();
        assert!(error.contains("unknown setting `prot`"), "{error}");
    }

    #[test]
    fn a_missing_required_file_and_bad_values_are_errors() {
        let missing = Some((PathBuf::from("/nonexistent/x.toml"), true));
        assert!(load_from::<Sample>(missing, env(&[])).is_err());
        assert!(load_from::<Sample>(None, env(&[("PORT", "eighty")])).is_err());
        let error = load_from::<Sample>(None, env(&[("PORT", "0")])).unwrap_err();
        assert!(error.to_string().contains("port must not be 0"));
    }

    #[test]
    fn numeric_looking_strings_survive_and_typed_values_still_parse() {
        for secret in ["007", "123456", "1e3", "true"] {
            let sample: Sample = load_from(
                None,
                env(&[
                    ("TOKEN", secret),
                    ("PORT", "8081"),
                    ("TIMEOUT_MS", "250"),
                    ("RUN_MIGRATIONS", "false"),
                    ("REPLICA_URLS", "postgres://a/x, postgres://b/x"),
                ]),
            )
            .unwrap();
            assert_eq!(sample.token.expose(), secret);
            assert_eq!(sample.port, 8081);
            assert_eq!(sample.timeout_ms, Duration::from_millis(250));
            assert!(!sample.run_migrations);
            assert_eq!(sample.replica_urls, ["postgres://a/x", "postgres://b/x"]);
        }
    }

    /// Settings shaped as the services' are: shared groups flattened beside own keys.
    #[derive(Debug, Serialize, Deserialize)]
    #[serde(default)]
    struct Grouped {
        #[serde(flatten)]
        http: crate::groups::HttpSettings,
        #[serde(flatten)]
        broker: crate::groups::AmqpSettings,
        token: crate::SecretText,
        verbose: bool,
    }

    impl Default for Grouped {
        fn default() -> Self {
            Self {
                http: crate::groups::HttpSettings::on_port(8000),
                broker: crate::groups::AmqpSettings::local(),
                token: crate::SecretText::default(),
                verbose: false,
            }
        }
    }

    impl Settings for Grouped {
        const ALIASES: &'static [(&'static str, &'static str)] =
            &[("rabbitmq_urls", "rabbitmq_url")];
    }

    #[test]
    fn grouped_keys_stay_flat_and_typed_and_secrets_stay_text() {
        let (_keep, file) = file("http_workers = 3\n");
        let s: Grouped = load_from(
            file,
            env(&[
                ("PORT", "8081"),
                ("AMQP_CONNECT_TIMEOUT_MS", "250"),
                ("TOKEN", "007"),
                ("VERBOSE", "yes"),
            ]),
        )
        .unwrap();
        assert_eq!(s.http.port, 8081);
        assert_eq!(s.http.http_workers, 3);
        assert_eq!(s.broker.amqp_connect_timeout_ms, Duration::from_millis(250));
        assert_eq!(s.token.expose(), "007");
        assert!(s.verbose);
        for secret in ["123456", "1e3", "true"] {
            let s: Grouped = load_from(None, env(&[("TOKEN", secret)])).unwrap();
            assert_eq!(s.token.expose(), secret);
        }
    }

    #[test]
    fn a_value_of_the_wrong_kind_is_refused_naming_its_variable() {
        let error = load_from::<Grouped>(None, env(&[("PORT", "eighty")]))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("PORT") && error.contains("eighty"),
            "{error}"
        );
        let error = load_from::<Grouped>(None, env(&[("PORT", "70000")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("70000"), "{error}");
    }

    #[test]
    fn an_alias_sets_its_key_and_must_agree_with_it() {
        let url = "amqp://u:p@a:5681/v,amqp://u:p@b:5682/v";
        let s: Grouped = load_from(None, env(&[("RABBITMQ_URLS", url)])).unwrap();
        assert_eq!(s.broker.rabbitmq_url.expose(), url);
        let same: Grouped =
            load_from(None, env(&[("RABBITMQ_URLS", url), ("RABBITMQ_URL", url)])).unwrap();
        assert_eq!(same.broker.rabbitmq_url.expose(), url);
        let error = load_from::<Grouped>(
            None,
            env(&[("RABBITMQ_URLS", url), ("RABBITMQ_URL", "amqp://x/v")]),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("RABBITMQ_URL"), "{error}");
        let (_keep, file) = file("rabbitmq_urls = \"amqp://x/v\"\n");
        let error = load_from::<Grouped>(file, env(&[]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("rabbitmq_url"), "{error}");
    }
}
