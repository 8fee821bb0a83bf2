//! Integration tests of trib-config: the example configurations shipped in `config/examples`.

use std::path::{Path, PathBuf};

use trib_config::Config;

/// Every `${NAME}` resolves to a placeholder derived from the name, so that distinct variables
/// give distinct (and therefore unique) keys.
fn fake_env(name: &str) -> Option<String> {
    Some(format!("fake_{}", name.to_lowercase()))
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/examples")
}

#[test]
fn every_example_config_is_valid() {
    let dir = examples_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "toml")
        })
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no examples in {}", dir.display());

    for path in &paths {
        if let Err(error) = Config::load_with_env(path, &fake_env) {
            panic!("{error}");
        }
    }
}

#[test]
fn the_full_example_sets_every_key_to_its_default() {
    let config = Config::load_with_env(&examples_dir().join("tributary.toml"), &fake_env).unwrap();
    assert_eq!(config.ingest, trib_config::IngestConfig::default());
    assert_eq!(config.log, trib_config::LogConfig::default());
    assert_eq!(config.retention, trib_config::RetentionConfig::default());
    let server = trib_config::ServerConfig::default();
    assert_eq!(config.server.listen, server.listen);
    assert_eq!(config.server.data_dir, server.data_dir);
    assert_eq!(
        config
            .server
            .admin_key
            .as_ref()
            .map(|key| key.expose().as_str()),
        Some("fake_tributary_admin_key")
    );
    let names: Vec<&str> = config
        .sources
        .iter()
        .map(|source| source.name.as_str())
        .collect();
    assert_eq!(names, ["web", "backend", "crm", "shop"]);
    let crm = &config.sources[2];
    assert_eq!(
        crm.rules.unknown_events,
        trib_config::UnknownEvents::Quarantine
    );
    assert_eq!(crm.rules.normalize.len(), 3);
    assert!(crm.import.is_some());
    assert!(config.sources[3].webhook.is_some());
    let types: Vec<&str> = config
        .identity
        .types
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(
        types,
        ["user_id", "email", "phone", "crm_id", "anonymous_id"]
    );
    assert!(config.identity.is_blocked("Test@Example.com"));
    assert!(config.identity.matching.is_some());
    assert_eq!(config.store, trib_config::StoreConfig::Embedded);
    assert_eq!(config.privacy, trib_consent::PrivacyRules::default());
}
