//! `docker-compose.yml` and `deploy/Dockerfile`, checked by reading them (`make test-compose`
//! runs them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn compose() -> Yaml {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

fn service<'a>(compose: &'a Yaml, name: &str) -> &'a Yaml {
    let service = &compose["services"][name];
    assert!(!service.is_badvalue(), "service {name} is missing");
    service
}

/// A mapping's keys, with YAML merge keys (`<<: *anchor`) folded in.
fn keys(mapping: &Yaml) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    if let Some(hash) = mapping.as_hash() {
        for (key, value) in hash {
            match key.as_str() {
                Some("<<") => keys.extend(keys_of_merge(value)),
                Some(key) => {
                    keys.insert(key.to_owned());
                }
                None => {}
            }
        }
    }
    keys
}

fn keys_of_merge(value: &Yaml) -> BTreeSet<String> {
    match value {
        Yaml::Array(items) => items.iter().flat_map(keys).collect(),
        other => keys(other),
    }
}

/// The environment variables a service reads: its settings keys in upper case, plus the
/// log filter.
fn variables_read<T: serde::Serialize>(defaults: T) -> BTreeSet<String> {
    let serde_json::Value::Object(map) = serde_json::to_value(defaults).unwrap() else {
        panic!("settings serialize to a map");
    };
    map.keys()
        .map(|k| k.to_ascii_uppercase())
        .chain(["RUST_LOG".to_owned(), "CONFIG_FILE".to_owned()])
        .collect()
}

#[test]
fn every_part_of_the_stack_is_there_with_health_checks() {
    let compose = compose();
    for name in [
        "postgres-primary",
        "postgres-replica-1",
        "postgres-replica-2",
        "rabbitmq",
        "write-api",
        "replicator",
        "read-api",
    ] {
        let service = service(&compose, name);
        let test = &service["healthcheck"]["test"];
        assert!(!test.is_badvalue(), "{name} has no health check");
    }
    let rabbitmq = service(&compose, "rabbitmq");
    assert!(rabbitmq["image"].as_str().unwrap().contains("management"));
    let ports: Vec<&str> = rabbitmq["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(
        ports.iter().any(|p| p.ends_with(":15672")),
        "management UI published"
    );
}

#[test]
fn services_wait_for_healthy_dependencies() {
    let compose = compose();
    for name in ["write-api", "replicator", "read-api"] {
        let depends = service(&compose, name)["depends_on"]
            .as_hash()
            .unwrap_or_else(|| panic!("{name}: depends_on"));
        assert!(!depends.is_empty());
        for (dependency, condition) in depends {
            let dependency = dependency.as_str().unwrap();
            assert_eq!(
                condition["condition"].as_str(),
                Some("service_healthy"),
                "{name} must wait for {dependency} to be healthy"
            );
            service(&compose, dependency);
        }
    }
}

#[test]
fn data_lives_in_named_volumes() {
    let compose = compose();
    let declared = keys(&compose["volumes"]);
    for name in [
        "postgres-primary",
        "postgres-replica-1",
        "postgres-replica-2",
        "rabbitmq",
    ] {
        let mounts = service(&compose, name)["volumes"].as_vec().unwrap();
        let named = mounts
            .iter()
            .filter_map(Yaml::as_str)
            .filter_map(|m| m.split(':').next())
            .any(|source| declared.contains(source));
        assert!(named, "{name} keeps its data in a named volume");
    }
}

#[test]
fn the_replicator_scales() {
    let compose = compose();
    let replicator = service(&compose, "replicator");
    assert!(
        replicator["container_name"].is_badvalue(),
        "a container name prevents --scale"
    );
    assert!(
        replicator["ports"].is_badvalue(),
        "a fixed host port prevents --scale"
    );
}

#[test]
fn read_api_logs_in_with_the_read_only_role() {
    let compose = compose();
    let environment = &service(&compose, "read-api")["environment"];
    for key in ["DATABASE_URL", "REPLICA_1_URL", "REPLICA_2_URL"] {
        let url = environment[key].as_str().unwrap();
        assert!(
            url.starts_with("postgres://catalogue_reader:"),
            "{key}={url}"
        );
    }
    let role_sql = std::fs::read_to_string(root().join("deploy/compose/reader-role.sql")).unwrap();
    assert!(role_sql.contains("GRANT SELECT ON TABLES TO catalogue_reader"));
    assert!(!role_sql.to_ascii_uppercase().contains("INSERT"));
}

#[test]
fn every_variable_set_is_one_the_service_reads() {
    let compose = compose();
    for (name, read) in [
        ("write-api", variables_read(write_api::Settings::default())),
        (
            "replicator",
            variables_read(replicator::Settings::default()),
        ),
        ("read-api", variables_read(read_api::Settings::default())),
    ] {
        let set = keys(&service(&compose, name)["environment"]);
        assert!(!set.is_empty());
        let unknown: Vec<_> = set.difference(&read).collect();
        assert!(
            unknown.is_empty(),
            "{name} is given variables it never reads: {unknown:?}"
        );
    }
}

#[test]
fn the_dockerfile_builds_small_non_root_images_with_a_cached_dependency_layer() {
    let dockerfile = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert!(stages >= 3, "multi-stage: planner, builder, runtime");
    assert!(
        dockerfile.contains("cargo chef cook"),
        "dependencies build in their own layer"
    );
    let runtime = dockerfile.rsplit("FROM ").next().unwrap();
    assert!(
        runtime.starts_with("debian:bookworm-slim"),
        "small runtime image"
    );
    assert!(runtime.contains("USER 10001"), "runs as a non-root user");
    assert!(
        !runtime.contains("cargo"),
        "no toolchain in the runtime image"
    );

    let compose = compose();
    let mut images = BTreeSet::new();
    for name in ["write-api", "replicator", "read-api"] {
        let service = service(&compose, name);
        let build = &service["build"];
        assert_eq!(build["dockerfile"].as_str(), Some("deploy/Dockerfile"));
        images.insert(service["image"].as_str().unwrap().to_owned());
        assert_eq!(
            service["command"][0].as_str(),
            Some(name),
            "{name} runs its own binary from the shared image"
        );
    }
    assert_eq!(
        images.len(),
        1,
        "one image for the three services: {images:?}"
    );

    let ignored = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    for entry in ["target/", ".git/"] {
        assert!(
            ignored.lines().any(|l| l.trim() == entry),
            ".dockerignore lists {entry}"
        );
    }
}

#[test]
fn one_build_makes_the_three_binaries() {
    let dockerfile = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let builds: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.contains("cargo build"))
        .collect();
    assert_eq!(builds.len(), 1, "one cargo build: {builds:?}");
    for binary in ["write-api", "replicator", "read-api"] {
        assert!(
            builds[0].contains(&format!("--bin {binary}")),
            "the build makes {binary}"
        );
        assert!(
            dockerfile.contains(&format!("target/release/{binary}")),
            "{binary} is copied out of the builder"
        );
    }
    assert!(
        !dockerfile.contains("ARG SERVICE"),
        "no per-service build argument"
    );
}

#[test]
fn compose_v1_reads_it_and_host_ports_move() {
    let compose = compose();
    assert!(
        compose["name"].is_badvalue(),
        "docker-compose 1.29 refuses a top-level `name:`; use -p or COMPOSE_PROJECT_NAME"
    );
    let services = compose["services"].as_hash().unwrap();
    let mut published = 0;
    for (name, service) in services {
        let Some(ports) = service["ports"].as_vec() else {
            continue;
        };
        for port in ports.iter().filter_map(Yaml::as_str) {
            published += 1;
            assert!(
                port.starts_with("${") && port.contains(":-"),
                "{name:?}: host port {port} is not a ${{VARIABLE:-default}}"
            );
        }
    }
    assert!(published >= 7, "every host port checked");
}
