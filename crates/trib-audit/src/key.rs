//! The audit key: the HMAC key of the chain, in `<data_dir>/audit.key` (mode 0600).
//!
//! Without the key, an edited, inserted or reordered entry cannot be given a valid mac.
//! With it, everything can be rewritten: see the crate docs on anchoring the head elsewhere.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::AuditError;

/// The file under the data directory that holds the audit key.
pub const AUDIT_KEY_FILE: &str = "audit.key";

/// The secret key of the chain. Its `Debug` never prints the key.
#[derive(Clone)]
pub struct AuditKey {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("AuditKey(***)")
    }
}

impl AuditKey {
    /// A key from its 32 bytes.
    pub fn new(key: &[u8; 32]) -> Self {
        match Hmac::<Sha256>::new_from_slice(key) {
            Ok(mac) => Self { mac },
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        }
    }

    /// Loads `<data_dir>/audit.key`; fails when it is missing or malformed.
    pub fn load(data_dir: &Path) -> Result<Self, AuditError> {
        let path = data_dir.join(AUDIT_KEY_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => parse_hex(text.trim())
                .map(|key| Self::new(&key))
                .ok_or(AuditError::KeyFormat { path }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Err(AuditError::KeyMissing { path })
            }
            Err(source) => Err(AuditError::Io { path, source }),
        }
    }

    /// Loads `<data_dir>/audit.key`, creating it (mode 0600, written atomically) with a random
    /// key if absent.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, AuditError> {
        match Self::load(data_dir) {
            Err(AuditError::KeyMissing { path }) => {
                let io = |source| AuditError::Io {
                    path: path.clone(),
                    source,
                };
                fs::create_dir_all(data_dir).map_err(io)?;
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(AuditError::Random)?;
                let hex: String = key.iter().map(|byte| format!("{byte:02x}")).collect();
                let temporary = path.with_extension("key.tmp");
                let mut options = OpenOptions::new();
                options.write(true).create(true).truncate(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                let mut file = options.open(&temporary).map_err(io)?;
                file.write_all(format!("{hex}\n").as_bytes()).map_err(io)?;
                file.sync_all().map_err(io)?;
                fs::rename(&temporary, &path).map_err(io)?;
                crate::log::sync_directory(data_dir)?;
                Ok(Self::new(&key))
            }
            other => other,
        }
    }

    /// HMAC of the parts, in order.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

pub(crate) fn parse_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (index, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(key)
}

pub(crate) fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
