//! A replica down for longer than the retry budget, and poison messages.

use std::time::Duration;

use amqprs::BasicProperties;
use amqprs::channel::BasicPublishArguments;
use test_support::LinkMode;

use crate::{stack, writes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_down_past_the_budget_catches_up_by_itself() {
    let stack = stack(2, &[1], 1).await;
    let proxy = stack.replica_proxies[1].as_ref().unwrap();
    writes(&stack, 200, 8).await;
    stack.wait_converged().await;

    proxy.set(LinkMode::Cut);
    writes(&stack, 800, 8).await;
    // The healthy replica keeps up while the other is away.
    let (_, report) = stack.replicator_command(&["verify"]).await;
    test_support::eventually(
        Duration::from_secs(30),
        "replica-1 in sync during the outage",
        async || {
            let (_, report) = stack.replicator_command(&["verify"]).await;
            report.contains("replica-1: in sync").then_some(())
        },
    )
    .await;
    assert!(report.contains("replica-2: DIFFERS"), "{report}");

    proxy.set(LinkMode::Open);
    stack.wait_converged().await;
    assert_eq!(
        stack.vhost.queue_depth("products.dlq").await,
        Some(0),
        "an outage is not the messages' fault"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_and_replication_goes_on() {
    let stack = stack(1, &[], 1).await;
    let connection = stack.vhost.connect().await;
    let channel = connection.open_channel(None).await.unwrap();
    for (queue, body) in [
        ("products.sync", b"{not json".to_vec()),
        ("products.delete", br#"{"schema_version": 99}"#.to_vec()),
    ] {
        channel
            .basic_publish(
                BasicProperties::default()
                    .with_message_id("poison")
                    .finish(),
                body,
                BasicPublishArguments::new("", queue),
            )
            .await
            .unwrap();
    }
    writes(&stack, 300, 8).await;
    stack.wait_converged().await;
    test_support::eventually(
        Duration::from_secs(20),
        "two messages in the DLQ",
        async || (stack.vhost.queue_depth("products.dlq").await == Some(2)).then_some(()),
    )
    .await;

    let (listed, text) = stack.replicator_command(&["dlq", "list"]).await;
    assert!(listed, "{text}");
    assert!(text.contains("\"reason\":\"malformed\""), "{text}");
    assert!(
        text.contains("\"original_queue\":\"products.delete\""),
        "{text}"
    );
    assert!(text.contains("\"replica\":\"none\""), "{text}");
    // Listing leaves them where they are (the management API's counts catch up within a few
    // seconds); replay keeps what still cannot be decoded.
    test_support::eventually(
        Duration::from_secs(20),
        "both messages back in the DLQ after listing",
        async || (stack.vhost.queue_depth("products.dlq").await == Some(2)).then_some(()),
    )
    .await;
    let (replayed, text) = stack.replicator_command(&["dlq", "replay"]).await;
    assert!(replayed, "{text}");
    assert!(
        text.contains("\"replayed\":0") && text.contains("\"kept\":2"),
        "{text}"
    );
    let _ = channel.close().await;
    let _ = connection.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_one_healthy_replica_refuses_is_dead_lettered_naming_it() {
    let stack = stack(2, &[], 1).await;
    stack.wait_replicas_migrated().await;
    {
        use diesel_async::RunQueryDsl;
        let mut conn = stack.replicas[0].connect().await;
        diesel::sql_query(
            "ALTER TABLE products ADD CONSTRAINT refuse_one CHECK (name <> 'refused by replica-1')",
        )
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let refused = stack
        .client
        .post(format!("{}/api/products", stack.write_url()))
        .json(&serde_json::json!({"name": "refused by replica-1", "price": 1, "stock": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 201);
    writes(&stack, 200, 8).await;

    test_support::eventually(
        Duration::from_secs(30),
        "the refused change in the DLQ",
        async || (stack.vhost.queue_depth("products.dlq").await == Some(1)).then_some(()),
    )
    .await;
    let (listed, text) = stack.replicator_command(&["dlq", "list"]).await;
    assert!(listed, "{text}");
    assert!(text.contains("\"reason\":\"refused_by_replica\""), "{text}");
    assert!(text.contains("\"replica\":\"replica-1\""), "{text}");
    assert!(text.contains("\"attempts\":\"2\""), "{text}");
    // Everything else reached both replicas; only replica-1 lacks the refused product.
    test_support::eventually(Duration::from_secs(30), "replica-2 in sync", async || {
        let (_, report) = stack.replicator_command(&["verify"]).await;
        report.contains("replica-2: in sync").then_some(())
    })
    .await;
    let (_, report) = stack.replicator_command(&["verify"]).await;
    assert!(report.contains("replica-1: DIFFERS"), "{report}");
    let tallies = stack.tallies().await;
    assert_eq!(
        tallies[1].rows + 1,
        tallies[0].rows,
        "replica-1 misses exactly one row"
    );
}

/// A replica restored from an older backup lacks what happened since the backup, and no
/// catch-up mark says so: its apply counter going back is what gives it away, and it is
/// copied in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restored_from_an_older_backup_is_copied_in_full() {
    use diesel_async::SimpleAsyncConnection;
    let stack = stack(2, &[], 1).await;
    writes(&stack, 300, 8).await;
    stack.wait_converged().await;
    // What makes a restore visible is the primary's record of the counter: wait until catch-up
    // has recorded the replica's count after the writes (a backup newer than the record
    // cannot be told from the live replica).
    let mut replica = stack.replicas[1].connect().await;
    let mut primary = stack.primary.connect().await;
    let recorded_deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let applied = counter(
            &mut replica,
            "SELECT events_applied AS n FROM replication_status",
        )
        .await;
        let recorded = counter(
            &mut primary,
            "SELECT events_applied AS n FROM replica_progress WHERE replica = 'replica-2'",
        )
        .await;
        if recorded.is_some() && recorded == applied {
            break;
        }
        assert!(
            tokio::time::Instant::now() < recorded_deadline,
            "catch-up never recorded replica-2's count: {recorded:?} recorded, {applied:?} applied"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // "Restore" replica-2 to an earlier state: rows and counter from before the last writes.
    replica
        .batch_execute(
            "DELETE FROM products WHERE id IN \
                 (SELECT id FROM products ORDER BY updated_at DESC LIMIT 50); \
             UPDATE replication_status SET events_applied = events_applied / 2, \
                 last_event_at = (SELECT max(updated_at) FROM products)",
        )
        .await
        .unwrap();
    // (Catch-up may notice within its interval, before a `verify` would finish: the log line
    // below is the proof it noticed, convergence the proof it repaired.)
    stack.wait_converged().await;
    let replicator = &stack.replicators[0];
    test_support::eventually(Duration::from_secs(10), "the log line", async || {
        replicator.log().contains("history went back").then_some(())
    })
    .await;
}

/// The single `n` a query returns, if any row.
async fn counter(conn: &mut diesel_async::AsyncPgConnection, query: &str) -> Option<i64> {
    use diesel::OptionalExtension;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(query)
        .get_result::<Count>(conn)
        .await
        .optional()
        .unwrap()
        .map(|count| count.n)
}
