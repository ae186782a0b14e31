//! Per-request context: an `X-Request-Id`, a tracing span, and request metrics.

use std::time::Instant;

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use metrics::Label;
use tracing::Instrument;

use crate::extract::RequestId;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied request id we keep; longer or odd ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Takes the client's `X-Request-Id` when it is sane (1–128 visible ASCII characters) or
/// makes one, returns it on the response, runs the request in a span carrying it, and counts
/// the request by method, route pattern and status.
///
/// Use with `actix_web::middleware::from_fn(request_context)`.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = req
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| is_sane_request_id(id))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let method = method_label(req.method());
    // The route is known once the router has run: asking for it here would match the path
    // a second time on every request.
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        path = %req.path(),
        route = tracing::field::Empty,
    );
    let started = Instant::now();

    let mut response = next.call(req).instrument(span.clone()).await?;

    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    span.record("route", route.as_str());
    let status = response.status();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let elapsed = started.elapsed();
    let labels = [
        Label::new("method", method),
        Label::new("route", route),
        Label::new("status", status.as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", labels.to_vec()).increment(1);
    metrics::histogram!("http_request_duration_seconds", Vec::from(labels))
        .record(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::debug!(
            status = status.as_u16(),
            elapsed_ms = elapsed.as_millis() as u64,
            "request finished"
        );
    });
    Ok(response)
}

/// The request's method as a metric label: the standard ones without an allocation per
/// request, any other as `other` (a client could otherwise make one time series per invented
/// method).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn is_sane_request_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use actix_web::http::Method;

    use super::{is_sane_request_id, method_label};

    #[test]
    fn labels_standard_methods_by_name_and_the_rest_as_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        let invented = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&invented), "other");
    }

    #[test]
    fn keeps_reasonable_ids_only() {
        assert!(is_sane_request_id("req-42_abc.DEF"));
        assert!(!is_sane_request_id(""));
        assert!(!is_sane_request_id("has space"));
        assert!(!is_sane_request_id(&"x".repeat(129)));
        assert!(!is_sane_request_id("naïve"));
    }
}
