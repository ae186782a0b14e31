//! `X-Min-Version: N` on `GET /api/products/{id}`: read-your-writes. A client that wrote
//! version N of a product (write-api's `ETag`) asks not to be shown anything older.

use std::future::{Ready, ready};

use actix_web::http::header::HeaderName;
use actix_web::{FromRequest, HttpRequest, dev::Payload};
use domain::Version;
use http_api::ApiError;

pub const MIN_VERSION: HeaderName = HeaderName::from_static("x-min-version");

/// The header's version, if the request has one.
#[derive(Debug, Clone, Copy)]
pub struct MinVersion(pub Option<Version>);

#[derive(Debug, thiserror::Error)]
pub enum InvalidMinVersion {
    #[error("X-Min-Version must be given at most once")]
    Repeated,
    #[error("X-Min-Version must be a positive integer (got {0:?})")]
    NotAVersion(String),
}

impl MinVersion {
    pub fn parse<'a>(
        mut values: impl Iterator<Item = &'a [u8]>,
    ) -> Result<Self, InvalidMinVersion> {
        let Some(raw) = values.next() else {
            return Ok(Self(None));
        };
        if values.next().is_some() {
            return Err(InvalidMinVersion::Repeated);
        }
        let text = String::from_utf8_lossy(raw);
        let trimmed = text.trim();
        // Digits only: `+5`, `0x5` and `5.0` are refused rather than guessed at.
        if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidMinVersion::NotAVersion(text.into_owned()));
        }
        trimmed
            .parse::<i64>()
            .ok()
            .and_then(Version::new)
            .map(|v| Self(Some(v)))
            .ok_or_else(|| InvalidMinVersion::NotAVersion(text.into_owned()))
    }
}

impl FromRequest for MinVersion {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let values = req.headers().get_all(MIN_VERSION).map(|v| v.as_bytes());
        ready(Self::parse(values).map_err(ApiError::from))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse(values: &[&str]) -> Result<Option<i64>, InvalidMinVersion> {
        MinVersion::parse(values.iter().map(|v| v.as_bytes())).map(|m| m.0.map(Version::get))
    }

    #[test]
    fn accepts_positive_integers_only() {
        assert_eq!(parse(&[]).unwrap(), None);
        assert_eq!(parse(&["3"]).unwrap(), Some(3));
        assert_eq!(parse(&[" 12 "]).unwrap(), Some(12));
        for bad in ["0", "-1", "+1", "1.0", "abc", "", "99999999999999999999"] {
            assert!(parse(&[bad]).is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            parse(&["1", "2"]),
            Err(InvalidMinVersion::Repeated)
        ));
    }

    /// Header values: arbitrary bytes, or number-like text with signs and padding.
    fn header_value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..24),
            "[ \t]{0,2}[-+]?[0-9]{0,21}(\\.[0-9])?[ \t]{0,2}".prop_map(String::into_bytes),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Any header values: no header, one positive integer (exactly the one written), or
        /// a refusal that names the header.
        #[test]
        fn parse_takes_any_values(values in prop::collection::vec(header_value(), 0..3)) {
            match MinVersion::parse(values.iter().map(Vec::as_slice)) {
                Ok(MinVersion(None)) => prop_assert!(values.is_empty()),
                Ok(MinVersion(Some(version))) => {
                    prop_assert_eq!(values.len(), 1);
                    let text = std::str::from_utf8(&values[0]).unwrap().trim();
                    prop_assert!(text.bytes().all(|b| b.is_ascii_digit()));
                    prop_assert_eq!(text.parse::<i64>().unwrap(), version.get());
                    prop_assert!(version.get() >= 1);
                }
                Err(error) => prop_assert!(error.to_string().starts_with("X-Min-Version")),
            }
        }

        #[test]
        fn reads_every_positive_version(n in 1..=i64::MAX) {
            prop_assert_eq!(parse(&[&n.to_string()]).unwrap(), Some(n));
        }

        #[test]
        fn refuses_everything_below_one(n in i64::MIN..=0) {
            prop_assert!(parse(&[&n.to_string()]).is_err());
        }
    }
}
