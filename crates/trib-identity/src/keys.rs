//! The identity key: derives profile ids and identifier index keys with HMAC-SHA-256, so that
//! neither can be computed from an email address without the deployment's secret.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use trib_store::{IdentKey, ProfileId};

/// The file under the data directory that holds the identity key.
pub const IDENTITY_KEY_FILE: &str = "identity.key";

/// A secret key for profile ids and identifier index keys.
#[derive(Clone)]
pub struct Keyer {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Keyer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyer(..)")
    }
}

/// Why the identity key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or create the key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the key file {path} is not 64 hexadecimal characters")]
    Format { path: String },
    #[error("cannot generate a key: {0}")]
    Random(getrandom::Error),
}

impl Keyer {
    pub fn new(key: &[u8; 32]) -> Self {
        match Hmac::<Sha256>::new_from_slice(key) {
            Ok(mac) => Self { mac },
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        }
    }

    /// Loads `<data_dir>/identity.key`, creating it (mode 0600) with a random key if absent.
    ///
    /// Every process that shares a profile store must use the same key: copy the file.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, KeyError> {
        Ok(Self::new(&load_or_create_secret(
            &data_dir.join(IDENTITY_KEY_FILE),
        )?))
    }

    fn digest(&self, domain: &[u8], kind: &str, value: &str) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(domain);
        mac.update(&[0]);
        mac.update(kind.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The id of a profile named by this identifier.
    pub fn profile_id(&self, kind: &str, value: &str) -> ProfileId {
        let digest = self.digest(b"profile", kind, value);
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        ProfileId::from_bytes(bytes)
    }

    /// The index key of an identifier (a blind index: 128 bits of HMAC).
    pub fn ident_key(&self, kind: &str, value: &str) -> IdentKey {
        let digest = self.digest(b"ident", kind, value);
        IdentKey(Bytes::copy_from_slice(&digest[..16]))
    }
}

/// Loads a 256-bit secret kept as 64 hexadecimal characters in `path`, creating the file
/// (mode 0600, written to a temporary file, fsynced, then renamed) with a random secret if it
/// does not exist. Used for every key file under the data directory.
pub fn load_or_create_secret(path: &Path) -> Result<[u8; 32], KeyError> {
    let io = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    match fs::read_to_string(path) {
        Ok(text) => parse_hex(text.trim()).ok_or_else(|| KeyError::Format {
            path: path.display().to_string(),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(io)?;
            }
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(KeyError::Random)?;
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            let temporary = path.with_extension("tmp");
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
            fs::rename(&temporary, path).map_err(io)?;
            Ok(key)
        }
        Err(error) => Err(io(error)),
    }
}

fn parse_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (index, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(index * 2..index * 2 + 2)?, 16).ok()?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_the_key_type_and_value() {
        let a = Keyer::new(&[1; 32]);
        let b = Keyer::new(&[2; 32]);
        assert_eq!(
            a.profile_id("email", "x@example.com"),
            a.profile_id("email", "x@example.com")
        );
        assert_ne!(
            a.profile_id("email", "x@example.com"),
            b.profile_id("email", "x@example.com")
        );
        assert_ne!(
            a.profile_id("email", "x@example.com"),
            a.profile_id("user_id", "x@example.com")
        );
        assert_ne!(a.ident_key("email", "x"), a.ident_key("email", "y"));
        // Type and value are separated, so ("a", "bc") and ("ab", "c") differ.
        assert_ne!(a.ident_key("a", "bc"), a.ident_key("ab", "c"));
    }

    #[test]
    fn the_key_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = Keyer::load_or_create(dir.path()).unwrap();
        let second = Keyer::load_or_create(dir.path()).unwrap();
        assert_eq!(first.profile_id("t", "v"), second.profile_id("t", "v"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(IDENTITY_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::write(dir.path().join(IDENTITY_KEY_FILE), "not hex").unwrap();
        assert!(matches!(
            Keyer::load_or_create(dir.path()),
            Err(KeyError::Format { .. })
        ));
    }
}
