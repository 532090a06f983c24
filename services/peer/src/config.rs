//! The peer daemon's settings: clap flags, each with an `HIVE_*` twin.

use std::{path::PathBuf, time::Duration};

use clap::Parser;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// The tracker's URL: http://HOST:PORT, or https://HOST:PORT with
    /// --tls-cert, --tls-key and --tls-ca (a peer with TLS dials nothing in
    /// plaintext). Replicas of one tracker on a shared store: repeat the
    /// flag or separate URLs with commas (HIVE_TRACKER too); the first that
    /// answers is used, and when it stops answering the next, keeping the
    /// session.
    #[arg(
        long,
        env = "HIVE_TRACKER",
        value_name = "URL[,URL...]",
        default_value = "http://127.0.0.1:65001",
        value_delimiter = ',',
        value_parser = parse_url
    )]
    pub tracker: Vec<String>,

    /// Directory whose files are shared at start, and where downloads land
    /// (created if missing). Hive keeps its own state in DIR/.hive.
    #[arg(long, env = "HIVE_DIR", default_value = "hive-share")]
    pub dir: PathBuf,

    /// A directory whose files `peerctl share` may share, besides --dir
    /// (repeatable). A path is resolved with every link first: one that
    /// leads out of every root is refused (PERMISSION_DENIED).
    #[arg(
        long = "share-root",
        env = "HIVE_SHARE_ROOTS",
        value_delimiter = ',',
        value_name = "PATH"
    )]
    pub share_roots: Vec<PathBuf>,

    /// How often the watcher looks at --dir: new files there are shared,
    /// and shared files deleted, replaced or edited on disk are withdrawn
    /// (an edited one is hashed and offered again). 0s turns it off; a file
    /// deleted or replaced is then still caught before it is served.
    #[arg(long, env = "HIVE_WATCH_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub watch_interval: Duration,

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

    /// Most chunk uploads served at once; more wait (see
    /// --upload-queue-wait) or are refused (RESOURCE_EXHAUSTED).
    #[arg(long, env = "HIVE_MAX_UPLOADS", default_value_t = 32)]
    pub max_uploads: usize,

    /// Most of those uploads one source address may hold at once, so that
    /// one client cannot take every slot; 0 means a quarter of
    /// --max-uploads (at least 1).
    #[arg(long, env = "HIVE_MAX_UPLOADS_PER_ADDRESS", default_value_t = 0)]
    pub max_uploads_per_address: usize,

    /// How long a chunk request waits for an upload slot (in turn with the
    /// other addresses waiting) before RESOURCE_EXHAUSTED; 0s refuses at
    /// once.
    #[arg(long, env = "HIVE_UPLOAD_QUEUE_WAIT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub upload_queue_wait: Duration,

    /// An upload whose reader takes less than this (bytes a second, e.g.
    /// 32KiB or 256kbit) over a --drain-window is cut and its slot freed;
    /// 0 turns the rule off. Time spent waiting on --max-upload-rate is not
    /// counted.
    #[arg(long, env = "HIVE_MIN_UPLOAD_RATE", default_value = "32KiB", value_parser = parse_rate)]
    pub min_upload_rate: u64,

    /// The window --min-upload-rate is measured over.
    #[arg(long, env = "HIVE_DRAIN_WINDOW", default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_window: Duration,

    /// Cap on all uploads together, in bytes a second (e.g. 10MiB, or 50Mbit
    /// in bits); 0 is unlimited. Changeable at run time: `peerctl limits`.
    #[arg(long, env = "HIVE_MAX_UPLOAD_RATE", default_value = "0", value_parser = parse_rate)]
    pub max_upload_rate: u64,

    /// Cap on all downloads together, like --max-upload-rate; a download
    /// may have its own lower cap too (`peerctl fetch --max-rate`).
    #[arg(long, env = "HIVE_MAX_DOWNLOAD_RATE", default_value = "0", value_parser = parse_rate)]
    pub max_download_rate: u64,

    /// Most chunk requests in flight to one holder while downloading. Within
    /// it a download keeps about twice what the holder delivers to it in a
    /// round trip (its measured rate × answer time), at least 2 unless the
    /// holder says it is busy.
    #[arg(long, env = "HIVE_PER_HOLDER", default_value_t = 16)]
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

    /// The longest a download waits before asking the tracker again for
    /// new holders (every 0.25 s while the swarm moves; after an answer with
    /// no news, twice the last wait), and the wait while it is stalled.
    #[arg(long, env = "HIVE_RELOCATE_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub relocate_interval: Duration,

    /// After a download, read the whole file back from disk and verify it
    /// again before it gets its name (chunks are always verified as they
    /// arrive; this also catches damage on the way to disk, at the cost of a
    /// second pass over the file).
    #[arg(long, env = "HIVE_VERIFY_ON_FINISH")]
    pub verify_on_finish: bool,

    /// Transfers (whole-file downloads) running at once; the rest wait,
    /// queued, in the order asked for.
    #[arg(long, env = "HIVE_MAX_ACTIVE_TRANSFERS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_active_transfers: u64,

    /// A program run when a transfer completes, with the file's path and
    /// name as its arguments (and as HIVE_FILE_PATH, HIVE_FILE_NAME); run
    /// directly, not by a shell. Its exit status is logged and shown by
    /// `peerctl transfers`.
    #[arg(long, env = "HIVE_ON_COMPLETE", value_name = "CMD")]
    pub on_complete: Option<PathBuf>,

    /// On shutdown, how long running uploads may take to finish.
    #[arg(long, env = "HIVE_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub grace: Duration,

    /// Connections, streams and unread answers one client may hold of the
    /// public port (the control port: the streams, the answer budget and
    /// the total only, as it is loopback).
    #[command(flatten)]
    pub transport: hive_runtime::grpc::Limits,

    /// TLS with a swarm CA on the public port, the TCP control port and
    /// every dial (mutual: only members may connect).
    #[command(flatten)]
    pub tls: hive_runtime::tls::TlsArgs,
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

/// A daemon's URL, `http://HOST:PORT`, `https://HOST:PORT` or `HOST:PORT`
/// (https:// with --tls-*, else http://). Any other scheme is refused.
pub fn parse_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("an empty URL; give http://HOST:PORT or https://HOST:PORT".into());
    }
    match s.split_once("://") {
        None => Ok(s.to_owned()),
        Some((scheme, _))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            Ok(s.to_owned())
        }
        Some((scheme, rest)) => Err(format!(
            "hive speaks gRPC over http:// or https:// only, not {scheme}://; give https://{rest}"
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

impl Config {
    /// The slots one address may hold (--max-uploads-per-address).
    pub fn uploads_per_address(&self) -> usize {
        match self.max_uploads_per_address {
            0 => self.max_uploads / 4,
            n => n,
        }
        .clamp(1, self.max_uploads.max(1))
    }
}

/// A rate in bytes a second: a size as [`parse_size`] takes it (10MiB), or
/// bits with a decimal unit (kbit, Mbit, Gbit: 50Mbit is 6,250,000 bytes);
/// an optional `/s` after either. 0 means unlimited.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t).trim_end();
    let lower = t.to_ascii_lowercase();
    let bits = [
        ("kbit", 1_000u64),
        ("mbit", 1_000_000),
        ("gbit", 1_000_000_000),
        ("bit", 1),
    ]
    .into_iter()
    .find_map(|(unit, scale)| {
        lower
            .strip_suffix(unit)
            .map(|n| (n.trim().to_owned(), scale))
    });
    match bits {
        Some((n, scale)) => {
            let n: u64 = n
                .parse()
                .map_err(|_| format!("not a rate: {s:?} (e.g. 10MiB or 50Mbit)"))?;
            n.checked_mul(scale)
                .map(|b| b / 8)
                .ok_or_else(|| format!("{s:?} is too large"))
        }
        None => parse_size(t).map_err(|_| format!("not a rate: {s:?} (e.g. 10MiB or 50Mbit)")),
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_rate, parse_size, parse_url};

    #[test]
    fn rates_parse_in_bytes_or_bits() {
        assert_eq!(parse_rate("0"), Ok(0));
        assert_eq!(parse_rate("10MiB"), Ok(10 << 20));
        assert_eq!(parse_rate("10 MiB/s"), Ok(10 << 20));
        assert_eq!(parse_rate("512k"), Ok(512 << 10));
        assert_eq!(parse_rate("50Mbit"), Ok(6_250_000));
        assert_eq!(parse_rate("50mbit/s"), Ok(6_250_000));
        assert_eq!(parse_rate("256kbit"), Ok(32_000));
        assert_eq!(parse_rate("1Gbit"), Ok(125_000_000));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("-1MiB").is_err());
        assert!(parse_rate("99999999999999Gbit").is_err());
    }

    #[test]
    fn only_plain_http_urls_parse() {
        assert_eq!(parse_url("http://h:1").as_deref(), Ok("http://h:1"));
        assert_eq!(parse_url("HTTP://h:1").as_deref(), Ok("HTTP://h:1"));
        assert_eq!(parse_url("h:1").as_deref(), Ok("h:1"));
        assert_eq!(parse_url("https://h:1").as_deref(), Ok("https://h:1"));
        assert_eq!(parse_url("HTTPS://h:1").as_deref(), Ok("HTTPS://h:1"));
        assert!(parse_url("grpcs://h:1").is_err());
        assert_eq!(parse_url(" http://h:1 ").as_deref(), Ok("http://h:1"));
        assert!(parse_url("").is_err());
    }

    #[derive(clap::Parser)]
    struct Peer {
        #[command(flatten)]
        config: super::Config,
    }

    fn trackers(args: &[&str]) -> Result<Vec<String>, String> {
        use clap::Parser;
        let args = std::iter::once("peer").chain(args.iter().copied());
        Peer::try_parse_from(args)
            .map(|p| p.config.tracker)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn tracker_replicas_are_repeated_or_comma_separated() {
        let ab = ["http://a:1", "http://b:2"];
        assert_eq!(trackers(&[]).unwrap(), ["http://127.0.0.1:65001"]);
        assert_eq!(
            trackers(&["--tracker", "http://a:1,http://b:2"]).unwrap(),
            ab
        );
        assert_eq!(trackers(&["--tracker=http://a:1, http://b:2"]).unwrap(), ab);
        let repeated = ["--tracker", "http://a:1", "--tracker", "b:3,http://c:4"];
        assert_eq!(
            trackers(&repeated).unwrap(),
            ["http://a:1", "b:3", "http://c:4"]
        );
        // Each URL is checked: one of another scheme refuses the list.
        let e = trackers(&["--tracker", "http://a:1,grpc://b:2"]).unwrap_err();
        assert!(e.contains("--tracker") && e.contains("grpc://"), "{e}");
        assert!(trackers(&["--tracker", "http://a:1,,http://b:2"]).is_err());
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
