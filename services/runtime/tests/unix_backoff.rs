//! RE-8 for the peer's Unix control socket: out of descriptors, its accept
//! loop backs off instead of spinning, and accepts again once some are
//! free. A process of its own: it lowers the open-files limit.

use std::{
    fs::File,
    time::{Duration, Instant},
};

use hive_runtime::grpc::UnixIncoming;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::StreamExt;

/// CPU time this process has used (user + system), from /proc.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read stat");
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on every Linux architecture hive runs on.
    Duration::from_millis(ticks * 10)
}

/// [`cpu`] while every descriptor is taken: one filler is given back for
/// the read and taken again after it.
fn cpu_while_full(fillers: &mut Vec<File>) -> Duration {
    fillers.pop();
    let spent = cpu();
    fillers.push(File::open("/dev/null").expect("the descriptor just given back"));
    spent
}

#[tokio::test(flavor = "current_thread")]
async fn the_unix_socket_backs_off_when_out_of_descriptors() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let mut incoming = UnixIncoming::new(UnixListener::bind(&path).unwrap());
        let before = getrlimit(Resource::Nofile);
        let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
        let low = Rlimit {
            current: Some(open + 16),
            maximum: before.maximum,
        };
        setrlimit(Resource::Nofile, low).unwrap();

        // A client waits in the backlog; every descriptor is taken.
        let _client = UnixStream::connect(&path).await.unwrap();
        let mut fillers = Vec::new();
        while let Ok(f) = File::open("/dev/null") {
            fillers.push(f);
        }
        let cpu_before = cpu_while_full(&mut fillers);
        let started = Instant::now();
        let waited = tokio::time::timeout(Duration::from_secs(2), incoming.next()).await;
        assert!(waited.is_err(), "accepted without a descriptor: {waited:?}");

        // Descriptors back: the waiting client is accepted (within the
        // longest pause, 1 s).
        fillers.clear();
        let spent = cpu() - cpu_before;
        let over = started.elapsed();
        eprintln!(
            "FIGURE RE-8 (Unix control socket): CPU {:.3} s over {:.1} s out of descriptors",
            spent.as_secs_f64(),
            over.as_secs_f64()
        );
        assert!(
            spent < over / 10,
            "the accept loop spun: {spent:?} of CPU over {over:?}"
        );
        let accepted = tokio::time::timeout(Duration::from_secs(3), incoming.next()).await;
        let accepted = accepted.expect("accepted once descriptors are free");
        accepted.expect("listening").expect("a connection");
        setrlimit(Resource::Nofile, before).unwrap();
    })
    .await
    .expect("in time");
}
