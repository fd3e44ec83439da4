//! The `summary-gateway` binary: serve, check a configuration, run the demo, or
//! run a vendor simulator as a process.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gateway_config::Config;
#[cfg(feature = "demo")]
use summary_gateway::demo;
use summary_gateway::{App, run, shutdown_signal, telemetry};
use tokio::net::TcpListener;

/// jemalloc rather than glibc malloc: freed memory goes back to the OS (its
/// background thread purges pages unused for a second, `.cargo/config.toml`),
/// where glibc kept tens of MiB per burst of vendor answers in its arenas.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "summary-gateway", version, about = "One endpoint and one schema for conversation-summary vendors")]
struct Cli {
    /// Configuration file (YAML), for serving without a subcommand.
    #[arg(long, env = "SUMMARY_GATEWAY_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with --config (the default command).
    Serve,
    /// Validate --config: exit 0, or print every problem with its YAML path and exit 2.
    CheckConfig {
        /// Also print the effective configuration as YAML that loads back as the same
        /// configuration (inline secrets as '*****', to be written again).
        #[arg(long)]
        print: bool,
    },
    #[cfg(feature = "demo")]
    /// The gateway with in-process vendor simulators and the embedded store
    /// (SUMMARY_GATEWAY__* environment overrides apply).
    Demo {
        /// Where to listen [default: 127.0.0.1:8080, or SUMMARY_GATEWAY__SERVER__LISTEN].
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// The shared Redis store instead of the embedded one (`redis://127.0.0.1:6379/0`),
        /// to try several replicas locally [default: SUMMARY_GATEWAY__STORE__REDIS_URL, or none].
        #[arg(long, value_name = "URL")]
        redis_url: Option<String>,
    },
    #[cfg(feature = "demo")]
    /// Run a vendor simulator as a process.
    Simulate {
        #[command(subcommand)]
        vendor: Simulator,
    },
}

/// `simulate <type> [flags]`: one subcommand per vendor of the registry that has a
/// simulator, with its flags (`--listen` and the simulator's own). Not derived: the
/// list is the registry's, so the subcommands are made from it.
#[cfg(feature = "demo")]
struct Simulator {
    type_name: String,
    flags: providers::sim_hooks::SimFlags,
}

#[cfg(feature = "demo")]
impl Simulator {
    fn entry(type_name: &str) -> Option<&'static providers::sim_hooks::Simulator> {
        providers::registry::simulators().find(|(t, _)| *t == type_name).map(|(_, sim)| sim)
    }

    /// `--listen` and the simulator's own flags, each checked as clap reads it.
    fn args(sim: &'static providers::sim_hooks::Simulator) -> Vec<clap::Arg> {
        let listen = clap::Arg::new("listen")
            .long("listen")
            .value_name("LISTEN")
            .default_value(sim.listen)
            .value_parser(|v: &str| v.parse::<SocketAddr>().map(|_| v.to_owned()));
        let own = sim.flags.iter().map(|flag| {
            let check = flag.check;
            let arg = clap::Arg::new(flag.long)
                .long(flag.long)
                .value_name(flag.value_name)
                .default_value(flag.default)
                .value_parser(move |v: &str| check(v).map(|()| v.to_owned()));
            match flag.help {
                Some(help) => arg.help(help),
                None => arg,
            }
        });
        std::iter::once(listen).chain(own).collect()
    }
}

#[cfg(feature = "demo")]
impl clap::FromArgMatches for Simulator {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        use clap::error::ErrorKind;
        let Some((type_name, sub)) = matches.subcommand() else {
            return Err(clap::Error::raw(ErrorKind::MissingSubcommand, "a simulator is required"));
        };
        let Some(sim) = Self::entry(type_name) else {
            return Err(clap::Error::raw(ErrorKind::InvalidSubcommand, format!("no simulator `{type_name}`")));
        };
        let longs = std::iter::once("listen").chain(sim.flags.iter().map(|f| f.long));
        let values = longs.filter_map(|long| Some((long.to_owned(), sub.get_one::<String>(long)?.clone())));
        Ok(Self { type_name: type_name.to_owned(), flags: providers::sim_hooks::SimFlags::new(values) })
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

#[cfg(feature = "demo")]
impl Subcommand for Simulator {
    fn augment_subcommands(cmd: clap::Command) -> clap::Command {
        cmd.subcommands(
            providers::registry::simulators()
                .map(|(type_name, sim)| clap::Command::new(type_name).about(sim.about).args(Self::args(sim))),
        )
    }

    fn augment_subcommands_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_subcommands(cmd)
    }

    fn has_subcommand(name: &str) -> bool {
        Self::entry(name).is_some()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        // The configuration comes first: its `telemetry:` section decides whether
        // spans are exported, and the subscriber is installed once. Its problems
        // go to stderr, logging or not.
        Command::Serve => match load(cli.config.clone()) {
            Ok(config) => {
                let telemetry = telemetry::init_with(&config.telemetry);
                let code = block_on(serve_config(config, cli.config, None));
                // After the last request and the runtime: export the spans still buffered.
                telemetry.shutdown();
                code
            }
            Err(code) => code,
        },
        Command::CheckConfig { print } => with_logs(async move { check_config(cli.config, print) }),
        #[cfg(feature = "demo")]
        Command::Demo { listen, redis_url } => with_logs(run_demo(listen, redis_url)),
        #[cfg(feature = "demo")]
        Command::Simulate { vendor } => with_logs(simulate(vendor)),
    }
}

/// Runs `work` with logs (no span export) on a new runtime.
fn with_logs(work: impl Future<Output = ExitCode>) -> ExitCode {
    telemetry::init();
    block_on(work)
}

/// Runs `work` to completion on a new multi-threaded runtime, dropped before returning.
fn block_on(work: impl Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(work),
        Err(e) => {
            eprintln!("summary-gateway: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: Option<PathBuf>) -> Result<Config, ExitCode> {
    let Some(path) = path else {
        eprintln!("summary-gateway: --config FILE (or SUMMARY_GATEWAY_CONFIG) is required");
        return Err(ExitCode::from(2));
    };
    // Before the problems: a misspelt override is often why a value is not what was meant.
    for warning in gateway_config::override_warnings() {
        eprintln!("summary-gateway: warning: {warning}");
    }
    Config::load(&providers::registry::config_types(), &path).map_err(|errors| {
        let overrides = if errors.iter().any(|e| e.env_var.is_some()) { " with its environment overrides" } else { "" };
        eprintln!("summary-gateway: {}{overrides} has {} problem(s):", path.display(), errors.0.len());
        for e in errors.iter() {
            eprintln!("{e}");
        }
        ExitCode::from(2)
    })
}

fn check_config(path: Option<PathBuf>, print: bool) -> ExitCode {
    match load(path) {
        Ok(config) => {
            // What only the adapters can check (a vendor's languages, header-safe tokens).
            let mut problems = 0;
            for (name, provider) in &config.providers {
                if let Err(errors) = providers::Provider::from_config(provider) {
                    for e in &errors {
                        eprintln!("providers.{name}.{e}");
                    }
                    problems += errors.len();
                }
            }
            // The store's TLS files, where the gateway would read them.
            if let Err(e) = summary_gateway::store::check(&config.store) {
                eprintln!("{e}");
                problems += 1;
            }
            if problems > 0 {
                eprintln!("summary-gateway: {problems} problem(s)");
                return ExitCode::from(2);
            }
            let ok =
                format!("configuration ok: {} provider(s), {} key(s)", config.providers.len(), config.auth.keys.len());
            if !print {
                println!("{ok}");
                return ExitCode::SUCCESS;
            }
            match config.to_yaml() {
                // Only YAML on stdout, so `check-config --print > effective.yaml` loads back.
                Ok(yaml) => {
                    println!("# {ok}");
                    println!("# The effective configuration: the file, its environment overrides and every default.");
                    println!("# Secrets given inline print as '*****': write them again before loading this.");
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("summary-gateway: cannot print the configuration: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(code) => code,
    }
}

/// Serves `config`; reloads it from `path` (SIGHUP, the file changing) if there is one.
async fn serve_config(
    config: Config,
    path: Option<PathBuf>,
    banner: Option<fn(SocketAddr, &str) -> String>,
) -> ExitCode {
    let listen = config.server.listen;
    let app = match App::new(config) {
        Ok(app) => app,
        Err(e) => {
            // A provider the adapter refuses is a configuration problem, like check-config's.
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("summary-gateway: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(listen);
    summary_gateway::reload::watch(&app, path);
    tracing::info!(%addr, providers = app.config.providers.len(), store = app.stores.health.kind(), "listening");
    if let Some(banner) = banner {
        println!("{}", banner(addr, app.stores.health.kind()));
    }
    match run(listener, app, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("summary-gateway: server error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "demo")]
async fn run_demo(listen: Option<SocketAddr>, redis_url: Option<String>) -> ExitCode {
    let sim = match demo::start_simulators().await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("summary-gateway: cannot start the simulators: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = match demo::config(listen, redis_url.as_deref(), &sim) {
        Ok(c) => c,
        Err(errors) => {
            // With SUMMARY_GATEWAY__* overrides, a problem is the caller's: exit 2 as serve does.
            eprintln!("summary-gateway: the demo configuration has {} problem(s):", errors.0.len());
            for e in errors.iter() {
                eprintln!("{e}");
            }
            return ExitCode::from(2);
        }
    };
    let code = serve_config(config, None, Some(demo::banner)).await;
    drop(sim);
    code
}

/// Runs one vendor simulator until SIGTERM/SIGINT.
#[cfg(feature = "demo")]
async fn simulate(vendor: Simulator) -> ExitCode {
    let Some(sim) = Simulator::entry(&vendor.type_name) else {
        eprintln!("summary-gateway: no simulator `{}`", vendor.type_name);
        return ExitCode::from(2);
    };
    let listen = match vendor.flags.parse::<SocketAddr>("listen") {
        Ok(listen) => listen,
        Err(e) => {
            eprintln!("summary-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("summary-gateway: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The running simulator stops when dropped: keep it until the signal.
    match (sim.serve)(listener, Some(&vendor.flags)) {
        Ok(running) => {
            tracing::info!(addr = %running.addr, simulator = vendor.type_name, "simulator listening");
            shutdown_signal().await;
            drop(running);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("summary-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}
