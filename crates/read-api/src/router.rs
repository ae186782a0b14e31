//! Sends each read to a source and retries it elsewhere when that source fails.
//!
//! A read tries the replicas in rotation in the strategy's order, then the primary when
//! fallback is on. Each attempt is bounded by `read_timeout_ms`, the whole read by
//! `request_deadline_ms`; a failed or timed-out attempt moves on to the next source, so a
//! replica dying under load costs latency, not errors, while another source is healthy.

use std::sync::Arc;
use std::time::Duration;

use domain::{ProductId, Version};
use storage::StorageError;
use tokio::time::Instant;

use crate::list_query::ListRequest;
use crate::reads::{self, Answer, Found, Page, Read};
use crate::source::{Outcome, Role, Source};
use crate::strategy::{Chooser, Strategy};

/// An answer and the source that gave it (`X-Served-By`).
#[derive(Debug)]
pub struct Served<T> {
    pub value: T,
    pub source: Arc<str>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no source can serve reads: {0}")]
    NoSource(String),
    #[error(
        "the read failed on every source it could try ({}); last error: {last}",
        tried.join(", ")
    )]
    Failed {
        tried: Vec<Arc<str>>,
        last: AttemptError,
    },
    #[error(
        "no replica holds version {min} of product {id} yet, and reading from the primary is \
         disabled (fallback_to_primary = false); retry shortly"
    )]
    VersionNotReplicated { id: ProductId, min: Version },
}

/// How the last attempt of a failed read ended. Shown with its causes: the message of a 503
/// names what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("{}", .0.report())]
    Storage(Arc<StorageError>),
    #[error(
        "request deadline of {} ms passed{}",
        .limit.as_millis(),
        .after.as_ref().map(|e| format!(" after: {}", e.report())).unwrap_or_default()
    )]
    DeadlinePassed {
        limit: Duration,
        after: Option<Arc<StorageError>>,
    },
    #[error("no source answered")]
    NoAnswer,
    #[error("internal: answer of the wrong kind")]
    WrongKind,
}

/// A read that got no usable answer, and the last source tried, if any.
#[derive(Debug)]
pub struct ReadFailure {
    pub error: ReadError,
    pub served_by: Option<Arc<str>>,
}

pub struct Router {
    replicas: Vec<Arc<Source>>,
    /// Watched by the health checks (it says what each replica lacks); read from only when
    /// `fallback` is on.
    primary: Option<Arc<Source>>,
    fallback: bool,
    chooser: Chooser,
    read_timeout: Duration,
    request_deadline: Duration,
}

impl Router {
    pub fn new(
        replicas: Vec<Arc<Source>>,
        primary: Option<Arc<Source>>,
        fallback: bool,
        strategy: Strategy,
        read_timeout: Duration,
        request_deadline: Duration,
    ) -> Self {
        Self {
            replicas,
            primary,
            fallback,
            chooser: Chooser::new(strategy),
            read_timeout,
            request_deadline,
        }
    }

    pub fn replicas(&self) -> &[Arc<Source>] {
        &self.replicas
    }

    /// The primary, whether or not it serves reads.
    pub fn primary(&self) -> Option<&Arc<Source>> {
        self.primary.as_ref()
    }

    /// The primary, when reads may fall back to it.
    pub fn fallback(&self) -> Option<&Arc<Source>> {
        self.primary.as_ref().filter(|_| self.fallback)
    }

    pub fn strategy(&self) -> Strategy {
        self.chooser.strategy()
    }

    /// Whether some source could serve a read now.
    pub fn can_serve(&self) -> bool {
        self.replicas
            .iter()
            .chain(self.fallback())
            .any(|s| s.is_available())
    }

    pub async fn list(&self, request: ListRequest) -> Result<Served<Page>, ReadFailure> {
        let served = self.read(&Read::List(request), None).await?;
        match served.value {
            Answer::Page(page) => Ok(Served {
                value: page,
                source: served.source,
            }),
            Answer::Get(_) => Err(mismatch(served.source)),
        }
    }

    /// A product by id. With `min_version`, a replica answers only if it holds that version
    /// or a newer one (a tombstone that new is an authoritative "deleted"); otherwise the
    /// primary answers, or the read fails when fallback is off.
    pub async fn get(
        &self,
        id: ProductId,
        min_version: Option<Version>,
    ) -> Result<Served<Found>, ReadFailure> {
        let served = self.read(&Read::Get(id), min_version).await?;
        match served.value {
            Answer::Get(found) => Ok(Served {
                value: found,
                source: served.source,
            }),
            Answer::Page(_) => Err(mismatch(served.source)),
        }
    }

    async fn read(
        &self,
        read: &Read,
        min_version: Option<Version>,
    ) -> Result<Served<Answer>, ReadFailure> {
        let deadline = Instant::now() + self.request_deadline;
        let in_rotation = self
            .replicas
            .iter()
            .filter(|s| s.is_available())
            .cloned()
            .collect();
        let mut plan = self.chooser.order(in_rotation);
        plan.extend(self.fallback().filter(|s| s.is_available()).cloned());
        if plan.is_empty() {
            return Err(ReadFailure {
                error: ReadError::NoSource(self.why_none()),
                served_by: None,
            });
        }

        let mut tried: Vec<Arc<str>> = Vec::new();
        let mut last_error = None;
        let mut too_old = false;
        for source in plan {
            let now = Instant::now();
            if now >= deadline {
                last_error = Some(AttemptError::DeadlinePassed {
                    limit: self.request_deadline,
                    after: match last_error {
                        Some(AttemptError::Storage(error)) => Some(error),
                        _ => None,
                    },
                });
                break;
            }
            // It may have left rotation while earlier attempts ran.
            if !tried.is_empty() && !source.is_available() {
                continue;
            }
            tried.push(source.name().clone());
            let limit = self.read_timeout.min(deadline - now);
            match attempt(&source, read, limit).await {
                Ok(answer)
                    if source.role() == Role::Replica && !recent_enough(&answer, min_version) =>
                {
                    source.record_answer();
                    record(&source, Outcome::TooOld, None);
                    too_old = true;
                }
                Ok(answer) => {
                    source.record_success();
                    record(&source, outcome_of(&answer), None);
                    return Ok(Served {
                        value: answer,
                        source: source.name().clone(),
                    });
                }
                Err(error) => {
                    let outcome = match *error {
                        StorageError::Timeout(_) => Outcome::Timeout,
                        _ => Outcome::Error,
                    };
                    record(&source, outcome, Some(&error));
                    last_error = Some(AttemptError::Storage(error));
                }
            }
        }

        let served_by = tried.last().cloned();
        let error = match (last_error, min_version, read) {
            (None, Some(min), Read::Get(id)) if too_old => {
                ReadError::VersionNotReplicated { id: *id, min }
            }
            (last, _, _) => ReadError::Failed {
                tried,
                last: last.unwrap_or(AttemptError::NoAnswer),
            },
        };
        Err(ReadFailure { error, served_by })
    }

    /// Why every source is out of rotation, one by one.
    fn why_none(&self) -> String {
        let mut reasons: Vec<String> = self
            .replicas
            .iter()
            .chain(self.fallback())
            .map(|s| {
                let reason = s
                    .unavailable_reason()
                    .unwrap_or_else(|| "left rotation".into());
                format!("{}: {reason}", s.name())
            })
            .collect();
        if self.fallback().is_none() {
            reasons.push("primary: fallback_to_primary is off".into());
        }
        reasons.join("; ")
    }
}

/// One attempt on one source, counted in its in-flight reads. A lookup by id may share its
/// statement with others ([`crate::lookups`]), and then its error with them.
async fn attempt(
    source: &Source,
    read: &Read,
    limit: Duration,
) -> Result<Answer, Arc<StorageError>> {
    let _in_flight = source.begin();
    let started = Instant::now();
    let outcome = match read {
        Read::Get(id) => source.lookups().find(*id, limit).await.map(Answer::Get),
        Read::List(request) => storage::pool::with_connection(source.pool(), limit, async |conn| {
            reads::list(conn, request).await
        })
        .await
        .map(Answer::Page)
        .map_err(Arc::new),
    };
    let took = started.elapsed();
    // A failure counts as at least the whole attempt's limit: failing fast is not fast.
    source.observe_latency(if outcome.is_ok() {
        took
    } else {
        took.max(limit)
    });
    source.metrics().duration().record(took.as_secs_f64());
    outcome
}

/// Without `X-Min-Version` any answer will do; with it, only a row (live or tombstone) at
/// that version or newer.
fn recent_enough(answer: &Answer, min_version: Option<Version>) -> bool {
    match (answer, min_version) {
        (_, None) | (Answer::Page(_), _) => true,
        (Answer::Get(found), Some(min)) => found.version().is_some_and(|v| v >= min),
    }
}

fn outcome_of(answer: &Answer) -> Outcome {
    match answer {
        Answer::Get(Found::Live(_)) | Answer::Page(_) => Outcome::Ok,
        Answer::Get(Found::Deleted(_) | Found::Absent) => Outcome::NotFound,
    }
}

/// Metrics for one attempt; a failure also counts against the source and is logged once,
/// here, with the source's name.
fn record(source: &Source, outcome: Outcome, error: Option<&StorageError>) {
    source.metrics().count(outcome);
    if let Some(error) = error {
        source.record_failure(&error.report());
        tracing::warn!(replica = %source.name(), error = %error.report(), outcome = outcome.as_str(), "read failed on this source; trying the next one");
    }
}

/// An answer of the wrong kind cannot happen (`execute` answers in kind); treated as a
/// failed read rather than a panic.
fn mismatch(source: Arc<str>) -> ReadFailure {
    ReadFailure {
        error: ReadError::Failed {
            tried: vec![source.clone()],
            last: AttemptError::WrongKind,
        },
        served_by: Some(source),
    }
}
