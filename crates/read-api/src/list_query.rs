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

/// More query parameters than this are refused outright.
const MAX_PARAMETERS: usize = 32;

impl ListRequest {
    /// Parses the decoded query pairs; unknown, repeated and malformed parameters are refused,
    /// all reported at once.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, InvalidQuery> {
        // Six parameters exist; a flood of them is refused before any per-pair work, so a
        // huge query costs neither quadratic checks nor a huge answer.
        if pairs.len() > MAX_PARAMETERS {
            return Err(InvalidQuery::Parameters(format!(
                "too many query parameters ({}); at most {MAX_PARAMETERS}",
                pairs.len()
            )));
        }
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
    use chrono::DateTime;
    use proptest::prelude::*;
    use uuid::Uuid;

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

    /// Parameter names: the known ones, near misses and anything.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(KNOWN).prop_map(String::from),
            1 => prop::sample::select(vec!["colour", "Limit", "", " limit", "min_price"])
                .prop_map(String::from),
            1 => "\\PC{0,6}",
        ]
    }

    /// Values: any text, number-like text, words and cursors (valid or not).
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            "(?s).{0,24}",
            "-?[0-9]{1,22}(\\.[0-9]{1,4})?([eE][-+]?[0-9]{1,4})?",
            prop::sample::select(vec![
                "true",
                "false",
                "maybe",
                "NaN",
                "Infinity",
                "-Infinity",
                "\"5\"",
                "",
                "1e400",
                "0",
                "1",
                "1000",
                "1001",
                "%",
                "_",
                "\\",
                "'; DROP TABLE products; --",
            ])
            .prop_map(String::from),
            (any::<i64>(), any::<u128>()).prop_filter_map("no such time", |(micros, id)| {
                DateTime::from_timestamp_micros(micros).map(|created_at| {
                    Cursor {
                        created_at,
                        id: Uuid::from_u128(id),
                    }
                    .encode()
                })
            }),
        ]
    }

    /// A value of the kind `key` takes (valid or near it), or else anything.
    fn value_for(key: &str) -> BoxedStrategy<String> {
        let right_kind = match key {
            "limit" => (-1..=1001_i64).prop_map(|n| n.to_string()).boxed(),
            "minPrice" | "maxPrice" => prop_oneof![
                (0..=Price::MAX_CENTS).prop_map(|c| Price::from_cents(c).unwrap().to_string()),
                (0..100_000_i64).prop_map(|c| format!("{c}e-3")),
            ]
            .boxed(),
            "inStock" => prop::sample::select(vec!["true", "false", "TRUE", "1"])
                .prop_map(String::from)
                .boxed(),
            "name" => "[^\\p{Cc}]{1,20}".boxed(),
            _ => value().boxed(),
        };
        prop_oneof![3 => right_kind, 1 => value()].boxed()
    }

    fn pair() -> impl Strategy<Value = (String, String)> {
        key().prop_flat_map(|key| {
            let value = value_for(&key);
            (Just(key), value)
        })
    }

    /// A query: each known parameter maybe, sometimes more pairs (unknown or repeated), in
    /// any order.
    fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
        let known: Vec<_> = KNOWN
            .iter()
            .map(|key| {
                prop::option::weighted(0.4, value_for(key))
                    .prop_map(move |value| value.map(|value| ((*key).to_owned(), value)))
            })
            .collect();
        let extra = prop_oneof![
            2 => Just(Vec::new()),
            1 => prop::collection::vec(pair(), 1..4),
        ];
        (known, extra, any::<prop::sample::Index>()).prop_map(|(known, extra, shift)| {
            let mut pairs: Vec<_> = known.into_iter().flatten().chain(extra).collect();
            if !pairs.is_empty() {
                let shift = shift.index(pairs.len());
                pairs.rotate_left(shift);
            }
            pairs
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Any pairs: a request within every bound, or a refusal that says why.
        #[test]
        fn parse_takes_any_pairs(pairs in pairs()) {
            match ListRequest::parse(&pairs) {
                Ok(request) => {
                    for (index, (key, _)) in pairs.iter().enumerate() {
                        prop_assert!(KNOWN.contains(&key.as_str()));
                        prop_assert!(!pairs[..index].iter().any(|(earlier, _)| earlier == key));
                    }
                    prop_assert!((1..=MAX_LIMIT).contains(&request.limit));
                    let filter = &request.filter;
                    if let Some(pattern) = &filter.name_pattern {
                        prop_assert!(pattern.len() >= 3);
                        prop_assert!(pattern.starts_with('%') && pattern.ends_with('%'));
                        prop_assert!(!pattern.chars().any(char::is_control));
                    }
                    let has_cursor = pairs.iter().any(|(key, _)| key == "cursor");
                    prop_assert_eq!(request.after.is_some(), has_cursor);
                }
                Err(InvalidQuery::Parameters(message)) => prop_assert!(message.len() > 10),
                Err(InvalidQuery::Cursor(_)) => {
                    prop_assert!(pairs.iter().any(|(key, _)| key == "cursor"));
                }
            }
        }

        /// A query of valid values, in any order, is read exactly.
        #[test]
        fn valid_queries_are_read_exactly(
            limit in 1..=MAX_LIMIT,
            prices in (0..=Price::MAX_CENTS, 0..=Price::MAX_CENTS),
            in_stock in any::<bool>(),
            name in "[^\\p{Cc}]{1,200}",
            micros in 0..4_102_444_800_000_000_i64,
            id in any::<u128>(),
            shift in any::<prop::sample::Index>(),
        ) {
            let (min, max) = (prices.0.min(prices.1), prices.0.max(prices.1));
            let price = |cents| Price::from_cents(cents).unwrap();
            let cursor = Cursor {
                created_at: DateTime::from_timestamp_micros(micros).unwrap(),
                id: Uuid::from_u128(id),
            };
            let mut pairs: Vec<(String, String)> = [
                ("limit", limit.to_string()),
                ("minPrice", price(min).to_string()),
                ("maxPrice", price(max).to_string()),
                ("inStock", in_stock.to_string()),
                ("name", name.clone()),
                ("cursor", cursor.encode()),
            ]
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect();
            let shift = shift.index(pairs.len());
            pairs.rotate_left(shift);
            let request = ListRequest::parse(&pairs).unwrap();
            prop_assert_eq!(request.limit, limit);
            prop_assert_eq!(request.after, Some(cursor));
            prop_assert_eq!(request.filter, ListFilter {
                name_pattern: Some(contains_pattern(&name)),
                min_price: Some(price(min)),
                max_price: Some(price(max)),
                in_stock: Some(in_stock),
            });
        }
    }
}
