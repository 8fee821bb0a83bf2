//! Signature and timestamp checks, and the in-memory replay guard.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Mutex, PoisonError};

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName};
use jiff::{SignedDuration, Timestamp};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

use super::config::{Algorithm, SignatureEncoding};
use super::error::WebhookError;

/// The most delivery keys the replay guard remembers; past it, the oldest are forgotten first
/// (the event log's deduplication still catches their replays, see the module docs).
pub const MAX_REMEMBERED_DELIVERIES: usize = 100_000;

/// Standard base64 that accepts the value with or without its `=` padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Checks the signature (and the timestamp, when configured) of a request.
#[derive(Debug)]
pub(crate) struct Verifier {
    pub(crate) key: Key,
    pub(crate) signature_header: HeaderName,
    pub(crate) encoding: SignatureEncoding,
    pub(crate) prefix: Option<String>,
    pub(crate) timestamp: Option<TimestampCheck>,
    pub(crate) payload: Vec<PayloadPart>,
}

/// The timestamp header and how far from the server's clock it may be.
#[derive(Debug)]
pub(crate) struct TimestampCheck {
    pub(crate) header: HeaderName,
    pub(crate) tolerance: SignedDuration,
}

/// One piece of the signed content, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PayloadPart {
    Literal(String),
    Body,
    Timestamp,
    /// The delivery id, read from this header.
    DeliveryId(HeaderName),
}

/// The HMAC, keyed once at build time and cloned for each request.
#[derive(Clone)]
pub(crate) enum Key {
    Sha1(Hmac<Sha1>),
    Sha256(Hmac<Sha256>),
    Sha512(Hmac<Sha512>),
}

/// What a verified signature yields for the rest of the checks.
#[derive(Debug)]
pub(crate) struct Signed {
    /// The decoded signature, the replay key of a delivery without a delivery id.
    pub(crate) signature: Vec<u8>,
}

impl Key {
    /// Keys the HMAC with the secret's UTF-8 bytes.
    pub(crate) fn new(algorithm: Algorithm, secret: &[u8]) -> Option<Self> {
        Some(match algorithm {
            Algorithm::Sha1 => Key::Sha1(Hmac::new_from_slice(secret).ok()?),
            Algorithm::Sha256 => Key::Sha256(Hmac::new_from_slice(secret).ok()?),
            Algorithm::Sha512 => Key::Sha512(Hmac::new_from_slice(secret).ok()?),
        })
    }

    fn output_len(&self) -> usize {
        match self {
            Key::Sha1(_) => 20,
            Key::Sha256(_) => 32,
            Key::Sha512(_) => 64,
        }
    }

    /// Compares in constant time (`Mac::verify_slice`).
    fn verify(&self, chunks: &[&[u8]], signature: &[u8]) -> bool {
        fn check<M: Mac + Clone>(key: &M, chunks: &[&[u8]], signature: &[u8]) -> bool {
            let mut mac = key.clone();
            for chunk in chunks {
                mac.update(chunk);
            }
            mac.verify_slice(signature).is_ok()
        }
        match self {
            Key::Sha1(key) => check(key, chunks, signature),
            Key::Sha256(key) => check(key, chunks, signature),
            Key::Sha512(key) => check(key, chunks, signature),
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algorithm = match self {
            Key::Sha1(_) => "hmac-sha1",
            Key::Sha256(_) => "hmac-sha256",
            Key::Sha512(_) => "hmac-sha512",
        };
        write!(f, "Key({algorithm}, ***)")
    }
}

impl Verifier {
    /// Checks the signature, then the timestamp's freshness.
    ///
    /// `delivery_id` is the header delivery id, needed when the signed content includes it.
    pub(crate) fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        delivery_id: Option<&str>,
        now: Timestamp,
    ) -> Result<Signed, WebhookError> {
        let signature = self.signature(headers)?;
        let timestamp = match &self.timestamp {
            None => None,
            Some(check) => Some(read_timestamp(headers, &check.header)?),
        };

        let mut chunks: Vec<&[u8]> = Vec::with_capacity(self.payload.len());
        for part in &self.payload {
            let chunk = match part {
                PayloadPart::Literal(text) => text.as_bytes(),
                PayloadPart::Body => body,
                PayloadPart::Timestamp => match &timestamp {
                    Some((raw, _)) => raw.as_bytes(),
                    // Validation only allows `{timestamp}` with a timestamp header.
                    None => return Err(WebhookError::BadSignature),
                },
                PayloadPart::DeliveryId(header) => match delivery_id {
                    Some(id) => id.as_bytes(),
                    None => {
                        return Err(WebhookError::MissingDeliveryId {
                            location: header.as_str().to_owned(),
                        });
                    }
                },
            };
            chunks.push(chunk);
        }
        if !self.key.verify(&chunks, &signature) {
            return Err(WebhookError::BadSignature);
        }

        if let (Some(check), Some((_, signed_at))) = (&self.timestamp, timestamp) {
            let skew = now.duration_since(signed_at);
            if skew.abs() > check.tolerance {
                return Err(WebhookError::Stale {
                    skew,
                    tolerance: check.tolerance,
                });
            }
        }
        Ok(Signed { signature })
    }

    /// Reads and decodes the signature header.
    fn signature(&self, headers: &HeaderMap) -> Result<Vec<u8>, WebhookError> {
        let header = || self.signature_header.as_str().to_owned();
        let malformed = |reason: &str| WebhookError::MalformedSignature {
            header: header(),
            reason: reason.to_owned(),
        };
        let value = headers
            .get(&self.signature_header)
            .ok_or_else(|| WebhookError::MissingSignature { header: header() })?;
        let text = value
            .to_str()
            .map_err(|_| malformed("it contains characters other than visible ASCII"))?
            .trim();
        if text.is_empty() {
            return Err(WebhookError::MissingSignature { header: header() });
        }
        let encoded = match &self.prefix {
            None => text,
            Some(prefix) => text
                .strip_prefix(prefix.as_str())
                .ok_or_else(|| malformed(&format!("it does not start with {prefix:?}")))?,
        };
        let decoded = match self.encoding {
            SignatureEncoding::Hex => {
                decode_hex(encoded).ok_or_else(|| malformed("it is not hex"))?
            }
            SignatureEncoding::Base64 => BASE64
                .decode(encoded)
                .map_err(|_| malformed("it is not base64"))?,
        };
        let expected = self.key.output_len();
        if decoded.len() != expected {
            return Err(malformed(&format!(
                "it decodes to {} bytes, the HMAC has {expected}",
                decoded.len()
            )));
        }
        Ok(decoded)
    }
}

/// Reads the timestamp header: Unix seconds, or an RFC 3339 date. Returns it as sent (for the
/// signed content) and parsed.
fn read_timestamp(
    headers: &HeaderMap,
    header: &HeaderName,
) -> Result<(String, Timestamp), WebhookError> {
    let value = headers
        .get(header)
        .ok_or_else(|| WebhookError::MissingTimestamp {
            header: header.as_str().to_owned(),
        })?;
    let malformed = || WebhookError::MalformedTimestamp {
        header: header.as_str().to_owned(),
    };
    let raw = value.to_str().map_err(|_| malformed())?;
    let text = raw.trim();
    if text.is_empty() {
        return Err(WebhookError::MissingTimestamp {
            header: header.as_str().to_owned(),
        });
    }
    let parsed = if text.bytes().all(|byte| byte.is_ascii_digit()) {
        text.parse::<i64>()
            .ok()
            .and_then(|seconds| Timestamp::from_second(seconds).ok())
    } else {
        text.parse::<Timestamp>().ok()
    };
    parsed
        .map(|parsed| (raw.to_owned(), parsed))
        .ok_or_else(malformed)
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    fn nibble(byte: u8) -> Option<u8> {
        match byte {
            b'0'..=b'9' => Some(byte - b'0'),
            b'a'..=b'f' => Some(byte - b'a' + 10),
            b'A'..=b'F' => Some(byte - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

/// A compact, fixed-size key for a delivery: the first 128 bits of a SHA-256.
pub(crate) type ReplayKey = [u8; 16];

/// Returns the replay key of a delivery id, or of a signature when there is no delivery id.
/// The two are kept apart by a tag byte, so an id can never collide with a signature.
pub(crate) fn replay_key(delivery_id: Option<&str>, signature: &[u8]) -> ReplayKey {
    let mut hasher = Sha256::new();
    match delivery_id {
        Some(id) => {
            hasher.update(b"d");
            hasher.update(id.as_bytes());
        }
        None => {
            hasher.update(b"s");
            hasher.update(signature);
        }
    }
    let digest = hasher.finalize();
    let mut key = [0; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// Remembers accepted deliveries for a window, bounded in number; thread-safe.
#[derive(Debug)]
pub(crate) struct ReplayGuard {
    window: SignedDuration,
    capacity: usize,
    state: Mutex<ReplayState>,
}

#[derive(Debug, Default)]
struct ReplayState {
    /// Each remembered key and when it is forgotten.
    expiries: HashMap<ReplayKey, Timestamp>,
    /// Keys in the order they were remembered, with the expiry they had then. A key remembered
    /// twice has two entries; the older one is skipped when it reaches the front.
    order: VecDeque<(ReplayKey, Timestamp)>,
}

impl ReplayGuard {
    pub(crate) fn new(window: SignedDuration, capacity: usize) -> Self {
        Self {
            window,
            capacity: capacity.max(1),
            state: Mutex::new(ReplayState::default()),
        }
    }

    /// Returns whether `key` was remembered and has not expired at `now`.
    pub(crate) fn contains(&self, key: &ReplayKey, now: Timestamp) -> bool {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.expiries.get(key).is_some_and(|expiry| *expiry > now)
    }

    /// Remembers `key` until `now` plus the window.
    pub(crate) fn remember(&self, key: ReplayKey, now: Timestamp) {
        let expiry = now.saturating_add(self.window).unwrap_or(Timestamp::MAX);
        // The state is a cache of plain data: a panic elsewhere cannot leave it inconsistent
        // in a way that matters, so a poisoned lock is used as is.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(&(front, front_expiry)) = state.order.front() {
            let expired = front_expiry <= now;
            if !expired && state.order.len() < self.capacity {
                break;
            }
            state.order.pop_front();
            if state.expiries.get(&front) == Some(&front_expiry) {
                state.expiries.remove(&front);
            }
        }
        state.expiries.insert(key, expiry);
        state.order.push_back((key, expiry));
    }

    /// Returns how many keys are remembered (expired ones included until they are purged).
    #[cfg(test)]
    fn len(&self) -> usize {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.expiries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn hex_decoding_accepts_both_cases_and_nothing_else() {
        assert_eq!(decode_hex("00ff7Fa0"), Some(vec![0x00, 0xff, 0x7f, 0xa0]));
        assert_eq!(decode_hex(""), Some(vec![]));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
        assert_eq!(decode_hex("+1"), None);
    }

    #[test]
    fn replay_keys_separate_ids_from_signatures() {
        assert_eq!(replay_key(Some("a"), b"x"), replay_key(Some("a"), b"y"));
        assert_ne!(replay_key(Some("a"), b""), replay_key(None, b"a"));
        assert_ne!(replay_key(None, b"a"), replay_key(None, b"b"));
    }

    #[test]
    fn the_guard_forgets_after_the_window() {
        let guard = ReplayGuard::new(SignedDuration::from_mins(10), 100);
        let key = replay_key(Some("delivery-1"), b"");
        let accepted = ts("2024-05-01T12:00:00Z");
        assert!(!guard.contains(&key, accepted));
        guard.remember(key, accepted);
        assert!(guard.contains(&key, ts("2024-05-01T12:09:59Z")));
        assert!(!guard.contains(&key, ts("2024-05-01T12:10:00Z")));
        // Expired entries are purged when something new is remembered.
        guard.remember(
            replay_key(Some("delivery-2"), b""),
            ts("2024-05-01T12:10:00Z"),
        );
        assert_eq!(guard.len(), 1);
    }

    #[test]
    fn the_guard_is_bounded_and_forgets_the_oldest_first() {
        let guard = ReplayGuard::new(SignedDuration::from_hours(24), 3);
        let now = ts("2024-05-01T12:00:00Z");
        let keys: Vec<ReplayKey> = (0..5)
            .map(|n| replay_key(Some(&format!("d{n}")), b""))
            .collect();
        for key in &keys {
            guard.remember(*key, now);
        }
        assert_eq!(guard.len(), 3);
        assert!(!guard.contains(&keys[0], now));
        assert!(!guard.contains(&keys[1], now));
        assert!(keys[2..].iter().all(|key| guard.contains(key, now)));
    }

    #[test]
    fn remembering_a_key_again_extends_it() {
        let guard = ReplayGuard::new(SignedDuration::from_mins(10), 2);
        let key = replay_key(Some("d"), b"");
        guard.remember(key, ts("2024-05-01T12:00:00Z"));
        guard.remember(key, ts("2024-05-01T12:05:00Z"));
        // The first entry's expiry passed, the second keeps the key.
        guard.remember(replay_key(Some("other"), b""), ts("2024-05-01T12:11:00Z"));
        assert!(guard.contains(&key, ts("2024-05-01T12:14:00Z")));
    }
}
