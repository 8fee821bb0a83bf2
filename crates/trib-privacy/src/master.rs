//! Master keys (key-encryption keys): numbered versions of 32-byte keys that wrap data keys.
//!
//! Keys come from the environment variable [`MASTER_KEYS_ENV`] (`"3:BASE64,2:BASE64"`) or from
//! a key file (default `<data_dir>/master.keys`, mode 0600, one `VERSION BASE64` line per key,
//! `#` comments allowed), which is created with a random version 1 when absent. The highest
//! version is active: it wraps new data keys; older versions only unwrap until
//! `KeyStore::rewrap` has moved every data key to the active one.
//!
//! [`rotate_file`] appends a new random version atomically (temporary file, rename, fsync of the
//! directory) under an advisory lock, so two rotations never lose a key. A [`MasterKeyring`]
//! loaded from a file notices such changes from another process: it compares the file's inode,
//! size and modification time at most every [`CHECK_INTERVAL`], and always when asked for a
//! version it does not have.
//!
//! Key bytes are zeroized on drop and never printed: `Debug` shows versions only.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::PrivacyError;
use crate::blind::Subject;

/// The environment variable that, when set, replaces the key file.
pub const MASTER_KEYS_ENV: &str = "TRIBUTARY_MASTER_KEYS";
/// The key file's name in the data directory.
pub const MASTER_KEYS_FILE: &str = "master.keys";
/// How often a keyring looks at its file for a rotation done by another process.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(500);

pub(crate) const KEY_BYTES: usize = 32;
pub(crate) const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;
/// A wrapped data key: nonce, encrypted key, tag.
pub(crate) const WRAPPED_BYTES: usize = NONCE_BYTES + KEY_BYTES + TAG_BYTES;
const WRAP_DOMAIN: &[u8] = b"tributary/data-key/v1\0";

/// The master keys of one process, refreshed from their file when it changes.
pub struct MasterKeyring {
    origin: Origin,
    loaded: RwLock<Arc<Loaded>>,
    last_check: Mutex<Instant>,
}

enum Origin {
    Environment,
    File(PathBuf),
}

struct Loaded {
    keks: BTreeMap<u32, Arc<Kek>>,
    active: Arc<Kek>,
    file_id: Option<FileId>,
}

/// What identifies one version of the key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    device: u64,
    inode: u64,
    size: u64,
    mtime_ns: i128,
}

/// One master key version, ready to wrap and unwrap data keys.
pub(crate) struct Kek {
    pub(crate) version: u32,
    cipher: XChaCha20Poly1305,
}

impl MasterKeyring {
    /// Loads the master keys from [`MASTER_KEYS_ENV`] when it is set, else from
    /// `<data_dir>/master.keys`, creating that file with a random version 1 if it is absent.
    pub fn load(data_dir: &Path) -> Result<MasterKeyring, PrivacyError> {
        match std::env::var(MASTER_KEYS_ENV) {
            Ok(value) => MasterKeyring::from_env_value(&value),
            Err(std::env::VarError::NotUnicode(_)) => Err(PrivacyError::MasterKeys {
                origin: MASTER_KEYS_ENV.to_owned(),
                reason: "the value is not valid UTF-8".to_owned(),
            }),
            Err(std::env::VarError::NotPresent) => {
                MasterKeyring::open_file(&data_dir.join(MASTER_KEYS_FILE))
            }
        }
    }

    /// Parses keys in the environment variable's format: `VERSION:BASE64` items separated by
    /// commas.
    pub fn from_env_value(value: &str) -> Result<MasterKeyring, PrivacyError> {
        let value = Zeroizing::new(value.to_owned());
        let mut keys = BTreeMap::new();
        for (index, item) in value.split(',').enumerate() {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let place = format!("{MASTER_KEYS_ENV} item {}", index + 1);
            let Some((version, key)) = item.split_once(':') else {
                return Err(PrivacyError::MasterKeys {
                    origin: place,
                    reason: "expected VERSION:BASE64".to_owned(),
                });
            };
            insert_key(&mut keys, &place, version.trim(), key.trim())?;
        }
        let loaded = Loaded::new(keys, None, MASTER_KEYS_ENV)?;
        Ok(MasterKeyring::new(Origin::Environment, loaded))
    }

    /// Loads the key file at `path`, creating it with a random version 1 if it is absent.
    pub fn open_file(path: &Path) -> Result<MasterKeyring, PrivacyError> {
        if !path.exists() {
            let _lock = lock_key_file(path)?;
            if !path.exists() {
                let mut text = Zeroizing::new(String::from(
                    "# Tributary master keys: VERSION BASE64 per line; the highest version is active.\n\
                     # Keep this file secret and backed up: without it, stored personal data cannot be read.\n",
                ));
                append_new_key(&mut text, 1)?;
                write_atomically(path, text.as_bytes())?;
                tracing::info!(path = %path.display(), "created the master key file with version 1");
            }
        }
        let loaded = read_file(path)?;
        Ok(MasterKeyring::new(Origin::File(path.to_owned()), loaded))
    }

    /// Returns the active (highest) version.
    pub fn active_version(&self) -> u32 {
        self.maybe_refresh();
        self.current().active.version
    }

    /// Returns every version, lowest first.
    pub fn versions(&self) -> Vec<u32> {
        self.current().keks.keys().copied().collect()
    }

    /// Returns the key file, or `None` when the keys come from the environment.
    pub fn file_path(&self) -> Option<&Path> {
        match &self.origin {
            Origin::File(path) => Some(path),
            Origin::Environment => None,
        }
    }

    /// Re-reads the key file now if it changed; returns whether it did.
    pub fn refresh(&self) -> Result<bool, PrivacyError> {
        let Origin::File(path) = &self.origin else {
            return Ok(false);
        };
        *self
            .last_check
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        let id = file_id(path)?;
        if Some(id) == self.current().file_id {
            return Ok(false);
        }
        let loaded = read_file(path)?;
        let active = loaded.active.version;
        *self.loaded.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
        tracing::info!(active_version = active, "reloaded the master key file");
        Ok(true)
    }

    /// Returns the active key, after a refresh if the last check is older than the interval.
    pub(crate) fn active(&self) -> Arc<Kek> {
        self.maybe_refresh();
        Arc::clone(&self.current().active)
    }

    /// Returns the key of `version`, re-reading the file first when the version is unknown.
    pub(crate) fn get(&self, version: u32) -> Result<Arc<Kek>, PrivacyError> {
        if let Some(kek) = self.current().keks.get(&version) {
            return Ok(Arc::clone(kek));
        }
        self.refresh()?;
        let loaded = self.current();
        loaded
            .keks
            .get(&version)
            .cloned()
            .ok_or_else(|| PrivacyError::UnknownMasterKey {
                version,
                known: loaded
                    .keks
                    .keys()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    fn new(origin: Origin, loaded: Loaded) -> MasterKeyring {
        MasterKeyring {
            origin,
            loaded: RwLock::new(Arc::new(loaded)),
            last_check: Mutex::new(Instant::now()),
        }
    }

    fn current(&self) -> Arc<Loaded> {
        Arc::clone(&self.loaded.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn maybe_refresh(&self) {
        if matches!(self.origin, Origin::Environment) {
            return;
        }
        {
            let mut last_check = self
                .last_check
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if last_check.elapsed() < CHECK_INTERVAL {
                return;
            }
            *last_check = Instant::now();
        }
        if let Err(error) = self.refresh() {
            // Keep using the keys already loaded: a half-edited file must not stop the server.
            tracing::warn!(%error, "could not re-read the master key file; keeping the loaded keys");
        }
    }
}

/// Prints the origin and versions, never key bytes.
impl fmt::Debug for MasterKeyring {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = match &self.origin {
            Origin::Environment => MASTER_KEYS_ENV.to_owned(),
            Origin::File(path) => path.display().to_string(),
        };
        formatter
            .debug_struct("MasterKeyring")
            .field("origin", &origin)
            .field("versions", &self.versions())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Kek(version {}, ***)", self.version)
    }
}

/// Appends a new random master key version to the key file at `path` (creating the file with
/// version 1 first if it is absent) and returns the new version.
///
/// The file is replaced atomically and the directory fsynced before this returns; an advisory
/// lock on `<path>.lock` serializes concurrent rotations.
pub fn rotate_file(path: &Path) -> Result<u32, PrivacyError> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .map_err(|error| PrivacyError::io(format!("creating {}", parent.display()), error))?;
    }
    if !path.exists() {
        MasterKeyring::open_file(path)?;
    }
    let _lock = lock_key_file(path)?;
    let loaded = read_file(path)?;
    let version = loaded
        .active
        .version
        .checked_add(1)
        .ok_or_else(|| PrivacyError::MasterKeys {
            origin: path.display().to_string(),
            reason: "the highest version is u32::MAX".to_owned(),
        })?;
    let mut text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|error| PrivacyError::io(format!("reading {}", path.display()), error))?,
    );
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    append_new_key(&mut text, version)?;
    write_atomically(path, text.as_bytes())?;
    tracing::info!(path = %path.display(), version, "added a master key version");
    Ok(version)
}

impl Kek {
    /// Wraps a data key; the result is nonce, ciphertext and tag, bound to subject and key id.
    pub(crate) fn wrap(
        &self,
        subject: &Subject,
        key_id: u64,
        data_key: &[u8; KEY_BYTES],
    ) -> Result<[u8; WRAPPED_BYTES], PrivacyError> {
        let mut nonce = [0_u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(PrivacyError::Random)?;
        self.wrap_with_nonce(subject, key_id, data_key, &nonce)
    }

    /// [`Kek::wrap`] with a nonce the caller drew from the OS's random source (key creation
    /// draws the randomness of a whole group of keys in one call); never reuse one.
    pub(crate) fn wrap_with_nonce(
        &self,
        subject: &Subject,
        key_id: u64,
        data_key: &[u8; KEY_BYTES],
        fresh_nonce: &[u8; NONCE_BYTES],
    ) -> Result<[u8; WRAPPED_BYTES], PrivacyError> {
        let mut out = [0_u8; WRAPPED_BYTES];
        out[..NONCE_BYTES].copy_from_slice(fresh_nonce);
        let (nonce, rest) = out.split_at_mut(NONCE_BYTES);
        let (body, tag_out) = rest.split_at_mut(KEY_BYTES);
        body.copy_from_slice(data_key);
        let nonce = XNonce::try_from(&*nonce)
            .unwrap_or_else(|_| unreachable!("the nonce slice has the nonce length"));
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce, &wrap_aad(subject, key_id), body.into())
            .map_err(|_| PrivacyError::Encrypt {
                subject: subject.to_hex(),
            })?;
        tag_out.copy_from_slice(&tag);
        Ok(out)
    }

    /// Unwraps a data key wrapped by [`Kek::wrap`] for the same subject and key id.
    pub(crate) fn unwrap(
        &self,
        subject: &Subject,
        key_id: u64,
        wrapped: &[u8],
    ) -> Result<Zeroizing<[u8; KEY_BYTES]>, PrivacyError> {
        let corrupt = || PrivacyError::CorruptDataKey {
            subject: subject.to_hex(),
            key_id,
            kek_version: self.version,
        };
        if wrapped.len() != WRAPPED_BYTES {
            return Err(corrupt());
        }
        let (nonce, rest) = wrapped.split_at(NONCE_BYTES);
        let (body, tag) = rest.split_at(KEY_BYTES);
        let mut key = Zeroizing::new([0_u8; KEY_BYTES]);
        key.copy_from_slice(body);
        let nonce = XNonce::try_from(nonce).map_err(|_| corrupt())?;
        let tag = chacha20poly1305::Tag::try_from(tag).map_err(|_| corrupt())?;
        self.cipher
            .decrypt_inout_detached(
                &nonce,
                &wrap_aad(subject, key_id),
                key.as_mut_slice().into(),
                &tag,
            )
            .map_err(|_| corrupt())?;
        Ok(key)
    }
}

impl Loaded {
    fn new(
        keys: BTreeMap<u32, Zeroizing<[u8; KEY_BYTES]>>,
        file_id: Option<FileId>,
        origin: &str,
    ) -> Result<Loaded, PrivacyError> {
        let keks: BTreeMap<u32, Arc<Kek>> = keys
            .into_iter()
            .map(|(version, key)| {
                let cipher = XChaCha20Poly1305::new(&(*key).into());
                (version, Arc::new(Kek { version, cipher }))
            })
            .collect();
        let active =
            keks.values()
                .next_back()
                .cloned()
                .ok_or_else(|| PrivacyError::MasterKeys {
                    origin: origin.to_owned(),
                    reason: "no key found".to_owned(),
                })?;
        Ok(Loaded {
            keks,
            active,
            file_id,
        })
    }
}

fn wrap_aad(subject: &Subject, key_id: u64) -> [u8; WRAP_DOMAIN.len() + 32 + 8] {
    let mut aad = [0_u8; WRAP_DOMAIN.len() + 32 + 8];
    aad[..WRAP_DOMAIN.len()].copy_from_slice(WRAP_DOMAIN);
    aad[WRAP_DOMAIN.len()..WRAP_DOMAIN.len() + 32].copy_from_slice(&subject.0);
    aad[WRAP_DOMAIN.len() + 32..].copy_from_slice(&key_id.to_le_bytes());
    aad
}

fn insert_key(
    keys: &mut BTreeMap<u32, Zeroizing<[u8; KEY_BYTES]>>,
    place: &str,
    version: &str,
    key: &str,
) -> Result<(), PrivacyError> {
    let problem = |reason: &str| PrivacyError::MasterKeys {
        origin: place.to_owned(),
        reason: reason.to_owned(),
    };
    let version: u32 = version
        .parse()
        .ok()
        .filter(|version| *version > 0)
        .ok_or_else(|| problem("the version must be a whole number from 1"))?;
    let decoded = Zeroizing::new(
        BASE64
            .decode(key)
            .map_err(|_| problem("the key is not valid base64"))?,
    );
    if decoded.len() != KEY_BYTES {
        return Err(problem("the key must decode to 32 bytes"));
    }
    let mut bytes = Zeroizing::new([0_u8; KEY_BYTES]);
    bytes.copy_from_slice(&decoded);
    if keys.insert(version, bytes).is_some() {
        return Err(problem(&format!("version {version} appears twice")));
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<Loaded, PrivacyError> {
    let id = file_id(path)?;
    let metadata = std::fs::metadata(path)
        .map_err(|error| PrivacyError::io(format!("reading {}", path.display()), error))?;
    if metadata.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "the master key file is readable by other users; chmod 600 it");
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|error| PrivacyError::io(format!("reading {}", path.display()), error))?,
    );
    let mut keys = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let place = format!("{} line {}", path.display(), number + 1);
        let mut parts = line.split_whitespace();
        let (Some(version), Some(key), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(PrivacyError::MasterKeys {
                origin: place,
                reason: "expected `VERSION BASE64`".to_owned(),
            });
        };
        insert_key(&mut keys, &place, version, key)?;
    }
    Loaded::new(keys, Some(id), &path.display().to_string())
}

fn file_id(path: &Path) -> Result<FileId, PrivacyError> {
    let metadata = std::fs::metadata(path)
        .map_err(|error| PrivacyError::io(format!("reading {}", path.display()), error))?;
    Ok(FileId {
        device: metadata.dev(),
        inode: metadata.ino(),
        size: metadata.size(),
        mtime_ns: i128::from(metadata.mtime()) * 1_000_000_000 + i128::from(metadata.mtime_nsec()),
    })
}

fn append_new_key(text: &mut Zeroizing<String>, version: u32) -> Result<(), PrivacyError> {
    let mut key = Zeroizing::new([0_u8; KEY_BYTES]);
    getrandom::fill(key.as_mut_slice()).map_err(PrivacyError::Random)?;
    let encoded = Zeroizing::new(BASE64.encode(key.as_slice()));
    text.push_str(&format!("{version} {}\n", encoded.as_str()));
    Ok(())
}

/// Holds `<path>.lock` exclusively until dropped.
fn lock_key_file(path: &Path) -> Result<File, PrivacyError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|error| PrivacyError::io(format!("opening {}", lock_path.display()), error))?;
    file.lock()
        .map_err(|error| PrivacyError::io(format!("locking {}", lock_path.display()), error))?;
    Ok(file)
}

/// Writes `bytes` to a temporary file (mode 0600) beside `path`, fsyncs it, renames it over
/// `path` and fsyncs the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PrivacyError> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".tmp-{}", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let context = |what: &str| format!("{what} {}", temporary.display());
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(|error| PrivacyError::io(context("creating"), error))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|error| PrivacyError::io(context("writing"), error))?;
    std::fs::rename(&temporary, path)
        .map_err(|error| PrivacyError::io(format!("renaming onto {}", path.display()), error))?;
    File::open(&directory)
        .and_then(|directory| directory.sync_all())
        .map_err(|error| PrivacyError::io(format!("fsyncing {}", directory.display()), error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_has_version_one_with_mode_0600_and_rotation_adds_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MASTER_KEYS_FILE);
        let keyring = MasterKeyring::open_file(&path).unwrap();
        assert_eq!(keyring.versions(), vec![1]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        assert_eq!(rotate_file(&path).unwrap(), 2);
        assert_eq!(rotate_file(&path).unwrap(), 3);
        // The keyring sees the new versions when asked for one it lacks.
        assert_eq!(keyring.get(3).unwrap().version, 3);
        assert_eq!(keyring.versions(), vec![1, 2, 3]);
        assert_eq!(keyring.active_version(), 3);
        assert!(matches!(
            keyring.get(9),
            Err(PrivacyError::UnknownMasterKey { version: 9, .. })
        ));
    }

    #[test]
    fn wrap_binds_subject_and_key_id() {
        let keyring = MasterKeyring::from_env_value(&format!(
            "1:{}, 2:{}",
            BASE64.encode([1_u8; 32]),
            BASE64.encode([2_u8; 32])
        ))
        .unwrap();
        let kek = keyring.active();
        assert_eq!(kek.version, 2);
        let subject = Subject([5; 32]);
        let wrapped = kek.wrap(&subject, 7, &[9; 32]).unwrap();
        assert_eq!(*kek.unwrap(&subject, 7, &wrapped).unwrap(), [9; 32]);
        assert!(kek.unwrap(&Subject([6; 32]), 7, &wrapped).is_err());
        assert!(kek.unwrap(&subject, 8, &wrapped).is_err());
        assert!(
            keyring
                .get(1)
                .unwrap()
                .unwrap(&subject, 7, &wrapped)
                .is_err()
        );
    }

    #[test]
    fn bad_keys_are_refused_without_echoing_them() {
        for (value, expected) in [
            ("1:AAAA", "the key must decode to 32 bytes"),
            ("x:AAAA", "the version must be a whole number from 1"),
            ("0:AAAA", "the version must be a whole number from 1"),
            ("1:!!notbase64", "the key is not valid base64"),
            ("nocolon", "expected VERSION:BASE64"),
            ("", "no key found"),
        ] {
            let error = MasterKeyring::from_env_value(value)
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{value}: {error}");
            assert!(
                !error.contains("AAAA") && !error.contains("notbase64"),
                "{error}"
            );
        }
        let key = BASE64.encode([3_u8; 32]);
        let error = MasterKeyring::from_env_value(&format!("1:{key},1:{key}"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("appears twice"), "{error}");
    }

    #[test]
    fn debug_prints_no_key_material() {
        let key = BASE64.encode([4_u8; 32]);
        let keyring = MasterKeyring::from_env_value(&format!("1:{key}")).unwrap();
        let debug = format!("{keyring:?} {:?}", keyring.active());
        assert!(!debug.contains(&key), "{debug}");
        assert!(debug.contains("versions: [1]"), "{debug}");
    }
}
