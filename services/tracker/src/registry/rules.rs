//! The catalog's rules as plain functions over what they need to see: which
//! offers conflict with the catalog, what the quotas allow, what an entry
//! costs, and which holders an answer lists. They hold no state, so any home
//! for the catalog (the in-memory [`super::Registry`] or another backend)
//! applies the same rules by calling them.

use std::collections::HashMap;

use hive::{ChunkSet, FileName, Manifest};

use super::{Limits, Offer, RegistryError};
use crate::auth::Member;

/// Refuses `offer` if its name is registered (`registered`) with other
/// content (a conflict), or with the same content cut into other chunks.
pub fn check_offer(registered: Option<&Manifest>, offer: &Manifest) -> Result<(), RegistryError> {
    let Some(registered) = registered else {
        return Ok(());
    };
    let name = offer.name();
    if registered.digest() != offer.digest() {
        return Err(RegistryError::Conflict {
            name: name.clone(),
            existing: registered.digest(),
        });
    }
    // The same content cut into other chunks: its chunk numbers mean other
    // bytes, and would index past the file's counts.
    if registered.layout() != offer.layout() {
        let l = registered.layout();
        return Err(RegistryError::Invalid(format!(
            "{name:?} is registered in {} chunks of {} bytes; offer it in that layout",
            l.count(),
            l.chunk_size()
        )));
    }
    Ok(())
}

/// Checks each of a Register call's `offers` in order ([`check_offer`]
/// against `registered`, and no name offered twice with different content);
/// returns the distinct names offered with their manifests.
pub fn check_offers<'a, 'm>(
    offers: &'a [Offer],
    registered: impl Fn(&FileName) -> Option<&'m Manifest>,
) -> Result<HashMap<&'a FileName, &'a Manifest>, RegistryError> {
    let mut offered: HashMap<&FileName, &Manifest> = HashMap::new();
    for offer in offers {
        let name = offer.manifest.name();
        check_offer(registered(name), &offer.manifest)?;
        if offered
            .insert(name, &offer.manifest)
            .is_some_and(|m| *m != offer.manifest)
        {
            return Err(RegistryError::Invalid(format!(
                "{name:?} is offered twice with different content or chunks"
            )));
        }
    }
    Ok(offered)
}

/// Refuses a catalog of `files` files past [`Limits::max_files`].
pub fn check_file_count(limits: &Limits, files: usize) -> Result<(), RegistryError> {
    match files > limits.max_files {
        true => Err(RegistryError::Quota(format!(
            "the tracker holds at most {} files",
            limits.max_files
        ))),
        false => Ok(()),
    }
}

/// Refuses a peer holding `files` files past [`Limits::max_files_per_peer`].
pub fn check_files_per_peer(limits: &Limits, files: usize) -> Result<(), RegistryError> {
    match files > limits.max_files_per_peer {
        true => Err(RegistryError::Quota(format!(
            "a peer may hold at most {} files",
            limits.max_files_per_peer
        ))),
        false => Ok(()),
    }
}

/// What one source address has put in the catalog: the names it created
/// that are still there, and their manifests' bytes ([`manifest_bytes`]).
/// A name stays charged to the address that created it until it is
/// released ([`super::Limits::forget_after`] after its last holder went).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub files: u64,
    pub bytes: u64,
}

/// The key an address is charged under: the host of `host:port` (the
/// observed source IP, unless the tracker trusts advertised hosts).
pub fn charged_host(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(host, _)| host)
}

/// Refuses a new session of `member` at `addr` while the live session there
/// belongs to another member (`held_by`: the member of the live session at
/// `addr`, if there is one and it has a member).
///
/// A new session at an address replaces the one there (a restarted peer
/// gets its address back), so on a TLS tracker only the member that holds
/// it may replace it; once its session has left or gone silent for a TTL
/// the address is free. A member is one certificate (its SHA-256, what
/// sessions are bound to): names are not unique (`peerctl certs new NAME`
/// twice makes two members of one name) and a renewal makes a new key, so
/// nothing stabler is known to belong to the same member. A renewed
/// certificate therefore waits out its old session, at most one TTL.
/// Without a member on either side nothing is refused: a plaintext tracker
/// lets anyone replace the session at an address, and a session registered
/// in plaintext (before the tracker gained TLS) cannot use its token over
/// TLS, so it holds nothing against a member.
pub fn check_address(
    limits: &Limits,
    addr: &str,
    member: Option<&Member>,
    held_by: Option<&Member>,
) -> Result<(), RegistryError> {
    match (member, held_by) {
        (Some(new), Some(old)) if new != old => Err(RegistryError::AddressHeld {
            addr: addr.to_owned(),
            ttl: limits.ttl,
        }),
        _ => Ok(()),
    }
}

/// Refuses `files` more names of `bytes` more manifest bytes from an
/// address that has put `usage` in the catalog, past
/// [`Limits::max_files_per_address`] or [`Limits::max_bytes_per_address`].
pub fn check_address_quota(
    limits: &Limits,
    usage: Usage,
    files: u64,
    bytes: u64,
) -> Result<(), RegistryError> {
    let grace = humantime::format_duration(limits.forget_after);
    if usage.files.saturating_add(files) > limits.max_files_per_address as u64 {
        return Err(RegistryError::Quota(format!(
            "this address has {} names in the catalog and may have at most {} \
             (the tracker's --max-files-per-address); a name is released {grace} \
             after its last holder leaves",
            usage.files, limits.max_files_per_address
        )));
    }
    if usage.bytes.saturating_add(bytes) > limits.max_bytes_per_address {
        return Err(RegistryError::Quota(format!(
            "this address's manifests take {} KiB of the catalog, and {} KiB more \
             would pass its {} MiB (the tracker's --max-catalog-mib-per-address); \
             a name is released {grace} after its last holder leaves",
            usage.bytes >> 10,
            bytes.div_ceil(1024),
            limits.max_bytes_per_address >> 20
        )));
    }
    Ok(())
}

/// Refuses `growth` more bytes on a catalog of `catalog_bytes` past
/// [`Limits::max_catalog_bytes`].
pub fn check_budget(limits: &Limits, catalog_bytes: u64, growth: u64) -> Result<(), RegistryError> {
    match catalog_bytes.saturating_add(growth) <= limits.max_catalog_bytes {
        true => Ok(()),
        false => Err(RegistryError::Quota(format!(
            "the tracker's catalog is full ({} MiB of {} MiB)",
            catalog_bytes >> 20,
            limits.max_catalog_bytes >> 20
        ))),
    }
}

/// What the catalog grows by for one offer: the manifest if the file is
/// new (`known` false), the holding if the peer does not hold it yet
/// (`held` false) and the offer does not drop it.
pub fn offer_bytes(manifest: &Manifest, chunks: &ChunkSet, known: bool, held: bool) -> u64 {
    let file = match known {
        true => 0,
        false => manifest_bytes(manifest),
    };
    let dropped = chunks.is_empty() && manifest.chunk_count() > 0;
    let holding = match dropped || held {
        true => 0,
        false => holding_bytes(manifest.chunk_count()),
    };
    file + holding
}

/// What a file's entry costs in the catalog budget: a chunk digest and a
/// holder count per chunk, plus the entry itself.
pub fn manifest_bytes(m: &Manifest) -> u64 {
    512 + 36 * u64::from(m.chunk_count())
}

/// What one peer's holding of a file of `chunks` chunks costs: its bitmap,
/// plus the entry itself.
pub fn holding_bytes(chunks: u32) -> u64 {
    96 + 8 * u64::from(chunks.div_ceil(64))
}

/// The holders a Locate lists: what the caller wants, within the cap.
pub fn cap(want: usize, cap: usize) -> usize {
    match want {
        0 => cap,
        want => want.min(cap),
    }
}

/// Up to `cap` of the `live` holders of one file: confirmed holders first,
/// in random order, and coverage first: a holder is passed over while it
/// only has chunks the holders already chosen have, so every chunk some live
/// holder has is covered unless `cap` runs out first (one pass, not the
/// smallest cover). The slots left go to the rest, in order.
pub fn pick_holders<H>(
    mut live: Vec<H>,
    cap: usize,
    chunks: impl Fn(&H) -> &ChunkSet,
    confirmed: impl Fn(&H) -> bool,
) -> Vec<H> {
    if cap == 0 {
        return Vec::new();
    }
    if live.len() <= cap {
        return live;
    }
    fastrand::shuffle(&mut live);
    live.sort_by_key(|h| !confirmed(h));
    let mut covered = ChunkSet::empty(chunks(&live[0]).universe());
    let (mut chosen, mut passed) = (Vec::with_capacity(cap), Vec::new());
    let mut order = live.into_iter();
    for h in order.by_ref() {
        if chunks(&h).is_subset(&covered) {
            passed.push(h);
            continue;
        }
        covered.union_with(chunks(&h));
        chosen.push(h);
        // Past this, every holder would be passed over: stop looking.
        if chosen.len() == cap || covered.is_full() {
            break;
        }
    }
    let room = cap - chosen.len();
    chosen.extend(passed.into_iter().chain(order).take(room));
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Holders as another backend might keep them: (chunks, confirmed).
    fn holder(universe: u32, chunks: &[u32], confirmed: bool) -> (ChunkSet, bool) {
        let ranges = chunks.iter().map(|&c| c..=c);
        (ChunkSet::from_ranges(universe, ranges).unwrap(), confirmed)
    }

    #[test]
    fn picking_covers_every_chunk_held_before_filling_the_cap() {
        let pick = |live: Vec<(ChunkSet, bool)>, cap| {
            pick_holders(live, cap, |h| &h.0, |h| h.1)
                .into_iter()
                .map(|(c, _)| c.len())
                .collect::<Vec<_>>()
        };
        // Within the cap: everyone, as given.
        let few = vec![holder(4, &[1], true), holder(4, &[2], false)];
        assert_eq!(pick(few, 2), [1, 1]);
        assert!(pick(vec![holder(4, &[1], true)], 0).is_empty());
        // Three holders of chunk 1 only and one of chunk 4 only, cap 2:
        // chunk 4's holder is always chosen, whatever the shuffle.
        let (only_1, _) = holder(4, &[1], true);
        for _ in 0..50 {
            let live = vec![
                holder(4, &[1], true),
                holder(4, &[1], true),
                holder(4, &[1], true),
                holder(4, &[4], false),
            ];
            let chosen = pick_holders(live, 2, |h| &h.0, |h| h.1);
            assert_eq!(chosen.len(), 2);
            assert!(
                chosen.iter().any(|(c, _)| !c.is_subset(&only_1)),
                "{chosen:?}"
            );
        }
    }

    #[test]
    fn an_address_is_held_against_other_members_only() {
        let limits = Limits {
            ttl: std::time::Duration::from_secs(30),
            ..test_limits()
        };
        let (a, b) = (Member::of_cert(b"a"), Member::of_cert(b"b"));
        let check = |new, old| check_address(&limits, "10.0.0.1:4000", new, old);
        // (the new session's member, the live session's there): refused?
        let table = [
            (Some(&b), Some(&a), true),
            (Some(&a), Some(&a), false),
            (Some(&a), None, false),
            (None, Some(&a), false),
            (None, None, false),
        ];
        for (new, old, refused) in table {
            assert_eq!(check(new, old).is_err(), refused, "{new:?} over {old:?}");
        }
        let Err(e) = check(Some(&b), Some(&a)) else {
            unreachable!()
        };
        assert!(e.to_string().contains("10.0.0.1:4000 is held"), "{e}");
    }

    fn test_limits() -> Limits {
        Limits {
            max_files_per_peer: 1,
            max_files: 1,
            max_catalog_bytes: 1000,
            max_files_per_address: 2,
            max_bytes_per_address: 2000,
            locate_holders: 1,
            list_holders: 1,
            ttl: std::time::Duration::from_secs(1),
            forget_after: std::time::Duration::from_secs(1),
        }
    }

    #[test]
    fn the_budget_allows_exactly_its_size() {
        let limits = test_limits();
        assert!(check_budget(&limits, 900, 100).is_ok());
        assert!(matches!(
            check_budget(&limits, 900, 101),
            Err(RegistryError::Quota(_))
        ));
        assert!(check_budget(&limits, u64::MAX, u64::MAX).is_err());
        assert!(check_file_count(&limits, 1).is_ok());
        assert!(check_file_count(&limits, 2).is_err());
        assert!(check_files_per_peer(&limits, 2).is_err());
        let used = Usage {
            files: 1,
            bytes: 1000,
        };
        assert!(check_address_quota(&limits, used, 1, 1000).is_ok());
        let Err(RegistryError::Quota(why)) = check_address_quota(&limits, used, 2, 0) else {
            panic!("a third name passed");
        };
        assert!(why.contains("--max-files-per-address"), "{why}");
        let Err(RegistryError::Quota(why)) = check_address_quota(&limits, used, 1, 1001) else {
            panic!("the byte quota passed");
        };
        assert!(why.contains("--max-catalog-mib-per-address"), "{why}");
        assert_eq!(charged_host("10.0.0.1:4001"), "10.0.0.1");
        assert_eq!(charged_host("[::1]:4001"), "[::1]");
    }
}
