//! peerctl's command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Drive a hive peer and query the tracker.
///
/// Exit status: 0 on success, 2 for a usage error, 1 for a local failure,
/// and 64 + the gRPC status code when a daemon refuses (as grpcurl does):
/// 69 NOT_FOUND, 70 ALREADY_EXISTS, 72 RESOURCE_EXHAUSTED, 78 UNAVAILABLE,
/// 79 DATA_LOSS, 67 INVALID_ARGUMENT, 65 CANCELLED, 71 PERMISSION_DENIED,
/// 80 UNAUTHENTICATED, 76 UNIMPLEMENTED (another kind of daemon at that
/// address: the message names the flag to change); 130 when Ctrl-C stops
/// following a transfer (it goes on in the daemon).
#[derive(Parser, Debug)]
#[command(name = "peerctl", version)]
pub struct Cli {
    /// The tracker's URL (for files and locate). By default the tracker the
    /// daemon at --peer uses, or http://127.0.0.1:65001 if no daemon answers.
    /// HIVE_TRACKER counts as giving it: set, it wins over the daemon's.
    /// Replicas of one tracker: repeat the flag or separate URLs with commas;
    /// each is asked in turn until one answers.
    #[arg(
        long,
        global = true,
        env = "HIVE_TRACKER",
        value_name = "URL[,URL...]",
        value_delimiter = ',',
        value_parser = hive_peer::config::parse_url
    )]
    pub tracker: Vec<String>,

    /// The peer daemon's control socket; by default DIR/.hive/control.sock
    /// of --dir, where the daemon makes it.
    #[arg(long, global = true, env = "HIVE_CONTROL", value_name = "PATH")]
    pub control: Option<PathBuf>,

    /// The share directory of the daemon to drive (its --dir): where its
    /// control socket and cookie are found.
    #[arg(long, global = true, env = "HIVE_DIR", default_value = "hive-share")]
    pub dir: PathBuf,

    /// Drive a daemon over TCP instead (its --control-tcp HOST:PORT); calls
    /// carry its cookie, read from --cookie.
    #[arg(
        long,
        global = true,
        env = "HIVE_PEER",
        value_name = "HOST:PORT",
        value_parser = hive_peer::config::parse_url
    )]
    pub peer: Option<String>,

    /// The cookie file of the daemon at --peer; by default
    /// DIR/.hive/control.cookie of --dir.
    #[arg(long, global = true, env = "HIVE_COOKIE", value_name = "PATH")]
    pub cookie: Option<PathBuf>,

    /// Print JSON on stdout instead of tables (fetch: one event per line).
    #[arg(long, global = true)]
    pub json: bool,

    /// TLS for https:// trackers and a TLS --peer: this member's
    /// certificate, key and the swarm CA.
    #[command(flatten)]
    pub tls: hive_runtime::tls::TlsArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the files the tracker knows, with their holders (seed message 2).
    Files,
    /// Show where a file's chunks are (seed message 3).
    Locate {
        /// The file's name.
        file: String,
    },
    /// Download a whole file from the swarm, or one chunk (seed message 5).
    ///
    /// Every chunk is verified before it is stored, served or registered.
    /// A whole file is a transfer the daemon owns: this command starts it
    /// (or re-attaches to it) and follows its progress. Ctrl-C, a closed
    /// terminal or killing peerctl only stops following: the transfer goes
    /// on in the daemon (`peerctl transfers`, `watch`, `pause`, `cancel`).
    /// When no live holder has a missing chunk it waits, stalled, until one
    /// appears, unless --fail-fast.
    Fetch {
        /// The file's name.
        file: String,
        /// Fetch only this chunk (numbered from 1); the peer then serves it.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        chunk: Option<u32>,
        /// Ask only this holder (HOST:PORT).
        #[arg(long, value_name = "HOST:PORT")]
        from: Option<String>,
        /// Replace an existing file of that name in the daemon's directory.
        #[arg(long)]
        force: bool,
        /// Cap this download at RATE (e.g. 2MiB or 20Mbit a second), under
        /// the daemon's --max-download-rate; whole files only.
        #[arg(long, value_name = "RATE", value_parser = hive_peer::config::parse_rate, conflicts_with = "chunk")]
        max_rate: Option<u64>,
        /// Return as soon as the daemon has accepted the transfer.
        #[arg(long, conflicts_with = "chunk")]
        detach: bool,
        /// Fail (UNAVAILABLE) when no live holder has a missing chunk,
        /// rather than wait for one: for scripts.
        #[arg(long)]
        fail_fast: bool,
    },
    /// List the daemon's transfers: state, progress, rate, ETA, holders.
    Transfers,
    /// Follow one transfer until it is done or failed (Ctrl-C only stops
    /// following).
    Watch {
        /// The file's name.
        file: String,
    },
    /// Pause a transfer; its verified chunks stay, and are served.
    Pause {
        /// The file's name.
        file: String,
    },
    /// Resume a paused or failed transfer (queued until a slot is free).
    Resume {
        /// The file's name.
        file: String,
    },
    /// Stop a transfer and drop it from the list. Its verified chunks stay
    /// (served, and used by a later fetch) unless --remove.
    Cancel {
        /// The file's name.
        file: String,
        /// Delete the verified chunks too (never a completed file).
        #[arg(long)]
        remove: bool,
    },
    /// Share files on the daemon's disk (seed message 1).
    Share {
        /// Files to share; each is shared under its file name.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Chunk size (power of two, 1 KiB-16 MiB; K/M suffixes), instead of
        /// the adaptive one.
        #[arg(long, value_parser = hive_peer::config::parse_size)]
        chunk_size: Option<u64>,
    },
    /// Show what the daemon shares and downloads.
    Status,
    /// Stop sharing a file: the tracker stops listing this peer for it and
    /// the daemon stops serving it (the file stays on disk).
    Unshare {
        /// The file's name.
        file: String,
    },
    /// Leave the tracker and stop the daemon (seed message 6).
    Leave,
    /// Show or change the daemon's rate caps while it runs (until restart).
    ///
    /// RATE is bytes a second with a KiB/MiB/GiB suffix, or bits with
    /// kbit/Mbit/Gbit (50Mbit); 0 removes the cap.
    Limits {
        /// Cap on all uploads together.
        #[arg(long, value_name = "RATE", value_parser = hive_peer::config::parse_rate)]
        up: Option<u64>,
        /// Cap on all downloads together.
        #[arg(long, value_name = "RATE", value_parser = hive_peer::config::parse_rate)]
        down: Option<u64>,
    },
    /// Check a daemon's grpc.health.v1 status (default: the local peer).
    Health {
        /// host:port or URL to check; defaults to the local peer.
        addr: Option<String>,
    },
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
    /// Make a swarm CA and its members' certificates, for TLS (--tls-*).
    #[command(subcommand)]
    Certs(Certs),
}

#[derive(Subcommand, Debug)]
pub enum Certs {
    /// Make a new swarm CA in DIR (ca.pem, and ca.key readable by you
    /// only). Keep DIR private: whoever has ca.key can admit members.
    InitCa {
        /// Where to write it (created; an existing CA is never overwritten).
        dir: PathBuf,
    },
    /// Make member NAME's certificate and key, signed by the CA in --ca,
    /// in OUT/NAME (cert.pem, key.pem, ca.pem), and print the flags that
    /// use them. It is valid for NAME, localhost, 127.0.0.1, ::1 and each
    /// --host: the names others dial this member at.
    New {
        /// The member's name (its certificate's common name).
        name: String,
        /// The CA's directory (from `certs init-ca`).
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// Another host name or IP address the member is dialled at
        /// (repeatable, or comma-separated): its --advertise host.
        #[arg(long = "host", value_delimiter = ',', value_name = "HOST")]
        hosts: Vec<String>,
        /// Where to put the member's directory; by default --ca's.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u64).range(1..=3650))]
        days: u64,
    },
}
