//! Durability. A [`Store`] keeps the catalog; the [`Journal`] feeds it the
//! registry's changes in order, many requests per commit, and tells each
//! request when its changes are durable, so nothing acknowledged is lost.
//!
//! A commit that fails leaves the registry in memory ahead of the store. The
//! journal then refuses everything after it and reports itself broken, and
//! the tracker stops, to start again from what is durable (fail-stop: a
//! failed fsync is never retried and taken for success).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::registry::{Catalog, Change};

#[derive(Debug, Clone, thiserror::Error)]
#[error("storage failed: {0}")]
pub struct StoreError(pub String);

/// A durable home for the catalog. The registry works on its in-memory copy;
/// a store only has to load it all at start and apply changes in order.
pub trait Store: Send + Sync + 'static {
    /// Everything stored.
    fn load(&self) -> Result<Catalog, StoreError>;
    /// Makes `changes` durable, in order and all at once, before returning.
    fn commit(&self, changes: &[Change]) -> Result<(), StoreError>;
}

/// Keeps nothing: for `--in-memory` trackers and tests.
#[derive(Debug, Default)]
pub struct MemoryStore;

impl Store for MemoryStore {
    fn load(&self) -> Result<Catalog, StoreError> {
        Ok(Catalog::default())
    }

    fn commit(&self, _: &[Change]) -> Result<(), StoreError> {
        Ok(())
    }
}

type Ack = oneshot::Sender<Result<(), StoreError>>;

/// The ordered path from the registry to its store.
///
/// [`Journal::submit`] is called while the registry lock is held, so changes
/// reach the store in the order the registry made them; the caller awaits
/// [`Pending::durable`] after releasing the lock. A writer task commits
/// everything queued so far in one transaction (group commit).
#[derive(Clone)]
pub struct Journal {
    tx: Option<mpsc::UnboundedSender<(Vec<Change>, Ack)>>,
    broken: CancellationToken,
}

/// The durability of one request's changes.
pub struct Pending(Option<oneshot::Receiver<Result<(), StoreError>>>);

impl Journal {
    /// A journal that keeps nothing and never waits.
    pub fn volatile() -> Self {
        Self {
            tx: None,
            broken: CancellationToken::new(),
        }
    }

    /// A journal writing to `store` from a background task.
    /// The task ends once every handle to the journal is gone.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let broken = CancellationToken::new();
        hive::task::spawn("journal", write_loop(store, rx, broken.clone()));
        Self {
            tx: Some(tx),
            broken,
        }
    }

    /// Cancelled once a commit has failed; nothing is committed after it.
    pub fn broken(&self) -> &CancellationToken {
        &self.broken
    }

    /// Queues `changes`; call while holding the registry lock.
    pub fn submit(&self, changes: Vec<Change>) -> Pending {
        let Some(tx) = self.tx.as_ref().filter(|_| !changes.is_empty()) else {
            return Pending(None);
        };
        let (ack, wait) = oneshot::channel();
        if tx.send((changes, ack)).is_err() {
            // The writer is gone; `durable` reports it.
            return Pending(Some(oneshot::channel().1));
        }
        Pending(Some(wait))
    }
}

impl Pending {
    /// Waits until the changes are durable.
    pub async fn durable(self) -> Result<(), StoreError> {
        match self.0 {
            None => Ok(()),
            Some(wait) => wait
                .await
                .unwrap_or_else(|_| Err(StoreError("the storage writer stopped".into()))),
        }
    }
}

/// Most requests one transaction takes.
const GROUP_LIMIT: usize = 1024;

async fn write_loop(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<(Vec<Change>, Ack)>,
    broken: CancellationToken,
) -> Result<(), StoreError> {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, GROUP_LIMIT).await > 0 {
        let (changes, acks): (Vec<Vec<Change>>, Vec<Ack>) =
            std::mem::take(&mut batch).into_iter().unzip();
        let all: Vec<Change> = changes.into_iter().flatten().collect();
        let store = store.clone();
        let result = tokio::task::spawn_blocking(move || store.commit(&all))
            .await
            .unwrap_or_else(|e| Err(StoreError(format!("commit task failed: {e}"))));
        for ack in acks {
            // The request may have gone away; its changes are stored anyway.
            let _ = ack.send(result.clone());
        }
        if let Err(e) = result {
            error!(error = %e, "commit failed; refusing every change from now on and stopping");
            broken.cancel();
            // Queued and later requests find the writer gone: refused.
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Commits `ok` times, then fails.
    struct Failing {
        ok: usize,
        commits: AtomicUsize,
    }

    impl Store for Failing {
        fn load(&self) -> Result<Catalog, StoreError> {
            Ok(Catalog::default())
        }

        fn commit(&self, _: &[Change]) -> Result<(), StoreError> {
            if self.commits.fetch_add(1, Ordering::SeqCst) < self.ok {
                Ok(())
            } else {
                Err(StoreError("disk gone".into()))
            }
        }
    }

    fn change() -> Vec<Change> {
        vec![Change::RemoveManifest("f".parse().unwrap())]
    }

    #[tokio::test]
    async fn a_failed_commit_breaks_the_journal_for_good() {
        let store = Arc::new(Failing {
            ok: 1,
            commits: AtomicUsize::new(0),
        });
        let journal = Journal::start(store.clone());
        assert!(journal.submit(change()).durable().await.is_ok());
        assert!(!journal.broken().is_cancelled());

        assert!(journal.submit(change()).durable().await.is_err());
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            journal.broken().cancelled(),
        )
        .await
        .expect("the journal reports itself broken");
        // Nothing is committed, or acknowledged, after the failure.
        assert!(journal.submit(change()).durable().await.is_err());
        assert_eq!(store.commits.load(Ordering::SeqCst), 2);
    }
}
