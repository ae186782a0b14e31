//! Peak-EWMA latency of a source, the cost `p2c_ewma` compares (as Finagle and Linkerd do).
//!
//! Each observed latency moves the average toward it, weighted by how long ago the previous
//! observation was (time constant `decay`); a latency above the average is taken at once
//! (the "peak"), so a source that turns slow is avoided from its first slow answer. Without
//! new observations the average decays toward zero, so a source that got few reads while it
//! was slow is tried again soon after, and one fast answer after a quiet spell resets it.

use std::sync::Mutex;
use std::time::Duration;

use std::time::Instant;

/// A source's peak-EWMA latency.
#[derive(Debug)]
pub struct PeakEwma {
    decay: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    /// Seconds.
    value: f64,
    at: Instant,
}

impl PeakEwma {
    pub fn new(decay: Duration) -> Self {
        Self {
            decay,
            state: Mutex::new(State {
                value: 0.0,
                at: Instant::now(),
            }),
        }
    }

    /// Records one read's latency.
    pub fn observe(&self, latency: Duration) {
        self.observe_at(latency, Instant::now());
    }

    fn observe_at(&self, latency: Duration, now: Instant) {
        let sample = latency.as_secs_f64();
        let mut state = self.lock();
        state.value = if sample > state.value {
            sample
        } else {
            let keep = self.weight_kept(now.saturating_duration_since(state.at));
            state.value * keep + sample * (1.0 - keep)
        };
        state.at = now;
    }

    /// The average now, in seconds: decayed for the time since the last observation.
    pub fn seconds(&self) -> f64 {
        self.seconds_at(Instant::now())
    }

    fn seconds_at(&self, now: Instant) -> f64 {
        let state = *self.lock();
        state.value * self.weight_kept(now.saturating_duration_since(state.at))
    }

    fn weight_kept(&self, elapsed: Duration) -> f64 {
        (-elapsed.as_secs_f64() / self.decay.as_secs_f64().max(f64::EPSILON)).exp()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Two plain numbers, valid after any panic.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_slow_answer_counts_at_once_and_fades_without_new_ones() {
        let ewma = PeakEwma::new(Duration::from_secs(1));
        let start = Instant::now();
        ewma.observe_at(2 * MS, start);
        assert!((ewma.seconds_at(start) - 0.002).abs() < 1e-9);
        ewma.observe_at(50 * MS, start + MS);
        assert!(
            (ewma.seconds_at(start + MS) - 0.050).abs() < 1e-9,
            "peak taken at once"
        );
        let later = ewma.seconds_at(start + Duration::from_secs(3));
        assert!(later < 0.003, "{later}");
    }

    #[test]
    fn fast_answers_pull_the_average_down_by_how_long_ago_the_last_was() {
        let ewma = PeakEwma::new(Duration::from_secs(1));
        let start = Instant::now();
        ewma.observe_at(50 * MS, start);
        ewma.observe_at(2 * MS, start + 10 * MS);
        let soon = ewma.seconds_at(start + 10 * MS);
        assert!(soon > 0.045, "{soon}");
        let quiet = start + Duration::from_secs(5);
        ewma.observe_at(2 * MS, quiet);
        let after = ewma.seconds_at(quiet);
        assert!(after < 0.0025, "{after}");
    }
}
