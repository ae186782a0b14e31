use std::fmt;

use percent_encoding::percent_decode_str;
use url::Url;

use crate::MessagingError;

/// Where the broker is and who we are to it, from an `amqp://user:pass@host:port/vhost` URL.
///
/// Parsed here rather than by amqprs, which neither percent-decodes the user, password and
/// vhost (`/%2F` would be a vhost literally named `%2F`) nor survives a query key without a
/// value (`docs/dependencies.md#amqprs-urls`). `Display` and `Debug` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) password: String,
    pub(crate) vhost: String,
    /// Seconds, from `?heartbeat=N`; `None` lets [`crate::BrokerSettings`] decide.
    pub(crate) heartbeat: Option<u16>,
}

impl BrokerAddress {
    pub fn parse(raw: &str) -> Result<Self, MessagingError> {
        let invalid = |why: String| MessagingError::InvalidAddress(why);
        let url = Url::parse(raw).map_err(|e| invalid(format!("{e}")))?;
        match url.scheme() {
            "amqp" => {}
            "amqps" => return Err(invalid("amqps (TLS) is not supported by this build".into())),
            other => return Err(invalid(format!("scheme must be amqp, not {other}"))),
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid("the host is missing".into()))?
            .to_owned();
        let decode = |text: &str| percent_decode_str(text).decode_utf8_lossy().into_owned();
        let user = match url.username() {
            "" => "guest".to_owned(),
            user => decode(user),
        };
        let password = url.password().map_or_else(|| "guest".to_owned(), decode);
        let vhost = match url.path() {
            "" | "/" => "/".to_owned(),
            path => decode(&path[1..]),
        };
        let mut heartbeat = None;
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "heartbeat" => {
                    let seconds = value.parse::<u16>().map_err(|_| {
                        invalid(format!(
                            "heartbeat must be a number of seconds, not {value:?}"
                        ))
                    })?;
                    heartbeat = Some(seconds);
                }
                other => {
                    return Err(invalid(format!(
                        "unsupported parameter {other:?} (supported: heartbeat)"
                    )));
                }
            }
        }
        Ok(Self {
            host,
            port: url.port().unwrap_or(5672),
            user,
            password,
            vhost,
            heartbeat,
        })
    }

    pub fn vhost(&self) -> &str {
        &self.vhost
    }
}

impl fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "amqp://{}@{}:{}/{}",
            self.user, self.host, self.port, self.vhost
        )
    }
}

impl fmt::Debug for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerAddress({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_decodes() {
        let a = BrokerAddress::parse("amqp://us%40er:p%40ss@rabbit:5673/%2F?heartbeat=7").unwrap();
        assert_eq!(a.host, "rabbit");
        assert_eq!(a.port, 5673);
        assert_eq!(a.user, "us@er");
        assert_eq!(a.password, "p@ss");
        assert_eq!(a.vhost, "/");
        assert_eq!(a.heartbeat, Some(7));
    }

    #[test]
    fn defaults_like_the_uri_spec() {
        let a = BrokerAddress::parse("amqp://localhost").unwrap();
        assert_eq!(
            (a.port, a.vhost.as_str(), a.user.as_str()),
            (5672, "/", "guest")
        );
        assert_eq!(BrokerAddress::parse("amqp://h/app").unwrap().vhost, "app");
    }

    #[test]
    fn rejects_what_amqprs_would_mishandle() {
        for raw in [
            "amqp://h?heartbeat",
            "amqp://h?heartbeat=x",
            "amqp://h?frame_max=1",
            "http://h",
            "amqps://h",
            "not a url",
        ] {
            assert!(BrokerAddress::parse(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn never_shows_the_password() {
        let a = BrokerAddress::parse("amqp://u:secret@h/v").unwrap();
        assert!(!format!("{a} {a:?}").contains("secret"));
    }
}
