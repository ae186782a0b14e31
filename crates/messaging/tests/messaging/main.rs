//! The publisher and connection against the real RabbitMQ, one vhost per test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use amqprs::channel::{BasicGetArguments, QueueDeleteArguments};
use messaging::topology::{DEAD_LETTER_QUEUE, DELETE_QUEUE, SYNC_QUEUE};
use messaging::{BrokerAddress, BrokerConnection, BrokerSettings, OutgoingMessage, Publisher};
use test_support::{LinkMode, TcpProxy, TestVhost, eventually};

fn settings() -> BrokerSettings {
    let mut settings = BrokerSettings::new("messaging-test");
    settings.connect_timeout = Duration::from_secs(2);
    settings.rpc_timeout = Duration::from_secs(2);
    settings.confirm_timeout = Duration::from_secs(2);
    settings
}

fn message(queue: &'static str, n: usize) -> OutgoingMessage {
    OutgoingMessage {
        queue,
        message_id: format!("m-{n}"),
        message_type: "test",
        body: format!("{{\"n\":{n}}}").into_bytes(),
        headers: vec![("x-request-id", format!("req-{n}"))],
    }
}

#[tokio::test]
async fn publishes_persistent_messages_with_confirms_to_the_declared_queues() {
    let vhost = TestVhost::create().await;
    let address = BrokerAddress::parse(&vhost.url()).unwrap();
    let mut publisher = Publisher::open(&address, &settings()).await.unwrap();

    let batch: Vec<_> = (0..250)
        .map(|n| message(if n % 5 == 0 { DELETE_QUEUE } else { SYNC_QUEUE }, n))
        .collect();
    let report = publisher.publish_confirmed(&batch).await;
    assert!(report.error.is_none(), "{:?}", report.error);
    assert!(report.confirmed.iter().all(|c| *c));

    assert_eq!(vhost.queue_depth(SYNC_QUEUE).await, Some(200));
    assert_eq!(vhost.queue_depth(DELETE_QUEUE).await, Some(50));
    assert_eq!(vhost.queue_depth(DEAD_LETTER_QUEUE).await, Some(0));

    let conn = vhost.connect().await;
    let channel = conn.open_channel(None).await.unwrap();
    let (_, properties, body) = channel
        .basic_get(BasicGetArguments::new(DELETE_QUEUE).no_ack(true).finish())
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(body, b"{\"n\":0}");
    assert_eq!(properties.delivery_mode(), Some(2), "persistent");
    assert_eq!(properties.message_id().map(String::as_str), Some("m-0"));
    let request_id = properties
        .headers()
        .and_then(|h| h.get(&"x-request-id".try_into().unwrap()))
        .map(|v| v.to_string());
    assert!(request_id.unwrap().contains("req-0"));

    // A second publisher declares the same topology without a conflict.
    let again = Publisher::open(&address, &settings()).await.unwrap();
    again.close().await;
    publisher.close().await;
}

#[tokio::test]
async fn an_unroutable_message_is_reported_not_confirmed() {
    let vhost = TestVhost::create().await;
    let address = BrokerAddress::parse(&vhost.url()).unwrap();
    let mut publisher = Publisher::open(&address, &settings()).await.unwrap();

    // Delete the queue behind the publisher's back: the broker would ack into nowhere.
    let conn = vhost.connect().await;
    let channel = conn.open_channel(None).await.unwrap();
    channel
        .queue_delete(QueueDeleteArguments::new(DELETE_QUEUE))
        .await
        .unwrap();

    let report = publisher
        .publish_confirmed(&[message(SYNC_QUEUE, 1), message(DELETE_QUEUE, 2)])
        .await;
    assert_eq!(report.confirmed, [true, false]);
    let error = report.error.expect("an error").to_string();
    assert!(error.contains("m-2") && error.contains("312"), "{error}");
    assert!(!publisher.is_usable(), "a publisher that failed is spent");
}

#[tokio::test]
async fn a_cut_link_is_noticed_and_reported() {
    let vhost = TestVhost::create().await;
    let proxy = TcpProxy::start("127.0.0.1:5672").await;
    let address = BrokerAddress::parse(&vhost.url_via(&proxy.host())).unwrap();
    let mut publisher = Publisher::open(&address, &settings()).await.unwrap();

    proxy.set(LinkMode::Cut);
    eventually(Duration::from_secs(5), "the lost signal", async || {
        publisher.lost().is_cancelled().then_some(())
    })
    .await;
    let report = publisher.publish_confirmed(&[message(SYNC_QUEUE, 1)]).await;
    assert_eq!(report.confirmed, [false]);
    assert!(report.error.is_some());

    proxy.set(LinkMode::Open);
    let mut fresh = Publisher::open(&address, &settings()).await.unwrap();
    let report = fresh.publish_confirmed(&[message(SYNC_QUEUE, 2)]).await;
    assert_eq!(report.confirmed, [true]);
}

#[tokio::test]
async fn a_frozen_link_times_out_instead_of_hanging() {
    let vhost = TestVhost::create().await;
    let proxy = TcpProxy::start("127.0.0.1:5672").await;
    let address = BrokerAddress::parse(&vhost.url_via(&proxy.host())).unwrap();
    let mut publisher = Publisher::open(&address, &settings()).await.unwrap();

    proxy.set(LinkMode::Frozen);
    let started = std::time::Instant::now();
    let report = publisher.publish_confirmed(&[message(SYNC_QUEUE, 1)]).await;
    assert_eq!(report.confirmed, [false]);
    assert!(report.error.is_some());
    assert!(started.elapsed() < Duration::from_secs(10));

    // Opening a connection through the frozen link fails within the connect timeout.
    let opened = BrokerConnection::open(&address, &settings()).await;
    assert!(opened.is_err());
}
