//! Settings from three layers: built-in defaults, then an optional TOML file, then
//! environment variables.
//!
//! Every setting is a top-level key; its environment variable is the key in upper case
//! (`database_url` ↔ `DATABASE_URL`), so the seed's variables work unchanged. The file is
//! `CONFIG_FILE` when set (it must exist), else `config/<service>.toml` when present. A key
//! in the file that the service does not know is an error naming it, not silently ignored.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use config::{Config, Environment, File, FileFormat};
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
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let defaults = T::default();
    let (known, lists) = known_keys(&defaults)?;

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
        if let Some(key) = table.keys.iter().find(|k| !known.contains(k.as_str())) {
            return Err(ConfigError::UnknownKey {
                key: key.clone(),
                path: shown,
                known: known.iter().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
    }

    // Only variables that name a known key: the rest of the environment (PATH, HOME, …) is
    // none of our business, and would only collide with keys.
    let mut env: HashMap<String, String> = env
        .into_iter()
        .filter(|(name, _)| known.contains(name.to_ascii_lowercase().as_str()))
        .collect();
    // Values stay strings until each field asks for its type: parsing them up front would turn
    // a secret such as `007` into the number 7. Lists (keys whose default is a list) are split
    // here instead, at commas.
    for key in &lists {
        let Some(name) = env
            .keys()
            .find(|name| name.eq_ignore_ascii_case(key))
            .cloned()
        else {
            continue;
        };
        let value = env.remove(&name).unwrap_or_default();
        if value.trim().is_empty() {
            continue;
        }
        let items: Vec<String> = value
            .split(',')
            .map(|item| item.trim().to_owned())
            .collect();
        builder = builder
            .set_override(key.as_str(), items)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    }
    let environment = Environment::default().source(Some(env)).ignore_empty(true);
    builder = builder.add_source(environment);

    let settings: T = builder
        .build()
        .and_then(Config::try_deserialize)
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    settings.validate()?;
    Ok(settings)
}

/// Every key of the settings, and those of them that hold a list (their environment
/// variable is comma-separated).
fn known_keys<T: Serialize>(
    defaults: &T,
) -> Result<(BTreeSet<String>, BTreeSet<String>), ConfigError> {
    match serde_json::to_value(defaults) {
        Ok(serde_json::Value::Object(map)) => Ok((
            map.keys().cloned().collect(),
            map.iter()
                .filter(|(_, value)| value.is_array())
                .map(|(key, _)| key.clone())
                .collect(),
        )),
        _ => Err(ConfigError::Invalid(
            "settings must serialize to a map".into(),
        )),
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
}
