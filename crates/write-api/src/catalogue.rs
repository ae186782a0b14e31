//! The write operations. Each becomes a [`Change`] decided and stored with its outbox row in
//! one transaction on the primary — shared with the other writes that arrived meanwhile
//! ([`crate::group_commit`]) — so a change and its event commit together or not at all.

use std::sync::Arc;

use domain::{NewProduct, Product, ProductFields, ProductId, ProductPatch, Version};
use storage::StorageError;

use crate::change::Change;
use crate::group_commit::GroupCommit;
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
    /// The group of writes this one was part of failed as a whole: nothing of it was
    /// written (or, for `OutcomeUnknown`, maybe all of it).
    #[error(transparent)]
    Group(Arc<StorageError>),
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

/// The write side of the catalogue.
#[derive(Clone)]
pub struct Catalogue {
    writes: GroupCommit,
}

impl Catalogue {
    pub fn new(writes: GroupCommit) -> Self {
        Self { writes }
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

    async fn write(
        &self,
        change: Change,
        request_id: &str,
    ) -> Result<(Product, Outcome), WriteError> {
        self.writes.write(change, request_id).await
    }
}
