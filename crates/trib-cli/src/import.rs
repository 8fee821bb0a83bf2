//! `tributary import --source NAME FILE...`: CSV and NDJSON files into the event log, with the
//! source's `[sources.import]` mapping, a progress bar, and a reconciliation report per file.
//!
//! Without `--url` the files are imported straight into the data directory, which must not be
//! in use by a running server (the event log allows one process at a time); with `--url` they
//! are uploaded to a running server's `POST /v1/imports`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use trib_sources::import::{ImportOptions, ImportReport, Progress, import_file};

use crate::serve::{load_config, open_at_rest, open_log};

/// Arguments of `tributary import`.
#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// The source whose `[sources.import]` mapping reads the files.
    #[arg(long)]
    source: String,
    /// CSV or NDJSON files, gzip-compressed or not.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The configuration file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The data directory (overrides `server.data_dir`).
    #[arg(long, env = "TRIBUTARY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Upload to this running server instead of writing the data directory.
    #[arg(long)]
    url: Option<String>,
    /// With --url: the server's admin key, or an API key with `imports:write`.
    #[arg(long, env = "TRIBUTARY_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// Import a file again although an earlier import of it completed.
    #[arg(long)]
    reimport: bool,
}

pub(crate) async fn run(args: ImportArgs) -> anyhow::Result<()> {
    if let Some(url) = &args.url {
        return upload(&args, url).await;
    }
    let config = load_config(args.config.as_deref(), args.data_dir.as_deref(), None)?;
    let Some(source) = config
        .sources
        .iter()
        .find(|source| source.name == args.source)
    else {
        bail!("no source named `{}` in the configuration", args.source);
    };
    let Some(mapping) = &source.import else {
        bail!("source `{}` has no [sources.import] mapping", args.source);
    };
    let data_dir = &config.server.data_dir;
    let events =
        open_log(&config, &data_dir.join("events"), config.log.partitions).map_err(in_use_hint)?;
    let quarantine = open_log(&config, &data_dir.join("quarantine"), 1).map_err(in_use_hint)?;
    // Rows are sealed exactly as the server seals events (same keys, same log names).
    let at_rest = open_at_rest(data_dir)?;
    let events = at_rest.seal_log(
        events,
        "events",
        Some(trib_identity::extract::grants_consent),
    );
    let quarantine = at_rest.seal_log(quarantine, "quarantine", None);
    // Writing personal data straight into the data directory is recorded like the API's
    // writes, with the user running the command as the actor.
    let audit = trib_audit::AuditLog::open_in_data_dir(data_dir).with_context(|| {
        format!(
            "failed to open the audit log in {}",
            data_dir.join(trib_audit::AUDIT_DIR).display()
        )
    })?;
    let actor = trib_audit::Actor::current_cli_user();
    let registry = trib_schema::Registry::open(&config.schemas_dir).with_context(|| {
        format!(
            "failed to load the schemas in {}",
            config.schemas_dir.display()
        )
    })?;
    let gates = trib_pipeline::Gates::new(&config, Arc::new(std::sync::RwLock::new(registry)));
    let Some(gate) = gates.get(&args.source) else {
        bail!("source `{}` has no gate", args.source);
    };
    let normalize = trib_normalize::Options {
        default_region: source.rules.default_region.clone(),
        ..trib_normalize::Options::default()
    };
    let state_dir = data_dir.join("imports");
    let mut failed = 0;
    for file in &args.files {
        let bar = progress_bar(file);
        let on_progress = |progress: &Progress| {
            if let Some(total) = progress.total_bytes {
                bar.set_length(total);
            }
            bar.set_position(progress.bytes);
            let rows_per_second = progress.rows as f64 / bar.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!(
                "{} rows, {rows_per_second:.0} rows/s",
                progress.rows
            ));
        };
        let mut options = ImportOptions::new(
            &args.source,
            mapping,
            &normalize,
            gate.clone(),
            events.as_ref(),
            quarantine.as_ref(),
            &state_dir,
        );
        options.progress = Some(&on_progress);
        options.reimport = args.reimport;
        let result = import_file(&options, file).await;
        bar.finish_and_clear();
        audit
            .append(vec![trib_audit::AuditRecord {
                actor: actor.clone(),
                action: trib_audit::Action::Write,
                purpose: trib_audit::Purpose::OPERATIONS,
                resource: trib_audit::Resource::new("tributary import"),
                subject: None,
                outcome: if result.is_ok() {
                    trib_audit::Outcome::Ok
                } else {
                    trib_audit::Outcome::Failed
                },
            }])
            .await
            .context("failed to record the import in the audit log")?;
        match result {
            Ok(report) => print_report(&report),
            Err(error) => {
                failed += 1;
                eprintln!("{}: {error}", file.display());
            }
        }
    }
    events.close().await?;
    quarantine.close().await?;
    tokio::task::spawn_blocking(move || audit.close()).await?;
    if failed > 0 {
        bail!("{failed} of {} files failed to import", args.files.len());
    }
    Ok(())
}

fn in_use_hint(error: anyhow::Error) -> anyhow::Error {
    let in_use = error.chain().any(|cause| {
        matches!(
            cause.downcast_ref(),
            Some(trib_log::LogError::DirectoryInUse { .. })
        )
    });
    if in_use {
        error.context("a running server owns the data directory: import through it with --url http://HOST:PORT")
    } else {
        error
    }
}

fn progress_bar(file: &Path) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    let style = indicatif::ProgressStyle::with_template(
        "{prefix} [{bar:30}] {bytes}/{total_bytes} {msg}, ETA {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(file.display().to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn print_report(report: &ImportReport) {
    let seconds = report.elapsed.as_secs_f64().max(1e-9);
    println!(
        "{}: {} rows read = {} accepted + {} quarantined + {} duplicates skipped ({:.0} rows/s{}{})",
        report.file,
        report.rows_read,
        report.accepted,
        report.quarantined,
        report.duplicates_skipped,
        report.rows_read as f64 / seconds,
        if report.already_imported {
            ", already imported"
        } else {
            ""
        },
        report
            .resumed_from_row
            .map(|row| format!(", resumed at row {row}"))
            .unwrap_or_default(),
    );
    println!("  sha256 {}", report.sha256);
    for (reason, count) in &report.by_reason {
        println!("  quarantined {reason}: {count}");
    }
    for (field, count) in &report.fields_dropped {
        println!("  dropped {field}: {count}");
    }
}

async fn upload(args: &ImportArgs, url: &str) -> anyhow::Result<()> {
    let Some(admin_key) = &args.admin_key else {
        bail!("--url needs the server's admin key (--admin-key or TRIBUTARY_ADMIN_KEY)");
    };
    let client = reqwest::Client::new();
    let base = url.trim_end_matches('/');
    for file in &args.files {
        let name = file
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let body = tokio::fs::read(file)
            .await
            .with_context(|| format!("failed to read {}", file.display()))?;
        let response = client
            .post(format!("{base}/v1/imports"))
            .bearer_auth(admin_key)
            .query(&[
                ("source", args.source.as_str()),
                ("filename", name.as_str()),
            ])
            .body(body)
            .send()
            .await
            .with_context(|| format!("failed to reach {base}"))?;
        let status = response.status();
        let answer: serde_json::Value = response.json().await?;
        if !status.is_success() {
            bail!("{base} refused {}: {answer}", file.display());
        }
        let job = answer["job_id"].as_str().unwrap_or_default().to_owned();
        loop {
            let state: serde_json::Value = client
                .get(format!("{base}/v1/imports/{job}"))
                .bearer_auth(admin_key)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            match state["job"]["status"].as_str() {
                Some("running") => tokio::time::sleep(Duration::from_millis(250)).await,
                Some("done") => {
                    println!(
                        "{}: {}",
                        file.display(),
                        serde_json::to_string_pretty(&state["job"]["report"])?
                    );
                    break;
                }
                _ => bail!("{}: import failed: {}", file.display(), state["job"]),
            }
        }
    }
    Ok(())
}
