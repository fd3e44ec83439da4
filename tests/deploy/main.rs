//! The Kubernetes manifests of `deploy/`, rendered the way ops apply them.
//!
//! For every overlay under `deploy/overlays/`, `kubectl kustomize <overlay>` is
//! run and its output checked against what the gateway itself needs: the
//! ConfigMap's `gateway.yaml` (with the container's `SUMMARY_GATEWAY__…`
//! overrides applied) loads with the gateway's own config loader, the probes,
//! Service and Ingress reach `server.listen`, every `*_env` secret is in the
//! container's environment from a Secret, the drain fits in the grace period,
//! the pods run unprivileged, and the autoscaler, disruption budget and (dev)
//! Redis fit together.
//!
//! `kubectl` must be on the PATH (`bash scripts/test.sh` installs Debian's
//! `kubernetes-client` when it is missing); `SG_KUBECTL=/path/to/kubectl`
//! picks another one (CI renders with kubectl 1.20 and a current one).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use gateway_config::Config;
use serde::Deserialize as _;
use serde_yaml::{Mapping, Value};

mod observability;

/// Config fields that hold a secret inline; in Kubernetes they must come from `*_env`.
const INLINE_SECRET_FIELDS: &[&str] =
    &["key", "webhook_secret", "token", "client_id", "client_secret", "callback_token"];

/// Prefix of the gateway's environment overrides (`SUMMARY_GATEWAY__STORE__REDIS_URL`).
const OVERRIDE_PREFIX: &str = gateway_config::ENV_PREFIX;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `deploy/overlays/*` that hold a kustomization, by name.
fn overlays() -> Vec<(String, PathBuf)> {
    let dir = workspace().join("deploy/overlays");
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("kustomization.yaml").is_file())
        .map(|path| (path.file_name().unwrap().to_string_lossy().into_owned(), path))
        .collect();
    found.sort();
    found
}

/// `kubectl kustomize <dir>`, as YAML documents.
fn render(overlay: &str, dir: &Path) -> Vec<Value> {
    let kubectl = std::env::var("SG_KUBECTL").unwrap_or_else(|_| "kubectl".to_owned());
    let output = match Command::new(&kubectl).arg("kustomize").arg(dir).current_dir(workspace()).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{kubectl}` is not installed, and the deploy/ manifests cannot be checked without it: \
             run `bash scripts/test.sh` (it installs Debian's kubernetes-client), or install kubectl \
             (1.20 or later) yourself"
        ),
        Err(e) => panic!("cannot run `{kubectl} kustomize`: {e}"),
    };
    assert!(
        output.status.success(),
        "overlay `{overlay}`: `{kubectl} kustomize {}` failed ({}):\n{}",
        dir.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("kustomize output is UTF-8");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("overlay `{overlay}`: unparsable output: {e}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

// ---- reading manifests -------------------------------------------------------

fn at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

fn str_at<'a>(value: &'a Value, path: &str) -> Option<&'a str> {
    at(value, path).and_then(Value::as_str)
}

fn seq_at<'a>(value: &'a Value, path: &str) -> &'a [Value] {
    at(value, path).and_then(Value::as_sequence).map_or(&[], Vec::as_slice)
}

fn bool_at(value: &Value, path: &str) -> Option<bool> {
    at(value, path).and_then(Value::as_bool)
}

fn u64_at(value: &Value, path: &str) -> Option<u64> {
    at(value, path).and_then(Value::as_u64)
}

fn name(doc: &Value) -> &str {
    str_at(doc, "metadata.name").unwrap_or("?")
}

fn docs_of<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| str_at(d, "kind") == Some(kind)).collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, wanted: &str) -> Option<&'a Value> {
    docs.iter().find(|d| str_at(d, "kind") == Some(kind) && name(d) == wanted)
}

/// `labels` ⊇ `selector` (both string maps).
fn selects(selector: Option<&Value>, labels: Option<&Value>) -> bool {
    let (Some(Value::Mapping(selector)), Some(Value::Mapping(labels))) = (selector, labels) else {
        return false;
    };
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A container port given by number or by name.
fn container_port(container: &Value, port: &Value) -> Option<u64> {
    match port {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok().or_else(|| {
            seq_at(container, "ports")
                .iter()
                .find(|p| str_at(p, "name") == Some(s))
                .and_then(|p| u64_at(p, "containerPort"))
        }),
        _ => None,
    }
}

/// The container port a Service port sends to (`targetPort`, by default `port`).
fn service_target(service_port: &Value, container: &Value) -> Option<u64> {
    at(service_port, "targetPort").or_else(|| at(service_port, "port")).and_then(|p| container_port(container, p))
}

/// The image's name without registry and tag: `registry.example.com/summary-gateway:0.1` → `summary-gateway`.
fn image_name(image: &str) -> &str {
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split(['@', ':']).next().unwrap_or(last)
}

/// Where a container's environment variable comes from.
#[derive(Debug, Clone, PartialEq)]
enum EnvSource {
    Literal(String),
    Secret,
    ConfigMap,
    Other,
}

fn container_env(container: &Value) -> BTreeMap<String, EnvSource> {
    seq_at(container, "env")
        .iter()
        .filter_map(|e| {
            let name = str_at(e, "name")?.to_owned();
            let source = if let Some(v) = at(e, "value") {
                EnvSource::Literal(v.as_str().unwrap_or_default().to_owned())
            } else if at(e, "valueFrom.secretKeyRef").is_some() {
                EnvSource::Secret
            } else if at(e, "valueFrom.configMapKeyRef").is_some() {
                EnvSource::ConfigMap
            } else {
                EnvSource::Other
            };
            Some((name, source))
        })
        .collect()
}

// ---- reading the gateway's config ----------------------------------------------

/// Every `*_env` field under `value`: (YAML path, field, variable name).
fn env_fields(value: &Value, path: &str, out: &mut Vec<(String, String, String)>) {
    match value {
        Value::Mapping(map) => {
            for (k, v) in map {
                let key = k.as_str().unwrap_or_default();
                let child = if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") };
                if key.ends_with("_env") {
                    if let Some(var) = v.as_str() {
                        out.push((child, key.to_owned(), var.to_owned()));
                    }
                } else {
                    env_fields(v, &child, out);
                }
            }
        }
        Value::Sequence(items) => {
            for (i, v) in items.iter().enumerate() {
                env_fields(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Inline secrets (`key:`, `token:`, …) and a Redis password, which belong in the Secret.
fn inline_secrets(value: &Value, path: &str, out: &mut Vec<String>) {
    if let Value::Mapping(map) = value {
        for (k, v) in map {
            let key = k.as_str().unwrap_or_default();
            let child = if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") };
            if INLINE_SECRET_FIELDS.contains(&key) && !v.is_mapping() {
                out.push(child);
            } else if child == "store.redis_url" && v.as_str().is_some_and(|u| u.contains('@')) {
                out.push(format!("{child} (with a password)"));
            } else {
                inline_secrets(v, &child, out);
            }
        }
    }
}

/// Sets `path` in a YAML tree, creating maps on the way (what figment's `__` split does).
fn set_path(root: &mut Value, path: &[String], value: Value) {
    let mut current = root;
    for (i, key) in path.iter().enumerate() {
        if !current.is_mapping() {
            *current = Value::Mapping(Mapping::new());
        }
        let map = current.as_mapping_mut().unwrap();
        let key = Value::String(key.clone());
        if i + 1 == path.len() {
            map.insert(key, value);
            return;
        }
        current = map.entry(key).or_insert(Value::Null);
    }
}

/// A stand-in for the secret in `var` (the `field` naming it) that passes the
/// config's format rules; distinct per variable, as two callers' keys must be.
/// `tls`: the store is configured for TLS, so its URL is `rediss://`.
fn dummy_secret(field: &str, var: &str, tls: bool) -> String {
    if field.starts_with("webhook_secret") {
        let key: Vec<u8> = var.bytes().chain(std::iter::repeat(b'#')).take(32).collect();
        format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key))
    } else if field.ends_with("redis_url") {
        if tls { "rediss://redis.secret.invalid:6380/0" } else { "redis://redis.secret.invalid:6379/0" }.to_owned()
    } else {
        // At least 24 of `A-Za-z0-9_-`: a valid callback token and a header-safe vendor token.
        format!("dummy_{}_{}", var.to_ascii_lowercase(), "x".repeat(24))
    }
}

// ---- the checks ------------------------------------------------------------------

/// Everything wrong with one rendered overlay.
#[allow(clippy::too_many_lines, reason = "one list of checks, in the order deploy/README.md explains them")]
fn check_overlay(overlay: &str, docs: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut fail = |msg: String| problems.push(msg);
    // A problem that leaves nothing further to check.
    macro_rules! give_up {
        ($($arg:tt)*) => {{
            fail(format!($($arg)*));
            return problems;
        }};
    }

    // The gateway Deployment and its container: the one running the summary-gateway image.
    let gateways: Vec<(&Value, &Value)> = docs_of(docs, "Deployment")
        .into_iter()
        .flat_map(|d| seq_at(d, "spec.template.spec.containers").iter().map(move |c| (d, c)))
        .filter(|(_, c)| str_at(c, "image").map(image_name) == Some("summary-gateway"))
        .collect();
    let [(deployment, container)] = gateways.as_slice() else {
        give_up!(
            "expected exactly one Deployment container running the summary-gateway image, found {}",
            gateways.len()
        )
    };
    let (deployment, container) = (*deployment, *container);
    let pod = at(deployment, "spec.template").unwrap_or(&Value::Null);
    let pod_labels = at(pod, "metadata.labels");
    let env = container_env(container);

    // The config file: --config <path> → a volumeMount → a ConfigMap key.
    let args: Vec<&str> = seq_at(container, "args").iter().filter_map(Value::as_str).collect();
    let config_path = args
        .iter()
        .position(|a| *a == "--config")
        .and_then(|i| args.get(i + 1).copied())
        .or_else(|| args.iter().find_map(|a| a.strip_prefix("--config=")))
        .map(str::to_owned)
        .or_else(|| match env.get("SUMMARY_GATEWAY_CONFIG") {
            Some(EnvSource::Literal(p)) => Some(p.clone()),
            _ => None,
        });
    let Some(config_path) = config_path else {
        give_up!(
            "Deployment {}: container `{}` gives no `--config <path>` in args (nor SUMMARY_GATEWAY_CONFIG)",
            name(deployment),
            str_at(container, "name").unwrap_or("?")
        )
    };
    let mount = seq_at(container, "volumeMounts").iter().find_map(|m| {
        let dir = str_at(m, "mountPath")?.trim_end_matches('/');
        let file = config_path.strip_prefix(dir)?.strip_prefix('/')?;
        Some((m, file.to_owned()))
    });
    let Some((mount, file)) = mount else {
        give_up!("--config {config_path}: no volumeMount of the gateway container holds it")
    };
    if bool_at(mount, "readOnly") != Some(true) {
        fail(format!("the config volumeMount at {} is not readOnly", str_at(mount, "mountPath").unwrap_or("?")));
    }
    let volume_name = str_at(mount, "name").unwrap_or("?");
    let volume = seq_at(pod, "spec.volumes").iter().find(|v| str_at(v, "name") == Some(volume_name));
    let Some(configmap_name) = volume.and_then(|v| str_at(v, "configMap.name")) else {
        give_up!("volume `{volume_name}` (holding --config {config_path}) is not a configMap volume")
    };
    let items = volume.map(|v| seq_at(v, "configMap.items")).unwrap_or_default();
    let key = if items.is_empty() {
        Some(file.as_str())
    } else {
        items.iter().find(|i| str_at(i, "path") == Some(file.as_str())).and_then(|i| str_at(i, "key"))
    };
    let yaml = find(docs, "ConfigMap", configmap_name).and_then(|cm| at(cm, "data")?.get(key?)?.as_str());
    let Some(yaml) = yaml else {
        give_up!("--config {config_path}: ConfigMap `{configmap_name}` (key {key:?}) is not in the rendered manifests")
    };

    // The config as the container sees it: the file, then the SUMMARY_GATEWAY__… overrides.
    let raw: Value = match serde_yaml::from_str(yaml) {
        Ok(v) => v,
        Err(e) => give_up!("ConfigMap `{configmap_name}` key {file}: not YAML: {e}"),
    };
    let mut inline = Vec::new();
    inline_secrets(&raw, "", &mut inline);
    for path in inline {
        fail(format!(
            "gateway.yaml has the secret `{path}` inline; use its `*_env` form and the Secret (deploy/README.md)"
        ));
    }
    // A `store.tls` (in the file or from an override) means the Secret's URL is `rediss://`.
    let tls_store = at(&raw, "store.tls").is_some()
        || env.keys().any(|var| var.starts_with(&format!("{OVERRIDE_PREFIX}STORE__TLS__")));
    let mut effective = raw.clone();
    for (var, source) in &env {
        let Some(rest) = var.strip_prefix(OVERRIDE_PREFIX) else { continue };
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let value = match source {
            EnvSource::Literal(v) => {
                if path.last().is_some_and(|p| p == "redis_url") && v.contains('@') {
                    fail(format!("env {var} holds a Redis password in the manifest; take it from the Secret"));
                }
                serde_yaml::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.clone()))
            }
            _ => Value::String(dummy_secret(path.last().map_or("", String::as_str), var, tls_store)),
        };
        set_path(&mut effective, &path, value);
    }

    // Every *_env must be in the container's environment, from a Secret.
    let mut fields = Vec::new();
    env_fields(&effective, "", &mut fields);
    let field_of: BTreeMap<&str, &str> = fields.iter().map(|(_, f, v)| (v.as_str(), f.as_str())).collect();
    // What the container would see: literals as given, Secret values as format-valid dummies.
    let values: BTreeMap<String, String> = env
        .iter()
        .filter_map(|(var, source)| match source {
            EnvSource::Literal(v) => Some((var.clone(), v.clone())),
            EnvSource::Secret | EnvSource::ConfigMap => {
                Some((var.clone(), dummy_secret(field_of.get(var.as_str()).copied().unwrap_or(""), var, tls_store)))
            }
            EnvSource::Other => None,
        })
        .collect();
    for (path, _, var) in &fields {
        match env.get(var) {
            Some(EnvSource::Secret) => {}
            Some(other) => fail(format!(
                "`{path}: {var}` is a secret, but the container's env {var} is {other:?}, not a secretKeyRef"
            )),
            None => fail(format!(
                "`{path}: {var}` has no container env {var} (add it with valueFrom.secretKeyRef to deployment.yaml)"
            )),
        }
    }
    let lookup = move |var: &str| values.get(var).cloned();
    if let Err(errors) = Config::from_yaml(&providers::registry::config_types(), yaml, &lookup) {
        fail(format!("ConfigMap `{configmap_name}` key {file} is not a valid gateway config:\n{errors}"));
    }
    let config = match Config::from_yaml(
        &providers::registry::config_types(),
        &serde_yaml::to_string(&effective).unwrap(),
        &lookup,
    ) {
        Ok(config) => config,
        Err(errors) => give_up!("gateway.yaml with the container's SUMMARY_GATEWAY__ overrides is invalid:\n{errors}"),
    };
    for (provider_name, provider) in &config.providers {
        if let Err(errors) = providers::Provider::from_config(provider) {
            fail(format!("providers.{provider_name} is refused by its adapter (check-config): {}", errors.join("; ")));
        }
    }

    // The store's TLS files are mounted read-only from a Secret volume.
    let tls = &config.store.tls;
    for (key, file) in [("ca_file", &tls.ca_file), ("cert_file", &tls.cert_file), ("key_file", &tls.key_file)] {
        let Some(file) = file.as_ref().and_then(|f| f.to_str()) else { continue };
        let mount = seq_at(container, "volumeMounts").iter().find(|m| {
            str_at(m, "mountPath").is_some_and(|dir| file.starts_with(&format!("{}/", dir.trim_end_matches('/'))))
        });
        let Some(mount) = mount else {
            fail(format!("store.tls.{key} {file}: no volumeMount of the gateway container holds it"));
            continue;
        };
        let volume_name = str_at(mount, "name").unwrap_or("?");
        let volume = seq_at(pod, "spec.volumes").iter().find(|v| str_at(v, "name") == Some(volume_name));
        if volume.and_then(|v| str_at(v, "secret.secretName")).is_none() {
            fail(format!("store.tls.{key} {file}: volume `{volume_name}` is not a Secret volume"));
        }
        if bool_at(mount, "readOnly") != Some(true) {
            fail(format!("store.tls.{key} {file}: its volumeMount is not readOnly"));
        }
        let items = volume.map(|v| seq_at(v, "secret.items")).unwrap_or_default();
        let name = Path::new(file).file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if !items.is_empty() && !items.iter().any(|i| str_at(i, "path") == Some(name)) {
            fail(format!("store.tls.{key} {file}: the Secret volume `{volume_name}` has no item at path {name}"));
        }
    }

    // server.listen ↔ container port ↔ probes ↔ Service ↔ Ingress.
    let listen = config.server.listen;
    let port = u64::from(listen.port());
    if !listen.ip().is_unspecified() {
        fail(format!("server.listen is {listen}: the kubelet and the Service cannot reach it (use 0.0.0.0:{port})"));
    }
    if !seq_at(container, "ports").iter().any(|p| u64_at(p, "containerPort") == Some(port)) {
        fail(format!("no containerPort {port} (server.listen) on the gateway container"));
    }
    for (probe, wanted) in
        [("readinessProbe", Some("/readyz")), ("livenessProbe", Some("/healthz")), ("startupProbe", None)]
    {
        let Some(p) = at(container, probe) else {
            if wanted.is_some() {
                fail(format!("the gateway container has no {probe}"));
            }
            continue;
        };
        let path = str_at(p, "httpGet.path");
        if let Some(wanted) = wanted
            && path != Some(wanted)
        {
            fail(format!("{probe} must be httpGet {wanted}, is {path:?}"));
        }
        let probe_port = at(p, "httpGet.port").and_then(|v| container_port(container, v));
        if probe_port != Some(port) {
            fail(format!("{probe} probes port {probe_port:?}, server.listen is {port}"));
        }
    }
    if let Some(metrics_port) =
        at(pod, "metadata.annotations").and_then(|a| a.get("prometheus.io/port")).and_then(Value::as_str)
        && metrics_port != port.to_string()
    {
        fail(format!("annotation prometheus.io/port is {metrics_port}, /metrics is served on {port}"));
    }

    let services: Vec<&Value> =
        docs_of(docs, "Service").into_iter().filter(|s| selects(at(s, "spec.selector"), pod_labels)).collect();
    if services.is_empty() {
        fail("no Service selects the gateway pods".to_owned());
    }
    for service in &services {
        if !seq_at(service, "spec.ports").iter().any(|p| service_target(p, container) == Some(port)) {
            fail(format!("Service {}: no port's targetPort reaches the gateway's port {port}", name(service)));
        }
    }
    let ingresses = docs_of(docs, "Ingress");
    if ingresses.is_empty() {
        fail("no Ingress".to_owned());
    }
    let mut hosts = Vec::new();
    for ingress in &ingresses {
        let mut backends: Vec<&Value> = at(ingress, "spec.defaultBackend").into_iter().collect();
        for rule in seq_at(ingress, "spec.rules") {
            hosts.extend(str_at(rule, "host"));
            backends.extend(seq_at(rule, "http.paths").iter().filter_map(|p| at(p, "backend")));
        }
        if backends.is_empty() {
            fail(format!("Ingress {}: no backend", name(ingress)));
        }
        for backend in backends {
            let service_name = str_at(backend, "service.name").unwrap_or("?");
            let Some(service) = services.iter().find(|s| name(s) == service_name) else {
                fail(format!(
                    "Ingress {}: backend Service `{service_name}` is not a Service of the gateway pods",
                    name(ingress)
                ));
                continue;
            };
            let service_port = seq_at(service, "spec.ports").iter().find(|p| {
                at(backend, "service.port.number").is_some_and(|n| at(p, "port") == Some(n))
                    || str_at(backend, "service.port.name").is_some_and(|n| str_at(p, "name") == Some(n))
            });
            if service_port.and_then(|p| service_target(p, container)) != Some(port) {
                let given = str_at(backend, "service.port.name")
                    .map(ToOwned::to_owned)
                    .or_else(|| u64_at(backend, "service.port.number").map(|n| n.to_string()))
                    .unwrap_or_else(|| "(none)".to_owned());
                fail(format!(
                    "Ingress {}: backend port {given} of Service `{service_name}` does not reach the gateway's port {port}",
                    name(ingress)
                ));
            }
        }
    }
    if let Some(host) = config.server.public_url.as_ref().and_then(|u| u.host_str())
        && !hosts.contains(&host)
    {
        fail(format!(
            "server.public_url host {host} (CommBox calls back there) is not an Ingress host (hosts: {hosts:?})"
        ));
    }

    // Rollouts: the drain fits in the grace period; readiness sees it in time; no capacity dip.
    let spec = at(pod, "spec").unwrap_or(&Value::Null);
    let (delay, drain) = (config.server.shutdown_delay, config.server.drain_timeout);
    let grace = u64_at(spec, "terminationGracePeriodSeconds").unwrap_or(30);
    if Duration::from_secs(grace) <= delay + drain {
        fail(format!(
            "terminationGracePeriodSeconds {grace} must exceed server.shutdown_delay ({delay:?}) + \
             server.drain_timeout ({drain:?}), or the kubelet kills the gateway mid-drain"
        ));
    }
    if delay.is_zero() {
        fail("server.shutdown_delay is 0s: a pod stops listening while endpoints still route to it".to_owned());
    }
    if let Some(readiness) = at(container, "readinessProbe") {
        let noticed =
            u64_at(readiness, "periodSeconds").unwrap_or(10) * u64_at(readiness, "failureThreshold").unwrap_or(3);
        if Duration::from_secs(noticed) > delay {
            fail(format!(
                "readinessProbe needs up to {noticed}s (periodSeconds x failureThreshold) to see the drain's 503, \
                 longer than server.shutdown_delay ({delay:?})"
            ));
        }
    }
    let max_unavailable = at(deployment, "spec.strategy.rollingUpdate.maxUnavailable");
    if !matches!(max_unavailable, Some(Value::Number(n)) if n.as_u64() == Some(0))
        && max_unavailable.and_then(Value::as_str) != Some("0%")
    {
        fail(format!(
            "Deployment {}: rollingUpdate.maxUnavailable must be 0, is {max_unavailable:?}",
            name(deployment)
        ));
    }

    // Scaling: the HPA drives this Deployment on CPU; the PDB covers these pods.
    let hpas: Vec<&Value> = docs_of(docs, "HorizontalPodAutoscaler")
        .into_iter()
        .filter(|h| {
            str_at(h, "spec.scaleTargetRef.kind") == Some("Deployment")
                && str_at(h, "spec.scaleTargetRef.name") == Some(name(deployment))
        })
        .collect();
    let mut max_replicas = u64_at(deployment, "spec.replicas").unwrap_or(1);
    let mut min_replicas = max_replicas;
    match hpas.as_slice() {
        [hpa] => {
            if str_at(hpa, "apiVersion") != Some("autoscaling/v2") {
                fail(format!("HorizontalPodAutoscaler {} is not autoscaling/v2", name(hpa)));
            }
            min_replicas = u64_at(hpa, "spec.minReplicas").unwrap_or(1);
            max_replicas = u64_at(hpa, "spec.maxReplicas").unwrap_or(0);
            if max_replicas < min_replicas {
                fail(format!("HorizontalPodAutoscaler: maxReplicas {max_replicas} < minReplicas {min_replicas}"));
            }
            if !seq_at(hpa, "spec.metrics")
                .iter()
                .any(|m| str_at(m, "type") == Some("Resource") && str_at(m, "resource.name") == Some("cpu"))
            {
                fail("HorizontalPodAutoscaler: no CPU resource metric".to_owned());
            }
            if at(deployment, "spec.replicas").is_some() {
                fail(format!(
                    "Deployment {} sets replicas although an HPA scales it: every apply would reset the count",
                    name(deployment)
                ));
            }
        }
        [] => fail(format!("no HorizontalPodAutoscaler whose scaleTargetRef is Deployment {}", name(deployment))),
        _ => fail(format!("several HorizontalPodAutoscalers target Deployment {}", name(deployment))),
    }
    let pdbs: Vec<&Value> = docs_of(docs, "PodDisruptionBudget")
        .into_iter()
        .filter(|p| selects(at(p, "spec.selector.matchLabels"), pod_labels))
        .collect();
    match pdbs.as_slice() {
        [pdb] => {
            if str_at(pdb, "apiVersion") != Some("policy/v1") {
                fail(format!("PodDisruptionBudget {} is not policy/v1", name(pdb)));
            }
            match (at(pdb, "spec.minAvailable"), at(pdb, "spec.maxUnavailable")) {
                (Some(Value::Number(n)), None) if n.as_u64().is_some_and(|n| n >= min_replicas) => fail(format!(
                    "PodDisruptionBudget minAvailable {n} >= minReplicas {min_replicas}: node drains would block"
                )),
                (Some(_), None) | (None, Some(_)) => {}
                _ => fail("PodDisruptionBudget: give one of minAvailable or maxUnavailable".to_owned()),
            }
        }
        [] => fail("no PodDisruptionBudget's selector.matchLabels matches the gateway pod labels".to_owned()),
        _ => fail("several PodDisruptionBudgets select the gateway pods".to_owned()),
    }

    // The store: several replicas need the shared Redis; an inline URL must point at a Service here.
    match config.store.redis_url.as_ref().map(|u| u.expose().clone()) {
        None if max_replicas > 1 => fail(format!(
            "up to {max_replicas} replicas but no store.redis_url (nor SUMMARY_GATEWAY__STORE__REDIS_URL): \
             the embedded store is one replica only"
        )),
        None => {}
        // From the Secret ops create: nothing more to check here.
        Some(_) if env.get("SUMMARY_GATEWAY__STORE__REDIS_URL") == Some(&EnvSource::Secret) => {}
        Some(url) => check_inline_redis(&url, docs, &mut fail),
    }
    if overlay == "dev" {
        let redis_labels: Vec<&Value> = docs_of(docs, "Deployment")
            .into_iter()
            .filter(|d| is_redis(d))
            .filter_map(|d| at(d, "spec.template.metadata.labels"))
            .collect();
        if redis_labels.is_empty() {
            fail("the dev overlay has no Redis Deployment (redis image)".to_owned());
        } else if !docs_of(docs, "Service")
            .iter()
            .any(|s| redis_labels.iter().any(|l| selects(at(s, "spec.selector"), Some(l))))
        {
            fail("the dev overlay has no Service in front of its Redis Deployment".to_owned());
        }
    }

    // Every pod of the overlay (gateway and Redis alike) runs unprivileged and sized.
    for d in docs_of(docs, "Deployment") {
        pod_problems(d, &mut fail);
    }
    problems
}

fn is_redis(deployment: &Value) -> bool {
    seq_at(deployment, "spec.template.spec.containers")
        .iter()
        .any(|c| str_at(c, "image").map(image_name) == Some("redis"))
}

/// An inline `redis://host:port/db` must name a Service of this overlay that selects a Redis Deployment.
fn check_inline_redis(url: &str, docs: &[Value], fail: &mut impl FnMut(String)) {
    let parsed = match url::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return fail(format!("store.redis_url {url}: {e}")),
    };
    let host = parsed.host_str().unwrap_or_default();
    // `redis`, `redis.ns`, `redis.ns.svc.cluster.local`: the Service is the first label.
    let service_name = host.split('.').next().unwrap_or_default();
    let port = u64::from(parsed.port().unwrap_or(6379));
    let Some(service) = find(docs, "Service", service_name) else {
        return fail(format!("store.redis_url points at {host}, but this overlay has no Service `{service_name}`"));
    };
    if !seq_at(service, "spec.ports").iter().any(|p| u64_at(p, "port") == Some(port)) {
        fail(format!("Service {service_name} has no port {port} (store.redis_url)"));
    }
    let selector = at(service, "spec.selector");
    if !docs_of(docs, "Deployment")
        .iter()
        .any(|d| is_redis(d) && selects(selector, at(d, "spec.template.metadata.labels")))
    {
        fail(format!("Service {service_name} (store.redis_url) selects no Redis Deployment"));
    }
}

/// Security context and resources of every container of a Deployment.
fn pod_problems(deployment: &Value, fail: &mut impl FnMut(String)) {
    let d = name(deployment);
    let spec = at(deployment, "spec.template.spec").unwrap_or(&Value::Null);
    let pod = at(spec, "securityContext").unwrap_or(&Value::Null);
    if bool_at(pod, "runAsNonRoot") != Some(true) {
        fail(format!("Deployment {d}: pod securityContext.runAsNonRoot must be true"));
    }
    if bool_at(spec, "automountServiceAccountToken") != Some(false) {
        fail(format!("Deployment {d}: automountServiceAccountToken must be false (nothing here calls the API)"));
    }
    for c in seq_at(spec, "containers") {
        let cname = str_at(c, "name").unwrap_or("?");
        let sc = at(c, "securityContext").unwrap_or(&Value::Null);
        let either = |field: &str| at(sc, field).or_else(|| at(pod, field));
        if either("runAsNonRoot").and_then(Value::as_bool) != Some(true) {
            fail(format!("Deployment {d}, container {cname}: runAsNonRoot must be true"));
        }
        match either("runAsUser").and_then(Value::as_u64) {
            Some(uid) if uid != 0 => {}
            uid => fail(format!("Deployment {d}, container {cname}: runAsUser must be a non-zero uid, is {uid:?}")),
        }
        if bool_at(sc, "readOnlyRootFilesystem") != Some(true) {
            fail(format!("Deployment {d}, container {cname}: readOnlyRootFilesystem must be true"));
        }
        if bool_at(sc, "allowPrivilegeEscalation") != Some(false) {
            fail(format!("Deployment {d}, container {cname}: allowPrivilegeEscalation must be false"));
        }
        if bool_at(sc, "privileged") == Some(true) {
            fail(format!("Deployment {d}, container {cname}: privileged"));
        }
        if !seq_at(sc, "capabilities.drop").iter().any(|c| c.as_str() == Some("ALL")) {
            fail(format!("Deployment {d}, container {cname}: capabilities.drop must contain ALL"));
        }
        if either("seccompProfile").and_then(|s| str_at(s, "type")) != Some("RuntimeDefault") {
            fail(format!("Deployment {d}, container {cname}: seccompProfile.type must be RuntimeDefault"));
        }
        for field in ["resources.requests.cpu", "resources.requests.memory", "resources.limits.memory"] {
            if at(c, field).is_none() {
                fail(format!("Deployment {d}, container {cname}: no {field}"));
            }
        }
    }
}

#[test]
fn every_overlay_renders_and_fits_the_gateway() {
    let overlays = overlays();
    let names: Vec<&str> = overlays.iter().map(|(n, _)| n.as_str()).collect();
    for wanted in ["dev", "prod", "managed-redis"] {
        assert!(names.contains(&wanted), "deploy/overlays/{wanted} is missing (found: {names:?})");
    }
    let mut report = Vec::new();
    for (overlay, dir) in &overlays {
        let docs = render(overlay, dir);
        let mut seen = std::collections::BTreeSet::new();
        report.extend(
            check_overlay(overlay, &docs)
                .into_iter()
                .filter(|p| seen.insert(p.clone())) // one Ingress path after another says the same
                .map(|p| format!("overlay `{overlay}`: {p}")),
        );
    }
    assert!(report.is_empty(), "deploy/ manifests have {} problem(s):\n{}", report.len(), report.join("\n"));
}

/// The base must not carry a Secret: ops create `summary-gateway-secrets` themselves.
#[test]
fn no_overlay_ships_a_secret() {
    for (overlay, dir) in overlays() {
        let docs = render(&overlay, &dir);
        let secrets: Vec<&str> = docs_of(&docs, "Secret").into_iter().map(name).collect();
        assert!(secrets.is_empty(), "overlay `{overlay}` renders Secret(s) {secrets:?}; secrets are created by ops");
    }
}

/// The image builds with the Rust the repository pins (`rust-toolchain.toml`), so
/// what CI tests is what ships.
#[test]
fn the_dockerfile_builds_with_the_pinned_toolchain() {
    let root = workspace();
    let toolchain = std::fs::read_to_string(root.join("rust-toolchain.toml")).unwrap();
    let channel = toolchain
        .lines()
        .find_map(|l| l.trim().strip_prefix("channel = "))
        .map(|v| v.trim_matches('"').to_owned())
        .expect("rust-toolchain.toml names a channel");
    let dockerfile = std::fs::read_to_string(root.join("deploy/Dockerfile")).unwrap();
    let builder = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("FROM rust:"))
        .and_then(|l| l.split_whitespace().next())
        .expect("the Dockerfile builds FROM rust:<version>");
    assert_eq!(builder, format!("{channel}-bookworm"), "deploy/Dockerfile and rust-toolchain.toml disagree");
}
