//! How a read picks among the replicas in rotation.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rand::Rng;
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
    /// Power of two choices: two replicas at random, the one with the lower peak-EWMA
    /// latency × (reads in flight + 1). A replica that is alive but slow gets a small share
    /// without being ejected, and its share back as soon as it is fast again.
    P2cEwma,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::Random => "random",
            Strategy::LeastOutstanding => "least_outstanding",
            Strategy::P2cEwma => "p2c_ewma",
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
            "p2c_ewma" => Ok(Strategy::P2cEwma),
            other => Err(format!(
                "strategy must be p2c_ewma, round_robin, random or least_outstanding (got \
                 {other:?})"
            )),
        }
    }
}

/// A strategy with its state (turn counter, weighted round-robin credits).
pub struct Chooser {
    strategy: Strategy,
    turn: AtomicUsize,
    /// Smooth weighted round robin: each replica's running credit, by name.
    credits: Mutex<HashMap<Arc<str>, i64>>,
}

impl Chooser {
    pub fn new(strategy: Strategy) -> Self {
        Self {
            strategy,
            turn: AtomicUsize::new(0),
            credits: Mutex::new(HashMap::new()),
        }
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The order in which one read tries `replicas` (those in rotation, weight above 0): the
    /// first is the strategy's choice, weights honoured; the rest are where a failed attempt
    /// goes next.
    pub fn order(&self, mut replicas: Vec<Arc<Source>>) -> Vec<Arc<Source>> {
        if replicas.len() < 2 {
            return replicas;
        }
        match self.strategy {
            Strategy::RoundRobin => {
                let first = self.weighted_turn(&replicas);
                replicas.rotate_left(first);
            }
            Strategy::Random => {
                replicas.shuffle(&mut rand::rng());
                let first = weighted_pick(&replicas, &mut rand::rng());
                replicas.swap(0, first);
            }
            Strategy::LeastOutstanding => {
                let turn = self.turn.fetch_add(1, Ordering::Relaxed);
                let len = replicas.len();
                replicas.rotate_left(turn % len);
                // Stable: among equally loaded replicas the rotation decides.
                replicas.sort_by(|a, b| load_per_weight(a).total_cmp(&load_per_weight(b)));
            }
            Strategy::P2cEwma => {
                let mut rng = rand::rng();
                let a = weighted_pick(&replicas, &mut rng);
                let b = loop {
                    let b = weighted_pick(&replicas, &mut rng);
                    if b != a {
                        break b;
                    }
                };
                let first = if replicas[a].cost() <= replicas[b].cost() {
                    a
                } else {
                    b
                };
                let chosen = replicas.swap_remove(first);
                replicas.sort_by(|x, y| x.cost().total_cmp(&y.cost()));
                replicas.insert(0, chosen);
            }
        }
        replicas
    }

    /// Smooth weighted round robin (as nginx does): every replica earns its weight in credit,
    /// the richest is chosen and pays the total. With weights 3 and 1: a a b a, a a b a, …
    fn weighted_turn(&self, replicas: &[Arc<Source>]) -> usize {
        let mut credits = self
            .credits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let total: i64 = replicas.iter().map(|r| i64::from(r.weight())).sum();
        let mut best = 0;
        let mut best_credit = i64::MIN;
        for (index, replica) in replicas.iter().enumerate() {
            let credit = credits.entry(replica.name().clone()).or_insert(0);
            *credit += i64::from(replica.weight());
            if *credit > best_credit {
                best_credit = *credit;
                best = index;
            }
        }
        if let Some(credit) = credits.get_mut(replicas[best].name()) {
            *credit -= total;
        }
        best
    }
}

/// An index into `replicas`, each as likely as its weight.
fn weighted_pick(replicas: &[Arc<Source>], rng: &mut impl Rng) -> usize {
    let total: u64 = replicas.iter().map(|r| u64::from(r.weight())).sum();
    if total == 0 {
        return rng.random_range(0..replicas.len());
    }
    let mut ticket = rng.random_range(0..total);
    for (index, replica) in replicas.iter().enumerate() {
        let weight = u64::from(replica.weight());
        if ticket < weight {
            return index;
        }
        ticket -= weight;
    }
    replicas.len() - 1
}

fn load_per_weight(source: &Source) -> f64 {
    (source.in_flight() + 1) as f64 / f64::from(source.weight().max(1))
}

#[cfg(test)]
mod tests;
