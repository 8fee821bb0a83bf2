//! Tests of loading and validating `tributary.toml` through the public API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use trib_core::Secret;

use super::*;

/// A fake environment, so tests never touch the process environment.
fn env(name: &str) -> Option<String> {
    let value = match name {
        "WEB_WRITE_KEY" => "wk_web_from_env",
        "APP_WRITE_KEY" => "wk_app_from_env",
        "ADMIN_KEY" => "ak_from_env",
        "LISTEN" => "0.0.0.0:9000",
        "EMPTY" => "",
        _ => return None,
    };
    Some(value.to_owned())
}

/// The smallest valid file.
const MINIMAL: &str = r#"
version = 1

[[sources]]
name = "web"
write_key = "wk_web"
"#;

/// Appends `sources` to a file that has none, so a case only spells out what it is about.
fn with_source(toml: &str) -> String {
    format!("{toml}\n[[sources]]\nname = \"web\"\nwrite_key = \"wk_web\"\n")
}

#[track_caller]
fn check_ok(toml: &str) -> Config {
    Config::from_toml_str(toml, &env).unwrap_or_else(|error| panic!("{error}\nin:\n{toml}"))
}

#[track_caller]
fn check_error(toml: &str, expected: &str) {
    match Config::from_toml_str(toml, &env) {
        Ok(config) => {
            panic!("expected an error containing {expected:?}, got {config:?}\nin:\n{toml}")
        }
        Err(error) => {
            let display = error.to_string();
            assert!(
                display.contains(expected),
                "expected {expected:?} in:\n{display}\nfor:\n{toml}"
            );
        }
    }
}

#[test]
fn minimal_file_gets_every_default() {
    let config = check_ok(MINIMAL);
    assert_eq!(config.server, ServerConfig::default());
    assert_eq!(config.ingest, IngestConfig::default());
    assert_eq!(config.log, LogConfig::default());
    assert_eq!(source_keys(&config.sources), [("web", "wk_web")]);
    assert_eq!(config.sources[0].rules, crate::SourceRules::default());
}

#[test]
fn defaults_match_the_documentation() {
    let server = ServerConfig::default();
    assert_eq!(
        server.listen,
        "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(server.data_dir, PathBuf::from("tributary-data"));
    assert_eq!(server.admin_key, None);
    let ingest = IngestConfig::default();
    assert_eq!(ingest.max_message_bytes, 32_768);
    assert_eq!(ingest.max_request_bytes, 512_000);
    assert_eq!(ingest.dedup_window, Duration::from_secs(86_400));
    let log = LogConfig::default();
    assert_eq!(log.storage, LogStorage::Embedded);
    assert_eq!(log.partitions, 8);
    assert!(log.fsync);
    assert_eq!(log.max_queued_records, 100_000);
}

#[test]
fn every_key_is_read() {
    let config = check_ok(
        r#"
        version = 1
        [server]
        listen = "${LISTEN}"
        data_dir = "/var/lib/tributary"
        admin_key = "${ADMIN_KEY}"
        [ingest]
        max_message_bytes = 1000
        max_request_bytes = 2000
        dedup_window = "1h 30m"
        [log]
        storage = "memory"
        partitions = 1024
        fsync = false
        max_queued_records = 1
        [[sources]]
        name = "web"
        write_key = "${WEB_WRITE_KEY}"
        [[sources]]
        name = "app_2-x"
        write_key = "${APP_WRITE_KEY}"
        "#,
    );
    let expected = Config {
        server: ServerConfig {
            listen: "0.0.0.0:9000".parse().unwrap(),
            data_dir: PathBuf::from("/var/lib/tributary"),
            admin_key: Some(Secret::new("ak_from_env".to_owned())),
        },
        ingest: IngestConfig {
            max_message_bytes: 1000,
            max_request_bytes: 2000,
            dedup_window: Duration::from_secs(90 * 60),
        },
        log: LogConfig {
            storage: LogStorage::Memory,
            partitions: 1024,
            fsync: false,
            max_queued_records: 1,
        },
        schemas_dir: PathBuf::from("schemas"),
        templates_dir: PathBuf::from("templates"),
        render: crate::RenderConfig::default(),
        sources: vec![
            SourceConfig::new("web".to_owned(), Secret::new("wk_web_from_env".to_owned())),
            SourceConfig::new(
                "app_2-x".to_owned(),
                Secret::new("wk_app_from_env".to_owned()),
            ),
        ],
        identity: trib_identity::IdentityRules::default(),
        privacy: trib_consent::PrivacyRules::default(),
        retention: crate::RetentionConfig::default(),
        destinations: Vec::new(),
        store: StoreConfig::default(),
    };
    assert_eq!(config.server, expected.server);
    assert_eq!(config.ingest, expected.ingest);
    assert_eq!(config.log, expected.log);
    assert_eq!(source_keys(&config.sources), source_keys(&expected.sources));
}

#[test]
fn accepts_edge_values() {
    // The admin key is a bearer token, so ':' is fine there.
    let config = check_ok(&with_source("version = 1\n[server]\nadmin_key = \"a:b\""));
    assert_eq!(config.server.admin_key, Some(Secret::new("a:b".to_owned())));
    let config = check_ok(&with_source("version = 1\n[log]\npartitions = 1"));
    assert_eq!(config.log.partitions, 1);
    let config = check_ok(&with_source(
        "version = 1\n[ingest]\ndedup_window = \"PT24H\"",
    ));
    assert_eq!(config.ingest.dedup_window, Duration::from_secs(86_400));
    let config = check_ok(&with_source(
        "version = 1\n[ingest]\ndedup_window = \"90s\"",
    ));
    assert_eq!(config.ingest.dedup_window, Duration::from_secs(90));
    let config = check_ok(&with_source("version = 1\n[server]\nlisten = \"[::1]:80\""));
    assert_eq!(
        config.server.listen,
        "[::1]:80".parse::<SocketAddr>().unwrap()
    );
    let name = "a".repeat(64);
    let config = check_ok(&format!(
        "version = 1\n[[sources]]\nname = \"{name}\"\nwrite_key = \"k\""
    ));
    assert_eq!(config.sources[0].name, name);
    // Equal message and request limits are fine.
    check_ok(&with_source(
        "version = 1\n[ingest]\nmax_message_bytes = 10\nmax_request_bytes = 10",
    ));
}

#[test]
fn every_validation_rule() {
    let cases: &[(&str, &str)] = &[
        (
            "[[sources]]\nname = \"web\"\nwrite_key = \"k\"",
            "version: required, must be 1",
        ),
        (
            "version = 2",
            "line 1: version: unsupported version 2, must be 1",
        ),
        (
            "version = 1\n[server]\nlisten = \"localhost:8080\"",
            r#"line 3: server.listen: must be an IP address and port such as "127.0.0.1:8080", got "localhost:8080""#,
        ),
        (
            "version = 1\n[server]\nlisten = \"127.0.0.1\"",
            "server.listen: must be an IP address and port",
        ),
        (
            "version = 1\n[server]\ndata_dir = \"\"",
            "server.data_dir: must not be empty",
        ),
        (
            "version = 1\n[server]\nadmin_key = \"\"",
            "server.admin_key: must not be empty",
        ),
        (
            "version = 1\n[server]\nadmin_key = \"key \"",
            "server.admin_key: must not contain whitespace or control characters",
        ),
        (
            "version = 1\n[ingest]\nmax_message_bytes = 0",
            "ingest.max_message_bytes: must be greater than 0, got 0",
        ),
        (
            "version = 1\n[ingest]\nmax_message_bytes = -1",
            "ingest.max_message_bytes: must be greater than 0, got -1",
        ),
        (
            "version = 1\n[ingest]\nmax_request_bytes = 0",
            "ingest.max_request_bytes: must be greater than 0, got 0",
        ),
        (
            "version = 1\n[ingest]\nmax_message_bytes = 600000",
            "ingest.max_message_bytes: must not exceed ingest.max_request_bytes (512000), got 600000",
        ),
        (
            "version = 1\n[ingest]\ndedup_window = \"a day\"",
            r#"ingest.dedup_window: must be a duration such as "24h" or "90s", got "a day""#,
        ),
        (
            "version = 1\n[ingest]\ndedup_window = \"0s\"",
            r#"ingest.dedup_window: must be positive, got "0s""#,
        ),
        (
            "version = 1\n[ingest]\ndedup_window = \"-5m\"",
            r#"ingest.dedup_window: must be positive, got "-5m""#,
        ),
        (
            "version = 1\n[log]\nstorage = \"disk\"",
            r#"log.storage: must be "embedded" or "memory", got "disk""#,
        ),
        (
            "version = 1\n[log]\npartitions = 0",
            "log.partitions: must be between 1 and 1024, got 0",
        ),
        (
            "version = 1\n[log]\npartitions = 1025",
            "log.partitions: must be between 1 and 1024, got 1025",
        ),
        (
            "version = 1\n[log]\npartitions = -3",
            "log.partitions: must be between 1 and 1024, got -3",
        ),
        (
            "version = 1\n[log]\nmax_queued_records = 0",
            "log.max_queued_records: must be greater than 0, got 0",
        ),
    ];
    for (toml, expected) in cases {
        check_error(&with_source(toml), expected);
    }
}

#[test]
fn source_rules() {
    let cases: &[(&str, &str)] = &[
        ("version = 1", "sources: at least one source is required"),
        (
            "version = 1\nsources = []",
            "line 2: sources: at least one source is required",
        ),
        (
            "version = 1\n[[sources]]\nwrite_key = \"k\"",
            "sources[0].name: required",
        ),
        (
            "version = 1\n[[sources]]\nname = \"\"\nwrite_key = \"k\"",
            "sources[0].name: must not be empty",
        ),
        (
            "version = 1\n[[sources]]\nname = \"Web\"\nwrite_key = \"k\"",
            r#"line 3: sources[0].name: must contain only a-z, 0-9, '_' and '-', got "Web""#,
        ),
        (
            "version = 1\n[[sources]]\nname = \"web.site\"\nwrite_key = \"k\"",
            "sources[0].name: must contain only a-z, 0-9, '_' and '-'",
        ),
        (
            &format!(
                "version = 1\n[[sources]]\nname = \"{}\"\nwrite_key = \"k\"",
                "a".repeat(65)
            ),
            "sources[0].name: must be at most 64 characters, got 65",
        ),
        (
            "version = 1\n[[sources]]\nname = \"web\"",
            "sources[0].write_key: required",
        ),
        (
            "version = 1\n[[sources]]\nname = \"a\"\nwrite_key = \"k\"\n[[sources]]\nname = \"b\"\nwrite_key = \"\"",
            "line 7: sources[1].write_key: must not be empty",
        ),
        (
            "version = 1\n[[sources]]\nname = \"a\"\nwrite_key = \"user:pass\"",
            "sources[0].write_key: must not contain ':' (write keys are sent as the HTTP Basic username)",
        ),
        (
            "version = 1\n[[sources]]\nname = \"a\"\nwrite_key = \"key\\n\"",
            "sources[0].write_key: must not contain whitespace or control characters",
        ),
        (
            "version = 1\n[server]\nadmin_key = \"same\"\n[[sources]]\nname = \"a\"\nwrite_key = \"same\"",
            "sources[0].write_key: must differ from server.admin_key",
        ),
    ];
    for (toml, expected) in cases {
        check_error(toml, expected);
    }
}

#[test]
fn duplicates_point_at_the_first_occurrence() {
    let toml = r#"version = 1
[[sources]]
name = "web"
write_key = "wk_one"
[[sources]]
name = "app"
write_key = "wk_two"
[[sources]]
name = "web"
write_key = "wk_one"
"#;
    check_error(
        toml,
        r#"line 9: sources[2].name: duplicate source name "web" (also sources[0])"#,
    );
    check_error(
        toml,
        "line 10: sources[2].write_key: duplicate write key (also sources[0])",
    );
    let display = Config::from_toml_str(toml, &env).unwrap_err().to_string();
    assert!(!display.contains("wk_one"), "a key was printed:\n{display}");
}

#[test]
fn every_problem_is_reported_on_its_own_line() {
    let toml = r#"version = 1
[log]
partitions = 0
storage = "disk"
[[sources]]
name = "web"
write_key = ""
[[sources]]
name = "web"
write_key = "k"
"#;
    let error = Config::from_toml_str(toml, &env).unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"invalid configuration:
  line 4: log.storage: must be "embedded" or "memory", got "disk"
  line 3: log.partitions: must be between 1 and 1024, got 0
  line 7: sources[0].write_key: must not be empty
  line 9: sources[1].name: duplicate source name "web" (also sources[0])"#
    );
    assert_eq!(error.problems().len(), 4);
    assert_eq!(
        error.problems()[1],
        Problem {
            path: "log.partitions".to_owned(),
            line: Some(3),
            message: "must be between 1 and 1024, got 0".to_owned(),
        }
    );
}

#[test]
fn unknown_keys_name_their_path() {
    check_error(
        &with_source("version = 1\n[server]\nlistn = \"127.0.0.1:80\""),
        "line 3: server.listn: unknown field `listn`, expected one of `listen`, `data_dir`, `admin_key`",
    );
    check_error(
        "version = 1\n[[sources]]\nname = \"a\"\nwrite_key = \"k\"\n[[sources]]\nname = \"b\"\nwritekey = \"k\"",
        "line 7: sources[1].writekey: unknown field `writekey`, expected one of `name`, `write_key`, `unknown_events`",
    );
    check_error(
        &with_source("version = 1\n[destination]"),
        "line 2: destination: unknown field `destination`",
    );
}

#[test]
fn wrong_types_name_their_path() {
    check_error(
        &with_source("version = 1\n[log]\npartitions = \"8\""),
        r#"line 3: log.partitions: invalid type: string "8", expected an integer"#,
    );
    check_error(
        &with_source("version = 1\n[log]\nfsync = \"yes\""),
        "line 3: log.fsync: invalid type: string \"yes\"",
    );
    check_error(
        &with_source("version = \"1\""),
        "line 1: version: invalid type: string \"1\", expected an integer",
    );
    check_error(
        "version = 1\nserver = 5",
        "line 2: server: invalid type: integer `5`, expected a table",
    );
    check_error(
        "version = 1\nsources = 5",
        "line 2: sources: invalid type: integer `5`, expected an array",
    );
    check_error(
        "version = 1\n[[sources]]\nname = 5\nwrite_key = \"k\"",
        "line 3: sources[0].name: invalid type: integer `5`, expected a string",
    );
}

#[test]
fn syntax_errors_have_a_line() {
    check_error("version = 1\n[log]\nstorage = \n", "line 3: invalid TOML: ");
    check_error("version = 1\nversion = 1\n", "line 2: invalid TOML: ");
}

#[test]
fn interpolation() {
    // Set, escaped, mixed with text.
    let config = check_ok(
        r#"version = 1
        [server]
        data_dir = "/srv/$${HOME}/${WEB_WRITE_KEY}-$$"
        [[sources]]
        name = "web"
        write_key = "${WEB_WRITE_KEY}"
        "#,
    );
    assert_eq!(
        config.server.data_dir,
        PathBuf::from("/srv/${HOME}/wk_web_from_env-$$")
    );
    assert_eq!(config.sources[0].write_key.expose(), "wk_web_from_env");

    // Inside an array of tables, and an inline array of inline tables.
    let config = check_ok(
        r#"version = 1
        sources = [
            { name = "web", write_key = "${WEB_WRITE_KEY}" },
            { name = "app", write_key = "${APP_WRITE_KEY}" },
        ]
        "#,
    );
    assert_eq!(config.sources[1].write_key.expose(), "wk_app_from_env");

    // An empty variable is substituted, then validation rejects the empty key.
    check_error(
        "version = 1\n[[sources]]\nname = \"web\"\nwrite_key = \"${EMPTY}\"",
        "line 4: sources[0].write_key: must not be empty",
    );
}

#[test]
fn interpolation_errors_name_path_and_variable() {
    let toml = r#"version = 1
[server]
admin_key = "${UNSET_ADMIN}"
[[sources]]
name = "web"
write_key = "${WEB_WRITE_KEY}"
[[sources]]
name = "app"
write_key = "${UNSET_WRITE_KEY}"
"#;
    let error = Config::from_toml_str(toml, &env).unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid configuration:
  line 3: server.admin_key: environment variable UNSET_ADMIN is not set
  line 9: sources[1].write_key: environment variable UNSET_WRITE_KEY is not set"
    );
    check_error(
        &with_source("version = 1\n[server]\nadmin_key = \"${ADMIN_KEY\""),
        r#"line 3: server.admin_key: unterminated "${""#,
    );
    check_error(
        &with_source("version = 1\n[server]\nadmin_key = \"${ADMIN-KEY}\""),
        r#"server.admin_key: invalid environment variable name "ADMIN-KEY""#,
    );
}

#[test]
fn debug_output_hides_secrets() {
    let config = check_ok(
        r#"version = 1
        [server]
        admin_key = "ak_very_secret"
        [[sources]]
        name = "web"
        write_key = "wk_very_secret"
        "#,
    );
    let debug = format!("{config:?} {config:#?}");
    assert!(!debug.contains("very_secret"), "{debug}");
    assert!(debug.contains("***"), "{debug}");
}

#[test]
fn overrides_replace_one_field() {
    let config = check_ok(MINIMAL)
        .with_data_dir("/tmp/elsewhere")
        .with_listen("0.0.0.0:1".parse().unwrap());
    assert_eq!(config.server.data_dir, PathBuf::from("/tmp/elsewhere"));
    assert_eq!(
        config.server.listen,
        "0.0.0.0:1".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(config.ingest, IngestConfig::default());
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tributary.toml");

    let error = Config::load_with_env(&path, &env).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!("failed to read config file {}", path.display())
    );

    std::fs::write(&path, "version = 1\n").unwrap();
    let error = Config::load_with_env(&path, &env).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "invalid configuration in {}:\n  sources: at least one source is required",
            path.display()
        )
    );

    std::fs::write(&path, MINIMAL).unwrap();
    let loaded = Config::load(&path).unwrap();
    // The schema directory is found beside the file; everything else is as parsed.
    assert_eq!(loaded.schemas_dir, path.parent().unwrap().join("schemas"));
    let mut parsed = check_ok(MINIMAL);
    parsed.schemas_dir = loaded.schemas_dir.clone();
    parsed.templates_dir = loaded.templates_dir.clone();
    assert_eq!(format!("{loaded:?}"), format!("{parsed:?}"));
}

const SOURCE_HEAD: &str = "version = 1\n[[sources]]\nname = \"web\"\nwrite_key = \"wk_web\"\n";

#[test]
fn source_rules_default_to_accepting_everything_unchanged() {
    let config = check_ok(SOURCE_HEAD);
    assert_eq!(config.sources[0].rules, crate::SourceRules::default());
}

#[test]
fn source_rules_are_read() {
    let config = check_ok(&format!(
        "{SOURCE_HEAD}unknown_events = \"quarantine\"\nallowed_fields = [\"properties.*\", \"traits.email\"]\ndefault_region = \"fr\"\n[sources.normalize]\n\"traits.email\" = \"email\"\n\"traits.phone\" = {{ rule = \"phone\", on_error = \"drop\" }}\n"
    ));
    let rules = &config.sources[0].rules;
    assert_eq!(rules.unknown_events, crate::UnknownEvents::Quarantine);
    assert_eq!(
        rules.allowed_fields.as_deref(),
        Some(&["properties.*".to_owned(), "traits.email".to_owned()][..])
    );
    assert_eq!(rules.default_region.as_deref(), Some("FR"));
    assert_eq!(
        rules.normalize,
        vec![
            crate::FieldRule {
                field: "traits.email".to_owned(),
                rule: trib_normalize::Rule::Email,
                on_error: trib_normalize::OnError::Reject,
            },
            crate::FieldRule {
                field: "traits.phone".to_owned(),
                rule: trib_normalize::Rule::Phone,
                on_error: trib_normalize::OnError::Drop,
            },
        ]
    );
}

#[test]
fn source_rule_problems_name_their_path() {
    check_error(
        &format!("{SOURCE_HEAD}unknown_events = \"drop\"\n"),
        "sources[0].unknown_events: must be \"accept\" or \"quarantine\", got \"drop\"",
    );
    check_error(
        &format!("{SOURCE_HEAD}allowed_fields = [\"properties.*\", \"email\"]\n"),
        "sources[0].allowed_fields[1]: must start with",
    );
    check_error(
        &format!("{SOURCE_HEAD}allowed_fields = [\"properties.*.name\"]\n"),
        "sources[0].allowed_fields[0]: `*` may only be the whole last segment",
    );
    check_error(
        &format!("{SOURCE_HEAD}default_region = \"Atlantis\"\n"),
        "sources[0].default_region:",
    );
    check_error(
        &format!("{SOURCE_HEAD}[sources.normalize]\n\"traits.email\" = \"soundex\"\n"),
        "unknown normalization rule \"soundex\"",
    );
    check_error(
        &format!("{SOURCE_HEAD}[sources.normalize]\n\"traits.*\" = \"email\"\n"),
        "must name one field, without `*`",
    );
    check_error(
        &format!(
            "{SOURCE_HEAD}[sources.normalize]\n\"traits.phone\" = {{ rule = \"phone\", on_error = \"ignore\" }}\n"
        ),
        "on_error: must be \"reject\" or \"drop\", got \"ignore\"",
    );
}

/// The name and write key of each source, for comparisons.
fn source_keys(sources: &[SourceConfig]) -> Vec<(&str, &str)> {
    sources
        .iter()
        .map(|source| (source.name.as_str(), source.write_key.expose().as_str()))
        .collect()
}

#[test]
fn privacy_defaults_to_three_purposes_that_need_consent() {
    let config = check_ok(MINIMAL);
    let names: Vec<&str> = config
        .privacy
        .purposes
        .iter()
        .map(|purpose| purpose.name.as_str())
        .collect();
    assert_eq!(names, ["email_marketing", "personalization", "analytics"]);
    assert!(
        config
            .privacy
            .purposes
            .iter()
            .all(|purpose| purpose.legal_basis == trib_consent::LegalBasis::Consent)
    );
    assert_eq!(config.privacy.consent_event.name, "Consent Updated");
    assert_eq!(
        config.privacy.consent_event.status_path,
        "properties.status"
    );
}

#[test]
fn privacy_purposes_categories_and_consent_event_are_read() {
    let config = check_ok(&with_source(
        r#"
        version = 1
        [[privacy.purposes]]
        name = "email_marketing"
        legal_basis = "consent"
        [[privacy.purposes]]
        name = "receipts"
        legal_basis = "contract"
        basis_note = "terms of sale, section 4"
        [privacy.segment_categories]
        Advertising = "email_marketing"
        [privacy.consent_event]
        name = "Consent Changed"
        purpose = "properties.topic"
        "#,
    ));
    let privacy = &config.privacy;
    assert_eq!(privacy.purposes.len(), 2);
    let receipts = privacy.purpose("receipts").unwrap();
    assert_eq!(receipts.legal_basis, trib_consent::LegalBasis::Contract);
    assert_eq!(
        receipts.basis_note.as_deref(),
        Some("terms of sale, section 4")
    );
    assert_eq!(
        privacy
            .purpose_of_category("Advertising")
            .map(|purpose| purpose.name.as_str()),
        Some("email_marketing")
    );
    assert_eq!(privacy.consent_event.name, "Consent Changed");
    assert_eq!(privacy.consent_event.purpose_path, "properties.topic");
    assert_eq!(privacy.consent_event.status_path, "properties.status");
}

#[test]
fn privacy_problems_name_their_path() {
    let cases = [
        (
            "[[privacy.purposes]]\nname = \"receipts\"\nlegal_basis = \"contract\"\n",
            "privacy.purposes[0].basis_note: required with legal_basis = \"contract\"",
        ),
        (
            "[[privacy.purposes]]\nname = \"receipts\"\nlegal_basis = \"legitimate_interest\"\nbasis_note = \"  \"\n",
            "privacy.purposes[0].basis_note: required with legal_basis = \"legitimate_interest\"",
        ),
        (
            "[[privacy.purposes]]\nname = \"x\"\nlegal_basis = \"because\"\n",
            "privacy.purposes[0].legal_basis: unknown legal basis \"because\"",
        ),
        (
            "[[privacy.purposes]]\nname = \"x\"\n",
            "privacy.purposes[0].legal_basis: required",
        ),
        (
            "[[privacy.purposes]]\nname = \"Email Marketing\"\nlegal_basis = \"consent\"\n",
            "privacy.purposes[0].name: must be 1 to 64 of a-z, 0-9 and _",
        ),
        (
            "[[privacy.purposes]]\nname = \"a\"\nlegal_basis = \"consent\"\n[[privacy.purposes]]\nname = \"a\"\nlegal_basis = \"consent\"\n",
            "privacy.purposes[1].name: duplicate purpose \"a\" (also privacy.purposes[0])",
        ),
        (
            "[privacy]\npurposes = []\n",
            "privacy.purposes: at least one purpose is required",
        ),
        (
            "[privacy.segment_categories]\nAdvertising = \"ads\"\n",
            "privacy.segment_categories.Advertising: \"ads\" is not a declared purpose",
        ),
        (
            "[privacy.consent_event]\nstatus = \"status\"\n",
            "privacy.consent_event.status: must start with",
        ),
        (
            "[privacy.consent_event]\nname = \"\"\n",
            "privacy.consent_event.name: must not be empty",
        ),
        ("[privacy]\nregion = \"eu\"\n", "unknown field `region`"),
    ];
    for (table, expected) in cases {
        check_error(&with_source(&format!("version = 1\n{table}")), expected);
    }
}

#[test]
fn retention_is_off_by_default_with_the_default_classes() {
    let config = check_ok(MINIMAL);
    assert_eq!(config.retention, crate::RetentionConfig::default());
    assert!(!config.retention.is_enabled());
    assert_eq!(config.retention.interval, Duration::from_secs(3600));
    let names: Vec<&str> = config
        .retention
        .traits
        .classes
        .iter()
        .map(|class| class.name.as_str())
        .collect();
    assert_eq!(names, ["contact", "name"]);
}

#[test]
fn retention_maps_event_types_names_and_classes() {
    use trib_core::EventType;
    let config = check_ok(&with_source(
        r#"
        version = 1
        [retention]
        interval = "10m"
        [retention.events]
        "Order Completed" = "30d"
        page = "7d"
        default = "365d"
        [retention.traits]
        contact = "90d"
        device = "1d"
        [retention.classes]
        device = ["device_id", "phone"]
        "#,
    ));
    let retention = &config.retention;
    let day = Duration::from_secs(86_400);
    assert!(retention.is_enabled());
    assert_eq!(retention.interval, Duration::from_secs(600));
    assert_eq!(retention.events.track_events["Order Completed"], 30 * day);
    assert_eq!(retention.events.call_types[&EventType::Page], 7 * day);
    assert_eq!(retention.events.default, Some(365 * day));
    let ttl = |kind, name| retention.events.ttl_for(kind, name).map(|t| t.label);
    assert_eq!(ttl(EventType::Screen, None), Some("default"));
    // A configured class takes a trait from a default class.
    assert_eq!(retention.traits.class_of("phone"), Some(("device", day)));
    assert_eq!(
        retention.traits.class_of("email"),
        Some(("contact", 90 * day))
    );
    assert_eq!(retention.traits.class_of("first_name"), None);
}

#[test]
fn retention_errors_name_the_toml_path() {
    check_error(
        &with_source("version = 1\n[retention]\ninterval = \"0s\"\n"),
        "line 3: retention.interval: must be positive",
    );
    check_error(
        &with_source("version = 1\n[retention.events]\n\"Order Completed\" = \"soon\"\n"),
        "retention.events.\"Order Completed\": must be a duration",
    );
    check_error(
        &with_source("version = 1\n[retention.events]\ntrack = \"1d\"\n"),
        "retention.events.track: name the track event",
    );
    check_error(
        &with_source("version = 1\n[retention.traits]\nhealth = \"1d\"\n"),
        "retention.traits.health: unknown class \"health\"",
    );
    check_error(
        &with_source("version = 1\n[retention.traits]\ncontact = \"-1d\"\n"),
        "retention.traits.contact: must be positive",
    );
    check_error(
        &with_source("version = 1\n[retention.classes]\na = [\"plan\"]\nb = [\"plan\"]\n"),
        "retention.classes.b[0]: trait \"plan\" is already in class \"a\"",
    );
    check_error(
        &with_source("version = 1\n[retention]\nkeep = \"1d\"\n"),
        "keep",
    );
}

#[test]
fn destinations_parse_with_defaults_credentials_from_env_and_field_sources() {
    let config = check_ok(&with_source(
        r#"
version = 1

[[destinations]]
name = "newsletter"
type = "mailchimp"
api_key = "${ADMIN_KEY}"
list_id = "abc123"
base_url = "http://127.0.0.1:4010"
mode = "mirror"
resync_interval = "7d"

[destinations.fields]
FNAME = "firstName"
CITY = "traits.address.city"
PHONE = "identifiers.phone"
"#,
    ));
    let [destination] = config.destinations.as_slice() else {
        panic!("one destination expected: {:?}", config.destinations)
    };
    assert_eq!(destination.kind, DestinationType::Mailchimp);
    assert_eq!(destination.credential.expose(), "ak_from_env");
    assert_eq!(destination.purpose, "email_marketing");
    assert_eq!(destination.mode, SyncMode::Mirror);
    assert_eq!(destination.batch_window, Duration::from_millis(250));
    assert_eq!(
        destination.resync_interval,
        Some(Duration::from_secs(7 * 24 * 3600))
    );
    assert_eq!(
        destination.fields,
        vec![
            (
                "CITY".to_owned(),
                FieldSource::Trait("address.city".to_owned())
            ),
            (
                "FNAME".to_owned(),
                FieldSource::Trait("firstName".to_owned())
            ),
            (
                "PHONE".to_owned(),
                FieldSource::Identifier("phone".to_owned())
            ),
        ]
    );
}

#[test]
fn destination_mistakes_are_reported_with_their_paths() {
    let base = "version = 1\n";
    for (entry, expected) in [
        (
            "type = \"mailchimp\"\nname = \"m\"\napi_key = \"k\"",
            "destinations[0].list_id: required",
        ),
        (
            "type = \"hubspot\"\nname = \"h\"",
            "destinations[0].token: required for type \"hubspot\"",
        ),
        (
            "type = \"hubspot\"\nname = \"h\"\ntoken = \"t\"\nlist_id = \"x\"",
            "destinations[0].list_id: not a setting of type \"hubspot\"",
        ),
        (
            "type = \"klaviyo\"\nname = \"k\"",
            "destinations[0].type: unknown type \"klaviyo\"",
        ),
        (
            "type = \"webhook\"\nname = \"w\"\nsecret = \"s\"\nurl = \"ftp://x\"",
            "destinations[0].url: must be an http:// or https:// URL",
        ),
        (
            "type = \"sendgrid\"\nname = \"s\"\napi_key = \"k\"\npurpose = \"sales\"",
            "destinations[0].purpose: \"sales\" is not a declared purpose",
        ),
        (
            "type = \"sendgrid\"\nname = \"s p\"\napi_key = \"k\"",
            "destinations[0].name: must be 1 to 64",
        ),
        (
            "type = \"sendgrid\"\nname = \"s\"\napi_key = \"k\"\nmode = \"sync\"",
            "destinations[0].mode: unknown mode",
        ),
        (
            "type = \"sendgrid\"\nname = \"s\"\napi_key = \"k\"\nbatch_window = \"soon\"",
            "destinations[0].batch_window: must be a duration",
        ),
        (
            "type = \"sendgrid\"\nname = \"s\"\napi_key = \"k\"\nresync_interval = \"weekly\"",
            "destinations[0].resync_interval: must be a duration",
        ),
        (
            "type = \"sendgrid\"\nname = \"s\"\napi_key = \"k\"\n[destinations.fields]\nX = \"identifiers.\"",
            "destinations[0].fields.X: name an identifier type",
        ),
    ] {
        check_error(
            &with_source(&format!("{base}\n[[destinations]]\n{entry}\n")),
            expected,
        );
    }
}

#[test]
fn render_settings_and_purpose_fields() {
    let config = check_ok(&format!(
        "{SOURCE_HEAD}[[privacy.purposes]]\nname = \"receipts\"\nlegal_basis = \"contract\"\nbasis_note = \"terms\"\nfields = [\"firstName\", \"events.order_completed\"]\n\
         [render]\nmissing_default = \"warning\"\n[render.seed_list]\nto = [\"qa@example.com\"]\nfrom = \"qa@example.com\"\n\
         [render.smtp]\nhost = \"smtp.example.com\"\nsecurity = \"tls\"\nusername = \"qa\"\npassword = \"pw\"\n"
    ));
    assert_eq!(
        config.render.missing_default,
        crate::MissingDefault::Warning
    );
    assert_eq!(
        config.render.purpose_fields["receipts"],
        ["firstName", "events.order_completed"]
    );
    let smtp = config.render.smtp.expect("smtp");
    assert_eq!((smtp.port, smtp.security), (465, crate::SmtpSecurity::Tls));
    assert_eq!(config.render.seed_list, ["qa@example.com"]);
    check_error(
        &format!("{SOURCE_HEAD}[render]\nmissing_default = \"maybe\"\n"),
        "render.missing_default",
    );
    check_error(
        &format!("{SOURCE_HEAD}[render.smtp]\nhost = \"h\"\n"),
        "render.seed_list",
    );
}
