use chrono::{DateTime, SecondsFormat, Utc};
use domain::{Price, Product};
use serde::{Serialize, Serializer};
use uuid::Uuid;

/// A live product as clients see it: the seed's fields in camelCase, plus `version`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductView {
    pub id: Uuid,
    #[schema(example = "Laptop")]
    pub name: String,
    /// Exact to the cent.
    #[schema(value_type = f64, example = 999.99)]
    pub price: Price,
    #[schema(example = 10)]
    pub stock: i32,
    #[serde(serialize_with = "timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "timestamp")]
    pub updated_at: DateTime<Utc>,
    /// Rises by one with every change, a delete included.
    #[schema(example = 1)]
    pub version: i64,
}

impl From<Product> for ProductView {
    fn from(product: Product) -> Self {
        Self {
            id: product.id.as_uuid(),
            name: product.name.into_inner(),
            price: product.price,
            stock: product.stock.units(),
            created_at: product.created_at,
            updated_at: product.updated_at,
            version: product.version.get(),
        }
    }
}

/// RFC 3339 in UTC with microseconds, the database's precision: `2026-11-24T10:00:00.123456Z`.
fn timestamp<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true))
}
