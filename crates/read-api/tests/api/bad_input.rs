//! Every bad request gets the right 4xx in the envelope with a stable code, asks no source and
//! leaves the service healthy; SQL-looking text is only ever data.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::DateTime;
use read_api::cursor::Cursor;
use reqwest::Method;
use uuid::Uuid;

use crate::helpers::{Cluster, ids, row, spawn_app, test_settings};

/// One bad request and the answer it must get. `{id}` in the path is an existing product's id.
struct Case {
    what: &'static str,
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    status: u16,
    code: &'static str,
}

fn get(what: &'static str, path: String, code: &'static str) -> Case {
    Case {
        what,
        method: Method::GET,
        path,
        headers: Vec::new(),
        status: 400,
        code,
    }
}

/// `GET /api/products?{query}`, refused as a bad query.
fn query(what: &'static str, query: &str) -> Case {
    get(what, format!("/api/products?{query}"), "invalid_query")
}

/// `GET /api/products?cursor={cursor}`, refused as a bad cursor.
fn cursor(what: &'static str, cursor: &str) -> Case {
    get(
        what,
        format!("/api/products?cursor={cursor}"),
        "invalid_cursor",
    )
}

/// `GET /api/products/{segment}`, refused as a bad id.
fn id(what: &'static str, segment: &str) -> Case {
    get(what, format!("/api/products/{segment}"), "invalid_id")
}

/// `GET /api/products/{id}` with these `X-Min-Version` values, refused.
fn min_version(what: &'static str, values: &[&str]) -> Case {
    Case {
        headers: values
            .iter()
            .map(|v| ("x-min-version", (*v).to_owned()))
            .collect(),
        ..get(what, "/api/products/{id}".into(), "invalid_min_version")
    }
}

/// Anything but GET: 405 with `Allow: GET`.
fn method(what: &'static str, method: Method, path: &str) -> Case {
    Case {
        method,
        status: 405,
        ..get(what, path.into(), "method_not_allowed")
    }
}

/// A cursor of the API's layout (format byte, microseconds, id) with chosen contents.
fn crafted_cursor(format: u8, micros: i64) -> String {
    let mut bytes = vec![format];
    bytes.extend_from_slice(&micros.to_be_bytes());
    bytes.extend_from_slice(Uuid::now_v7().as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Percent-encodes every byte but ASCII letters and digits.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn cases() -> Vec<Case> {
    let valid = Cursor {
        created_at: DateTime::from_timestamp_micros(1_790_000_000_123_456).unwrap(),
        id: Uuid::now_v7(),
    }
    .encode();
    let uuid = Uuid::now_v7().to_string();
    vec![
        // Unknown, repeated and malformed parameters.
        query("unknown parameter", "colour=red"),
        query("parameter in the wrong case", "Limit=5"),
        query("repeated parameter", "limit=1&limit=2"),
        query(
            "repeated parameter, same value",
            "inStock=true&inStock=true",
        ),
        query("limit 0", "limit=0"),
        query("limit 1001", "limit=1001"),
        query("limit not a number", "limit=abc"),
        query("negative limit", "limit=-1"),
        query("fractional limit", "limit=1.5"),
        query("empty limit", "limit="),
        query("limit beyond i64", "limit=99999999999999999999"),
        query("negative minPrice", "minPrice=-1"),
        query("minPrice with 3 decimals", "minPrice=1.001"),
        query("maxPrice with 3 decimals", "maxPrice=0.001"),
        query("maxPrice over the top", "maxPrice=1000000000.01"),
        query("minPrice 1e400", "minPrice=1e400"),
        query("maxPrice beyond i64", "maxPrice=99999999999999999999"),
        query("minPrice NaN", "minPrice=NaN"),
        query("maxPrice Infinity", "maxPrice=Infinity"),
        query("minPrice -Infinity", "minPrice=-Infinity"),
        query("minPrice quoted NaN", "minPrice=%22NaN%22"),
        query("minPrice a word", "minPrice=cheap"),
        query("empty minPrice", "minPrice="),
        query("inStock maybe", "inStock=maybe"),
        query("inStock in capitals", "inStock=TRUE"),
        query("inStock 1", "inStock=1"),
        query("empty name", "name="),
        query(
            "name of 201 characters",
            &format!("name={}", "x".repeat(201)),
        ),
        query(
            "name of 10,000 characters",
            &format!("name={}", "x".repeat(10_000)),
        ),
        query("name with NUL", "name=a%00b"),
        query("name with BEL", "name=%07"),
        query("name with a newline", "name=a%0Ab"),
        query("several problems", "limit=0&inStock=maybe&colour=red"),
        query("bad cursor among bad parameters", "cursor=nope&limit=0"),
        // Cursors the API never handed out.
        cursor("garbage cursor", "not-a-cursor"),
        cursor("cursor outside the alphabet", "!!!!"),
        cursor("empty cursor", ""),
        cursor("truncated cursor", &valid[..valid.len() - 3]),
        cursor("cursor with extra bytes", &format!("{valid}AA")),
        cursor("padded cursor", &format!("{valid}%3D%3D")),
        cursor(
            "cursor in the standard alphabet",
            &encode(&STANDARD.encode(URL_SAFE_NO_PAD.decode(&valid).unwrap())),
        ),
        cursor(
            "base64 of text",
            &URL_SAFE_NO_PAD.encode("hello, this is not a cursor"),
        ),
        cursor(
            "base64 of JSON",
            &URL_SAFE_NO_PAD.encode(r#"{"createdAt":0,"id":"x"}"#),
        ),
        cursor("unknown cursor format", &crafted_cursor(2, 0)),
        // Ids that are not UUIDs.
        id("number id", "42"),
        id("word id", "not-a-uuid"),
        id("truncated UUID", &uuid[..35]),
        id("UUID with a character more", &format!("{uuid}0")),
        id("UUID with a non-hex digit", &format!("g{}", &uuid[1..])),
        id("SQL in the path", &encode("1' OR '1'='1")),
        // X-Min-Version that is not one positive integer.
        min_version("min version 0", &["0"]),
        min_version("min version -1", &["-1"]),
        min_version("min version text", &["abc"]),
        min_version("min version 1.5", &["1.5"]),
        min_version("min version +1", &["+1"]),
        min_version("min version in hex", &["0x10"]),
        min_version("huge min version", &["99999999999999999999"]),
        min_version("min version just past i64", &["9223372036854775808"]),
        min_version("empty min version", &[""]),
        min_version("two min versions", &["1", "2"]),
        // Writes and other methods.
        method("POST a product", Method::POST, "/api/products"),
        method("PUT a product", Method::PUT, "/api/products/{id}"),
        method("PATCH a product", Method::PATCH, "/api/products/{id}"),
        method("DELETE a product", Method::DELETE, "/api/products/{id}"),
        method("POST to replicas", Method::POST, "/api/replicas"),
        Case {
            status: 404,
            ..get("unknown path", "/api/nothing".into(), "not_found")
        },
        Case {
            status: 404,
            ..get(
                "path below a product",
                "/api/products/{id}/extra".into(),
                "not_found",
            )
        },
    ]
}

#[tokio::test]
async fn every_bad_request_is_refused_clearly_and_asks_no_source() {
    let cluster = Cluster::new(1).await;
    let product = row("Lamp", 1_000, 1);
    let sql_like = row("'; DROP TABLE products; --", 500, 2);
    cluster
        .insert_everywhere(&[product.clone(), sql_like.clone()])
        .await;
    let app = spawn_app(test_settings(&cluster)).await;
    let existing = product.id.to_string();

    let cases = cases();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    for case in cases {
        let path = case.path.replace("{id}", &existing);
        let headers: Vec<(&str, &str)> = case
            .headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let answer = app.answer_to(case.method.clone(), &path, &headers).await;
        let what = case.what;
        assert_eq!(answer.status, case.status, "{what}: {}", answer.body);
        assert_eq!(answer.body["success"], false, "{what}");
        assert_eq!(answer.body["code"], case.code, "{what}: {}", answer.body);
        let message = answer.body["error"].as_str().unwrap_or_default();
        assert!(message.len() > 10, "{what}: unclear message {message:?}");
        assert_eq!(answer.served_by, None, "{what}: no source was asked");
        if case.status == 405 {
            assert_eq!(answer.allow.as_deref(), Some("GET"), "{what}");
        }
    }

    // Several problems are reported together.
    let answer = app.answer("/api/products?limit=0&inStock=maybe", &[]).await;
    let error = answer.body["error"].as_str().unwrap();
    assert!(
        error.contains("limit") && error.contains("inStock"),
        "{error}"
    );

    // Still healthy: alive, the replica in rotation with no errors counted, reads work.
    assert_eq!(app.get("/healthz").await.status(), 200);
    let replica = app.replica("replica-1").await;
    assert_eq!(replica["healthy"], true, "{replica}");
    assert_eq!(replica["consecutiveErrors"], 0, "{replica}");
    let list = app.answer("/api/products?limit=10", &[]).await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(ids(&list.body).len(), 2);
    let one = app.answer(&format!("/api/products/{existing}"), &[]).await;
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(one.body["data"]["name"], "Lamp");
    // The earliest time PostgreSQL stores is still a cursor it can take.
    let earliest = crafted_cursor(1, -210_866_803_200_000_000);
    let from_the_start = app
        .answer(&format!("/api/products?cursor={earliest}"), &[])
        .await;
    assert_eq!(from_the_start.status, 200, "{}", from_the_start.body);
    assert_eq!(ids(&from_the_start.body).len(), 2);

    // SQL-looking text is data: the filter finds the one product named so, literally.
    let path = format!("/api/products?name={}", encode("'; DROP TABLE"));
    let found = app.answer(&path, &[]).await;
    assert_eq!(found.status, 200, "{}", found.body);
    assert_eq!(ids(&found.body), [sql_like.id.to_string()]);
    assert_eq!(found.body["data"][0]["name"], sql_like.name);
}

/// A cursor of the API's shape whose time lies beyond what PostgreSQL stores is the nearer
/// end of the order, not an error (and never a source's "timestamp out of range" as a 503):
/// before the beginning, every product follows; after the end, none does.
#[tokio::test]
async fn a_cursor_beyond_the_storable_times_is_the_nearer_end() {
    let cluster = Cluster::new(1).await;
    cluster.insert_everywhere(&[row("Lamp", 1_000, 1)]).await;
    let app = spawn_app(test_settings(&cluster)).await;
    for (what, micros, expected) in [
        ("about 93,000 BC", -3_000_000_000_000_000_000, 1),
        ("beyond any date", i64::MAX, 0),
    ] {
        let path = format!("/api/products?cursor={}", crafted_cursor(1, micros));
        let answer = app.answer_to(Method::GET, &path, &[]).await;
        assert_eq!(answer.status, 200, "{what}: {}", answer.body);
        let items = answer.body["data"].as_array().map_or(0, Vec::len);
        assert_eq!(items, expected, "{what}: {}", answer.body);
    }
}
