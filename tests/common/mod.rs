//! The shared end-to-end harness: trackers and peers as real processes, on
//! port 0, in temporary directories.
//!
//! - Readiness comes from the daemons themselves: the `listening on` /
//!   `control on` lines they print once bound, and the peer's health turning
//!   SERVING (watched, not polled) once the tracker has accepted it.
//! - Each daemon is killed when its guard drops; its stderr goes to a log
//!   file that is printed if the test fails.
//! - The daemons are built once per test binary (`cargo build --bins -p
//!   hive-tracker -p hive-peer`), in the same profile as the tests, so they are never stale.
#![allow(dead_code)]

pub mod procfs;
pub mod rawh2;

pub mod download;
pub mod evil;
pub mod metrics;
pub mod web;

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::OnceLock,
    time::Duration,
};

use hive::pb::{
    control::control_client::ControlClient, peer::peer_client::PeerClient,
    tracker::tracker_client::TrackerClient,
};
use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Runs `fut`, failing the test if it takes longer than `secs` seconds.
/// The future is dropped only while the panic unwinds, so the daemons it
/// holds still print their logs.
pub async fn within<F: Future>(secs: u64, fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    match tokio::time::timeout(Duration::from_secs(secs), fut.as_mut()).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {secs} s"),
    }
}

/// A workspace binary's command without any `HIVE_*` setting from the
/// test's environment, as a user who set none would run it.
pub fn clean_command(name: &str) -> Command {
    let mut cmd = Command::new(bin(name));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HIVE_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// What cargo sets (by prefix) in the environment of a test it runs.
const CARGO_TEST_RUN_VARS: [&str; 7] = [
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
];

/// The path of a workspace binary, built once per test process (a no-op
/// when `scripts/test.sh` or an earlier suite built them).
pub fn bin(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        // target/<profile>/deps/<test binary>
        let exe = std::env::current_exe().expect("test binary path");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>")
            .to_owned();
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args([
            "build",
            "--quiet",
            "--bins",
            "-p",
            "hive-tracker",
            "-p",
            "hive-peer",
        ]);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        // Without the variables cargo sets for this test run (the package's
        // name, its manifest's directory, ...): a build script that watches
        // them (ring's does) would see another environment than the `cargo
        // test` that built the suite, and rebuild ring, rustls, tonic and the
        // daemons here, inside the first test's timeout, on every run.
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            if CARGO_TEST_RUN_VARS.iter().any(|v| name.starts_with(v)) {
                cmd.env_remove(&key);
            }
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building the daemons failed");
        dir
    });
    dir.join(name)
}

/// Deterministic, incompressible-looking test data.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = vec![0u8; len];
    rng.fill(&mut out);
    out
}

/// A running daemon process; killed on drop.
pub struct Daemon {
    child: Child,
    name: String,
    log: PathBuf,
    /// The addresses it printed, in order.
    pub addrs: Vec<SocketAddr>,
    /// The socket paths it printed (`control on PATH`), in order.
    pub paths: Vec<PathBuf>,
}

/// A peer's control socket: `Copy`, like the addresses beside it (the path
/// is leaked, a few bytes a peer, so the handle can be).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlAddr(&'static Path);

impl ControlAddr {
    pub fn new(path: PathBuf) -> Self {
        Self(Box::leak(path.into_boxed_path()))
    }

    pub fn path(self) -> &'static Path {
        self.0
    }
}

impl std::fmt::Display for ControlAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.display().fmt(f)
    }
}

/// A connected channel to a peer's control socket.
pub async fn control_channel(control: ControlAddr) -> Channel {
    within(30, hive_peer::access::connect_socket(control.path()))
        .await
        .expect("connect to the control socket")
}

impl Daemon {
    /// Starts `bin` with `args` and waits for it to print `lines` addresses
    /// (or socket paths).
    pub async fn start(bin_name: &str, args: &[String], log: PathBuf, lines: usize) -> Self {
        Self::start_in(&Launch::default(), bin_name, args, log, lines).await
    }

    /// [`Daemon::start`] as `launch` says: under a wrapper command (e.g.
    /// `prlimit --nofile=256:256 --`), with extra environment variables.
    pub async fn start_in(
        launch: &Launch,
        bin_name: &str,
        args: &[String],
        log: PathBuf,
        lines: usize,
    ) -> Self {
        let mut command = match launch.wrapper.split_first() {
            None => Command::new(bin(bin_name)),
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin(bin_name));
                c
            }
        };
        let mut child = command
            .args(args)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,hive=debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {bin_name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut reader = BufReader::new(stdout).lines();
        let mut addrs = Vec::new();
        let mut paths = Vec::new();
        while addrs.len() + paths.len() < lines {
            let line = within(30, reader.next_line())
                .await
                .expect("read daemon stdout")
                .unwrap_or_else(|| panic!("{bin_name} exited early:\n{}", tail(&log)));
            let last = line.rsplit(' ').next().unwrap_or_default();
            // A URL (`web UI listening on http://ADDR/`) counts as its address.
            let bare = last.trim_start_matches("http://").trim_end_matches('/');
            if let Ok(addr) = bare.parse() {
                addrs.push(addr);
            } else if last.starts_with('/') {
                paths.push(PathBuf::from(last));
            }
        }
        // Keep draining stdout so the daemon never blocks or hits EPIPE.
        tokio::spawn(async move { while let Ok(Some(_)) = reader.next_line().await {} });
        Self {
            child,
            name: bin_name.to_owned(),
            log,
            addrs,
            paths,
        }
    }

    /// The `metrics on` address, for a daemon started with `--metrics`.
    pub fn metrics_addr(&self) -> SocketAddr {
        *self.addrs.last().expect("started with --metrics")
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// SIGKILL: no cleanup of any kind.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends a signal (TERM, STOP, CONT, ...).
    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Waits for the process to exit by itself.
    pub async fn wait(&mut self) -> ExitStatus {
        self.child.wait().await.expect("wait for daemon")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- {} log ({}) ----\n{}",
                self.name,
                self.log.display(),
                tail(&self.log)
            );
        }
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// How to start a daemon, beyond its flags.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// A command to run it under, with its arguments.
    pub wrapper: Vec<String>,
    /// Extra environment variables (`HIVE_*` twins of flags, which an
    /// older build simply ignores).
    pub env: Vec<(String, String)>,
}

/// A tracker process with its own data directory.
pub struct TestTracker {
    pub daemon: Daemon,
    pub addr: SocketAddr,
    pub data: TempDir,
    args: Vec<String>,
}

impl TestTracker {
    /// A tracker with an in-memory catalog and default settings.
    pub async fn start() -> Self {
        Self::start_with(&["--in-memory"]).await
    }

    /// A tracker with extra flags (`--ttl 1s`, ...), persisting to a temp dir
    /// unless `--in-memory` is among them.
    pub async fn start_with(extra: &[&str]) -> Self {
        Self::start_in(&Launch::default(), extra).await
    }

    /// [`TestTracker::start_with`] as `launch` says.
    pub async fn start_in(launch: &Launch, extra: &[&str]) -> Self {
        let data = tempfile::tempdir().expect("tempdir");
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let daemon = Self::spawn_in(launch, &data, "127.0.0.1:0", &args).await;
        Self {
            addr: daemon.addrs[0],
            daemon,
            data,
            args,
        }
    }

    /// A tracker on an existing data directory (its `catalog` inside), as
    /// a restart finds it.
    pub async fn spawn_on(data: TempDir, extra: &[&str]) -> Self {
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let daemon = Self::spawn(&data, "127.0.0.1:0", &args).await;
        Self {
            addr: daemon.addrs[0],
            daemon,
            data,
            args,
        }
    }

    async fn spawn(data: &TempDir, listen: &str, extra: &[String]) -> Daemon {
        Self::spawn_in(&Launch::default(), data, listen, extra).await
    }

    async fn spawn_in(launch: &Launch, data: &TempDir, listen: &str, extra: &[String]) -> Daemon {
        let mut args = vec![
            "--listen".to_owned(),
            listen.to_owned(),
            "--data-dir".to_owned(),
            data.path().join("catalog").display().to_string(),
        ];
        args.extend(extra.iter().cloned());
        let lines = 1 + usize::from(extra.iter().any(|a| a == "--metrics"));
        let log = data.path().join("tracker.log");
        Daemon::start_in(launch, "tracker", &args, log, lines).await
    }

    /// Kills the tracker (SIGKILL) and starts it again on the same address
    /// and data directory.
    pub async fn restart_hard(&mut self) {
        self.daemon.kill().await;
        self.daemon = Self::spawn(&self.data, &self.addr.to_string(), &self.args).await;
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn client(&self) -> TrackerClient<Channel> {
        TrackerClient::new(channel(self.addr).await)
    }

    /// Locate `name` (with its manifest); the call must succeed.
    pub async fn locate(&self, name: &str) -> hive::pb::tracker::LocateResponse {
        self.client()
            .await
            .locate(hive::pb::tracker::LocateRequest {
                name: name.into(),
                ..Default::default()
            })
            .await
            .expect("locate")
            .into_inner()
    }
}

/// A peer process sharing its own temporary directory.
pub struct TestPeer {
    pub daemon: Daemon,
    /// The public Peer service.
    pub listen: SocketAddr,
    /// The local Control service's socket.
    pub control: ControlAddr,
    /// Its TCP control port, for a peer started with `--control-tcp`.
    pub control_tcp: Option<SocketAddr>,
    /// Its web UI, for a peer started with `--web`.
    pub web: Option<SocketAddr>,
    pub dir: PathBuf,
    _tmp: TempDir,
    tracker: String,
}

impl TestPeer {
    /// A peer sharing `files` (name, contents), registered with `tracker`.
    pub async fn start(tracker: &TestTracker, files: &[(&str, &[u8])]) -> Self {
        Self::start_with(&tracker.url(), files, &[]).await
    }

    /// A peer with extra flags, registered once it returns.
    pub async fn start_with(tracker: &str, files: &[(&str, &[u8])], extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("share");
        std::fs::create_dir_all(&dir).expect("share dir");
        for (name, contents) in files {
            std::fs::write(dir.join(name), contents).expect("write shared file");
        }
        let peer = Self::spawn(tracker, tmp, dir, extra).await;
        peer.registered().await;
        peer
    }

    /// Starts a peer on an existing directory (a restart), without waiting
    /// for registration.
    pub async fn spawn(tracker: &str, tmp: TempDir, dir: PathBuf, extra: &[&str]) -> Self {
        let mut args: Vec<String> = [
            "--tracker",
            tracker,
            "--listen",
            "127.0.0.1:0",
            "--dir",
            &dir.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = tmp.path().join(format!("peer-{}.log", fastrand::u32(..)));
        let lines = 2
            + usize::from(extra.contains(&"--metrics"))
            + usize::from(extra.contains(&"--control-tcp"))
            + usize::from(extra.contains(&"--web"));
        let daemon = Daemon::start("peer", &args, log, lines).await;
        Self {
            listen: daemon.addrs[0],
            control: ControlAddr::new(daemon.paths[0].clone()),
            control_tcp: extra.contains(&"--control-tcp").then(|| daemon.addrs[1]),
            // Printed last.
            web: extra
                .contains(&"--web")
                .then(|| *daemon.addrs.last().expect("web address")),
            daemon,
            dir,
            _tmp: tmp,
            tracker: tracker.to_owned(),
        }
    }

    /// Kills this peer (SIGKILL) and starts it again on the same directory.
    pub async fn restart_hard(self, extra: &[&str]) -> Self {
        let Self {
            mut daemon,
            dir,
            _tmp,
            tracker,
            ..
        } = self;
        daemon.kill().await;
        Self::spawn(&tracker, _tmp, dir, extra).await
    }

    /// Waits until the tracker has accepted this peer: its health turns
    /// SERVING (watched via grpc.health.v1 Watch, not polled).
    pub async fn registered(&self) {
        let mut health = HealthClient::new(control_channel(self.control).await);
        let mut stream = within(
            30,
            health.watch(HealthCheckRequest {
                service: String::new(),
            }),
        )
        .await
        .expect("health watch")
        .into_inner();
        loop {
            let msg = within(30, stream.message())
                .await
                .expect("health stream")
                .expect("health stream ended");
            if msg.status == ServingStatus::Serving as i32 {
                return;
            }
        }
    }

    pub async fn control_client(&self) -> ControlClient<Channel> {
        ControlClient::new(control_channel(self.control).await)
    }

    /// The cookie TCP control calls must carry.
    pub fn cookie(&self) -> PathBuf {
        hive_peer::access::default_cookie(&self.dir)
    }

    pub async fn peer_client(&self) -> PeerClient<Channel> {
        PeerClient::new(channel(self.listen).await)
    }

    /// Runs `peerctl` against this peer and its tracker.
    pub async fn peerctl(&self, args: &[&str]) -> std::process::Output {
        peerctl(&self.tracker, &self.control.to_string(), args).await
    }
}

/// Runs `peerctl` with the given tracker and peer control socket.
pub async fn peerctl(tracker: &str, control: &str, args: &[&str]) -> std::process::Output {
    within(
        120,
        Command::new(bin("peerctl"))
            .args(["--tracker", tracker, "--control", control])
            .args(args)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("run peerctl")
}

/// A connected channel to `addr`.
pub async fn channel(addr: SocketAddr) -> Channel {
    within(
        30,
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect(),
    )
    .await
    .expect("connect")
}

/// Reads chunk `n` of `name` from a peer's Peer service.
pub async fn get_chunk(peer: SocketAddr, name: &str, n: u32) -> Result<Vec<u8>, tonic::Status> {
    let mut client = PeerClient::new(channel(peer).await);
    let mut stream = client
        .get_chunk(hive::pb::peer::GetChunkRequest {
            name: name.into(),
            chunk: n,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(msg) = stream.message().await? {
        out.extend_from_slice(&msg.data);
    }
    Ok(out)
}

/// The bytes of chunk `n` (from 1) of `data` with the adaptive chunk size.
pub fn chunk_of(data: &[u8], n: u32) -> &[u8] {
    let layout = hive::Layout::adaptive(data.len() as u64).expect("layout");
    let r = layout.range(layout.chunk(u64::from(n)).expect("chunk in range"));
    &data[r.start as usize..r.end as usize]
}

/// The wire manifest of a file named `name` holding `data`.
pub fn manifest(name: &str, data: &[u8]) -> hive::pb::types::Manifest {
    manifest_with(name, data, None)
}

/// How many chunk digests a wire manifest carries (32 bytes each).
pub fn digest_count(m: &hive::pb::types::Manifest) -> usize {
    m.chunk_digests.len() / 32
}

/// Swaps two chunk digests of a wire manifest.
pub fn swap_digests(m: &mut hive::pb::types::Manifest, a: usize, b: usize) {
    let mut digests: Vec<[u8; 32]> = m
        .chunk_digests
        .chunks_exact(32)
        .map(|d| d.try_into().unwrap())
        .collect();
    digests.swap(a, b);
    m.chunk_digests = digests.concat().into();
}

/// The same, with a chosen chunk size.
pub fn manifest_with(
    name: &str,
    data: &[u8],
    chunk_size: Option<u32>,
) -> hive::pb::types::Manifest {
    let mut tmp = tempfile::tempfile().expect("tempfile");
    std::io::Write::write_all(&mut tmp, data).expect("write");
    let chunk_size = chunk_size.map(|c| hive::ChunkSize::new(u64::from(c)).expect("chunk size"));
    let m = hive::Manifest::from_file(
        &tmp,
        data.len() as u64,
        hive::FileName::new(name).expect("name"),
        chunk_size,
    )
    .expect("hash");
    (&m).into()
}

/// Everything the tracker would tell anyone: every file with its holders
/// (sorted) and per-chunk counts. Equal snapshots mean nothing changed.
pub async fn snapshot(tracker: &TestTracker) -> String {
    snapshot_via(&mut tracker.client().await).await
}

/// [`snapshot`] through a given client.
pub async fn snapshot_via(client: &mut TrackerClient<Channel>) -> String {
    use hive::pb::tracker::{ListFilesRequest, LocateRequest};
    let files = client
        .list_files(ListFilesRequest {
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .expect("list")
        .into_inner()
        .files;
    let mut out = String::new();
    for f in files {
        let found = client
            .locate(LocateRequest {
                name: f.name.clone(),
                ..Default::default()
            })
            .await
            .expect("locate")
            .into_inner();
        let mut holders: Vec<String> = found
            .holders
            .iter()
            .map(|h| {
                format!(
                    "{}@{}:{:?}{:?}",
                    h.peer_id, h.addr, h.chunks, h.chunk_bitmap
                )
            })
            .collect();
        holders.sort();
        out += &format!(
            "{} {} {:?} {:?}\n",
            f.name,
            hex(&f.digest),
            holders,
            found.chunk_holders.to_vec()
        );
    }
    out
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Adds a session token to a request.
pub fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        hive_runtime::grpc::TOKEN_METADATA,
        token.parse().expect("ascii token"),
    );
    req
}
