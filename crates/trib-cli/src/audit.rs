//! `tributary audit verify|export`: checks the audit log of a data directory and exports it for
//! auditors.
//!
//! Both read the files (`<data_dir>/audit/` with `<data_dir>/audit.key`) and may run while the
//! server appends. `export`'s last line carries the head (seq and mac of the last entry): keep
//! it outside the data directory (run it on a schedule) so that a later rewrite of the log by
//! someone holding the key shows up as a different mac at that seq.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use trib_audit::AuditKey;

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Checks the whole chain; exits 1 naming the first altered, removed, inserted or
    /// reordered entry (or a removed tail), 0 when intact.
    Verify {
        #[command(flatten)]
        location: Location,
    },
    /// Writes the verified entries (NDJSON), then a summary line with the head and the
    /// verification result.
    Export {
        #[command(flatten)]
        location: Location,
        /// Only entries at or after this time (RFC 3339).
        #[arg(long)]
        from: Option<jiff::Timestamp>,
        /// Only entries before this time (RFC 3339).
        #[arg(long)]
        to: Option<jiff::Timestamp>,
        /// The file to write (standard output when absent).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Where the audit log is: the configuration's data directory, or a data directory.
#[derive(Debug, Args)]
pub(crate) struct Location {
    /// The configuration file whose `server.data_dir` holds the audit log.
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
}

pub(crate) fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify { location } => {
            let data_dir = location.data_dir()?;
            let key = AuditKey::load(&data_dir)?;
            let dir = data_dir.join(trib_audit::AUDIT_DIR);
            let report = trib_audit::verify(&dir, &key)
                .with_context(|| format!("failed to read the audit log in {}", dir.display()))?;
            if let Some((seq, reason)) = &report.first_bad {
                bail!(
                    "the audit log {} is not intact at seq {seq}: {reason} ({} entries verified before it)",
                    dir.display(),
                    report.entries
                );
            }
            let head = report
                .head
                .as_ref()
                .map(|head| format!("head seq {} mac {}", head.seq, head.mac))
                .unwrap_or_else(|| "no head yet".to_owned());
            println!(
                "audit log {}: intact, {} entries, {head}",
                dir.display(),
                report.entries
            );
            if !report.recoveries.is_empty() {
                println!(
                    "recovered torn last lines after crashes at seq {:?} (see the `recover` entries)",
                    report.recoveries
                );
            }
            Ok(())
        }
        AuditCommand::Export {
            location,
            from,
            to,
            out,
        } => {
            let data_dir = location.data_dir()?;
            let key = AuditKey::load(&data_dir)?;
            let dir = data_dir.join(trib_audit::AUDIT_DIR);
            let mut writer: Box<dyn Write> = match &out {
                Some(path) => {
                    Box::new(BufWriter::new(File::create(path).with_context(|| {
                        format!("failed to create {}", path.display())
                    })?))
                }
                None => Box::new(BufWriter::new(std::io::stdout().lock())),
            };
            let summary = trib_audit::export(&dir, &key, from, to, &mut writer)?;
            drop(writer);
            if let Some(path) = &out {
                eprintln!(
                    "exported {} entries to {}",
                    summary.exported,
                    path.display()
                );
            }
            if let Some((seq, reason)) = &summary.report.first_bad {
                bail!("the audit log is not intact at seq {seq}: {reason}");
            }
            Ok(())
        }
    }
}
