//! A write a client asked for, and what it makes of the stored row: the rules of every write,
//! with no I/O, so a group of writes can be decided in memory one after another and stored
//! together (see [`crate::group_commit`]).

use chrono::{DateTime, Utc};
use domain::{Product, ProductFields, ProductId, ProductPatch, Version};

use crate::catalogue::{Outcome, WriteError};
use crate::preconditions::Precondition;

/// A change a client asked for, with everything already parsed.
#[derive(Debug, Clone)]
pub enum Change {
    /// `POST`: a new product, or a deleted id brought back from its tombstone's version.
    Create {
        id: ProductId,
        fields: ProductFields,
    },
    /// `PUT`: every field, creating the product when it is absent or deleted.
    Replace {
        id: ProductId,
        fields: ProductFields,
        precondition: Precondition,
    },
    /// `PATCH`: some fields of a live product.
    Patch {
        id: ProductId,
        patch: ProductPatch,
        precondition: Precondition,
    },
    /// `DELETE`: a live product becomes a tombstone.
    Delete {
        id: ProductId,
        precondition: Precondition,
    },
}

impl Change {
    pub fn id(&self) -> ProductId {
        match self {
            Change::Create { id, .. }
            | Change::Replace { id, .. }
            | Change::Patch { id, .. }
            | Change::Delete { id, .. } => *id,
        }
    }

    /// What this change makes of `current` (the stored row, tombstone included, or `None`)
    /// at `now` (the transaction's time): the row after it and what happened, or why not.
    pub fn decide(
        &self,
        current: Option<&Product>,
        now: DateTime<Utc>,
    ) -> Result<(Product, Outcome), WriteError> {
        match self {
            Change::Create { id, fields } => match current {
                None => Ok((created(*id, fields, now), Outcome::Created)),
                Some(tombstone) if tombstone.is_deleted() => {
                    Ok((overwritten(tombstone, fields, now), Outcome::Created))
                }
                Some(_) => Err(WriteError::AlreadyExists(*id)),
            },
            Change::Replace {
                id,
                fields,
                precondition,
            } => {
                check(precondition, *id, current)?;
                Ok(match current {
                    None => (created(*id, fields, now), Outcome::Created),
                    Some(current) if current.is_deleted() => {
                        (overwritten(current, fields, now), Outcome::Created)
                    }
                    Some(current) => (overwritten(current, fields, now), Outcome::Updated),
                })
            }
            Change::Patch {
                id,
                patch,
                precondition,
            } => {
                let current = live(current, *id)?;
                check(precondition, *id, Some(current))?;
                let fields = patch.apply_to(&current.fields());
                Ok((overwritten(current, &fields, now), Outcome::Updated))
            }
            Change::Delete { id, precondition } => {
                let current = live(current, *id)?;
                check(precondition, *id, Some(current))?;
                let tombstone = Product {
                    updated_at: now,
                    deleted_at: Some(now),
                    version: current.version.next(),
                    ..current.clone()
                };
                Ok((tombstone, Outcome::Deleted))
            }
        }
    }
}

fn created(id: ProductId, fields: &ProductFields, now: DateTime<Utc>) -> Product {
    Product {
        id,
        name: fields.name.clone(),
        price: fields.price,
        stock: fields.stock,
        created_at: now,
        updated_at: now,
        version: Version::FIRST,
        deleted_at: None,
    }
}

/// `fields` over `current` (live or tombstone), one version up. Reviving a tombstone makes a
/// new product: `created_at` restarts and `deleted_at` clears.
fn overwritten(current: &Product, fields: &ProductFields, now: DateTime<Utc>) -> Product {
    Product {
        id: current.id,
        name: fields.name.clone(),
        price: fields.price,
        stock: fields.stock,
        created_at: if current.is_deleted() {
            now
        } else {
            current.created_at
        },
        updated_at: now,
        version: current.version.next(),
        deleted_at: None,
    }
}

fn live(current: Option<&Product>, id: ProductId) -> Result<&Product, WriteError> {
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

#[cfg(test)]
mod tests {
    use domain::{Price, ProductName, Stock};

    use super::*;

    fn fields(name: &str, stock: i64) -> ProductFields {
        ProductFields {
            name: ProductName::parse(name).unwrap(),
            price: Price::from_cents(100).unwrap(),
            stock: Stock::new(stock).unwrap(),
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn create_then_delete_then_recreate_counts_every_version() {
        let id = ProductId::generate();
        let create = Change::Create {
            id,
            fields: fields("a", 1),
        };
        let (v1, outcome) = create.decide(None, at(0)).unwrap();
        assert_eq!((v1.version.get(), outcome), (1, Outcome::Created));
        assert!(matches!(
            create.decide(Some(&v1), at(1)),
            Err(WriteError::AlreadyExists(_))
        ));
        let delete = Change::Delete {
            id,
            precondition: Precondition::None,
        };
        let (v2, outcome) = delete.decide(Some(&v1), at(2)).unwrap();
        assert_eq!((v2.version.get(), outcome), (2, Outcome::Deleted));
        assert_eq!(v2.deleted_at, Some(at(2)));
        assert!(matches!(
            delete.decide(Some(&v2), at(3)),
            Err(WriteError::NotFound(_))
        ));
        let (v3, outcome) = create.decide(Some(&v2), at(4)).unwrap();
        assert_eq!((v3.version.get(), outcome), (3, Outcome::Created));
        assert_eq!((v3.created_at, v3.deleted_at), (at(4), None));
    }

    #[test]
    fn patch_keeps_created_at_and_checks_if_match() {
        let id = ProductId::generate();
        let (v1, _) = Change::Create {
            id,
            fields: fields("a", 1),
        }
        .decide(None, at(0))
        .unwrap();
        let patch = |precondition| Change::Patch {
            id,
            patch: ProductPatch {
                name: None,
                price: None,
                stock: Some(Stock::new(9).unwrap()),
            },
            precondition,
        };
        let (v2, _) = patch(Precondition::Version(vec![v1.version]))
            .decide(Some(&v1), at(5))
            .unwrap();
        assert_eq!(v2.stock.units(), 9);
        assert_eq!((v2.created_at, v2.updated_at), (at(0), at(5)));
        assert!(matches!(
            patch(Precondition::Version(vec![v1.version])).decide(Some(&v2), at(6)),
            Err(WriteError::PreconditionFailed { .. })
        ));
        assert!(matches!(
            patch(Precondition::None).decide(None, at(6)),
            Err(WriteError::NotFound(_))
        ));
    }

    #[test]
    fn replace_creates_when_absent_and_updates_when_live() {
        let id = ProductId::generate();
        let replace = Change::Replace {
            id,
            fields: fields("b", 2),
            precondition: Precondition::None,
        };
        let (v1, outcome) = replace.decide(None, at(0)).unwrap();
        assert_eq!((v1.version.get(), outcome), (1, Outcome::Created));
        let (v2, outcome) = replace.decide(Some(&v1), at(1)).unwrap();
        assert_eq!((v2.version.get(), outcome), (2, Outcome::Updated));
        let exists = Change::Replace {
            id,
            fields: fields("b", 2),
            precondition: Precondition::Exists,
        };
        assert!(exists.decide(None, at(2)).is_err());
    }
}
