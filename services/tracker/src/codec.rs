//! The catalog's bytes on disk: manifests (as the redb store keeps them) and
//! [`Change`]s (as the journal logs them). Decoding re-validates everything:
//! what comes back from disk is not trusted blindly.
//!
//! A change is a tag byte and its fields; integers are little-endian, strings
//! and byte strings are prefixed with their length as a u32.

use std::sync::Arc;

use hive::{ChunkSet, ChunkSize, Digest, FileName, Layout, Manifest, name::NameError};

use crate::{
    auth::{Member, PeerId},
    registry::Change,
};

pub fn encode_manifest(m: &Manifest, out: &mut Vec<u8>) {
    out.reserve(44 + 32 * m.chunk_digests().len());
    out.extend_from_slice(&m.size().to_le_bytes());
    out.extend_from_slice(&m.layout().chunk_size().get().to_le_bytes());
    out.extend_from_slice(m.digest().as_bytes());
    for d in m.chunk_digests() {
        out.extend_from_slice(d.as_bytes());
    }
}

pub fn decode_manifest(name: &str, bytes: &[u8]) -> Option<Manifest> {
    let (size, rest) = bytes.split_first_chunk::<8>()?;
    let (chunk_size, rest) = rest.split_first_chunk::<4>()?;
    let (digest, rest) = rest.split_first_chunk::<32>()?;
    let chunk_size = ChunkSize::new(u64::from(u32::from_le_bytes(*chunk_size))).ok()?;
    let layout = Layout::new(u64::from_le_bytes(*size), chunk_size).ok()?;
    let digests = rest
        .chunks(32)
        .map(Digest::from_bytes)
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    Manifest::new(
        FileName::new(name).ok()?,
        layout,
        digests,
        Digest::from_bytes(digest).ok()?,
    )
    .ok()
}

const PUT_MANIFEST: u8 = 1;
const REMOVE_MANIFEST: u8 = 2;
const PUT_PEER: u8 = 3;
const REMOVE_PEER: u8 = 4;
const PUT_HOLDING: u8 = 5;
const REMOVE_HOLDING: u8 = 6;
/// A [`PUT_PEER`] followed by its member's 32 bytes: a session registered
/// over TLS. A tag of its own, so that logs written before sessions had
/// members read back as they were.
const PUT_MEMBER_PEER: u8 = 7;

/// Appends `changes` to `out`.
pub fn encode_changes(changes: &[Change], out: &mut Vec<u8>) {
    for change in changes {
        match change {
            Change::PutManifest(m) => {
                out.push(PUT_MANIFEST);
                put_bytes(out, m.name().as_str().as_bytes());
                let at = out.len();
                out.extend_from_slice(&[0; 4]);
                encode_manifest(m, out);
                let len = u32::try_from(out.len() - at - 4).expect("a manifest is under 4 GiB");
                out[at..at + 4].copy_from_slice(&len.to_le_bytes());
            }
            Change::RemoveManifest(name) => {
                out.push(REMOVE_MANIFEST);
                put_bytes(out, name.as_str().as_bytes());
            }
            Change::PutPeer {
                peer,
                addr,
                token,
                member,
            } => {
                out.push(match member {
                    None => PUT_PEER,
                    Some(_) => PUT_MEMBER_PEER,
                });
                out.extend_from_slice(&peer.as_u64().to_le_bytes());
                put_bytes(out, addr.as_bytes());
                out.extend_from_slice(token.as_bytes());
                if let Some(member) = member {
                    out.extend_from_slice(member.as_bytes());
                }
            }
            Change::RemovePeer(peer) => {
                out.push(REMOVE_PEER);
                out.extend_from_slice(&peer.as_u64().to_le_bytes());
            }
            Change::PutHolding { peer, name, chunks } => {
                out.push(PUT_HOLDING);
                out.extend_from_slice(&peer.as_u64().to_le_bytes());
                put_bytes(out, name.as_str().as_bytes());
                out.extend_from_slice(&chunks.universe().to_le_bytes());
                put_bytes(out, &chunks.to_bytes());
            }
            Change::RemoveHolding { peer, name } => {
                out.push(REMOVE_HOLDING);
                out.extend_from_slice(&peer.as_u64().to_le_bytes());
                put_bytes(out, name.as_str().as_bytes());
            }
        }
    }
}

/// The changes `encode_changes` wrote into `bytes`, or `None` if anything
/// in them is malformed. A change naming a file by a name that today's
/// name rules refuse as deceptive (BI-9: it was logged before they grew) is
/// left out, not taken for damage: the log goes on after it.
pub fn decode_changes(mut bytes: &[u8]) -> Option<Vec<Change>> {
    let mut changes = Vec::new();
    while let Some((&tag, rest)) = bytes.split_first() {
        bytes = rest;
        let r = &mut bytes;
        changes.push(match tag {
            PUT_MANIFEST => {
                let name = take_str(r)?;
                let manifest = take_bytes(r)?;
                if let Err(NameError::Deceptive(_)) = FileName::new(name) {
                    left_out(name);
                    continue;
                }
                Change::PutManifest(Arc::new(decode_manifest(name, manifest)?))
            }
            REMOVE_MANIFEST => {
                let Named::Valid(name) = take_name(r)? else {
                    continue;
                };
                Change::RemoveManifest(name)
            }
            PUT_PEER | PUT_MEMBER_PEER => Change::PutPeer {
                peer: take_peer(r)?,
                addr: take_str(r)?.to_owned(),
                token: blake3::Hash::from_bytes(*take_array::<32>(r)?),
                member: match tag {
                    PUT_MEMBER_PEER => Some(Member::from_bytes(*take_array::<32>(r)?)),
                    _ => None,
                },
            },
            REMOVE_PEER => Change::RemovePeer(take_peer(r)?),
            PUT_HOLDING => {
                let peer = take_peer(r)?;
                let name = take_name(r)?;
                let universe = u32::from_le_bytes(*take_array(r)?);
                let chunks = ChunkSet::from_bytes(universe, take_bytes(r)?)?;
                let Named::Valid(name) = name else {
                    continue;
                };
                Change::PutHolding {
                    peer,
                    name,
                    chunks: Arc::new(chunks),
                }
            }
            REMOVE_HOLDING => {
                let peer = take_peer(r)?;
                let Named::Valid(name) = take_name(r)? else {
                    continue;
                };
                Change::RemoveHolding { peer, name }
            }
            _ => return None,
        });
    }
    Some(changes)
}

/// A name as logged.
enum Named {
    Valid(FileName),
    /// One today's rules refuse as deceptive: its change is left out.
    Deceptive,
}

fn left_out(name: &str) {
    tracing::warn!(
        name = %name.escape_default(),
        "a logged change names a file by a name the name rules now refuse; left out"
    );
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("a field is under 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

fn take_array<'a, const N: usize>(r: &mut &'a [u8]) -> Option<&'a [u8; N]> {
    let (head, rest) = r.split_first_chunk::<N>()?;
    *r = rest;
    Some(head)
}

fn take_bytes<'a>(r: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(u32::from_le_bytes(*take_array(r)?)).ok()?;
    let (head, rest) = r.split_at_checked(len)?;
    *r = rest;
    Some(head)
}

fn take_str<'a>(r: &mut &'a [u8]) -> Option<&'a str> {
    std::str::from_utf8(take_bytes(r)?).ok()
}

fn take_name(r: &mut &[u8]) -> Option<Named> {
    let name = take_str(r)?;
    match FileName::new(name) {
        Ok(name) => Some(Named::Valid(name)),
        Err(NameError::Deceptive(_)) => {
            left_out(name);
            Some(Named::Deceptive)
        }
        Err(_) => None,
    }
}

fn take_peer(r: &mut &[u8]) -> Option<PeerId> {
    Some(PeerId::from_u64(u64::from_le_bytes(*take_array(r)?)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One change of every kind.
    pub(crate) fn every_kind() -> Vec<Change> {
        let bytes: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &bytes).unwrap();
        let manifest = Manifest::from_file(&file, 3000, "a.bin".parse().unwrap(), None).unwrap();
        let mut chunks = ChunkSet::empty(manifest.chunk_count());
        let mut all = manifest.layout().chunks();
        chunks.insert(all.next().unwrap());
        chunks.insert(all.next_back().unwrap());
        vec![
            Change::PutManifest(Arc::new(manifest)),
            Change::PutPeer {
                peer: PeerId::from_u64(7),
                addr: "10.0.0.7:4000".into(),
                token: blake3::hash(b"token"),
                member: None,
            },
            Change::PutHolding {
                peer: PeerId::from_u64(7),
                name: "a.bin".parse().unwrap(),
                chunks: Arc::new(chunks),
            },
            Change::RemoveHolding {
                peer: PeerId::from_u64(7),
                name: "a.bin".parse().unwrap(),
            },
            Change::RemovePeer(PeerId::from_u64(u64::MAX)),
            Change::RemoveManifest("a.bin".parse().unwrap()),
        ]
    }

    /// A session registered over TLS: with the member that holds its address.
    pub(crate) fn members_peer() -> Change {
        Change::PutPeer {
            peer: PeerId::from_u64(8),
            addr: "10.0.0.8:4000".into(),
            token: blake3::hash(b"another token"),
            member: Some(Member::of_cert(b"a member's certificate")),
        }
    }

    #[test]
    fn every_change_comes_back_as_it_went() {
        let mut changes = every_kind();
        changes.push(members_peer());
        let mut bytes = Vec::new();
        encode_changes(&changes, &mut bytes);
        assert_eq!(decode_changes(&bytes), Some(changes));
        assert_eq!(decode_changes(&[]), Some(Vec::new()));
    }

    #[test]
    fn a_session_without_a_member_is_logged_as_before_members() {
        // PUT_PEER's bytes as logged before sessions had members.
        let mut old = vec![PUT_PEER];
        old.extend_from_slice(&7u64.to_le_bytes());
        put_bytes(&mut old, b"10.0.0.7:4000");
        old.extend_from_slice(blake3::hash(b"token").as_bytes());
        let mut bytes = Vec::new();
        encode_changes(&every_kind()[1..2], &mut bytes);
        assert_eq!(bytes, old);
        // With a member: 32 bytes more, under a tag of its own; cut short,
        // refused.
        bytes.clear();
        encode_changes(&[members_peer()], &mut bytes);
        assert_eq!(bytes[0], PUT_MEMBER_PEER);
        assert_eq!(decode_changes(&bytes[..bytes.len() - 1]), None);
    }

    #[test]
    fn malformed_bytes_are_refused_not_guessed() {
        let mut bytes = Vec::new();
        encode_changes(&every_kind(), &mut bytes);
        // Every cut short of the end leaves a change incomplete.
        let whole = decode_changes(&bytes).unwrap().len();
        for cut in 0..bytes.len() {
            if let Some(decoded) = decode_changes(&bytes[..cut]) {
                assert!(decoded.len() < whole, "cut at {cut}");
            }
        }
        assert_eq!(decode_changes(&[99]), None, "unknown tag");
        // A name no registration could have made.
        let mut bad = vec![REMOVE_MANIFEST];
        put_bytes(&mut bad, b"../etc/passwd");
        assert_eq!(decode_changes(&bad), None);
    }

    #[test]
    fn a_name_refused_since_it_was_logged_drops_its_changes_not_the_log() {
        // Logged when "a\u{202E}b" was still a name: the same bytes as
        // "aZZZb" with the three bytes of U+202E for "ZZZ".
        let peer = PeerId::from_u64(3);
        let name: FileName = "aZZZb".parse().unwrap();
        let changes = vec![
            Change::RemoveHolding {
                peer,
                name: name.clone(),
            },
            Change::RemoveManifest(name),
            Change::RemovePeer(peer),
        ];
        let mut bytes = Vec::new();
        encode_changes(&changes, &mut bytes);
        let mut at = 0;
        while let Some(i) = bytes[at..].windows(3).position(|w| w == b"ZZZ") {
            bytes[at + i..at + i + 3].copy_from_slice("\u{202E}".as_bytes());
            at += i + 3;
        }
        assert!(at > 0, "the name was found in the log");
        assert_eq!(
            decode_changes(&bytes),
            Some(vec![Change::RemovePeer(peer)]),
            "the deceptive name's changes are left out, the rest replayed"
        );
    }
}
