//! How far behind the primary a replica is, from the `replication_status` row the replicator
//! keeps on it.
//!
//! - While `behind_since` is set the replicator is copying what the replica missed since
//!   then, so the replica lacks changes from that moment on: lag = now − behind_since.
//! - Otherwise lag is how far the replica's newest applied change trails the newest change
//!   known: the primary's newest `updated_at` (when the primary is configured and answers)
//!   or else the newest `last_event_at` among replicas that answered and are not catching
//!   up. 0 when the replica has applied nothing or nothing is known to compare with.
//!
//! An earlier version also counted the apply delay of the newest change
//! (`last_applied_at − last_event_at`); after a backlog drained and writes stopped that
//! stayed large for ever and kept level replicas out of rotation, so it is gone.
//!
//! `now` is the replica database's clock (read in the same query), so read-api's own clock
//! does not matter; `last_event_at` values come from the primary's clock on every replica, so
//! comparing them across replicas is sound.

use chrono::{DateTime, Utc};

/// What a health check read on a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub last_event_at: Option<DateTime<Utc>>,
    pub last_applied_at: Option<DateTime<Utc>>,
    pub behind_since: Option<DateTime<Utc>>,
    /// The replica database's `now()`.
    pub now: DateTime<Utc>,
}

/// A replica's lag at one health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    pub ms: u64,
    /// Set while the replicator is catching this replica up.
    pub catching_up_since: Option<DateTime<Utc>>,
}

/// The newest change held by replicas that are level with the event stream (not catching up).
pub fn reference<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Option<DateTime<Utc>> {
    samples
        .into_iter()
        .filter(|s| s.behind_since.is_none())
        .filter_map(|s| s.last_event_at)
        .max()
}

/// The lag of the replica that gave `sample`, given the newest change among its siblings.
pub fn lag(sample: &Sample, reference: Option<DateTime<Utc>>) -> Lag {
    if let Some(since) = sample.behind_since {
        return Lag {
            ms: millis(sample.now - since),
            catching_up_since: Some(since),
        };
    }
    let staleness = match (reference, sample.last_event_at) {
        (Some(newest), Some(own)) => millis(newest - own),
        _ => 0,
    };
    Lag {
        ms: staleness,
        catching_up_since: None,
    }
}

/// Whole milliseconds of a signed duration, negative ones as 0.
fn millis(delta: chrono::TimeDelta) -> u64 {
    u64::try_from(delta.num_milliseconds()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn sample(event: Option<i64>, applied: Option<i64>, behind: Option<i64>) -> Sample {
        Sample {
            last_event_at: event.map(at),
            last_applied_at: applied.map(at),
            behind_since: behind.map(at),
            now: at(100),
        }
    }

    #[test]
    fn a_fresh_replica_has_no_lag() {
        let fresh = sample(None, None, None);
        assert_eq!(lag(&fresh, reference([&fresh])).ms, 0);
    }

    #[test]
    fn a_late_apply_of_the_newest_change_is_no_lag_once_applied() {
        // Applied 20 minutes after it happened (a backlog drained), nothing newer since.
        let drained = sample(Some(10), Some(1210), None);
        assert_eq!(lag(&drained, reference([&drained])).ms, 0);
    }

    #[test]
    fn the_primary_newest_change_is_the_reference() {
        let primary = sample(Some(70), None, None);
        let replica = sample(Some(40), Some(41), None);
        assert_eq!(lag(&replica, reference([&primary, &replica])).ms, 30_000);
    }

    #[test]
    fn a_replica_missing_newer_changes_lags_by_the_difference() {
        let level = sample(Some(50), Some(50), None);
        let stale = sample(Some(20), Some(20), None);
        let newest = reference([&level, &stale]);
        assert_eq!(lag(&level, newest).ms, 0);
        assert_eq!(lag(&stale, newest).ms, 30_000);
    }

    #[test]
    fn catching_up_counts_from_behind_since_and_is_no_reference() {
        let catching_up = sample(Some(90), Some(90), Some(40));
        let level = sample(Some(50), Some(50), None);
        let newest = reference([&catching_up, &level]);
        assert_eq!(newest, Some(at(50)));
        let lag = lag(&catching_up, newest);
        assert_eq!(lag.ms, 60_000);
        assert_eq!(lag.catching_up_since, Some(at(40)));
        assert_eq!(super::lag(&level, newest).ms, 0);
        assert_eq!(millis(TimeDelta::milliseconds(-5)), 0);
    }
}
