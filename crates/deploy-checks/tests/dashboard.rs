//! The Grafana dashboard charts metrics the services really export.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sources(dir: &Path, into: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

#[test]
fn every_charted_metric_is_exported_by_a_service() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/catalogue-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut code = String::new();
    for service in ["write-api", "replicator", "read-api", "http-api"] {
        sources(&root().join("crates").join(service).join("src"), &mut code);
    }
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 8);
    for panel in panels {
        let expr = panel["targets"][0]["expr"].as_str().unwrap();
        let metrics = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| {
                word.contains('_') && word.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            })
            .filter(|word| !["histogram_quantile"].contains(word));
        for metric in metrics {
            let name = metric.strip_suffix("_bucket").unwrap_or(metric);
            assert!(
                code.contains(&format!("\"{name}\"")),
                "{name} (in {expr:?}) is exported by no service"
            );
        }
    }
}
