//! `tributary keys create|list|revoke`: API keys with scopes, in `<data_dir>/api-keys.json`;
//! `tributary keys rotate`: a new master key version for encryption at rest.
//!
//! These commands work on the data directory's files, not over HTTP; a running server sees
//! the change within a second, without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use trib_api::Scope;
use trib_api::keys::KeyStore;

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Creates a key and prints it once; only its hash is stored.
    Create {
        /// A name for people: what or who uses the key.
        #[arg(long)]
        name: String,
        /// A scope the key grants; repeat for several. `admin` grants every scope.
        #[arg(long = "scope", required = true, value_parser = parse_scope)]
        scopes: Vec<Scope>,
        #[command(flatten)]
        location: Location,
    },
    /// Lists keys (ids, names, scopes, status); never prints secrets.
    List {
        #[command(flatten)]
        location: Location,
    },
    /// Revokes a key by id; a running server refuses it within a second.
    Revoke {
        /// The key's id (the part after `tk_`, as `keys list` shows it).
        id: String,
        #[command(flatten)]
        location: Location,
    },
    /// Adds a master key version to `<data_dir>/master.keys` and re-wraps every data key with
    /// it; safe while a server runs on the same data directory.
    Rotate {
        /// Data keys re-wrapped per transaction.
        #[arg(long, default_value_t = 500)]
        batch_size: usize,
        #[command(flatten)]
        location: Location,
    },
}

/// Where the key file is: the configuration's data directory, or a data directory.
#[derive(Debug, Args)]
pub(crate) struct Location {
    /// The configuration file whose `server.data_dir` holds the keys.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The data directory (overrides `server.data_dir`; default `tributary-data`).
    #[arg(long, env = "TRIBUTARY_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl Location {
    fn data_dir(&self) -> anyhow::Result<PathBuf> {
        Ok(match (&self.config, &self.data_dir) {
            (_, Some(data_dir)) => data_dir.clone(),
            (Some(config), None) => trib_config::Config::load(config)?.server.data_dir,
            (None, None) => trib_config::ServerConfig::default().data_dir,
        })
    }

    fn store(&self) -> anyhow::Result<KeyStore> {
        Ok(KeyStore::in_data_dir(Path::new(&self.data_dir()?)))
    }
}

fn parse_scope(name: &str) -> Result<Scope, String> {
    name.parse()
        .map_err(|error: trib_api::keys::UnknownScope| error.to_string())
}

pub(crate) fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create {
            name,
            scopes,
            location,
        } => {
            let store = location.store()?;
            let created = store.create(&name, &scopes)?;
            let scopes: Vec<&str> = created.record.scopes.iter().map(|s| s.as_str()).collect();
            eprintln!(
                "created key {} ({}) with scopes {} in {}; it is shown once, store it now:",
                created.record.id,
                created.record.name,
                scopes.join(","),
                store.path().display()
            );
            println!("{}", created.key.expose());
        }
        KeysCommand::List { location } => {
            let store = location.store()?;
            let keys = store.list()?;
            if keys.is_empty() {
                eprintln!("no API keys in {}", store.path().display());
                return Ok(());
            }
            println!(
                "{:<16}  {:<20}  {:<8}  {:<20}  SCOPES",
                "ID", "NAME", "STATUS", "CREATED"
            );
            for key in keys {
                let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
                println!(
                    "{:<16}  {:<20}  {:<8}  {:<20}  {}",
                    key.id,
                    key.name,
                    if key.revoked { "revoked" } else { "active" },
                    key.created_at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                    scopes.join(",")
                );
            }
        }
        KeysCommand::Revoke { id, location } => {
            let store = location.store()?;
            let key = store
                .revoke(&id)
                .with_context(|| format!("failed to revoke key `{id}`"))?;
            println!("revoked key {} ({})", key.id, key.name);
        }
        KeysCommand::Rotate {
            batch_size,
            location,
        } => rotate(&location.data_dir()?, batch_size)?,
    }
    Ok(())
}

/// Adds a master key version, then re-wraps every data key under an older one with it.
fn rotate(data_dir: &Path, batch_size: usize) -> anyhow::Result<()> {
    use trib_privacy::master::{self, MASTER_KEYS_ENV, MASTER_KEYS_FILE, MasterKeyring};
    use trib_privacy::{KeyStore as DataKeyStore, KeyStoreOptions};

    let path = data_dir.join(MASTER_KEYS_FILE);
    if std::env::var_os(MASTER_KEYS_ENV).is_some() {
        anyhow::bail!(
            "master keys come from the environment variable {MASTER_KEYS_ENV}, which `keys rotate` \
             cannot change: add a higher VERSION:BASE64 item to it and restart the server \
             (the key file {} is not used); nothing was changed",
            path.display()
        );
    }
    if !path.exists() {
        anyhow::bail!(
            "no master key file at {}: is {} the data directory whose data is encrypted at rest? \
             nothing was changed",
            path.display(),
            data_dir.display()
        );
    }
    let version = master::rotate_file(&path)
        .with_context(|| format!("failed to add a master key version to {}", path.display()))?;
    eprintln!("added master key version {version} to {}", path.display());

    let keyring = Arc::new(MasterKeyring::open_file(&path)?);
    let store = DataKeyStore::open(
        KeyStoreOptions {
            cache_entries: 1024,
            ..KeyStoreOptions::in_data_dir(data_dir)
        },
        keyring,
    )?;
    let to_rewrap: u64 = store
        .stats()?
        .deks_by_kek_version
        .range(..version)
        .map(|(_, count)| count)
        .sum();
    eprintln!("re-wrapping {to_rewrap} data keys in batches of {batch_size}");
    let mut last_print = Instant::now();
    let report = store
        .rewrap_with_progress(batch_size, |report| {
            if last_print.elapsed() >= Duration::from_secs(1) {
                eprintln!("re-wrapped {} of about {to_rewrap} data keys", report.rewrapped);
                last_print = Instant::now();
            }
        })
        .context("failed to re-wrap data keys (run `tributary keys rotate` again to finish; no key is lost)")?;
    let stats = store.stats()?;
    let versions: Vec<String> = stats
        .deks_by_kek_version
        .iter()
        .map(|(version, count)| format!("v{version}: {count}"))
        .collect();
    println!(
        "master key version {} is active; re-wrapped {} data keys in {} batches; data keys by version: {}",
        report.active_version,
        report.rewrapped,
        report.batches,
        if versions.is_empty() {
            "none".to_owned()
        } else {
            versions.join(", ")
        }
    );
    Ok(())
}
