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
