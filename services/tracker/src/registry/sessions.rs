//! Sessions and liveness: credentials, heartbeats, Leave (seed message 6)
//! and the sweep that drops silent peers and long-orphaned files.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use super::{
    Change, Credentials, PeerEntry, Registry, RegistryError,
    rules::{holding_bytes, manifest_bytes},
};
use crate::auth::{self, Member, PeerId, Token, TokenHash};

impl Registry {
    /// Keeps a session alive, and confirms a restored one.
    pub fn heartbeat(&mut self, cred: &Credentials, now: Instant) -> Result<(), RegistryError> {
        let peer = self.authorize(cred, now)?;
        let p = self.peers.get_mut(&peer).expect("authorized above");
        p.last_seen = now;
        p.confirmed = true;
        Ok(())
    }

    /// Seed message 6: ends a session and drops all it held.
    pub fn leave(
        &mut self,
        cred: &Credentials,
        now: Instant,
        changes: &mut Vec<Change>,
    ) -> Result<(), RegistryError> {
        let peer = self.authorize(cred, now)?;
        self.remove_peer(peer, now);
        changes.push(Change::RemovePeer(peer));
        Ok(())
    }

    /// Drops peers silent for a TTL, and releases files nobody held for
    /// [`super::Limits::forget_after`] (and their charges). Returns how many
    /// peers went.
    pub fn expire(&mut self, now: Instant, changes: &mut Vec<Change>) -> usize {
        let ttl = self.limits.ttl;
        let silent: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.is_live(now, ttl))
            .map(|(id, _)| *id)
            .collect();
        for &peer in &silent {
            self.remove_peer(peer, now);
            changes.push(Change::RemovePeer(peer));
        }
        let forget = self.limits.forget_after;
        let mut freed = 0;
        let mut released = Vec::new();
        self.files.retain(|name, f| {
            let keep = f
                .orphaned_since
                .is_none_or(|since| now.saturating_duration_since(since) < forget);
            if !keep {
                let bytes = manifest_bytes(&f.manifest);
                freed += bytes;
                released.extend(f.charged.take().map(|host| (host, bytes)));
                changes.push(Change::RemoveManifest(name.clone()));
            }
            keep
        });
        self.catalog_bytes -= freed;
        for (host, bytes) in released {
            self.uncharge(&host, bytes);
        }
        silent.len()
    }

    /// Checks a session's credentials; returns the peer they are good for.
    ///
    /// A valid session acting for another id gets PermissionDenied; an id the
    /// tracker does not know (or has expired) gets UnknownPeer, so the peer
    /// registers again; anything else is Unauthenticated.
    pub(super) fn authorize(
        &self,
        cred: &Credentials,
        now: Instant,
    ) -> Result<PeerId, RegistryError> {
        let owner = self.tokens.get(&cred.token).copied();
        let live = |p: &PeerEntry| p.is_live(now, self.limits.ttl);
        match self.peers.get(&cred.peer).filter(|p| live(p)) {
            // blake3::Hash compares in constant time.
            Some(p) if p.token == cred.token => Ok(cred.peer),
            Some(_) if owner.is_some() => Err(RegistryError::PermissionDenied(cred.peer)),
            Some(_) => Err(RegistryError::Unauthenticated),
            None if owner.is_some_and(|o| o != cred.peer) => {
                Err(RegistryError::PermissionDenied(cred.peer))
            }
            None => Err(RegistryError::UnknownPeer(cred.peer)),
        }
    }

    pub(super) fn mint_unused(&self) -> Result<(PeerId, Token), RegistryError> {
        loop {
            let (peer, token) = auth::mint()?;
            if !self.peers.contains_key(&peer) && !self.tokens.contains_key(&token.hash()) {
                return Ok((peer, token));
            }
        }
    }

    pub(super) fn insert_peer(
        &mut self,
        peer: PeerId,
        addr: String,
        token: TokenHash,
        member: Option<Member>,
        now: Instant,
        confirmed: bool,
    ) {
        self.tokens.insert(token, peer);
        self.addrs.insert(addr.clone(), peer);
        self.peers.insert(
            peer,
            PeerEntry {
                addr,
                token,
                member,
                last_seen: now,
                confirmed,
                files: HashSet::new(),
            },
        );
    }

    pub(super) fn remove_peer(&mut self, peer: PeerId, now: Instant) {
        let Some(p) = self.peers.remove(&peer) else {
            return;
        };
        self.tokens.remove(&p.token);
        if self.addrs.get(&p.addr) == Some(&peer) {
            self.addrs.remove(&p.addr);
        }
        for name in &p.files {
            if let Some(f) = self.files.get_mut(name)
                && f.remove_holding(peer, now)
            {
                self.catalog_bytes -= holding_bytes(f.manifest.chunk_count());
            }
        }
    }
}

impl PeerEntry {
    pub(super) fn is_live(&self, now: Instant, ttl: Duration) -> bool {
        now.saturating_duration_since(self.last_seen) < ttl
    }
}
