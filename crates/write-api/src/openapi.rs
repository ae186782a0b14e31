//! The OpenAPI document (`/openapi.json`) and its browsable view (`/docs/`).

use http_api::openapi::{
    EmptyEnvelope, ErrorEnvelope, FieldProblem, ProductEnvelope, StatusEnvelope, operations,
};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};
use utoipa_swagger_ui::SwaggerUi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "write-api",
        description = "The write side of the replicated product catalogue. Every write stores the \
                       product and its change event in one transaction; the event reaches the \
                       replicas through RabbitMQ."
    ),
    paths(
        crate::routes::create,
        crate::routes::replace,
        crate::routes::patch,
        crate::routes::delete,
        crate::readiness::readyz,
        operations::healthz,
        operations::metrics,
        operations::openapi_json,
        operations::docs,
    ),
    components(schemas(
        ProductInput,
        ProductPatchInput,
        ProductEnvelope,
        EmptyEnvelope,
        StatusEnvelope,
        ErrorEnvelope,
        FieldProblem
    )),
    modifiers(&BearerAuth),
    tags((name = "products"), (name = "operations"))
)]
pub struct ApiDoc;

/// The `/docs/` UI and `/openapi.json`.
pub fn swagger_ui() -> SwaggerUi {
    SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", ApiDoc::openapi())
}

/// A product to create or replace. `createdAt`, `updatedAt` and `version` are ignored when
/// sent; any other field is refused.
#[derive(Serialize, ToSchema)]
pub struct ProductInput {
    /// Only on create; for PUT the id is in the path.
    pub id: Option<uuid::Uuid>,
    /// 1 to 200 characters after trimming.
    #[schema(example = "Laptop")]
    pub name: String,
    /// 0 to 1,000,000,000 with at most 2 decimals.
    #[schema(example = 999.99)]
    pub price: f64,
    /// 0 to 2,147,483,647.
    #[schema(example = 10)]
    pub stock: i64,
}

/// Fields to change; at least one.
#[derive(Serialize, ToSchema)]
pub struct ProductPatchInput {
    pub name: Option<String>,
    pub price: Option<f64>,
    pub stock: Option<i64>,
}

/// Writes need `Authorization: Bearer <token>` when `WRITE_API_TOKEN` is set.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
