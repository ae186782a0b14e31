//! The outbox relay: publishes committed changes to RabbitMQ and deletes each outbox row only
//! after the broker confirms its message.
//!
//! Rows are claimed with `FOR UPDATE SKIP LOCKED` inside a transaction that stays open while
//! the batch is published, so any number of write-api instances can relay side by side without
//! publishing the same row at once. A crash anywhere leaves the rows in place (the transaction
//! rolls back) and they are published again: consumers see duplicates, never gaps. The
//! transaction commits without waiting for its WAL to reach the disk, since a crash of the
//! primary that loses its deletes only brings about the same duplicates.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use messaging::topology::queue_for;
use messaging::{BrokerAddress, BrokerSettings, MessagingError, OutgoingMessage, Publisher};
use serde::Serialize;
use service_kit::Backoff;
use storage::outbox::{self, PendingEvent};
use storage::{AsyncPgConnection, DbPool, StorageError, pool};
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
    /// How often the pipeline heartbeat beats (`None`: never).
    pub heartbeat: Option<Duration>,
}

enum Stop {
    Shutdown,
    BrokerLost(String),
}

struct Batch {
    claimed: usize,
    /// Published, confirmed and deleted from the outbox.
    confirmed: Vec<PendingEvent>,
    /// `(seq, reason)` of rows moved to `outbox_dead_letters`.
    dead_lettered: Vec<(i64, String)>,
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
                    match tokio::time::timeout(FINAL_DRAIN, self.drain(&mut publisher)).await {
                        Ok(Ok(())) => tracing::info!("outbox drained before stopping"),
                        Ok(Err(error)) => tracing::warn!(error = %error,
                            "outbox relay could not drain before stopping; the rest is published at the next start"),
                        Err(_) => tracing::warn!(limit = ?FINAL_DRAIN,
                            "outbox relay stopped draining at its time limit; the rest is published at the next start"),
                    }
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
        let mut next_beat = tokio::time::Instant::now();
        loop {
            if let Some(interval) = self.heartbeat
                && tokio::time::Instant::now() >= next_beat
            {
                next_beat = tokio::time::Instant::now() + interval;
                if let Err(error) = self.beat(publisher, interval).await {
                    return Stop::BrokerLost(error.to_string());
                }
            }
            match self.drain(publisher).await {
                Ok(()) => db_backoff.reset(),
                Err(DrainError::Broker(error)) => return Stop::BrokerLost(error.to_string()),
                Err(DrainError::Database(error)) => {
                    tracing::warn!(error = %error.report(), "outbox relay cannot read the outbox; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(db_backoff.next_delay()) => continue,
                        () = shutdown.cancelled() => return Stop::Shutdown,
                    }
                }
            }
            let poll = tokio::time::sleep(self.poll_interval);
            let beat = tokio::time::sleep_until(next_beat);
            tokio::select! {
                () = shutdown.cancelled() => return Stop::Shutdown,
                () = publisher.lost().cancelled() => return Stop::BrokerLost("connection lost".into()),
                () = self.wake.notified() => {}
                () = poll => {}
                () = beat, if self.heartbeat.is_some() => {}
            }
        }
    }

    /// Moves the heartbeat forward on the primary (unless another instance just did) and
    /// publishes it like a change. A database error only skips this beat; a broker error
    /// ends the session like any publish failure.
    async fn beat(
        &self,
        publisher: &mut Publisher,
        interval: Duration,
    ) -> Result<(), MessagingError> {
        let beat = pool::with_connection(&self.pool, self.db_deadline, async |conn| {
            storage::heartbeat::beat(conn, interval).await
        })
        .await;
        let beat = match beat {
            Ok(Some(beat)) => beat,
            Ok(None) => return Ok(()),
            Err(error) => {
                tracing::debug!(error = %error.report(), "heartbeat skipped: the primary did not answer");
                return Ok(());
            }
        };
        let message = OutgoingMessage {
            queue: messaging::topology::SYNC_QUEUE,
            message_id: format!("heartbeat-{}", beat.beat),
            message_type: messaging::topology::HEARTBEAT_TYPE,
            body: serde_json::json!({"beat": beat.beat, "beat_at": beat.beat_at})
                .to_string()
                .into_bytes(),
            headers: Vec::new(),
        };
        let report = publisher
            .publish_confirmed(std::slice::from_ref(&message))
            .await;
        match report.error {
            Some(error) => Err(error),
            None => {
                metrics::counter!("pipeline_heartbeats_published_total").increment(1);
                Ok(())
            }
        }
    }

    /// Publishes batches until a batch comes back short (the outbox is drained).
    async fn drain(&self, publisher: &mut Publisher) -> Result<(), DrainError> {
        loop {
            let batch = self.publish_batch(publisher).await?;
            if !batch.confirmed.is_empty() {
                tracing::debug!(published = batch.confirmed.len(), "outbox batch confirmed");
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
    /// transaction. Rows that cannot be decoded are moved to `outbox_dead_letters` in the same
    /// transaction, so they never hold back the rows behind them.
    async fn publish_batch(&self, publisher: &mut Publisher) -> Result<Batch, DrainError> {
        let deadline = self.db_deadline + self.broker.publish_timeout + self.broker.confirm_timeout;
        // The transaction idles while the broker confirms, and its commit need not wait for
        // the disk: a delete lost in a server crash publishes the rows again, as duplicates.
        let settings = pool::LocalSettings {
            idle_limit: Some(deadline),
            commit_without_flush: true,
        };
        let batch = pool::transaction_with::<_, StorageError, _>(
            &self.pool,
            deadline,
            settings,
            async |conn| self.publish_claimed(conn, publisher).await,
        )
        .await
        .map_err(DrainError::Database)?;
        record_published(&batch.confirmed);
        record_dead_lettered(&batch.dead_lettered);
        Ok(batch)
    }

    /// The body of [`Relay::publish_batch`]'s transaction.
    async fn publish_claimed(
        &self,
        conn: &mut AsyncPgConnection,
        publisher: &mut Publisher,
    ) -> Result<Batch, StorageError> {
        let claimed = outbox::claim(conn, self.batch_size).await?;
        let count = claimed.len();
        let mut events = Vec::with_capacity(count);
        let mut undecodable = Vec::new();
        for row in claimed {
            match row {
                Ok(pending) => events.push(pending),
                Err((seq, error)) => undecodable.push((seq, error.to_string())),
            }
        }
        if !undecodable.is_empty() {
            outbox::dead_letter(conn, &undecodable).await?;
        }
        if events.is_empty() {
            return Ok(Batch {
                claimed: count,
                confirmed: Vec::new(),
                dead_lettered: undecodable,
                broker_error: None,
            });
        }
        let messages: Vec<OutgoingMessage> = events.iter().map(to_message).collect();
        let report = publisher.publish_confirmed(&messages).await;
        let (confirmed, unconfirmed): (Vec<_>, Vec<_>) = events
            .into_iter()
            .zip(&report.confirmed)
            .partition(|(_, ok)| **ok);
        let confirmed: Vec<PendingEvent> = confirmed.into_iter().map(|(event, _)| event).collect();
        let seqs: Vec<i64> = confirmed.iter().map(|p| p.event.seq).collect();
        outbox::remove(conn, &seqs).await?;
        if let Some(error) = &report.error {
            for (event, _) in &unconfirmed {
                tracing::debug!(event_id = %event.event.event_id, product_id = %event.event.product_id(),
                    "event not confirmed; it stays in the outbox");
            }
            tracing::warn!(%error, unconfirmed = unconfirmed.len(), "outbox batch partly unconfirmed");
        }
        Ok(Batch {
            claimed: count,
            confirmed,
            dead_lettered: undecodable,
            broker_error: report.error,
        })
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

impl std::fmt::Display for DrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DrainError::Broker(error) => write!(f, "broker: {error}"),
            DrainError::Database(error) => write!(f, "database: {}", error.report()),
        }
    }
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

/// Says, once each and after they left the outbox, which rows were set aside and why.
fn record_dead_lettered(rows: &[(i64, String)]) {
    for (seq, reason) in rows {
        tracing::error!(seq, %reason,
            "outbox row cannot be published; moved to outbox_dead_letters");
    }
    if !rows.is_empty() {
        metrics::counter!("outbox_dead_lettered_total")
            .increment(u64::try_from(rows.len()).unwrap_or(u64::MAX));
    }
}

fn record_published(confirmed: &[PendingEvent]) {
    let now = Utc::now();
    for pending in confirmed {
        let queue = queue_for(pending.event.kind());
        metrics::counter!("outbox_events_published_total", "queue" => queue).increment(1);
        let waited = (now - pending.enqueued_at).to_std().unwrap_or_default();
        metrics::histogram!("outbox_publish_delay_seconds").record(waited.as_secs_f64());
    }
}
