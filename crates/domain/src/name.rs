use std::fmt;

use crate::FieldError;

/// A product's name: trimmed, 1 to 200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct ProductName(String);

impl ProductName {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(FieldError::new("name", "name must not be empty"));
        }
        let chars = trimmed.chars().count();
        if chars > Self::MAX_CHARS {
            return Err(FieldError::new(
                "name",
                format!(
                    "name must be at most {} characters (got {chars})",
                    Self::MAX_CHARS
                ),
            ));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(FieldError::new(
                "name",
                "name must not contain control characters",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl AsRef<str> for ProductName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProductName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_surrounding_whitespace() {
        assert_eq!(ProductName::parse("  Lamp \t").unwrap().as_str(), "Lamp");
    }

    #[test]
    fn rejects_empty_and_blank() {
        assert!(ProductName::parse("").is_err());
        assert!(ProductName::parse("   ").is_err());
    }

    #[test]
    fn counts_characters_not_bytes() {
        let max = "é".repeat(ProductName::MAX_CHARS);
        assert!(ProductName::parse(&max).is_ok());
        let over = "é".repeat(ProductName::MAX_CHARS + 1);
        let error = ProductName::parse(&over).unwrap_err();
        assert_eq!(error.field, "name");
        assert!(error.message.contains("at most 200"), "{error}");
    }

    #[test]
    fn rejects_control_characters_inside() {
        assert!(ProductName::parse("a\u{0}b").is_err());
        assert!(ProductName::parse("line\nbreak").is_err());
        assert!(ProductName::parse("bell\u{7}").is_err());
    }

    #[test]
    fn keeps_sql_looking_text_literally() {
        let name = "Robert'); DROP TABLE products;--";
        assert_eq!(ProductName::parse(name).unwrap().as_str(), name);
    }
}
