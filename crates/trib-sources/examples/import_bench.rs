//! Imports a CRM CSV made by `gen_crm_csv` and prints the throughput.
//!
//! ```text
//! cargo run --release -p trib-sources --example gen_crm_csv -- 1000000 /tmp/crm.csv
//! cargo run --release -p trib-sources --example import_bench -- /tmp/crm.csv memory
//! cargo run --release -p trib-sources --example import_bench -- /tmp/crm.csv embedded [DIR]
//! ```
//!
//! `memory` appends to `MemoryLog`s (which keep every record: memory grows with the file);
//! `embedded` to `EmbeddedLog`s in DIR (default: a temporary directory), with fsync. The
//! mapping validates and normalizes every column, as a real CRM import would. Environment:
//! `IMPORT_WORKERS`, `IMPORT_BATCH_ROWS` (see `ImportOptions`), `IMPORT_NO_DEDUP=1` (log
//! without its deduplication index).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use trib_core::OpenGate;
use trib_log::{EmbeddedLog, EmbeddedLogOptions, EventLog, MemoryLog};
use trib_sources::import::{ImportMapping, ImportOptions, import_file};

const MAPPING: &str = r#"
kind = "identify"

[[columns]]
column = "id"
target = "user_id"
required = true

[[columns]]
column = "email"
target = "email"
normalize = "email"
on_error = "drop"

[[columns]]
column = "first_name"
target = "traits.first_name"
normalize = "name"

[[columns]]
column = "last_name"
target = "traits.last_name"
normalize = "name"

[[columns]]
column = "phone"
target = "phone"
normalize = "phone"
on_error = "drop"

[[columns]]
column = "country"
target = "traits.country"
normalize = "country"
on_error = "drop"

[[columns]]
column = "plan"
target = "traits.plan"

[[columns]]
column = "created_at"
target = "traits.created_at"
type = "timestamp"

[[columns]]
column = "lifetime_value"
target = "traits.lifetime_value"
type = "number"

[[columns]]
column = "address"
target = "traits.address.street"
normalize = "trim"

[[columns]]
column = "marketing_opt_in"
target = "traits.marketing_opt_in"
type = "boolean"
"#;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(file), Some(backend)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: import_bench FILE memory|embedded [DIR]");
        return ExitCode::FAILURE;
    };
    match run(Path::new(file), backend, args.get(3).map(PathBuf::from)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("import_bench: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    file: &Path,
    backend: &str,
    dir: Option<PathBuf>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mapping: ImportMapping = toml::from_str(MAPPING)?;
    let temporary = tempfile::tempdir()?;
    let dir = dir.unwrap_or_else(|| temporary.path().to_path_buf());
    let (events, quarantine): (Box<dyn EventLog>, Box<dyn EventLog>) = match backend {
        "memory" => (Box::new(MemoryLog::new(8)), Box::new(MemoryLog::new(1))),
        "embedded" => {
            let mut quarantine_options = EmbeddedLogOptions::new(dir.join("quarantine"));
            quarantine_options.partitions = 1;
            (
                Box::new(EmbeddedLog::open(EmbeddedLogOptions::new(
                    dir.join("events"),
                ))?),
                Box::new(EmbeddedLog::open(quarantine_options)?),
            )
        }
        other => return Err(format!("unknown backend {other:?}").into()),
    };
    let normalize = trib_normalize::Options {
        default_region: Some("US".to_owned()),
        ..trib_normalize::Options::default()
    };
    let state_dir = dir.join("imports");
    let mut options = ImportOptions::new(
        "crm",
        &mapping,
        &normalize,
        Arc::new(OpenGate),
        events.as_ref(),
        quarantine.as_ref(),
        &state_dir,
    );
    if let Ok(workers) = std::env::var("IMPORT_WORKERS") {
        options.workers = workers.parse()?;
    }
    if let Ok(batch_rows) = std::env::var("IMPORT_BATCH_ROWS") {
        options.batch_rows = batch_rows.parse()?;
    }
    let started = Instant::now();
    let report = import_file(&options, file).await?;
    let elapsed = started.elapsed();
    events.close().await?;
    quarantine.close().await?;
    eprintln!("{}", serde_json::to_string_pretty(&report)?);
    eprintln!(
        "{backend}: {} rows in {:.2} s = {:.0} rows/s",
        report.rows_read,
        elapsed.as_secs_f64(),
        report.rows_read as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
