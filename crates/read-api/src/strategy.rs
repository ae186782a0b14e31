//! How a read picks among the replicas in rotation.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::source::Source;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum Strategy {
    /// Each read goes to the next replica in turn: even spread when replicas are alike.
    RoundRobin,
    /// A uniformly random replica: no shared counter, same spread on average.
    Random,
    /// The replica with the fewest reads in flight (ties in turn): steers load away from a
    /// replica that has become slow, before it fails outright.
    LeastOutstanding,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::Random => "random",
            Strategy::LeastOutstanding => "least_outstanding",
        })
    }
}

impl TryFrom<String> for Strategy {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        match name.trim() {
            "round_robin" => Ok(Strategy::RoundRobin),
            "random" => Ok(Strategy::Random),
            "least_outstanding" => Ok(Strategy::LeastOutstanding),
            other => Err(format!(
                "strategy must be round_robin, random or least_outstanding (got {other:?})"
            )),
        }
    }
}

/// A strategy with its turn counter.
pub struct Chooser {
    strategy: Strategy,
    turn: AtomicUsize,
}

impl Chooser {
    pub fn new(strategy: Strategy) -> Self {
        Self {
            strategy,
            turn: AtomicUsize::new(0),
        }
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The order in which one read tries `replicas` (those in rotation): the first is the
    /// strategy's choice, the rest are where a failed attempt goes next.
    pub fn order(&self, mut replicas: Vec<Arc<Source>>) -> Vec<Arc<Source>> {
        if replicas.len() < 2 {
            return replicas;
        }
        match self.strategy {
            Strategy::RoundRobin => {
                let turn = self.turn.fetch_add(1, Ordering::Relaxed);
                let len = replicas.len();
                replicas.rotate_left(turn % len);
            }
            Strategy::Random => replicas.shuffle(&mut rand::rng()),
            Strategy::LeastOutstanding => {
                let turn = self.turn.fetch_add(1, Ordering::Relaxed);
                let len = replicas.len();
                replicas.rotate_left(turn % len);
                // Stable: among equally loaded replicas the rotation decides.
                replicas.sort_by_key(|source| source.in_flight());
            }
        }
        replicas
    }
}

#[cfg(test)]
mod tests;
