use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{FieldError, Price, ProductFields, ProductName, Stock};

/// A product's identity. New ids are UUIDv7: time-ordered, so inserts stay at the right edge
/// of the primary-key index.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct ProductId(Uuid);

impl ProductId {
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn as_uuid(self) -> Uuid {
        self.0
    }

    /// Parses a client-supplied id; any standard UUID spelling is accepted.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        Uuid::try_parse(raw.trim())
            .map(Self)
            .map_err(|_| FieldError::new("id", format!("id must be a UUID (got {raw:?})")))
    }
}

impl From<Uuid> for ProductId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl FromStr for ProductId {
    type Err = FieldError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::parse(raw)
    }
}

impl fmt::Display for ProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// How many changes a product id has seen: 1 when first created, one more for every update,
/// delete and re-create. Replicas apply a change only if it carries a higher version than the
/// one they hold, which is what makes replication order-free.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Version(i64);

impl Version {
    pub const FIRST: Version = Version(1);

    pub fn new(value: i64) -> Option<Self> {
        (value >= 1).then_some(Self(value))
    }

    pub fn get(self) -> i64 {
        self.0
    }

    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// One product row as the primary stores it, tombstones included. Replicas hold the same rows
/// field for field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub id: ProductId,
    pub name: ProductName,
    pub price: Price,
    pub stock: Stock,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: Version,
    /// Set when the product is deleted: the row stays as a tombstone so that a late, older
    /// change cannot bring it back.
    pub deleted_at: Option<DateTime<Utc>>,
}

impl Product {
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }

    /// The client-owned fields.
    pub fn fields(&self) -> ProductFields {
        ProductFields {
            name: self.name.clone(),
            price: self.price,
            stock: self.stock,
        }
    }
}
