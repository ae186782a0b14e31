//! A source's read metrics, registered once when the source is made: recording through the
//! handles skips building, hashing and looking up a labelled key (and copying the source's
//! name) on every read.

use metrics::{Counter, Histogram};

/// How one attempt on one source ended (`reads_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    NotFound,
    /// An answer older than the read's `X-Min-Version`.
    TooOld,
    Timeout,
    Error,
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::NotFound,
        Outcome::TooOld,
        Outcome::Timeout,
        Outcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotFound => "not_found",
            Outcome::TooOld => "too_old",
            Outcome::Timeout => "timeout",
            Outcome::Error => "error",
        }
    }
}

pub struct ReadMetrics {
    reads: [Counter; Outcome::ALL.len()],
    duration: Histogram,
    lookup_batch_size: Histogram,
}

impl ReadMetrics {
    /// Handles from the process's recorder, which must be installed first (before it, the
    /// handles record nothing).
    pub fn register(source: &str) -> Self {
        Self {
            reads: Outcome::ALL.map(|outcome| {
                metrics::counter!("reads_total", "source" => source.to_owned(), "outcome" => outcome.as_str())
            }),
            duration: metrics::histogram!("read_duration_seconds", "source" => source.to_owned()),
            lookup_batch_size: metrics::histogram!("read_lookup_batch_size", "source" => source.to_owned()),
        }
    }

    pub fn count(&self, outcome: Outcome) {
        self.reads[outcome as usize].increment(1);
    }

    pub fn duration(&self) -> &Histogram {
        &self.duration
    }

    /// Lookups by id per statement.
    pub fn lookup_batch_size(&self) -> Histogram {
        self.lookup_batch_size.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::Outcome;

    #[test]
    fn every_outcome_has_its_own_counter() {
        for (index, outcome) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(
                outcome as usize, index,
                "{outcome:?} indexes its own counter"
            );
        }
    }
}
