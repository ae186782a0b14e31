//! The change event: how one committed change travels from the primary to every replica.
//!
//! An event carries the product row as it stands after the change, tombstone included, so a
//! replica that applies it holds exactly the primary's row. Replicas apply an event only when
//! its version is higher than the one they hold; that makes any order and any number of
//! deliveries converge.
//!
//! Wire form (JSON, schema version 1):
//!
//! ```json
//! {"schema_version":1,"event_id":"…","seq":42,"kind":"upsert","product_id":"…","version":3,
//!  "occurred_at":"2026-11-24T10:00:00.123456Z",
//!  "product":{"id":"…","name":"Lamp","price_cents":1999,"stock":3,
//!             "created_at":"…","updated_at":"…","version":3,"deleted_at":null}}
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{FieldError, Price, Product, ProductId, ProductName, Stock, Version};

/// The schema version this build writes and reads.
pub const EVENT_SCHEMA_VERSION: u64 = 1;

/// Whether a change leaves the product live or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Upsert,
    Delete,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Upsert => "upsert",
            ChangeKind::Delete => "delete",
        }
    }
}

/// One change of one product, as published from the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    /// Unique per change; the broker's message id.
    pub event_id: Uuid,
    /// The outbox sequence number on the primary: increasing, with gaps.
    pub seq: i64,
    /// The product row after the change.
    pub product: Product,
}

impl ChangeEvent {
    pub fn kind(&self) -> ChangeKind {
        if self.product.is_deleted() {
            ChangeKind::Delete
        } else {
            ChangeKind::Upsert
        }
    }

    pub fn product_id(&self) -> ProductId {
        self.product.id
    }

    pub fn version(&self) -> Version {
        self.product.version
    }

    /// When the change was committed on the primary (the row's `updated_at`).
    pub fn occurred_at(&self) -> DateTime<Utc> {
        self.product.updated_at
    }

    pub fn encode(&self) -> Vec<u8> {
        let product = &self.product;
        let wire = EventWire {
            schema_version: EVENT_SCHEMA_VERSION,
            event_id: self.event_id,
            seq: self.seq,
            kind: self.kind(),
            product_id: product.id.as_uuid(),
            version: product.version.get(),
            occurred_at: self.occurred_at(),
            product: ProductWire {
                id: product.id.as_uuid(),
                name: product.name.as_str().to_owned(),
                price_cents: product.price.cents(),
                stock: i64::from(product.stock.units()),
                created_at: product.created_at,
                updated_at: product.updated_at,
                version: product.version.get(),
                deleted_at: product.deleted_at,
            },
        };
        // Serializing plain structs of strings, numbers and timestamps to a Vec cannot fail.
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// Parses and checks a message body. Any error means the message itself is bad (it will
    /// never apply, wherever it is delivered), so the caller dead-letters it.
    pub fn decode(body: &[u8]) -> Result<Self, EventDecodeError> {
        let probe: SchemaProbe =
            serde_json::from_slice(body).map_err(|e| EventDecodeError::Malformed(e.to_string()))?;
        match probe.schema_version {
            None => {
                return Err(EventDecodeError::Malformed(
                    "schema_version is missing".into(),
                ));
            }
            Some(EVENT_SCHEMA_VERSION) => {}
            Some(other) => return Err(EventDecodeError::UnsupportedSchema(other)),
        }
        let wire: EventWire =
            serde_json::from_slice(body).map_err(|e| EventDecodeError::Malformed(e.to_string()))?;
        wire.into_event()
    }
}

/// Why a message body is not a usable change event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventDecodeError {
    #[error("not a change event: {0}")]
    Malformed(String),
    #[error(
        "unsupported event schema version {0} (this build reads version {EVENT_SCHEMA_VERSION})"
    )]
    UnsupportedSchema(u64),
    #[error("inconsistent change event: {0}")]
    Inconsistent(String),
    #[error("invalid product in change event: {0}")]
    InvalidProduct(#[from] FieldError),
}

impl EventDecodeError {
    /// A short, stable reason for headers and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            EventDecodeError::Malformed(_) => "malformed",
            EventDecodeError::UnsupportedSchema(_) => "unsupported_schema",
            EventDecodeError::Inconsistent(_) => "inconsistent",
            EventDecodeError::InvalidProduct(_) => "invalid_product",
        }
    }
}

#[derive(Deserialize)]
struct SchemaProbe {
    schema_version: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct EventWire {
    schema_version: u64,
    event_id: Uuid,
    seq: i64,
    kind: ChangeKind,
    product_id: Uuid,
    version: i64,
    occurred_at: DateTime<Utc>,
    product: ProductWire,
}

#[derive(Serialize, Deserialize)]
struct ProductWire {
    id: Uuid,
    name: String,
    price_cents: i64,
    stock: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
    deleted_at: Option<DateTime<Utc>>,
}

impl EventWire {
    fn into_event(self) -> Result<ChangeEvent, EventDecodeError> {
        let inconsistent = |what: &str| Err(EventDecodeError::Inconsistent(what.to_owned()));
        let p = self.product;
        if self.seq < 1 {
            return inconsistent("seq must be at least 1");
        }
        if self.product_id != p.id {
            return inconsistent("product_id differs from product.id");
        }
        if self.version != p.version {
            return inconsistent("version differs from product.version");
        }
        if self.occurred_at != p.updated_at {
            return inconsistent("occurred_at differs from product.updated_at");
        }
        match (self.kind, p.deleted_at) {
            (ChangeKind::Upsert, Some(_)) => return inconsistent("an upsert has deleted_at set"),
            (ChangeKind::Delete, None) => return inconsistent("a delete has no deleted_at"),
            _ => {}
        }
        let version = Version::new(p.version)
            .ok_or_else(|| EventDecodeError::Inconsistent("version must be at least 1".into()))?;
        Ok(ChangeEvent {
            event_id: self.event_id,
            seq: self.seq,
            product: Product {
                id: ProductId::from(p.id),
                name: ProductName::parse(&p.name)?,
                price: Price::from_cents(p.price_cents)?,
                stock: Stock::new(p.stock)?,
                created_at: p.created_at,
                updated_at: p.updated_at,
                version,
                deleted_at: p.deleted_at,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sample(deleted: bool) -> ChangeEvent {
        let at = Utc.with_ymd_and_hms(2026, 11, 24, 10, 0, 0).unwrap()
            + chrono::Duration::microseconds(123_456);
        ChangeEvent {
            event_id: Uuid::now_v7(),
            seq: 42,
            product: Product {
                id: ProductId::generate(),
                name: ProductName::parse("Lamp").unwrap(),
                price: Price::from_cents(1999).unwrap(),
                stock: Stock::new(3).unwrap(),
                created_at: at,
                updated_at: at,
                version: Version::new(3).unwrap(),
                deleted_at: deleted.then_some(at),
            },
        }
    }

    fn edit(event: &ChangeEvent, change: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut json: serde_json::Value = serde_json::from_slice(&event.encode()).unwrap();
        change(&mut json);
        serde_json::to_vec(&json).unwrap()
    }

    #[test]
    fn round_trips_upserts_and_deletes() {
        for deleted in [false, true] {
            let event = sample(deleted);
            assert_eq!(ChangeEvent::decode(&event.encode()).unwrap(), event);
        }
        assert_eq!(sample(false).kind(), ChangeKind::Upsert);
        assert_eq!(sample(true).kind(), ChangeKind::Delete);
    }

    #[test]
    fn writes_the_documented_fields() {
        let json: serde_json::Value = serde_json::from_slice(&sample(true).encode()).unwrap();
        assert_eq!(json["schema_version"], 1);
        assert_eq!(json["kind"], "delete");
        assert_eq!(json["seq"], 42);
        assert_eq!(json["version"], 3);
        assert_eq!(json["product"]["price_cents"], 1999);
        assert_eq!(json["occurred_at"], "2026-11-24T10:00:00.123456Z");
        for key in ["event_id", "product_id", "occurred_at", "product"] {
            assert!(json.get(key).is_some(), "{key} missing");
        }
    }

    #[test]
    fn refuses_garbage_and_unknown_schemas() {
        assert_eq!(
            ChangeEvent::decode(b"not json").unwrap_err().reason(),
            "malformed"
        );
        assert_eq!(
            ChangeEvent::decode(b"{}").unwrap_err().reason(),
            "malformed"
        );
        let v2 = edit(&sample(false), |j| j["schema_version"] = 2.into());
        assert_eq!(
            ChangeEvent::decode(&v2).unwrap_err(),
            EventDecodeError::UnsupportedSchema(2)
        );
        let truncated = &sample(false).encode()[..40];
        assert_eq!(
            ChangeEvent::decode(truncated).unwrap_err().reason(),
            "malformed"
        );
    }

    #[test]
    fn refuses_inconsistent_events() {
        let event = sample(false);
        let cases: Vec<Vec<u8>> = vec![
            edit(&event, |j| j["version"] = 4.into()),
            edit(&event, |j| j["product_id"] = Uuid::nil().to_string().into()),
            edit(&event, |j| j["kind"] = "delete".into()),
            edit(&event, |j| j["seq"] = 0.into()),
            edit(&event, |j| {
                j["version"] = 0.into();
                j["product"]["version"] = 0.into();
            }),
        ];
        for body in cases {
            assert_eq!(
                ChangeEvent::decode(&body).unwrap_err().reason(),
                "inconsistent"
            );
        }
    }

    #[test]
    fn refuses_invalid_products() {
        let event = sample(false);
        for change in [
            (|j: &mut serde_json::Value| j["product"]["name"] = "".into()) as fn(&mut _),
            |j| j["product"]["price_cents"] = (-1).into(),
            |j| j["product"]["stock"] = (i64::from(i32::MAX) + 1).into(),
        ] {
            let body = edit(&event, change);
            assert_eq!(
                ChangeEvent::decode(&body).unwrap_err().reason(),
                "invalid_product"
            );
        }
    }
}
