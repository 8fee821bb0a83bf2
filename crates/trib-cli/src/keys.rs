//! `tributary keys create|list|revoke`: API keys with scopes, in `<data_dir>/api-keys.json`.
//!
//! These commands work on the data directory's key file, not over HTTP; a running server sees
//! the change within a second, without a restart.

use std::path::{Path, PathBuf};

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
    fn store(&self) -> anyhow::Result<KeyStore> {
        let data_dir = match (&self.config, &self.data_dir) {
            (_, Some(data_dir)) => data_dir.clone(),
            (Some(config), None) => trib_config::Config::load(config)?.server.data_dir,
            (None, None) => trib_config::ServerConfig::default().data_dir,
        };
        Ok(KeyStore::in_data_dir(Path::new(&data_dir)))
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
    }
    Ok(())
}
