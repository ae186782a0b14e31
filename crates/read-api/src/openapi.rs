//! The OpenAPI document (`/openapi.json`) and its browsable view (`/docs/`).

use http_api::openapi::{
    ErrorEnvelope, FieldProblem, ProductEnvelope, ProductPageEnvelope, StatusEnvelope, operations,
};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "read-api",
        description = "The read side of the replicated product catalogue: answers from the \
                       replicas, chosen by strategy, health, lag and load, with the primary as a \
                       last resort. Every answer names its source in `X-Served-By`."
    ),
    paths(
        crate::routes::list,
        crate::routes::get,
        crate::status::replicas,
        crate::status::readyz,
        operations::healthz,
        operations::metrics,
        operations::openapi_json,
        operations::docs,
    ),
    components(schemas(
        ProductEnvelope,
        ProductPageEnvelope,
        StatusEnvelope,
        ErrorEnvelope,
        FieldProblem
    )),
    tags((name = "products"), (name = "replicas"), (name = "operations"))
)]
pub struct ApiDoc;

/// The `/docs/` UI and `/openapi.json`.
pub fn swagger_ui() -> SwaggerUi {
    SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", ApiDoc::openapi())
}
