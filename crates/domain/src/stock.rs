use crate::FieldError;

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

    /// Parses the raw text of a JSON value; only an integer literal is accepted.
    pub fn parse_json(raw: &str) -> Result<Self, FieldError> {
        let raw = raw.trim();
        let is_integer_literal = raw
            .strip_prefix('-')
            .unwrap_or(raw)
            .bytes()
            .all(|b| b.is_ascii_digit())
            && !raw.is_empty();
        if !is_integer_literal {
            let looks_numeric = raw.starts_with(|c: char| c == '-' || c.is_ascii_digit());
            return Err(FieldError::new(
                "stock",
                if looks_numeric {
                    "stock must be a whole number"
                } else {
                    "stock must be a number"
                },
            ));
        }
        // Longer than any i64: certainly out of range, and not worth parsing.
        let units = raw.parse::<i64>().map_err(|_| out_of_range())?;
        Self::new(units)
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
    fn rejects_fractions_exponents_and_other_types() {
        for raw in ["1.5", "1.0", "1e3", "\"5\"", "null", "true", "[]", "{}"] {
            assert!(Stock::parse_json(raw).is_err(), "{raw} was accepted");
        }
    }
}
