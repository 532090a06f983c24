//! `redis-server`s for the shared-backend tests: each on a unix socket in
//! its own temporary directory, with no persistence, stopped by pid when
//! dropped. Installed by `scripts/install-redis.sh`.
//!
//! Without `redis-server` on the PATH a test is skipped with a loud message,
//! except under CI (`CI=true`), where that is a failure.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tempfile::TempDir;

/// A running `redis-server`; killed on drop.
pub struct RedisServer {
    child: Child,
    dir: TempDir,
    socket: PathBuf,
}

/// Whether `redis-server` can be run; panics under CI if it cannot.
pub fn available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(
            !ci,
            "redis-server is not installed: CI must run scripts/install-redis.sh first"
        );
        // Straight to stderr, past the test harness's capture of passing
        // tests' output, so the skip is seen.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"\n!!!!!!!! SKIPPED: redis-server is not installed; run \
              scripts/install-redis.sh to test the shared backend !!!!!!!!\n",
        );
    }
    found
}

impl RedisServer {
    /// A fresh server on a unix socket; `None` (after a loud message) if
    /// `redis-server` is missing outside CI.
    pub fn start() -> Option<Self> {
        if !available() {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("r.sock");
        let child = spawn(dir.path(), &socket);
        let mut server = Self { child, dir, socket };
        server.wait_ready();
        Some(server)
    }

    /// Kills the server (SIGKILL) and starts an empty one on the same
    /// socket: what a restart without persistence looks like.
    pub fn restart_empty(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
        self.child = spawn(self.dir.path(), &self.socket);
        self.wait_ready();
    }

    /// Polls (bounded) until the socket answers PING.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("poll redis-server") {
                panic!("redis-server exited ({status}):\n{}", self.log());
            }
            if self.socket.exists() && ping(&self.socket) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server not ready in 10 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The `--store` URL of this server.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// Runs `redis-cli` against this server; returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// `redis-server` on `socket`, with no persistence, logging into `dir`.
fn spawn(dir: &Path, socket: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("redis.log"))
        .expect("log");
    Command::new("redis-server")
        .args(["--port", "0", "--unixsocket"])
        .arg(socket)
        .args([
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server")
}

fn ping(socket: &Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- redis-server log ----\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis Cluster of `primaries` primaries (no replicas) on loopback
/// ports picked free; every server is killed on drop.
pub struct RedisCluster {
    nodes: Vec<Child>,
    ports: Vec<u16>,
    dir: TempDir,
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A cluster-enabled `redis-server` in `dir` on free loopback ports,
/// answering. A port picked free may be taken by another test before
/// the server binds it: then the server exits, and it is started again on
/// other ports.
fn start_node(dir: &Path) -> (Child, u16) {
    for _ in 0..10 {
        let (port, bus) = (free_port(), free_port());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("redis.log"))
            .expect("log");
        let mut child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-port", &bus.to_string()])
            .args(["--cluster-node-timeout", "2000"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if child.try_wait().expect("poll redis-server").is_some() {
                break;
            }
            // Ours, not another test's that won the port.
            let out = Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "INFO", "server"])
                .output()
                .expect("run redis-cli");
            let pid = format!("process_id:{}\r", child.id());
            if String::from_utf8_lossy(&out.stdout).contains(&pid) {
                return (child, port);
            }
            assert!(
                Instant::now() < deadline,
                "node on {port}: no answer in 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!(
        "no cluster node started in 10 tries:\n{}",
        std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default()
    );
}

impl RedisCluster {
    /// A fresh cluster, its slots assigned and its state ok; `None` (after
    /// a loud message) if `redis-server` is missing outside CI.
    pub fn start(primaries: usize) -> Option<Self> {
        Self::start_with(primaries, 0)
    }

    /// A cluster of `primaries` primaries with `replicas` replicas each,
    /// every replica in step with its primary.
    pub fn start_with(primaries: usize, replicas: usize) -> Option<Self> {
        if !available() {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cluster = Self {
            nodes: Vec::new(),
            ports: Vec::new(),
            dir,
        };
        for i in 0..primaries * (1 + replicas) {
            let node_dir = cluster.dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let (child, port) = start_node(&node_dir);
            cluster.nodes.push(child);
            cluster.ports.push(port);
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for port in cluster.ports.clone() {
            cluster.wait_until(port, "CLUSTER INFO", "cluster_state:ok");
            if cluster.role(port) == "slave" {
                cluster.wait_until(port, "INFO replication", "master_link_status:up");
            }
        }
        Some(cluster)
    }

    /// `master` or `slave`, as the node at `port` says.
    fn role(&self, port: u16) -> String {
        let out = self.cli_at(port, &["ROLE"]);
        out.lines().next().unwrap_or_default().trim().to_owned()
    }

    fn cli_at(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits (bounded) until every replica has every write its primary
    /// has: the replication offsets are equal.
    pub fn wait_replicated(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for &port in &self.ports {
            loop {
                let info = self.cli_at(port, &["INFO", "replication"]);
                if !info.contains("role:master") {
                    break;
                }
                let field = |key: &str| -> Vec<u64> {
                    info.lines()
                        .filter(|l| l.starts_with("slave") || l.starts_with(key))
                        .filter_map(|l| {
                            let v = l.split(key).nth(1)?;
                            v.split(',').next()?.trim().parse().ok()
                        })
                        .collect()
                };
                let primary = field("master_repl_offset:");
                let replicas = field("offset=");
                if replicas.iter().all(|r| Some(r) == primary.first()) {
                    break;
                }
                assert!(Instant::now() < deadline, "replicas of {port} not in step");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The nodes' log lines that contain `what`.
    pub fn log_lines(&self, what: &str) -> Vec<String> {
        (0..self.nodes.len())
            .flat_map(|i| {
                let log = self.dir.path().join(format!("n{i}")).join("redis.log");
                std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains(what))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Kills (SIGKILL) the primary that holds `key`; returns its port.
    pub fn kill_primary_of(&mut self, key: &str) -> u16 {
        for (i, &port) in self.ports.iter().enumerate() {
            if self.role(port) == "master" && self.cli_at(port, &["EXISTS", key]).trim() == "1" {
                let _ = self.nodes[i].kill();
                let _ = self.nodes[i].wait();
                return port;
            }
        }
        panic!("no primary holds {key}");
    }

    /// Polls (bounded) until `command` on the node at `port` answers with
    /// `want` in it.
    fn wait_until(&mut self, port: u16, command: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for node in &mut self.nodes {
                if let Some(status) = node.try_wait().expect("poll redis-server") {
                    panic!("a cluster node exited ({status})");
                }
            }
            let out = Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(command.split(' '))
                .output()
                .expect("run redis-cli");
            if String::from_utf8_lossy(&out.stdout).contains(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {port}: no {want:?} from {command:?} in 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `redis-cli -c` (following redirections) against the cluster.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-c", "-h", "127.0.0.1", "-p", &self.ports[0].to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The `--store` URL of this cluster.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis-cluster://{}", nodes.join(","))
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}
