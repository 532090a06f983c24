//! A Redis server's own accounting around a benchmark phase: `CONFIG
//! RESETSTAT` before it, `INFO commandstats` and `INFO cpu` after, turned
//! into what each tracker call costs the server.

use anyhow::Context;
use redis::aio::MultiplexedConnection;

/// A connection for reading one server's statistics.
#[derive(Clone)]
pub struct RedisStats {
    conn: MultiplexedConnection,
}

/// One command's counters since the last reset.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Lower case, as INFO names it (`evalsha`, `mget`, ...).
    pub name: String,
    pub calls: u64,
    /// Server time in the command, in µs. A script's time includes the
    /// commands it calls, which are also counted on their own lines.
    pub usec: u64,
}

/// What a phase of `rpcs` tracker calls cost one Redis server.
#[derive(Debug, Clone, Default)]
pub struct Cost {
    pub rpcs: u64,
    /// The server's CPU time (user + system, every thread) per call, µs:
    /// command execution, socket I/O and protocol parsing.
    pub cpu_us_per_rpc: f64,
    pub commands: Vec<Command>,
}

impl RedisStats {
    /// `url`: `redis://HOST:PORT` or `redis+unix:///PATH`.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).with_context(|| format!("redis URL {url}"))?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("connecting to {url}"))?;
        Ok(Self { conn })
    }

    /// Zeroes the command counters; returns the server's CPU seconds so far.
    pub async fn reset(&self) -> anyhow::Result<f64> {
        let mut c = self.conn.clone();
        redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async::<()>(&mut c)
            .await?;
        Ok(parse_cpu(&self.info("cpu").await?))
    }

    /// The cost of the `rpcs` calls made since [`reset`](Self::reset)
    /// returned `cpu_before`.
    pub async fn cost(&self, cpu_before: f64, rpcs: u64) -> anyhow::Result<Cost> {
        let commands = parse_commandstats(&self.info("commandstats").await?);
        let cpu = parse_cpu(&self.info("cpu").await?);
        Ok(Cost {
            rpcs,
            cpu_us_per_rpc: (cpu - cpu_before) * 1e6 / rpcs.max(1) as f64,
            commands,
        })
    }

    /// `used_memory` in bytes (`INFO memory`).
    pub async fn used_memory(&self) -> anyhow::Result<u64> {
        let text = self.info("memory").await?;
        field(&text, "used_memory")
            .and_then(|v| v.parse().ok())
            .context("INFO memory has no used_memory")
    }

    async fn info(&self, section: &str) -> anyhow::Result<String> {
        let mut c = self.conn.clone();
        Ok(redis::cmd("INFO")
            .arg(section)
            .query_async::<String>(&mut c)
            .await?)
    }
}

impl Cost {
    /// Calls of `name` per tracker call.
    pub fn per_rpc(&self, c: &Command) -> f64 {
        c.calls as f64 / self.rpcs.max(1) as f64
    }

    /// The commands this benchmark's calls sent: those with at least one call
    /// per 100 tracker calls (the rest is the replicas' background sweeps).
    pub fn hot(&self) -> impl Iterator<Item = &Command> {
        self.commands.iter().filter(|c| self.per_rpc(c) >= 0.01)
    }

    /// Server time in commands per tracker call, µs, each command counted
    /// once: when scripts run on every call, their time (which includes the
    /// commands they call) and nothing else; otherwise every hot command.
    /// hive's calls either run scripts or plain commands on their hot path,
    /// never both.
    pub fn command_us_per_rpc(&self) -> f64 {
        let script = |c: &&Command| matches!(c.name.as_str(), "evalsha" | "eval" | "fcall");
        let scripted: Vec<&Command> = self.hot().filter(script).collect();
        let total: u64 = if scripted.iter().map(|c| self.per_rpc(c)).sum::<f64>() >= 0.5 {
            scripted.iter().map(|c| c.usec).sum()
        } else {
            self.hot().filter(|c| !script(c)).map(|c| c.usec).sum()
        };
        total as f64 / self.rpcs.max(1) as f64
    }
}

fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

fn parse_cpu(text: &str) -> f64 {
    ["used_cpu_sys", "used_cpu_user"]
        .iter()
        .filter_map(|f| field(text, f)?.parse::<f64>().ok())
        .sum()
}

/// `cmdstat_NAME:calls=N,usec=N,...` lines; this reader's own INFO and
/// CONFIG calls left out.
fn parse_commandstats(text: &str) -> Vec<Command> {
    let mut out: Vec<Command> = text
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let num = |key: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse().ok())
            };
            Some(Command {
                name: name.to_owned(),
                calls: num("calls")?,
                usec: num("usec")?,
            })
        })
        .filter(|c| !matches!(c.name.as_str(), "info" | "config" | "config|resetstat"))
        .collect();
    out.sort_by_key(|c| std::cmp::Reverse(c.usec));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commandstats_lines_are_read_and_scripts_counted_once() {
        let text = "# Commandstats\r\ncmdstat_evalsha:calls=10,usec=200,usec_per_call=20.00,rejected_calls=0,failed_calls=0\r\ncmdstat_exists:calls=10,usec=20,usec_per_call=2.00\r\ncmdstat_config|resetstat:calls=1,usec=5,usec_per_call=5.00\r\n";
        let cost = Cost {
            rpcs: 10,
            cpu_us_per_rpc: 0.0,
            commands: parse_commandstats(text),
        };
        assert_eq!(cost.commands.len(), 2);
        assert_eq!(cost.command_us_per_rpc(), 20.0);
        let plain = Cost {
            rpcs: 10,
            cpu_us_per_rpc: 0.0,
            commands: parse_commandstats(
                "cmdstat_mget:calls=10,usec=30\ncmdstat_hgetall:calls=10,usec=50\n",
            ),
        };
        assert_eq!(plain.command_us_per_rpc(), 8.0);
        assert_eq!(
            parse_cpu("used_cpu_sys:1.5\r\nused_cpu_user:0.25\r\nused_cpu_sys_children:9\r\n"),
            1.75
        );
    }
}
