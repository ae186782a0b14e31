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
        ProductReplaceInput,
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

/// A product body's fields and their rules, written once for the three bodies: the types
/// say whether each is required (`T`) or optional (`Option<T>`).
macro_rules! product_body {
    ($(#[$meta:meta])* $body:ident { $($leading:tt)* } $name:ty, $price:ty, $stock:ty) => {
        #[derive(Serialize, ToSchema)]
        #[serde(deny_unknown_fields)]
        $(#[$meta])*
        pub struct $body {
            $($leading)*
            /// 1 to 200 characters after trimming, not only white space, no control characters.
            #[schema(
                example = "Laptop",
                nullable = false,
                min_length = 1,
                max_length = 200,
                pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
            )]
            pub name: $name,
            /// 0 to 1,000,000,000 with at most 2 decimals.
            #[schema(
                example = 999.99,
                nullable = false,
                minimum = 0,
                maximum = 1_000_000_000,
                multiple_of = 0.01
            )]
            pub price: $price,
            /// 0 to 2,147,483,647.
            #[schema(example = 10, nullable = false, minimum = 0, maximum = 2_147_483_647)]
            pub stock: $stock,
        }
    };
}

product_body! {
    /// A product to create. Any other field is refused, except `createdAt`, `updatedAt` and
    /// `version`, which are accepted and ignored (so a product read from the API can be sent
    /// back as it is; the document leaves them out).
    ProductInput {
        /// Made by the server when absent.
        #[schema(
            nullable = false,
            pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
        )]
        pub id: Option<uuid::Uuid>,
    }
    String, f64, i32
}

product_body! {
    /// A product's fields, to replace it (`PUT`). The id is the path's; a body may repeat it
    /// (the document leaves it out: any other id is refused). `createdAt`, `updatedAt` and
    /// `version` are accepted and ignored, as on create.
    ProductReplaceInput {}
    String, f64, i32
}

product_body! {
    /// Fields to change; at least one (`createdAt`, `updatedAt` and `version` are ignored as
    /// on create, and do not count).
    #[schema(min_properties = 1)]
    ProductPatchInput {}
    Option<String>, Option<f64>, Option<i32>
}

/// The `If-Match` header of `PUT`, `PATCH` and `DELETE`.
#[derive(utoipa::IntoParams)]
#[into_params(names("If-Match"), parameter_in = Header)]
pub struct IfMatchHeader(
    /// `"<version>"` (several, comma-separated; weak ones never match) or `*`.
    #[param(
        nullable = false,
        pattern = r#"^(\*|(W/)?"[1-9][0-9]{0,17}"(, ?(W/)?"[1-9][0-9]{0,17}")*)$"#
    )]
    pub Option<String>,
);

/// The failures every write may answer, beside its own.
#[derive(utoipa::IntoResponses)]
pub enum WriteFailures {
    #[response(status = 400, description = "bad input, every bad field listed")]
    BadInput(ErrorEnvelope),
    #[response(
        status = 401,
        description = "`WRITE_API_TOKEN` is set and the bearer token is missing or wrong"
    )]
    Unauthorized(ErrorEnvelope),
    #[response(status = 413, description = "the body is over `BODY_LIMIT_BYTES`")]
    TooLarge(ErrorEnvelope),
    #[response(
        status = 415,
        description = "the body is not sent as `application/json`"
    )]
    NotJson(ErrorEnvelope),
    #[response(
        status = 503,
        description = "`unavailable`: the primary is down, busy or failing over and nothing was \
                       written; `outcome_unknown`: the connection was lost while committing, so \
                       the write may have happened. `Retry-After` is set"
    )]
    Unavailable(ErrorEnvelope),
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
