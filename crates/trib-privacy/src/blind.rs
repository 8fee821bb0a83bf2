//! Blind indexes: keyed hashes that stand for a personal identifier.
//!
//! A [`Subject`] is HMAC-SHA-256 of a domain-separated identifier under a secret 32-byte key,
//! so the same identifier always gives the same subject (records can be found and erased by
//! it) while the subject reveals nothing about the identifier to anyone without the key. The
//! caller provides and keeps the key; this module never stores it.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// The domain of event log keys (`userId`, else `anonymousId`).
const LOG_KEY_DOMAIN: &[u8] = b"tributary/blind-index/log-key/v1\0";

/// The blind index of one person's identifier: the unit of data keys and erasure.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject(pub [u8; 32]);

impl Subject {
    /// Returns the 64 lowercase hex digits of the subject.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        self.write_hex(&mut out);
        out
    }

    /// Appends the 64 lowercase hex digits of the subject to `out`.
    pub fn write_hex(&self, out: &mut String) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for byte in self.0 {
            out.push(char::from(DIGITS[usize::from(byte >> 4)]));
            out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
        }
    }

    /// Parses 64 hex digits (either case); `None` for anything else.
    pub fn from_hex(hex: &str) -> Option<Subject> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0_u8; 32];
        for (index, pair) in bytes.chunks_exact(2).enumerate() {
            out[index] = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
        }
        Some(Subject(out))
    }
}

/// Subjects are pseudonyms, safe to print in full.
impl fmt::Debug for Subject {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Subject({self})")
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.to_hex())
    }
}

/// Computes subjects from identifiers with a secret key.
#[derive(Clone)]
pub struct BlindIndex {
    /// The key is kept so that every call starts from a fresh keyed state.
    mac: HmacSha256,
    _key: Zeroizing<[u8; 32]>,
}

impl BlindIndex {
    /// Creates a blind index with a 32-byte secret key (random, and the same for the life of
    /// the data: another key gives other subjects).
    pub fn new(key: [u8; 32]) -> BlindIndex {
        let key = Zeroizing::new(key);
        // HMAC accepts keys of any length, so this cannot fail.
        let mac = <HmacSha256 as Mac>::new_from_slice(key.as_slice())
            .unwrap_or_else(|_| unreachable!("HMAC-SHA-256 takes a key of any length"));
        BlindIndex { mac, _key: key }
    }

    /// Returns the subject of an event log key (`userId`, else `anonymousId`).
    pub fn subject_of_log_key(&self, log_key: &str) -> Subject {
        self.subject_in_domain(LOG_KEY_DOMAIN, log_key.as_bytes())
    }

    /// Returns the subject of `value` in `domain`; the domain keeps equal bytes of different
    /// kinds (a log key and an email, say) apart. Domains must not be prefixes of each other;
    /// end them with a NUL byte.
    pub fn subject_in_domain(&self, domain: &[u8], value: &[u8]) -> Subject {
        let mut mac = self.mac.clone();
        mac.update(domain);
        mac.update(value);
        Subject(mac.finalize().into_bytes().into())
    }
}

/// Prints nothing about the key.
impl fmt::Debug for BlindIndex {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("BlindIndex(***)")
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_stable_keyed_and_domain_separated() {
        let blind = BlindIndex::new([7; 32]);
        let subject = blind.subject_of_log_key("user-42");
        assert_eq!(subject, blind.subject_of_log_key("user-42"));
        assert_ne!(subject, blind.subject_of_log_key("user-43"));
        assert_ne!(
            subject,
            BlindIndex::new([8; 32]).subject_of_log_key("user-42")
        );
        assert_ne!(subject, blind.subject_in_domain(b"email\0", b"user-42"));
    }

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let subject = BlindIndex::new([1; 32]).subject_of_log_key("a");
        let hex = subject.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(Subject::from_hex(&hex), Some(subject));
        assert_eq!(Subject::from_hex(&hex.to_uppercase()), Some(subject));
        assert_eq!(Subject::from_hex(&hex[..62]), None);
        assert_eq!(Subject::from_hex(&format!("{}zz", &hex[..62])), None);
    }

    #[test]
    fn debug_hides_the_key() {
        assert_eq!(format!("{:?}", BlindIndex::new([9; 32])), "BlindIndex(***)");
    }
}
