use std::fmt;

use crate::FieldError;

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
        number.to_price()
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

/// A JSON number as sign, significant digits and a power of ten, with no rounding:
/// value = (-1)^negative × digits × 10^exponent.
struct DecimalText {
    negative: bool,
    /// Significant digits without leading or trailing zeros; empty for zero.
    digits: String,
    exponent: i64,
}

impl DecimalText {
    /// Follows the JSON number grammar, `-? int frac? exp?`; `None` for anything else.
    fn parse(text: &str) -> Option<Self> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, rest) = rest.split_at(int_len);
        if int_part.is_empty() || (int_part.len() > 1 && int_part.starts_with('0')) {
            return None;
        }
        let (frac_part, rest) = match rest.strip_prefix('.') {
            Some(after_dot) => {
                let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                if frac_len == 0 {
                    return None;
                }
                after_dot.split_at(frac_len)
            }
            None => ("", rest),
        };
        let written_exponent = match rest.strip_prefix(['e', 'E']) {
            Some(exp) => parse_exponent(exp)?,
            None if rest.is_empty() => 0,
            None => return None,
        };

        let all_digits = format!("{int_part}{frac_part}");
        let significant = all_digits.trim_start_matches('0');
        let without_trailing = significant.trim_end_matches('0');
        let trailing_zeros = i64::try_from(significant.len() - without_trailing.len()).ok()?;
        let frac_len = i64::try_from(frac_part.len()).ok()?;
        Some(Self {
            negative,
            digits: without_trailing.to_owned(),
            exponent: written_exponent - frac_len + trailing_zeros,
        })
    }

    fn to_price(&self) -> Result<Price, FieldError> {
        if self.digits.is_empty() {
            return Ok(Price { cents: 0 });
        }
        if self.negative {
            return Err(out_of_range());
        }
        // value in cents = digits × 10^(exponent + 2)
        let cents_exponent = self.exponent.saturating_add(2);
        if cents_exponent < 0 {
            return Err(FieldError::new(
                "price",
                "price must have at most 2 decimal places",
            ));
        }
        let digit_count = i64::try_from(self.digits.len()).unwrap_or(i64::MAX);
        if digit_count.saturating_add(cents_exponent) > MAX_CENTS_DIGITS {
            return Err(out_of_range());
        }
        // At most 12 digits now, so neither step can overflow an i64.
        let significand: i64 = self.digits.parse().map_err(|_| out_of_range())?;
        Price::from_cents(significand * 10_i64.pow(cents_exponent as u32))
    }
}

fn parse_exponent(text: &str) -> Option<i64> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Exponents beyond ±10^9 are clamped: the value is then certainly out of range or has
    // far too many decimals, and the clamp keeps the arithmetic in `i64`.
    let magnitude = digits
        .parse::<i64>()
        .unwrap_or(1_000_000_000)
        .min(1_000_000_000);
    Some(if negative { -magnitude } else { magnitude })
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
