//! Peer identity: tracker-issued peer ids and secret session tokens.
//!
//! A token is 128 bits from the OS CSPRNG, shown to its peer once (hex) and
//! kept by the tracker only as its BLAKE3 hash. Lookups go by that hash and
//! the final comparison is constant-time (`blake3::Hash`'s equality), so
//! neither the table nor timing gives a token away. Tokens are never logged:
//! [`Token`]'s `Debug` is redacted.

use std::fmt;

/// A peer's tracker-issued id: 64 random bits, shown as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("peer_id must be 16 hex digits")]
    BadPeerId,
    #[error("missing session token (x-peer-token metadata)")]
    MissingToken,
    #[error("malformed session token")]
    BadToken,
    #[error("the operating system's random source failed: {0}")]
    Random(String),
}

impl PeerId {
    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        if s.len() != 16 {
            return Err(IdentityError::BadPeerId);
        }
        u64::from_str_radix(s, 16)
            .map(Self)
            .map_err(|_| IdentityError::BadPeerId)
    }

    pub fn from_u64(raw: u64) -> Self {
        Self(raw)
    }

    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The 16 hex digits, without the formatting machinery: every holder in
    /// every Locate answer is written this way.
    pub fn to_hex(self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let digits = (0..16)
            .rev()
            .map(|i| char::from(DIGITS[(self.0 >> (i * 4)) as usize & 0xf]));
        digits.collect()
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

/// A session token, as the peer holds it. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

/// What the tracker keeps of a token.
pub type TokenHash = blake3::Hash;

impl Token {
    const HEX_LEN: usize = 32;

    /// Parses a token from request metadata.
    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        if s.len() == Self::HEX_LEN && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(s.to_ascii_lowercase()))
        } else {
            Err(IdentityError::BadToken)
        }
    }

    pub fn hash(&self) -> TokenHash {
        blake3::hash(self.0.as_bytes())
    }

    /// What the tracker keeps of a session's token, and compares: on a
    /// plaintext connection its hash; on a TLS connection its hash keyed
    /// with the member's certificate, so that the token is good only over a
    /// connection of the member that registered the session. Nothing else
    /// is stored, so the embedded and the shared catalog bind alike.
    pub fn hash_for(&self, member: Option<&Member>) -> TokenHash {
        match member {
            None => self.hash(),
            Some(m) => blake3::keyed_hash(&m.0, self.0.as_bytes()),
        }
    }

    /// The token's text, to hand to its peer once.
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// A swarm member, as its TLS connection shows it: the SHA-256 of the
/// certificate it presented.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Member([u8; 32]);

impl Member {
    /// The member presenting certificate `der`.
    pub fn of_cert(der: &[u8]) -> Self {
        Self(hive_runtime::tls::sha256(der))
    }

    /// A member as stored beside its session (its certificate's SHA-256).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// What is stored beside its session: the certificate's SHA-256.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Member {
    /// The certificate's SHA-256 fingerprint, 64 hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Member({self})")
    }
}

/// A fresh peer id and session token from the OS CSPRNG.
pub fn mint() -> Result<(PeerId, Token), IdentityError> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| IdentityError::Random(e.to_string()))?;
    let (id, secret) = bytes.split_at(8);
    let id = u64::from_le_bytes(id.try_into().unwrap_or_default());
    let token = secret.iter().map(|b| format!("{b:02x}")).collect();
    Ok((PeerId(id), Token(token)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids_match_their_display() {
        for raw in [0, 1, 0xabc, u64::MAX, 0x0123_4567_89ab_cdef] {
            let id = PeerId::from_u64(raw);
            assert_eq!(id.to_hex(), id.to_string());
            assert_eq!(PeerId::parse(&id.to_hex()), Ok(id));
        }
    }

    #[test]
    fn minted_tokens_are_unique_and_parse_back() {
        let (id1, t1) = mint().unwrap();
        let (id2, t2) = mint().unwrap();
        assert_ne!(id1, id2);
        assert_ne!(t1, t2);
        assert_eq!(Token::parse(t1.reveal()), Ok(t1.clone()));
        assert_eq!(PeerId::parse(&id1.to_string()), Ok(id1));
        assert_eq!(format!("{t1:?}"), "Token(<redacted>)");
        assert_ne!(t1.hash(), t2.hash());
    }

    #[test]
    fn a_token_bound_to_one_member_is_another_hash_for_any_other() {
        let (_, token) = mint().unwrap();
        let a = Member::of_cert(b"member a");
        let b = Member::of_cert(b"member b");
        assert_eq!(token.hash_for(None), token.hash());
        assert_eq!(token.hash_for(Some(&a)), token.hash_for(Some(&a)));
        assert_ne!(token.hash_for(Some(&a)), token.hash_for(Some(&b)));
        assert_ne!(token.hash_for(Some(&a)), token.hash());
        assert_eq!(a.to_string(), hive_runtime::tls::fingerprint(b"member a"));
    }

    #[test]
    fn malformed_credentials_are_refused() {
        for bad in ["", "abc", &"g".repeat(32), &"a".repeat(31), &"a".repeat(33)] {
            assert_eq!(Token::parse(bad), Err(IdentityError::BadToken), "{bad}");
        }
        for bad in ["", "123", "zzzzzzzzzzzzzzzz", "00000000000000000"] {
            assert_eq!(PeerId::parse(bad), Err(IdentityError::BadPeerId), "{bad}");
        }
    }
}
