use std::fmt;

/// One rejected field of a client's input, with a message meant for that client.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FieldError {}

/// Every problem found in one input, so a client can fix them all in one go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidInput {
    errors: Vec<FieldError>,
}

impl InvalidInput {
    pub fn errors(&self) -> &[FieldError] {
        &self.errors
    }
}

impl From<FieldError> for InvalidInput {
    fn from(error: FieldError) -> Self {
        Self {
            errors: vec![error],
        }
    }
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            fmt::Display::fmt(error, f)?;
        }
        Ok(())
    }
}

impl std::error::Error for InvalidInput {}

/// Collects field errors while an input is parsed field by field.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    errors: Vec<FieldError>,
}

impl Collector {
    /// Keeps the value, or records the error and returns `None`.
    pub(crate) fn take<T>(&mut self, result: Result<T, FieldError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.errors.push(error);
                None
            }
        }
    }

    pub(crate) fn push(&mut self, error: FieldError) {
        self.errors.push(error);
    }

    pub(crate) fn finish(self) -> Result<(), InvalidInput> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(InvalidInput {
                errors: self.errors,
            })
        }
    }
}
