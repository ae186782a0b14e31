//! Schemas of the envelope, for the OpenAPI documents of write-api and read-api. They
//! describe what [`crate::envelope`] and [`crate::ApiError`] write; only
//! [`ProductPageEnvelope`] is also serialized (by read-api's listing).

use serde::Serialize;
use utoipa::ToSchema;

use crate::ProductView;

/// One product in the envelope.
#[derive(Serialize, ToSchema)]
pub struct ProductEnvelope {
    #[schema(example = true)]
    pub success: bool,
    pub data: ProductView,
    #[schema(example = "Product created successfully")]
    pub message: String,
}

/// A page of products: `nextCursor` fetches the next one, `null` on the last page. read-api
/// answers with this type itself: `data` stays the seed's array and the cursor sits beside it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductPageEnvelope {
    pub success: bool,
    pub data: Vec<ProductView>,
    pub next_cursor: Option<String>,
    pub message: &'static str,
}

/// A success without data (a delete): `data` is `null`.
#[derive(Serialize, ToSchema)]
pub struct EmptyEnvelope {
    pub success: bool,
    #[schema(value_type = Option<Object>, nullable)]
    pub data: Option<()>,
    #[schema(example = "Product deleted successfully")]
    pub message: String,
}

/// A status report (`/healthz`, `/readyz`, `/api/replicas`): `data` is an object whose
/// fields the endpoint describes.
#[derive(Serialize, ToSchema)]
pub struct StatusEnvelope {
    pub success: bool,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    pub message: String,
}

/// Every error: a readable message, a machine code, and for bad input every bad field.
#[derive(Serialize, ToSchema)]
pub struct ErrorEnvelope {
    #[schema(example = false)]
    pub success: bool,
    #[schema(example = "price must have at most 2 decimal places")]
    pub error: String,
    pub code: crate::ErrorCode,
    pub details: Option<Vec<FieldProblem>>,
}

#[derive(Serialize, ToSchema)]
pub struct FieldProblem {
    #[schema(example = "price")]
    pub field: String,
    pub message: String,
}

/// Documentation-only operations every service has. `utoipa::path` needs a function to hang
/// on; these are never called.
pub mod operations {
    /// The process is alive.
    #[utoipa::path(get, path = "/healthz", tag = "operations",
        responses((status = 200, body = super::StatusEnvelope)))]
    pub fn healthz() {}

    /// Prometheus metrics, text format.
    #[utoipa::path(get, path = "/metrics", tag = "operations",
        responses((status = 200, content_type = "text/plain", body = String)))]
    pub fn metrics() {}

    /// This document.
    #[utoipa::path(get, path = "/openapi.json", tag = "operations",
        responses((status = 200, content_type = "application/json", body = Object)))]
    pub fn openapi_json() {}

    /// A browsable view of this document (Swagger UI).
    #[utoipa::path(get, path = "/docs/", tag = "operations",
        responses((status = 200, content_type = "text/html", body = String)))]
    pub fn docs() {}
}
