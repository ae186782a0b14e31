//! Primary failover: write-api's `DATABASE_URL` lists a primary and its streaming standby
//! with `target_session_attrs=read-write` (clusters of the test's own, on free ports); under a
//! steady write load the old primary is fenced (f1: stopped; f2: its link frozen) and the
//! standby promoted. Every acknowledged write must be on the new primary and on every
//! replica, writes during the switch answer 503 (never 500), and the time until writes
//! succeed again is printed.
//!
//! The old primary is fenced *before* the promotion, as an operator (or a failover manager)
//! must: promoting first would let write-api commit on the old primary after the standby
//! stopped following it, and those acknowledged writes would be lost.

use std::time::{Duration, Instant};

use diesel::sql_types::{Bool, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::json;
use test_support::stack::{Stack, StackOptions};
use test_support::{LinkMode, PgCluster, TcpProxy, TestDatabase, eventually};

use crate::status_load::{StatusLoad, Tally, Target, settle};
use crate::steady;

/// How the old primary is fenced.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fence {
    /// A fast shutdown (its sessions end with SQLSTATE 57P01).
    Stop,
    /// The link from the services to it frozen: sockets open, no byte moves. The server
    /// itself runs on, unreachable.
    Freeze,
}

/// `postgres://catalogue:catalogue@<hosts>/<database>?target_session_attrs=read-write`.
fn host_list(hosts: &[String], database: &str) -> String {
    format!(
        "postgres://catalogue:catalogue@{}/{database}?target_session_attrs=read-write",
        hosts.join(",")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f1_primary_stopped_and_standby_promoted_under_writes() {
    failover(Fence::Stop, "f1 primary stopped, standby promoted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f2_primary_link_frozen_and_standby_promoted_under_writes() {
    failover(Fence::Freeze, "f2 primary link frozen, standby promoted").await;
}

async fn failover(fence: Fence, scenario: &str) {
    // Declared first, dropped last: the clusters outlive every process using them, and go
    // (servers stopped, directories removed) even when an assertion fails.
    let old_primary = PgCluster::primary().await;
    let standby = PgCluster::standby_of(&old_primary).await;
    let link = TcpProxy::start(&old_primary.host()).await;
    let db = TestDatabase::create_on(&old_primary.admin_url()).await;
    let name = db.name().to_owned();
    eventually(
        Duration::from_secs(30),
        "the database on the standby",
        async || {
            let url = format!("postgres://catalogue:catalogue@{}/{name}", standby.host());
            AsyncPgConnection::establish(&url).await.ok()
        },
    )
    .await;
    // The test's own checks list the standby first: read-only before the switch, it is
    // passed over; promoted, it is the primary (the old one may still run, frozen out).
    let db = db.reached_by(host_list(&[standby.host(), old_primary.host()], &name));
    let services_url = host_list(&[link.host(), standby.host()], &name);
    let stack = Stack::start_on(
        db,
        StackOptions {
            services_database_url: Some(services_url),
            ..StackOptions::default()
        },
    )
    .await;

    let load = StatusLoad::start(&stack.client, &stack.write_url(), 8, Target::Mixed);
    steady(3).await;
    let fencing = Instant::now();
    match fence {
        Fence::Stop => old_primary.stop().await,
        Fence::Freeze => {
            link.set(LinkMode::Frozen);
            // A statement the proxy passed on just before may still be committing.
            tokio::time::sleep(Duration::from_millis(500)).await;
            // Nothing reaches the old primary now: wait for the standby to have replayed
            // all it holds, so that no acknowledged write stays behind.
            caught_up(&old_primary, &standby).await;
        }
    }
    let fenced = fencing.elapsed();
    standby.promote().await;
    let promoted = fencing.elapsed();
    let (back_after, probe) = first_success(&stack, fencing).await;
    steady(5).await;
    let mut tally = load.stop().await;
    tally.add(&probe);
    let refused = tally.unavailable + tally.outcome_unknown;
    assert!(
        refused > 0,
        "{scenario}: no write was refused during the switch: {tally:?}"
    );
    settle(
        scenario,
        &stack,
        &tally,
        &format!(
            "old primary fenced in {fenced:?}, standby promoted {promoted:?} after the fence \
             began; writes succeed again {back_after:?} after it",
        ),
    )
    .await;
    drop(stack);
    drop(link);
}

/// Writes one product every 50 ms until one is acknowledged; how long after `since` that
/// was, and the answers (they count with the load's).
async fn first_success(stack: &Stack, since: Instant) -> (Duration, Tally) {
    let mut tally = Tally::default();
    let url = format!("{}/api/products", stack.write_url());
    loop {
        let answer = stack
            .client
            .post(&url)
            .json(&json!({"name": "after the switch", "price": 1, "stock": 1}))
            .send()
            .await;
        if tally.record(answer).await {
            return (since.elapsed(), tally);
        }
        assert!(
            since.elapsed() < Duration::from_secs(120),
            "writes never succeeded again: {tally:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `standby` has replayed the WAL `primary` has written so far.
async fn caught_up(primary: &PgCluster, standby: &PgCluster) {
    #[derive(diesel::QueryableByName)]
    struct Lsn {
        #[diesel(sql_type = Text)]
        lsn: String,
    }
    #[derive(diesel::QueryableByName)]
    struct Reached {
        #[diesel(sql_type = Bool)]
        reached: bool,
    }
    let mut conn = AsyncPgConnection::establish(&primary.admin_url())
        .await
        .unwrap();
    let lsn: Lsn = diesel::sql_query("SELECT pg_current_wal_lsn()::text AS lsn")
        .get_result(&mut conn)
        .await
        .unwrap();
    let mut conn = AsyncPgConnection::establish(&standby.admin_url())
        .await
        .unwrap();
    let sql = format!(
        "SELECT pg_last_wal_replay_lsn() >= '{}'::pg_lsn AS reached",
        lsn.lsn
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reached: Reached = diesel::sql_query(&sql).get_result(&mut conn).await.unwrap();
        if reached.reached {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the standby never replayed {}",
            lsn.lsn
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
