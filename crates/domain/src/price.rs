use std::fmt;

use crate::FieldError;
use crate::decimal::{DecimalText, Unscalable};

/// A price in exact cents, from 0 to 1,000,000,000.00.
///
/// It is parsed from the *text* of a JSON number, never through `f64`, so `1.005` is rejected
/// instead of rounded and `0.1` is exactly ten cents. On the wire it is a JSON number again:
/// every value in range has at most 12 significant digits, which an `f64` holds and prints
/// back exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Price {
    cents: i64,
}

/// Cents in the largest allowed price, 1,000,000,000.00.
const MAX_CENTS: i64 = 100_000_000_000;
/// Digits of `MAX_CENTS`: a longer significand is out of range whatever its scale.
const MAX_CENTS_DIGITS: i64 = 12;

impl Price {
    pub const MAX_CENTS: i64 = MAX_CENTS;

    pub fn from_cents(cents: i64) -> Result<Self, FieldError> {
        if (0..=MAX_CENTS).contains(&cents) {
            Ok(Self { cents })
        } else {
            Err(out_of_range())
        }
    }

    pub fn cents(self) -> i64 {
        self.cents
    }

    /// The value as a JSON-ready float; exact for every price in range (see the type's docs).
    pub fn as_f64(self) -> f64 {
        self.cents as f64 / 100.0
    }

    /// Parses the raw text of a JSON value, which must be a number.
    pub fn parse_json(raw: &str) -> Result<Self, FieldError> {
        let raw = raw.trim();
        let number = DecimalText::parse(raw).ok_or_else(|| {
            let message = if raw.starts_with('"') {
                "price must be a JSON number, not a string"
            } else {
                "price must be a number"
            };
            FieldError::new("price", message)
        })?;
        if number.is_negative() {
            return Err(out_of_range());
        }
        match number.scaled(2, MAX_CENTS_DIGITS) {
            Ok(cents) => Price::from_cents(cents),
            Err(Unscalable::Fraction) => Err(FieldError::new(
                "price",
                "price must have at most 2 decimal places",
            )),
            Err(Unscalable::TooLarge) => Err(out_of_range()),
        }
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.cents / 100, self.cents % 100)
    }
}

impl serde::Serialize for Price {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.as_f64())
    }
}

fn out_of_range() -> FieldError {
    FieldError::new("price", "price must be between 0 and 1000000000")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cents(raw: &str) -> i64 {
        Price::parse_json(raw)
            .unwrap_or_else(|e| panic!("{raw}: {e}"))
            .cents()
    }

    #[test]
    fn parses_exact_decimals() {
        assert_eq!(cents("99.99"), 9999);
        assert_eq!(cents("0.1"), 10);
        assert_eq!(cents("0.01"), 1);
        assert_eq!(cents("0"), 0);
        assert_eq!(cents("-0"), 0);
        assert_eq!(cents("-0.00"), 0);
        assert_eq!(cents("100"), 10000);
        assert_eq!(cents("100.50"), 10050);
        assert_eq!(cents("1.500"), 150);
        assert_eq!(cents("1000000000"), MAX_CENTS);
        assert_eq!(cents("1000000000.00"), MAX_CENTS);
    }

    #[test]
    fn understands_exponents() {
        assert_eq!(cents("1e2"), 10000);
        assert_eq!(cents("1E+2"), 10000);
        assert_eq!(cents("9.999e1"), 9999);
        assert_eq!(cents("1e-2"), 1);
        assert_eq!(cents("1.0e9"), MAX_CENTS);
        assert_eq!(cents("0e999999999999999"), 0);
        assert_eq!(cents("250e-2"), 250);
    }

    #[test]
    fn rejects_more_than_two_decimals_instead_of_rounding() {
        for raw in ["1.005", "99.999", "0.001", "1e-3", "99.999999999999999999"] {
            let error = Price::parse_json(raw).unwrap_err();
            assert!(error.message.contains("2 decimal"), "{raw}: {error}");
        }
    }

    #[test]
    fn rejects_out_of_range() {
        for raw in [
            "-0.01",
            "-5",
            "1000000000.01",
            "1e10",
            "1e999999999999",
            "12345678901234567890",
        ] {
            let error = Price::parse_json(raw).unwrap_err();
            assert!(error.message.contains("between 0 and"), "{raw}: {error}");
        }
    }

    #[test]
    fn rejects_non_numbers() {
        for raw in [
            "\"99.99\"",
            "\"NaN\"",
            "\"Infinity\"",
            "null",
            "true",
            "[]",
            "{}",
            "",
            "01",
            "1.",
            ".5",
            "1e",
            "+1",
            "0x10",
        ] {
            assert!(Price::parse_json(raw).is_err(), "{raw} was accepted");
        }
        assert!(
            Price::parse_json("\"1\"")
                .unwrap_err()
                .message
                .contains("not a string")
        );
    }

    #[test]
    fn displays_two_decimals() {
        assert_eq!(Price::from_cents(9999).unwrap().to_string(), "99.99");
        assert_eq!(Price::from_cents(5).unwrap().to_string(), "0.05");
    }

    proptest! {
        /// The wire form (an f64 printed by serde_json) parses back to exactly the same cents.
        #[test]
        fn wire_form_round_trips_exactly(cents in 0..=MAX_CENTS) {
            let price = Price::from_cents(cents).unwrap();
            let json = serde_json::to_string(&price).unwrap();
            prop_assert_eq!(Price::parse_json(&json).unwrap(), price);
        }

        #[test]
        fn decimal_text_round_trips(cents in 0..=MAX_CENTS) {
            let text = Price::from_cents(cents).unwrap().to_string();
            prop_assert_eq!(Price::parse_json(&text).unwrap().cents(), cents);
        }
    }
}
