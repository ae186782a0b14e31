//! Every bad request gets the right 4xx in the envelope and writes nothing; SQL-looking names
//! are stored literally.

use reqwest::Method;
use uuid::Uuid;

use crate::helpers::{TestApp, body, product, spawn_app};

/// One bad request and the answer it must get.
struct Case {
    what: &'static str,
    method: Method,
    /// `{id}` is replaced by the product id the table runs against.
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    headers: &'static [(&'static str, &'static str)],
    status: u16,
    code: &'static str,
    /// For `validation_failed`: a field `details` must name.
    field: Option<&'static str>,
    /// For 405: the `Allow` header.
    allow: Option<&'static str>,
}

/// `POST /api/products` with a JSON body.
fn case(what: &'static str, body: impl Into<Vec<u8>>, status: u16, code: &'static str) -> Case {
    Case {
        what,
        method: Method::POST,
        path: "/api/products",
        content_type: Some("application/json"),
        body: body.into(),
        headers: &[],
        status,
        code,
        field: None,
        allow: None,
    }
}

fn invalid_json(what: &'static str, body: impl Into<Vec<u8>>) -> Case {
    case(what, body, 400, "invalid_json")
}

fn invalid_body(what: &'static str, body: impl Into<Vec<u8>>) -> Case {
    case(what, body, 400, "invalid_body")
}

/// A body refused field by field, `field` among the reported ones.
fn invalid(what: &'static str, field: &'static str, body: impl Into<Vec<u8>>) -> Case {
    Case {
        field: Some(field),
        ..case(what, body, 400, "validation_failed")
    }
}

/// A valid product body but for `field`, whose raw JSON is `raw`.
fn bad_field(what: &'static str, field: &'static str, raw: &str) -> Case {
    invalid(what, field, with(field, raw))
}

/// `{"name":"Lamp","price":1,"stock":1}` with `field` set to the raw JSON `raw`.
fn with(field: &str, raw: &str) -> String {
    let mut fields = vec![("name", r#""Lamp""#), ("price", "1"), ("stock", "1")];
    match fields.iter_mut().find(|(name, _)| *name == field) {
        Some(slot) => slot.1 = raw,
        None => fields.insert(0, (field, raw)),
    }
    let fields: Vec<String> = fields
        .iter()
        .map(|(name, value)| format!("\"{name}\":{value}"))
        .collect();
    format!("{{{}}}", fields.join(","))
}

fn method_not_allowed(
    what: &'static str,
    method: Method,
    path: &'static str,
    allow: &'static str,
) -> Case {
    Case {
        allow: Some(allow),
        ..case(what, "", 405, "method_not_allowed").at(method, path)
    }
}

impl Case {
    fn at(self, method: Method, path: &'static str) -> Self {
        Self {
            method,
            path,
            ..self
        }
    }

    fn content_type(self, content_type: Option<&'static str>) -> Self {
        Self {
            content_type,
            ..self
        }
    }

    fn headers(self, headers: &'static [(&'static str, &'static str)]) -> Self {
        Self { headers, ..self }
    }
}

fn cases() -> Vec<Case> {
    let valid = with("name", r#""Lamp""#);
    let huge = with("name", &format!("\"{}\"", "x".repeat(70_000)));
    let item = "/api/products/{id}";
    let patch = |case: Case| case.at(Method::PATCH, item);
    let put = |case: Case| case.at(Method::PUT, item);
    let delete = |case: Case| case.at(Method::DELETE, item);
    let nested = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    vec![
        // Not JSON, or not all of it.
        invalid_json("unclosed object", r#"{"name":"x","price":1,"stock":1"#),
        invalid_json("truncated in a key", r#"{"name":"x","pri"#),
        invalid_json("truncated in a string", r#"{"name":"Lam"#),
        invalid_json("not JSON at all", "hello"),
        invalid_json("empty body", ""),
        invalid_json("trailing garbage", format!("{valid} x")),
        invalid_json("single quotes", "{'name':'x','price':1,'stock':1}"),
        invalid_json("trailing comma", r#"{"name":"x","price":1,"stock":1,}"#),
        invalid_json("bare NaN", with("price", "NaN")),
        invalid_json("bare Infinity", with("price", "Infinity")),
        invalid_json("bare -Infinity", with("stock", "-Infinity")),
        invalid_json("raw newline in a string", with("name", "\"a\nb\"")),
        invalid_json(
            "invalid UTF-8",
            [
                &br#"{"name":""#[..],
                b"\xff\xfe",
                br#"","price":1,"stock":1}"#,
            ]
            .concat(),
        ),
        // JSON, but not a product object.
        invalid_body("an array", r#"["x", 1, 1]"#),
        invalid_body("a number", "42"),
        invalid_body("null", "null"),
        invalid_body("a string", r#""Lamp""#),
        invalid_body("unknown field", with("colour", r#""red""#)),
        invalid_body(
            "field in the wrong case",
            r#"{"Name":"x","price":1,"stock":1}"#,
        ),
        invalid_body(
            "duplicate field",
            r#"{"name":"x","name":"y","price":1,"stock":1}"#,
        ),
        // Bad fields.
        invalid("missing fields", "name", "{}"),
        invalid("missing stock", "stock", r#"{"name":"x","price":1}"#),
        bad_field("name a number", "name", "1"),
        bad_field("name null", "name", "null"),
        bad_field("name an array", "name", r#"["Lamp"]"#),
        bad_field("name nested 200 deep", "name", &nested),
        bad_field("empty name", "name", r#""""#),
        bad_field("blank name", "name", r#""   ""#),
        bad_field("Unicode-blank name", "name", r#""\u00a0\u3000\t""#),
        bad_field(
            "name of 201 characters",
            "name",
            &format!("\"{}\"", "x".repeat(201)),
        ),
        bad_field(
            "name of 10,000 characters",
            "name",
            &format!("\"{}\"", "x".repeat(10_000)),
        ),
        bad_field("NUL in the name", "name", r#""a\u0000b""#),
        bad_field("BEL in the name", "name", r#""bell\u0007""#),
        bad_field("escaped newline in the name", "name", r#""a\nb""#),
        bad_field("lone surrogate in the name", "name", r#""a\ud800b""#),
        bad_field("price as a string", "price", r#""1.00""#),
        bad_field("price \"NaN\"", "price", r#""NaN""#),
        bad_field("price \"Infinity\"", "price", r#""Infinity""#),
        bad_field("price \"-Infinity\"", "price", r#""-Infinity""#),
        bad_field("price 1e400", "price", "1e400"),
        bad_field("price beyond i64", "price", "99999999999999999999"),
        bad_field("price 1e300", "price", "1e300"),
        bad_field("negative price", "price", "-0.01"),
        bad_field("price 1.234", "price", "1.234"),
        bad_field("price 0.001", "price", "0.001"),
        bad_field("price null", "price", "null"),
        bad_field("price true", "price", "true"),
        bad_field("price an object", "price", "{}"),
        bad_field("fractional stock", "stock", "1.5"),
        bad_field("negative stock", "stock", "-1"),
        bad_field("stock over i32", "stock", "2147483648"),
        bad_field("stock beyond i64", "stock", "99999999999999999999"),
        bad_field("stock 1e-1", "stock", "1e-1"),
        bad_field("stock 3e10", "stock", "3e10"),
        bad_field("stock as a string", "stock", r#""5""#),
        bad_field("stock \"NaN\"", "stock", r#""NaN""#),
        bad_field("id not a UUID", "id", r#""abc""#),
        bad_field("id a number", "id", "7"),
        bad_field(
            "truncated UUID id",
            "id",
            r#""0190f0a4-7c1e-7cc0-9a9d-6f0e2b1f4a1""#,
        ),
        bad_field("SQL as the id", "id", r#""'; DROP TABLE products; --""#),
        // Wrong type, wrong size.
        case("text/plain", valid.clone(), 415, "unsupported_media_type")
            .content_type(Some("text/plain")),
        case(
            "no content type",
            valid.clone(),
            415,
            "unsupported_media_type",
        )
        .content_type(None),
        case(
            "a form",
            "name=x&price=1&stock=1",
            415,
            "unsupported_media_type",
        )
        .content_type(Some("application/x-www-form-urlencoded")),
        case("POST over 64 KiB", huge.clone(), 413, "payload_too_large"),
        put(case("PUT over 64 KiB", huge, 413, "payload_too_large")),
        // Ids in the path, replace and patch bodies.
        case("non-UUID path", valid.clone(), 400, "invalid_id")
            .at(Method::PUT, "/api/products/not-a-uuid"),
        case("numeric path", r#"{"stock":1}"#, 400, "invalid_id")
            .at(Method::PATCH, "/api/products/12345"),
        case("word path", "", 400, "invalid_id").at(Method::DELETE, "/api/products/xyz"),
        case("SQL in the path", valid.clone(), 400, "invalid_id")
            .at(Method::PUT, "/api/products/1'%20OR%20'1'%3D'1"),
        put(bad_field(
            "body id differs from the path",
            "id",
            r#""00000000-0000-0000-0000-000000000001""#,
        )),
        put(invalid(
            "PUT without a price",
            "price",
            r#"{"name":"x","stock":1}"#,
        )),
        patch(invalid("empty patch", "body", "{}")),
        patch(invalid(
            "patch of server fields only",
            "body",
            r#"{"version":3}"#,
        )),
        patch(invalid("null in a patch", "stock", r#"{"stock":null}"#)),
        patch(invalid(
            "3 decimals in a patch",
            "price",
            r#"{"price":1.234}"#,
        )),
        patch(invalid_body(
            "unknown field in a patch",
            r#"{"colour":"red"}"#,
        )),
        // Wrong methods and paths.
        method_not_allowed("GET the collection", Method::GET, "/api/products", "POST"),
        method_not_allowed(
            "DELETE the collection",
            Method::DELETE,
            "/api/products",
            "POST",
        ),
        method_not_allowed(
            "POST to a product",
            Method::POST,
            item,
            "PUT, PATCH, DELETE",
        ),
        method_not_allowed("GET a product", Method::GET, item, "PUT, PATCH, DELETE"),
        case("unknown path", "{}", 404, "not_found").at(Method::POST, "/api/nothing-here"),
        // If-Match that is not `*` or quoted versions.
        patch(case(
            "unquoted If-Match",
            r#"{"stock":1}"#,
            400,
            "invalid_if_match",
        ))
        .headers(&[("if-match", "1")]),
        patch(case(
            "If-Match \"abc\"",
            r#"{"stock":1}"#,
            400,
            "invalid_if_match",
        ))
        .headers(&[("if-match", "\"abc\"")]),
        patch(case(
            "empty If-Match",
            r#"{"stock":1}"#,
            400,
            "invalid_if_match",
        ))
        .headers(&[("if-match", "")]),
        patch(case(
            "If-Match \"0\"",
            r#"{"stock":1}"#,
            400,
            "invalid_if_match",
        ))
        .headers(&[("if-match", "\"0\"")]),
        delete(case("If-Match a word", "", 400, "invalid_if_match"))
            .headers(&[("if-match", "seven")]),
        delete(case("If-Match \"-1\"", "", 400, "invalid_if_match"))
            .headers(&[("if-match", "\"-1\"")]),
        put(case(
            "unterminated If-Match",
            valid.clone(),
            400,
            "invalid_if_match",
        ))
        .headers(&[("if-match", "\"1")]),
        put(case(
            "huge If-Match",
            valid.clone(),
            400,
            "invalid_if_match",
        ))
        .headers(&[("if-match", "\"99999999999999999999\"")]),
        // Weak tags are well-formed but never match (If-Match compares strongly).
        put(case("weak If-Match", valid, 412, "precondition_failed"))
            .headers(&[("if-match", "W/\"1\"")]),
    ]
}

/// Sends every case with `{id}` = `id` and checks each answer.
async fn refuse_all(app: &TestApp, id: &str) {
    for case in cases() {
        let what = case.what;
        let path = case.path.replace("{id}", id);
        let mut request = app.request(case.method.clone(), &path).body(case.body);
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        for (name, value) in case.headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), case.status, "{what}");
        let allow = response.headers().get("allow").cloned();
        let json = body(response).await;
        assert_eq!(json["success"], false, "{what}");
        assert_eq!(json["code"], case.code, "{what}: {json}");
        let message = json["error"].as_str().unwrap_or_default();
        assert!(message.len() > 10, "{what}: unclear message {message:?}");
        if let Some(field) = case.field {
            let named = json["details"]
                .as_array()
                .is_some_and(|details| details.iter().any(|d| d["field"] == field));
            assert!(named, "{what}: {field} not in {json}");
        }
        if let Some(expected) = case.allow {
            assert_eq!(allow.unwrap(), expected, "{what}");
        }
    }
}

#[tokio::test]
async fn every_bad_request_is_refused_clearly_and_writes_nothing() {
    let app = spawn_app().await;
    let count = cases().len();
    assert!(count >= 80, "{count} cases");

    // On an empty catalogue, with `{id}` naming no product: not a row, not an event.
    refuse_all(&app, &Uuid::now_v7().to_string()).await;
    assert_eq!(app.product_rows().await, 0, "a product row was written");
    assert_eq!(
        app.outbox_rows_written().await,
        0,
        "an outbox row was written"
    );

    // Against an existing product: it stays as it was.
    let existing = app.create_ok("Existing", 1.0, 1).await;
    let existing_id = existing["id"].as_str().unwrap();
    refuse_all(&app, existing_id).await;
    let mut conn = app.db.connect().await;
    let stored = storage::products::find(&mut conn, domain::ProductId::parse(existing_id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stored.version.get(), stored.name.as_str()),
        (1, "Existing")
    );
    assert_eq!(app.product_rows().await, 1);
    assert_eq!(
        app.outbox_rows_written().await,
        1,
        "only the create's event"
    );

    // Still healthy, and valid writes work: SQL-looking names are data, stored literally.
    let health = app.request(Method::GET, "/healthz").send().await.unwrap();
    assert_eq!(health.status(), 200);
    for name in [
        "'; DROP TABLE products; --",
        "Robert'); DELETE FROM outbox;--",
        r"1' OR '1'='1 /* 100% \_ */",
    ] {
        let (status, json) = app.create_ok_status(product(name, 1.0, 1)).await;
        assert_eq!(status, 201, "{name}: {json}");
        assert_eq!(json["data"]["name"], name);
        let id = domain::ProductId::parse(json["data"]["id"].as_str().unwrap()).unwrap();
        let stored = storage::products::find(&mut conn, id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.name.as_str(), name);
    }
    assert_eq!(app.product_rows().await, 4);
    assert_eq!(app.outbox_rows_written().await, 4);
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
