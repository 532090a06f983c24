//! The keys of files and peers (see the table in the module's doc).

use hive::FileName;

use super::BUCKETS;
use crate::auth::PeerId;

/// A file's keys (its count planes and scratch keys are named by the
/// scripts from the same prefix).
pub(super) struct FileKeys {
    pub(super) tag: String,
    pub(super) m: String,
    pub(super) x: String,
}

impl FileKeys {
    pub(super) fn new(name: &FileName) -> Self {
        let hash = blake3::hash(name.as_str().as_bytes());
        let tag: String = hash.as_bytes()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self::for_tag(tag)
    }

    pub(super) fn for_tag(tag: String) -> Self {
        Self {
            m: format!("hv:f:{{{tag}}}:m"),
            x: format!("hv:f:{{{tag}}}:x"),
            tag,
        }
    }
}

/// A peer's keys.
pub(super) struct PeerKeys {
    pub(super) id: String,
    pub(super) s: String,
    pub(super) l: String,
    pub(super) f: String,
    pub(super) d: String,
}

impl PeerKeys {
    pub(super) fn new(peer: PeerId) -> Self {
        let id = peer.to_hex();
        let p = bucket_prefix(peer.as_u64() % BUCKETS);
        Self {
            s: format!("{p}s:{id}"),
            l: format!("{p}l:{id}"),
            f: format!("{p}f:{id}"),
            d: format!("{p}d"),
            id,
        }
    }
}

/// A peer's liveness key alone (what Locate checks per holder).
pub(super) fn liveness_key(peer: PeerId) -> String {
    let p = bucket_prefix(peer.as_u64() % BUCKETS);
    format!("{p}l:{}", peer.to_hex())
}

pub(super) fn bucket_prefix(bucket: u64) -> String {
    format!("hv:p:{{{bucket:02x}}}:")
}

pub(super) fn token_key(token: &[u8]) -> String {
    let hex: String = token.iter().map(|b| format!("{b:02x}")).collect();
    format!("hv:t:{hex}")
}

pub(super) fn addr_key(addr: &str) -> String {
    format!("hv:a:{addr}")
}

/// What `host` has put in the catalog (the per-address quotas).
pub(super) fn charge_key(host: &str) -> String {
    format!("hv:q:{host}")
}

pub(super) const FILES: &str = "hv:files";
pub(super) const ORPHANS: &str = "hv:orph";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_a_file_in_one_slot_and_a_peer_in_its_bucket() {
        // A name with braces still gets one tag of its own: 16 hex digits.
        let f = FileKeys::new(&FileName::new("a{b}c").unwrap());
        assert_eq!(f.tag.len(), 16);
        assert!(f.tag.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(f.m, format!("hv:f:{{{}}}:m", f.tag));
        assert_eq!(f.x, format!("hv:f:{{{}}}:x", f.tag));
        let p = PeerKeys::new(PeerId::from_u64(0x21 + BUCKETS * 7));
        for k in [&p.s, &p.l, &p.f, &p.d] {
            assert!(k.starts_with("hv:p:{21}:"), "{k}");
        }
        assert_eq!(liveness_key(PeerId::from_u64(0x21 + BUCKETS * 7)), p.l);
    }
}
