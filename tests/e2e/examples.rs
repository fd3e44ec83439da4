//! The client examples (examples/python, examples/typescript) against
//! `summary-gateway demo`: each runs its whole flow — a CommBox summary waited
//! for, problem+json codes, a signed webhook verified (and a tampered body
//! refused), a 429 waited out — and the JSON lines it prints are checked here.
//! A second run with another webhook secret must fail: the examples' signature
//! check is not a formality.
//!
//! Their packages come from PyPI and npm: `scripts/test.sh` installs them under
//! the user's cache, keyed by the hash of `requirements.txt` and
//! `package-lock.json`, and exports `SG_EXAMPLES_PYTHON` and
//! `SG_EXAMPLES_NODE_MODULES`. Missing, the tests fail (they do not skip).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::run_to_end;
use crate::demo::DemoProcess;

/// The demo as the examples need it: loopback callback URLs allowed (the
/// receiver is on 127.0.0.1), and a rate limit small enough that a few dozen
/// requests reach it however loaded the machine is (2/s, a burst of 10: the
/// 429's Retry-After is 1 s).
const DEMO_ENV: &[(&str, &str)] = &[
    ("SUMMARY_GATEWAY__WEBHOOKS__ALLOW_PRIVATE_NETWORKS", "true"),
    ("SUMMARY_GATEWAY__AUTH__KEYS__DEMO__RATE_LIMIT__PER_SECOND", "2"),
    ("SUMMARY_GATEWAY__AUTH__KEYS__DEMO__RATE_LIMIT__BURST", "10"),
];
/// A webhook secret that is not the demo's (`whsec_` + base64 of 32 bytes).
const WRONG_SECRET: &str = "whsec_bm90LXRoZS1kZW1vLXdlYmhvb2stc2VjcmV0LTAxMjM=";
/// Past this one example run is stopped and the test fails.
const DEADLINE: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where scripts/test.sh installs `name`-<hash of `keyed_by`>, under the user's cache.
fn cached(name: &str, keyed_by: &str) -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    let bytes = std::fs::read(repo().join(keyed_by)).expect("read the example's pinned packages");
    let hash = hex::encode(<[u8; 32]>::from(Sha256::digest(&bytes)));
    Some(cache.join(format!("summary-gateway/{name}-{}", &hash[..16])))
}

/// `$var`, else what `fallback` says scripts/test.sh installs; it must exist.
fn installed(var: &str, fallback: Option<PathBuf>, what: &str) -> PathBuf {
    match std::env::var_os(var).map(PathBuf::from).or(fallback) {
        Some(path) if path.exists() => path,
        tried => panic!(
            "{what} is not installed (looked for {}): run the suite with `bash scripts/test.sh`, \
             which installs it and sets {var}",
            tried.map_or_else(|| format!("{var}, HOME unset"), |p| p.display().to_string())
        ),
    }
}

/// What one example run printed, and how it ended.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The JSON lines on stdout, by their `step`.
    fn steps(&self) -> BTreeMap<String, Vec<Value>> {
        let mut steps: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for line in self.stdout.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{self}"));
            let step = v["step"].as_str().unwrap_or_else(|| panic!("no step: {line}")).to_owned();
            steps.entry(step).or_default().push(v);
        }
        steps
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "--- exit: {}\n--- stdout:\n{}\n--- stderr:\n{}", self.status, self.stdout, self.stderr)
    }
}

/// Runs `cmd` to its end (killed past [`DEADLINE`]), its output captured.
fn run(mut cmd: Command, demo: &DemoProcess) -> Run {
    let output = run_to_end(&mut cmd, DEADLINE).unwrap_or_else(|output| {
        panic!(
            "the example ran past {DEADLINE:?}:\n{}\n{}\n--- gateway:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            demo.output()
        )
    });
    Run {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The flow went as the demo makes it go; `run` is the example's run with the demo's secret.
fn check_flow(run: &Run, demo: &DemoProcess) {
    assert!(run.status.success(), "the example failed:\n{run}\n--- gateway:\n{}", demo.output());
    let steps = run.steps();
    let one = |step: &str| -> &Value {
        match steps.get(step).map(Vec::as_slice) {
            Some([v]) => v,
            other => panic!("expected one `{step}` line, got {other:?}:\n{run}"),
        }
    };

    // 1. The CommBox summary, waited for through its Location.
    let summary = one("summary");
    assert_eq!(summary["status"], "completed", "{run}");
    let resource = &summary["summary"];
    assert_eq!(resource["provider"], "commbox-demo", "{run}");
    assert!(
        summary["id"].as_str().is_some_and(|id| id.starts_with("sum_")) && resource["id"] == summary["id"],
        "{run}"
    );
    let sections = resource["content"]["sections"].as_array().map_or(0, Vec::len);
    assert!(sections >= 3, "a summary without its sections: {run}");
    assert!(run.stderr.contains("## Agent actions"), "the summary was not printed:\n{run}");

    // 2. Two problems, told apart by their code.
    let problems: Vec<(u64, &str)> = steps
        .get("problem")
        .into_iter()
        .flatten()
        .map(|v| (v["status"].as_u64().unwrap_or(0), v["code"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(problems, [(422, "unknown_provider"), (400, "invalid_request")], "{run}");
    assert!(steps["problem"].iter().all(|p| p["request_id"].as_str().is_some_and(|r| !r.is_empty())), "{run}");

    // 3. The webhook: verified with the demo's secret, a tampered body refused.
    let webhook = one("webhook");
    assert_eq!(webhook["verified"], true, "{run}");
    assert_eq!(webhook["tampered_rejected"], true, "{run}");
    assert_eq!(webhook["status"], "completed", "{run}");
    assert!(webhook["webhook_id"].as_str().is_some_and(|id| !id.is_empty()), "{run}");
    assert!(webhook["id"].as_str().is_some_and(|id| id.starts_with("sum_")) && webhook["id"] != summary["id"], "{run}");

    // 4. A real 429 with its headers, waited out for as long as Retry-After said.
    let limited = one("rate_limit");
    assert_eq!(limited["limited"], true, "{run}");
    let first = &limited["first"];
    assert_eq!(first["status"], 429, "{run}");
    assert_eq!(first["code"], "rate_limited", "{run}");
    assert_eq!(first["ratelimit_limit"], "10", "the demo's burst, as overridden: {run}");
    assert_eq!(first["ratelimit_remaining"], "0", "{run}");
    let retry_after: f64 = first["retry_after"].as_str().and_then(|s| s.parse().ok()).expect("a Retry-After");
    assert!(retry_after >= 1.0, "{run}");
    assert_eq!(first["delay"].as_f64(), Some(retry_after), "the wait is Retry-After's: {run}");
    assert!(limited["waited"].as_f64().is_some_and(|w| w >= retry_after * 0.9), "did not wait: {run}");
    assert_eq!(limited["final_status"], 200, "{run}");

    assert_eq!(one("done")["ok"], true, "{run}");
    assert!(!steps.contains_key("error"), "{run}");
}

/// The run with a webhook secret that is not the demo's: the delivery does not verify, the example fails.
fn check_wrong_secret(run: &Run) {
    assert!(!run.status.success(), "a delivery signed with another secret was accepted:\n{run}");
    let steps = run.steps();
    let webhook = steps.get("webhook").and_then(|w| w.first()).unwrap_or_else(|| panic!("no webhook line:\n{run}"));
    assert_eq!(webhook["verified"], false, "{run}");
    assert!(webhook["error"].as_str().is_some_and(|e| e.to_lowercase().contains("signature")), "{run}");
    assert_eq!(steps.get("done").and_then(|d| d.first()).map(|d| &d["ok"]), Some(&Value::Bool(false)), "{run}");
}

fn python_example(python: &Path, url: &str, secret: Option<&str>) -> Command {
    let dir = repo().join("examples/python");
    let mut cmd = Command::new(python);
    cmd.arg(dir.join("client.py"))
        .arg(url)
        .current_dir(&dir)
        .env_remove("SG_API_KEY")
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    match secret {
        Some(secret) => cmd.env("SG_WEBHOOK_SECRET", secret),
        None => cmd.env_remove("SG_WEBHOOK_SECRET"),
    };
    cmd
}

fn typescript_example(node_modules: &Path, url: &str, secret: Option<&str>) -> Command {
    let dir = repo().join("examples/typescript");
    let mut cmd = Command::new("node");
    cmd.arg(node_modules.join("tsx/dist/cli.mjs")).arg("client.ts").arg(url).current_dir(&dir).env_remove("SG_API_KEY");
    match secret {
        Some(secret) => cmd.env("SG_WEBHOOK_SECRET", secret),
        None => cmd.env_remove("SG_WEBHOOK_SECRET"),
    };
    cmd
}

#[test]
fn the_python_example_runs_against_the_demo() {
    let python = installed(
        "SG_EXAMPLES_PYTHON",
        cached("examples-python", "examples/python/requirements.txt").map(|venv| venv.join("bin/python")),
        "The Python example's virtualenv",
    );
    let demo = DemoProcess::spawn(DEMO_ENV);
    let ok = run(python_example(&python, &demo.url(), None), &demo);
    check_flow(&ok, &demo);
    check_wrong_secret(&run(python_example(&python, &demo.url(), Some(WRONG_SECRET)), &demo));
}

#[test]
fn the_typescript_example_type_checks_and_runs_against_the_demo() {
    let node_modules = installed(
        "SG_EXAMPLES_NODE_MODULES",
        cached("examples-node", "examples/typescript/package-lock.json").map(|dir| dir.join("node_modules")),
        "The TypeScript example's packages",
    );
    let version = Command::new("node").arg("--version").output().expect("Node.js 20 or later is needed: run node");
    let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let major: u32 = version.trim_start_matches('v').split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
    assert!(major >= 20, "Node.js 20 or later is needed (built-in fetch), found `{version}`");

    let dir = repo().join("examples/typescript");
    let tsc = Command::new("node")
        .arg(node_modules.join("typescript/bin/tsc"))
        .args(["-p", "tsconfig.json", "--typeRoots"])
        .arg(node_modules.join("@types"))
        .current_dir(&dir)
        .output()
        .expect("run tsc");
    assert!(
        tsc.status.success(),
        "examples/typescript does not type-check:\n{}{}",
        String::from_utf8_lossy(&tsc.stdout),
        String::from_utf8_lossy(&tsc.stderr)
    );

    let demo = DemoProcess::spawn(DEMO_ENV);
    let ok = run(typescript_example(&node_modules, &demo.url(), None), &demo);
    check_flow(&ok, &demo);
    check_wrong_secret(&run(typescript_example(&node_modules, &demo.url(), Some(WRONG_SECRET)), &demo));
}
