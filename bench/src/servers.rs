//! The server modes. Each runs in its own process (the driver re-executes this
//! binary), so that its CPU time and memory can be read from `/proc/<pid>`.
//!
//! Each prints `SG_BENCH_LISTENING <addr>` on stdout once it accepts connections.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use bytes::Bytes;
use gateway_config::Config;
use providers::commbox::simulator::{CommBoxSimulator, SimOptions as CommBoxOptions};
use providers::elevateai::simulator::{ElevateAiSimulator, SimOptions as ElevateAiOptions};
use providers::yeastar::simulator::{RecordState, SimOptions, SimRecord, YeastarSimulator, fixture_records};
use serde_json::Value;
use summary_gateway::{App, telemetry};
use tokio::net::TcpListener;

/// What a server prints before its address.
pub const ANNOUNCE: &str = "SG_BENCH_LISTENING ";
/// The flag the driver adds: exit when stdin closes (the driver is done, or died).
pub const EXIT_WITH_STDIN: &str = "--exit-with-stdin";
/// The extension every benchmark call leg is asked for (as the caller: `src_ext_id`).
pub const EXTENSION: u64 = 3202;

/// The id of benchmark call leg `n`, seeded in the simulator by `serve-sim`:
/// `bench-` and `n` zero-padded to 8 + (n mod 32) digits.
///
/// The simulator finds a record by a linear scan over all of them (the fixtures
/// are a handful), comparing ids first. Ids of 32 different lengths let most of
/// those comparisons stop at the length, so that looking up one of tens of
/// thousands of legs stays cheap and the vendor side of the benchmark does not
/// become its bottleneck.
pub fn leg_id(n: u64) -> String {
    let width = 8 + usize::try_from(n % 32).unwrap_or(0);
    format!("bench-{n:0width$}")
}

fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{ANNOUNCE}{addr}");
    let _ = out.flush();
}

/// Completes on SIGINT/SIGTERM or, with `exit_with_stdin`, once stdin reaches end of file.
async fn stop_signal(exit_with_stdin: bool) {
    let stdin_closed = async move {
        if exit_with_stdin {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
                let _ = tx.send(());
            });
            let _ = rx.await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = summary_gateway::shutdown_signal() => {}
        () = stdin_closed => {}
    }
}

/// Runs `main` on a multi-threaded runtime (one worker per core, like the gateway binary).
fn block_on<F>(what: &str, main: F) -> ExitCode
where
    F: Future<Output = Result<(), String>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sg-bench {what}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sg-bench {what}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bind(listen: SocketAddr) -> Result<(TcpListener, SocketAddr), String> {
    let listener = TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("no local address: {e}"))?;
    Ok((listener, addr))
}

// ---------------------------------------------------------------- baseline

/// `serve-baseline`: answers any method on any path with the same JSON bytes,
/// after reading the request body — the floor under the gateway: HTTP/1.1 in
/// hyper + axum on the same runtime, with no work of its own.
pub fn serve_baseline(listen: SocketAddr, body_file: Option<&Path>, exit_with_stdin: bool) -> ExitCode {
    let body = match body_file {
        Some(path) => match std::fs::read(path) {
            Ok(bytes) => Bytes::from(bytes),
            Err(e) => {
                eprintln!("sg-bench serve-baseline: cannot read {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
        None => default_body(),
    };
    block_on("serve-baseline", async move {
        let (listener, addr) = bind(listen).await?;
        let router = Router::new().fallback(static_answer).with_state(Arc::new(body));
        let listener = listener.tap_io(|tcp| {
            // The gateway sets TCP_NODELAY too.
            let _ = tcp.set_nodelay(true);
        });
        announce(addr);
        axum::serve(listener, router)
            .with_graceful_shutdown(stop_signal(exit_with_stdin))
            .await
            .map_err(|e| format!("server error: {e}"))
    })
}

static JSON: HeaderValue = HeaderValue::from_static("application/json");

async fn static_answer(State(body): State<Arc<Bytes>>, request_body: Bytes) -> Response {
    // Read (like the gateway reads its JSON) and dropped.
    drop(request_body);
    ([(header::CONTENT_TYPE, JSON.clone())], Bytes::clone(&body)).into_response()
}

/// About the size of a cached summary, for `serve-baseline` run by hand. The
/// driver passes the gateway's own cached bytes instead (`--body-file`).
fn default_body() -> Bytes {
    let text = "The caller reported a login problem; the agent escalated it. ".repeat(36);
    Bytes::from(serde_json::json!({"id": "sum_00000000000000000000000000000000", "status": "completed", "content": {"text": text}}).to_string())
}

// ---------------------------------------------------------------- simulator

/// `serve-sim`: the Yeastar simulator with its fixtures plus `records` call legs
/// ([`leg_id`]), each holding the docs' example summary (party `src`,
/// extension 3202), so that every cache miss of the benchmark is a distinct,
/// valid call leg.
pub fn serve_sim(listen: SocketAddr, records: u64, exit_with_stdin: bool) -> ExitCode {
    block_on("serve-sim", async move {
        let (listener, _) = bind(listen).await?;
        let sim = YeastarSimulator::new(SimOptions::default());
        for record in bench_records(records) {
            sim.add_record(record);
        }
        let running = sim.serve_on(listener).map_err(|e| format!("cannot serve: {e}"))?;
        announce(running.addr);
        stop_signal(exit_with_stdin).await;
        drop(running);
        Ok(())
    })
}

fn bench_records(count: u64) -> impl Iterator<Item = SimRecord> {
    // The docs' example (fixture_records()[0]): what a real PBX answers for one call.
    let template = fixture_records().into_iter().next().map_or(Value::Null, |r| r.summary);
    (0..count).map(move |n| {
        let mut summary = template.clone();
        if let Some(fields) = summary.as_object_mut() {
            fields.insert("call_id".into(), Value::from(leg_id(n)));
            fields.insert("id".into(), Value::from(1000 + n));
        }
        SimRecord {
            cdr_id: leg_id(n),
            party: "src".into(),
            ext_id: EXTENSION,
            answer_key: None,
            state: RecordState::Ready,
            summary,
        }
    })
}

// ---------------------------------------------------------------- CommBox simulator

/// `serve-commbox-sim`: the CommBox simulator (default token `demo-commbox-token`),
/// its actions final as soon as they are polled (`processing` zero) — except the
/// ones whose text holds `[sim:hold]`, which stay `Pending` until
/// `POST /_sim/release`. Scenario w parks its long-polls on such a job.
pub fn serve_commbox_sim(listen: SocketAddr, exit_with_stdin: bool) -> ExitCode {
    block_on("serve-commbox-sim", async move {
        let (listener, _) = bind(listen).await?;
        let options = CommBoxOptions { processing: std::time::Duration::ZERO, ..CommBoxOptions::default() };
        let running = CommBoxSimulator::new(options).serve_on(listener).map_err(|e| format!("cannot serve: {e}"))?;
        announce(running.addr);
        stop_signal(exit_with_stdin).await;
        drop(running);
        Ok(())
    })
}

// ---------------------------------------------------------------- ElevateAI simulator

/// Gen-AI requests the benchmark's ElevateAI simulator takes at once: more than
/// the gateway's providers send (their `max_concurrency`), so that it never
/// answers 429 and no request is retried.
pub const ELEVATEAI_SIM_CONCURRENCY: usize = 4096;

/// `serve-elevateai-sim`: the ElevateAI simulator (token `demo-elevateai-token`,
/// its fixtures seeded) answering at once: no latency (its default is 20 ms, which
/// would make the closed loop measure the simulator's sleep, not the gateway) and
/// [`ELEVATEAI_SIM_CONCURRENCY`] requests at a time instead of the account's 10.
/// The driver declares the interactions the scenario asks for through the
/// vendor's own `POST /v1/interactions`.
pub fn serve_elevateai_sim(listen: SocketAddr, exit_with_stdin: bool) -> ExitCode {
    block_on("serve-elevateai-sim", async move {
        let (listener, _) = bind(listen).await?;
        let options = ElevateAiOptions {
            latency: std::time::Duration::ZERO,
            max_concurrent: ELEVATEAI_SIM_CONCURRENCY,
            ..ElevateAiOptions::default()
        };
        let running = ElevateAiSimulator::new(options).serve_on(listener).map_err(|e| format!("cannot serve: {e}"))?;
        announce(running.addr);
        stop_signal(exit_with_stdin).await;
        drop(running);
        Ok(())
    })
}

// ---------------------------------------------------------------- gateway

/// `serve-gateway`: the real gateway, the same code as `summary-gateway serve`:
/// `App::new` + `summary_gateway::run` on the listener `server.listen` names.
/// Logging follows `RUST_LOG` (the driver sets `warn`: no access log).
pub fn serve_gateway(config_path: &Path, exit_with_stdin: bool) -> ExitCode {
    telemetry::init();
    let config = match Config::load(&providers::registry::config_types(), config_path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("sg-bench serve-gateway: {} is invalid:\n{errors}", config_path.display());
            return ExitCode::from(2);
        }
    };
    block_on("serve-gateway", async move {
        let listen = config.server.listen;
        let app = App::new(config).map_err(|e| e.to_string())?;
        let (listener, addr) = bind(listen).await?;
        announce(addr);
        summary_gateway::run(listener, app, stop_signal(exit_with_stdin))
            .await
            .map_err(|e| format!("server error: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_records_are_distinct_legs_with_the_docs_summary() {
        let records: Vec<SimRecord> = bench_records(3).collect();
        assert_eq!(records[2].cdr_id, "bench-0000000002");
        assert_eq!(records[2].summary["call_id"], "bench-0000000002");
        assert_eq!(leg_id(32), "bench-00000032");
        assert_eq!(leg_id(31).len(), 6 + 8 + 31);
        assert!(records[0].summary["summary"].as_str().is_some_and(|s| s.contains("Key Points")));
        assert!(default_body().len() > 2000);
    }
}
