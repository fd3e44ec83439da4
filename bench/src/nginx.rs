//! nginx as a second baseline (issue 15): Debian's `nginx-light`, run as a
//! child of the driver on a port of its own, with a configuration, pid file,
//! error log and temporary paths in a directory of its own.
//!
//! One `server` answers two kinds of requests:
//! - any path but `/openapi/`: `return 200` with the gateway's cached summary
//!   (the cache hit's bytes) and the hit's headers (row n1);
//! - `/openapi/…`: `proxy_pass` over keep-alive connections to the Yeastar
//!   simulator, the fake vendor of the gateway's miss scenario (row n2), asked
//!   exactly what d1 asks it directly.
//!
//! `master_process on` with `worker_processes` = the machine's cores: the
//! gateway's runtime has one worker thread per core, so nginx gets as many
//! workers. Its CPU is read over the whole process tree (master + workers,
//! `procfs::sample_tree`).

use std::fmt::Write as _;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The nginx binary: on `PATH`, else `/usr/sbin/nginx` (Debian's, often not on a
/// user's `PATH`); if neither, installs Debian's `nginx-light` with apt-get (with
/// sudo unless root), as scripts/test.sh installs redis-server. `Err` says why
/// there is none.
pub fn find_or_install() -> Result<PathBuf, String> {
    if let Some(found) = find() {
        return Ok(found);
    }
    if !Path::new("/usr/bin/apt-get").exists() {
        return Err("nginx is not installed and there is no apt-get to install Debian's nginx-light".into());
    }
    let root = effective_uid() == Some(0);
    eprintln!(
        "sg-bench: nginx not found: installing Debian's nginx-light (apt-get{})",
        if root { "" } else { " with sudo" }
    );
    let apt = |args: &[&str]| -> Result<(), String> {
        let mut command = if root { Command::new("apt-get") } else { Command::new("sudo") };
        if !root {
            command.arg("-n").arg("apt-get");
        }
        let status = command
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run {}: {e}", if root { "apt-get" } else { "sudo apt-get" }))?;
        if status.success() { Ok(()) } else { Err(format!("apt-get {} failed ({status})", args.join(" "))) }
    };
    apt(&["update", "-qq"])?;
    apt(&["install", "-y", "-qq", "nginx-light"])?;
    find().ok_or_else(|| "nginx-light was installed but no nginx binary was found".into())
}

fn find() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|p| p.join("nginx")).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path.into_iter().chain([PathBuf::from("/usr/sbin/nginx")]).find(|p| p.is_file())
}

/// `Uid:` of `/proc/self/status`, its second field (the effective uid).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// What the configuration needs to know of the binary: `nginx -V`'s version
/// and the modules built out (their temp paths must not be set, and without
/// the proxy module there is no n2).
pub struct Build {
    pub version: String,
    without: Vec<String>,
}

impl Build {
    pub fn of(binary: &Path) -> Result<Self, String> {
        let out =
            Command::new(binary).arg("-V").output().map_err(|e| format!("cannot run {} -V: {e}", binary.display()))?;
        let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
        Ok(Self::parse(&text))
    }

    fn parse(text: &str) -> Self {
        let version = text
            .lines()
            .find_map(|l| l.strip_prefix("nginx version: "))
            .unwrap_or("nginx (version unknown)")
            .trim()
            .to_owned();
        let without = text
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("--without-").and_then(|m| m.strip_suffix("_module")))
            .map(str::to_owned)
            .collect();
        Self { version, without }
    }

    fn has(&self, module: &str) -> bool {
        !self.without.iter().any(|m| m == module)
    }

    pub fn has_proxy(&self) -> bool {
        self.has("http_proxy")
    }
}

/// What nginx serves.
pub struct Plan<'a> {
    pub listen: SocketAddr,
    /// The cache hit's body and the headers to send with it (besides the ones nginx writes itself).
    pub body: &'a [u8],
    pub headers: &'a [(String, String)],
    /// The Yeastar simulator.
    pub upstream: SocketAddr,
    pub workers: usize,
}

/// The longest string nginx reads as one configuration token is under its
/// 4,096-byte buffer.
const MAX_TOKEN: usize = 4000;

/// nginx.conf for `plan`, every path in `dir`.
pub fn config(plan: &Plan<'_>, build: &Build, dir: &Path) -> Result<String, String> {
    let body = std::str::from_utf8(plan.body).map_err(|_| "the cached summary is not UTF-8".to_owned())?;
    // `$` starts a variable in `return`'s text: a literal one comes from a `geo` variable.
    let uses_dollar = body.contains('$');
    let text = quoted(body).replace('$', "${sg_dollar}");
    if text.len() > MAX_TOKEN {
        return Err(format!(
            "the cached summary ({} bytes) is too long for one nginx configuration string",
            plan.body.len()
        ));
    }
    let d = dir.display();
    let mut temp_paths = format!("    client_body_temp_path {d}/client_body;\n");
    for module in ["proxy", "fastcgi", "uwsgi", "scgi"] {
        if build.has(&format!("http_{module}")) {
            let _ = writeln!(temp_paths, "    {module}_temp_path {d}/{module};");
        }
    }
    let mut headers = String::new();
    for (name, value) in plan.headers {
        let _ = writeln!(headers, "            add_header {name} {};", quoted(value));
    }
    let dollar = if uses_dollar { "    geo $sg_dollar { default \"$\"; }\n" } else { "" };
    let proxy = if build.has_proxy() {
        format!(
            "    upstream vendor {{\n        server {upstream};\n        keepalive 64;\n        keepalive_requests 1000000;\n    }}\n",
            upstream = plan.upstream
        )
    } else {
        String::new()
    };
    let proxy_location = if build.has_proxy() {
        "        location /openapi/ {\n            proxy_pass http://vendor;\n            proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n        }\n"
    } else {
        ""
    };
    Ok(format!(
        "# Written by sg-bench (bench/src/nginx.rs).
daemon off;
master_process on;
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    server_tokens off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
{temp_paths}{dollar}{proxy}    server {{
        listen {listen};
        location / {{
            default_type application/json;
{headers}            return 200 {text};
        }}
{proxy_location}    }}
}}
",
        workers = plan.workers.max(1),
        listen = plan.listen,
    ))
}

/// A double-quoted nginx string.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Headers of the gateway's cache-hit answer nginx writes itself, or that do not apply to it.
pub fn copied_header(name: &str) -> bool {
    !matches!(
        name,
        "date" | "content-length" | "content-type" | "connection" | "server" | "transfer-encoding" | "keep-alive"
    )
}

/// A running nginx: the master process is the driver's child.
pub struct Nginx {
    pub addr: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Writes the configuration into a new directory and starts nginx on a free
    /// 127.0.0.1 port; returns once it answers TCP connections (at most 10 s).
    pub fn start(binary: &Path, build: &Build, mut plan: Plan<'_>) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("sg-bench-nginx-")
            .tempdir()
            .map_err(|e| format!("cannot create nginx's directory: {e}"))?;
        // As root, nginx's workers run as `nobody` and must reach the temp paths in it.
        let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755));
        plan.listen = free_port()?;
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config(&plan, build, dir.path())?)
            .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        let stderr = File::create(dir.path().join("stderr.log")).map_err(|e| format!("nginx's stderr file: {e}"))?;
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut nginx = Self { addr: plan.listen, child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                return Err(format!("nginx exited ({status}): {}", nginx.logs()));
            }
            if TcpStream::connect_timeout(&nginx.addr, Duration::from_millis(200)).is_ok() {
                return Ok(nginx);
            }
            if Instant::now() > deadline {
                return Err(format!("nginx does not accept connections on {}: {}", nginx.addr, nginx.logs()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its stderr and error log, for a failure message.
    fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let text = format!("{}{}", read("stderr.log"), read("error.log"));
        let text = text.trim();
        if text.is_empty() { "(nothing logged)".to_owned() } else { text.chars().take(1500).collect() }
    }
}

impl Drop for Nginx {
    /// `SIGQUIT` (graceful: the master stops its workers), up to 5 s; then
    /// `SIGKILL` to the master and whatever workers are left.
    fn drop(&mut self) {
        let pid = self.pid();
        let workers = crate::procfs::descendants(pid);
        let signal = |sig: &str, pids: &[u32]| {
            let _ = Command::new("kill").arg(sig).args(pids.iter().map(u32::to_string)).stderr(Stdio::null()).status();
        };
        signal("-QUIT", &[pid]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal("-KILL", &workers);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listens on now (bound and released: nginx binds it right after).
fn free_port() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener.local_addr().map_err(|e| format!("no local address: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_config_with_the_body_quoted() {
        let build = Build::parse(
            "nginx version: nginx/1.22.1\nconfigure arguments: --with-cc-opt=-O2 --without-http_uwsgi_module --without-http_scgi_module",
        );
        assert_eq!(build.version, "nginx/1.22.1");
        assert!(build.has_proxy() && !build.has("http_uwsgi"));
        let headers = [("cache-status".to_owned(), "summary-gateway; hit".to_owned())];
        let plan = Plan {
            listen: SocketAddr::from(([127, 0, 0, 1], 8099)),
            body: br#"{"text":"a \"quote\" and \\ and $5"}"#,
            headers: &headers,
            upstream: SocketAddr::from(([127, 0, 0, 1], 9000)),
            workers: 2,
        };
        let conf = config(&plan, &build, Path::new("/tmp/x")).unwrap_or_else(|e| panic!("{e}"));
        assert!(conf.contains(r#"return 200 "{\"text\":\"a \\\"quote\\\" and \\\\ and ${sg_dollar}5\"}";"#), "{conf}");
        assert!(conf.contains("geo $sg_dollar"));
        assert!(conf.contains("add_header cache-status \"summary-gateway; hit\";"));
        assert!(conf.contains("worker_processes 2;") && conf.contains("server 127.0.0.1:9000;"));
        assert!(conf.contains("fastcgi_temp_path /tmp/x/fastcgi;") && !conf.contains("uwsgi_temp_path"));
        assert!(!copied_header("date") && copied_header("cache-status"));
        let long = vec![b'x'; MAX_TOKEN + 1];
        assert!(config(&Plan { body: &long, ..plan }, &build, Path::new("/tmp/x")).is_err());
    }
}
