//! Every bad request gets the right 4xx in the envelope and writes nothing.

use reqwest::Method;

use crate::helpers::{body, spawn_app};

struct Case {
    what: &'static str,
    method: Method,
    /// `{id}` is replaced by an existing product's id.
    path: &'static str,
    content_type: Option<&'static str>,
    body: String,
    headers: &'static [(&'static str, &'static str)],
    status: u16,
    code: &'static str,
}

fn case(what: &'static str, body: &str, status: u16, code: &'static str) -> Case {
    Case {
        what,
        method: Method::POST,
        path: "/api/products",
        content_type: Some("application/json"),
        body: body.to_owned(),
        headers: &[],
        status,
        code,
    }
}

fn cases() -> Vec<Case> {
    let invalid = "validation_failed";
    vec![
        case(
            "malformed JSON",
            r#"{"name": "x", "price": 1, "stock": 1"#,
            400,
            "invalid_json",
        ),
        case("not JSON at all", "hello", 400, "invalid_json"),
        case("empty body", "", 400, "invalid_json"),
        case("an array", r#"["x", 1, 1]"#, 400, "invalid_body"),
        case(
            "unknown field",
            r#"{"name":"x","price":1,"stock":1,"colour":"red"}"#,
            400,
            "invalid_body",
        ),
        case(
            "duplicate field",
            r#"{"name":"x","name":"y","price":1,"stock":1}"#,
            400,
            "invalid_body",
        ),
        case("missing fields", "{}", 400, invalid),
        case(
            "name not a string",
            r#"{"name":1,"price":1,"stock":1}"#,
            400,
            invalid,
        ),
        case(
            "empty name",
            r#"{"name":"   ","price":1,"stock":1}"#,
            400,
            invalid,
        ),
        case(
            "long name",
            &format!(r#"{{"name":"{}","price":1,"stock":1}}"#, "x".repeat(201)),
            400,
            invalid,
        ),
        case(
            "control character",
            r#"{"name":"a\u0000b","price":1,"stock":1}"#,
            400,
            invalid,
        ),
        case(
            "price as string",
            r#"{"name":"x","price":"1.00","stock":1}"#,
            400,
            invalid,
        ),
        case(
            "NaN as string",
            r#"{"name":"x","price":"NaN","stock":1}"#,
            400,
            invalid,
        ),
        case(
            "negative price",
            r#"{"name":"x","price":-0.01,"stock":1}"#,
            400,
            invalid,
        ),
        case(
            "three decimals",
            r#"{"name":"x","price":1.005,"stock":1}"#,
            400,
            invalid,
        ),
        case(
            "huge price",
            r#"{"name":"x","price":1e300,"stock":1}"#,
            400,
            invalid,
        ),
        case(
            "fractional stock",
            r#"{"name":"x","price":1,"stock":1.5}"#,
            400,
            invalid,
        ),
        case(
            "negative stock",
            r#"{"name":"x","price":1,"stock":-1}"#,
            400,
            invalid,
        ),
        case(
            "stock over i32",
            r#"{"name":"x","price":1,"stock":2147483648}"#,
            400,
            invalid,
        ),
        case(
            "id not a UUID",
            r#"{"id":"abc","name":"x","price":1,"stock":1}"#,
            400,
            invalid,
        ),
        Case {
            content_type: Some("text/plain"),
            ..case(
                "wrong content type",
                r#"{"name":"x","price":1,"stock":1}"#,
                415,
                "unsupported_media_type",
            )
        },
        Case {
            content_type: None,
            ..case(
                "no content type",
                r#"{"name":"x","price":1,"stock":1}"#,
                415,
                "unsupported_media_type",
            )
        },
        case(
            "body over 64 KiB",
            &format!(r#"{{"name":"{}","price":1,"stock":1}}"#, "x".repeat(70_000)),
            413,
            "payload_too_large",
        ),
        Case {
            method: Method::PUT,
            path: "/api/products/not-a-uuid",
            ..case(
                "non-UUID path",
                r#"{"name":"x","price":1,"stock":1}"#,
                400,
                "invalid_id",
            )
        },
        Case {
            method: Method::PUT,
            path: "/api/products/{id}",
            ..case(
                "body id differs from path",
                r#"{"id":"00000000-0000-0000-0000-000000000001","name":"x","price":1,"stock":1}"#,
                400,
                invalid,
            )
        },
        Case {
            method: Method::PATCH,
            path: "/api/products/{id}",
            ..case("empty patch", "{}", 400, invalid)
        },
        Case {
            method: Method::PATCH,
            path: "/api/products/{id}",
            ..case("null in patch", r#"{"stock":null}"#, 400, invalid)
        },
        Case {
            method: Method::PATCH,
            path: "/api/products/{id}",
            headers: &[("if-match", "seven")],
            ..case(
                "malformed If-Match",
                r#"{"stock":1}"#,
                400,
                "invalid_if_match",
            )
        },
        Case {
            method: Method::GET,
            ..case("wrong method", "", 405, "method_not_allowed")
        },
        Case {
            method: Method::POST,
            path: "/api/nothing-here",
            ..case("unknown path", "{}", 404, "not_found")
        },
    ]
}

#[tokio::test]
async fn every_bad_request_is_refused_clearly_and_writes_nothing() {
    let app = spawn_app().await;
    let existing = app.create_ok("Existing", 1.0, 1).await;
    let existing_id = existing["id"].as_str().unwrap();

    for case in cases() {
        let path = case.path.replace("{id}", existing_id);
        let mut request = app
            .request(case.method.clone(), &path)
            .body(case.body.clone());
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        for (name, value) in case.headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), case.status, "{}", case.what);
        let json = body(response).await;
        assert_eq!(json["success"], false, "{}", case.what);
        assert_eq!(json["code"], case.code, "{}: {json}", case.what);
        let message = json["error"].as_str().unwrap_or_default();
        assert!(
            message.len() > 10,
            "{}: unclear message {message:?}",
            case.what
        );
    }

    // Nothing was written: the one product is unchanged and only its create is in the outbox.
    let mut conn = app.db.connect().await;
    let stored = storage::products::find(&mut conn, domain::ProductId::parse(existing_id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.version.get(), 1);
    let health = app.request(Method::GET, "/healthz").send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn validation_reports_every_field() {
    let app = spawn_app().await;
    let response = app
        .create(serde_json::json!({"name": "", "price": 1.234, "stock": -5}))
        .await;
    assert_eq!(response.status(), 400);
    let json = body(response).await;
    let fields: Vec<&str> = json["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "price", "stock"]);
}
