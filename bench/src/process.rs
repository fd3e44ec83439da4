//! The server processes the driver starts: this same binary, re-executed in a
//! server mode, with stdin piped so that it exits when the driver goes away.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::procfs::{self, Sample};
use crate::servers::{ANNOUNCE, EXIT_WITH_STDIN};

/// A running server process.
pub struct ServerProcess {
    pub name: &'static str,
    pub addr: SocketAddr,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl ServerProcess {
    /// Starts `sg-bench <args> --exit-with-stdin` and waits (at most 60 s) for the
    /// address it prints. Its other output goes to stderr, prefixed with `[name]`.
    pub fn spawn(name: &'static str, args: &[OsString], env: &[(&str, &str)]) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find the sg-bench binary: {e}"))?;
        let mut command = Command::new(exe);
        command.args(args).arg(EXIT_WITH_STDIN).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().map_err(|e| format!("cannot start the {name} process: {e}"))?;
        let stdin = child.stdin.take();
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            return Err(format!("the {name} process has no stdout"));
        };
        let (addr_tx, addr_rx) = mpsc::channel();
        // Keeps reading after the address, so that the pipe never fills up and blocks the server.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match line.strip_prefix(ANNOUNCE).map(|a| a.trim().parse::<SocketAddr>()) {
                    Some(Ok(addr)) => {
                        let _ = addr_tx.send(addr);
                    }
                    _ => eprintln!("[{name}] {line}"),
                }
            }
        });
        let mut process = Self { name, addr: SocketAddr::from(([127, 0, 0, 1], 0)), child, stdin };
        if let Ok(addr) = addr_rx.recv_timeout(Duration::from_secs(60)) {
            process.addr = addr;
            return Ok(process);
        }
        let status = process.child.try_wait().ok().flatten();
        Err(format!(
            "the {name} process did not announce its address{}",
            status.map(|s| format!(" (it exited: {s})")).unwrap_or_default()
        ))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time and memory now.
    pub fn sample(&self) -> Result<Sample, String> {
        procfs::sample(self.pid()).map_err(|e| format!("cannot read /proc for the {} process: {e}", self.name))
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ServerProcess {
    /// Closes its stdin (it shuts down), waits up to 5 s, then kills it.
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
