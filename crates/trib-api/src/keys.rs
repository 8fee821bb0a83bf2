//! API keys with scopes: the scope model, the key file `<data_dir>/api-keys.json` (created,
//! listed and revoked by `tributary keys ...`) and the server's view of it.
//!
//! A key is presented as `Authorization: Bearer tk_<id>_<secret>` (or as the HTTP Basic user
//! name). The file stores, per key, its id, name, scopes, creation time, revoked flag and the
//! SHA-256 of its secret, never the secret itself. A plain SHA-256 (no salt, no slow KDF) is
//! appropriate because secrets are 192 random bits from the operating system, not passwords:
//! there is nothing to guess from a dictionary and a brute force of 2^192 is out of reach, so a
//! slow hash would only slow down every request.
//!
//! The configured `server.admin_key` keeps working as a key with the `admin` scope.
//!
//! The running server re-reads the file when its identity (inode, size, modification time)
//! changes, checked at most every [`RELOAD_INTERVAL`], so a created or revoked key takes effect
//! within that interval without a restart. A file that becomes unreadable or malformed while
//! the server runs makes every file key refused (fail closed) until it is fixed; the configured
//! admin key keeps working.

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use trib_core::Secret;

/// The key file's name in the data directory.
pub const KEYS_FILE_NAME: &str = "api-keys.json";

/// How often the server checks the key file for changes, at most.
pub const RELOAD_INTERVAL: Duration = Duration::from_millis(500);

/// The prefix of every API key.
const KEY_PREFIX: &str = "tk_";
/// Random bytes in a key id (shown by `keys list`, not secret).
const ID_BYTES: usize = 8;
/// Random bytes in a key secret: 192 bits.
const SECRET_BYTES: usize = 24;
/// The key file's format version.
const FILE_VERSION: u32 = 1;

/// What a key may do. `admin` grants every scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Read stored events (`GET /v1/events...`).
    EventsRead,
    /// Read quarantined messages (`GET /v1/quarantine...`).
    QuarantineRead,
    /// Replay quarantined messages (`POST /v1/quarantine/replay`).
    QuarantineWrite,
    /// Start imports and read their status (`/v1/imports...`).
    ImportsWrite,
    /// Read the schema registry (`GET /v1/schemas...`).
    SchemasRead,
    /// Publish schemas (`POST /v1/schemas`).
    SchemasWrite,
    /// Read profiles, their events, explanations and the review queue.
    ProfilesRead,
    /// Change profiles: unmerge, identity matching runs, review decisions.
    ProfilesWrite,
    /// Erase a person's data (`/v1/privacy/erasures`).
    PrivacyErase,
    /// Export everything held about a person (`POST /v1/privacy/exports`).
    PrivacyExport,
    /// Read consent history and suppression lists (`GET /v1/privacy/...`).
    ConsentRead,
    /// Record consent, add and remove suppressions.
    ConsentWrite,
    /// Render templates for people (`POST /v1/render`).
    TemplatesRender,
    /// Save templates, after the static check (`PUT /v1/templates/{name}`).
    TemplatesWrite,
    /// Render a person's email and send it to the internal seed list
    /// (`POST /v1/render/send`).
    TemplatesSend,
    /// Scrape `GET /metrics`.
    MetricsRead,
    /// Read destinations, their sync state and dead letters (`GET /v1/destinations...`).
    DestinationsRead,
    /// Replay dead letters and ask for resyncs (`POST /v1/destinations/{name}/dlq/replay`,
    /// `POST /v1/destinations/{name}/resync`).
    DestinationsWrite,
    /// Every scope.
    Admin,
}

impl Scope {
    /// Every scope, in a stable order.
    pub const ALL: [Scope; 19] = [
        Scope::EventsRead,
        Scope::QuarantineRead,
        Scope::QuarantineWrite,
        Scope::ImportsWrite,
        Scope::SchemasRead,
        Scope::SchemasWrite,
        Scope::ProfilesRead,
        Scope::ProfilesWrite,
        Scope::PrivacyErase,
        Scope::PrivacyExport,
        Scope::ConsentRead,
        Scope::ConsentWrite,
        Scope::TemplatesRender,
        Scope::TemplatesWrite,
        Scope::TemplatesSend,
        Scope::MetricsRead,
        Scope::DestinationsRead,
        Scope::DestinationsWrite,
        Scope::Admin,
    ];

    /// The scope's name, as written in the key file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::EventsRead => "events:read",
            Scope::QuarantineRead => "quarantine:read",
            Scope::QuarantineWrite => "quarantine:write",
            Scope::ImportsWrite => "imports:write",
            Scope::SchemasRead => "schemas:read",
            Scope::SchemasWrite => "schemas:write",
            Scope::ProfilesRead => "profiles:read",
            Scope::ProfilesWrite => "profiles:write",
            Scope::PrivacyErase => "privacy:erase",
            Scope::PrivacyExport => "privacy:export",
            Scope::ConsentRead => "consent:read",
            Scope::ConsentWrite => "consent:write",
            Scope::TemplatesRender => "templates:render",
            Scope::TemplatesWrite => "templates:write",
            Scope::TemplatesSend => "templates:send",
            Scope::MetricsRead => "metrics:read",
            Scope::DestinationsRead => "destinations:read",
            Scope::DestinationsWrite => "destinations:write",
            Scope::Admin => "admin",
        }
    }

    /// Whether a key holding `scopes` may use an endpoint that needs `self`.
    pub fn granted_by(self, scopes: &[Scope]) -> bool {
        scopes
            .iter()
            .any(|held| *held == Scope::Admin || *held == self)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A scope name that is not one of [`Scope::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope `{0}` (known scopes: {known})", known = Scope::ALL.map(Scope::as_str).join(", "))]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == name)
            .ok_or_else(|| UnknownScope(name.to_owned()))
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// One stored key: everything but its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    /// The public id, the part after `tk_` in the key.
    pub id: String,
    /// A name for people (`crm-sync`, `grafana`).
    pub name: String,
    /// What the key may do.
    pub scopes: Vec<Scope>,
    /// When the key was created.
    pub created_at: jiff::Timestamp,
    /// Whether the key was revoked; a revoked key is refused.
    pub revoked: bool,
    /// SHA-256 of the secret, lowercase hexadecimal.
    pub secret_sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    version: u32,
    keys: Vec<KeyRecord>,
}

/// A failure to read or write the key file; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// The file could not be read.
    #[error("failed to read the API key file {}: {source}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not a valid key file.
    #[error("the API key file {} is malformed: {message}", path.display())]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong (never a secret: the file holds none).
        message: String,
    },
    /// The file could not be written.
    #[error("failed to write the API key file {}: {source}", path.display())]
    Write {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The operating system's random source failed.
    #[error("failed to generate a key: {0}")]
    Random(getrandom::Error),
    /// `revoke` named an id that is not in the file.
    #[error("no API key with id `{id}` in {}", path.display())]
    UnknownId {
        /// The key file.
        path: PathBuf,
        /// The id asked for.
        id: String,
    },
    /// `create` was given no scope or an empty name.
    #[error("{0}")]
    Invalid(String),
}

/// The key file of a data directory: create, list and revoke keys.
#[derive(Debug, Clone)]
pub struct KeyStore {
    path: PathBuf,
}

/// A newly created key: its record and the full key, shown once.
pub struct CreatedKey {
    /// What the file stores.
    pub record: KeyRecord,
    /// `tk_<id>_<secret>`; not stored anywhere.
    pub key: Secret<String>,
}

impl KeyStore {
    /// The key file of `data_dir`.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(KEYS_FILE_NAME),
        }
    }

    /// The key file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every key in the file (none when the file does not exist).
    pub fn list(&self) -> Result<Vec<KeyRecord>, KeyStoreError> {
        read_file(&self.path)
    }

    /// Creates a key with `name` and `scopes`, stores its hash and returns the key.
    pub fn create(&self, name: &str, scopes: &[Scope]) -> Result<CreatedKey, KeyStoreError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(KeyStoreError::Invalid("a key needs a name".to_owned()));
        }
        if scopes.is_empty() {
            return Err(KeyStoreError::Invalid(
                "a key needs at least one scope".to_owned(),
            ));
        }
        let _lock = self.lock()?;
        let mut keys = self.list()?;
        let id = random_hex(ID_BYTES)?;
        let secret = random_hex(SECRET_BYTES)?;
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        let record = KeyRecord {
            id: id.clone(),
            name: name.to_owned(),
            scopes,
            created_at: jiff::Timestamp::now(),
            revoked: false,
            secret_sha256: hex(&Sha256::digest(secret.as_bytes())),
        };
        keys.push(record.clone());
        self.write(&keys)?;
        Ok(CreatedKey {
            record,
            key: Secret::new(format!("{KEY_PREFIX}{id}_{secret}")),
        })
    }

    /// Marks the key `id` revoked; returns its record. Revoking a revoked key is not an error.
    pub fn revoke(&self, id: &str) -> Result<KeyRecord, KeyStoreError> {
        let _lock = self.lock()?;
        let mut keys = self.list()?;
        let Some(record) = keys.iter_mut().find(|record| record.id == id) else {
            return Err(KeyStoreError::UnknownId {
                path: self.path.clone(),
                id: id.to_owned(),
            });
        };
        record.revoked = true;
        let record = record.clone();
        self.write(&keys)?;
        Ok(record)
    }

    /// Takes an exclusive advisory lock on `.api-keys.json.lock` beside the file, so that two
    /// `keys` commands on one data directory do not lose each other's change; released on drop.
    /// (The server only reads, and never waits for it: every write is an atomic rename.)
    fn lock(&self) -> Result<File, KeyStoreError> {
        let lock_error = |source| KeyStoreError::Write {
            path: self.path.clone(),
            source,
        };
        let directory = self.directory();
        fs::create_dir_all(&directory).map_err(lock_error)?;
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(directory.join(format!(".{KEYS_FILE_NAME}.lock")))
            .map_err(lock_error)?;
        file.lock().map_err(lock_error)?;
        Ok(file)
    }

    fn directory(&self) -> PathBuf {
        match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        }
    }

    /// Writes the file atomically: a temporary file with mode 0600 in the same directory,
    /// synced, renamed over the old one, and the directory synced.
    fn write(&self, keys: &[KeyRecord]) -> Result<(), KeyStoreError> {
        let write_error = |source| KeyStoreError::Write {
            path: self.path.clone(),
            source,
        };
        let file = KeyFile {
            version: FILE_VERSION,
            keys: keys.to_vec(),
        };
        let mut body = serde_json::to_vec_pretty(&file)
            .map_err(|error| write_error(io::Error::other(error)))?;
        body.push(b'\n');
        let directory = self.directory();
        fs::create_dir_all(&directory).map_err(write_error)?;
        let temporary = directory.join(format!(".{KEYS_FILE_NAME}.{}.tmp", std::process::id()));
        match fs::remove_file(&temporary) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(write_error(error)),
        }
        let result = write_private_file(&temporary, &body)
            .and_then(|()| fs::rename(&temporary, &self.path))
            .and_then(|()| sync_directory(&directory));
        if result.is_err() {
            // Best effort: the error that matters is the one returned below.
            let _ = fs::remove_file(&temporary);
        }
        result.map_err(write_error)
    }
}

/// Reads a key file; a missing file holds no keys.
fn read_file(path: &Path) -> Result<Vec<KeyRecord>, KeyStoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(KeyStoreError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let malformed = |message: String| KeyStoreError::Malformed {
        path: path.to_owned(),
        message,
    };
    let file: KeyFile =
        serde_json::from_slice(&bytes).map_err(|error| malformed(error.to_string()))?;
    if file.version != FILE_VERSION {
        return Err(malformed(format!(
            "unsupported version {} (expected {FILE_VERSION})",
            file.version
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for (index, record) in file.keys.iter().enumerate() {
        if record.id.is_empty() || !record.id.bytes().all(|byte| byte.is_ascii_alphanumeric()) {
            return Err(malformed(format!("keys[{index}].id must be alphanumeric")));
        }
        if !seen.insert(record.id.as_str()) {
            return Err(malformed(format!(
                "keys[{index}].id `{}` is repeated",
                record.id
            )));
        }
        if parse_hex32(&record.secret_sha256).is_none() {
            return Err(malformed(format!(
                "keys[{index}].secret_sha256 must be 64 hexadecimal digits"
            )));
        }
    }
    Ok(file.keys)
}

/// Creates `path` (which must not exist) readable only by its owner, and writes `contents`.
fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let file = options.open(path)?;
        // The mode passed to open is reduced by the umask; make sure it is exactly 0600.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        write_and_sync(file, contents)
    }
    #[cfg(not(unix))]
    {
        write_and_sync(options.open(path)?, contents)
    }
}

fn write_and_sync(mut file: File, contents: &[u8]) -> io::Result<()> {
    file.write_all(contents)?;
    file.sync_all()
}

fn sync_directory(directory: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(directory)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = directory;
        Ok(())
    }
}

fn random_hex(bytes: usize) -> Result<String, KeyStoreError> {
    let mut buffer = vec![0_u8; bytes];
    getrandom::fill(&mut buffer).map_err(KeyStoreError::Random)?;
    Ok(hex(&buffer))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(2 * bytes.len());
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let digit = |byte: u8| char::from(byte).to_digit(16);
    let mut out = [0_u8; 32];
    for (index, pair) in text.chunks_exact(2).enumerate() {
        let value = digit(pair[0])? * 16 + digit(pair[1])?;
        out[index] = u8::try_from(value).ok()?;
    }
    Some(out)
}

/// Compares two byte strings in time that depends only on their lengths.
pub(crate) fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    left.iter()
        .zip(right)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// Who a request authenticated as: set by the scope layer as a request extension, and
/// recorded as the actor of audit entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The configured `server.admin_key`.
    Admin,
    /// A key of the key file, by its public id (never its secret).
    Key(String),
}

/// Why a presented key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No key matches (unknown, wrong secret or revoked: not told apart, on purpose).
    Invalid,
}

/// The server's view of the keys: the configured admin key and the key file, reloaded when it
/// changes.
pub(crate) struct ApiKeys {
    admin_key: Option<Secret<String>>,
    store: Option<KeyStore>,
    cache: Mutex<Cache>,
}

struct Cache {
    checked_at: Option<Instant>,
    stamp: Option<FileStamp>,
    keys: Result<HashMap<String, LoadedKey>, ()>,
}

struct LoadedKey {
    hash: [u8; 32],
    scopes: Vec<Scope>,
    revoked: bool,
}

/// What identifies one version of the file: a rewrite is a rename of a new file, so its inode
/// changes even when size and modification time do not.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: (u64, u64),
}

impl FileStamp {
    fn of(metadata: &fs::Metadata) -> Self {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Self {
            modified: metadata.modified().ok(),
            len: metadata.len(),
            #[cfg(unix)]
            inode: (metadata.dev(), metadata.ino()),
        }
    }
}

impl ApiKeys {
    /// Loads the key file of `store` (if any); fails when it exists and cannot be read.
    pub(crate) fn load(
        admin_key: Option<Secret<String>>,
        store: Option<KeyStore>,
    ) -> Result<Self, KeyStoreError> {
        let keys = Self {
            admin_key,
            store,
            cache: Mutex::new(Cache {
                checked_at: None,
                stamp: None,
                keys: Ok(HashMap::new()),
            }),
        };
        if let Some(store) = &keys.store {
            let stamp = fs::metadata(store.path())
                .ok()
                .map(|meta| FileStamp::of(&meta));
            let loaded = index(store.list()?);
            let mut cache = keys.lock();
            cache.stamp = stamp;
            cache.keys = Ok(loaded);
            cache.checked_at = Some(Instant::now());
        }
        Ok(keys)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while holding the lock leaves a consistent cache (fields are replaced whole).
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Returns the scopes of a presented key.
    #[cfg(test)]
    pub(crate) fn scopes_of(&self, presented: &str) -> Result<Vec<Scope>, Refusal> {
        self.authenticate(presented).map(|(_, scopes)| scopes)
    }

    /// Returns who a presented key belongs to and its scopes.
    pub(crate) fn authenticate(&self, presented: &str) -> Result<(Principal, Vec<Scope>), Refusal> {
        if let Some(rest) = presented.strip_prefix(KEY_PREFIX)
            && let Some((id, secret)) = rest.split_once('_')
            && self.store.is_some()
        {
            let hash: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
            let mut cache = self.lock();
            self.refresh(&mut cache);
            if let Ok(keys) = &cache.keys
                && let Some(key) = keys.get(id)
                && constant_time_eq(&key.hash, &hash)
                && !key.revoked
            {
                return Ok((Principal::Key(id.to_owned()), key.scopes.clone()));
            }
        }
        if let Some(admin_key) = &self.admin_key
            && constant_time_eq(presented.as_bytes(), admin_key.expose().as_bytes())
        {
            return Ok((Principal::Admin, vec![Scope::Admin]));
        }
        Err(Refusal::Invalid)
    }

    /// Re-reads the file when it changed, at most every [`RELOAD_INTERVAL`].
    fn refresh(&self, cache: &mut Cache) {
        let Some(store) = &self.store else {
            return;
        };
        let now = Instant::now();
        if cache
            .checked_at
            .is_some_and(|checked| now.duration_since(checked) < RELOAD_INTERVAL)
        {
            return;
        }
        cache.checked_at = Some(now);
        let stamp = match fs::metadata(store.path()) {
            Ok(meta) => Some(FileStamp::of(&meta)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => None,
            Err(error) => {
                tracing::error!(path = %store.path().display(), %error, "cannot stat the API key file; refusing its keys");
                cache.stamp = None;
                cache.keys = Err(());
                return;
            }
        };
        if stamp == cache.stamp && cache.keys.is_ok() {
            return;
        }
        match store.list() {
            Ok(records) => {
                tracing::info!(keys = records.len(), "reloaded the API key file");
                cache.keys = Ok(index(records));
                cache.stamp = stamp;
            }
            Err(error) => {
                if cache.keys.is_ok() || cache.stamp != stamp {
                    tracing::error!(%error, "refusing every key of the API key file until it is fixed");
                }
                cache.keys = Err(());
                cache.stamp = stamp;
            }
        }
    }
}

fn index(records: Vec<KeyRecord>) -> HashMap<String, LoadedKey> {
    records
        .into_iter()
        .filter_map(|record| {
            let hash = parse_hex32(&record.secret_sha256)?;
            Some((
                record.id,
                LoadedKey {
                    hash,
                    scopes: record.scopes,
                    revoked: record.revoked,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_and_admin_grants_all() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>().unwrap(), scope);
            assert!(scope.granted_by(&[Scope::Admin]));
            assert!(scope.granted_by(&[scope]));
        }
        assert!(!Scope::ProfilesWrite.granted_by(&[Scope::ProfilesRead]));
        assert!(!Scope::Admin.granted_by(&[Scope::ProfilesRead]));
        let error = "profiles:delete".parse::<Scope>().unwrap_err();
        assert!(error.to_string().contains("profiles:read"), "{error}");
    }

    #[test]
    fn create_list_revoke_round_trip_without_storing_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::in_data_dir(dir.path());
        assert!(store.list().unwrap().is_empty());
        let created = store
            .create(
                "crm",
                &[
                    Scope::ProfilesRead,
                    Scope::ProfilesWrite,
                    Scope::ProfilesRead,
                ],
            )
            .unwrap();
        let key = created.key.expose().clone();
        assert!(key.starts_with(&format!("tk_{}_", created.record.id)));
        assert_eq!(key.len(), 3 + 2 * ID_BYTES + 1 + 2 * SECRET_BYTES);
        assert_eq!(
            created.record.scopes,
            vec![Scope::ProfilesRead, Scope::ProfilesWrite]
        );
        let other = store.create("grafana", &[Scope::MetricsRead]).unwrap();

        let listed = store.list().unwrap();
        assert_eq!(listed, vec![created.record.clone(), other.record.clone()]);
        let text = fs::read_to_string(store.path()).unwrap();
        let secret = key.rsplit('_').next().unwrap();
        assert!(!text.contains(secret), "the file holds the secret");
        assert!(!text.contains(other.key.expose().rsplit('_').next().unwrap()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(store.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let keys = ApiKeys::load(None, Some(store.clone())).unwrap();
        assert_eq!(
            keys.scopes_of(&key).unwrap(),
            vec![Scope::ProfilesRead, Scope::ProfilesWrite]
        );
        let wrong = format!("tk_{}_{}", created.record.id, "0".repeat(48));
        assert_eq!(keys.scopes_of(&wrong), Err(Refusal::Invalid));

        let revoked = store.revoke(&created.record.id).unwrap();
        assert!(revoked.revoked);
        assert!(store.list().unwrap()[0].revoked);
        assert!(!store.list().unwrap()[1].revoked);
        assert!(matches!(
            store.revoke("nope"),
            Err(KeyStoreError::UnknownId { .. })
        ));
        // A fresh view sees the revocation at once; a running one within RELOAD_INTERVAL.
        let fresh = ApiKeys::load(None, Some(store.clone())).unwrap();
        assert_eq!(fresh.scopes_of(&key), Err(Refusal::Invalid));
        std::thread::sleep(RELOAD_INTERVAL + Duration::from_millis(50));
        assert_eq!(keys.scopes_of(&key), Err(Refusal::Invalid));
        assert_eq!(
            keys.scopes_of(other.key.expose()).unwrap(),
            vec![Scope::MetricsRead]
        );
    }

    #[test]
    fn concurrent_creates_lose_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::in_data_dir(dir.path());
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let store = store.clone();
                scope.spawn(move || {
                    for n in 0..5 {
                        store
                            .create(&format!("k{thread}-{n}"), &[Scope::EventsRead])
                            .unwrap();
                    }
                });
            }
        });
        assert_eq!(store.list().unwrap().len(), 20);
    }

    #[test]
    fn the_configured_admin_key_has_the_admin_scope() {
        let keys = ApiKeys::load(Some(Secret::new("ak_1".to_owned())), None).unwrap();
        assert_eq!(keys.scopes_of("ak_1").unwrap(), vec![Scope::Admin]);
        assert_eq!(keys.scopes_of("ak_2"), Err(Refusal::Invalid));
        assert_eq!(keys.scopes_of("tk_a_b"), Err(Refusal::Invalid));
    }

    #[test]
    fn a_malformed_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::in_data_dir(dir.path());
        for contents in [
            "not json",
            r#"{"version": 2, "keys": []}"#,
            r#"{"version": 1, "keys": [{"id": "a", "name": "n", "scopes": ["nope"], "created_at": "2026-01-01T00:00:00Z", "revoked": false, "secret_sha256": "00"}]}"#,
        ] {
            fs::write(store.path(), contents).unwrap();
            let error = store.list().unwrap_err();
            assert!(matches!(error, KeyStoreError::Malformed { .. }));
            assert!(
                error
                    .to_string()
                    .contains(&store.path().display().to_string()),
                "{error}"
            );
            assert!(ApiKeys::load(None, Some(store.clone())).is_err());
        }
    }

    #[test]
    fn a_file_broken_while_running_refuses_its_keys_until_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::in_data_dir(dir.path());
        let created = store.create("ops", &[Scope::EventsRead]).unwrap();
        let keys = ApiKeys::load(Some(Secret::new("ak".to_owned())), Some(store.clone())).unwrap();
        let good = fs::read(store.path()).unwrap();
        fs::write(store.path(), "{").unwrap();
        std::thread::sleep(RELOAD_INTERVAL + Duration::from_millis(50));
        assert_eq!(keys.scopes_of(created.key.expose()), Err(Refusal::Invalid));
        assert_eq!(keys.scopes_of("ak").unwrap(), vec![Scope::Admin]);
        fs::write(store.path(), good).unwrap();
        std::thread::sleep(RELOAD_INTERVAL + Duration::from_millis(50));
        assert_eq!(
            keys.scopes_of(created.key.expose()).unwrap(),
            vec![Scope::EventsRead]
        );
    }
}
