//! Seed message 3 on the client side: where a file is, as validated domain
//! data. The checks are plain functions of the answer, so each rule is
//! tested without a tracker.

use hive::{
    ChunkSet, FileName, Manifest,
    pb::{
        tracker::{self as pb},
        types,
    },
    wire,
};
use tonic::Code;

use super::Trackers;
use crate::error::PeerError;

/// A file as the tracker located it, validated.
#[derive(Debug, Clone)]
pub struct Located {
    pub manifest: Manifest,
    /// Other peers holding some of it (never this peer itself).
    pub holders: Vec<Holder>,
    /// Live holders of each chunk (the tracker caps them at 255); position 0
    /// is chunk 1.
    pub chunk_holders: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub peer_id: String,
    pub addr: String,
    pub chunks: ChunkSet,
}

/// Asks the tracker where `name` is. `known` is the manifest the caller
/// already has (the tracker leaves it out unless the content changed); `me`
/// is this peer's id, left out of the holders.
pub async fn locate(
    trackers: &Trackers,
    name: &FileName,
    known: Option<&Manifest>,
    max_holders: u32,
    me: Option<&str>,
) -> Result<Located, PeerError> {
    let req = pb::LocateRequest {
        name: name.to_string(),
        known_digest: known
            .map(|m| bytes::Bytes::copy_from_slice(m.digest().as_bytes()))
            .unwrap_or_default(),
        max_holders,
    };
    let found = trackers
        .call(|mut client| {
            let req = req.clone();
            async move { client.locate(req).await }
        })
        .await
        .map_err(|s| match s.code() {
            Code::NotFound => PeerError::NotFound(format!("the tracker does not know {name:?}")),
            _ => PeerError::tracker(&s),
        })?;
    located(name, known, found, me)
}

/// A Locate answer for `name`, checked. A bad or mismatched manifest fails
/// the whole answer; a holder with a malformed entry is skipped, and so is
/// this peer. Holders keep the tracker's order.
pub fn located(
    name: &FileName,
    known: Option<&Manifest>,
    found: pb::LocateResponse,
    me: Option<&str>,
) -> Result<Located, PeerError> {
    let manifest = manifest(name, known, found.manifest)?;
    let universe = manifest.chunk_count();
    let holders = found
        .holders
        .into_iter()
        .filter_map(|h| holder(universe, h, me))
        .collect();
    let mut chunk_holders: Vec<u32> = found.chunk_holders.iter().map(|&c| c.into()).collect();
    chunk_holders.resize(universe as usize, 0);
    Ok(Located {
        manifest,
        holders,
        chunk_holders,
    })
}

/// The file's manifest: the one sent, which must be well-formed and for
/// `name`, else the one the caller has (left out: it is still the file's).
fn manifest(
    name: &FileName,
    known: Option<&Manifest>,
    sent: Option<types::Manifest>,
) -> Result<Manifest, PeerError> {
    let manifest = match (sent, known) {
        (Some(m), _) => Manifest::try_from(m)
            .map_err(|e| PeerError::Invalid(format!("the tracker sent a bad manifest: {e}")))?,
        (None, Some(known)) => known.clone(),
        (None, None) => return Err(PeerError::Internal("the tracker sent no manifest".into())),
    };
    if manifest.name() != name {
        return Err(PeerError::Invalid(format!(
            "asked for {name:?}, the tracker answered for {:?}",
            manifest.name()
        )));
    }
    Ok(manifest)
}

/// One listed holder, if its entry is usable and it is not this peer.
fn holder(universe: u32, h: pb::Holder, me: Option<&str>) -> Option<Holder> {
    if me == Some(h.peer_id.as_str()) || !valid_addr(&h.addr) {
        return None;
    }
    let chunks = wire::holder_chunks(universe, &h.chunks, &h.chunk_bitmap).ok()?;
    Some(Holder {
        peer_id: h.peer_id,
        addr: h.addr,
        chunks,
    })
}

/// Whether `addr` looks like `host:port`, with a usable port.
pub fn valid_addr(addr: &str) -> bool {
    addr.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0))
}

#[cfg(test)]
mod tests {
    use hive::{ChunkIndex, ChunkSize, pb::types::ChunkRange};

    use super::*;

    /// A 10-chunk file named `name`.
    fn file(name: &str, chunk_size: u64) -> Manifest {
        let data = vec![7u8; 10 * 1024];
        let mut tmp = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut tmp, &data).unwrap();
        Manifest::from_file(
            &tmp,
            data.len() as u64,
            FileName::new(name).unwrap(),
            Some(ChunkSize::new(chunk_size).unwrap()),
        )
        .unwrap()
    }

    fn listed(peer_id: &str, addr: &str, first: u32, last: u32) -> pb::Holder {
        pb::Holder {
            peer_id: peer_id.into(),
            addr: addr.into(),
            chunks: vec![ChunkRange { first, last }],
            ..Default::default()
        }
    }

    fn answer(m: Option<&Manifest>, holders: Vec<pb::Holder>) -> pb::LocateResponse {
        pb::LocateResponse {
            manifest: m.map(Into::into),
            holders,
            chunk_holders: vec![2, 1].into(),
            holder_count: 0,
        }
    }

    fn name(s: &str) -> FileName {
        FileName::new(s).unwrap()
    }

    #[test]
    fn holders_with_bad_addresses_are_skipped() {
        let m = file("f", 1024);
        let holders = [
            "",
            ":80",
            "host",
            "host:",
            "host:0",
            "host:70000",
            "host:x",
            "h:1",
        ]
        .iter()
        .map(|a| listed("p", a, 1, 10))
        .collect();
        let found = located(&name("f"), None, answer(Some(&m), holders), None).unwrap();
        let addrs: Vec<&str> = found.holders.iter().map(|h| h.addr.as_str()).collect();
        assert_eq!(addrs, ["h:1"]);
    }

    #[test]
    fn holders_with_chunks_out_of_range_are_skipped() {
        let m = file("f", 1024);
        let bitmap = pb::Holder {
            peer_id: "b".into(),
            addr: "b:1".into(),
            // 10 chunks take 2 bytes; 3 is not a bitmap of this file.
            chunk_bitmap: vec![0xff, 0x03, 0].into(),
            ..Default::default()
        };
        let holders = vec![
            listed("zero", "z:1", 0, 3),
            listed("past", "p:1", 9, 11),
            listed("reversed", "r:1", 5, 2),
            bitmap,
            listed("good", "g:1", 3, 10),
        ];
        let found = located(&name("f"), None, answer(Some(&m), holders), None).unwrap();
        assert_eq!(found.holders.len(), 1, "{:?}", found.holders);
        let good = &found.holders[0];
        assert_eq!(good.peer_id, "good");
        assert_eq!(good.chunks.len(), 8);
        assert!(good.chunks.contains(ChunkIndex::new(3).unwrap()));
    }

    #[test]
    fn this_peer_is_not_its_own_holder() {
        let m = file("f", 1024);
        let holders = vec![listed("me", "a:1", 1, 10), listed("other", "b:1", 1, 10)];
        let found = located(
            &name("f"),
            None,
            answer(Some(&m), holders.clone()),
            Some("me"),
        );
        let ids: Vec<String> = found
            .unwrap()
            .holders
            .into_iter()
            .map(|h| h.peer_id)
            .collect();
        assert_eq!(ids, ["other"]);
        // Before the tracker has accepted this peer, nobody is left out.
        let found = located(&name("f"), None, answer(Some(&m), holders), None).unwrap();
        assert_eq!(found.holders.len(), 2);
    }

    #[test]
    fn a_manifest_for_another_name_fails_the_answer() {
        let other = file("g", 1024);
        let err = located(&name("f"), None, answer(Some(&other), vec![]), None).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    }

    #[test]
    fn a_malformed_manifest_fails_the_answer() {
        let m = file("f", 1024);
        let mut wire: types::Manifest = (&m).into();
        wire.size += 1;
        let mut found = answer(None, vec![]);
        found.manifest = Some(wire);
        let err = located(&name("f"), None, found, None).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    }

    #[test]
    fn a_left_out_manifest_is_the_one_known() {
        let known = file("f", 1024);
        let found = located(&name("f"), Some(&known), answer(None, vec![]), None).unwrap();
        assert_eq!(found.manifest, known);
        // Counts are one per chunk whatever the tracker sent.
        assert_eq!(found.chunk_holders, [2, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        // Content that changed comes with its manifest, which wins.
        let changed = file("f", 2048);
        let found = located(
            &name("f"),
            Some(&known),
            answer(Some(&changed), vec![]),
            None,
        );
        assert_eq!(found.unwrap().manifest, changed);
        // Nothing known and nothing sent: the tracker broke the contract.
        let err = located(&name("f"), None, answer(None, vec![]), None).unwrap_err();
        assert_eq!(err.code(), Code::Internal);
    }
}
