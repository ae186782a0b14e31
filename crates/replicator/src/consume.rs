//! The consuming loop: batches from `products.sync` and `products.delete`, applied to every
//! replica, then acked.
//!
//! A batch is acked only when each of its events is safe: applied on every replica, covered
//! by a catch-up mark for the replicas that missed it, or (when it cannot be parsed) confirmed
//! on `products.dlq`. Anything else drops the connection without acking, so the broker
//! redelivers the batch; applying twice is harmless.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use domain::ChangeEvent;
use messaging::topology::{HEARTBEAT_TYPE, WORK_QUEUES};
use messaging::{
    BrokerAddress, BrokerSettings, Consumer, Delivery, MessagingError, OutgoingMessage, Publisher,
};
use serde::Serialize;
use service_kit::Backoff;
use storage::{DbPool, pool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::apply::{self, PreparedBatch, ReplicaOutcome, RetryPolicy};
use crate::dead_letter::{self, Verdict};
use crate::replica::Replica;

/// Whether the loop holds a broker connection, for `/readyz`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerStatus {
    pub consuming: bool,
    pub since: chrono::DateTime<Utc>,
    pub last_error: Option<String>,
}

pub struct Pipeline {
    pub replicas: Arc<Vec<Arc<Replica>>>,
    pub primary: DbPool,
    pub primary_deadline: Duration,
    pub address: BrokerAddress,
    pub broker: BrokerSettings,
    pub prefetch: u16,
    pub batch_size: usize,
    pub linger: Duration,
    pub policy: RetryPolicy,
    pub reconnect_max: Duration,
    pub status: watch::Sender<ConsumerStatus>,
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("stopped")]
    Stopped,
    #[error(transparent)]
    Broker(#[from] MessagingError),
    #[error("broker connection lost")]
    Lost,
}

impl Pipeline {
    /// Consumes until `stop`, reconnecting with backoff. On `stop` the batch in hand is
    /// finished and acked first.
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(200), self.reconnect_max);
        loop {
            let error = match self.session(&stop, &mut backoff).await {
                SessionEnd::Stopped => break,
                error => error.to_string(),
            };
            tracing::warn!(%error, broker = %self.address, "consumer lost the broker; reconnecting");
            self.set_status(false, Some(error));
            if !backoff.wait(&stop).await {
                break;
            }
        }
        self.set_status(false, Some("stopped".into()));
        tracing::info!("consumer stopped");
    }

    async fn session(&self, stop: &CancellationToken, backoff: &mut Backoff) -> SessionEnd {
        let opened = async {
            let consumer =
                Consumer::open(&self.address, &self.broker, &WORK_QUEUES, self.prefetch).await?;
            let dead_letters = Publisher::open(&self.address, &self.broker).await?;
            Ok::<_, MessagingError>((consumer, dead_letters))
        };
        let (mut consumer, mut dead_letters) = tokio::select! {
            opened = opened => match opened {
                Ok(opened) => opened,
                Err(error) => return error.into(),
            },
            () = stop.cancelled() => return SessionEnd::Stopped,
        };
        tracing::info!(broker = %self.address, queues = ?WORK_QUEUES, "consuming");
        self.set_status(true, None);
        backoff.reset();

        let end = loop {
            let batch = tokio::select! {
                batch = consumer.next_batch(self.batch_size, self.linger) => batch,
                () = stop.cancelled() => break SessionEnd::Stopped,
            };
            let Some(batch) = batch else {
                break SessionEnd::Lost;
            };
            if let Err(end) = self
                .handle(&batch, &consumer, &mut dead_letters, stop)
                .await
            {
                break end;
            }
        };
        dead_letters.close().await;
        consumer.close().await;
        end
    }

    /// Makes every delivery of `batch` safe, then acks them all.
    async fn handle(
        &self,
        batch: &[Delivery],
        consumer: &Consumer,
        dead_letters: &mut Publisher,
        stop: &CancellationToken,
    ) -> Result<(), SessionEnd> {
        let mut events = Vec::with_capacity(batch.len());
        let mut rejected = Vec::new();
        let mut heartbeat = None;
        for delivery in batch {
            if delivery.message_type.as_deref() == Some(HEARTBEAT_TYPE) {
                // Not data: the newest one goes to every replica with the batch; a bad one is
                // dropped (acked), never dead-lettered.
                match heartbeat_time(&delivery.body) {
                    Some(beat_at) => heartbeat = heartbeat.max(Some(beat_at)),
                    None => tracing::warn!(
                        message_id = delivery.message_id.as_deref().unwrap_or("-"),
                        "unreadable pipeline heartbeat; dropping it"
                    ),
                }
                continue;
            }
            match ChangeEvent::decode(&delivery.body) {
                Ok(event) => events.push((delivery, event)),
                Err(error) => {
                    tracing::warn!(
                        message_id = delivery.message_id.as_deref().unwrap_or("-"),
                        queue = delivery.queue,
                        reason = error.reason(),
                        %error,
                        "undecodable message; dead-lettering it"
                    );
                    rejected.push(dead_letter::from_delivery(
                        delivery,
                        &Verdict {
                            reason: error.reason(),
                            error: &error.to_string(),
                            replica: "none",
                            attempts: 1,
                        },
                    ));
                }
            }
        }
        dead_letter::publish(dead_letters, &rejected, "undecodable").await?;

        let decoded: Vec<&ChangeEvent> = events.iter().map(|(_, event)| event).collect();
        if let Some(prepared) = PreparedBatch::new(&decoded, heartbeat) {
            let (applied_to, refusals) = self.apply_everywhere(&prepared, stop).await?;
            let refused: Vec<OutgoingMessage> = refusals
                .iter()
                .filter_map(|(replica, refused)| {
                    let (delivery, _) = events.iter().find(|(_, event)| {
                        event.product_id().as_uuid() == refused.product_id
                            && event.version().get() == refused.version
                    })?;
                    tracing::error!(
                        replica = %replica.name,
                        product_id = %refused.product_id,
                        version = refused.version,
                        error = %refused.error,
                        "replica refused a change; dead-lettering it"
                    );
                    Some(dead_letter::from_delivery(
                        delivery,
                        &Verdict {
                            reason: "refused_by_replica",
                            error: &refused.error,
                            replica: &replica.name,
                            attempts: 2,
                        },
                    ))
                })
                .collect();
            if let Err(error) =
                dead_letter::publish(dead_letters, &refused, "refused_by_replica").await
            {
                for (replica, refused) in &refusals {
                    replica.release_refusals([(refused.product_id, refused.version)]);
                }
                return Err(error.into());
            }
            if tracing::enabled!(tracing::Level::DEBUG) {
                for (delivery, event) in &events {
                    tracing::debug!(
                        event_id = %event.event_id,
                        product_id = %event.product_id(),
                        version = event.version().get(),
                        request_id = delivery.header("x-request-id").unwrap_or("-"),
                        replicas = %applied_to.join(","),
                        "change applied"
                    );
                }
            }
        }
        consumer.ack(batch).await?;
        Ok(())
    }

    /// Applies to every replica in parallel; for each that missed the batch, records a
    /// catch-up mark on the primary before the batch may be acked. Returns the replicas that
    /// took the batch.
    async fn apply_everywhere(
        &self,
        prepared: &PreparedBatch,
        stop: &CancellationToken,
    ) -> Result<(Vec<String>, Vec<(Arc<Replica>, apply::Refused)>), SessionEnd> {
        // The batch in hand finishes even when a stop is requested: its retries run to their
        // budget, bounded by the policy.
        let no_stop = CancellationToken::new();
        let outcomes = futures_util::future::join_all(
            self.replicas
                .iter()
                .map(|replica| apply::apply_to_replica(replica, prepared, &self.policy, &no_stop)),
        )
        .await;
        let mut applied_to = Vec::with_capacity(self.replicas.len());
        let mut refusals = Vec::new();
        for (replica, outcome) in self.replicas.iter().zip(outcomes) {
            if let ReplicaOutcome::Applied { refused, .. } = outcome {
                applied_to.push(replica.name.clone());
                refusals.extend(
                    refused
                        .into_iter()
                        .filter(|r| replica.claim_refusal(r.product_id, r.version))
                        .map(|r| (replica.clone(), r)),
                );
                continue;
            }
            if let ReplicaOutcome::Missed { cause, attempts } = outcome
                && let Some(oldest) = prepared.oldest_event_at()
            {
                let reason = cause.report();
                if attempts > 1 {
                    tracing::warn!(replica = %replica.name, attempts, error = %reason, "batch missed a replica; marking it for catch-up");
                }
                self.mark_behind(replica, oldest, &reason, stop).await?;
            }
        }
        Ok((applied_to, refusals))
    }

    /// Retries until the mark is written: without it the batch must not be acked.
    async fn mark_behind(
        &self,
        replica: &Replica,
        oldest: chrono::DateTime<Utc>,
        reason: &str,
        stop: &CancellationToken,
    ) -> Result<(), SessionEnd> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let marked =
                pool::with_connection(&self.primary, self.primary_deadline, async |conn| {
                    storage::catchup::mark_behind(conn, &replica.name, oldest, reason).await
                })
                .await;
            match marked {
                Ok(()) => {
                    metrics::counter!("replicator_batches_missed_total", "replica" => replica.name.clone())
                        .increment(1);
                    return Ok(());
                }
                Err(error) => {
                    tracing::error!(replica = %replica.name, %error, "cannot record the catch-up mark on the primary; holding the batch");
                    if !backoff.wait(stop).await {
                        return Err(SessionEnd::Stopped);
                    }
                }
            }
        }
    }

    fn set_status(&self, consuming: bool, last_error: Option<String>) {
        metrics::gauge!("replicator_broker_connected").set(if consuming { 1.0 } else { 0.0 });
        self.status.send_replace(ConsumerStatus {
            consuming,
            since: Utc::now(),
            last_error,
        });
    }
}

/// The beat time of a pipeline heartbeat message (`{"beat": N, "beat_at": "…"}`).
fn heartbeat_time(body: &[u8]) -> Option<chrono::DateTime<Utc>> {
    #[derive(serde::Deserialize)]
    struct Heartbeat {
        beat_at: chrono::DateTime<Utc>,
    }
    serde_json::from_slice::<Heartbeat>(body)
        .ok()
        .map(|h| h.beat_at)
}
