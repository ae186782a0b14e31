//! The outbox relay: publishes committed changes to RabbitMQ and deletes each outbox row only
//! after the broker confirms its message.
//!
//! Rows are claimed with `FOR UPDATE SKIP LOCKED` inside a transaction that stays open while
//! the batch is published, so any number of write-api instances can relay side by side without
//! publishing the same row at once. A crash anywhere leaves the rows in place (the transaction
//! rolls back) and they are published again: consumers see duplicates, never gaps.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel_async::AsyncConnection;
use messaging::topology::queue_for;
use messaging::{BrokerAddress, BrokerSettings, MessagingError, OutgoingMessage, Publisher};
use serde::Serialize;
use service_kit::Backoff;
use storage::outbox::{self, PendingEvent};
use storage::{DbPool, StorageError};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

/// The broker link as `/readyz` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStatus {
    pub connected: bool,
    /// When the link last went up or down.
    pub since: DateTime<Utc>,
    pub last_error: Option<String>,
}

/// How long a stopping relay keeps publishing what is pending before it gives up (the rows
/// stay in the outbox for the next start).
const FINAL_DRAIN: Duration = Duration::from_secs(5);

pub struct Relay {
    pub pool: DbPool,
    pub address: BrokerAddress,
    pub broker: BrokerSettings,
    pub batch_size: i64,
    pub poll_interval: Duration,
    /// Bound on the database part of one batch (claim and delete).
    pub db_deadline: Duration,
    pub wake: Arc<Notify>,
    pub status: watch::Sender<BrokerStatus>,
    /// Ceiling of the reconnect backoff.
    pub reconnect_max: Duration,
}

enum Stop {
    Shutdown,
    BrokerLost(String),
}

struct Batch {
    claimed: usize,
    published: usize,
    broker_error: Option<MessagingError>,
}

impl Relay {
    /// Runs until `shutdown` fires: connects, drains the outbox, waits for a wake-up or the
    /// poll interval, and reconnects with backoff whenever the broker link fails.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), self.reconnect_max);
        while !shutdown.is_cancelled() {
            let mut publisher = match Publisher::open(&self.address, &self.broker).await {
                Ok(publisher) => publisher,
                Err(error) => {
                    self.set_disconnected(&error.to_string());
                    tracing::warn!(broker = %self.address, %error, attempt = backoff.attempts() + 1,
                        "outbox relay cannot reach the broker; writes continue and the outbox grows");
                    if !backoff.wait(&shutdown).await {
                        break;
                    }
                    continue;
                }
            };
            backoff.reset();
            self.status.send_replace(BrokerStatus {
                connected: true,
                since: Utc::now(),
                last_error: None,
            });
            tracing::info!(broker = %self.address, "outbox relay connected");

            match self.serve(&mut publisher, &shutdown).await {
                Stop::Shutdown => {
                    let _ = tokio::time::timeout(FINAL_DRAIN, self.drain(&mut publisher)).await;
                    publisher.close().await;
                    break;
                }
                Stop::BrokerLost(error) => {
                    self.set_disconnected(&error);
                    tracing::warn!(broker = %self.address, %error, "outbox relay lost the broker; reconnecting");
                    metrics::counter!("outbox_broker_disconnects_total").increment(1);
                    if !backoff.wait(&shutdown).await {
                        break;
                    }
                }
            }
        }
        tracing::info!("outbox relay stopped");
    }

    /// Publishes while there is work, then waits; returns when the broker link is lost or
    /// shutdown is requested.
    async fn serve(&self, publisher: &mut Publisher, shutdown: &CancellationToken) -> Stop {
        let mut db_backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match self.drain(publisher).await {
                Ok(()) => db_backoff.reset(),
                Err(DrainError::Broker(error)) => return Stop::BrokerLost(error.to_string()),
                Err(DrainError::Database(error)) => {
                    tracing::warn!(%error, "outbox relay cannot read the outbox; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(db_backoff.next_delay()) => continue,
                        () = shutdown.cancelled() => return Stop::Shutdown,
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return Stop::Shutdown,
                () = publisher.lost().cancelled() => return Stop::BrokerLost("connection lost".into()),
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }

    /// Publishes batches until a batch comes back short (the outbox is drained).
    async fn drain(&self, publisher: &mut Publisher) -> Result<(), DrainError> {
        loop {
            let batch = self.publish_batch(publisher).await?;
            if batch.published > 0 {
                tracing::debug!(published = batch.published, "outbox batch confirmed");
            }
            if let Some(error) = batch.broker_error {
                return Err(DrainError::Broker(error));
            }
            if batch.claimed < usize::try_from(self.batch_size).unwrap_or(usize::MAX) {
                return Ok(());
            }
        }
    }

    /// Claims a batch, publishes it with confirms, and deletes the confirmed rows, in one
    /// transaction.
    async fn publish_batch(&self, publisher: &mut Publisher) -> Result<Batch, DrainError> {
        let deadline = self.db_deadline + self.broker.publish_timeout + self.broker.confirm_timeout;
        let batch_size = self.batch_size;
        let work = async {
            let mut conn = self.pool.get().await.map_err(StorageError::from)?;
            conn.transaction::<_, StorageError, _>(async |conn| {
                let claimed = outbox::claim(conn, batch_size).await?;
                let count = claimed.len();
                let events: Vec<PendingEvent> = claimed
                    .into_iter()
                    .filter_map(|row| match row {
                        Ok(pending) => Some(pending),
                        Err((seq, error)) => {
                            tracing::error!(seq, %error, "outbox row cannot be published; left in place");
                            None
                        }
                    })
                    .collect();
                if events.is_empty() {
                    return Ok(Batch { claimed: count, published: 0, broker_error: None });
                }
                let messages: Vec<OutgoingMessage> = events.iter().map(to_message).collect();
                let report = publisher.publish_confirmed(&messages).await;
                let confirmed: Vec<&PendingEvent> = events
                    .iter()
                    .zip(&report.confirmed)
                    .filter_map(|(event, ok)| ok.then_some(event))
                    .collect();
                let seqs: Vec<i64> = confirmed.iter().map(|p| p.event.seq).collect();
                outbox::remove(conn, &seqs).await?;
                record_published(&confirmed);
                if let Some(error) = &report.error {
                    for (event, ok) in events.iter().zip(&report.confirmed) {
                        if !ok {
                            tracing::debug!(event_id = %event.event.event_id, product_id = %event.event.product_id(),
                                "event not confirmed; it stays in the outbox");
                        }
                    }
                    tracing::warn!(%error, unconfirmed = events.len() - seqs.len(), "outbox batch partly unconfirmed");
                }
                Ok(Batch {
                    claimed: count,
                    published: seqs.len(),
                    broker_error: report.error,
                })
            })
            .await
        };
        tokio::time::timeout(deadline, work)
            .await
            .map_err(|_| DrainError::Database(StorageError::Timeout(deadline)))?
            .map_err(DrainError::Database)
    }

    fn set_disconnected(&self, error: &str) {
        self.status.send_modify(|status| {
            if status.connected {
                status.since = Utc::now();
            }
            status.connected = false;
            status.last_error = Some(error.to_owned());
        });
    }
}

enum DrainError {
    Broker(MessagingError),
    Database(StorageError),
}

fn to_message(pending: &PendingEvent) -> OutgoingMessage {
    let event = &pending.event;
    let mut headers = Vec::new();
    if let Some(request_id) = &pending.request_id {
        headers.push(("x-request-id", request_id.clone()));
    }
    OutgoingMessage {
        queue: queue_for(event.kind()),
        message_id: event.event_id.to_string(),
        message_type: messaging::topology::CHANGE_EVENT_TYPE,
        body: event.encode(),
        headers,
    }
}

fn record_published(confirmed: &[&PendingEvent]) {
    let now = Utc::now();
    for pending in confirmed {
        let queue = queue_for(pending.event.kind());
        metrics::counter!("outbox_events_published_total", "queue" => queue).increment(1);
        let waited = (now - pending.enqueued_at).to_std().unwrap_or_default();
        metrics::histogram!("outbox_publish_delay_seconds").record(waited.as_secs_f64());
    }
}
