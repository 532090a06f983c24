//! Where the catalog is kept. A [`Store`] loads it all at start and takes
//! the registry's changes in order; the [`crate::journal`] decides when.

use crate::registry::{Catalog, Change};

#[derive(Debug, Clone, thiserror::Error)]
#[error("storage failed: {0}")]
pub struct StoreError(pub String);

/// A durable home for the catalog. The registry works on its in-memory copy;
/// a store only has to load it all at start and apply changes in order.
pub trait Store: Send + Sync + 'static {
    /// Everything stored.
    fn load(&self) -> Result<Catalog, StoreError>;
    /// Makes `changes` durable, in order and all at once, before returning,
    /// together with `generation`: the journal's generations up to it are
    /// now in the store.
    fn commit(&self, changes: &[Change], generation: u64) -> Result<(), StoreError>;
    /// The last `generation` committed, if any.
    fn checkpointed(&self) -> Result<Option<u64>, StoreError>;
}

/// Keeps nothing: for `--in-memory` trackers and tests.
#[derive(Debug, Default)]
pub struct MemoryStore;

impl Store for MemoryStore {
    fn load(&self) -> Result<Catalog, StoreError> {
        Ok(Catalog::default())
    }

    fn commit(&self, _: &[Change], _: u64) -> Result<(), StoreError> {
        Ok(())
    }

    fn checkpointed(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
}
