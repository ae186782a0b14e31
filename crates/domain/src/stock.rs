use crate::FieldError;
use crate::decimal::{DecimalText, Unscalable};

/// Units in stock: an integer from 0 to 2,147,483,647.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Stock(i32);

impl Stock {
    pub const MAX: i64 = i32::MAX as i64;

    pub fn new(units: i64) -> Result<Self, FieldError> {
        if !(0..=Self::MAX).contains(&units) {
            return Err(out_of_range());
        }
        i32::try_from(units).map(Self).map_err(|_| out_of_range())
    }

    /// Parses the raw text of a JSON value: a number whose value is a whole number, in any
    /// form JSON allows (`3`, `3.0`, `3e0`), as JSON Schema's `integer` does.
    pub fn parse_json(raw: &str) -> Result<Self, FieldError> {
        let raw = raw.trim();
        let number = DecimalText::parse(raw)
            .ok_or_else(|| FieldError::new("stock", "stock must be a number"))?;
        if number.is_negative() {
            return Err(out_of_range());
        }
        match number.scaled(0, 10) {
            Ok(units) => Self::new(units),
            Err(Unscalable::Fraction) => {
                Err(FieldError::new("stock", "stock must be a whole number"))
            }
            Err(Unscalable::TooLarge) => Err(out_of_range()),
        }
    }

    pub fn units(self) -> i32 {
        self.0
    }
}

fn out_of_range() -> FieldError {
    FieldError::new("stock", "stock must be between 0 and 2147483647")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_whole_range() {
        assert_eq!(Stock::parse_json("0").unwrap().units(), 0);
        assert_eq!(Stock::parse_json("2147483647").unwrap().units(), i32::MAX);
    }

    #[test]
    fn rejects_out_of_range() {
        for raw in ["-1", "2147483648", "99999999999999999999999"] {
            let error = Stock::parse_json(raw).unwrap_err();
            assert!(error.message.contains("between 0 and"), "{raw}: {error}");
        }
    }

    #[test]
    fn accepts_whole_numbers_in_any_json_form() {
        for (raw, units) in [
            ("3", 3),
            ("3.0", 3),
            ("3e0", 3),
            ("1.5e1", 15),
            ("2E3", 2000),
            ("-0", 0),
        ] {
            assert_eq!(Stock::parse_json(raw).unwrap().units(), units, "{raw}");
        }
    }

    #[test]
    fn rejects_fractions_and_other_types() {
        for (raw, message) in [
            ("1.5", "whole number"),
            ("1e-1", "whole number"),
            ("\"5\"", "a number"),
            ("null", "a number"),
            ("true", "a number"),
            ("[]", "a number"),
            ("{}", "a number"),
            ("-1.5", "between 0 and"),
            ("3e10", "between 0 and"),
        ] {
            let error = Stock::parse_json(raw).unwrap_err();
            assert!(error.message.contains(message), "{raw}: {error}");
        }
    }
}
