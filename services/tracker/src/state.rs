//! [`Tracker`]: the embedded catalog, one [`Catalog`] backend (the default).
//! It pairs the registry (in memory, behind a lock) with the journal that
//! makes changes durable, and answers only once they are as durable as the
//! journal makes them.

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Instant,
};

use hive::FileName;

use crate::{
    auth::PeerId,
    catalog::Catalog,
    error::ServiceError,
    journal::{Journal, Pending},
    registry::{
        Caller, Change, Credentials, HolderPage, Located, Offer, Page, PeerPage, Registered,
        Registry, RegistryError,
    },
    store::StoreError,
};

#[derive(Clone)]
pub struct Tracker {
    inner: Arc<Inner>,
}

struct Inner {
    /// A std mutex: every critical section is short, in-memory work, and the
    /// lock is never held across an `.await`.
    registry: Mutex<Registry>,
    journal: Journal,
}

/// Sizes of the catalog, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub peers: usize,
    pub files: usize,
    pub holdings: usize,
    /// The catalog's size as `--max-catalog-mib` counts it.
    pub catalog_bytes: u64,
}

impl Tracker {
    pub fn new(registry: Registry, journal: Journal) -> Self {
        Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                journal,
            }),
        }
    }

    pub async fn register(
        &self,
        caller: Caller,
        offers: Vec<Offer>,
    ) -> Result<Registered, ServiceError> {
        let (out, pending) = self.write(|r, now, c| r.register(caller, offers, now, c))?;
        pending.durable().await?;
        Ok(out)
    }

    pub async fn register_chunks(
        &self,
        cred: Credentials,
        name: &FileName,
        add: &[std::ops::RangeInclusive<u32>],
        remove: &[std::ops::RangeInclusive<u32>],
    ) -> Result<u32, ServiceError> {
        let (held, pending) =
            self.write(|r, now, c| r.register_chunks(&cred, name, add, remove, now, c))?;
        pending.durable().await?;
        Ok(held)
    }

    pub async fn withdraw(&self, cred: Credentials, name: &FileName) -> Result<(), ServiceError> {
        let ((), pending) = self.write(|r, now, c| r.withdraw(&cred, name, now, c))?;
        pending.durable().await?;
        Ok(())
    }

    pub fn heartbeat(&self, cred: Credentials) -> Result<(), ServiceError> {
        Ok(self.lock().heartbeat(&cred, Instant::now())?)
    }

    pub async fn leave(&self, cred: Credentials) -> Result<(), ServiceError> {
        let ((), pending) = self.write(|r, now, c| r.leave(&cred, now, c))?;
        pending.durable().await?;
        Ok(())
    }

    pub fn locate(&self, name: &FileName, want: usize) -> Result<Located, ServiceError> {
        Ok(self.lock().locate(name, want, Instant::now())?)
    }

    pub fn list(&self, after: Option<&FileName>, limit: usize) -> Page {
        self.lock().list(after, limit, Instant::now())
    }

    /// Drops silent peers and long-orphaned files; returns how many peers went.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let mut changes = Vec::new();
        let (gone, pending) = {
            let mut reg = self.lock();
            let gone = reg.expire(Instant::now(), &mut changes);
            (gone, self.inner.journal.submit(&changes))
        };
        pending.durable().await?;
        Ok(gone)
    }

    /// Folds the journal into the store, for a graceful stop.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        self.inner.journal.checkpoint().await
    }

    /// Cancelled once the catalog could not be made durable: memory is then
    /// ahead of the store, and the tracker must stop.
    pub fn broken(&self) -> tokio_util::sync::CancellationToken {
        self.inner.journal.broken().clone()
    }

    pub fn stats(&self) -> Stats {
        let reg = self.lock();
        Stats {
            peers: reg.peer_count(),
            files: reg.file_count(),
            holdings: reg.holding_count(),
            catalog_bytes: reg.catalog_bytes(),
        }
    }

    /// The journal, for tests that fail its disk.
    #[cfg(test)]
    pub(crate) fn journal(&self) -> &Journal {
        &self.inner.journal
    }

    /// Runs a mutation under the lock and queues its changes in order.
    fn write<T>(
        &self,
        op: impl FnOnce(&mut Registry, Instant, &mut Vec<Change>) -> Result<T, RegistryError>,
    ) -> Result<(T, Pending), RegistryError> {
        let mut changes = Vec::new();
        let mut reg = self.lock();
        let out = op(&mut reg, Instant::now(), &mut changes)?;
        Ok((out, self.inner.journal.submit(&changes)))
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // Registry calls check before they change anything, so even a panic
        // mid-call cannot leave it half-changed: keep serving.
        self.inner
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The embedded catalog: the registry in this process, made durable by the
/// journal. The inherent methods above do the work.
#[tonic::async_trait]
impl Catalog for Tracker {
    async fn register(
        &self,
        caller: Caller,
        offers: Vec<Offer>,
    ) -> Result<Registered, ServiceError> {
        Tracker::register(self, caller, offers).await
    }

    async fn register_chunks(
        &self,
        cred: Credentials,
        name: &FileName,
        add: &[std::ops::RangeInclusive<u32>],
        remove: &[std::ops::RangeInclusive<u32>],
    ) -> Result<u32, ServiceError> {
        Tracker::register_chunks(self, cred, name, add, remove).await
    }

    async fn withdraw(&self, cred: Credentials, name: &FileName) -> Result<(), ServiceError> {
        Tracker::withdraw(self, cred, name).await
    }

    async fn heartbeat(&self, cred: Credentials) -> Result<(), ServiceError> {
        Tracker::heartbeat(self, cred)
    }

    async fn leave(&self, cred: Credentials) -> Result<(), ServiceError> {
        Tracker::leave(self, cred).await
    }

    async fn locate(&self, name: &FileName, want: usize) -> Result<Located, ServiceError> {
        Tracker::locate(self, name, want)
    }

    async fn list(&self, after: Option<&FileName>, limit: usize) -> Result<Page, ServiceError> {
        Ok(Tracker::list(self, after, limit))
    }

    async fn peers(
        &self,
        after: Option<PeerId>,
        limit: usize,
        files: usize,
    ) -> Result<PeerPage, ServiceError> {
        Ok(self.lock().peers(after, limit, files, Instant::now()))
    }

    async fn holders(
        &self,
        name: &FileName,
        after: Option<PeerId>,
        limit: usize,
    ) -> Result<HolderPage, ServiceError> {
        Ok(self.lock().holders(name, after, limit, Instant::now())?)
    }

    async fn sweep(&self) -> Result<usize, ServiceError> {
        Ok(Tracker::sweep(self).await?)
    }

    async fn stats(&self) -> Result<Stats, ServiceError> {
        Ok(Tracker::stats(self))
    }

    async fn checkpoint(&self) -> Result<(), ServiceError> {
        Ok(Tracker::checkpoint(self).await?)
    }

    fn broken(&self) -> tokio_util::sync::CancellationToken {
        Tracker::broken(self)
    }
}
