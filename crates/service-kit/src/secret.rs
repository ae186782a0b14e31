use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A connection URL that may hold a password. `Display` and `Debug` show it with the
/// password replaced by `***`; only [`SecretUrl::expose`] gives the real text.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password, for the one place that connects with it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL without its password, for logs and error messages.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

/// `scheme://user:***@host/path`; text that is not a URL is hidden entirely, since it may be
/// a key-value string with a password in it.
pub fn redact(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => "<unparsable URL hidden>".to_owned(),
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({})", self.redacted())
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

/// Serialized in full: only the configuration loader serializes settings (to learn their
/// defaults and keys); nothing logs a serialized form.
impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// A secret that is not a URL (an API token): never shown, only whether it is set.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretText(String);

impl SecretText {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }

    /// The secret itself, for the one place that compares with it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() {
            "SecretText(***)"
        } else {
            "SecretText(unset)"
        })
    }
}

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self)
    }
}

/// Serialized in full for the configuration loader only, as [`SecretUrl`].
impl Serialize for SecretText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_the_password_everywhere_but_expose() {
        let url = SecretUrl::new("postgres://app:s3cret@db:5432/products");
        assert_eq!(url.to_string(), "postgres://app:***@db:5432/products");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert!(url.expose().contains("s3cret"));
    }

    #[test]
    fn a_token_never_shows() {
        let token = SecretText::new("t0ken");
        assert_eq!(format!("{token:?}"), "SecretText(***)");
        assert_eq!(format!("{:?}", SecretText::default()), "SecretText(unset)");
    }

    #[test]
    fn leaves_urls_without_password_readable() {
        let url = SecretUrl::new("amqp://guest@rabbit/");
        assert_eq!(url.to_string(), "amqp://guest@rabbit/");
        assert_eq!(redact("host=db password=x"), "<unparsable URL hidden>");
    }
}
