//! The server's resource use, read from `/proc/<pid>`.

use anyhow::Context;
use serde::Serialize;

/// The server's resource use, when its pid is known.
#[derive(Debug, Clone, Copy)]
pub struct ServerProbe {
    pid: u32,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub rss_kib: u64,
}

impl ServerProbe {
    pub fn new(pid: u32) -> anyhow::Result<Self> {
        let probe = Self { pid };
        probe.usage()?;
        Ok(probe)
    }

    /// CPU time used so far (user + system) and the resident set now.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .with_context(|| format!("reading /proc/{}/stat", self.pid))?;
        let after_name = stat
            .rfind(')')
            .map(|end| &stat[end + 2..])
            .context("unexpected /proc stat format")?;
        let fields: Vec<&str> = after_name.split(' ').collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let rss_kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS in /proc status")?;
        // Linux reports CPU time in clock ticks of 1/100 s on every platform it runs on.
        Ok(Usage {
            cpu_seconds: ticks as f64 / 100.0,
            rss_kib,
        })
    }
}
