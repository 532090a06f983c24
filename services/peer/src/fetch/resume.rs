//! Part files and resume: the part file a download writes into, with the
//! chunks verified in it, and the downloads saved before a restart.

use std::{path::Path, sync::Arc};

use hive::{ChunkSet, FileName, Manifest};
use tracing::{info, warn};

use super::{
    Fetcher, blocking,
    partfile::{self, Mode, PartFile},
};
use crate::{
    error::PeerError,
    holdings::{Holdings, Kind},
};

impl Fetcher {
    /// The part file for `manifest`, with the chunks verified in it: taken
    /// from the share index if the download is known with this very
    /// manifest, else re-verified from disk (nothing in an old part file is
    /// trusted, and one from the same content in another chunk size is
    /// counted again in this one) and added to the index.
    pub(super) async fn open_part(
        &self,
        manifest: &Arc<Manifest>,
        mode: Mode,
    ) -> Result<(Arc<PartFile>, ChunkSet, bool), PeerError> {
        let ctx = &*self.ctx;
        let known = ctx
            .holdings
            .holding(manifest.name())
            .filter(|(m, _, kind)| *kind == Kind::Partial && m == manifest)
            .map(|(_, have, _)| have);
        let (state_dir, m) = (ctx.state_dir.clone(), manifest.clone());
        let (part, have, existed) = blocking(move || {
            let (part, existed) = PartFile::open(&state_dir, &m)?;
            let have = match known {
                Some(have) => have,
                None if existed => part.verify(&m, None),
                None => ChunkSet::empty(m.chunk_count()),
            };
            Ok((part, have, existed))
        })
        .await?;
        let part = Arc::new(part);
        if ctx
            .holdings
            .holding(manifest.name())
            .is_none_or(|(m, _, kind)| {
                (kind == Kind::Partial && m != *manifest) || m.digest() != manifest.digest()
            })
        {
            // Announced with the chunks it holds.
            ctx.holdings
                .insert_partial(manifest.clone(), &part, have.clone());
        }
        // A single chunk saves the state once it is written.
        if mode == Mode::Whole {
            ctx.holdings.save_resume(manifest.name(), mode, false)?;
        }
        Ok((part, have, existed))
    }
}

/// Loads the downloads saved in `state_dir` into the share index (every
/// chunk re-verified; blocking) and returns the whole-file downloads to carry
/// on with.
pub fn load_saved(state_dir: &Path, holdings: &Holdings) -> Vec<FileName> {
    let mut resume = Vec::new();
    for state in partfile::saved_states(state_dir) {
        let Some(manifest) = state.manifest() else {
            warn!(file = %state.name, "resume state holds an inconsistent manifest; ignored");
            continue;
        };
        if !PartFile::exists(state_dir, manifest.name()) {
            // Finished just before a crash, or removed by hand.
            PartFile::forget(state_dir, manifest.name());
            continue;
        }
        let (part, _) = match PartFile::open(state_dir, &manifest) {
            Ok(p) => p,
            Err(e) => {
                warn!(file = %manifest.name(), error = %e, "cannot open part file");
                continue;
            }
        };
        let claimed = state.written(manifest.chunk_count());
        let have = match state.mode {
            Mode::Whole => part.verify(&manifest, None),
            Mode::Chunks => part.verify(&manifest, Some(&claimed)),
        };
        info!(file = %manifest.name(), chunks = have.len(), of = manifest.chunk_count(), "resumed partial file");
        if state.mode == Mode::Whole && !state.paused {
            resume.push(manifest.name().clone());
        }
        holdings.insert_partial(Arc::new(manifest), &part, have);
    }
    resume
}
