//! The opaque `cursor` of `GET /api/products`: the sort key of the last product of a page.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Layout version, so a later change of the format fails cleanly on old cursors.
const FORMAT: u8 = 1;
/// Format byte, created_at in microseconds (big-endian i64), id.
const LEN: usize = 1 + 8 + 16;

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
        let created_at = DateTime::from_timestamp_micros(micros).ok_or(InvalidCursor)?;
        let id = Uuid::from_slice(&bytes[9..]).map_err(|_| InvalidCursor)?;
        Ok(Self { created_at, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
