use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::source::tests::source;

fn names(order: &[Arc<Source>]) -> Vec<String> {
    order.iter().map(|s| s.name().to_string()).collect()
}

fn replicas() -> Vec<Arc<Source>> {
    ["a", "b", "c"]
        .into_iter()
        .map(|name| Arc::new(source(name, Duration::from_secs(1))))
        .collect()
}

#[tokio::test]
async fn round_robin_starts_one_further_each_time_and_keeps_the_rest_as_fallbacks() {
    let chooser = Chooser::new(Strategy::RoundRobin);
    let replicas = replicas();
    let orders: Vec<Vec<String>> = (0..4)
        .map(|_| names(&chooser.order(replicas.clone())))
        .collect();
    assert_eq!(orders[0], ["a", "b", "c"]);
    assert_eq!(orders[1], ["b", "c", "a"]);
    assert_eq!(orders[2], ["c", "a", "b"]);
    assert_eq!(orders[3], ["a", "b", "c"]);
}

#[tokio::test]
async fn least_outstanding_prefers_the_idlest_replica() {
    let chooser = Chooser::new(Strategy::LeastOutstanding);
    let replicas = replicas();
    let _busy_a = replicas[0].begin();
    let _busy_b = [replicas[1].begin(), replicas[1].begin()];
    for _ in 0..3 {
        assert_eq!(names(&chooser.order(replicas.clone())), ["c", "a", "b"]);
    }
}

#[tokio::test]
async fn random_keeps_every_replica() {
    let chooser = Chooser::new(Strategy::Random);
    let mut order = names(&chooser.order(replicas()));
    order.sort();
    assert_eq!(order, ["a", "b", "c"]);
}

fn weighted(weights: &[(&str, u32)]) -> Vec<Arc<Source>> {
    weights
        .iter()
        .map(|(name, weight)| Arc::new(source(name, Duration::from_secs(1)).with_weight(*weight)))
        .collect()
}

fn shares(chooser: &Chooser, replicas: &[Arc<Source>], reads: usize) -> Vec<usize> {
    let mut counts = vec![0; replicas.len()];
    for _ in 0..reads {
        let first = chooser.order(replicas.to_vec())[0].name().clone();
        let index = replicas.iter().position(|r| *r.name() == first).unwrap();
        counts[index] += 1;
    }
    counts
}

#[tokio::test]
async fn weighted_round_robin_interleaves_by_weight() {
    let chooser = Chooser::new(Strategy::RoundRobin);
    let replicas = weighted(&[("a", 3), ("b", 1)]);
    let firsts: Vec<String> = (0..8)
        .map(|_| chooser.order(replicas.clone())[0].name().to_string())
        .collect();
    assert_eq!(firsts, ["a", "a", "b", "a", "a", "a", "b", "a"]);
}

#[tokio::test]
async fn every_strategy_honours_weights() {
    let replicas = weighted(&[("a", 3), ("b", 1)]);
    for strategy in [
        Strategy::RoundRobin,
        Strategy::Random,
        Strategy::LeastOutstanding,
        Strategy::P2cEwma,
    ] {
        let chooser = Chooser::new(strategy);
        let counts = shares(&chooser, &replicas, 4000);
        let share = counts[0] as f64 / 4000.0;
        // Idle replicas, equal latency: only the weights decide (least_outstanding and
        // p2c_ewma compare load per unit of weight, so the heavier one always wins a tie).
        match strategy {
            Strategy::LeastOutstanding | Strategy::P2cEwma => {
                assert!(share >= 0.75, "{strategy}: {counts:?}")
            }
            _ => assert!((0.70..=0.80).contains(&share), "{strategy}: {counts:?}"),
        }
    }
}

#[tokio::test]
async fn p2c_ewma_sends_reads_to_the_faster_replica() {
    let chooser = Chooser::new(Strategy::P2cEwma);
    let replicas = weighted(&[("fast", 1), ("slow", 1)]);
    replicas[0].observe_latency(Duration::from_millis(2));
    replicas[1].observe_latency(Duration::from_millis(50));
    let counts = shares(&chooser, &replicas, 200);
    assert_eq!(counts, [200, 0]);
    // Under load the fast one's cost grows with its reads in flight until the slow one is
    // worth a try.
    let _busy: Vec<_> = (0..40).map(|_| replicas[0].begin()).collect();
    assert_eq!(chooser.order(replicas.clone())[0].name().as_ref(), "slow");
}

#[tokio::test]
async fn weight_zero_drains_a_replica() {
    let replicas = weighted(&[("a", 0)]);
    replicas[0].record_probe(tokio::time::Instant::now(), Ok(None));
    assert_eq!(
        replicas[0].unavailable_reason().as_deref(),
        Some("drained: weight 0")
    );
}
