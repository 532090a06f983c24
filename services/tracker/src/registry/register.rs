//! Seed message 1, Register: a session starts or grows by the files it
//! offers. Every check comes first ([`super::rules`]), so a refused call
//! changes nothing, not even the files offered before the one refused.

use std::{
    collections::{HashSet, btree_map},
    sync::Arc,
    time::Instant,
};

use super::{
    Caller, Change, FileEntry, Offer, Registered, Registry, RegistryError,
    rules::{self, holding_bytes, manifest_bytes},
};
use crate::auth::{Member, PeerId, Token};

impl Registry {
    /// Seed message 1: starts or extends a session holding `offers`.
    pub fn register(
        &mut self,
        caller: Caller,
        offers: Vec<Offer>,
        now: Instant,
        changes: &mut Vec<Change>,
    ) -> Result<Registered, RegistryError> {
        let existing = match &caller {
            Caller::Session(cred) => Some(self.authorize(cred, now)?),
            Caller::New { addr, member } => {
                let held_by = self.address_holder(addr, now);
                rules::check_address(&self.limits, addr, member.as_ref(), held_by)?;
                None
            }
        };
        self.check_register(&caller, existing, &offers)?;
        let (peer, token, addr) = self.open_session(caller, now, changes)?;
        let host = rules::charged_host(&addr).to_owned();
        for offer in offers {
            self.apply_offer(peer, &host, offer, now, changes);
        }
        Ok(Registered { peer, token, addr })
    }

    /// Everything [`Registry::register`] checks before it changes anything:
    /// conflicts, the file quotas (per session, per address, in all) and the
    /// catalog's byte budget.
    fn check_register(
        &self,
        caller: &Caller,
        existing: Option<PeerId>,
        offers: &[Offer],
    ) -> Result<(), RegistryError> {
        let offered = rules::check_offers(offers, |name| {
            self.files.get(name).map(|f| f.manifest.as_ref())
        })?;
        let new: Vec<&hive::Manifest> = offered
            .iter()
            .filter(|(n, _)| !self.files.contains_key(**n))
            .map(|(_, m)| *m)
            .collect();
        rules::check_file_count(&self.limits, self.files.len() + new.len())?;
        let addr = match (caller, existing) {
            (_, Some(p)) => &self.peers[&p].addr,
            (Caller::New { addr, .. }, None) => addr,
            (Caller::Session(_), None) => unreachable!("a session is authorized first"),
        };
        let new_bytes = new.iter().map(|m| manifest_bytes(m)).sum();
        let usage = self.usage(rules::charged_host(addr));
        rules::check_address_quota(&self.limits, usage, new.len() as u64, new_bytes)?;
        let held = match existing {
            Some(p) => {
                let p = &self.peers[&p];
                p.files.len() + offered.keys().filter(|n| !p.files.contains(**n)).count()
            }
            None => offered.len(),
        };
        rules::check_files_per_peer(&self.limits, held)?;
        let growth = self.growth(existing, offers);
        let replaced = self.replaced_bytes(caller);
        rules::check_budget(
            &self.limits,
            self.catalog_bytes,
            growth.saturating_sub(replaced),
        )
    }

    /// What the catalog grows by: new files' manifests, new holdings.
    fn growth(&self, existing: Option<PeerId>, offers: &[Offer]) -> u64 {
        let held_now = |p: PeerId, name| self.peers[&p].files.contains(name);
        let mut seen = HashSet::new();
        offers
            .iter()
            .filter(|o| seen.insert(o.manifest.name()))
            .map(|Offer { manifest, chunks }| {
                let name = manifest.name();
                let known = self.files.contains_key(name);
                let held = existing.is_some_and(|p| held_now(p, name));
                rules::offer_bytes(manifest, chunks, known, held)
            })
            .sum()
    }

    /// The member whose live session holds `addr`, if one does: a session
    /// silent past the TTL but not yet swept holds nothing.
    fn address_holder(&self, addr: &str, now: Instant) -> Option<&Member> {
        self.addrs
            .get(addr)
            .and_then(|p| self.peers.get(p))
            .filter(|p| p.is_live(now, self.limits.ttl))
            .and_then(|p| p.member.as_ref())
    }

    /// What a new session frees by replacing the old one at its address: a
    /// peer registering again from its address replaces its old session.
    fn replaced_bytes(&self, caller: &Caller) -> u64 {
        let Caller::New { addr, .. } = caller else {
            return 0;
        };
        self.addrs
            .get(addr)
            .and_then(|old| self.peers.get(old))
            .map_or(0, |old| {
                old.files
                    .iter()
                    .filter_map(|name| self.files.get(name))
                    .map(|f| holding_bytes(f.manifest.chunk_count()))
                    .sum()
            })
    }

    /// The caller's session: the existing one, or a new one minted for its
    /// address (replacing any old session there).
    fn open_session(
        &mut self,
        caller: Caller,
        now: Instant,
        changes: &mut Vec<Change>,
    ) -> Result<(PeerId, Option<Token>, String), RegistryError> {
        let (addr, member) = match caller {
            Caller::Session(cred) => {
                return Ok((cred.peer, None, self.peers[&cred.peer].addr.clone()));
            }
            Caller::New { addr, member } => (addr, member),
        };
        let (peer, token) = self.mint_unused()?;
        let hash = token.hash_for(member.as_ref());
        if let Some(old) = self.addrs.get(&addr).copied() {
            // The same address can serve only one live peer: this is that
            // peer restarted (on a TLS tracker, the same member, or the old
            // session is no longer live: checked first). Its old session goes.
            self.remove_peer(old, now);
            changes.push(Change::RemovePeer(old));
        }
        self.insert_peer(peer, addr.clone(), hash, member, now, true);
        changes.push(Change::PutPeer {
            peer,
            addr: addr.clone(),
            token: hash,
            member,
        });
        Ok((peer, Some(token), addr))
    }

    /// Adds one checked offer: its manifest if the file is new (charged to
    /// `host`), and the peer's holding of it (dropped if the offer holds no chunk).
    fn apply_offer(
        &mut self,
        peer: PeerId,
        host: &str,
        Offer { manifest, chunks }: Offer,
        now: Instant,
        changes: &mut Vec<Change>,
    ) {
        let name = manifest.name().clone();
        if let btree_map::Entry::Vacant(e) = self.files.entry(name.clone()) {
            self.catalog_bytes += manifest_bytes(&manifest);
            let manifest = Arc::new(manifest);
            changes.push(Change::PutManifest(manifest.clone()));
            e.insert(FileEntry::new(manifest, now));
            self.charge(&name, host);
        }
        self.put_holding(peer, name, chunks, now, changes);
    }
}
