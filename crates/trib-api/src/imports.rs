//! `POST /v1/imports?source=NAME&filename=FILE`: the file import of `tributary import`, over
//! HTTP for automation. The body (CSV or NDJSON, gzip or not) is streamed to disk under
//! `<data_dir>/imports/uploads`, imported in the background with the source's
//! `[sources.import]` mapping, and the answer is `202` with a job id; `GET /v1/imports/{id}`
//! gives the job's state and, when done, its reconciliation report.
//!
//! Jobs are kept in memory: after a restart their reports are gone, but the import's ledger
//! and checkpoints are not, so posting the same file again resumes or reports it as imported.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use trib_sources::import::{ImportMapping, ImportOptions, import_file};

use crate::{ApiError, AppState};

/// The import side of the API state.
pub(crate) struct Imports {
    /// `<data_dir>/imports`: the engine's ledger and checkpoints, and uploads.
    pub(crate) dir: PathBuf,
    /// Each source's mapping and normalization options (also used to replay quarantined rows).
    pub(crate) mappings: HashMap<String, (ImportMapping, trib_normalize::Options)>,
    jobs: Mutex<HashMap<String, Job>>,
}

impl Imports {
    pub(crate) fn new(
        dir: PathBuf,
        mappings: HashMap<String, (ImportMapping, trib_normalize::Options)>,
    ) -> Imports {
        Imports {
            dir,
            mappings,
            jobs: Mutex::default(),
        }
    }

    fn set(&self, id: &str, job: Job) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.insert(id.to_owned(), job);
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum Job {
    Running {
        source: String,
        file: String,
    },
    Done {
        source: String,
        file: String,
        report: Value,
    },
    Failed {
        source: String,
        file: String,
        error: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportQuery {
    source: String,
    /// The file's name, whose extension tells the format when the mapping does not.
    filename: Option<String>,
}

pub(crate) async fn start(
    State(state): State<Arc<AppState>>,
    Query(query): Query<ImportQuery>,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if !state.imports.mappings.contains_key(&query.source) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_import_source",
            format!(
                "no source named `{}` has a [sources.import] mapping",
                query.source
            ),
        ));
    }
    let id = uuid::Uuid::now_v7().simple().to_string();
    let filename = sanitize(query.filename.as_deref().unwrap_or("upload.csv"));
    let uploads = state.imports.dir.join("uploads");
    tokio::fs::create_dir_all(&uploads)
        .await
        .map_err(|error| ApiError::internal(&error))?;
    let path = uploads.join(format!("{id}-{filename}"));
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|error| ApiError::internal(&error))?;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                format!("failed to read the upload: {error}"),
            )
        })?;
        if let Some(data) = frame.data_ref() {
            file.write_all(data)
                .await
                .map_err(|error| ApiError::internal(&error))?;
        }
    }
    file.sync_all()
        .await
        .map_err(|error| ApiError::internal(&error))?;
    drop(file);

    state.imports.set(
        &id,
        Job::Running {
            source: query.source.clone(),
            file: filename.clone(),
        },
    );
    let job_state = state.clone();
    let job_id = id.clone();
    tokio::spawn(async move {
        let outcome = run(&job_state, &query.source, &path).await;
        let job = match outcome {
            Ok(report) => Job::Done {
                source: query.source,
                file: filename,
                report,
            },
            Err(error) => Job::Failed {
                source: query.source,
                file: filename,
                error,
            },
        };
        job_state.imports.set(&job_id, job);
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"job_id": id, "status": "running", "status_url": format!("/v1/imports/{id}")})),
    ))
}

pub(crate) async fn status(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = state
        .imports
        .jobs
        .lock()
        .ok()
        .and_then(|jobs| jobs.get(&id).cloned());
    match job {
        Some(job) => Ok(Json(json!({"job_id": id, "job": job}))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_import_job",
            format!("no import job `{id}`"),
        )),
    }
}

/// Runs one import to the end and returns its report as JSON.
async fn run(state: &AppState, source: &str, path: &std::path::Path) -> Result<Value, String> {
    let Some((mapping, normalize)) = state.imports.mappings.get(source) else {
        return Err(format!("source `{source}` has no import mapping"));
    };
    let Some(gate) = state.gates.get(source) else {
        return Err(format!("source `{source}` is not configured"));
    };
    let gate: Arc<dyn trib_core::EventGate> = gate.clone();
    let options = ImportOptions::new(
        source,
        mapping,
        normalize,
        gate,
        state.events.as_ref(),
        state.quarantine.as_ref(),
        &state.imports.dir,
    );
    let report = import_file(&options, path)
        .await
        .map_err(|error| error.to_string())?;
    serde_json::to_value(&report).map_err(|error| error.to_string())
}

/// Keeps a file name's letters, digits, dots, dashes and underscores, so it is safe in a path.
fn sanitize(name: &str) -> String {
    let cleaned: String = name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or("upload")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    if cleaned.trim_matches('.').is_empty() {
        "upload.csv".to_owned()
    } else {
        cleaned
    }
}
