//! JSON numbers read exactly from their text: prices and stock are never rounded, and a
//! number is accepted in any form JSON allows (`2`, `2.0`, `2e0`) when its value fits.

/// Why a number has no exact integer form at a scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unscalable {
    /// Digits remain after the point.
    Fraction,
    /// More digits than allowed.
    TooLarge,
}

/// A JSON number as sign, significant digits and a power of ten, with no rounding:
/// value = (-1)^negative × digits × 10^exponent.
pub(crate) struct DecimalText {
    negative: bool,
    /// Significant digits without leading or trailing zeros; empty for zero.
    digits: String,
    exponent: i64,
}

impl DecimalText {
    /// Follows the JSON number grammar, `-? int frac? exp?`; `None` for anything else.
    pub(crate) fn parse(text: &str) -> Option<Self> {
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

    /// Below zero (a negative zero is zero).
    pub(crate) fn is_negative(&self) -> bool {
        self.negative && !self.digits.is_empty()
    }

    /// The value × 10^`places` as an integer, with no rounding: refused when that keeps a
    /// fraction, or needs more than `max_digits` (at most 18, so it fits an `i64`) digits.
    pub(crate) fn scaled(&self, places: i64, max_digits: i64) -> Result<i64, Unscalable> {
        if self.digits.is_empty() {
            return Ok(0);
        }
        let exponent = self.exponent.saturating_add(places);
        if exponent < 0 {
            return Err(Unscalable::Fraction);
        }
        let digit_count = i64::try_from(self.digits.len()).unwrap_or(i64::MAX);
        if digit_count.saturating_add(exponent) > max_digits.min(18) {
            return Err(Unscalable::TooLarge);
        }
        // At most 18 digits now, so neither step can overflow an i64.
        let significand: i64 = self.digits.parse().map_err(|_| Unscalable::TooLarge)?;
        let magnitude = significand * 10_i64.pow(u32::try_from(exponent).unwrap_or(0));
        Ok(if self.negative { -magnitude } else { magnitude })
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
