//! A new session and its address: the session there is replaced, which on
//! a TLS tracker only the member holding it may do while it is live
//! ([`rules::check_address`]). The address index is on a slot of its own
//! and a session's liveness on its bucket's, so no one script sees both:
//! the index is read and its session checked first, then moved to the new
//! session only if it still names the one checked, else checked again.

use tracing::warn;

use super::{
    Claimed, RedisCatalog,
    keys::{PeerKeys, addr_key, token_key},
    scripts::*,
};
use crate::{
    auth::{self, Member, PeerId, TokenHash},
    error::ServiceError,
    registry::{RegistryError, rules},
};

impl RedisCatalog {
    /// Checks that `member` may take `addr` (nothing written); returns the
    /// id the address index holds ('' for none), for [`Self::open_session`].
    pub(super) async fn address_for(
        &self,
        addr: &str,
        member: &Member,
    ) -> Result<String, ServiceError> {
        let held: Option<String> = self.query(redis::cmd("GET").arg(addr_key(addr))).await?;
        let held = held.unwrap_or_default();
        self.check_holder(addr, member, &held).await?;
        Ok(held)
    }

    /// Refuses `member` the address that session `id` holds while that
    /// session is live and another member's.
    async fn check_holder(
        &self,
        addr: &str,
        member: &Member,
        id: &str,
    ) -> Result<(), ServiceError> {
        let Ok(id) = PeerId::parse(id) else {
            return Ok(());
        };
        let keys = PeerKeys::new(id);
        let live: Option<Vec<u8>> = self.run(HOLDER.key(&keys.s).key(&keys.l)).await?;
        let held_by = live
            .and_then(|m| <[u8; 32]>::try_from(m.as_slice()).ok())
            .map(Member::from_bytes);
        rules::check_address(&self.limits, addr, Some(member), held_by.as_ref())?;
        Ok(())
    }

    /// A new session at `addr`, its token bound to `member` (see
    /// [`auth::Token::hash_for`]); the old one there is ended. On a TLS
    /// tracker `seen` is what [`Self::address_for`] found at `addr`: the
    /// address is taken only while it still holds that, or another session
    /// checked again; if that one refuses, the new session is ended and the
    /// refusal returned.
    pub(super) async fn open_session(
        &self,
        addr: &str,
        member: Option<&Member>,
        seen: Option<String>,
    ) -> Result<(PeerId, auth::Token), ServiceError> {
        let (peer, token) = auth::mint().map_err(RegistryError::from)?;
        let keys = PeerKeys::new(peer);
        let hash: TokenHash = token.hash_for(member);
        let member_bytes = member.map_or(&[][..], |m| m.as_bytes().as_slice());
        self.run::<String>(
            OPEN.key(&keys.s)
                .key(&keys.l)
                .key(&keys.d)
                .arg(&keys.id)
                .arg(addr)
                .arg(hash.as_bytes().as_slice())
                .arg(self.ttl_ms())
                .arg(member_bytes),
        )
        .await?;
        self.query::<()>(
            redis::cmd("SET")
                .arg(token_key(hash.as_bytes()))
                .arg(&keys.id),
        )
        .await?;
        let old = match (member, seen) {
            (Some(member), Some(seen)) => {
                match self.take_address(addr, member, &keys.id, seen).await {
                    Ok(old) => Some(old),
                    Err(refused) => {
                        self.end_new_session(peer).await;
                        return Err(refused);
                    }
                }
            }
            _ => {
                self.query(
                    redis::cmd("SET")
                        .arg(addr_key(addr))
                        .arg(&keys.id)
                        .arg("GET"),
                )
                .await?
            }
        };
        if let Some(old) = old.and_then(|o| PeerId::parse(&o).ok())
            && old != peer
        {
            let ok = PeerKeys::new(old);
            let ended: Vec<Claimed> = self.run(EVICT.key(&ok.d).arg(&ok.id)).await?;
            // The address index already names the new session.
            let ended = ended
                .into_iter()
                .map(|(id, _, token, files)| (id, String::new(), token, files))
                .collect();
            self.clean_up(ended).await?;
        }
        Ok((peer, token))
    }

    /// Ends session `peer`, just opened, whose Register is refused or failed
    /// after it was opened, so that it neither lingers for a TTL nor holds
    /// its address against other members. Best effort: the caller's error
    /// is what the client needs to see, and a session left over by a
    /// failure here still expires with its TTL.
    pub(super) async fn end_new_session(&self, peer: PeerId) {
        let keys = PeerKeys::new(peer);
        let ended = self
            .run::<Vec<Claimed>>(EVICT.key(&keys.d).arg(&keys.id))
            .await;
        let cleaned = match ended {
            Ok(ended) => self.clean_up(ended).await,
            Err(e) => Err(e),
        };
        if let Err(e) = cleaned {
            warn!(%peer, error = %e, "a refused Register's new session is left to expire");
        }
    }

    /// Points the index of `addr` at session `id` if it still holds `seen`;
    /// if another session took it meanwhile, checks that one as
    /// [`Self::address_for`] did and tries again, a few times: an address
    /// that keeps changing hands is UNAVAILABLE (retry). Returns the id
    /// replaced.
    async fn take_address(
        &self,
        addr: &str,
        member: &Member,
        id: &str,
        mut seen: String,
    ) -> Result<String, ServiceError> {
        const TRIES: usize = 8;
        for _ in 0..TRIES {
            let out: Vec<String> = self
                .run(TAKE_ADDR.key(addr_key(addr)).arg(&seen).arg(id))
                .await?;
            match out.as_slice() {
                [ok] if ok == "ok" => return Ok(seen),
                [_, now] => {
                    self.check_holder(addr, member, now).await?;
                    seen = now.clone();
                }
                _ => return Err(super::corrupt("answer to an address claim")),
            }
        }
        Err(super::store_err(format!(
            "the address {addr} changed hands {TRIES} times while this Register took it; try again"
        )))
    }
}
