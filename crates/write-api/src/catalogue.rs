//! The write operations. Each runs in one transaction on the primary that changes the
//! product row and records the change in the outbox, so the change and its event commit
//! together or not at all.

use std::sync::Arc;
use std::time::Duration;

use domain::{NewProduct, Product, ProductFields, ProductId, ProductPatch, Version};
use storage::{AsyncPgConnection, DbPool, StorageError, TransactionError, outbox, pool, products};
use tokio::sync::Notify;

use crate::preconditions::Precondition;

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("product {0} not found")]
    NotFound(ProductId),
    #[error("product {0} already exists")]
    AlreadyExists(ProductId),
    #[error("product {id} does not satisfy If-Match (current version: {current:?})")]
    PreconditionFailed {
        id: ProductId,
        current: Option<Version>,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<diesel::result::Error> for WriteError {
    fn from(error: diesel::result::Error) -> Self {
        WriteError::Storage(StorageError::Query(error))
    }
}

/// What a successful write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new product, or a deleted id brought back.
    Created,
    Updated,
    Deleted,
}

/// A change a client asked for, with everything already parsed.
enum Change {
    Create {
        id: ProductId,
        fields: ProductFields,
    },
    Replace {
        id: ProductId,
        fields: ProductFields,
        precondition: Precondition,
    },
    Patch {
        id: ProductId,
        patch: ProductPatch,
        precondition: Precondition,
    },
    Delete {
        id: ProductId,
        precondition: Precondition,
    },
}

/// The write side of the catalogue.
#[derive(Clone)]
pub struct Catalogue {
    pool: DbPool,
    deadline: Duration,
    /// Wakes the outbox relay after a commit.
    outbox_written: Arc<Notify>,
}

/// Times a transaction is retried when a concurrent request created the same id between our
/// lock and our insert.
const CREATE_RACE_ATTEMPTS: usize = 3;

impl Catalogue {
    pub fn new(pool: DbPool, deadline: Duration, outbox_written: Arc<Notify>) -> Self {
        Self {
            pool,
            deadline,
            outbox_written,
        }
    }

    /// `POST`: creates a product, or re-creates a deleted id from its tombstone's version.
    pub async fn create(&self, new: NewProduct, request_id: &str) -> Result<Product, WriteError> {
        let id = new.id.unwrap_or_else(ProductId::generate);
        let change = Change::Create {
            id,
            fields: new.fields,
        };
        Ok(self.write(change, request_id).await?.0)
    }

    /// `PUT`: replaces every field, creating the product when it is absent or deleted.
    pub async fn replace(
        &self,
        id: ProductId,
        fields: ProductFields,
        precondition: Precondition,
        request_id: &str,
    ) -> Result<(Product, Outcome), WriteError> {
        let change = Change::Replace {
            id,
            fields,
            precondition,
        };
        self.write(change, request_id).await
    }

    /// `PATCH`: changes the given fields of a live product.
    pub async fn patch(
        &self,
        id: ProductId,
        patch: ProductPatch,
        precondition: Precondition,
        request_id: &str,
    ) -> Result<Product, WriteError> {
        let change = Change::Patch {
            id,
            patch,
            precondition,
        };
        Ok(self.write(change, request_id).await?.0)
    }

    /// `DELETE`: turns a live product into a tombstone.
    pub async fn delete(
        &self,
        id: ProductId,
        precondition: Precondition,
        request_id: &str,
    ) -> Result<Product, WriteError> {
        let change = Change::Delete { id, precondition };
        Ok(self.write(change, request_id).await?.0)
    }

    /// Applies `change` and records the result in the outbox, in one transaction, all under
    /// the request deadline (waiting for a connection included).
    ///
    /// A failure that proves nothing was committed and that a second attempt may well get
    /// past (a serialization failure, a deadlock, the session lost before `COMMIT`) is retried
    /// once, at once, on another connection, within the same deadline.
    async fn write(
        &self,
        change: Change,
        request_id: &str,
    ) -> Result<(Product, Outcome), WriteError> {
        let until = tokio::time::Instant::now() + self.deadline;
        let mut retried = false;
        let mut races = 0;
        let written = loop {
            let remaining = until.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(StorageError::Timeout(self.deadline).into());
            }
            let attempt = pool::transaction(&self.pool, remaining, async |conn| {
                let Some((product, outcome)) = apply(conn, &change).await? else {
                    return Ok(None);
                };
                outbox::enqueue(conn, &product, Some(request_id)).await?;
                Ok(Some((product, outcome)))
            })
            .await;
            match attempt {
                Ok(Some(written)) => break written,
                Ok(None) => {
                    races += 1;
                    if races == CREATE_RACE_ATTEMPTS {
                        return Err(StorageError::Unavailable(
                            "the product kept changing under concurrent writes".into(),
                        )
                        .into());
                    }
                }
                Err(WriteError::Storage(error)) if !retried && error.worth_retrying_at_once() => {
                    retried = true;
                    metrics::counter!("write_retries_total").increment(1);
                    tracing::info!(error = %error.report(), request_id,
                        "write not committed; trying once more");
                }
                Err(error) => return Err(error),
            }
        };
        self.outbox_written.notify_one();
        tracing::debug!(
            product_id = %written.0.id,
            version = written.0.version.get(),
            deleted = written.0.is_deleted(),
            request_id,
            "change committed"
        );
        Ok(written)
    }
}

impl TransactionError for WriteError {
    fn storage_error(&mut self) -> Option<&mut StorageError> {
        match self {
            WriteError::Storage(error) => Some(error),
            _ => None,
        }
    }
}

/// The product statements of one change. `None` means a concurrent create won a race and the
/// transaction should be run again.
async fn apply(
    conn: &mut AsyncPgConnection,
    change: &Change,
) -> Result<Option<(Product, Outcome)>, WriteError> {
    match change {
        Change::Create { id, fields } => {
            if let Some(created) = products::insert_new(conn, *id, fields).await? {
                return Ok(Some((created, Outcome::Created)));
            }
            match products::lock(conn, *id).await? {
                Some(tombstone) if tombstone.is_deleted() => {
                    let revived = products::overwrite(conn, &tombstone, fields).await?;
                    Ok(Some((revived, Outcome::Created)))
                }
                Some(_) => Err(WriteError::AlreadyExists(*id)),
                None => Ok(None),
            }
        }
        Change::Replace {
            id,
            fields,
            precondition,
        } => {
            let current = products::lock(conn, *id).await?;
            check(precondition, *id, current.as_ref())?;
            match current {
                Some(current) => {
                    let outcome = if current.is_deleted() {
                        Outcome::Created
                    } else {
                        Outcome::Updated
                    };
                    let replaced = products::overwrite(conn, &current, fields).await?;
                    Ok(Some((replaced, outcome)))
                }
                None => Ok(products::insert_new(conn, *id, fields)
                    .await?
                    .map(|created| (created, Outcome::Created))),
            }
        }
        Change::Patch {
            id,
            patch,
            precondition,
        } => {
            let current = live(products::lock(conn, *id).await?, *id)?;
            check(precondition, *id, Some(&current))?;
            let fields = patch.apply_to(&current.fields());
            let patched = products::overwrite(conn, &current, &fields).await?;
            Ok(Some((patched, Outcome::Updated)))
        }
        Change::Delete { id, precondition } => {
            let current = live(products::lock(conn, *id).await?, *id)?;
            check(precondition, *id, Some(&current))?;
            let tombstone = products::mark_deleted(conn, &current).await?;
            Ok(Some((tombstone, Outcome::Deleted)))
        }
    }
}

fn live(current: Option<Product>, id: ProductId) -> Result<Product, WriteError> {
    current
        .filter(|p| !p.is_deleted())
        .ok_or(WriteError::NotFound(id))
}

fn check(
    precondition: &Precondition,
    id: ProductId,
    current: Option<&Product>,
) -> Result<(), WriteError> {
    if precondition.allows(current) {
        Ok(())
    } else {
        Err(WriteError::PreconditionFailed {
            id,
            current: current.filter(|p| !p.is_deleted()).map(|p| p.version),
        })
    }
}
