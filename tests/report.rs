//! The report a person looks at, in a real headless browser (Debian's
//! Chromium, driven by Playwright from `tests/browser/check_report.py`):
//! the page `driftwatch demo` writes for each model, and the same page
//! served by `driftwatch run` at `/ui/models/{id}` behind the API's token.
//! No console errors, no failed requests, every chart drawn; screenshots
//! stay in the test's directory (printed) for a person to look at.

#![allow(clippy::unwrap_used)]

mod common;
mod service;

use std::path::Path;

use serde_json::Value;
use service::*;

/// The charts every report draws (see src/report.rs).
const CHARTS: [&str; 6] = [
    "performance",
    "drift",
    "distribution",
    "missing",
    "out_of_range",
    "timeline",
];

/// What the browser saw of `page` (a file or a URL); the screenshot goes to
/// `screenshot`.
fn browse(page: &str, screenshot: &Path, token: Option<&str>) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/check_report.py");
    let mut c = common::python();
    c.arg(&script).arg(page).arg(screenshot);
    if let Some(t) = token {
        c.args(["--token", t]);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "the browser check failed (scripts/test.sh installs Chromium and Playwright):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("screenshot: {}", screenshot.display());
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_clean_and_drawn(seen: &Value, what: &str) {
    assert_eq!(
        seen["console_errors"],
        Value::Array(vec![]),
        "{what}: {seen}"
    );
    assert_eq!(
        seen["failed_requests"],
        Value::Array(vec![]),
        "{what}: {seen}"
    );
    for chart in CHARTS {
        let c = &seen["charts"][chart];
        assert!(
            c["count"].as_u64().unwrap() >= 1,
            "{what}: no {chart} chart: {seen}"
        );
        assert_eq!(c["empty"], 0, "{what}: an empty {chart} chart: {seen}");
        assert!(c["marks"].as_u64().unwrap() > 0, "{what}: {chart}: {seen}");
    }
}

#[test]
fn the_demos_reports_open_clean_in_a_browser_and_the_service_serves_the_same_page() {
    let dir = tempfile::tempdir().unwrap();
    // kept for a person to look at when asked to
    let dir_path = if std::env::var_os("DRIFTWATCH_KEEP_REPORTS").is_some() {
        dir.keep()
    } else {
        dir.path().to_owned()
    };
    let dir = dir_path.as_path();
    std::fs::write(dir.join("driftwatch.toml"), "").unwrap();
    let out = command(dir, &["demo"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for model in ["churn", "fraud", "eta"] {
        let path = dir.join(format!("driftwatch-data/reports/{model}.html"));
        assert!(
            stdout.contains(&format!(
                "report of {model}: driftwatch-data/reports/{model}.html"
            )),
            "{stdout}"
        );
        let page = std::fs::read_to_string(&path).unwrap();
        assert!(!page.contains("<script"), "the page runs no script");
        let seen = browse(
            path.to_str().unwrap(),
            &dir.join(format!("{model}.png")),
            None,
        );
        assert_clean_and_drawn(&seen, model);
    }
    // the churn page tells the demo's story: the critical drift, the
    // retraining request and v13 after v12
    let churn = std::fs::read_to_string(dir.join("driftwatch-data/reports/churn.html")).unwrap();
    for told in [
        "critical_feature_drift",
        "retraining requested by critical_feature_drift, job demo-run-",
        "v13 serving",
        "v13 healthy",
        "drift, PSI",
    ] {
        assert!(churn.contains(told), "{told:?} not in the churn report");
    }

    // the service over the demo's data directory serves the same page
    let port = free_port();
    let service = Service::start(dir, port, "service");
    let (status, body) = get(port, "/ui/models/churn", None).unwrap();
    assert_eq!(status, 401, "{body}");
    let (status, body) = get(port, "/ui/models/nobody", Some(TOKEN)).unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(json(&body)["error"].as_str().unwrap().contains("nobody"));
    let (status, body) = get(port, "/ui/models/churn?from=yesterday", Some(TOKEN)).unwrap();
    assert_eq!(status, 400, "{body}");
    let (status, served) = get(port, "/ui/models/churn", Some(TOKEN)).unwrap();
    assert_eq!(status, 200);
    // the same figures as the file (only the generation time differs)
    let strip = |p: &str| p.split("<footer>").next().unwrap().to_owned();
    assert_eq!(strip(&served), strip(&churn));
    let seen = browse(
        &format!("http://127.0.0.1:{port}/ui/models/churn"),
        &dir.join("served.png"),
        Some(TOKEN),
    );
    assert_clean_and_drawn(&seen, "served");
    // a span narrows the page
    let (status, narrow) = get(
        port,
        "/ui/models/churn?from=2026-11-01T10:00:00Z&to=2026-11-01T12:00:00Z",
        Some(TOKEN),
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(narrow.contains("<b>2</b> windows"), "{}", strip(&narrow));
    assert!(service.stop().success());
}
