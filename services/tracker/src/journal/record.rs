//! One record of the log: `[payload length: u32 LE][the first 8 bytes of
//! the payload's BLAKE3][payload: changes, see `codec`]`.

use crate::{codec, registry::Change, store::StoreError};

const HEADER: usize = 12;

/// Encodes `changes` as one record into `buf`, replacing what it held.
pub(super) fn encode(changes: &[Change], buf: &mut Vec<u8>) -> Result<(), StoreError> {
    buf.clear();
    buf.extend_from_slice(&[0; HEADER]);
    codec::encode_changes(changes, buf);
    let Ok(len) = u32::try_from(buf.len() - HEADER) else {
        // A request is at most a few MiB: this cannot be reached. The
        // registry has changed, though, so fail-stop like any failure.
        return Err(StoreError("a journal record over 4 GiB".into()));
    };
    let check = blake3::hash(&buf[HEADER..]);
    buf[..4].copy_from_slice(&len.to_le_bytes());
    buf[4..HEADER].copy_from_slice(&check.as_bytes()[..8]);
    Ok(())
}

/// Decodes whole, intact records from the start of `bytes` into `changes`;
/// returns how many, and how many bytes they took.
pub(super) fn decode(mut bytes: &[u8], changes: &mut Vec<Change>) -> (usize, usize) {
    let (mut records, mut good) = (0, 0);
    while let Some((header, rest)) = bytes.split_first_chunk::<HEADER>() {
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let Some((payload, rest)) = rest.split_at_checked(len) else {
            break;
        };
        if blake3::hash(payload).as_bytes()[..8] != header[4..] {
            break;
        }
        let Some(decoded) = codec::decode_changes(payload) else {
            break;
        };
        changes.extend(decoded);
        records += 1;
        good += HEADER + len;
        bytes = rest;
    }
    (records, good)
}
