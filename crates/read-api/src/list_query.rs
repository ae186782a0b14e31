//! The query string of `GET /api/products`, parsed into a [`ListRequest`] before anything
//! reads a database.

use domain::Price;

use crate::cursor::{Cursor, InvalidCursor};

pub const DEFAULT_LIMIT: i64 = 100;
pub const MAX_LIMIT: i64 = 1000;
/// Longer than any product name can be, so a longer filter could match nothing.
const MAX_NAME_FILTER_CHARS: usize = 200;

const KNOWN: &[&str] = &["limit", "cursor", "name", "minPrice", "maxPrice", "inStock"];

/// Which live products a page shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// An `ILIKE` pattern matching names that contain the filter text literally.
    pub name_pattern: Option<String>,
    pub min_price: Option<Price>,
    pub max_price: Option<Price>,
    /// `true`: stock above 0; `false`: stock 0.
    pub in_stock: Option<bool>,
}

/// One page's worth of `GET /api/products`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    pub filter: ListFilter,
    pub limit: i64,
    /// Start after this position; `None` for the first page.
    pub after: Option<Cursor>,
}

#[derive(Debug, thiserror::Error)]
pub enum InvalidQuery {
    /// Every problem with the parameters, joined.
    #[error("{0}")]
    Parameters(String),
    #[error(transparent)]
    Cursor(#[from] InvalidCursor),
}

impl ListRequest {
    /// Parses the decoded query pairs; unknown, repeated and malformed parameters are refused,
    /// all reported at once.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, InvalidQuery> {
        let mut problems = Vec::new();
        let mut request = ListRequest {
            filter: ListFilter::default(),
            limit: DEFAULT_LIMIT,
            after: None,
        };
        let mut cursor_error = None;
        for (index, (key, value)) in pairs.iter().enumerate() {
            if pairs[..index].iter().any(|(earlier, _)| earlier == key) {
                problems.push(format!("{key} is given more than once"));
                continue;
            }
            let outcome = match key.as_str() {
                "limit" => parse_limit(value).map(|limit| request.limit = limit),
                "cursor" => {
                    match Cursor::decode(value) {
                        Ok(cursor) => request.after = Some(cursor),
                        Err(error) => cursor_error = Some(error),
                    }
                    Ok(())
                }
                "name" => parse_name(value).map(|p| request.filter.name_pattern = Some(p)),
                "minPrice" => parse_price(key, value).map(|p| request.filter.min_price = Some(p)),
                "maxPrice" => parse_price(key, value).map(|p| request.filter.max_price = Some(p)),
                "inStock" => parse_bool(key, value).map(|b| request.filter.in_stock = Some(b)),
                _ => Err(format!(
                    "unknown query parameter {key:?} (known: {})",
                    KNOWN.join(", ")
                )),
            };
            if let Err(problem) = outcome {
                problems.push(problem);
            }
        }
        if let (Some(min), Some(max)) = (request.filter.min_price, request.filter.max_price)
            && min > max
        {
            problems.push(format!("minPrice ({min}) must not exceed maxPrice ({max})"));
        }
        match (problems.is_empty(), cursor_error) {
            (true, None) => Ok(request),
            (true, Some(error)) => Err(error.into()),
            (false, cursor_error) => {
                if cursor_error.is_some() {
                    problems.push("cursor is invalid".into());
                }
                Err(InvalidQuery::Parameters(problems.join("; ")))
            }
        }
    }
}

fn parse_limit(value: &str) -> Result<i64, String> {
    value
        .parse::<i64>()
        .ok()
        .filter(|limit| (1..=MAX_LIMIT).contains(limit))
        .ok_or_else(|| format!("limit must be an integer from 1 to {MAX_LIMIT} (got {value:?})"))
}

fn parse_name(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("name must not be empty".into());
    }
    if value.chars().count() > MAX_NAME_FILTER_CHARS {
        return Err(format!(
            "name must be at most {MAX_NAME_FILTER_CHARS} characters"
        ));
    }
    if value.chars().any(char::is_control) {
        return Err("name must not contain control characters".into());
    }
    Ok(contains_pattern(value))
}

/// `%text%` with `%`, `_` and `\` escaped, so they match themselves (`\` is the default
/// escape character of `LIKE`/`ILIKE`).
fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Same rules as a product's price: a number with at most 2 decimals, 0 to 1,000,000,000,
/// never rounded.
fn parse_price(key: &str, value: &str) -> Result<Price, String> {
    if value.starts_with('"') {
        return Err(format!("{key} must be a number (got {value:?})"));
    }
    Price::parse_json(value).map_err(|e| {
        let message = e.message.strip_prefix("price ").unwrap_or(&e.message);
        format!("{key} {message} (got {value:?})")
    })
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{key} must be true or false (got {value:?})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &[(&str, &str)]) -> Result<ListRequest, InvalidQuery> {
        let pairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ListRequest::parse(&pairs)
    }

    #[test]
    fn defaults_and_every_parameter() {
        let plain = parse(&[]).unwrap();
        assert_eq!(plain.limit, DEFAULT_LIMIT);
        assert_eq!(plain.filter, ListFilter::default());

        let full = parse(&[
            ("limit", "5"),
            ("name", "50%_off\\"),
            ("minPrice", "1.5"),
            ("maxPrice", "1e3"),
            ("inStock", "false"),
        ])
        .unwrap();
        assert_eq!(full.limit, 5);
        assert_eq!(
            full.filter.name_pattern.as_deref(),
            Some("%50\\%\\_off\\\\%")
        );
        assert_eq!(full.filter.min_price.map(Price::cents), Some(150));
        assert_eq!(full.filter.max_price.map(Price::cents), Some(100_000));
        assert_eq!(full.filter.in_stock, Some(false));
    }

    #[test]
    fn refuses_bad_parameters_naming_each() {
        let bad: &[&[(&str, &str)]] = &[
            &[("limit", "0")],
            &[("limit", "1001")],
            &[("limit", "ten")],
            &[("minPrice", "1.005")],
            &[("minPrice", "-1")],
            &[("maxPrice", "abc")],
            &[("maxPrice", "\"5\"")],
            &[("minPrice", "5"), ("maxPrice", "4.99")],
            &[("inStock", "yes")],
            &[("name", "")],
            &[("colour", "red")],
            &[("limit", "5"), ("limit", "6")],
        ];
        for query in bad {
            match parse(query) {
                Err(InvalidQuery::Parameters(message)) => {
                    assert!(message.contains(query[0].0), "{query:?}: {message}");
                }
                other => panic!("{query:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_bad_cursor_alone_is_its_own_error() {
        assert!(matches!(
            parse(&[("cursor", "nope")]),
            Err(InvalidQuery::Cursor(_))
        ));
        assert!(matches!(
            parse(&[("cursor", "nope"), ("limit", "0")]),
            Err(InvalidQuery::Parameters(_))
        ));
    }
}
