//! One chunk fetched directly (`peerctl fetch --chunk`): from the holder
//! the user named or from any that has it, verified, stored and registered.

use std::{sync::Arc, time::Instant};

use hive::{FileName, wire};
use tracing::warn;

use super::{
    DoneInfo, Fetcher, blocking,
    partfile::Mode,
    request::{self, Failure},
    traits::{Holders, Sink},
};
use crate::{error::PeerError, holdings::Kind, throttle::Caps};

/// Holders tried for one chunk before giving up.
const CHUNK_ATTEMPTS: usize = 4;

impl Fetcher {
    /// Seed message 5: one chunk, from `from` or from any holder that has it;
    /// verified, stored (served from then on) and registered (message 4).
    pub async fn chunk(
        &self,
        name: &FileName,
        number: u32,
        from: Option<String>,
    ) -> Result<DoneInfo, PeerError> {
        let ctx = &*self.ctx;
        let started = Instant::now();
        let located = ctx.link.locate(name).await?;
        let manifest = Arc::new(located.manifest);
        let chunk = wire::chunk("chunk", manifest.layout(), number)?;
        // A complete copy has every byte, in whatever chunk size it was
        // hashed; a partial one's chunk set only means something in its own.
        ctx.holdings.check(name);
        if let Some((m, have, kind)) = ctx.holdings.holding(name)
            && m.digest() == manifest.digest()
            && (kind == Kind::Complete || (m == manifest && have.contains(chunk)))
        {
            let path = ctx.holdings.file(name).map(|f| f.1).unwrap_or_default();
            return Ok(DoneInfo::present(path, &manifest));
        }
        let me = ctx.link.session().map(|s| s.peer_id);
        let mut candidates: Vec<String> = match &from {
            Some(addr) => vec![addr.clone()],
            None => located
                .holders
                .into_iter()
                .filter(|h| h.chunks.contains(chunk) && Some(&h.peer_id) != me.as_ref())
                .map(|h| h.addr)
                .collect(),
        };
        if candidates.is_empty() {
            return Err(PeerError::Unavailable(format!(
                "no live holder has chunk {chunk} of {name:?}"
            )));
        }
        fastrand::shuffle(&mut candidates);
        let (part, _, existed) = self.open_part(&manifest, Mode::Chunks).await?;
        let sink = self.sink(&part, &manifest);
        let mut last = None;
        for addr in candidates.into_iter().take(CHUNK_ATTEMPTS) {
            let conn = ctx.pool.connect(&addr)?;
            let outcome = request::fetch_into(
                &ctx.pool,
                &conn,
                manifest.clone(),
                request::Ask::only(chunk, false),
                (
                    ctx.config.chunk_timeout,
                    Caps::new([ctx.download_cap.clone()]),
                ),
                sink.clone(),
                // Nothing to swap: no alternatives are offered.
                tokio::sync::mpsc::unbounded_channel().0,
            )
            .await;
            ctx.counters.add_fetched(outcome.received);
            match outcome.result {
                Ok(()) => {
                    sink.held(chunk);
                    // The resume state is written while the tracker stores
                    // the registration.
                    let (p, holdings, n) = (part.clone(), ctx.holdings.clone(), name.clone());
                    let save = blocking(move || {
                        // A whole-file download keeps its mode.
                        let mode = match existed {
                            true => p.state().map_or(Mode::Chunks, |s| s.mode),
                            false => Mode::Chunks,
                        };
                        holdings.save_resume(&n, mode, false)
                    });
                    let (saved, flushed) = tokio::join!(save, ctx.link.flush());
                    if let Err(e) = saved {
                        warn!(error = %e, "cannot save resume state");
                    }
                    if let Err(e) = flushed {
                        warn!(error = %e, "chunk registered locally; the tracker will hear of it once it answers");
                    }
                    return Ok(DoneInfo {
                        path: part.path.clone(),
                        digest: manifest.chunk_digest(chunk),
                        bytes_received: outcome.received,
                        chunks_fetched: 1,
                        elapsed: started.elapsed(),
                        source: addr,
                        already_present: false,
                        holders_banned: 0,
                    });
                }
                Err(Failure::Write(e)) => return Err(e),
                Err(f) => {
                    if matches!(f, Failure::Bad(_) | Failure::Lacks) {
                        ctx.counters.add_strike();
                    }
                    last = Some((addr, f));
                }
            }
        }
        Err(match last {
            Some((addr, Failure::Lacks)) if from.is_some() => {
                PeerError::NotFound(format!("{addr} does not have chunk {chunk} of {name:?}"))
            }
            Some((addr, Failure::Bad(why))) => {
                PeerError::Unavailable(format!("{addr} sent bad data for chunk {chunk}: {why}"))
            }
            Some((addr, f)) => {
                PeerError::Unavailable(format!("cannot fetch chunk {chunk} from {addr}: {f:?}"))
            }
            None => PeerError::Unavailable(format!("no holder could supply chunk {chunk}")),
        })
    }
}
