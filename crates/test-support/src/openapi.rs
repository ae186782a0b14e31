//! Comparing a service's OpenAPI document with the routes its source registers.

use std::collections::BTreeSet;

use reqwest::Method;

/// The service at `base` documents exactly the paths its `sources` register, serves every
/// documented operation (not answered 405 or "no endpoint" 404) and answers any other method
/// on those paths 405 with `Allow` naming the documented ones. `{id}` is filled with a fresh UUID; requests carry a valid product body.
pub async fn assert_document_matches_routes(
    client: &reqwest::Client,
    base: &str,
    sources: &[&str],
) {
    let document: serde_json::Value = client
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let documented = operations(&document);
    let documented_paths: BTreeSet<String> =
        documented.iter().map(|(_, path)| path.clone()).collect();
    assert_eq!(
        documented_paths,
        registered_paths(sources),
        "document paths vs routes.rs"
    );

    let id = uuid::Uuid::now_v7();
    for (method, path) in all_methods(&documented_paths) {
        let url = format!("{base}{}", path.replace("{id}", &id.to_string()));
        let response = client
            .request(method.clone(), &url)
            .json(&serde_json::json!({"name": "x", "price": 1, "stock": 1}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let allow = response
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if documented.contains(&(method.to_string(), path.clone())) {
            let unrouted = status == 405
                || (status == 404
                    && body["error"]
                        .as_str()
                        .is_some_and(|e| e.starts_with("no endpoint")));
            assert!(!unrouted, "{method} {path} is documented: {status} {body}");
        } else {
            // An undocumented method on a path that exists: 405, naming the methods that work.
            let mut expected_allow: Vec<String> = documented
                .iter()
                .filter(|(_, p)| p == &path)
                .map(|(m, _)| m.clone())
                .collect();
            expected_allow.sort();
            let mut allowed: Vec<String> = allow
                .iter()
                .flat_map(|a| a.split(','))
                .map(|m| m.trim().to_owned())
                .collect();
            allowed.sort();
            assert_eq!(
                (status, allowed),
                (405, expected_allow),
                "{method} {path}: {body}"
            );
        }
    }
}

/// `(METHOD, path)` of every operation in an OpenAPI document.
pub fn operations(document: &serde_json::Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    if let Some(paths) = document["paths"].as_object() {
        for (path, item) in paths {
            for method in item.as_object().into_iter().flat_map(|m| m.keys()) {
                operations.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    operations
}

/// Every path literal registered by `web::resource("…")`, `.route("…", …)`,
/// `SwaggerUi::new("…")` and `.url("…", …)` in the given source files; the Swagger UI's
/// catch-all `/docs/{_:.*}` counts as `/docs/`.
pub fn registered_paths(sources: &[&str]) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for source in sources {
        for opener in ["resource(\"", ".route(\"", "SwaggerUi::new(\"", ".url(\""] {
            for (start, _) in source.match_indices(opener) {
                let rest = &source[start + opener.len()..];
                if let Some(end) = rest.find('"') {
                    let path = &rest[..end];
                    if path.starts_with('/') {
                        paths.insert(path.replace("{_:.*}", ""));
                    }
                }
            }
        }
    }
    paths
}

/// Every method a test should try on each path.
pub fn all_methods(paths: &BTreeSet<String>) -> Vec<(Method, String)> {
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];
    paths
        .iter()
        .flat_map(|path| methods.iter().map(move |m| (m.clone(), path.clone())))
        .collect()
}
