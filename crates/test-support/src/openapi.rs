//! Comparing a service's OpenAPI document with the routes its source registers.

use std::collections::BTreeSet;

use reqwest::Method;

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
