//! `sg-bench`: the gateway's speed and memory targets, measured against
//! baselines in the same run.
//!
//! `cargo run --release -p sg-bench [-- --quick | --seconds N | --strict]` starts
//! five server processes — a static-answer baseline, the Yeastar simulator, the
//! CommBox simulator, the ElevateAI simulator and the real gateway — by
//! re-executing this binary in a server mode, and nginx (`return 200` and
//! `proxy_pass`, the floors issue 15's targets are ratios of), drives load
//! at them from this process, reads their CPU time and memory from `/proc`, and
//! prints one row per scenario, then the comparisons and the targets. With
//! `--redis-url` the gateway stores in that Redis, and the Redis server's
//! commands and CPU per request are reported too. See `bench/README.md` for
//! what each number means.

mod driver;
mod load;
mod nginx;
mod num;
mod process;
mod procfs;
mod redis_server;
mod servers;
mod waiting;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sg-bench",
    about = "Benchmark of summary-gateway: CPU per request, added latency and RSS, against baselines of the same run",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    run: RunArgs,
}

/// Without a subcommand: run every scenario. The subcommands are the server
/// processes the run starts (they can be started by hand too).
#[derive(Subcommand)]
enum Mode {
    /// A server that answers any request with the same JSON bytes (the baseline).
    #[command(name = "serve-baseline")]
    Baseline {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// The bytes to answer with (the run passes the gateway's cached summary); default: ~2.5 KB of JSON.
        #[arg(long)]
        body_file: Option<PathBuf>,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// The Yeastar simulator, seeded with `records` extra call legs `bench-…` (the docs' example summary each).
    #[command(name = "serve-sim")]
    Sim {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 10_000)]
        records: u64,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// The CommBox simulator (asynchronous jobs; `[sim:hold]` in a text holds its job until `POST /_sim/release`).
    #[command(name = "serve-commbox-sim")]
    CommBoxSim {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// The ElevateAI simulator, answering at once (interactions are declared with `POST /v1/interactions`).
    #[command(name = "serve-elevateai-sim")]
    ElevateAiSim {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// The real gateway (`App::new` + `summary_gateway::run`) with this configuration.
    #[command(name = "serve-gateway")]
    Gateway {
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        serve: ServeArgs,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Exit when stdin closes (the driver passes it, so its servers never outlive it).
    #[arg(long, hide = true)]
    exit_with_stdin: bool,
}

/// Durations in seconds; unset ones take the full-run or the `--quick` default.
#[derive(Args)]
struct RunArgs {
    /// Measured seconds of each closed-loop scenario a, b, c, in all its rounds [default: 8; --quick: 1.5].
    #[arg(long)]
    seconds: Option<f64>,
    /// Unmeasured warm-up before each measured window [default: 1; --quick: 0.5].
    #[arg(long)]
    warmup_seconds: Option<f64>,
    /// Measured seconds of each open-loop run of scenario e (cache hit, baseline) [default: 15; --quick: 2.5].
    #[arg(long)]
    open_seconds: Option<f64>,
    /// Measured seconds of each open-loop run of the vendor round trip [default: 5; --quick: 1.5].
    #[arg(long)]
    vendor_open_seconds: Option<f64>,
    /// Distinct call legs (cache misses) of the closed-loop vendor round trip [default: 20000; --quick: 4000].
    #[arg(long)]
    misses: Option<u64>,
    /// ElevateAI interactions (cache misses) asked through each of the two ElevateAI providers,
    /// built-in and declarative, in --closed-rounds alternating rounds [default: 12000; --quick: 2000].
    #[arg(long)]
    elevateai_misses: Option<u64>,
    /// Alternating segments of each open-loop comparison (baseline, gateway, baseline, …) [default: 10; --quick: 3].
    #[arg(long)]
    rounds: Option<u32>,
    /// Rounds of the closed-loop scenarios a, b, c, run in turn (a, b, c, a, b, c, …) [default: 4; --quick: 1].
    #[arg(long)]
    closed_rounds: Option<u32>,
    /// Offered rate of the open-loop runs, requests per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Offered rate of the open-loop vendor round trips [default: --rate].
    #[arg(long)]
    vendor_rate: Option<f64>,
    /// Connections of the closed-loop runs.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Connections of the open-loop runs (a free one takes the next due request).
    #[arg(long, default_value_t = 32)]
    open_connections: usize,
    /// Long-polls parked at once on one held CommBox job in scenario w, one connection each [default: 2000; --quick: 1000].
    #[arg(long)]
    waiters: Option<usize>,
    /// Worker threads of the load generator (1: it uses at most one core).
    #[arg(long, default_value_t = 1)]
    driver_threads: usize,
    /// Short runs, about 27 s in all (a full run takes about 100 s).
    #[arg(long)]
    quick: bool,
    /// Exit with status 1 if a target is missed or a scenario got unexpected answers.
    #[arg(long)]
    strict: bool,
    /// Configure the gateway with this Redis as its store (its keys under `sgbench-<pid>-<random>:`,
    /// deleted at the end) and report the Redis server's commands and CPU per request.
    #[arg(long, env = "SG_BENCH_REDIS_URL", value_name = "URL")]
    redis_url: Option<String>,
}

impl RunArgs {
    fn settings(&self) -> Result<driver::Settings, String> {
        let secs = |name: &str, value: Option<f64>, full: f64, quick: f64| {
            let s = value.unwrap_or(if self.quick { quick } else { full });
            Duration::try_from_secs_f64(s)
                .ok()
                .filter(|d| !d.is_zero() || name == "--warmup-seconds")
                .ok_or_else(|| format!("{name}: expected a positive number of seconds, got {s}"))
        };
        let vendor_rate = self.vendor_rate.unwrap_or(self.rate);
        for (name, rate) in [("--rate", self.rate), ("--vendor-rate", vendor_rate)] {
            if !(rate.is_finite() && rate >= 1.0) {
                return Err(format!("{name}: expected at least 1 request per second, got {rate}"));
            }
        }
        Ok(driver::Settings {
            seconds: secs("--seconds", self.seconds, 8.0, 1.5)?,
            warmup: secs("--warmup-seconds", self.warmup_seconds, 1.0, 0.5)?,
            open_seconds: secs("--open-seconds", self.open_seconds, 15.0, 2.5)?,
            vendor_open_seconds: secs("--vendor-open-seconds", self.vendor_open_seconds, 5.0, 1.5)?,
            misses: self.misses.unwrap_or(if self.quick { 4_000 } else { 20_000 }).max(1),
            elevateai_misses: self.elevateai_misses.unwrap_or(if self.quick { 2_000 } else { 12_000 }).max(1),
            rate: self.rate,
            vendor_rate,
            connections: self.connections.max(1),
            open_connections: self.open_connections.max(1),
            driver_threads: self.driver_threads.max(1),
            rounds: self.rounds.unwrap_or(if self.quick { 3 } else { 10 }).max(1),
            closed_rounds: self.closed_rounds.unwrap_or(if self.quick { 1 } else { 4 }).max(1),
            waiters: self.waiters.unwrap_or(if self.quick { 1_000 } else { 2_000 }).max(1),
            strict: self.strict,
            redis_url: self.redis_url.clone().filter(|url| !url.is_empty()),
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.mode {
        None => match cli.run.settings() {
            Ok(settings) => driver::run(&settings),
            Err(e) => {
                eprintln!("sg-bench: {e}");
                ExitCode::from(2)
            }
        },
        Some(Mode::Baseline { listen, body_file, serve }) => {
            servers::serve_baseline(listen, body_file.as_deref(), serve.exit_with_stdin)
        }
        Some(Mode::Sim { listen, records, serve }) => servers::serve_sim(listen, records, serve.exit_with_stdin),
        Some(Mode::CommBoxSim { listen, serve }) => servers::serve_commbox_sim(listen, serve.exit_with_stdin),
        Some(Mode::ElevateAiSim { listen, serve }) => servers::serve_elevateai_sim(listen, serve.exit_with_stdin),
        Some(Mode::Gateway { config, serve }) => servers::serve_gateway(&config, serve.exit_with_stdin),
    }
}
