//! Signatures on documents Tributary hands out about a person (erasure receipts, subject
//! access exports), so that their integrity can be checked later by anyone holding the
//! deployment's public key.
//!
//! Ed25519 over the exact bytes of the signed document. The key lives in
//! `<data_dir>/signing.key` (created once, mode 0600); its public half is in every signature.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The file under the data directory that holds the signing key.
pub const SIGNING_KEY_FILE: &str = "signing.key";

/// A detached signature, as embedded next to a signed document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentSignature {
    /// Always `Ed25519`.
    pub alg: String,
    /// The public key, base64.
    pub public_key: String,
    /// The signature over the document's exact bytes, base64.
    pub value: String,
}

/// Signs documents with the deployment's key.
#[derive(Clone)]
pub struct DocumentSigner {
    key: SigningKey,
}

impl std::fmt::Debug for DocumentSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentSigner")
            .field(
                "public_key",
                &STANDARD.encode(self.key.verifying_key().as_bytes()),
            )
            .finish_non_exhaustive()
    }
}

impl DocumentSigner {
    /// Loads `<data_dir>/signing.key`, creating it if absent.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, trib_identity::keys::KeyError> {
        let secret = trib_identity::keys::load_or_create_secret(&data_dir.join(SIGNING_KEY_FILE))?;
        Ok(Self::from_secret(&secret))
    }

    pub fn from_secret(secret: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(secret),
        }
    }

    pub fn sign(&self, document: &[u8]) -> DocumentSignature {
        DocumentSignature {
            alg: "Ed25519".to_owned(),
            public_key: STANDARD.encode(self.key.verifying_key().as_bytes()),
            value: STANDARD.encode(self.key.sign(document).to_bytes()),
        }
    }
}

/// Why a signature does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("unsupported signature algorithm {0:?} (expected Ed25519)")]
    Algorithm(String),
    #[error("the {0} is not valid base64 of the right length")]
    Encoding(&'static str),
    #[error("the signature does not match the document (altered, or signed by another key)")]
    Mismatch,
}

/// Checks `signature` over `document`; `expected_key` pins the public key when given.
pub fn verify(
    document: &[u8],
    signature: &DocumentSignature,
    expected_key: Option<&str>,
) -> Result<(), SignatureError> {
    if signature.alg != "Ed25519" {
        return Err(SignatureError::Algorithm(signature.alg.clone()));
    }
    if expected_key.is_some_and(|key| key != signature.public_key) {
        return Err(SignatureError::Mismatch);
    }
    let key: [u8; 32] = STANDARD
        .decode(&signature.public_key)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(SignatureError::Encoding("public key"))?;
    let value: [u8; 64] = STANDARD
        .decode(&signature.value)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(SignatureError::Encoding("signature"))?;
    let key = VerifyingKey::from_bytes(&key).map_err(|_| SignatureError::Encoding("public key"))?;
    key.verify(document, &Signature::from_bytes(&value))
        .map_err(|_| SignatureError::Mismatch)
}

/// A signed document as served: the document's exact bytes and the signature over them.
#[derive(Debug, Serialize, Deserialize)]
pub struct Signed<'a> {
    #[serde(borrow)]
    pub document: &'a serde_json::value::RawValue,
    pub signature: DocumentSignature,
}

/// Checks a signed document (as served by the API) and returns the document's bytes.
pub fn verify_signed(text: &str, expected_key: Option<&str>) -> Result<String, String> {
    let signed: Signed<'_> =
        serde_json::from_str(text).map_err(|e| format!("not a signed document: {e}"))?;
    verify(
        signed.document.get().as_bytes(),
        &signed.signature,
        expected_key,
    )
    .map_err(|e| e.to_string())?;
    Ok(signed.document.get().to_owned())
}

/// Wraps a document in `{"document": ..., "signature": ...}`, signing its exact bytes.
pub fn sign_document(signer: &DocumentSigner, document: &serde_json::Value) -> String {
    let bytes = document.to_string();
    let signature = signer.sign(bytes.as_bytes());
    let signature = serde_json::to_string(&signature).unwrap_or_default();
    format!("{{\"document\":{bytes},\"signature\":{signature}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_document_verifies_and_any_change_is_caught() {
        let signer = DocumentSigner::from_secret(&[9; 32]);
        let text = sign_document(
            &signer,
            &serde_json::json!({"receipt": "er_1", "events": 3}),
        );
        let document = verify_signed(&text, None).unwrap();
        assert_eq!(document, r#"{"events":3,"receipt":"er_1"}"#);
        let altered = text.replace("\"events\":3", "\"events\":4");
        assert!(
            verify_signed(&altered, None)
                .unwrap_err()
                .contains("does not match")
        );
        let other = DocumentSigner::from_secret(&[8; 32]).sign(b"x").public_key;
        assert!(
            verify_signed(&text, Some(&other)).is_err(),
            "a pinned key must match"
        );
        assert!(verify_signed("{}", None).is_err());
    }
}
