//! `summary-gateway demo`: the gateway on the embedded store with in-process
//! vendor simulators, so a newcomer can `curl` a summary at once.

use std::net::SocketAddr;

use gateway_config::Config;
use providers::yeastar::simulator::{RunningSimulator, SimOptions, YeastarSimulator};

/// The demo's API key. Local use only: it is in the source.
pub const DEMO_KEY: &str = "demo-key";

/// The demo configuration, with the simulator's address filled in.
pub fn config(listen: SocketAddr, yeastar_base_url: &str) -> Result<Config, gateway_config::ConfigErrors> {
    let yaml = include_str!("../../config/examples/demo.yaml")
        .replace("${LISTEN}", &listen.to_string())
        .replace("${YEASTAR_URL}", yeastar_base_url);
    Config::from_yaml(&yaml, &gateway_config::process_env)
}

/// Starts the simulators the demo configuration points at.
pub async fn start_simulators() -> std::io::Result<RunningSimulator> {
    YeastarSimulator::start(SimOptions::default()).await
}

/// What to print once the demo listens.
pub fn banner(addr: SocketAddr) -> String {
    format!(
        r#"
summary-gateway demo on http://{addr}  (embedded store, in-process Yeastar simulator)

  curl -s http://{addr}/v1/summaries -H 'Authorization: Bearer {DEMO_KEY}' \
       -H 'Content-Type: application/json' \
       -d '{{"provider":"pbx-demo","conversation":{{"id":"20260513223234-3EE9E","party":"caller","extension_id":3202}}}}'

  curl -s http://{addr}/v1/providers?access_token={DEMO_KEY}
  curl -s http://{addr}/openapi.json

Ctrl-C stops it.
"#
    )
}
