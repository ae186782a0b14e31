//! The public HTTP contract shared by write-api and read-api.
//!
//! - [`envelope`]: `{"success": true, "data": …, "message": "…"}` and
//!   `{"success": false, "error": "…", "code": "…"}`, as the Node.js demo answered.
//! - [`ApiError`]: the one error type handlers return; [`ErrorCode`]: every `code` with its
//!   status, so status codes are decided here.
//! - [`ProductView`]: a product on the wire (camelCase, price as a JSON number).
//! - [`extract`]: the product id in the path, and JSON bodies with size and type limits.
//! - [`middleware`]: `X-Request-Id`, a span per request, and request metrics.
//! - [`ops`]: `/healthz` and `/metrics`; [`openapi`]: the envelope's schemas for the docs.

pub mod envelope;
mod error;
mod error_code;
pub mod extract;
pub mod middleware;
pub mod openapi;
pub mod ops;
mod view;

pub use error::ApiError;
pub use error_code::ErrorCode;
pub use view::ProductView;
