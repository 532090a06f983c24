//! The peer daemon's settings: clap flags, each with an `HIVE_*` twin.

use std::{path::PathBuf, time::Duration};

use clap::Parser;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// The tracker's URL: http://HOST:PORT (https:// is refused: hive has no
    /// TLS yet).
    #[arg(long, env = "HIVE_TRACKER", default_value = "http://127.0.0.1:65001", value_parser = parse_url)]
    pub tracker: String,

    /// Directory whose files are shared at start, and where downloads land
    /// (created if missing). Hive keeps its own state in DIR/.hive.
    #[arg(long, env = "HIVE_DIR", default_value = "hive-share")]
    pub dir: PathBuf,

    /// HOST:PORT other peers should dial. By default the tracker uses the
    /// address this peer's requests come from and the port it listens on;
    /// the host part is used only by a tracker run with --trust-advertise.
    #[arg(long, env = "HIVE_ADVERTISE")]
    pub advertise: Option<String>,

    /// Chunk size for the files of --dir (a power of two, 1 KiB-16 MiB, with
    /// an optional KiB/MiB suffix); by default one that keeps a file at about
    /// 1024 chunks.
    #[arg(long, env = "HIVE_CHUNK_SIZE", value_parser = crate::config::parse_size)]
    pub chunk_size: Option<u64>,

    /// Most chunk uploads served at once; more are refused (RESOURCE_EXHAUSTED).
    #[arg(long, env = "HIVE_MAX_UPLOADS", default_value_t = 32)]
    pub max_uploads: usize,

    /// Chunk requests kept in flight to each holder while downloading.
    #[arg(long, env = "HIVE_PER_HOLDER", default_value_t = 4)]
    pub per_holder: usize,

    /// Most holders a download asks the tracker for (BitTorrent's numwant);
    /// the tracker may list fewer, and picks them to cover the chunks held.
    /// Re-Locates bring other holders in; 0 asks for as many as the tracker
    /// lists.
    #[arg(long, env = "HIVE_LOCATE_HOLDERS", default_value_t = hive::wire::LOCATE_HOLDERS)]
    pub locate_holders: u32,

    /// A chunk request that takes longer than this is abandoned and the
    /// chunk asked of another holder.
    #[arg(long, env = "HIVE_CHUNK_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub chunk_timeout: Duration,

    /// An upload whose reader takes no data for this long is aborted.
    #[arg(long, env = "HIVE_SEND_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub send_timeout: Duration,

    /// How often a download asks the tracker for new holders.
    #[arg(long, env = "HIVE_RELOCATE_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub relocate_interval: Duration,

    /// After a download, read the whole file back from disk and verify it
    /// again before it gets its name (chunks are always verified as they
    /// arrive; this also catches damage on the way to disk, at the cost of a
    /// second pass over the file).
    #[arg(long, env = "HIVE_VERIFY_ON_FINISH")]
    pub verify_on_finish: bool,

    /// On shutdown, how long running uploads may take to finish.
    #[arg(long, env = "HIVE_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub grace: Duration,

    /// Connections, streams and unread answers one client may hold of the
    /// public port (the control port: the streams, the answer budget and
    /// the total only, as it is loopback).
    #[command(flatten)]
    pub transport: hive_runtime::grpc::Limits,
}

/// The defaults are exactly what the command line gives with no flags.
impl Default for Config {
    fn default() -> Self {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            config: Config,
        }
        Defaults::parse_from(["peer"]).config
    }
}

/// A daemon's URL, `http://HOST:PORT` or `HOST:PORT`. Any other scheme is
/// refused: `https://` above all, which hive would otherwise use in plaintext
/// (it has no TLS yet).
pub fn parse_url(s: &str) -> Result<String, String> {
    match s.split_once("://") {
        None => Ok(s.to_owned()),
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => Ok(s.to_owned()),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => Err(format!(
            "hive has no TLS yet, so https:// would travel in plaintext; \
             give http://{rest} on a network you trust"
        )),
        Some((scheme, rest)) => Err(format!(
            "hive speaks gRPC over http:// only, not {scheme}://; give http://{rest}"
        )),
    }
}

/// A byte count with an optional K/KiB/M/MiB/G/GiB suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("not a size: {s:?}"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" | "kb" => 10,
        "m" | "mib" | "mb" => 20,
        "g" | "gib" | "gb" => 30,
        _ => return Err(format!("unknown unit in {s:?}")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::{parse_size, parse_url};

    #[test]
    fn only_plain_http_urls_parse() {
        assert_eq!(parse_url("http://h:1").as_deref(), Ok("http://h:1"));
        assert_eq!(parse_url("HTTP://h:1").as_deref(), Ok("HTTP://h:1"));
        assert_eq!(parse_url("h:1").as_deref(), Ok("h:1"));
        assert!(parse_url("https://h:1").is_err());
        assert!(parse_url("HTTPS://h:1").is_err());
        assert!(parse_url("grpcs://h:1").is_err());
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1 MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("x").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }
}
