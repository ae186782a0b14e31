//! HTTP routes. Each handler parses its input into domain types, calls one catalogue
//! operation, and shapes the answer; errors become HTTP in `errors.rs`.

use std::future::{Ready, ready};

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{FromRequest, HttpRequest, HttpResponse, dev::Payload, web};
use domain::{Product, ProductBody};
use http_api::extract::{ProductIdPath, RequestId};
use http_api::{ApiError, ProductView, envelope};

use http_api::openapi::{EmptyEnvelope, ErrorEnvelope, ProductEnvelope};

use crate::catalogue::{Catalogue, Outcome};
use crate::openapi::{
    IfMatchHeader, ProductInput, ProductPatchInput, ProductReplaceInput, WriteFailures,
};
use crate::preconditions::{Precondition, etag};
use crate::readiness;

/// Every route write-api serves.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/api/products")
                .route(web::post().to(create))
                .default_service(web::to(|req: HttpRequest| method_not_allowed(req, "POST"))),
        )
        .service(
            web::resource("/api/products/{id}")
                .route(web::put().to(replace))
                .route(web::patch().to(patch))
                .route(web::delete().to(delete))
                .default_service(web::to(|req: HttpRequest| {
                    method_not_allowed(req, "PUT, PATCH, DELETE")
                })),
        )
        .route("/healthz", web::get().to(http_api::ops::healthz))
        .route("/readyz", web::get().to(readiness::readyz))
        .route("/metrics", web::get().to(readiness::metrics))
        .service(crate::openapi::swagger_ui());
}

/// Create a product. The body may carry its `id` (a UUID); else one is made.
#[utoipa::path(post, path = "/api/products", tag = "products",
    request_body = ProductInput,
    params(("X-Request-Id" = Option<String>, Header, nullable = false, description = "kept, logged and carried into the change event when 1 to 128 visible ASCII characters; else one is made")),
    responses(
        (status = 201, description = "created; `Location` and `ETag` set", body = ProductEnvelope),
        (status = 409, description = "the id exists", body = ErrorEnvelope),
        WriteFailures))]
async fn create(
    catalogue: web::Data<Catalogue>,
    request_id: RequestId,
    body: web::Json<ProductBody>,
) -> Result<HttpResponse, ApiError> {
    let new = body.into_inner().into_new_product()?;
    let product = catalogue.create(new, &request_id.0).await?;
    Ok(product_response(product, Outcome::Created))
}

/// Replace a product, creating it when absent (or deleted).
#[utoipa::path(put, path = "/api/products/{id}", tag = "products",
    request_body = ProductReplaceInput,
    params(("id" = uuid::Uuid, Path), IfMatchHeader),
    responses(
        (status = 200, description = "replaced", body = ProductEnvelope),
        (status = 201, description = "created", body = ProductEnvelope),
        (status = 412, description = "`If-Match` does not match", body = ErrorEnvelope),
        WriteFailures))]
async fn replace(
    catalogue: web::Data<Catalogue>,
    request_id: RequestId,
    ProductIdPath(id): ProductIdPath,
    precondition: Precondition,
    body: web::Json<ProductBody>,
) -> Result<HttpResponse, ApiError> {
    let fields = body.into_inner().into_fields(id)?;
    let (product, outcome) = catalogue
        .replace(id, fields, precondition, &request_id.0)
        .await?;
    Ok(product_response(product, outcome))
}

/// Change some fields of a product.
#[utoipa::path(patch, path = "/api/products/{id}", tag = "products",
    request_body = ProductPatchInput,
    params(("id" = uuid::Uuid, Path), IfMatchHeader),
    responses(
        (status = 200, description = "updated", body = ProductEnvelope),
        (status = 404, description = "no such product", body = ErrorEnvelope),
        (status = 412, description = "`If-Match` does not match", body = ErrorEnvelope),
        WriteFailures))]
async fn patch(
    catalogue: web::Data<Catalogue>,
    request_id: RequestId,
    ProductIdPath(id): ProductIdPath,
    precondition: Precondition,
    body: web::Json<ProductBody>,
) -> Result<HttpResponse, ApiError> {
    let patch = body.into_inner().into_patch(id)?;
    let product = catalogue
        .patch(id, patch, precondition, &request_id.0)
        .await?;
    Ok(product_response(product, Outcome::Updated))
}

/// Delete a product (it becomes a tombstone; its version rises).
#[utoipa::path(delete, path = "/api/products/{id}", tag = "products",
    params(("id" = uuid::Uuid, Path), IfMatchHeader),
    responses(
        (status = 200, description = "deleted", body = EmptyEnvelope),
        (status = 404, description = "no such product", body = ErrorEnvelope),
        (status = 412, description = "`If-Match` does not match", body = ErrorEnvelope),
        WriteFailures))]
async fn delete(
    catalogue: web::Data<Catalogue>,
    request_id: RequestId,
    ProductIdPath(id): ProductIdPath,
    precondition: Precondition,
) -> Result<HttpResponse, ApiError> {
    let tombstone = catalogue.delete(id, precondition, &request_id.0).await?;
    let mut response = envelope::ok((), "Product deleted successfully");
    set_etag(&mut response, &tombstone);
    Ok(response)
}

/// The product in the envelope, with its `ETag`, and a `Location` when it was created.
fn product_response(product: Product, outcome: Outcome) -> HttpResponse {
    let (status, message) = match outcome {
        Outcome::Created => (StatusCode::CREATED, "Product created successfully"),
        Outcome::Updated => (StatusCode::OK, "Product updated successfully"),
        Outcome::Deleted => (StatusCode::OK, "Product deleted successfully"),
    };
    let id = product.id;
    let version = product.version;
    let mut response = envelope::success(status, ProductView::from(product), message);
    if let Ok(value) = HeaderValue::from_str(&etag(version)) {
        response.headers_mut().insert(header::ETAG, value);
    }
    if outcome == Outcome::Created
        && let Ok(value) = HeaderValue::from_str(&format!("/api/products/{id}"))
    {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn set_etag(response: &mut HttpResponse, product: &Product) {
    if let Ok(value) = HeaderValue::from_str(&etag(product.version)) {
        response.headers_mut().insert(header::ETAG, value);
    }
}

async fn method_not_allowed(req: HttpRequest, allowed: &'static str) -> HttpResponse {
    let hint = if req.method() == actix_web::http::Method::GET {
        " (reads are served by read-api)"
    } else {
        ""
    };
    http_api::ops::method_not_allowed(&req, allowed, hint)
}

impl FromRequest for Precondition {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Precondition::from_headers(req.headers()).map_err(ApiError::from))
    }
}
