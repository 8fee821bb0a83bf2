//! Reading request bodies within the size limits, decompressing gzip on the way.
//!
//! Limits apply to decompressed bytes. Decompression stops one byte past the limit, so a small
//! gzip body that would inflate to gigabytes (a "gzip bomb") costs no more than a body of the
//! limit's size.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};

use crate::ApiError;

/// Reads the whole body, decompresses it when `Content-Encoding` says so, and enforces `limit` on
/// the bytes that come out.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let encoding = content_encoding(headers)?;
    // Gzip can make incompressible input slightly larger (a header and 5 bytes per 16 KiB block),
    // so a compressed body gets that much room on top of the limit.
    let raw_limit = match encoding {
        Encoding::Identity => limit,
        Encoding::Gzip => limit.saturating_add(limit / 1000 + 1024),
    };
    let raw = axum::body::to_bytes(body, raw_limit)
        .await
        .map_err(|error| {
            if is_length_limit(&error) {
                too_large(limit)
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "unreadable_body",
                    format!("failed to read the request body: {error}"),
                )
            }
        })?;
    match encoding {
        Encoding::Identity => Ok(raw),
        Encoding::Gzip => gunzip_bounded(&raw, limit),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
}

fn content_encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    let value = value.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match value.as_str() {
        "" | "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding `{other}` is not supported; send gzip or no encoding"),
        )),
    }
}

fn gunzip_bounded(compressed: &[u8], limit: usize) -> Result<Bytes, ApiError> {
    let mut decoder = flate2::read::MultiGzDecoder::new(compressed).take(limit as u64 + 1);
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit + 1));
    decoder.read_to_end(&mut out).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_gzip",
            format!("the body is not valid gzip: {error}"),
        )
    })?;
    if out.len() > limit {
        return Err(too_large(limit));
    }
    Ok(Bytes::from(out))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        format!("the request body exceeds {limit} bytes (after decompression)"),
    )
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if current.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = current.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn gunzip_returns_the_original_bytes() {
        let data = br#"{"batch":[]}"#;
        assert_eq!(&gunzip_bounded(&gzip(data), 100).unwrap()[..], data);
    }

    #[test]
    fn gunzip_stops_at_the_limit_for_a_bomb() {
        let bomb = gzip(&vec![b'a'; 50_000_000]);
        assert!(bomb.len() < 100_000, "a bomb is small: {}", bomb.len());
        let error = gunzip_bounded(&bomb, 500_000).unwrap_err();
        assert_eq!(error.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(error.code(), "request_too_large");
    }

    #[test]
    fn gunzip_rejects_garbage() {
        let error = gunzip_bounded(b"not gzip at all", 100).unwrap_err();
        assert_eq!(error.code(), "invalid_gzip");
    }
}
