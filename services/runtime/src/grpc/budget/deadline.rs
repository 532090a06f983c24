//! The send deadline of [`super::BoundedAnswersLayer`]: a body whose client
//! has not taken its last piece within it ends its connection, found by one
//! sweeper task per process.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tracing::info;

/// How often overdue answers are looked for.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// One body's wait for its client: since when (ms, 0 when not waiting).
pub(super) struct Watch {
    pub(super) since: AtomicU64,
    deadline_ms: u64,
    conn: (SocketAddr, SocketAddr),
}

pub(super) fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

fn watches() -> &'static Mutex<Vec<Weak<Watch>>> {
    static WATCHES: OnceLock<Mutex<Vec<Weak<Watch>>>> = OnceLock::new();
    WATCHES.get_or_init(Default::default)
}

/// Whether a sweeper task runs (it stops with its runtime).
static SWEEPING: AtomicBool = AtomicBool::new(false);
/// Connections ended by the send deadline, since the start.
static ENDED: AtomicU64 = AtomicU64::new(0);

/// Connections ended by the send deadline so far.
pub fn connections_ended() -> u64 {
    ENDED.load(Ordering::Relaxed)
}

pub(super) fn watch(conn: (SocketAddr, SocketAddr), deadline: Duration) -> Arc<Watch> {
    let watch = Arc::new(Watch {
        since: AtomicU64::new(0),
        deadline_ms: deadline.as_millis() as u64,
        conn,
    });
    watches()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Arc::downgrade(&watch));
    if !SWEEPING.swap(true, Ordering::AcqRel) {
        tokio::spawn(sweep());
    }
    watch
}

/// Ends the connections of answers their clients left waiting too long.
async fn sweep() {
    struct Running;
    impl Drop for Running {
        fn drop(&mut self) {
            SWEEPING.store(false, Ordering::Release);
        }
    }
    let _running = Running;
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = now_ms();
        let mut overdue = Vec::new();
        watches()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|w| {
                let Some(w) = w.upgrade() else { return false };
                let since = w.since.load(Ordering::Relaxed);
                if since != 0 && now.saturating_sub(since) >= w.deadline_ms {
                    // Once: the body goes when hyper drops the connection.
                    w.since.store(0, Ordering::Relaxed);
                    overdue.push(w.conn);
                }
                true
            });
        overdue.sort_unstable();
        overdue.dedup();
        for (local, remote) in overdue {
            if super::super::abort_connection(local, remote) {
                ENDED.fetch_add(1, Ordering::Relaxed);
                info!(%remote, "closed a connection whose client left an answer unread past --send-deadline");
            }
        }
    }
}
