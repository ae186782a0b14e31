use std::fmt;

use percent_encoding::percent_decode_str;
use url::Url;

use crate::MessagingError;

/// Where the broker is and who we are to it: one `amqp://user:pass@host:port/vhost` URL, or
/// several, comma-separated, for the nodes of a RabbitMQ cluster (any node that answers will
/// do; they must share the vhost).
///
/// Parsed here rather than by amqprs, which neither percent-decodes the user, password and
/// vhost (`/%2F` would be a vhost literally named `%2F`) nor survives a query key without a
/// value (`docs/dependencies.md#amqprs-urls`). `Display` and `Debug` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    nodes: Vec<Node>,
}

/// One node of the broker.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) password: String,
    pub(crate) vhost: String,
    /// Seconds, from `?heartbeat=N`; `None` lets [`crate::BrokerSettings`] decide.
    pub(crate) heartbeat: Option<u16>,
}

impl BrokerAddress {
    /// One URL, or several separated by commas (a cluster's nodes).
    pub fn parse(raw: &str) -> Result<Self, MessagingError> {
        let nodes = raw
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(Node::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let Some(first) = nodes.first() else {
            return Err(MessagingError::InvalidAddress("no broker URL".into()));
        };
        if let Some(other) = nodes.iter().find(|n| n.vhost != first.vhost) {
            return Err(MessagingError::InvalidAddress(format!(
                "every node must name the same vhost ({} and {})",
                first, other
            )));
        }
        Ok(Self { nodes })
    }

    pub fn vhost(&self) -> &str {
        &self.nodes[0].vhost
    }

    /// The nodes, in a random order: where connecting goes first, so clients spread over a
    /// cluster and a dead first node costs everyone the same.
    pub(crate) fn nodes_in_random_order(&self) -> Vec<&Node> {
        use rand::seq::SliceRandom;
        let mut nodes: Vec<&Node> = self.nodes.iter().collect();
        nodes.shuffle(&mut rand::rng());
        nodes
    }

    /// Replicas of each quorum queue when it is first declared: every node, up to 3; `None`
    /// for a single node (the broker's default, as queues declared before had).
    pub fn quorum_group_size(&self) -> Option<u8> {
        match self.nodes.len() {
            0 | 1 => None,
            n => Some(u8::try_from(n.min(3)).unwrap_or(3)),
        }
    }
}

impl Node {
    fn parse(raw: &str) -> Result<Self, MessagingError> {
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
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "amqp://{}@{}:{}/{}",
            self.user, self.host, self.port, self.vhost
        )
    }
}

impl fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, node) in self.nodes.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{node}")?;
        }
        Ok(())
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

    fn one(raw: &str) -> Node {
        let mut address = BrokerAddress::parse(raw).unwrap();
        assert_eq!(address.nodes.len(), 1);
        address.nodes.remove(0)
    }

    #[test]
    fn parses_and_decodes() {
        let a = one("amqp://us%40er:p%40ss@rabbit:5673/%2F?heartbeat=7");
        assert_eq!(a.host, "rabbit");
        assert_eq!(a.port, 5673);
        assert_eq!(a.user, "us@er");
        assert_eq!(a.password, "p@ss");
        assert_eq!(a.vhost, "/");
        assert_eq!(a.heartbeat, Some(7));
    }

    #[test]
    fn defaults_like_the_uri_spec() {
        let a = one("amqp://localhost");
        assert_eq!(
            (a.port, a.vhost.as_str(), a.user.as_str()),
            (5672, "/", "guest")
        );
        assert_eq!(one("amqp://h/app").vhost, "app");
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
    fn a_cluster_is_a_list_of_nodes_on_one_vhost() {
        let cluster =
            BrokerAddress::parse("amqp://u:p@a:5681/v, amqp://u:p@b:5682/v,amqp://u:p@c/v")
                .unwrap();
        assert_eq!(cluster.nodes.len(), 3);
        assert_eq!(cluster.vhost(), "v");
        assert_eq!(cluster.quorum_group_size(), Some(3));
        assert_eq!(cluster.nodes_in_random_order().len(), 3);
        assert_eq!(
            cluster.to_string(),
            "amqp://u@a:5681/v,amqp://u@b:5682/v,amqp://u@c:5672/v"
        );
        assert_eq!(
            BrokerAddress::parse("amqp://a,amqp://b")
                .unwrap()
                .quorum_group_size(),
            Some(2)
        );
        assert_eq!(
            BrokerAddress::parse("amqp://a")
                .unwrap()
                .quorum_group_size(),
            None
        );
        assert!(BrokerAddress::parse("amqp://a/x,amqp://b/y").is_err());
        assert!(BrokerAddress::parse(" , ").is_err());
    }

    #[test]
    fn never_shows_the_password() {
        let a = BrokerAddress::parse("amqp://u:secret@h/v").unwrap();
        assert!(!format!("{a} {a:?}").contains("secret"));
    }
}
