//! Live reload (API.md "Operating without restarts"): a new configuration is
//! swapped in whole for new requests, or rejected whole; requests in flight
//! finish on theirs; providers it leaves unchanged keep their state; sections
//! that need a restart are reported and kept. In process ([`App::reload`]) and
//! through the real binary (SIGHUP, the file rewritten, a ConfigMap-style
//! symlink swap).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use gateway_config::Config;
use providers::yeastar::simulator::{self as yeastar, YeastarSimulator};
use serde_json::{Value, json};

use crate::common::{
    GatewayProcess, KEY, NARROW_KEY, Setup, TestGateway, client, commbox_yaml, config_yaml, docs_request,
    elevateai_yaml, eventually, expect_problem,
};

const ADDED_KEY: &str = "added-by-reload-key-0123456789";

fn load(yaml: &str) -> Config {
    Config::from_yaml(&providers::registry::config_types(), yaml, &|_| None).unwrap_or_else(|e| panic!("{e}"))
}

/// `yaml` with a caller `added` (key [`ADDED_KEY`]) and without `narrow`.
fn with_added_caller(yaml: &str) -> String {
    let out = yaml.replace(
        &format!("    narrow:\n      key: {NARROW_KEY}\n      providers: [pbx-other]\n"),
        &format!("    added:\n      key: {ADDED_KEY}\n      providers: [pbx]\n"),
    );
    assert_ne!(out, yaml, "the caller was swapped");
    out
}

async fn status(gw: &TestGateway, key: &str, path: &str) -> u16 {
    gw.client.get(format!("{}{path}", gw.url)).bearer_auth(key).send().await.unwrap().status().as_u16()
}

async fn readyz(url: &str) -> Value {
    client().get(format!("{url}/readyz")).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn a_reload_swaps_callers_and_providers_for_new_requests_and_keeps_unchanged_providers() {
    let gw = TestGateway::start().await;
    let before = gw.app.live();
    let ready = readyz(&gw.url).await;
    assert_eq!(ready["config"]["generation"], 1, "{ready}");
    assert_eq!(ready["config"]["fingerprint"], before.fingerprint.as_str());
    assert_eq!(status(&gw, NARROW_KEY, "/v1/providers").await, 200);
    assert_eq!(status(&gw, ADDED_KEY, "/v1/providers").await, 401);

    // A caller swapped, and pbx-other retuned (its timeout); pbx as it was.
    let yaml = with_added_caller(&gw.yaml).replacen(
        "  pbx-other:\n    type: yeastar\n",
        "  pbx-other:\n    type: yeastar\n    timeout: 7s\n",
        1,
    );
    let done = gw.app.reload(load(&yaml)).unwrap();
    assert!(done.changed && done.needs_restart.is_empty(), "{done:?}");
    assert_eq!(done.generation, 2);
    let after = gw.app.live();
    assert!(
        Arc::ptr_eq(&before.providers["pbx"], &after.providers["pbx"]),
        "an unchanged provider is kept, state and all"
    );
    assert!(!Arc::ptr_eq(&before.providers["pbx-other"], &after.providers["pbx-other"]), "a changed one is rebuilt");

    assert_eq!(status(&gw, ADDED_KEY, "/v1/providers").await, 200, "the new key works at once");
    let body = expect_problem(
        gw.client.get(format!("{}/v1/providers", gw.url)).bearer_auth(NARROW_KEY).send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    assert!(!body.to_string().contains(NARROW_KEY), "{body}");
    // The new caller's scope holds.
    let r = gw
        .client
        .post(format!("{}/v1/summaries", gw.url))
        .bearer_auth(ADDED_KEY)
        .json(&json!({"provider": "pbx-other", "conversation": {"id": "x", "party": "caller", "extension_id": 1}}))
        .send()
        .await
        .unwrap();
    expect_problem(r, 403, "forbidden").await;

    let ready = readyz(&gw.url).await;
    assert_eq!(ready["config"]["generation"], 2, "{ready}");
    assert_eq!(ready["config"]["fingerprint"], after.fingerprint.as_str());
    assert_ne!(after.fingerprint, before.fingerprint);

    // The same configuration again: nothing changes, not even the generation.
    let again = gw.app.reload(load(&yaml)).unwrap();
    assert!(!again.changed, "{again:?}");
    assert_eq!(again.generation, 2);
    assert!(Arc::ptr_eq(&gw.app.live().providers["pbx-other"], &after.providers["pbx-other"]));

    let metrics = gw.client.get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "sg_config_generation 2"), "{metrics}");
    let fingerprint = u64::from_str_radix(&after.fingerprint, 16).unwrap();
    assert!(metrics.lines().any(|l| l == format!("sg_config_fingerprint {fingerprint}")), "{metrics}");
    assert!(!metrics.contains(ADDED_KEY));
}

#[tokio::test]
async fn a_bad_configuration_is_rejected_whole_and_a_restart_only_change_is_reported_and_kept() {
    let gw = TestGateway::start().await;
    // A new caller (valid) and a provider the adapter refuses: nothing of it applies.
    let bad = with_added_caller(&gw.yaml).replacen("    base_url: ", "    languages: [xx-nope]\n    base_url: ", 1);
    let problems = match Config::from_yaml(&providers::registry::config_types(), &bad, &|_| None) {
        Err(errors) => errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        Ok(config) => gw.app.reload(config).expect_err("a provider the adapter refuses"),
    };
    assert!(problems.iter().any(|p| p.contains("providers.pbx")), "{problems:?}");
    assert_eq!(gw.app.live().generation, 1);
    assert_eq!(status(&gw, ADDED_KEY, "/v1/providers").await, 401, "the valid part was not applied either");
    assert_eq!(status(&gw, NARROW_KEY, "/v1/providers").await, 200);

    // A changed request timeout needs a restart: reported, and the running value stays.
    let yaml = with_added_caller(&gw.yaml).replacen("server:\n", "server:\n  request_timeout: 5s\n", 1);
    let done = gw.app.reload(load(&yaml)).unwrap();
    assert_eq!(done.needs_restart, ["server"], "{done:?}");
    assert!(done.changed, "the callers did change");
    let live = gw.app.live();
    assert_eq!(live.config.server, gw.app.config.server, "the running server section stays");
    assert_eq!(status(&gw, ADDED_KEY, "/v1/providers").await, 200);
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_its_configuration_when_a_reload_removes_its_provider() {
    let gw = TestGateway::start_with(Setup {
        sim: yeastar::SimOptions { latency: Duration::from_millis(300), ..yeastar::SimOptions::default() },
        ..Setup::default()
    })
    .await;
    let in_flight =
        tokio::spawn(gw.client.post(format!("{}/v1/summaries", gw.url)).bearer_auth(KEY).json(&docs_request()).send());
    let sim = gw.sim.clone();
    eventually("the request at the vendor", move || sim.stats().logins + sim.stats().summary_calls > 0).await;

    // pbx removed (narrow's scope moved to the remaining one).
    let start = gw.yaml.find("  pbx:\n").unwrap();
    let end = gw.yaml.find("  pbx-other:\n").unwrap();
    let yaml = format!("{}{}", &gw.yaml[..start], &gw.yaml[end..]);
    gw.app.reload(load(&yaml)).unwrap();

    let r = in_flight.await.unwrap().unwrap();
    assert_eq!(r.status(), 200, "the request that started before the reload is served by its provider");
    expect_problem(gw.summarize(&docs_request()).await, 422, "unknown_provider").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloading_under_load_drops_no_request() {
    let gw = Arc::new(TestGateway::start().await);
    assert_eq!(gw.summarize(&docs_request()).await.status(), 200, "the cache holds it from now on");
    let configs = [
        load(&gw.yaml),
        load(&with_added_caller(&gw.yaml).replacen(
            "  pbx-other:\n    type: yeastar\n",
            "  pbx-other:\n    type: yeastar\n    timeout: 9s\n",
            1,
        )),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load_tasks: Vec<_> = (0..8)
        .map(|i| {
            let (gw, stop, served, failed) =
                (Arc::clone(&gw), Arc::clone(&stop), Arc::clone(&served), Arc::clone(&failed));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r = if i % 2 == 0 {
                        gw.summarize(&docs_request()).await
                    } else {
                        gw.get("/v1/providers").send().await.unwrap()
                    };
                    if r.status() == 200 {
                        served.fetch_add(1, Ordering::Relaxed);
                    } else {
                        eprintln!("{} {}", r.status(), r.text().await.unwrap_or_default());
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // Reload, alternating, as soon as the previous one is in and requests have been served since.
    let mut reloads = 0;
    while reloads < 40 {
        let seen = served.load(Ordering::Relaxed);
        let served_now = Arc::clone(&served);
        eventually("requests between reloads", move || served_now.load(Ordering::Relaxed) > seen + 20).await;
        let done = gw.app.reload(configs[(reloads + 1) % 2].clone()).unwrap();
        assert!(done.changed);
        reloads += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load_tasks {
        task.await.unwrap();
    }
    let (served, failed) = (served.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{reloads} reloads under load: {served} requests served, {failed} failed");
    assert_eq!(failed, 0, "no request fails across {reloads} reloads");
    assert_eq!(gw.app.live().generation, 41);
}

/// Waits until the process has logged `needle` `n` times.
async fn logged(p: &GatewayProcess, needle: &str, n: usize) {
    eventually(&format!("{n}× `{needle}` in the log"), || p.output().matches(needle).count() >= n).await;
}

/// The binary's configuration: pbx at the Yeastar simulator, the others unreachable.
fn binary_yaml(sim: &yeastar::RunningSimulator) -> String {
    format!(
        "{}{}{}",
        config_yaml(&sim.base_url(), "", ""),
        commbox_yaml("http://127.0.0.1:9", ""),
        elevateai_yaml("http://127.0.0.1:9", "")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_on_sighup_and_when_its_configmap_is_swapped() {
    let sim = YeastarSimulator::start(yeastar::SimOptions::default()).await.unwrap();
    let yaml = binary_yaml(&sim);
    // A ConfigMap volume: config.yaml -> ..data/config.yaml, ..data -> ..v1.
    let dir = tempfile::tempdir().unwrap();
    let version = |n: u32, text: &str| {
        let v = dir.path().join(format!("..v{n}"));
        std::fs::create_dir(&v).unwrap();
        std::fs::write(v.join("config.yaml"), text).unwrap();
    };
    let swap_to = |n: u32| {
        let tmp = dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(format!("..v{n}"), &tmp).unwrap();
        std::fs::rename(&tmp, dir.path().join("..data")).unwrap();
    };
    version(1, &yaml);
    swap_to(1);
    let config = dir.path().join("config.yaml");
    std::os::unix::fs::symlink("..data/config.yaml", &config).unwrap();
    let mut gw = GatewayProcess::spawn(&config, &[]);
    let url = gw.url();
    let http = client();
    let providers = |key: &'static str| http.get(format!("{url}/v1/providers")).bearer_auth(key).send();
    assert_eq!(providers(ADDED_KEY).await.unwrap().status(), 401);

    // 1. The ConfigMap is updated: Kubernetes swaps `..data`.
    version(2, &with_added_caller(&yaml));
    swap_to(2);
    logged(&gw, "configuration reloaded: new requests", 1).await;
    assert_eq!(providers(ADDED_KEY).await.unwrap().status(), 200);
    assert_eq!(providers(NARROW_KEY).await.unwrap().status(), 401);
    assert_eq!(readyz(&url).await["config"]["generation"], 2);

    // 2. A broken one, then SIGHUP: rejected whole (each time), the running one stays.
    version(3, &with_added_caller(&yaml).replacen("    type: yeastar\n", "    type: yeastar\n    timeout: soon\n", 1));
    swap_to(3);
    logged(&gw, "configuration reload rejected whole", 1).await;
    let hup = std::process::Command::new("kill").args(["-HUP", &gw.pid().to_string()]).status().unwrap();
    assert!(hup.success());
    logged(&gw, "configuration reload rejected whole", 2).await;
    assert!(gw.output().contains("providers.pbx.timeout"), "the problem with its path:\n{}", gw.output());
    assert_eq!(providers(ADDED_KEY).await.unwrap().status(), 200, "still generation 2");
    let metrics = http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("sg_config_reload_total{result=\"rejected\"} 2"), "{metrics}");
    assert!(metrics.contains("sg_config_reload_total{result=\"applied\"} 1"), "{metrics}");
    assert!(metrics.contains("sg_config_generation 2"), "{metrics}");

    // 3. Fixed, with the listen address changed: applied; the address needs a restart.
    version(4, &with_added_caller(&yaml).replacen("  listen: 127.0.0.1:0\n", "  listen: 127.0.0.1:1\n", 1));
    swap_to(4);
    logged(&gw, "`server` changed but needs a restart", 1).await;
    assert_eq!(providers(ADDED_KEY).await.unwrap().status(), 200, "served where it was");
    let output = gw.output();
    assert!(!output.contains(ADDED_KEY) && !output.contains(KEY), "no key in the logs");
    assert_eq!(gw.terminate(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_when_a_plain_config_file_is_replaced() {
    let sim = YeastarSimulator::start(yeastar::SimOptions::default()).await.unwrap();
    let yaml = binary_yaml(&sim);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, &yaml).unwrap();
    let mut gw = GatewayProcess::spawn(&config, &[]);
    let url = gw.url();
    // An editor's save: a new file renamed over the old one.
    let tmp = dir.path().join("gateway.yaml.swp");
    std::fs::write(&tmp, with_added_caller(&yaml)).unwrap();
    std::fs::rename(&tmp, &config).unwrap();
    logged(&gw, "configuration reloaded: new requests", 1).await;
    let r = client().get(format!("{url}/v1/providers")).bearer_auth(ADDED_KEY).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Touching it (same bytes) is no reload.
    std::fs::write(&config, with_added_caller(&yaml)).unwrap();
    let hup = std::process::Command::new("kill").args(["-HUP", &gw.pid().to_string()]).status().unwrap();
    assert!(hup.success());
    logged(&gw, "configuration reloaded: nothing changed", 1).await;
    assert_eq!(gw.output().matches("configuration reloaded: new requests").count(), 1, "{}", gw.output());
    assert_eq!(gw.terminate(), Some(0));
}
