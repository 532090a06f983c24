//! Registration: a new session with everything held, files shared later,
//! and a file the holdings add. A file the tracker refuses (its name taken
//! by other content, or its content known in another chunk size) is left
//! out rather than keeping the rest of the peer offline; one refused in its
//! own chunk size is handed to re-adoption.

use std::{collections::HashMap, sync::Arc, time::Duration};

use hive::{ChunkSet, FileName, Manifest, pb::tracker as pb, wire};
use tokio::time::Instant;
use tonic::{Code, Request};
use tracing::{info, warn};

use super::{Live, RETRY_MAX, Session, State, authed, no_answer};
use crate::{error::PeerError, scan::Found, tracker_link::SessionInfo};

/// A Register request stays under this size; more files go in later calls.
const REGISTER_BYTES: usize = 512 * 1024;

impl Session {
    /// Registers a complete file new to the holdings, unless the tracker
    /// has it from this session already (a share registers its files before
    /// adding them). Today that is a copy hashed again in the swarm's chunk
    /// size. Unregistered, the next registration takes it along.
    pub(super) async fn register_added(&mut self, manifest: Arc<Manifest>) {
        let State::Registered(live) = &self.state else {
            return;
        };
        if live.announced.get(manifest.name()) == Some(&manifest) {
            return;
        }
        let file = shared_file(&manifest, &ChunkSet::full(manifest.chunk_count()));
        let result = self.call_register(vec![file], Some(live)).await;
        let name = manifest.name().clone();
        match result {
            Ok(_) => {
                info!(file = %name, chunk_size = %manifest.layout().chunk_size(), "shared in the swarm's chunk size");
                if let State::Registered(live) = &mut self.state {
                    live.announced.insert(name, manifest);
                }
            }
            Err(e) if no_answer(&e) => {
                warn!(file = %name, error = %e, "the tracker did not answer; registering this file again at the next flush");
                if let State::Registered(live) = &mut self.state {
                    live.unsent.push(manifest);
                }
            }
            Err(e) if refusal(&e) => {
                warn!(file = %name, error = %e, "the tracker still refused this file");
            }
            Err(e) => {
                warn!(file = %name, error = %e, "cannot register this file");
                self.on_session_error(&e);
            }
        }
    }

    /// Registers a new session holding everything in the holdings; answers
    /// the flushes waiting. A failure is logged here and retried on its
    /// backoff; it is returned for a caller that reports it to the user.
    pub(super) async fn register_all(&mut self) -> Result<(), PeerError> {
        let backoff = match self.state {
            State::Unregistered { backoff, .. } => backoff,
            State::Registered(_) | State::Left => return Ok(()),
        };
        let held = self.holdings.snapshot();
        match self.register_batches(&held).await {
            Ok(live) => {
                info!(peer = %live.peer_id, "registered with the tracker");
                self.state = State::Registered(live);
                // Everything queued was just sent in full.
                self.batch.clear();
                self.answer_waiters(Ok(()));
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, retry_in = ?backoff, "cannot register with the tracker");
                self.answer_waiters(Err(e.clone()));
                self.state = State::Unregistered {
                    at: Instant::now() + backoff,
                    backoff: (backoff * 2).min(RETRY_MAX),
                };
                Err(e)
            }
        }
    }

    /// A new session, then its files in requests of bounded size. A file the
    /// tracker refuses (its name now taken by other content, or known in
    /// another chunk size) is skipped, with a warning, rather than keeping
    /// the rest of the peer offline.
    async fn register_batches(
        &mut self,
        held: &[(Arc<Manifest>, ChunkSet)],
    ) -> Result<Live, PeerError> {
        let files: Vec<pb::SharedFile> = held.iter().map(|(m, c)| shared_file(m, c)).collect();
        let mut batches = batches(files);
        let first = if batches.is_empty() {
            Vec::new()
        } else {
            batches.remove(0)
        };
        let first = match self.call_register(first.clone(), None).await {
            Err(e) if refusal(&e) => {
                batches.insert(0, first);
                self.call_register(Vec::new(), None).await?
            }
            other => other?,
        };
        let interval =
            Duration::from_millis(first.heartbeat_interval_ms).max(Duration::from_millis(10));
        let token = first
            .token
            .parse()
            .map_err(|_| PeerError::Internal("the tracker sent an unusable token".into()))?;
        let mut live = Live {
            peer_id: first.peer_id,
            token,
            heartbeat_at: Instant::now() + interval,
            interval,
            unreachable: false,
            announced: HashMap::new(),
            unsent: Vec::new(),
        };
        let mut refused = Vec::new();
        for batch in batches {
            match self.call_register(batch.clone(), Some(&live)).await {
                Err(e) if refusal(&e) => {
                    for file in batch {
                        let name = file.manifest.as_ref().map(|m| m.name.clone());
                        let name = name.unwrap_or_default();
                        match self.call_register(vec![file], Some(&live)).await {
                            Ok(_) => {}
                            Err(e) if refusal(&e) => {
                                warn!(file = %name, error = %e, "the tracker refused this file; not shared");
                                if let Ok(name) = FileName::new(name) {
                                    if e.code() == Code::InvalidArgument {
                                        let _ = self.refused.send(name.clone());
                                    } else {
                                        // Not served either: Status says so.
                                        self.holdings.retire(&name, &e.to_string(), true);
                                    }
                                    refused.push(name);
                                }
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
                other => {
                    other?;
                }
            }
        }
        live.announced = held
            .iter()
            .filter(|(m, _)| !refused.contains(m.name()))
            .map(|(m, _)| (m.name().clone(), m.clone()))
            .collect();
        self.published.send_replace(Some(SessionInfo {
            peer_id: live.peer_id.clone(),
            addr: first.addr,
        }));
        Ok(live)
    }

    async fn call_register(
        &self,
        files: Vec<pb::SharedFile>,
        live: Option<&Live>,
    ) -> Result<pb::RegisterResponse, PeerError> {
        let msg = pb::RegisterRequest {
            files,
            port: u32::from(self.announce.port),
            advertise_host: self.announce.host.clone(),
            peer_id: live.map(|s| s.peer_id.clone()).unwrap_or_default(),
        };
        let answer = self
            .trackers
            .call(|mut c| {
                let req = match live {
                    Some(live) => authed(msg.clone(), live),
                    None => Request::new(msg.clone()),
                };
                async move { c.register(req).await }
            })
            .await;
        answer.map_err(|s| PeerError::tracker(&s))
    }

    /// Withdraws `name` from the tracker (the Withdraw RPC). A tracker that
    /// does not know the file (or this session: it registers again without
    /// it) has nothing to withdraw.
    pub(super) async fn withdraw(&mut self, name: &FileName) -> Result<(), PeerError> {
        let State::Registered(live) = &mut self.state else {
            return Ok(());
        };
        live.announced.remove(name);
        live.unsent.retain(|m| m.name() != name);
        let msg = pb::WithdrawRequest {
            peer_id: live.peer_id.clone(),
            name: name.to_string(),
        };
        let held = &*live;
        let answer = self
            .trackers
            .call(|mut c| {
                let req = authed(msg.clone(), held);
                async move { c.withdraw(req).await }
            })
            .await;
        match answer.map_err(|s| PeerError::tracker(&s)) {
            Ok(_) => {
                info!(file = %name, "withdrawn from the tracker");
                Ok(())
            }
            Err(e) if e.code() == Code::NotFound => Ok(()),
            Err(e) => {
                self.on_session_error(&e);
                Err(e)
            }
        }
    }

    /// Shares new files: extends the session (starting one if needed) and
    /// adds them to the holdings once the tracker has accepted them.
    /// A refusal by the tracker (a quota: RESOURCE_EXHAUSTED; a name
    /// taken: ALREADY_EXISTS) reaches the caller with its code and message;
    /// only a tracker that did not answer is UNAVAILABLE.
    pub(super) async fn share(&mut self, files: Vec<Found>) -> Result<(), PeerError> {
        if let State::Unregistered { .. } = self.state
            && let Err(e) = self.register_all().await
            && !no_answer(&e)
        {
            return Err(e);
        }
        let State::Registered(live) = &self.state else {
            return Err(PeerError::Unavailable("cannot reach the tracker".into()));
        };
        let wire: Vec<pb::SharedFile> = files
            .iter()
            .map(|f| shared_file(&f.manifest, &ChunkSet::full(f.manifest.chunk_count())))
            .collect();
        for batch in batches(wire) {
            if let Err(e) = self.call_register(batch, Some(live)).await {
                self.on_session_error(&e);
                return Err(match e {
                    PeerError::Tracker {
                        code: Code::AlreadyExists,
                        message,
                    } => PeerError::Exists(message),
                    e => e,
                });
            }
        }
        for f in files {
            let m = f.manifest.clone();
            self.holdings
                .insert_complete(f.manifest, f.path, f.file, f.stamp)?;
            if let State::Registered(live) = &mut self.state {
                live.announced.insert(m.name().clone(), m);
            }
        }
        Ok(())
    }
}

/// A refusal of some files' content, as opposed to a failure of the call:
/// a name taken or a file refused, or a catalog quota (the tracker's
/// "quota exceeded" RESOURCE_EXHAUSTED; its rate limit is a failure of the
/// call, retried).
pub(crate) fn refusal(e: &PeerError) -> bool {
    match e {
        PeerError::Tracker {
            code: Code::ResourceExhausted,
            message,
        } => message.starts_with(QUOTA_REFUSAL),
        e => matches!(e.code(), Code::AlreadyExists | Code::InvalidArgument),
    }
}

/// How the tracker's messages for its catalog quotas begin (its
/// `RegistryError::Quota`).
const QUOTA_REFUSAL: &str = "quota exceeded";

fn shared_file(m: &Arc<Manifest>, chunks: &ChunkSet) -> pb::SharedFile {
    pb::SharedFile {
        manifest: Some(m.as_ref().into()),
        chunks: wire::ranges(chunks),
    }
}

/// Files grouped into requests of at most [`REGISTER_BYTES`] each.
fn batches(files: Vec<pb::SharedFile>) -> Vec<Vec<pb::SharedFile>> {
    use prost::Message;
    let mut out: Vec<Vec<pb::SharedFile>> = Vec::new();
    let mut size = 0;
    for f in files {
        let len = f.encoded_len() + 8;
        if out.is_empty() || size + len > REGISTER_BYTES {
            out.push(Vec::new());
            size = 0;
        }
        size += len;
        out.last_mut().expect("pushed above").push(f);
    }
    out
}
