//! `summary-gateway demo`: the gateway on the embedded store with in-process
//! vendor simulators, so a newcomer can `curl` a summary at once. The
//! configuration is `config/examples/demo.template.yaml` plus the `SUMMARY_GATEWAY__*`
//! environment overrides, as for `serve`.

use std::net::SocketAddr;

use gateway_config::Config;
use providers::registry;
use providers::sim_hooks::RunningSim;
use tokio::net::TcpListener;

/// The demo's API key. Local use only: it is in the source.
pub const DEMO_KEY: &str = "demo-key";

/// The simulators the demo runs, one per vendor of the registry that has one, by
/// `type`; stopped when dropped.
pub struct Simulators(Vec<(&'static str, RunningSim)>);

/// Where the demo listens unless `--listen` or `SUMMARY_GATEWAY__SERVER__LISTEN` says otherwise.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

/// The demo configuration, with the simulators' addresses filled in, then the
/// `SUMMARY_GATEWAY__*` environment overrides applied as for a config file
/// (`SUMMARY_GATEWAY__SERVER__MAX_BODY_BYTES=10 summary-gateway demo`). `listen`
/// is `--listen`, `redis_url` is `--redis-url` (the shared store instead of the
/// embedded one): given, they win over the environment.
pub fn config(
    listen: Option<SocketAddr>,
    redis_url: Option<&str>,
    sims: &Simulators,
) -> Result<Config, gateway_config::ConfigErrors> {
    // `${<TYPE>_URL}`: where the simulator of that `type` listens.
    let mut yaml = include_str!("../../config/examples/demo.template.yaml")
        .replace("${LISTEN}", &listen.unwrap_or(DEFAULT_LISTEN).to_string());
    for (type_name, sim) in &sims.0 {
        yaml = yaml.replace(&format!("${{{}_URL}}", type_name.to_ascii_uppercase()), &sim.base_url());
    }
    let set: Vec<(&str, &str)> = redis_url.map(|url| ("store.redis_url", url)).into_iter().collect();
    let mut config = Config::from_yaml_with_env_overrides_and(&providers::registry::config_types(), &yaml, &set)?;
    if let Some(listen) = listen {
        config.server.listen = listen;
    }
    Ok(config)
}

/// Starts the simulators the demo configuration points at, each on a port of its own.
pub async fn start_simulators() -> std::io::Result<Simulators> {
    let mut running = Vec::new();
    for (type_name, sim) in registry::simulators() {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        running.push((type_name, (sim.serve)(listener, None).map_err(std::io::Error::other)?));
    }
    Ok(Simulators(running))
}

/// What to print once the demo listens; `store` is the store's kind.
pub fn banner(addr: SocketAddr, store: &str) -> String {
    let store = if store == "redis" { "the Redis store of --redis-url" } else { "embedded store" };
    let vendors: Vec<&str> = registry::simulators().map(|(_, sim)| sim.vendor).collect();
    let vendors = match vendors.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => vendors.concat(),
    };
    let examples: Vec<String> = registry::simulators().map(|(_, sim)| (sim.demo_banner)(addr, DEMO_KEY)).collect();
    format!(
        r"
summary-gateway demo on http://{addr}  ({store}, in-process {vendors} simulators)

{examples}
  curl -s 'http://{addr}/v1/providers?access_token={DEMO_KEY}'
  curl -s http://{addr}/openapi.json

Ctrl-C stops it.
",
        examples = examples.join("\n"),
    )
}
