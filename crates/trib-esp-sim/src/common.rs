//! Helpers shared by the simulators: locking, hashing, timestamps, JSON responses and the
//! markers the handlers and the server exchange through request and response extensions.

use std::sync::{Mutex, MutexGuard, PoisonError};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use md5::{Digest, Md5};
use serde_json::Value;

/// The largest request body the simulators read (SendGrid's documented 6 MB plus room to
/// answer "too large" for bodies a little over it).
pub(crate) const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Locks a mutex, ignoring poisoning: the simulators' state stays usable after a panicking
/// handler (each critical section leaves the state consistent before it can panic).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// Mailchimp's subscriber hash: hex MD5 of the lower-cased email.
pub(crate) fn subscriber_hash(email: &str) -> String {
    hex(&Md5::digest(email.to_lowercase().as_bytes()))
}

/// A deliberately simple email check (one `@`, a non-empty local part, a dotted domain, no
/// spaces), close to what the ESPs refuse as "invalid email".
pub(crate) fn is_valid_email(email: &str) -> bool {
    if email.len() > 254 || email.chars().any(char::is_whitespace) {
        return false;
    }
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty())
}

/// Now as `2026-11-30T12:00:00+00:00` (Mailchimp's format).
pub(crate) fn now_offset() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string()
}

/// Now as `2026-11-30T12:00:00.123Z` (HubSpot's format).
pub(crate) fn now_millis() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Now as `2026-11-30T12:00:00Z` (SendGrid's format).
pub(crate) fn now_seconds() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, body: &Value) -> Response {
    json_with_type(status, body, "application/json; charset=utf-8")
}

/// A JSON response with a given content type (`application/problem+json` for Mailchimp).
pub(crate) fn json_with_type(status: StatusCode, body: &Value, content_type: &str) -> Response {
    let mut response = (status, Body::from(body.to_string())).into_response();
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// What the server decided for this request about the faults that only a handler can apply
/// (they need to know what the request does). Handlers read it with [`read_request`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FaultPlan {
    /// Fail a random subset of the otherwise-valid items (seeded by this value) without
    /// applying them.
    pub(crate) partial: Option<u64>,
    /// Answer as if applied, apply nothing.
    pub(crate) not_applied: bool,
}

/// Set on a response by a handler that applied a [`FaultPlan`] fault, so that the server
/// counts and records it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AppliedFault(pub(crate) &'static str);

/// Set on a response to make the server drop the connection instead of answering.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AbortConnection;

impl std::fmt::Display for AbortConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection aborted by fault injection")
    }
}

impl std::error::Error for AbortConnection {}

/// Marks `response` as carrying an applied fault.
pub(crate) fn with_fault(mut response: Response, fault: &'static str) -> Response {
    response.extensions_mut().insert(AppliedFault(fault));
    response
}

/// Splits a request into its fault plan, query string and body bytes.
pub(crate) async fn read_request(request: Request) -> (FaultPlan, Option<String>, Bytes) {
    let plan = request
        .extensions()
        .get::<FaultPlan>()
        .copied()
        .unwrap_or_default();
    let query = request.uri().query().map(str::to_owned);
    // The server already read the body once (bounded), so this cannot exceed the limit.
    let bytes = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
        .await
        .unwrap_or_default();
    (plan, query, bytes)
}

/// Picks the indexes of a random, non-empty subset of `0..len` from `seed` (each index with
/// probability one half), for partial failures.
pub(crate) fn random_subset(seed: u64, len: usize) -> Vec<bool> {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut chosen: Vec<bool> = (0..len).map(|_| rng.random_bool(0.5)).collect();
    if len > 0 && !chosen.iter().any(|picked| *picked) {
        let index = rng.random_range(0..len);
        chosen[index] = true;
    }
    chosen
}

/// Parses a query string into (name, value) pairs, percent-decoding both.
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let Some(query) = query else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

/// Percent-encodes a query component (RFC 3986 unreserved characters stay).
pub(crate) fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' if index + 2 < bytes.len() => {
                let decoded = std::str::from_utf8(&bytes[index + 1..index + 3])
                    .ok()
                    .and_then(|digits| u8::from_str_radix(digits, 16).ok());
                match decoded {
                    Some(byte) => {
                        out.push(byte);
                        index += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriber_hash_is_md5_of_the_lower_cased_email() {
        // md5("urist.mcvankab@freddiesjokes.com"), Mailchimp's documentation example.
        assert_eq!(
            subscriber_hash("Urist.McVankab@freddiesjokes.com"),
            "62eeb292278cc15f5817cb78f7790b08"
        );
    }

    #[test]
    fn email_check() {
        assert!(is_valid_email("ada@example.com"));
        assert!(!is_valid_email("ada@example"));
        assert!(!is_valid_email("ada example@example.com"));
        assert!(!is_valid_email("@example.com"));
        assert!(!is_valid_email("a@b@example.com"));
    }

    #[test]
    fn query_round_trip() {
        let pairs = query_pairs(Some("ids=a%2Cb,c&x=1+2"));
        assert_eq!(pairs[0], ("ids".to_owned(), "a,b,c".to_owned()));
        assert_eq!(pairs[1], ("x".to_owned(), "1 2".to_owned()));
        assert_eq!(percent_encode("a b,c"), "a%20b%2Cc");
    }

    #[test]
    fn subsets_are_non_empty_and_seeded() {
        assert_eq!(random_subset(7, 10), random_subset(7, 10));
        assert!(random_subset(1, 1)[0]);
    }
}
