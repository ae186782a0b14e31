//! Every machine `code` an error answer carries, with its HTTP status and its meaning: one
//! table for both APIs, their OpenAPI documents and `docs/api.md` (a test checks the docs).

use actix_web::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

/// One list makes the enum, [`ErrorCode::ALL`] and the lookups, so none can miss a code.
macro_rules! error_codes {
    ($($code:ident = $wire:literal, $status:ident, $meaning:literal;)+) => {
        /// The stable, machine-readable reason of an error answer (`"code"` in the envelope).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($code,)+
        }

        impl ErrorCode {
            pub const ALL: &[ErrorCode] = &[$(Self::$code,)+];

            /// The code as it appears on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$code => $wire,)+
                }
            }

            /// The status every answer with this code has.
            pub const fn status(self) -> StatusCode {
                match self {
                    $(Self::$code => StatusCode::$status,)+
                }
            }

            /// When a client sees it, in a phrase.
            pub const fn meaning(self) -> &'static str {
                match self {
                    $(Self::$code => $meaning,)+
                }
            }
        }
    };
}

error_codes! {
    ValidationFailed = "validation_failed", BAD_REQUEST, "bad or unknown fields, every one listed in `details`";
    InvalidJson = "invalid_json", BAD_REQUEST, "the body is not well-formed JSON";
    InvalidBody = "invalid_body", BAD_REQUEST, "the body is JSON but not the expected object";
    InvalidId = "invalid_id", BAD_REQUEST, "the product id in the path is not a UUID";
    InvalidIfMatch = "invalid_if_match", BAD_REQUEST, "`If-Match` is not one quoted version";
    InvalidQuery = "invalid_query", BAD_REQUEST, "unknown, repeated or malformed query parameters";
    InvalidCursor = "invalid_cursor", BAD_REQUEST, "not of the shape of a cursor the API hands out";
    InvalidMinVersion = "invalid_min_version", BAD_REQUEST, "`X-Min-Version` is not a positive integer";
    Unauthorized = "unauthorized", UNAUTHORIZED, "`WRITE_API_TOKEN` is set and the write lacks `Authorization: Bearer <token>`";
    NotFound = "not_found", NOT_FOUND, "no such product (or it was deleted), or no such path";
    MethodNotAllowed = "method_not_allowed", METHOD_NOT_ALLOWED, "the path exists, the method does not; `Allow` lists those that do";
    AlreadyExists = "already_exists", CONFLICT, "creating a product whose id exists";
    PreconditionFailed = "precondition_failed", PRECONDITION_FAILED, "`If-Match` does not name the current version";
    PayloadTooLarge = "payload_too_large", PAYLOAD_TOO_LARGE, "the body is over the size limit";
    UnsupportedMediaType = "unsupported_media_type", UNSUPPORTED_MEDIA_TYPE, "the body is not sent as `application/json`";
    Internal = "internal", INTERNAL_SERVER_ERROR, "a bug; the cause is logged, never sent";
    Unavailable = "unavailable", SERVICE_UNAVAILABLE, "a dependency is down, busy or too slow; nothing was done; retry after `Retry-After`";
    OutcomeUnknown = "outcome_unknown", SERVICE_UNAVAILABLE, "the link to the primary broke while committing: the write may have happened";
    VersionNotReplicated = "version_not_replicated", SERVICE_UNAVAILABLE, "no replica holds the `X-Min-Version` asked for yet";
    NotReady = "not_ready", SERVICE_UNAVAILABLE, "`/readyz`: the service cannot do its job now; the report says why";
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_code_is_distinct_and_serializes_as_its_name() {
        let distinct: HashSet<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(distinct.len(), ErrorCode::ALL.len());
        for &code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::from(code.as_str())
            );
        }
    }
}
