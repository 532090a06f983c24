//! Starting hive's daemons from a benchmark, the way scripts do: on port 0,
//! learning the address from the `listening on ADDR` line, and reading what
//! the kernel says about them.

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// A running daemon; killed (SIGKILL) when dropped.
pub struct Daemon {
    pub child: Child,
    pub addr: String,
    pub pid: u32,
    /// When it was spawned.
    pub started: Instant,
    /// When it printed its address.
    pub bound: Instant,
}

impl Daemon {
    /// Starts `bin` with `args` (which must make it listen on port 0 or a
    /// known port) and waits for its `listening on ADDR` line. Its stderr goes
    /// to `log`.
    pub async fn start(bin: &Path, args: &[String], log: &Path) -> anyhow::Result<Self> {
        let log = std::fs::File::create(log).with_context(|| format!("{}", log.display()))?;
        let started = Instant::now();
        let mut child = Command::new(bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let pid = child.id().context("the daemon exited at once")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    return Ok(addr.trim().to_owned());
                }
            }
            bail!("{} exited before listening", bin.display())
        })
        .await
        .context("timed out waiting for `listening on`")??;
        let bound = Instant::now();
        // Keep draining stdout so the daemon never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            addr,
            pid,
            started,
            bound,
        })
    }

    /// SIGKILL, and wait until it is gone.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// Memory of a process, from /proc/PID/status, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// Resident now (VmRSS).
    pub rss_kib: u64,
    /// Peak resident (VmHWM).
    pub peak_kib: u64,
}

pub fn memory(pid: u32) -> anyhow::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(Memory {
        rss_kib: field("VmRSS:"),
        peak_kib: field("VmHWM:"),
    })
}

/// CPU time (user + system) a process has used so far, in seconds, from
/// /proc/PID/stat (in clock ticks of 1/100 s, as on every Linux build here).
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields after it do not.
    let rest = stat
        .rsplit_once(") ")
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("short /proc stat")?.parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}
