//! `If-Match` on PUT, PATCH and DELETE: optimistic concurrency on the product's version,
//! whose strong ETag is `"<version>"`.

use actix_web::http::header::{HeaderMap, IF_MATCH};
use domain::{Product, Version};

/// What the client's `If-Match` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// No `If-Match`: write unconditionally.
    None,
    /// `If-Match: *`: only if the product exists.
    Exists,
    /// `If-Match: "3"` (or a list): only if the live product has one of these versions.
    /// Weak tags (`W/"3"`) never match, as strong comparison requires.
    Version(Vec<Version>),
}

/// `If-Match` that is not `*` or a list of quoted versions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("If-Match must be * or a quoted version such as \"3\" (got {0:?})")]
pub struct InvalidIfMatch(pub String);

/// The ETag for a product version.
pub fn etag(version: Version) -> String {
    format!("\"{version}\"")
}

impl Precondition {
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, InvalidIfMatch> {
        let mut versions = Vec::new();
        let mut seen_header = false;
        for value in headers.get_all(IF_MATCH) {
            seen_header = true;
            let text = value
                .to_str()
                .map_err(|_| InvalidIfMatch("<non-ASCII>".into()))?;
            for tag in text.split(',').map(str::trim) {
                if tag == "*" {
                    return Ok(Precondition::Exists);
                }
                versions.extend(parse_tag(tag).ok_or_else(|| InvalidIfMatch(text.to_owned()))?);
            }
        }
        Ok(if seen_header {
            Precondition::Version(versions)
        } else {
            Precondition::None
        })
    }

    /// Whether a write may go ahead on `current` (the live product, if there is one).
    pub fn allows(&self, current: Option<&Product>) -> bool {
        let live = current.filter(|p| !p.is_deleted());
        match self {
            Precondition::None => true,
            Precondition::Exists => live.is_some(),
            Precondition::Version(versions) => live.is_some_and(|p| versions.contains(&p.version)),
        }
    }
}

/// `"3"` → `Some(Some(v3))`; `W/"3"` → `Some(None)` (valid, never matches); else `None`.
fn parse_tag(tag: &str) -> Option<Option<Version>> {
    let (weak, quoted) = match tag.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, tag),
    };
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let version = Version::new(inner.parse().ok()?)?;
    Some((!weak).then_some(version))
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::HeaderValue;

    use super::*;

    fn parse(values: &[&str]) -> Result<Precondition, InvalidIfMatch> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(IF_MATCH, HeaderValue::from_str(value).unwrap());
        }
        Precondition::from_headers(&headers)
    }

    fn v(n: i64) -> Version {
        Version::new(n).unwrap()
    }

    #[test]
    fn parses_the_forms_clients_send() {
        assert_eq!(parse(&[]).unwrap(), Precondition::None);
        assert_eq!(parse(&["*"]).unwrap(), Precondition::Exists);
        assert_eq!(
            parse(&["\"3\""]).unwrap(),
            Precondition::Version(vec![v(3)])
        );
        assert_eq!(
            parse(&["\"3\", \"5\"", "\"7\""]).unwrap(),
            Precondition::Version(vec![v(3), v(5), v(7)])
        );
        assert_eq!(parse(&["W/\"3\""]).unwrap(), Precondition::Version(vec![]));
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in [
            "3",
            "\"\"",
            "\"abc\"",
            "\"0\"",
            "\"-1\"",
            "\"3",
            "",
            "\"99999999999999999999\"",
        ] {
            assert!(parse(&[bad]).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn etag_round_trips() {
        assert_eq!(
            parse(&[&etag(v(42))]).unwrap(),
            Precondition::Version(vec![v(42)])
        );
    }
}
