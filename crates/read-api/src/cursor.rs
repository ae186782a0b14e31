//! The opaque `cursor` of `GET /api/products`: the sort key of the last product of a page.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Layout version, so a later change of the format fails cleanly on old cursors.
const FORMAT: u8 = 1;
/// Format byte, created_at in microseconds (big-endian i64), id.
const LEN: usize = 1 + 8 + 16;
/// The earliest `timestamptz` PostgreSQL stores (4714-11-24 00:00:00 BC), in microseconds
/// since 1970. chrono goes further back; a cursor before this could never have been handed
/// out, and sent to a source it would fail the query there ("timestamp out of range"),
/// turning a client's bad input into a 503 and an error counted against the source.
const MIN_POSTGRES_MICROS: i64 = -210_866_803_200_000_000;

/// A position in the order `(created_at, id)`: the next page starts after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

#[derive(Debug, thiserror::Error)]
#[error("cursor is not one this API handed out; start again without it")]
pub struct InvalidCursor;

impl Cursor {
    /// Base64url (no padding) of 25 bytes. Microseconds are PostgreSQL's precision, so the
    /// position is exact.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(LEN);
        bytes.push(FORMAT);
        bytes.extend_from_slice(&self.created_at.timestamp_micros().to_be_bytes());
        bytes.extend_from_slice(self.id.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(text: &str) -> Result<Self, InvalidCursor> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text.as_bytes())
            .map_err(|_| InvalidCursor)?;
        if bytes.len() != LEN || bytes[0] != FORMAT {
            return Err(InvalidCursor);
        }
        let micros = i64::from_be_bytes(bytes[1..9].try_into().map_err(|_| InvalidCursor)?);
        // A position before the earliest time PostgreSQL stores, or after the latest chrono
        // holds (earlier than PostgreSQL's latest), is that end: no row lies beyond it. So any
        // text of the documented shape is a cursor, and the OpenAPI pattern is the whole rule.
        let micros = micros.clamp(
            MIN_POSTGRES_MICROS,
            DateTime::<Utc>::MAX_UTC.timestamp_micros(),
        );
        let created_at = DateTime::from_timestamp_micros(micros).ok_or(InvalidCursor)?;
        let id = Uuid::from_slice(&bytes[9..]).map_err(|_| InvalidCursor)?;
        Ok(Self { created_at, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_to_the_microsecond() {
        let cursor = Cursor {
            created_at: DateTime::from_timestamp_micros(1_790_000_000_123_456).unwrap(),
            id: Uuid::now_v7(),
        };
        let text = cursor.encode();
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(Cursor::decode(&text).unwrap(), cursor);
    }

    #[test]
    fn refuses_anything_else() {
        let good = Cursor {
            created_at: Utc::now(),
            id: Uuid::nil(),
        }
        .encode();
        for bad in [
            "",
            "abc",
            "!!!!",
            &good[..good.len() - 1],
            &format!("{good}AA"),
        ] {
            assert!(Cursor::decode(bad).is_err(), "{bad:?} accepted");
        }
        let mut wrong_format = URL_SAFE_NO_PAD.decode(&good).unwrap();
        wrong_format[0] = 2;
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode(wrong_format)).is_err());
    }

    /// A cursor of the right layout with any time in it.
    fn at(micros: i64) -> String {
        URL_SAFE_NO_PAD
            .encode([&[FORMAT][..], &micros.to_be_bytes(), Uuid::nil().as_bytes()].concat())
    }

    #[test]
    fn clamps_times_postgresql_cannot_store_to_the_ends() {
        // 4714-11-24 BC is year -4713 in the proleptic Gregorian calendar chrono counts in.
        let earliest = DateTime::from_timestamp_micros(MIN_POSTGRES_MICROS).unwrap();
        assert_eq!(earliest.to_rfc3339(), "-4713-11-24T00:00:00+00:00");
        for micros in [MIN_POSTGRES_MICROS, MIN_POSTGRES_MICROS - 1, i64::MIN] {
            assert_eq!(Cursor::decode(&at(micros)).unwrap().created_at, earliest);
        }
        let latest = Cursor::decode(&at(i64::MAX)).unwrap().created_at;
        assert_eq!(
            latest.timestamp_micros(),
            DateTime::<Utc>::MAX_UTC.timestamp_micros()
        );
    }

    /// The pattern the OpenAPI document gives for `cursor` takes every cursor handed out,
    /// and every text it takes is a cursor.
    #[test]
    fn the_documented_pattern_is_exactly_the_cursors() {
        let source = include_str!("routes.rs");
        let start = source.find("(\"cursor\"").unwrap();
        let text = source[start..].split("pattern = \"").nth(1).unwrap();
        let text = &text[..text.find('"').unwrap()];
        let pattern = regex::Regex::new(text).unwrap();
        let matching = proptest::string::string_regex(text.trim_matches(['^', '$'])).unwrap();
        proptest!(|(micros in any::<i64>(), id in any::<u128>())| {
            let handed_out = Cursor {
                created_at: DateTime::from_timestamp_micros(micros.clamp(
                    MIN_POSTGRES_MICROS,
                    DateTime::<Utc>::MAX_UTC.timestamp_micros(),
                ))
                .unwrap(),
                id: Uuid::from_u128(id),
            }
            .encode();
            prop_assert!(pattern.is_match(&handed_out), "{}", handed_out);
        });
        proptest!(|(text in matching)| {
            prop_assert!(pattern.is_match(&text));
            prop_assert!(Cursor::decode(&text).is_ok(), "{}", text);
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Any text is a cursor or a refusal; a cursor within range is exactly the one its
        /// text encodes.
        #[test]
        fn decode_takes_any_text(text in "\\PC{0,40}|[A-Za-z0-9_-]{32,36}") {
            if let Ok(cursor) = Cursor::decode(&text) {
                let again = Cursor::decode(&cursor.encode()).unwrap();
                prop_assert_eq!(again, cursor);
            }
        }

        /// Any bytes in the cursor alphabet: only the API's layout decodes, a time beyond
        /// what PostgreSQL and chrono hold as the nearer end.
        #[test]
        fn decode_takes_any_bytes(
            bytes in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..40),
                prop::collection::vec(any::<u8>(), LEN),
            ],
            right_format in any::<bool>(),
        ) {
            let mut bytes = bytes;
            if right_format && !bytes.is_empty() {
                bytes[0] = FORMAT;
            }
            let text = URL_SAFE_NO_PAD.encode(&bytes);
            let fits = bytes.len() == LEN && bytes[0] == FORMAT;
            let in_range = fits && {
                let micros = i64::from_be_bytes(bytes[1..9].try_into().unwrap());
                micros >= MIN_POSTGRES_MICROS && DateTime::from_timestamp_micros(micros).is_some()
            };
            match Cursor::decode(&text) {
                Ok(cursor) if in_range => prop_assert_eq!(cursor.encode(), text),
                Ok(cursor) => {
                    prop_assert!(fits);
                    let ends = [
                        DateTime::from_timestamp_micros(MIN_POSTGRES_MICROS).unwrap(),
                        DateTime::<Utc>::MAX_UTC,
                    ];
                    prop_assert!(ends.iter().any(|end| end.timestamp_micros() == cursor.created_at.timestamp_micros()));
                }
                Err(error) => {
                    prop_assert!(!fits);
                    prop_assert!(error.to_string().contains("cursor"));
                }
            }
        }

        /// Every position PostgreSQL can hold survives a trip through a cursor.
        #[test]
        fn round_trips_every_position(
            micros in MIN_POSTGRES_MICROS..=DateTime::<Utc>::MAX_UTC.timestamp_micros(),
            id in any::<u128>(),
        ) {
            let cursor = Cursor {
                created_at: DateTime::from_timestamp_micros(micros).unwrap(),
                id: Uuid::from_u128(id),
            };
            prop_assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        }
    }
}
