//! `summary-gateway demo`: the gateway on the embedded store with in-process
//! vendor simulators, so a newcomer can `curl` a summary at once. The
//! configuration is `config/examples/demo.template.yaml` plus the `SUMMARY_GATEWAY__*`
//! environment overrides, as for `serve`.

use std::net::SocketAddr;

use gateway_config::Config;
use providers::commbox::simulator::{self as commbox, CommBoxSimulator};
use providers::elevateai::simulator::{self as elevateai, ElevateAiSimulator};
use providers::yeastar::simulator::{self as yeastar, YeastarSimulator};

/// The demo's API key. Local use only: it is in the source.
pub const DEMO_KEY: &str = "demo-key";

/// The simulators the demo runs, stopped when dropped.
pub struct Simulators {
    pub yeastar: yeastar::RunningSimulator,
    pub commbox: commbox::RunningSimulator,
    pub elevateai: elevateai::RunningSimulator,
}

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
    let yaml = include_str!("../../config/examples/demo.template.yaml")
        .replace("${LISTEN}", &listen.unwrap_or(DEFAULT_LISTEN).to_string())
        .replace("${YEASTAR_URL}", &sims.yeastar.base_url())
        .replace("${COMMBOX_URL}", &sims.commbox.base_url())
        .replace("${ELEVATEAI_URL}", &sims.elevateai.base_url());
    let set: Vec<(&str, &str)> = redis_url.map(|url| ("store.redis_url", url)).into_iter().collect();
    let mut config = Config::from_yaml_with_env_overrides_and(&providers::registry::config_types(), &yaml, &set)?;
    if let Some(listen) = listen {
        config.server.listen = listen;
    }
    Ok(config)
}

/// Starts the simulators the demo configuration points at.
pub async fn start_simulators() -> std::io::Result<Simulators> {
    Ok(Simulators {
        yeastar: YeastarSimulator::start(yeastar::SimOptions::default()).await?,
        commbox: CommBoxSimulator::start(commbox::SimOptions::default()).await?,
        elevateai: ElevateAiSimulator::start(elevateai::SimOptions::default()).await?,
    })
}

/// What to print once the demo listens; `store` is the store's kind.
pub fn banner(addr: SocketAddr, store: &str) -> String {
    let store = if store == "redis" { "the Redis store of --redis-url" } else { "embedded store" };
    format!(
        r#"
summary-gateway demo on http://{addr}  ({store}, in-process Yeastar, CommBox and ElevateAI simulators)

  # Yeastar (synchronous): a call leg's summary
  curl -s http://{addr}/v1/summaries -H 'Authorization: Bearer {DEMO_KEY}' \
       -H 'Content-Type: application/json' \
       -d '{{"provider":"pbx-demo","conversation":{{"id":"20260513223234-3EE9E","party":"caller","extension_id":3202}}}}'

  # CommBox (asynchronous): 202 + Location at once, or hold up to 10 s for the result
  curl -s http://{addr}/v1/summaries -H 'Authorization: Bearer {DEMO_KEY}' \
       -H 'Content-Type: application/json' -H 'Prefer: wait=10' \
       -d '{{"provider":"commbox-demo","language":"en","conversation":{{"text":"Agent: Good morning, Acme support. Client: Hi, my March invoice was charged twice and I would like the duplicate refunded. Agent: I see it, I have refunded the duplicate charge."}}}}'

  # ElevateAI: any kind of an interaction (summary, details, action_items, coaching, topics, composition)
  curl -s http://{addr}/v1/summaries -H 'Authorization: Bearer {DEMO_KEY}' \
       -H 'Content-Type: application/json' \
       -d '{{"provider":"elevateai-demo","kind":"details","conversation":{{"id":"{call}"}}}}'

  # ...and a question about it (5 per interaction; a repeated one is answered from the store)
  curl -s http://{addr}/v1/questions -H 'Authorization: Bearer {DEMO_KEY}' \
       -H 'Content-Type: application/json' \
       -d '{{"provider":"elevateai-demo","conversation":{{"id":"{call}"}},"question":"Was the customer refunded?"}}'

  curl -s 'http://{addr}/v1/providers?access_token={DEMO_KEY}'
  curl -s http://{addr}/openapi.json

Ctrl-C stops it.
"#,
        call = elevateai::BILLING_CALL,
    )
}
