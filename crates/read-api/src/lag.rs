//! How stale a replica is: the age of the oldest change it may lack, on the primary's clock.
//!
//! - A replica flagged behind — on itself, or by a catch-up mark on the primary (read by
//!   read-api, so a replica that came back and took a live batch before catch-up reached it
//!   is still known to lack what it missed) — may lack every change since the flag: it is
//!   catching up. The epoch means unknown history: new, empty, restored or never fully
//!   copied.
//! - Otherwise it holds every change up to its `last_event_at` (the newest change applied
//!   there, or copied by a completed catch-up), and lacks what the primary made after that:
//!   its staleness is the age of the primary's oldest change newer than `last_event_at`, and
//!   0 when there is none. So an idle pipeline makes nobody stale, and a stalled one makes
//!   every replica stale from the first change it did not deliver.
//! - When the primary does not answer, the freshest level replica stands in for it: a
//!   replica lags by how far its newest change trails that replica's.
//!
//! A replica serves only while it is level (not flagged) and its staleness, plus one health
//! check interval (how long until the next look), stays within `max_lag_ms`: see
//! [`Lag::out_of_rotation_because`].

use chrono::{DateTime, Utc};
use storage::replica::UNKNOWN_HISTORY;

/// What a health check read on a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub last_event_at: Option<DateTime<Utc>>,
    pub behind_since: Option<DateTime<Utc>>,
    /// The replica database's `now()`.
    pub now: DateTime<Utc>,
}

/// What the primary said about one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryView {
    /// The primary's `now()`.
    pub now: DateTime<Utc>,
    /// The replica's catch-up mark, if it has one.
    pub marked_since: Option<DateTime<Utc>>,
    /// The oldest change the primary made after the replica's `last_event_at`.
    pub first_missing: Option<DateTime<Utc>>,
}

/// Whether a replica holds every change up to some point, or is known to lack some.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum History {
    Level,
    /// May lack every change made since then.
    CatchingUp(DateTime<Utc>),
    /// New, empty, restored or never fully copied.
    Unknown,
}

/// A replica's staleness at one health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    /// Age of the oldest change it may lack.
    pub ms: u64,
    pub history: History,
}

impl Lag {
    /// Why a replica with this lag must not serve, given `max_lag_ms` and the time until the
    /// next health check; `None` when it may.
    pub fn out_of_rotation_because(
        &self,
        max_lag_ms: u64,
        check_interval_ms: u64,
    ) -> Option<String> {
        match self.history {
            History::Unknown => Some(
                "unknown history (new, empty, restored or never fully copied): the replicator \
                 is copying it in full"
                    .to_owned(),
            ),
            History::CatchingUp(since) => Some(format!(
                "catching up: may lack changes since {} ({} ms ago)",
                since.to_rfc3339(),
                self.ms
            )),
            History::Level if self.ms.saturating_add(check_interval_ms) > max_lag_ms => {
                Some(format!(
                    "lagging: lacks changes from {} ms ago (max_lag_ms {max_lag_ms}, next check in \
                     {check_interval_ms} ms)",
                    self.ms
                ))
            }
            History::Level => None,
        }
    }

    /// When catch-up began, while it lasts.
    pub fn catching_up_since(&self) -> Option<DateTime<Utc>> {
        match self.history {
            History::CatchingUp(since) => Some(since),
            History::Level | History::Unknown => None,
        }
    }
}

/// The newest change held by replicas that are level: the stand-in for the primary when it
/// does not answer.
pub fn reference<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Option<DateTime<Utc>> {
    samples
        .into_iter()
        .filter(|s| s.behind_since.is_none())
        .filter_map(|s| s.last_event_at)
        .max()
}

/// The lag of the replica that gave `sample`, from the primary's view of it when the primary
/// answered, else from `reference` (see [`reference`]).
pub fn lag(
    sample: &Sample,
    primary: Option<&PrimaryView>,
    reference: Option<DateTime<Utc>>,
) -> Lag {
    let now = primary.map_or(sample.now, |p| p.now);
    let flagged = [sample.behind_since, primary.and_then(|p| p.marked_since)]
        .into_iter()
        .flatten()
        .min();
    if let Some(since) = flagged {
        return Lag {
            ms: millis(now - since),
            history: if since <= UNKNOWN_HISTORY {
                History::Unknown
            } else {
                History::CatchingUp(since)
            },
        };
    }
    let ms = match primary {
        Some(primary) => primary.first_missing.map_or(0, |first| millis(now - first)),
        None => match (reference, sample.last_event_at) {
            (Some(newest), Some(own)) => millis(newest - own),
            _ => 0,
        },
    };
    Lag {
        ms,
        history: History::Level,
    }
}

/// Whole milliseconds of a signed duration, negative ones as 0.
fn millis(delta: chrono::TimeDelta) -> u64 {
    u64::try_from(delta.num_milliseconds()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn sample(event: Option<i64>, behind: Option<i64>) -> Sample {
        Sample {
            last_event_at: event.map(at),
            behind_since: behind.map(at),
            now: at(100),
        }
    }

    fn primary(marked: Option<i64>, first_missing: Option<i64>) -> PrimaryView {
        PrimaryView {
            now: at(100),
            marked_since: marked.map(at),
            first_missing: first_missing.map(at),
        }
    }

    #[test]
    fn a_replica_that_lacks_nothing_is_level_however_old_its_last_change() {
        // Idle for an hour, nothing newer on the primary.
        let idle = sample(Some(-3600), None);
        let lag = lag(&idle, Some(&primary(None, None)), None);
        assert_eq!(
            lag,
            Lag {
                ms: 0,
                history: History::Level
            }
        );
        assert_eq!(lag.out_of_rotation_because(5000, 1000), None);
    }

    #[test]
    fn staleness_is_the_age_of_the_first_change_not_delivered() {
        // Last change held from 60 s ago; the primary made one 3 s ago it has not got.
        let replica = sample(Some(40), None);
        let lag = lag(&replica, Some(&primary(None, Some(97))), None);
        assert_eq!(lag.ms, 3000);
        assert_eq!(lag.out_of_rotation_because(5000, 1000), None);
        let stalled = super::lag(&replica, Some(&primary(None, Some(90))), None);
        assert_eq!(stalled.ms, 10_000);
        assert!(
            stalled
                .out_of_rotation_because(5000, 1000)
                .unwrap()
                .contains("lagging")
        );
    }

    #[test]
    fn the_next_check_counts_against_max_lag() {
        let replica = sample(Some(50), None);
        let lag = lag(&replica, Some(&primary(None, Some(96))), None);
        assert_eq!(lag.ms, 4000);
        assert_eq!(lag.out_of_rotation_because(5000, 1000), None);
        assert!(lag.out_of_rotation_because(5000, 1001).is_some());
    }

    #[test]
    fn a_new_replica_has_unknown_history_and_never_serves() {
        let new = Sample {
            last_event_at: None,
            behind_since: Some(UNKNOWN_HISTORY),
            now: at(100),
        };
        let lag = lag(&new, Some(&primary(None, None)), None);
        assert_eq!(lag.history, History::Unknown);
        assert!(
            lag.out_of_rotation_because(u64::MAX, 0)
                .unwrap()
                .contains("unknown history")
        );
    }

    #[test]
    fn a_mark_on_the_primary_keeps_a_returning_replica_out_before_it_is_flagged() {
        // It took a live batch (its newest change is current) but missed changes since 70.
        let returned = sample(Some(99), None);
        let lag = lag(&returned, Some(&primary(Some(70), None)), None);
        assert_eq!(lag.history, History::CatchingUp(at(70)));
        assert_eq!(lag.ms, 30_000);
        assert!(
            lag.out_of_rotation_because(u64::MAX, 0)
                .unwrap()
                .contains("catching up")
        );
    }

    #[test]
    fn the_older_of_flag_and_mark_counts() {
        let flagged = sample(Some(99), Some(80));
        assert_eq!(
            lag(&flagged, Some(&primary(Some(60), None)), None).history,
            History::CatchingUp(at(60))
        );
        assert_eq!(
            lag(&flagged, None, None).history,
            History::CatchingUp(at(80))
        );
        assert_eq!(lag(&flagged, None, None).catching_up_since(), Some(at(80)));
    }

    #[test]
    fn without_the_primary_the_freshest_level_replica_is_the_reference() {
        let level = sample(Some(50), None);
        let stale = sample(Some(20), None);
        let catching_up = sample(Some(95), Some(40));
        let newest = reference([&level, &stale, &catching_up]);
        assert_eq!(newest, Some(at(50)));
        assert_eq!(lag(&level, None, newest).ms, 0);
        assert_eq!(lag(&stale, None, newest).ms, 30_000);
        assert_eq!(millis(chrono::TimeDelta::milliseconds(-5)), 0);
    }
}
