//! HTTP routes. Each handler parses its input first, calls one router operation, and shapes
//! the answer; errors become HTTP in `errors.rs`.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use http_api::extract::ProductIdPath;
use http_api::{ApiError, ErrorCode, ProductView};

use crate::errors::{Failure, set_served_by};
use crate::list_query::ListRequest;
use crate::min_version::MinVersion;
use crate::reads::Found;
use crate::router::Router;
use crate::status;

/// Every route read-api serves.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(
            web::resource("/api/products")
                .route(web::get().to(list))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/api/products/{id}")
                .route(web::get().to(get))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/api/replicas")
                .route(web::get().to(status::replicas))
                .default_service(web::to(method_not_allowed)),
        )
        .route("/healthz", web::get().to(http_api::ops::healthz))
        .route("/readyz", web::get().to(status::readyz))
        .route("/metrics", web::get().to(status::metrics))
        .service(crate::openapi::swagger_ui());
}

/// Live products in `(createdAt, id)` order, a page at a time.
#[utoipa::path(get, path = "/api/products", tag = "products",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "1 to 1000, default 100"),
        ("cursor" = Option<String>, Query, pattern = "^A[Q-Za-f][A-Za-z0-9_-]{31}[AQgw]$", description = "`nextCursor` of the previous page"),
        ("name" = Option<String>, Query, min_length = 1, max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$", description = "case-insensitive substring"),
        ("minPrice" = Option<f64>, Query, minimum = 0, maximum = 1_000_000_000, multiple_of = 0.01),
        ("maxPrice" = Option<f64>, Query, minimum = 0, maximum = 1_000_000_000, multiple_of = 0.01, description = "a range with `minPrice` above `maxPrice` holds nothing"),
        ("inStock" = Option<bool>, Query)),
    responses(
        (status = 200, body = http_api::openapi::ProductPageEnvelope, headers(("X-Served-By" = String, description = "the source that answered: replica-N or primary"))),
        (status = 400, description = "bad parameters, every one listed", body = http_api::openapi::ErrorEnvelope),
        (status = 503, description = "no source could answer in time", body = http_api::openapi::ErrorEnvelope)))]
async fn list(router: web::Data<Router>, req: HttpRequest) -> Result<HttpResponse, Failure> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidQuery,
                format!("malformed query string: {e}"),
            )
        })?
        .into_inner();
    let request = ListRequest::parse(&pairs).map_err(ApiError::from)?;
    let served = router.list(request).await?;
    let page = served.value;
    let mut response = HttpResponse::Ok().json(http_api::openapi::ProductPageEnvelope {
        success: true,
        data: page.items.into_iter().map(ProductView::from).collect(),
        next_cursor: page.next.map(|cursor| cursor.encode()),
        message: "Products retrieved successfully",
    });
    set_served_by(&mut response, &served.source);
    Ok(response)
}

/// One live product.
#[utoipa::path(get, path = "/api/products/{id}", tag = "products",
    params(("id" = uuid::Uuid, Path),
        ("X-Min-Version" = Option<i64>, Header, nullable = false, minimum = 1, description = "only a source holding this version or newer may answer")),
    responses(
        (status = 200, body = http_api::openapi::ProductEnvelope, headers(("X-Served-By" = String, description = "the source that answered: replica-N or primary"))),
        (status = 400, body = http_api::openapi::ErrorEnvelope),
        (status = 404, description = "absent or deleted", body = http_api::openapi::ErrorEnvelope),
        (status = 503, description = "no source could answer (or none holds `X-Min-Version` and fallback is off)",
         body = http_api::openapi::ErrorEnvelope)))]
async fn get(
    router: web::Data<Router>,
    ProductIdPath(id): ProductIdPath,
    MinVersion(min_version): MinVersion,
) -> Result<HttpResponse, Failure> {
    let served = router.get(id, min_version).await?;
    match served.value {
        Found::Live(product) => {
            let version = product.version;
            let mut response = http_api::envelope::ok(
                ProductView::from(product),
                "Product retrieved successfully",
            );
            if let Ok(value) = HeaderValue::from_str(&format!("\"{version}\"")) {
                response.headers_mut().insert(header::ETAG, value);
            }
            set_served_by(&mut response, &served.source);
            Ok(response)
        }
        Found::Deleted(_) | Found::Absent => Err(Failure::not_found(id, served.source)),
    }
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    http_api::ops::method_not_allowed(
        &req,
        "GET",
        " (read-api only reads; writes go to write-api)",
    )
}
