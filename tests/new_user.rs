//! The rough edges a new user hits first: a second peer on a port already
//! in use, peerctl pointed at the wrong daemon or at an https:// URL without TLS, output
//! into a closed pipe, and a holder whose chunks make hundreds of ranges.
//! Each failure is asserted by its exit status and by the flag its message
//! names, never by the whole text.

mod common;

use std::process::{Output, Stdio};

use common::*;
use hive::pb::{
    tracker::{RegisterRequest, SharedFile},
    types::ChunkRange,
};
use tokio::process::Command;

/// peerctl's exit status for a daemon's refusal with `code`.
fn refused(code: tonic::Code) -> Option<i32> {
    Some(64 + code as i32)
}

/// Runs a workspace binary to its end (at most 30 s), without any `HIVE_*`
/// setting from the test's environment, on an 80-column "terminal".
async fn run(bin_name: &str, args: &[&str]) -> Output {
    let mut cmd = clean_command(bin_name);
    within(
        30,
        cmd.args(args)
            .env("COLUMNS", "80")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|e| panic!("run {bin_name}: {e}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts that `out` failed with `code` and that its one-line message names
/// every one of `words` (a flag, a command).
#[track_caller]
fn failed_naming(out: &Output, code: Option<i32>, words: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), code, "{err}");
    for word in words {
        assert!(err.contains(word), "{word:?} not named in: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_names_its_flag() {
    within(90, async {
        let tracker = TestTracker::start().await;
        let first =
            TestPeer::start_with(&tracker.url(), &[], &["--control-tcp", "127.0.0.1:0"]).await;
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().display().to_string();
        let taken = |addr: std::net::SocketAddr| addr.to_string();
        let peer = |listen: String, extra: &[String]| {
            let mut args = vec![
                "--tracker".to_owned(),
                tracker.url(),
                "--dir".into(),
                dir.clone(),
                "--listen".into(),
                listen,
            ];
            args.extend(extra.iter().cloned());
            args
        };
        let free = || "127.0.0.1:0".to_owned();
        let first_tcp = first.control_tcp.expect("started with --control-tcp");
        for (args, flag) in [
            (
                peer(free(), &["--control".into(), first.control.to_string()]),
                "--control",
            ),
            (
                peer(free(), &["--control-tcp".into(), taken(first_tcp)]),
                "--control-tcp",
            ),
            (peer(taken(first.listen), &[]), "--listen"),
            (
                peer(free(), &["--metrics".into(), taken(first.listen)]),
                "--metrics",
            ),
        ] {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = run("peer", &args).await;
            failed_naming(&out, Some(1), &[flag]);
            assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
        }

        let data = tempfile::tempdir().unwrap();
        let data = data.path().display().to_string();
        let addr = tracker.addr.to_string();
        for (args, flag) in [
            (vec!["--listen", &addr], "--listen"),
            (
                vec!["--listen", "127.0.0.1:0", "--metrics", &addr],
                "--metrics",
            ),
        ] {
            let mut args = args;
            args.extend(["--data-dir", &data]);
            failed_naming(&run("tracker", &args).await, Some(1), &[flag]);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_daemon_is_named_with_the_flag_to_change() {
    within(90, async {
        let tracker = TestTracker::start().await;
        let peer = TestPeer::start_with(
            &tracker.url(),
            &[("f", b"hello")],
            &["--control-tcp", "127.0.0.1:0"],
        )
        .await;
        let public = peer.listen.to_string();
        let control = peer.control_tcp.expect("TCP control").to_string();
        let cookie = peer.cookie().display().to_string();

        // A peer's port given as the tracker.
        for cmd in [&["files"][..], &["locate", "f"]] {
            let mut args = vec![
                "--peer",
                &control,
                "--cookie",
                &cookie,
                "--tracker",
                &public,
            ];
            args.extend(cmd);
            let out = run("peerctl", &args).await;
            failed_naming(
                &out,
                refused(tonic::Code::Unimplemented),
                &[&format!("{public} is not a hive tracker"), "--tracker"],
            );
        }
        // The tracker given as the peer daemon.
        let out = run("peerctl", &["--peer", &tracker.addr.to_string(), "status"]).await;
        failed_naming(&out, refused(tonic::Code::Unimplemented), &["--peer"]);
        // Nobody there.
        let out = run("peerctl", &["--peer", "127.0.0.1:1", "status"]).await;
        failed_naming(&out, refused(tonic::Code::Unavailable), &["--peer"]);
        let out = run(
            "peerctl",
            &["--peer", &control, "--tracker", "127.0.0.1:1", "files"],
        )
        .await;
        failed_naming(&out, refused(tonic::Code::Unavailable), &["--tracker"]);
        // No socket where --control (or --dir) points.
        let out = run(
            "peerctl",
            &["--control", "/nonexistent/control.sock", "status"],
        )
        .await;
        failed_naming(&out, refused(tonic::Code::Unavailable), &["--control"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_without_the_tls_flags_is_refused() {
    within(60, async {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().display().to_string();
        let url = "https://127.0.0.1:1";
        let out = run(
            "peer",
            &["--tracker", url, "--dir", &dir, "--listen", "127.0.0.1:0"],
        )
        .await;
        failed_naming(&out, Some(1), &["--tracker", "https://", "--tls-cert"]);
        let out = run("peerctl", &["--tracker", url, "files"]).await;
        failed_naming(&out, Some(1), &["--tracker", "https://", "--tls-cert"]);
        let out = run("peerctl", &["--peer", url, "status"]).await;
        failed_naming(&out, Some(1), &["--peer", "https://", "--tls-cert"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peerctl_asks_the_tracker_its_peer_uses() {
    within(90, async {
        let other = TestTracker::start().await;
        let tracker = TestTracker::start().await;
        let peer = TestPeer::start(&tracker, &[("f", b"hello")]).await;
        let control = peer.control.to_string();

        let out = run("peerctl", &["--control", &control, "--json", "files"]).await;
        assert!(out.status.success(), "{}", stderr(&out));
        let files: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(files["files"][0]["name"], "f", "{files}");
        let out = run("peerctl", &["--control", &control, "locate", "f"]).await;
        assert!(out.status.success(), "{}", stderr(&out));

        // --tracker, given, wins.
        let out = run(
            "peerctl",
            &[
                "--control",
                &control,
                "--tracker",
                &other.url(),
                "--json",
                "files",
            ],
        )
        .await;
        assert!(out.status.success(), "{}", stderr(&out));
        let files: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(files["files"].as_array().map(Vec::len), Some(0), "{files}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    within(90, async {
        let tracker = TestTracker::start().await;
        let f = data(100_000, 3);
        let seeder = TestPeer::start(&tracker, &[("f", &f)]).await;
        let leecher = TestPeer::start(&tracker, &[]).await;
        let url = tracker.url();
        for (peer, cmd) in [
            (&seeder, &["files"][..]),
            (&seeder, &["--json", "files"]),
            (&seeder, &["locate", "f"]),
            (&seeder, &["status"]),
            (&seeder, &["--json", "status"]),
            (&leecher, &["--json", "fetch", "f"]),
        ] {
            // `peerctl ... | head -0`: the reading end is gone before
            // peerctl writes a byte.
            let (reader, writer) = std::io::pipe().unwrap();
            drop(reader);
            let control = peer.control.to_string();
            let child = Command::new(bin("peerctl"))
                .args(["--tracker", &url, "--control", &control])
                .args(cmd)
                .stdin(Stdio::null())
                .stdout(writer)
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let out = within(30, child.wait_with_output()).await.unwrap();
            let quiet = out.status.code() == Some(0) || out.status.signal() == Some(SIGPIPE);
            assert!(quiet, "{cmd:?}: {:?}: {}", out.status, stderr(&out));
            assert!(
                !stderr(&out).contains("panicked"),
                "{cmd:?}: {}",
                stderr(&out)
            );
        }
    })
    .await;
}

/// SIGPIPE's number (13 on Linux and the BSDs).
const SIGPIPE: i32 = 13;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_chunk_lists_fit_the_terminal_and_stay_whole_in_json() {
    within(60, async {
        let tracker = TestTracker::start().await;
        // A holder of every other chunk of a 400-chunk file: 200 ranges.
        let f = data(400 << 10, 5);
        let manifest = manifest_with("f", &f, Some(1024));
        let chunks: Vec<ChunkRange> = (0..200)
            .map(|i| ChunkRange {
                first: 2 * i + 1,
                last: 2 * i + 1,
            })
            .collect();
        tracker
            .client()
            .await
            .register(RegisterRequest {
                files: vec![SharedFile {
                    manifest: Some(manifest),
                    chunks,
                }],
                port: 9,
                ..Default::default()
            })
            .await
            .expect("register");

        let url = tracker.url();
        for cmd in [&["files"][..], &["locate", "f"]] {
            let mut args = vec!["--peer", "127.0.0.1:1", "--tracker", &url];
            args.extend(cmd);
            let out = run("peerctl", &args).await;
            assert!(out.status.success(), "{}", stderr(&out));
            let text = stdout(&out);
            // The holder's row (locate's first line, a digest in full, is
            // as wide as it is).
            let row = text.lines().find(|l| l.contains("127.0.0.1:9")).unwrap();
            assert!(row.contains("(200 ranges)"), "{text}");
            assert!(row.chars().count() <= 80, "{} columns: {row}", row.len());
        }
        let out = run(
            "peerctl",
            &[
                "--peer",
                "127.0.0.1:1",
                "--tracker",
                &url,
                "--json",
                "files",
            ],
        )
        .await;
        let files: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ranges = files["files"][0]["holders"][0]["chunks"]
            .as_array()
            .unwrap();
        assert_eq!(ranges.len(), 200);
    })
    .await;
}

/// Starts `bin_name` with `args` and `env` (and no other `HIVE_*`
/// variable), and reads the `lines` addresses (or socket paths) it prints
/// once bound; returns the addresses.
async fn start(
    bin_name: &str,
    args: &[&str],
    env: &[(&str, &str)],
    lines: usize,
) -> (tokio::process::Child, Vec<std::net::SocketAddr>) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = clean_command(bin_name)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addrs = Vec::new();
    let mut seen = 0;
    while seen < lines {
        let line = out.next_line().await.unwrap().expect("exited early");
        let last = line.rsplit(' ').next().unwrap_or_default();
        if let Ok(addr) = last.parse::<std::net::SocketAddr>() {
            addrs.push(addr);
            seen += 1;
        } else if last.starts_with('/') {
            seen += 1;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = out.next_line().await {} });
    (child, addrs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_sets_what_flags_and_the_environment_leave() {
    within(90, async {
        let tracker = TestTracker::start().await;
        let other = TestPeer::start(&tracker, &[]).await;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("share");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("f"), b"from the file's dir").unwrap();
        let config = tmp.path().join("peer.toml");
        // tracker: HIVE_TRACKER overrides it; control: the flag does (the
        // file's is taken); dir and listen: only here.
        std::fs::write(
            &config,
            format!(
                "tracker = \"http://127.0.0.1:1\"\ncontrol = \"{}\"\ndir = {:?}\nlisten = \"127.0.0.1:0\"\n",
                other.control,
                dir.display().to_string()
            ),
        )
        .unwrap();
        let config = config.display().to_string();
        let socket = tmp.path().join("control.sock");
        let socket = socket.display().to_string();
        let (_peer, addrs) = start(
            "peer",
            &["--config", &config, "--control", &socket],
            &[("HIVE_TRACKER", &tracker.url())],
            2,
        )
        .await;
        assert!(addrs[0].ip().is_loopback(), "listen = {}", addrs[0]);
        serving(&socket).await;
        let out = run("peerctl", &["--control", &socket, "--json", "status"]).await;
        assert!(out.status.success(), "{}", stderr(&out));
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(status["tracker"], tracker.url().as_str(), "{status}");
        assert_eq!(status["files"][0]["name"], "f", "{status}");

        // The tracker reads one too: here its address and an in-memory catalog.
        let config = tmp.path().join("tracker.toml");
        std::fs::write(&config, "listen = \"127.0.0.1:0\"\nin-memory = true\n").unwrap();
        let config = config.display().to_string();
        let (_tracker, addrs) = start("tracker", &["--config", &config], &[], 1).await;
        assert!(addrs[0].ip().is_loopback() && addrs[0].port() != 65001, "{}", addrs[0]);

        // The examples in docs/ are valid: every key is a flag, every value
        // parses (the addresses and directories overridden for the test).
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config");
        let example = docs.join("tracker.toml").display().to_string();
        let data = tmp.path().join("catalog").display().to_string();
        let (_example_tracker, _) = start(
            "tracker",
            &["--config", &example, "--listen", "127.0.0.1:0", "--data-dir", &data],
            &[],
            1,
        )
        .await;
        let example = docs.join("peer.toml").display().to_string();
        let share = tmp.path().join("example").display().to_string();
        let url = tracker.url();
        let (_example_peer, addrs) = start(
            "peer",
            &[
                "--config", &example, "--tracker", &url, "--listen", "127.0.0.1:0",
                "--dir", &share,
            ],
            &[],
            2,
        )
        .await;
        assert_eq!(addrs.len(), 1);
        let socket = hive_peer::access::default_socket(std::path::Path::new(&share));
        serving(&socket.display().to_string()).await;
    })
    .await;
}

/// Waits (watching, not polling) until the peer with the control socket
/// `control` reports SERVING: the tracker has accepted it.
async fn serving(control: &str) {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let control = ControlAddr::new(control.into());
    let mut health = HealthClient::new(control_channel(control).await);
    let mut stream = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health watch")
        .into_inner();
    while let Some(msg) = stream.message().await.expect("health stream") {
        if msg.status == ServingStatus::Serving as i32 {
            return;
        }
    }
    panic!("health stream ended");
}
