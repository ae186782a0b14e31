//! `replicator verify`: does every replica hold exactly the primary's rows and versions?

use std::time::Duration;

use serde::Serialize;
use storage::replica::TableSummary;
use storage::{DbPool, StorageError, pool};

use crate::replica::Replica;

#[derive(Debug, Serialize)]
pub struct Verdict {
    pub replica: String,
    pub live_rows: Option<i64>,
    pub all_rows: Option<i64>,
    pub in_sync: bool,
    pub problem: Option<String>,
}

/// Compares each replica with the primary. The primary must answer.
pub async fn verify(
    primary: &DbPool,
    replicas: &[std::sync::Arc<Replica>],
    deadline: Duration,
) -> Result<(TableSummary, Vec<Verdict>), StorageError> {
    let expected = summarize(primary, deadline).await?;
    let mut verdicts = Vec::with_capacity(replicas.len());
    for replica in replicas {
        let verdict = match summarize(&replica.pool, deadline).await {
            Ok(found) => {
                let in_sync = found == expected;
                let problem = (!in_sync).then(|| {
                    format!(
                        "live rows {} (primary {}), all rows {} (primary {}), checksum {}",
                        found.live_rows,
                        expected.live_rows,
                        found.all_rows,
                        expected.all_rows,
                        if found.checksum == expected.checksum {
                            "equal"
                        } else {
                            "differs"
                        }
                    )
                });
                Verdict {
                    replica: replica.name.clone(),
                    live_rows: Some(found.live_rows),
                    all_rows: Some(found.all_rows),
                    in_sync,
                    problem,
                }
            }
            Err(error) => Verdict {
                replica: replica.name.clone(),
                live_rows: None,
                all_rows: None,
                in_sync: false,
                problem: Some(format!("unreachable: {error}")),
            },
        };
        verdicts.push(verdict);
    }
    Ok((expected, verdicts))
}

async fn summarize(db: &DbPool, deadline: Duration) -> Result<TableSummary, StorageError> {
    pool::with_connection(db, deadline, async |conn| {
        storage::replica::summarize(conn).await
    })
    .await
}
