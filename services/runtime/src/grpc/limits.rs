//! What one client may hold of a gRPC server, as flags every hive daemon
//! takes (docs/RELIABILITY.md: RE-6, RE-8), and the process's open-files
//! limit they are measured against.

use std::time::Duration;

use tracing::{info, warn};

/// Connections and streams a client may hold, and the answers in flight.
#[derive(Debug, Clone, clap::Args)]
pub struct Limits {
    /// Concurrent streams (calls) one connection may have open; more wait
    /// at the client.
    #[arg(long, env = "HIVE_MAX_STREAMS", default_value_t = 128)]
    pub max_streams: u32,

    /// Connections one source address may hold at once (0: no cap). At the
    /// cap, its connection idle longest is closed to make room, or the new
    /// one is refused if none is idle.
    #[arg(long, env = "HIVE_MAX_CONNS_PER_IP", default_value_t = 256)]
    pub max_conns_per_ip: usize,

    /// Connections the daemon holds in all on one port, each port counting
    /// its own (0: the open-files limit less a reserve of an eighth, at
    /// least 64, for its own files and dials).
    #[arg(long, env = "HIVE_MAX_CONNS", default_value_t = 0)]
    pub max_conns: usize,

    /// Answer bytes the daemon holds for clients that have not read them,
    /// in MiB; past it, new calls get RESOURCE_EXHAUSTED (Health excepted).
    #[arg(long, env = "HIVE_ANSWER_BUDGET_MIB", default_value_t = 64)]
    pub answer_budget_mib: usize,

    /// A stream whose client keeps its flow-control window shut this long
    /// is ended, with its connection (HTTP/2 gives a server no other way).
    #[arg(long, env = "HIVE_SEND_DEADLINE", default_value = "20s", value_parser = humantime::parse_duration)]
    pub send_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            limits: Limits,
        }
        <Defaults as clap::Parser>::parse_from(["daemon"]).limits
    }
}

impl Limits {
    /// Refuses settings that cannot work, naming the flag.
    pub fn check(&self) -> Result<(), String> {
        if self.max_streams == 0 {
            return Err("--max-streams must be at least 1".into());
        }
        if self.answer_budget_mib == 0 {
            return Err("--answer-budget-mib must be at least 1".into());
        }
        if self.send_deadline.is_zero() {
            return Err("--send-deadline must be above zero".into());
        }
        Ok(())
    }

    /// The cap on connections in all: `--max-conns`, or the open-files
    /// limit less its reserve.
    pub fn total_conns(&self) -> usize {
        if self.max_conns > 0 {
            return self.max_conns;
        }
        let limit = open_files_limit() as usize;
        limit.saturating_sub(reserve(limit)).max(1)
    }

    pub fn answer_budget_bytes(&self) -> usize {
        self.answer_budget_mib.saturating_mul(1 << 20)
    }
}

/// Descriptors kept back from connections: an eighth of the limit, at least 64.
fn reserve(limit: usize) -> usize {
    (limit / 8).max(64)
}

/// The soft open-files limit now (1024, the usual default, if unknown).
pub fn open_files_limit() -> u64 {
    use rustix::process::{Resource, getrlimit};
    getrlimit(Resource::Nofile).current.unwrap_or(1024)
}

/// Raises the soft open-files limit to the hard one, as production servers
/// do at start (a service's soft limit is often 1,024, too few for its
/// connections); returns the limit now in force.
pub fn raise_open_files_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    let (Some(soft), hard) = (before.current, before.maximum) else {
        return u64::MAX;
    };
    // An unlimited hard limit cannot be the soft one for files; keep the
    // soft limit then.
    let Some(hard) = hard else { return soft };
    if hard <= soft {
        return soft;
    }
    let raised = Rlimit {
        current: Some(hard),
        maximum: Some(hard),
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            info!(
                from = soft,
                to = hard,
                "open-files limit raised to the hard limit"
            );
            hard
        }
        Err(e) => {
            warn!(soft, hard, error = %e, "open-files limit could not be raised");
            soft
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_sane_and_nonsense_is_refused() {
        let limits = Limits::default();
        assert_eq!(limits.check(), Ok(()));
        assert_eq!(limits.max_streams, 128);
        assert_eq!(limits.answer_budget_bytes(), 64 << 20);
        assert!(limits.total_conns() >= 1);
        for bad in [
            Limits {
                max_streams: 0,
                ..Limits::default()
            },
            Limits {
                answer_budget_mib: 0,
                ..Limits::default()
            },
            Limits {
                send_deadline: Duration::ZERO,
                ..Limits::default()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_reserve_is_an_eighth_and_at_least_64() {
        assert_eq!(reserve(1024), 128);
        assert_eq!(reserve(256), 64);
        assert_eq!(
            Limits {
                max_conns: 10,
                ..Limits::default()
            }
            .total_conns(),
            10
        );
    }
}
