//! What makes the gateway reload its configuration: SIGHUP, and the config
//! file changing on disk.
//!
//! The file's *directory* is watched, not the file: Kubernetes updates a mounted
//! ConfigMap by writing a new timestamped directory and swapping the `..data`
//! symlink the file's own symlink points through, so the file itself is never
//! written (and a watch on it would follow the old inode). Any change in the
//! directory is debounced, and a reload happens only if the file's bytes
//! differ from the last ones loaded. SIGHUP always reloads (file + environment).
//!
//! A reload re-reads the file with its `SUMMARY_GATEWAY__*` overrides, checks
//! everything `check-config` checks, and hands it to [`App::reload`], which
//! swaps it in whole or rejects it whole.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gateway_config::Config;
use notify::{EventKind, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::state::App;

/// How long a change on disk settles before it is read: an editor's save or a
/// ConfigMap swap is several events in a few milliseconds.
const SETTLE: Duration = Duration::from_millis(150);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    Signal,
    File,
}

impl Trigger {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Signal => "SIGHUP",
            Self::File => "file changed",
        }
    }
}

/// Reloads `app`'s configuration from `path` on SIGHUP and when the file
/// changes, until the app stops. Without a file (the demo) SIGHUP is logged and
/// ignored rather than ending the process, as it would by default.
pub fn watch(app: &Arc<App>, path: Option<PathBuf>) {
    let (tx, rx) = mpsc::channel::<Trigger>(16);
    let stop = app.stopping();
    // Registered before this returns: a SIGHUP from then on reloads instead of
    // ending the process (its default).
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangups) => {
            let (tx, stop) = (tx.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        got = hangups.recv() => if got.is_none() || tx.send(Trigger::Signal).await.is_err() { return },
                        () = stop.cancelled() => return,
                    }
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP: reload by changing the file only"),
    }
    let Some(path) = path else {
        tokio::spawn(async move {
            let mut rx = rx;
            while rx.recv().await.is_some() {
                tracing::info!("SIGHUP: this gateway runs without a configuration file; nothing to reload");
            }
        });
        return;
    };
    // Both before this returns (before the gateway says it listens): a change
    // from then on is seen.
    let watcher = watch_directory(&path, tx);
    let mut loaded = file_digest(&path);
    let app = Arc::clone(app);
    tokio::spawn(async move {
        // The watcher stops when dropped: it lives as long as this task.
        let _watcher = watcher;
        let mut rx = rx;
        loop {
            let trigger = tokio::select! {
                trigger = rx.recv() => match trigger { Some(t) => t, None => return },
                () = stop.cancelled() => return,
            };
            let mut trigger = trigger;
            if trigger == Trigger::File {
                tokio::time::sleep(SETTLE).await;
                // What arrived meanwhile is the same change (or a SIGHUP, which wins).
                while let Ok(more) = rx.try_recv() {
                    if more == Trigger::Signal {
                        trigger = Trigger::Signal;
                    }
                }
            }
            let digest = file_digest(&path);
            if trigger == Trigger::File && digest == loaded {
                continue;
            }
            loaded = digest;
            let (app, path) = (Arc::clone(&app), path.clone());
            // Reading the file and building providers (TLS roots, HTTP clients) blocks.
            let _ = tokio::task::spawn_blocking(move || reload_from(&app, &path, trigger)).await;
        }
    });
}

/// Watches the directory holding `path`; `None` (logged) if it cannot.
fn watch_directory(path: &Path, tx: mpsc::Sender<Trigger>) -> Option<notify::RecommendedWatcher> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let handler = move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !matches!(event.kind, EventKind::Access(_))
        {
            // Full: a reload is already due, which will read the latest file.
            let _ = tx.try_send(Trigger::File);
        }
    };
    let watched = notify::recommended_watcher(handler).and_then(|mut w| {
        w.watch(&dir, RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    match watched {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the configuration's directory: reload with SIGHUP");
            None
        }
    }
}

/// SHA-256 of the file's bytes, following symlinks; `None` if unreadable.
fn file_digest(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|bytes| Sha256::digest(bytes).into())
}

/// Loads `path` and swaps it in, logging the outcome.
fn reload_from(app: &App, path: &Path, trigger: Trigger) {
    let trigger = trigger.as_str();
    for warning in gateway_config::override_warnings() {
        tracing::warn!(%warning, "configuration override");
    }
    let config = match Config::load(&providers::registry::config_types(), path) {
        Ok(config) => config,
        Err(errors) => {
            metrics::counter!(crate::metrics::CONFIG_RELOADS, "result" => "rejected").increment(1);
            let problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
            rejected(trigger, path, &problems);
            return;
        }
    };
    match app.reload(config) {
        Ok(done) => {
            for section in &done.needs_restart {
                tracing::warn!(
                    section,
                    "configuration reload: `{section}` changed but needs a restart; its running values stay"
                );
            }
            if done.changed {
                tracing::info!(
                    trigger,
                    generation = done.generation,
                    fingerprint = %done.fingerprint,
                    "configuration reloaded: new requests use it, requests and jobs in flight finish on theirs"
                );
            } else {
                tracing::info!(trigger, generation = done.generation, "configuration reloaded: nothing changed");
            }
        }
        Err(problems) => rejected(trigger, path, &problems),
    }
}

fn rejected(trigger: &str, path: &Path, problems: &[String]) {
    for problem in problems {
        tracing::error!(trigger, %problem, "configuration reload rejected");
    }
    tracing::error!(
        trigger,
        file = %path.display(),
        problems = problems.len(),
        "configuration reload rejected whole: the running configuration stays"
    );
}
