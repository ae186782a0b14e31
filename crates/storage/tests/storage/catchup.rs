//! Catch-up marks, leases and replica flags: the rules that keep a replica that lacks data
//! from ever looking level.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use storage::catchup::{self, Finished};
use storage::products::ProductRow;
use storage::replica::{self, UNKNOWN_HISTORY};
use uuid::Uuid;

use crate::migrated;

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

const LEASE: Duration = Duration::from_secs(30);

/// A new product changed at `seconds`.
fn row(seconds: i64) -> ProductRow {
    ProductRow {
        id: Uuid::now_v7(),
        name: format!("at {seconds}"),
        price_cents: 1,
        stock: 1,
        created_at: at(seconds),
        updated_at: at(seconds),
        version: 1,
        deleted_at: None,
    }
}

#[tokio::test]
async fn a_mark_keeps_its_oldest_time_and_a_round_not_overtaken_clears_it() {
    let (_db, mut conn) = migrated().await;
    catchup::mark_behind(&mut conn, "r", at(20), "down")
        .await
        .unwrap();
    catchup::mark_behind(&mut conn, "r", at(10), "down")
        .await
        .unwrap();
    catchup::mark_behind(&mut conn, "r", at(30), "down")
        .await
        .unwrap();
    let me = Uuid::new_v4();
    let mark = catchup::claim(&mut conn, "r", me, LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mark.behind_since, at(10));
    assert_eq!(
        catchup::finish(&mut conn, &mark, me).await.unwrap(),
        Finished::Cleared
    );
    assert!(catchup::mark_of(&mut conn, "r").await.unwrap().is_none());
}

#[tokio::test]
async fn a_round_overtaken_by_a_new_miss_leaves_only_that_miss_to_copy() {
    let (_db, mut conn) = migrated().await;
    catchup::mark_behind(&mut conn, "r", at(10), "down")
        .await
        .unwrap();
    let me = Uuid::new_v4();
    let mark = catchup::claim(&mut conn, "r", me, LEASE)
        .await
        .unwrap()
        .unwrap();
    // While copying from 10, batches miss the replica again from 50 and from 40.
    catchup::mark_behind(&mut conn, "r", at(50), "down")
        .await
        .unwrap();
    catchup::mark_behind(&mut conn, "r", at(40), "down")
        .await
        .unwrap();
    assert_eq!(
        catchup::finish(&mut conn, &mark, me).await.unwrap(),
        Finished::Advanced(at(40))
    );
    let next = catchup::mark_of(&mut conn, "r").await.unwrap().unwrap();
    assert_eq!(
        next.behind_since,
        at(40),
        "not 10 again: that part was copied"
    );
    // The lease is free again for the next round.
    let other = Uuid::new_v4();
    assert!(
        catchup::claim(&mut conn, "r", other, LEASE)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn one_holder_at_a_time_and_a_lost_lease_decides_nothing() {
    let (_db, mut conn) = migrated().await;
    catchup::mark_behind(&mut conn, "r", at(10), "down")
        .await
        .unwrap();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mark = catchup::claim(&mut conn, "r", a, Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    assert!(
        catchup::claim(&mut conn, "r", b, LEASE)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        catchup::renew(&mut conn, "r", a, Duration::from_millis(200))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    // a's lease ran out: b takes over, and a's late finish changes nothing.
    assert!(
        catchup::claim(&mut conn, "r", b, LEASE)
            .await
            .unwrap()
            .is_some()
    );
    assert!(!catchup::renew(&mut conn, "r", a, LEASE).await.unwrap());
    assert_eq!(
        catchup::finish(&mut conn, &mark, a).await.unwrap(),
        Finished::LeaseLost
    );
    assert!(catchup::mark_of(&mut conn, "r").await.unwrap().is_some());
    catchup::release(&mut conn, "r", b).await.unwrap();
    assert!(
        catchup::claim(&mut conn, "r", a, LEASE)
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn a_flag_is_cleared_only_by_whoever_set_it_last() {
    let (_db, mut conn) = migrated().await;
    let status = storage::replication_status::read(&mut conn).await.unwrap();
    assert_eq!(
        status.behind_since,
        Some(UNKNOWN_HISTORY),
        "new: unknown history"
    );
    let first = Uuid::new_v4();
    replica::flag_behind(&mut conn, at(30), first)
        .await
        .unwrap();
    let status = storage::replication_status::read(&mut conn).await.unwrap();
    assert_eq!(
        status.behind_since,
        Some(UNKNOWN_HISTORY),
        "the older flag stays"
    );

    // Another instance flags it for a newer mark; the first one's clear must not undo that.
    let second = Uuid::new_v4();
    replica::flag_behind(&mut conn, at(30), second)
        .await
        .unwrap();
    assert!(
        !replica::clear_behind(&mut conn, first, Some(at(60)))
            .await
            .unwrap()
    );
    let status = storage::replication_status::read(&mut conn).await.unwrap();
    assert!(status.behind_since.is_some());
    assert_eq!(status.last_event_at, None);

    assert!(
        replica::advance_behind(&mut conn, second, at(45), None)
            .await
            .unwrap()
    );
    let status = storage::replication_status::read(&mut conn).await.unwrap();
    assert_eq!(status.behind_since, Some(at(45)));
    assert!(
        replica::clear_behind(&mut conn, second, Some(at(60)))
            .await
            .unwrap()
    );
    let status = storage::replication_status::read(&mut conn).await.unwrap();
    assert_eq!(status.behind_since, None);
    assert_eq!(status.behind_token, None);
    assert_eq!(
        status.last_event_at,
        Some(at(60)),
        "level up to the newest copied change"
    );
}

#[tokio::test]
async fn progress_only_grows_unless_reset() {
    let (_db, mut conn) = migrated().await;
    assert_eq!(
        catchup::recorded_progress(&mut conn, "r").await.unwrap(),
        None
    );
    catchup::record_progress(&mut conn, "r", 10, false)
        .await
        .unwrap();
    catchup::record_progress(&mut conn, "r", 7, false)
        .await
        .unwrap();
    assert_eq!(
        catchup::recorded_progress(&mut conn, "r").await.unwrap(),
        Some(10)
    );
    catchup::record_progress(&mut conn, "r", 3, true)
        .await
        .unwrap();
    assert_eq!(
        catchup::recorded_progress(&mut conn, "r").await.unwrap(),
        Some(3)
    );
}

#[tokio::test]
async fn the_primary_says_what_each_level_point_lacks_first() {
    let (_db, mut conn) = migrated().await;
    replica::apply(&conn, &[row(10), row(20), row(30)])
        .await
        .unwrap();
    catchup::mark_behind(&mut conn, "replica-2", at(5), "down")
        .await
        .unwrap();
    let sample = storage::staleness::primary_sample(&mut conn, &[Some(at(15)), Some(at(30)), None])
        .await
        .unwrap();
    assert_eq!(sample.first_missing, vec![Some(at(20)), None, Some(at(10))]);
    assert_eq!(sample.marks.len(), 1);
    assert_eq!(sample.marks[0].behind_since, at(5));
}

#[tokio::test]
async fn a_copy_reads_the_changes_up_to_its_bound_and_no_further() {
    let (_db, mut conn) = migrated().await;
    let rows = [row(10), row(20), row(20), row(30), row(40)];
    replica::apply(&conn, &rows).await.unwrap();
    // Pages of two from 15 to 30: the rows at 20, then the one at 30, then nothing, however
    // many rows come after the bound.
    let mut after = None;
    let mut pages = Vec::new();
    loop {
        let page = replica::changed_since(&mut conn, at(15), at(30), after, 2)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.updated_at, last.id));
        pages.push(page.iter().map(|r| r.updated_at).collect::<Vec<_>>());
    }
    assert_eq!(pages, vec![vec![at(20), at(20)], vec![at(30)]]);
    // The bound a round reads after its claim is the primary's clock, the one write-api
    // stamps changes with (same host here).
    let bound = catchup::clock_now(&mut conn).await.unwrap();
    assert!((bound - Utc::now()).abs() < chrono::Duration::seconds(5));
}
