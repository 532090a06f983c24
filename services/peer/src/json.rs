//! The JSON shapes that `peerctl --json` prints and the web API answers
//! alike: one definition each, so a script written against one reads the
//! other.

use hive::pb::{control as ctl, tracker as trk};
use serde_json::{Value, json};

/// A digest's 64 hex digits, from its wire bytes; empty when the bytes are
/// not a digest (a field left unset).
pub fn digest_hex(bytes: &[u8]) -> String {
    hive::Digest::from_bytes(bytes)
        .map(|d| d.to_hex())
        .unwrap_or_default()
}

/// A shared file's state, as both print it (`seeding`).
pub fn file_state_name(state: i32) -> &'static str {
    match ctl::FileState::try_from(state) {
        Ok(ctl::FileState::Seeding) => "seeding",
        Ok(ctl::FileState::Partial) => "partial",
        Ok(ctl::FileState::Downloading) => "downloading",
        Ok(ctl::FileState::Gone) => "gone",
        Ok(ctl::FileState::Refused) => "refused",
        _ => "unknown",
    }
}

/// A file this peer shares or is fetching.
pub fn local_file(f: &ctl::LocalFile) -> Value {
    json!({
        "name": f.name, "size": f.size, "chunk_count": f.chunk_count,
        "chunks_held": f.chunks_held, "digest": digest_hex(&f.digest), "path": f.path,
        "state": file_state_name(f.state), "reason": f.reason,
    })
}

/// A file the tracker lists, without its holders.
pub fn tracker_file(f: &trk::FileSummary) -> Value {
    json!({
        "name": f.name, "size": f.size, "chunk_size": f.chunk_size,
        "chunk_count": f.chunk_count, "digest": digest_hex(&f.digest),
        "holder_count": f.holder_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_hex_and_anything_else_empty() {
        let digest = hive::Digest::of(b"x");
        assert_eq!(digest_hex(digest.as_bytes()), digest.to_hex());
        assert_eq!(digest_hex(&[]), "");
        assert_eq!(digest_hex(&[1, 2, 3]), "");
    }

    #[test]
    fn states_have_their_names_and_unknown_ones_say_so() {
        assert_eq!(file_state_name(ctl::FileState::Seeding as i32), "seeding");
        assert_eq!(file_state_name(ctl::FileState::Refused as i32), "refused");
        assert_eq!(file_state_name(0), "unknown");
        assert_eq!(file_state_name(999), "unknown");
    }
}
