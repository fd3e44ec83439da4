//! `deploy/observability/`: the dashboard, the alerts and the kustomization
//! that ships them.
//!
//! - the kustomization renders (with the kubectl under test: 1.20's kustomize
//!   v2.0.3 as well as a current one) to a ServiceMonitor, a PrometheusRule and
//!   the dashboard's ConfigMap (`grafana_dashboard: "1"`), alone and added to
//!   every overlay (`bases:`), and then picks that overlay's Service and port;
//! - the PrometheusRule's groups are the plain rules file's;
//! - `promtool check rules` accepts the rules and `promtool test rules` passes
//!   `tests/*.yaml`, which test every alert (each fires at least once);
//! - every alert has `for:`, a severity, summary/description/runbook, and its
//!   name and expression in deploy/README.md's "Dashboards and alerts";
//! - the dashboard covers what the issue asks for.
//!
//! That the metric and label names exist is checked against a running gateway
//! by `tests/e2e/observability.rs`.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use serde_yaml::Value;

use super::{at, docs_of, find, name, render, selects, seq_at, str_at, workspace};

/// Severities the alerts may carry (Alertmanager routes on them).
const SEVERITIES: &[&str] = &["warning", "critical"];

fn dir() -> PathBuf {
    workspace().join("deploy/observability")
}

fn read(file: &str) -> String {
    std::fs::read_to_string(dir().join(file)).unwrap_or_else(|e| panic!("deploy/observability/{file}: {e}"))
}

fn plain_groups() -> Value {
    let file: Value = serde_yaml::from_str(&read("prometheus-rules.yaml")).unwrap();
    file["groups"].clone()
}

/// Every alerting rule of the plain rules file.
fn alerts() -> Vec<Value> {
    let groups = plain_groups();
    let mut rules: Vec<Value> = Vec::new();
    for group in groups.as_sequence().expect("groups") {
        rules.extend(seq_at(group, "rules").iter().filter(|r| r.get("alert").is_some()).cloned());
    }
    rules
}

/// `to` relative to `from` (both absolute): kustomize v2.0.3 takes relative bases only.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut path = PathBuf::new();
    for _ in common..from.len() {
        path.push("..");
    }
    for c in &to[common..] {
        path.push(c);
    }
    path
}

fn kinds_and_names(docs: &[Value]) -> BTreeSet<(String, String)> {
    docs.iter().map(|d| (str_at(d, "kind").unwrap_or("?").to_owned(), name(d).to_owned())).collect()
}

/// The three objects and what is in them.
fn check_objects(what: &str, docs: &[Value]) {
    let rule = find(docs, "PrometheusRule", "summary-gateway").unwrap_or_else(|| panic!("{what}: no PrometheusRule"));
    assert_eq!(str_at(rule, "apiVersion"), Some("monitoring.coreos.com/v1"), "{what}");
    assert_eq!(
        at(rule, "spec.groups"),
        Some(&plain_groups()),
        "{what}: the PrometheusRule is not prometheus-rules.yaml"
    );

    let dashboards: Vec<&Value> = docs_of(docs, "ConfigMap")
        .into_iter()
        .filter(|c| str_at(c, "metadata.labels.grafana_dashboard") == Some("1"))
        .collect();
    assert_eq!(dashboards.len(), 1, "{what}: one ConfigMap labelled grafana_dashboard: \"1\"");
    let data = at(dashboards[0], "data").and_then(Value::as_mapping).expect("the dashboard ConfigMap has data");
    assert_eq!(data.len(), 1, "{what}: one file in the dashboard ConfigMap");
    let (key, json) = data.iter().next().unwrap();
    assert!(
        key.as_str().is_some_and(|k| Path::new(k).extension() == Some(OsStr::new("json"))),
        "{what}: the sidecar loads *.json: {key:?}"
    );
    let shipped: serde_json::Value = serde_json::from_str(json.as_str().unwrap()).expect("the ConfigMap holds JSON");
    let file: serde_json::Value = serde_json::from_str(&read("dashboard.json")).unwrap();
    assert_eq!(shipped, file, "{what}: the ConfigMap's dashboard is not dashboard.json");

    let monitor =
        find(docs, "ServiceMonitor", "summary-gateway").unwrap_or_else(|| panic!("{what}: no ServiceMonitor"));
    assert_eq!(str_at(monitor, "apiVersion"), Some("monitoring.coreos.com/v1"), "{what}");
    let endpoints = seq_at(monitor, "spec.endpoints");
    assert_eq!(endpoints.len(), 1, "{what}: one ServiceMonitor endpoint");
    assert_eq!(str_at(&endpoints[0], "path"), Some("/metrics"), "{what}: the gateway serves /metrics");
}

/// The ServiceMonitor finds the overlay's Service, and its port is the one the pods annotate.
fn check_monitor_fits(overlay: &str, docs: &[Value]) {
    let monitor = find(docs, "ServiceMonitor", "summary-gateway").expect("ServiceMonitor");
    let services: Vec<&Value> = docs_of(docs, "Service")
        .into_iter()
        .filter(|s| selects(at(monitor, "spec.selector.matchLabels"), at(s, "metadata.labels")))
        .collect();
    let names: Vec<&str> = services.iter().map(|s| name(s)).collect();
    assert_eq!(
        names,
        ["summary-gateway"],
        "overlay `{overlay}`: the ServiceMonitor must select the gateway's Service only"
    );
    let port = str_at(&seq_at(monitor, "spec.endpoints")[0], "port").expect("the endpoint names a port");
    let service_port = seq_at(services[0], "spec.ports")
        .iter()
        .find(|p| str_at(p, "name") == Some(port))
        .unwrap_or_else(|| panic!("overlay `{overlay}`: the Service has no port named {port}"));
    assert_eq!(
        str_at(service_port, "targetPort"),
        Some("http"),
        "overlay `{overlay}`: the Service port leads to the API port"
    );
    let deployment = find(docs, "Deployment", "summary-gateway").expect("the gateway's Deployment");
    let path = at(deployment, "spec.template.metadata.annotations")
        .and_then(|a| a.get("prometheus.io/path"))
        .and_then(Value::as_str)
        .unwrap_or("/metrics");
    assert_eq!(str_at(&seq_at(monitor, "spec.endpoints")[0], "path"), Some(path), "overlay `{overlay}`");
}

#[test]
fn the_observability_kustomization_renders_alone_and_with_every_overlay() {
    let docs = render("observability", &dir());
    let kinds: BTreeSet<String> = docs.iter().map(|d| str_at(d, "kind").unwrap_or("?").to_owned()).collect();
    assert_eq!(
        kinds,
        ["ConfigMap", "PrometheusRule", "ServiceMonitor"].iter().map(|s| (*s).to_owned()).collect(),
        "deploy/observability renders exactly its three objects"
    );
    assert_eq!(docs.len(), 3);
    check_objects("deploy/observability", &docs);
    let own = kinds_and_names(&docs);

    // Added to each overlay the way its README says (`bases:`, which both
    // kustomize versions read): the overlay's objects plus these three, unchanged.
    let tmp = tempfile::tempdir().unwrap();
    let tmp_path = tmp.path().canonicalize().unwrap();
    let root = workspace().canonicalize().unwrap();
    for (overlay, overlay_dir) in super::overlays() {
        let combined = tmp_path.join(format!("{overlay}-observed"));
        std::fs::create_dir_all(&combined).unwrap();
        let kustomization = format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nbases:\n- {}\n- {}\n",
            relative(&combined, &overlay_dir.canonicalize().unwrap()).display(),
            relative(&combined, &root.join("deploy/observability")).display()
        );
        std::fs::write(combined.join("kustomization.yaml"), kustomization).unwrap();
        let with = render(&format!("{overlay} + observability"), &combined);
        let without = render(&overlay, &overlay_dir);
        let mut expected = kinds_and_names(&without);
        expected.extend(own.iter().cloned());
        assert_eq!(kinds_and_names(&with), expected, "overlay `{overlay}` + deploy/observability");
        check_objects(&format!("overlay `{overlay}` + observability"), &with);
        check_monitor_fits(&overlay, &with);
    }
}

#[test]
fn the_prometheus_rule_holds_the_plain_rules_file() {
    let operator: Value = serde_yaml::from_str(&read("prometheusrule.yaml")).unwrap();
    assert_eq!(str_at(&operator, "kind"), Some("PrometheusRule"));
    assert_eq!(
        at(&operator, "spec.groups"),
        Some(&plain_groups()),
        "prometheusrule.yaml's spec.groups differ from prometheus-rules.yaml: regenerate it (its header says how)"
    );
}

/// `promtool` (Debian's `prometheus` package; `SG_PROMTOOL` picks another).
fn promtool(args: &[&str]) -> std::process::Output {
    let promtool = std::env::var("SG_PROMTOOL").unwrap_or_else(|_| "promtool".to_owned());
    match Command::new(&promtool).args(args).current_dir(dir()).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{promtool}` is not installed, and the alert rules cannot be checked without it: run \
             `bash scripts/test.sh` (it installs Debian's prometheus package, which has promtool), or \
             install promtool (2.42 or later) yourself"
        ),
        Err(e) => panic!("cannot run `{promtool}`: {e}"),
    }
}

#[test]
fn promtool_checks_the_rules_and_passes_their_unit_tests() {
    let check = promtool(&["check", "rules", "prometheus-rules.yaml"]);
    assert!(
        check.status.success(),
        "promtool check rules prometheus-rules.yaml:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let mut tests: Vec<String> = std::fs::read_dir(dir().join("tests"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| Path::new(f).extension() == Some(OsStr::new("yaml")))
        .map(|f| format!("tests/{f}"))
        .collect();
    tests.sort();
    assert!(!tests.is_empty(), "no promtool tests in deploy/observability/tests/");
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    let run = promtool(&args);
    assert!(
        run.status.success(),
        "promtool test rules {}:\n{}{}",
        tests.join(" "),
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );

    // Each alert is expected to fire by some test (and so also checked quiet before).
    let mut fired = BTreeSet::new();
    for file in &tests {
        let suite: Value = serde_yaml::from_str(&read(file)).unwrap();
        for test in seq_at(&suite, "tests") {
            for case in seq_at(test, "alert_rule_test") {
                if !seq_at(case, "exp_alerts").is_empty() {
                    fired.insert(str_at(case, "alertname").unwrap_or_default().to_owned());
                }
            }
        }
    }
    for alert in alerts() {
        let alert = str_at(&alert, "alert").unwrap();
        assert!(fired.contains(alert), "{alert}: no promtool test expects it to fire");
    }
}

/// deploy/README.md's "Dashboards and alerts" section.
fn readme_section() -> String {
    let readme = std::fs::read_to_string(workspace().join("deploy/README.md")).unwrap();
    let start =
        readme.find("\n## Dashboards and alerts\n").expect("deploy/README.md has a section `## Dashboards and alerts`");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    rest[..end].to_owned()
}

fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn every_alert_is_complete_and_documented() {
    let section = readme_section();
    let squeezed = squeeze(&section);
    let alerts = alerts();
    let names: Vec<&str> = alerts.iter().filter_map(|a| str_at(a, "alert")).collect();
    for required in [
        "VendorErrorRate",
        "CredentialsRejected",
        "WebhookGivenUp",
        "StoreDegraded",
        "OverheadHigh",
        "ConfigReloadRejected",
    ] {
        assert!(names.iter().any(|n| n.contains(required)), "no alert for {required}: {names:?}");
    }
    for alert in &alerts {
        let name = str_at(alert, "alert").unwrap();
        assert!(at(alert, "for").is_some(), "{name}: no `for:`");
        let severity = str_at(alert, "labels.severity").unwrap_or_default();
        assert!(SEVERITIES.contains(&severity), "{name}: severity {severity:?} is none of {SEVERITIES:?}");
        for annotation in ["summary", "description", "runbook"] {
            assert!(
                str_at(alert, &format!("annotations.{annotation}")).is_some_and(|s| !s.trim().is_empty()),
                "{name}: no {annotation} annotation"
            );
        }
        let runbook = str_at(alert, "annotations.runbook").unwrap();
        assert!(
            runbook.contains("deploy/README.md#dashboards-and-alerts"),
            "{name}: the runbook must point at deploy/README.md#dashboards-and-alerts: {runbook}"
        );
        assert!(section.contains(&format!("`{name}`")), "{name} is not in deploy/README.md's Dashboards and alerts");
        let expr = str_at(alert, "expr").unwrap();
        assert!(squeezed.contains(&squeeze(expr)), "{name}: deploy/README.md does not show its expression:\n{expr}");
    }
}

#[test]
fn the_dashboard_covers_traffic_latency_vendors_jobs_store_and_config() {
    let dashboard: serde_json::Value = serde_json::from_str(&read("dashboard.json")).unwrap();
    let mut exprs = Vec::new();
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        assert!(ids.insert(panel["id"].as_u64().expect("a panel id")), "panel ids are unique");
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "every query uses the datasource variable");
            exprs.push(target["expr"].as_str().unwrap_or_default().to_owned());
        }
    }
    assert_eq!(dashboard["uid"], "summary-gateway");
    let all = exprs.join("\n");
    for (topic, metric) in [
        ("request rate and errors by code", "sg_http_requests_total"),
        ("latency percentiles", "sg_http_request_duration_seconds_bucket"),
        ("gateway overhead percentiles", "sg_http_overhead_seconds_bucket"),
        ("cache hit ratio", "sg_cache_lookups_total"),
        ("vendor calls by outcome", "sg_vendor_calls_total"),
        ("pending jobs", "sg_jobs_polling"),
        ("webhook backlog", "sg_webhook_deliveries_total"),
        ("store health", "sg_store_degraded"),
        ("config generation", "sg_config_generation"),
    ] {
        assert!(all.contains(metric), "the dashboard has no panel for {topic} ({metric})");
    }
}
