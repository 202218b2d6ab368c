//! Cross-field rules that OpenAPI v3.0 cannot express (the dev cluster has no CEL).
//!
//! The API server enforces ranges, enums and patterns from the schema; everything that relates two
//! fields is checked here, by the operator before it acts, and reported as a condition.

use std::fmt;

/// One broken rule: where (a JSON path such as `spec.compression.density`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the offending field, starting at `spec`.
    pub field: String,
    /// A sentence a person can act on.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The problems found in one spec, in the order they were found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Records a problem with `field`.
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Records a problem when `broken` holds.
    pub fn check(&mut self, broken: bool, field: &str, message: impl FnOnce() -> String) {
        if broken {
            self.push(field, message());
        }
    }

    /// True when no rule was broken.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many rules were broken.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The problems, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }

    /// `Ok(())` when empty, else [`crate::Error::Invalid`] carrying the problems.
    pub fn into_result(self) -> crate::Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(crate::Error::Invalid(self))
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl IntoIterator for Problems {
    type Item = Problem;
    type IntoIter = std::vec::IntoIter<Problem>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}
