use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::*;

pub(crate) fn source(name: &str, cooldown: Duration) -> Source {
    // Pools connect lazily: nothing listens on port 1 and nothing tries.
    let pool = storage::pool::build(
        "postgres://nobody@127.0.0.1:1/none",
        &storage::PoolSettings::new("unit-test"),
    )
    .unwrap();
    let policy = Policy {
        latency_decay: Duration::from_secs(2),
        max_lag_ms: 5000,
        check_interval: Duration::from_millis(100),
        max_consecutive_errors: 3,
        cooldown,
        flap: FlapPolicy {
            window: Duration::from_secs(60),
            max_exits: 3,
            rejoin_checks: 2,
        },
    };
    let lookups = LookupSettings {
        max_ids: 64,
        concurrency: 8,
        deadline: Duration::from_secs(1),
    };
    Source::new(
        name,
        Role::Replica,
        pool,
        lookups,
        policy,
        Arc::new(Notify::new()),
    )
}

fn lag(ms: u64) -> Option<Lag> {
    Some(Lag {
        ms,
        history: crate::lag::History::Level,
    })
}

#[tokio::test]
async fn out_until_checked_then_out_while_lagging() {
    let replica = source("r", Duration::from_secs(5));
    assert_eq!(
        replica.unavailable_reason().as_deref(),
        Some("not checked yet")
    );
    replica.record_probe(Instant::now(), Ok(lag(10)));
    assert!(replica.is_available());
    replica.record_probe(Instant::now(), Ok(lag(6000)));
    let reason = replica.unavailable_reason().unwrap();
    assert!(
        reason.contains("lacks changes from 6000 ms ago"),
        "{reason}"
    );
    replica.record_probe(Instant::now(), Err("health check failed: refused".into()));
    assert_eq!(
        replica.report().last_error.as_deref(),
        Some("health check failed: refused")
    );
    replica.record_probe(Instant::now(), Ok(lag(0)));
    assert!(replica.is_available());
}

#[tokio::test]
async fn consecutive_errors_open_the_breaker_until_a_later_probe_passes() {
    let replica = source("r", Duration::from_millis(30));
    replica.record_probe(Instant::now(), Ok(lag(0)));
    replica.record_failure("boom");
    replica.record_failure("boom");
    replica.record_success();
    replica.record_failure("boom");
    replica.record_failure("boom");
    assert!(replica.is_available(), "a success ends the streak");
    replica.record_failure("boom");
    let reason = replica.unavailable_reason().unwrap();
    assert!(
        reason.contains("3 consecutive read errors (last: boom)"),
        "{reason}"
    );
    let opened = Instant::now();
    assert!(!replica.probe_due(opened));

    // A probe that began before the cool-down ended decides nothing.
    replica.record_probe(opened, Ok(lag(0)));
    assert!(!replica.is_available());

    tokio::time::sleep(Duration::from_millis(40)).await;
    assert!(replica.probe_due(Instant::now()));
    assert!(
        replica
            .unavailable_reason()
            .unwrap()
            .contains("waiting for a health check")
    );
    replica.record_probe(Instant::now(), Ok(lag(0)));
    assert!(replica.is_available());
    assert_eq!(replica.report().consecutive_errors, 0);
}

#[tokio::test]
async fn a_failing_probe_after_the_cool_down_keeps_it_out_as_unreachable() {
    let replica = source("r", Duration::from_millis(10));
    replica.record_probe(Instant::now(), Ok(lag(0)));
    for _ in 0..3 {
        replica.record_failure("refused");
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    replica.record_probe(Instant::now(), Err("health check failed: refused".into()));
    assert_eq!(
        replica.unavailable_reason().as_deref(),
        Some("health check failed: refused")
    );
    assert!(replica.probe_due(Instant::now()));
}

#[tokio::test]
async fn a_flapping_source_rejoins_only_after_passing_checks_in_a_row() {
    let replica = source("r", Duration::from_secs(5));
    replica.record_probe(Instant::now(), Ok(lag(0)));
    // Three exits within the window are tolerated: each passing check brings it back.
    for _ in 0..3 {
        replica.record_probe(Instant::now(), Err("refused".into()));
        replica.record_probe(Instant::now(), Ok(lag(0)));
        assert!(replica.is_available());
    }
    assert_eq!(replica.report().recent_exits, 3);
    // The fourth exit damps it: two passing checks in a row are needed.
    replica.record_probe(Instant::now(), Err("refused".into()));
    replica.record_probe(Instant::now(), Ok(lag(0)));
    let reason = replica.unavailable_reason().unwrap();
    assert!(reason.contains("flap damping"), "{reason}");
    assert!(reason.contains("1 more"), "{reason}");
    // A failing check starts the count again.
    replica.record_probe(Instant::now(), Err("refused".into()));
    replica.record_probe(Instant::now(), Ok(lag(0)));
    assert!(!replica.is_available());
    replica.record_probe(Instant::now(), Ok(lag(0)));
    assert!(replica.is_available(), "{:?}", replica.unavailable_reason());
    assert!(replica.report().out_since.is_none());
}

#[tokio::test]
async fn a_source_out_says_since_when() {
    let replica = source("r", Duration::from_secs(5));
    replica.record_probe(Instant::now(), Ok(lag(0)));
    assert!(replica.report().out_since.is_none());
    replica.record_probe(Instant::now(), Ok(lag(9000)));
    let report = replica.report();
    assert!(!report.healthy);
    assert!(report.out_since.is_some());
    assert_eq!(report.recent_exits, 1);
}
