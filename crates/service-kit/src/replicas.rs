//! Which replicas a service talks to, read the same way by the replicator and read-api.
//!
//! `REPLICA_URLS` (comma-separated, any number; an entry may be `name=url`) wins; otherwise
//! the seed's `REPLICA_1_URL` and `REPLICA_2_URL`. Unnamed replicas are `replica-1`,
//! `replica-2`, … in the order given.

use crate::SecretUrl;
use crate::config::ConfigError;

/// One replica: the name used in logs, metrics, headers and commands, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaTarget {
    pub name: String,
    pub url: SecretUrl,
}

/// The replicas named by `replica_urls`, or else by `replica_1_url` and `replica_2_url`
/// (empty ones skipped). At least one is required and names must be unique.
pub fn replica_targets(
    replica_urls: &[SecretUrl],
    replica_1_url: &SecretUrl,
    replica_2_url: &SecretUrl,
) -> Result<Vec<ReplicaTarget>, ConfigError> {
    let entries: Vec<&str> = if replica_urls.is_empty() {
        [replica_1_url, replica_2_url]
            .into_iter()
            .map(SecretUrl::expose)
            .filter(|url| !url.trim().is_empty())
            .collect()
    } else {
        replica_urls.iter().map(SecretUrl::expose).collect()
    };
    if entries.is_empty() {
        return Err(ConfigError::Invalid(
            "no replicas: set REPLICA_URLS or REPLICA_1_URL/REPLICA_2_URL".into(),
        ));
    }

    let mut targets: Vec<ReplicaTarget> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let entry = entry.trim();
        let (name, url) = match entry.split_once('=') {
            Some((name, url)) if is_replica_name(name) => (name.to_owned(), url.trim()),
            _ => (format!("replica-{}", index + 1), entry),
        };
        let url = SecretUrl::new(url);
        if !url.expose().starts_with("postgres://") && !url.expose().starts_with("postgresql://") {
            return Err(ConfigError::Invalid(format!(
                "replica {name}: {url} is not a postgres:// URL"
            )));
        }
        if targets.iter().any(|t| t.name == name) {
            return Err(ConfigError::Invalid(format!(
                "replica name {name} is used twice"
            )));
        }
        targets.push(ReplicaTarget { name, url });
    }
    Ok(targets)
}

/// Names are short identifiers; anything else before `=` is part of a URL.
fn is_replica_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(list: &[&str]) -> Vec<SecretUrl> {
        list.iter().map(|u| SecretUrl::new(*u)).collect()
    }

    #[test]
    fn the_list_wins_and_names_follow_its_order() {
        let targets = replica_targets(
            &urls(&["postgres://a/x", "east=postgres://b/x?sslmode=disable"]),
            &SecretUrl::new("postgres://ignored/x"),
            &SecretUrl::new(""),
        )
        .unwrap();
        let names: Vec<_> = targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["replica-1", "east"]);
        assert_eq!(targets[1].url.expose(), "postgres://b/x?sslmode=disable");
    }

    #[test]
    fn falls_back_to_the_seed_variables_and_skips_empty_ones() {
        let targets = replica_targets(
            &[],
            &SecretUrl::new("postgres://one/x"),
            &SecretUrl::new(""),
        )
        .unwrap();
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].name, "replica-1");
    }

    #[test]
    fn refuses_no_replicas_duplicate_names_and_other_schemes() {
        let empty = SecretUrl::new("");
        assert!(replica_targets(&[], &empty, &empty).is_err());
        assert!(
            replica_targets(
                &urls(&["a=postgres://x/y", "a=postgres://z/y"]),
                &empty,
                &empty
            )
            .is_err()
        );
        let error = replica_targets(&urls(&["mysql://u:pw@x/y"]), &empty, &empty).unwrap_err();
        assert!(!error.to_string().contains("pw"), "{error}");
    }
}
