//! Schemathesis against `summary-gateway demo`: the OpenAPI document and the
//! gateway's answers agree, with every check Schemathesis has, so a drift
//! between them fails the suite.
//!
//! Schemathesis comes from PyPI: `scripts/test.sh` installs the pinned version
//! into a virtualenv under the user's cache and exports `SG_SCHEMATHESIS` (the
//! path of its `st`). Its configuration, with the reason for each setting, is
//! `tests/e2e/schemathesis.toml`. The run is bounded (examples per operation, a
//! fixed seed, a wall-clock limit) and takes about a minute on two cores.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::run_to_end;
use crate::demo::{DEMO_KEY, DemoProcess};

/// What scripts/test.sh installs; keep the two in step.
const PINNED: &str = "4.32.5";
/// Test cases per operation and phase (Schemathesis' `--max-examples`).
const MAX_EXAMPLES: &str = "150";
/// Past this the run is stopped and the test fails.
const DEADLINE: Duration = Duration::from_secs(150);

/// `st`: `$SG_SCHEMATHESIS`, else where scripts/test.sh puts it.
fn schemathesis() -> PathBuf {
    let installed = std::env::var_os("SG_SCHEMATHESIS").map(PathBuf::from).or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
        Some(cache.join(format!("summary-gateway/schemathesis-{PINNED}/bin/st")))
    });
    match installed {
        Some(st) if st.is_file() => st,
        tried => panic!(
            "Schemathesis {PINNED} is not installed (looked for {}): run the suite with \
             `bash scripts/test.sh`, which installs it from PyPI and sets SG_SCHEMATHESIS",
            tried.map_or_else(|| "SG_SCHEMATHESIS, HOME unset".to_owned(), |p| p.display().to_string())
        ),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_holds_under_schemathesis() {
    let st = schemathesis();
    let version = Command::new(&st).arg("--version").output().expect("run st --version");
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.trim().ends_with(PINNED),
        "{} is `{}`, not {PINNED}: run scripts/test.sh",
        st.display(),
        version.trim()
    );

    // The demo key's rate limit (50/s) would answer most generated requests 429.
    let demo = DemoProcess::spawn(&[
        ("SUMMARY_GATEWAY__AUTH__KEYS__DEMO__RATE_LIMIT__PER_SECOND", "1000000"),
        ("SUMMARY_GATEWAY__AUTH__KEYS__DEMO__RATE_LIMIT__BURST", "1000000"),
    ]);
    let doc: Value =
        crate::common::client().get(format!("{}/openapi.json", demo.url())).send().await.unwrap().json().await.unwrap();
    // Every documented operation but the one serving the document, which Schemathesis leaves out.
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(path, _)| *path != "/openapi.json")
        .map(|(_, item)| item.as_object().unwrap().len())
        .sum();

    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/e2e/schemathesis.toml");
    let report = tempfile::tempdir().unwrap();
    let mut run = Command::new(&st);
    run.arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/openapi.json", demo.url())])
        .args(["--checks", "all", "--mode", "all"])
        .args(["--header", &format!("Authorization: Bearer {DEMO_KEY}")])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", "1", "--generation-database", "none"])
        .args(["--workers", "1", "--request-timeout", "20", "--no-color"])
        .current_dir(report.path());
    let (status, report) = match run_to_end(&mut run, DEADLINE) {
        Ok(output) => (
            output.status,
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
        ),
        Err(output) => panic!(
            "Schemathesis ran past {DEADLINE:?}:\n{}{}\n--- gateway:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            demo.output()
        ),
    };
    assert!(status.success(), "Schemathesis found problems ({status}):\n{report}");
    // It ran, and ran everything: not a pass over nothing.
    let all = format!("Selected: {operations}/{operations}");
    let tested = format!("Tested: {operations}");
    assert!(
        report.contains(&all) && report.contains(&tested),
        "not all {operations} operations were tested:\n{report}"
    );
    let generated = report
        .lines()
        .find_map(|line| line.trim().split_once(" generated").and_then(|(n, _)| n.parse::<u64>().ok()))
        .unwrap_or(0);
    assert!(generated > 100 * operations as u64 / 10, "only {generated} test cases:\n{report}");
    println!("{report}");
}
