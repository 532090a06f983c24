//! A whole-file download: locate, open the part file, run the swarm
//! engine, then make the file final, fetching again whatever is found
//! damaged on disk.

use std::{sync::Arc, time::Instant};

use hive::{ChunkSet, FileName, Manifest};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    DoneInfo, Fetcher, Phase, Spec, StartInfo, blocking,
    engine::{Engine, Progress, Settings, Swarm},
    live::LiveEngine,
    partfile::{Mode, PartFile},
};
use crate::{
    error::PeerError,
    holdings::{Kind, Stamp},
    throttle::{Caps, Throttle},
    tracker_link::Located,
};

/// Rounds of re-fetching chunks found damaged when the finished file is
/// checked, before the download fails with DATA_LOSS.
const FINISH_ROUNDS: u32 = 3;

impl Fetcher {
    pub(super) async fn download(
        &self,
        name: &FileName,
        spec: &Spec,
        cap: Arc<Throttle>,
        tx: &watch::Sender<Phase>,
        cancel: &CancellationToken,
    ) -> Result<DoneInfo, PeerError> {
        let ctx = &*self.ctx;
        let force = spec.force;
        let started = Instant::now();
        let mut located = ctx.link.locate(name).await?;
        let manifest = Arc::new(located.manifest.clone());
        let dest = ctx.dir.join(name.as_str());
        // Never "already here" for a file deleted or replaced on disk.
        ctx.holdings.check(name);
        match ctx.holdings.holding(name) {
            Some((m, _, Kind::Complete)) if m.digest() == manifest.digest() => {
                return Ok(DoneInfo::present(
                    ctx.holdings.file(name).map(|f| f.1).unwrap_or(dest),
                    &manifest,
                ));
            }
            Some((m, _, Kind::Complete)) if !force => {
                return Err(PeerError::Exists(format!(
                    "another file named {name:?} is shared here (digest {}); use --force to replace it",
                    m.digest()
                )));
            }
            Some((_, _, Kind::Complete)) => {
                // Being replaced: stop serving the old content now.
                ctx.holdings.remove(name);
            }
            _ => {}
        }
        if !force && dest.exists() {
            return Err(PeerError::Exists(format!(
                "{} exists; use --force to replace it",
                dest.display()
            )));
        }
        let (part, have, _) = self.open_part(&manifest, Mode::Whole).await?;
        part.stream_writes();
        let reserve = part.clone();
        let size = manifest.size();
        blocking(move || reserve.reserve(size)).await?;

        let holders = located.holders.len() as u32;
        let present = have.len();
        tx.send_modify(|p| {
            p.started = Some(StartInfo {
                holders,
                chunks_present: present,
                chunks_wanted: manifest.chunk_count() - present,
                bytes_wanted: manifest.size() - bytes_of(&manifest, &have),
                manifest: manifest.clone(),
            })
        });
        ctx.holdings.set_downloading(name, true);
        let swarm = Swarm {
            locator: ctx.link.clone(),
            holders: ctx.pool.clone(),
            sink: self.sink(&part, &manifest),
        };
        let settings = Settings {
            wait_for_holders: !spec.fail_fast,
            caps: Caps::new([cap, ctx.download_cap.clone()]),
            ..Settings::from(&ctx.config)
        };
        let only = spec.only.clone();
        let counters = ctx.counters.clone();
        let mut engine = Engine::new(swarm, settings, counters, manifest.clone(), have, only);
        let outcome = self
            .fetch_and_finish(&mut engine, &mut located, &part, &dest, force, tx, cancel)
            .await;
        ctx.holdings.set_downloading(name, false);
        match outcome {
            Ok(stamp) => {
                ctx.holdings.complete(name, dest.clone(), stamp);
                self.remember(&dest, stamp, &manifest);
                if let Err(e) = ctx.link.flush().await {
                    warn!(error = %e, "chunk registrations are queued until the tracker answers");
                }
                info!(file = %name, bytes = manifest.size(), elapsed_ms = started.elapsed().as_millis() as u64, "download complete");
                Ok(DoneInfo {
                    path: dest,
                    digest: manifest.digest(),
                    bytes_received: engine.stats.bytes_received,
                    chunks_fetched: engine.stats.chunks_fetched,
                    elapsed: started.elapsed(),
                    source: String::new(),
                    already_present: false,
                    holders_banned: engine.stats.holders_banned,
                })
            }
            Err(e) => {
                // Stopped by the user: do not resume on restart. Stopped by
                // the daemon shutting down: do.
                let paused = e == PeerError::Cancelled && !self.stop.is_cancelled();
                if let Err(e) = ctx.holdings.save_resume(name, Mode::Whole, paused) {
                    warn!(error = %e, "cannot save resume state");
                }
                Err(e)
            }
        }
    }

    /// Runs the engine, then makes the file final; chunks that turn out bad
    /// on disk are fetched again.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_and_finish(
        &self,
        engine: &mut LiveEngine,
        located: &mut Located,
        part: &Arc<PartFile>,
        dest: &std::path::Path,
        force: bool,
        tx: &watch::Sender<Phase>,
        cancel: &CancellationToken,
    ) -> Result<Stamp, PeerError> {
        let ctx = &*self.ctx;
        let manifest = Arc::new(located.manifest.clone());
        for round in 1..=FINISH_ROUNDS {
            let mut report = |p: &Progress| {
                tx.send_if_modified(|phase| {
                    let changed = phase.progress != *p;
                    phase.progress = p.clone();
                    changed
                });
            };
            let transfer = Instant::now();
            engine.run(located.clone(), cancel, &mut report).await?;
            let finish = Instant::now();
            // The hash cache learns the file's digests, in the swarm's chunk
            // size, before the file takes its name: a daemon restarted after
            // a crash past the rename finds them there, rather than hashing
            // the file again in its own chunk size (which the tracker refuses).
            if let Ok(meta) = part.file.metadata() {
                self.remember(dest, Stamp::of(&meta), &manifest);
            }
            let (p, m, d) = (part.clone(), manifest.clone(), dest.to_owned());
            let (have, reverify) = (engine.have().clone(), ctx.config.verify_on_finish);
            let finished = blocking(move || p.finish(&m, &have, &d, force, reverify)).await?;
            debug!(
                file = %manifest.name(),
                transfer_ms = finish.duration_since(transfer).as_millis() as u64,
                finish_ms = finish.elapsed().as_millis() as u64,
                "download phases"
            );
            match finished {
                Ok(()) => {
                    let meta = part
                        .file
                        .metadata()
                        .map_err(|e| PeerError::io(dest.display(), &e))?;
                    return Ok(Stamp::of(&meta));
                }
                Err(bad) => {
                    warn!(file = %manifest.name(), chunks = %bad, round, "chunks damaged on disk; fetching them again");
                    for chunk in bad.iter() {
                        ctx.holdings.withdraw(manifest.name(), chunk);
                    }
                    engine.forget(&bad);
                    *located = ctx.link.relocate(&manifest).await?;
                }
            }
        }
        Err(PeerError::DataLoss(format!(
            "{:?} kept failing verification on disk; the disk may be faulty",
            manifest.name()
        )))
    }
}

fn bytes_of(manifest: &Manifest, set: &ChunkSet) -> u64 {
    set.iter()
        .map(|c| u64::from(manifest.layout().chunk_len(c)))
        .sum()
}
