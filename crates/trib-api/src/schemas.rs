//! The schema registry over HTTP: `GET /v1/schemas` lists every version, `GET
//! /v1/schemas/events/{name}` and `GET /v1/schemas/traits` show one (the newest unless
//! `?version=`), and `POST /v1/schemas` publishes a document after the compatibility check
//! (`?dry_run=true` only checks). Reads need `schemas:read`, publishing `schemas:write`.
//!
//! A published schema applies to the next event: the gates read the same shared registry.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use trib_schema::{PublishError, SchemaVer, Subject};

use crate::{ApiError, AppState, body};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VersionQuery {
    version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishQuery {
    #[serde(default)]
    dry_run: bool,
}

pub(crate) async fn list(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let registry = read(&state)?;
    let schemas: Vec<Value> = registry
        .list()
        .map(|info| json!({"subject": info.subject, "version": info.version.to_string()}))
        .collect();
    Ok(Json(json!({ "schemas": schemas })))
}

pub(crate) async fn show_event(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(query): Query<VersionQuery>,
) -> Result<Json<Value>, ApiError> {
    show(&state, &Subject::Event(name), query.version.as_deref())
}

pub(crate) async fn show_traits(
    State(state): State<Arc<AppState>>,
    Query(query): Query<VersionQuery>,
) -> Result<Json<Value>, ApiError> {
    show(&state, &Subject::Traits, query.version.as_deref())
}

fn show(
    state: &AppState,
    subject: &Subject,
    version: Option<&str>,
) -> Result<Json<Value>, ApiError> {
    let version = version
        .map(|text| {
            text.parse::<SchemaVer>().map_err(|error| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_version",
                    format!("version: {error}"),
                )
            })
        })
        .transpose()?;
    let registry = read(state)?;
    let schema = registry.get(subject, version.as_ref()).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "schema_not_found",
            "no such schema or version",
        )
    })?;
    Ok(Json(schema.document().clone()))
}

pub(crate) async fn publish(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<PublishQuery>,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let bytes = body::read_body(
        &headers,
        body,
        usize::try_from(trib_schema::MAX_DOCUMENT_BYTES).unwrap_or(usize::MAX),
    )
    .await?;
    let document: Value = serde_json::from_slice(&bytes).map_err(|error| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not JSON: {error}"),
        )
    })?;
    let plan = {
        let mut registry = state.gates.registry().write().map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "internal error",
            )
        })?;
        if query.dry_run {
            registry.check_publish_document(&document)
        } else {
            registry.publish_document(&document)
        }
    }
    .map_err(publish_error)?;
    let status = if query.dry_run {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(json!({ "dry_run": query.dry_run, "plan": plan })),
    ))
}

fn publish_error(error: PublishError) -> ApiError {
    match &error {
        PublishError::Incompatible { .. } => ApiError::new(
            StatusCode::CONFLICT,
            "incompatible_schema",
            error.to_string(),
        ),
        PublishError::Immutable { .. } => {
            ApiError::new(StatusCode::CONFLICT, "version_exists", error.to_string())
        }
        PublishError::Schema(trib_schema::SchemaError::Io { .. }) => ApiError::internal(&error),
        _ => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_schema",
            error.to_string(),
        ),
    }
}

fn read(
    state: &AppState,
) -> Result<std::sync::RwLockReadGuard<'_, trib_schema::Registry>, ApiError> {
    state.gates.registry().read().map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error",
        )
    })
}
