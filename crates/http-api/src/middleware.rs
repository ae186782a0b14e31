//! Per-request context: an `X-Request-Id`, a tracing span, and request metrics.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

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
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        path = %req.path(),
    );
    let started = Instant::now();
    // Kept past the request only when its closing line will be written (entering a span
    // costs even when the event inside is filtered out).
    let finished_in = tracing::enabled!(tracing::Level::DEBUG).then(|| span.clone());

    let mut response = next.call(req).instrument(span).await?;

    let status = response.status();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let elapsed = started.elapsed();
    // Read off the resource the router matched (no second match of the path).
    let pattern = response.request().match_pattern();
    let route = pattern.as_deref().unwrap_or("unmatched");
    RequestMetrics::record(method, route, status.as_u16(), elapsed);
    if let Some(span) = finished_in {
        span.in_scope(|| {
            tracing::debug!(
                route,
                status = status.as_u16(),
                elapsed_ms = elapsed.as_millis() as u64,
                "request finished"
            );
        });
    }
    Ok(response)
}

/// The handles of one (method, route, status) series, registered once per HTTP worker thread:
/// registering builds the labelled key afresh (a few allocations and a registry lookup per
/// metric) on every request otherwise.
struct RequestMetrics {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

/// Series by method and status, then by route.
type SeriesByRoute = HashMap<(&'static str, u16), HashMap<Box<str>, RequestMetrics>>;

thread_local! {
    // The global recorder is installed before any worker serves a request, so a handle kept
    // here is never the no-op one handed out before it.
    static SERIES: RefCell<SeriesByRoute> = RefCell::new(HashMap::new());
}

impl RequestMetrics {
    fn record(method: &'static str, route: &str, status: u16, elapsed: Duration) {
        SERIES.with_borrow_mut(|series| {
            let by_route = series.entry((method, status)).or_default();
            let handles = match by_route.get(route) {
                Some(handles) => handles,
                None => by_route
                    .entry(route.into())
                    .or_insert_with(|| Self::register(method, route, status)),
            };
            handles.requests.increment(1);
            handles.duration.record(elapsed.as_secs_f64());
        });
    }

    fn register(method: &'static str, route: &str, status: u16) -> Self {
        let labels = [
            Label::new("method", method),
            Label::new("route", route.to_owned()),
            Label::new("status", status.to_string()),
        ];
        Self {
            requests: metrics::counter!("http_requests_total", labels.to_vec()),
            duration: metrics::histogram!("http_request_duration_seconds", Vec::from(labels)),
        }
    }
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
