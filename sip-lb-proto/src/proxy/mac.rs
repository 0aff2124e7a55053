//! The keyed MAC in our Via branch: it binds the branch to the next hop a
//! response will be relayed to (the client's Via as we forwarded it) and to
//! the Call-ID, so nobody without the key can make us relay a response
//! anywhere (a forged `SIP/2.0 200` naming a victim in its second Via).
//!
//! SipHash-2-4 with a 128-bit key: a PRF made for short inputs, ~50 ns for a
//! Via line. The key comes from the `[security]` secret (SHA-256 of it), so
//! every node sharing the secret accepts the others' branches; a previous
//! key stays accepted during rotation.

use sha2::{Digest, Sha256};
use siphasher::sip::SipHasher24;
use std::fmt;
use std::hash::Hasher;

/// One 128-bit SipHash key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key([u8; 16]);

impl Key {
    /// The key for a configured secret (any length; config asks for >= 16 bytes).
    pub fn from_secret(secret: &[u8]) -> Key {
        let digest = Sha256::new().chain_update(b"sip-lb branch key v1\0").chain_update(secret).finalize();
        let mut k = [0u8; 16];
        k.copy_from_slice(&digest[..16]);
        Key(k)
    }

    /// A key from 16 bytes (the control plane's random per-process key
    /// when no secret is configured: the core itself draws no randomness).
    pub fn from_bytes(bytes: [u8; 16]) -> Key {
        Key(bytes)
    }

    /// A short public name for the key (logs, config digest): not the key.
    pub fn id(&self) -> String {
        let d = Sha256::new().chain_update(b"sip-lb key id\0").chain_update(self.0).finalize();
        d[..4].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// MAC of one branch: our transaction hash, the next Via value as
    /// forwarded, the Call-ID. Lengths are mixed in so fields cannot slide.
    pub fn mac(&self, txn: u64, next_via: &[u8], call_id: &[u8]) -> u64 {
        let mut h = SipHasher24::new_with_key(&self.0);
        h.write_u64(txn);
        h.write_u32(next_via.len() as u32);
        h.write(next_via);
        h.write_u32(call_id.len() as u32);
        h.write(call_id);
        h.finish()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.id())
    }
}

/// The current key, which signs, and the previous one, still accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keys {
    pub current: Key,
    pub previous: Option<Key>,
}

impl Keys {
    pub fn new(current: Key, previous: Option<Key>) -> Keys {
        Keys { current, previous }
    }

    /// Whether `mac` was made by the current or the previous key.
    pub fn verify(&self, mac: u64, txn: u64, next_via: &[u8], call_id: &[u8]) -> bool {
        self.current.mac(txn, next_via, call_id) == mac
            || self.previous.is_some_and(|k| k.mac(txn, next_via, call_id) == mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_derives_a_stable_key_and_each_field_counts() {
        let k = Key::from_secret(b"0123456789abcdef");
        assert_eq!(k, Key::from_secret(b"0123456789abcdef"));
        assert_ne!(k, Key::from_secret(b"0123456789abcdeg"));
        let m = k.mac(7, b"SIP/2.0/UDP a;branch=z9hG4bKx", b"c@x");
        assert_ne!(m, k.mac(8, b"SIP/2.0/UDP a;branch=z9hG4bKx", b"c@x"));
        assert_ne!(m, k.mac(7, b"SIP/2.0/UDP a;branch=z9hG4bKy", b"c@x"));
        assert_ne!(m, k.mac(7, b"SIP/2.0/UDP a;branch=z9hG4bKx", b"c@y"));
        // Field boundaries are part of the input.
        assert_ne!(k.mac(7, b"ab", b"c"), k.mac(7, b"a", b"bc"));
        assert_ne!(m, Key::from_bytes([7; 16]).mac(7, b"SIP/2.0/UDP a;branch=z9hG4bKx", b"c@x"));
        assert_eq!(k.id().len(), 8);
    }

    #[test]
    fn previous_key_is_accepted_during_rotation() {
        let old = Key::from_secret(b"old secret, 16+ bytes");
        let new = Key::from_secret(b"new secret, 16+ bytes");
        let mac = old.mac(1, b"v", b"c");
        assert!(Keys::new(new, Some(old)).verify(mac, 1, b"v", b"c"));
        assert!(!Keys::new(new, None).verify(mac, 1, b"v", b"c"));
        assert!(Keys::new(old, None).verify(mac, 1, b"v", b"c"));
    }
}
