//! A process's CPU time and memory, read from `/proc` (Linux only).
//!
//! CPU time is `utime + stime` of `/proc/<pid>/stat` (fields 14 and 15, all
//! threads of the process, exited ones included) in clock ticks; memory is
//! `VmRSS` (now) and `VmHWM` (peak since start) of `/proc/<pid>/status`.

use std::io;
use std::time::Duration;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// User + system CPU time, in clock ticks.
    pub ticks: u64,
    /// Resident set size now, KiB.
    pub rss_kib: u64,
    /// Peak resident set size since the process started, KiB.
    pub hwm_kib: u64,
}

/// Clock ticks per second (`getconf CLK_TCK`; 100, the Linux default, if that fails).
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`.
pub fn sample(pid: u32) -> io::Result<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let ticks = stat_ticks(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("cannot parse /proc/{pid}/stat")))?;
    Ok(Sample {
        ticks,
        rss_kib: status_kib(&status, "VmRSS:").unwrap_or(0),
        hwm_kib: status_kib(&status, "VmHWM:").unwrap_or(0),
    })
}

/// The same readings summed over a process and all its descendants (found by
/// their parent pid in `/proc/<pid>/stat`): nginx's master and its workers. For
/// a process without children (the gateway, the simulators) it is [`sample`].
/// A descendant that exits between the two readings of a window takes its CPU
/// time with it; the servers here keep theirs for the whole run.
pub fn sample_tree(pid: u32) -> io::Result<Sample> {
    let mut total = sample(pid)?;
    for child in descendants(pid) {
        // It may have exited since the scan.
        if let Ok(s) = sample(child) {
            total.ticks += s.ticks;
            total.rss_kib += s.rss_kib;
            total.hwm_kib += s.hwm_kib;
        }
    }
    Ok(total)
}

/// Every descendant of `pid` now, from one scan of `/proc`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let parents: Vec<(u32, u32)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, stat_ppid(&std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?)?)))
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found.remove(0);
    found
}

/// The parent pid (field 4) from the text of `/proc/<pid>/stat`.
fn stat_ppid(stat: &str) -> Option<u32> {
    stat[stat.rfind(')')? + 1..].split_whitespace().nth(4 - 3)?.parse().ok()
}

/// The same readings for this process (`/proc/self`).
pub fn sample_self() -> io::Result<Sample> {
    sample(std::process::id())
}

/// CPU time between two samples of the same process.
pub fn cpu_between(before: Sample, after: Sample, ticks_per_second: u64) -> Duration {
    ticks_to_time(after.ticks.saturating_sub(before.ticks), ticks_per_second)
}

/// Clock ticks as time.
pub fn ticks_to_time(ticks: u64, ticks_per_second: u64) -> Duration {
    let nanos_per_tick = 1_000_000_000 / ticks_per_second.max(1);
    Duration::from_nanos(ticks.saturating_mul(nanos_per_tick))
}

/// The soft limit on open file descriptors of a process (`Max open files` in
/// `/proc/<pid>/limits`; `unlimited` is `u64::MAX`).
pub fn max_open_files(pid: u32) -> io::Result<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    soft_open_files(&limits)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("cannot parse /proc/{pid}/limits")))
}

fn soft_open_files(limits: &str) -> Option<u64> {
    let soft = limits.lines().find_map(|line| line.strip_prefix("Max open files"))?.split_whitespace().next()?;
    if soft == "unlimited" { Some(u64::MAX) } else { soft.parse().ok() }
}

/// `utime + stime` from the text of `/proc/<pid>/stat`.
fn stat_ticks(stat: &str) -> Option<u64> {
    // Field 2 (comm) is in parentheses and may itself contain spaces and ')':
    // the fixed fields start after the last ')', with field 3 (state).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` line of `/proc/<pid>/status`, e.g. `VmRSS:` (a tab) `12345 kB`.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| line.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_after_the_command_name() {
        let stat = "4242 (sg bench) x) S 1 4242 4242 0 -1 4194560 1016 0 0 0 250 75 0 0 20 0 3 0 12345 1 2";
        assert_eq!(stat_ticks(stat), Some(325));
        assert_eq!(stat_ticks("garbage"), None);
        assert_eq!(stat_ppid(stat), Some(1));
    }

    #[test]
    fn parses_status_lines() {
        let status = "Name:\tsg-bench\nVmHWM:\t   40960 kB\nVmRSS:\t   20480 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(20_480));
        assert_eq!(status_kib(status, "VmHWM:"), Some(40_960));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn parses_the_open_files_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63711                63711                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(soft_open_files(limits), Some(1024));
        assert_eq!(
            soft_open_files("Max open files            unlimited            unlimited            files"),
            Some(u64::MAX)
        );
        assert_eq!(soft_open_files("Max processes 10 10"), None);
    }

    #[test]
    fn converts_ticks_to_time() {
        let before = Sample { ticks: 100, ..Sample::default() };
        let after = Sample { ticks: 350, ..Sample::default() };
        assert_eq!(cpu_between(before, after, 100), Duration::from_millis(2500));
        assert_eq!(cpu_between(after, before, 100), Duration::ZERO);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn reads_this_process() {
        let s = sample_self().unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib, "{s:?}");
        assert!(max_open_files(std::process::id()).unwrap() > 0);
        let tree = sample_tree(std::process::id()).unwrap();
        assert!(tree.ticks >= s.ticks && tree.rss_kib > 0, "{tree:?}");
    }
}
