//! The deployment files: the `Dockerfile` builds what the README builds,
//! `compose/` is a valid Compose file with every image pinned, its
//! driftwatch configuration and the simulator load, and the Dockerfile's
//! stub sources match the crates' declared targets. (That the dashboard's
//! metrics are exported is checked against a running service with Kafka in
//! `tests/retraining.rs`.)

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_image_builds_the_readmes_binary() {
    let dockerfile = read("Dockerfile");
    let readme = read("README.md");
    let builds: Vec<&str> = dockerfile
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split("cargo build").nth(1))
        .map(|rest| {
            rest.split("&&")
                .next()
                .unwrap()
                .trim_end_matches('\\')
                .trim()
        })
        .collect();
    assert_eq!(builds.len(), 2, "the dependency layer and the build");
    for flags in builds {
        let command = format!("cargo build {flags}");
        assert_eq!(command, "cargo build --release --locked");
        assert!(
            readme.contains(&command),
            "the README says how the image builds: {command}"
        );
    }
    assert!(readme.contains("docker build -t driftwatch ."));
    assert!(
        dockerfile.contains("USER driftwatch"),
        "runs as a non-root user"
    );
    assert!(dockerfile.contains("HEALTHCHECK") && dockerfile.contains("/healthz"));
}

#[test]
fn the_dependency_layer_stubs_every_declared_target() {
    let dockerfile = read("Dockerfile");
    for krate in ["ingest", "detectors", "sql", "triggers", "engine"] {
        assert!(
            dockerfile.contains(&format!("COPY {krate}/Cargo.toml {krate}/")),
            "{krate}'s manifest is copied for the dependency layer"
        );
        let manifest = read(&format!("{krate}/Cargo.toml"));
        let mut lines = manifest.lines();
        while let Some(line) = lines.next() {
            if line.trim() == "[[bench]]" {
                let name = lines
                    .next()
                    .and_then(|l| l.split('"').nth(1))
                    .unwrap()
                    .to_owned();
                assert!(
                    dockerfile.contains(&format!("{krate}/benches/{name}")),
                    "the Dockerfile stubs {krate}/benches/{name}.rs"
                );
            }
        }
    }
}

#[test]
fn every_compose_image_is_pinned_and_the_config_loads() {
    let compose = read("compose/docker-compose.yml");
    let images: Vec<&str> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image: "))
        .collect();
    assert!(images.len() >= 8, "{images:?}");
    for image in &images {
        let (_, tag) = image
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("{image} has no tag"));
        assert!(tag != "latest" && !tag.is_empty(), "{image} is not pinned");
    }
    for needed in [
        "apache/kafka",
        "axllent/mailpit",
        "prom/prometheus",
        "grafana/grafana",
    ] {
        assert!(
            images.iter().any(|i| i.starts_with(needed)),
            "{needed} in compose"
        );
    }
    // driftwatch's configuration there is one the service takes
    let out = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args([
            "--config",
            "compose/driftwatch.toml",
            "rules",
            "check",
            "rules",
        ])
        .current_dir(repo())
        .env("DRIFTWATCH_API_TOKEN", "x")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // the dashboard is JSON with panels, the provisioning points at it
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("compose/grafana/dashboards/driftwatch.json")).unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() > 10);
    assert!(
        read("compose/grafana/provisioning/dashboards/driftwatch.yml")
            .contains("/var/lib/grafana/dashboards")
    );
}

#[test]
fn the_compose_file_is_valid_where_a_compose_client_exists() {
    let dir = repo().join("compose");
    // `docker compose` (the plugin) or Debian's `docker-compose`
    let clients: [(&str, &[&str]); 2] = [
        ("docker", &["compose", "config", "--quiet"]),
        ("docker-compose", &["config", "--quiet"]),
    ];
    for (program, args) in clients {
        // a docker client without the compose plugin does not count
        let present = Command::new(program)
            .args(if program == "docker" {
                &["compose", "version"][..]
            } else {
                &["version"][..]
            })
            .output()
            .is_ok_and(|o| o.status.success());
        if !present {
            continue;
        }
        let out = Command::new(program)
            .args(args)
            .current_dir(&dir)
            .env("DRIFTWATCH_API_TOKEN", "x")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!("{program} {args:?}: valid");
        return;
    }
    println!(
        "skipped: neither `docker compose` nor `docker-compose` is here \
         (scripts/test.sh installs Debian's docker-compose when it can)"
    );
}

#[test]
fn the_simulator_compiles() {
    let out = Command::new("python3")
        .args(["-m", "py_compile"])
        .arg(Path::new("compose/sim/sim.py"))
        .current_dir(repo())
        .env(
            "PYTHONPYCACHEPREFIX",
            std::env::temp_dir().join("driftwatch-pycache"),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}
