//! Rendering through the API: `POST /v1/render` (scope `templates:render`) renders a template
//! for one person, or a render matrix over a sample of stored profiles; `POST
//! /v1/render/send` (scope `templates:send`) renders for one person and sends the email to the
//! internal seed list (`[render.seed_list]` over `[render.smtp]`); `PUT /v1/templates/{name}`
//! (scope `templates:write`) saves a template after the static check.
//!
//! A person's data reaches a template only through [`trib_consent::Gatekeeper::permit`] for the
//! template's purpose: a refusal answers 403 `consent_denied` (one person) or a `denied` row
//! (the matrix). Every person rendered is recorded in the audit log with the template's
//! purpose and their profile id, before the response leaves; a test send is recorded as such
//! (resource `/v1/render/send`) before the message leaves, and once more with outcome
//! `failed` when the SMTP server refuses it. The route's own entry (purpose `operations`)
//! records the request.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use trib_audit::{Action, Actor, AuditRecord, Outcome, ProfileRef, Purpose, Resource};
use trib_identity::profile::Profile;
use trib_identity::view::{self, Found};
use trib_render::{
    CompiledTemplate, Compiler, RenderInput, RenderReport, RenderedEmail, SmtpSettings, Templates,
};
use trib_store::{ChangeKind, ProfileId, ProfileStore};

use crate::keys::Principal;
use crate::privacy::{IdentifierBody, blocking, invalid_body, parse_body};
use crate::profiles::{parse_id, profiles};
use crate::{ApiError, AppState};

/// The most recent events a render reads about a person.
const EVENTS_PER_PERSON: usize = 50;
/// The largest render matrix.
const MAX_SAMPLE: usize = 100;
/// The audit resource of one person's render.
const RENDER_RESOURCE: &str = "/v1/render";
/// The audit resource of one person's test send.
const SEND_RESOURCE: &str = "/v1/render/send";

/// What the render routes need: the compiled templates and how to compile more, and the
/// gatekeeper that permits a person's data for a purpose.
pub struct RenderState {
    pub compiler: Compiler,
    pub templates: RwLock<Templates>,
    /// Where `PUT /v1/templates/{name}` saves templates; `None` keeps them in memory only.
    pub templates_dir: Option<PathBuf>,
    pub gatekeeper: trib_consent::Gatekeeper,
    /// Where test sends go; `None` makes `POST /v1/render/send` answer 503 `send_disabled`.
    pub seeds: Option<SeedSend>,
}

/// The internal seed list of test sends (`[render.seed_list]`) and the SMTP server that
/// carries them (`[render.smtp]`). Never a person's own address.
#[derive(Debug, Clone)]
pub struct SeedSend {
    pub to: Vec<String>,
    pub smtp: SmtpSettings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RenderBody {
    template: String,
    profile_id: Option<String>,
    identifier: Option<IdentifierBody>,
    /// Render for this many stored profiles, sparse and rich, instead of one person.
    sample: Option<usize>,
}

fn render_state(state: &AppState) -> Result<&RenderState, ApiError> {
    state.render.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "render_disabled",
            "this server runs without templates or a consent ledger",
        )
    })
}

fn template(render: &RenderState, name: &str) -> Result<Arc<CompiledTemplate>, ApiError> {
    let templates = render.templates.read().map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error",
        )
    })?;
    templates.get(name).map_err(|error| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "template_not_found",
            error.to_string(),
        )
    })
}

/// `POST /v1/render`: `{"template", "profile_id" | "identifier"}` answers the subject,
/// preheader, HTML and text for that person with the fallbacks that fired, the URL values
/// that were blocked (`blocked_urls`: part, attribute, variable) and the template's check
/// warnings; `{"template", "sample": N}` answers a matrix over N stored profiles.
pub(crate) async fn render(
    State(state): State<Arc<AppState>>,
    principal: Option<Extension<Principal>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let render = render_state(&state)?;
    let body: RenderBody = parse_body(&body, "render")?;
    let compiled = template(render, &body.template)?;
    let actor = actor_of(principal.as_deref())?;
    if let Some(sample) = body.sample {
        if body.profile_id.is_some() || body.identifier.is_some() {
            return Err(invalid_body("give `sample` or a person, not both"));
        }
        if sample == 0 || sample > MAX_SAMPLE {
            return Err(invalid_body(format!("sample: between 1 and {MAX_SAMPLE}")));
        }
        return matrix(&state, compiled, sample, actor).await;
    }
    let (email, report) = render_person(
        &state,
        &compiled,
        body.profile_id,
        body.identifier,
        &actor,
        RENDER_RESOURCE,
    )
    .await?;
    Ok(Json(preview(&email, &report, &compiled)).into_response())
}

/// `POST /v1/render/send`: `{"template", "profile_id" | "identifier"}` renders the email for
/// that person (permit and audit as for a render, resource `/v1/render/send`) and sends it to
/// the seed list; answers the preview with `sent_to`, the number of seed addresses, or 502
/// `send_failed`.
pub(crate) async fn send(
    State(state): State<Arc<AppState>>,
    principal: Option<Extension<Principal>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let render = render_state(&state)?;
    let body: RenderBody = parse_body(&body, "render")?;
    if body.sample.is_some() {
        return Err(invalid_body(
            "a test send is for one person: give `profile_id` or `identifier`",
        ));
    }
    let Some(seeds) = render.seeds.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "send_disabled",
            "this server has no [render.seed_list] and [render.smtp] for test sends",
        ));
    };
    let compiled = template(render, &body.template)?;
    let actor = actor_of(principal.as_deref())?;
    let (email, report) = render_person(
        &state,
        &compiled,
        body.profile_id,
        body.identifier,
        &actor,
        SEND_RESOURCE,
    )
    .await?;
    let n_seeds = seeds.to.len();
    let message = email.clone();
    let sent =
        blocking(move || Ok(trib_render::send_to_seeds(&message, &seeds.to, &seeds.smtp))).await?;
    if let Err(error) = sent {
        record(
            &state,
            &actor,
            &compiled,
            &email.profile_id,
            SEND_RESOURCE,
            Outcome::Failed,
        )
        .await?;
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "send_failed",
            error.to_string(),
        ));
    }
    let mut answer = preview(&email, &report, &compiled);
    answer["sent_to"] = json!(n_seeds);
    Ok(Json(answer).into_response())
}

/// Finds one person, permits their data for the template's purpose, renders, and records the
/// access under `resource` before returning (a refused permit releases nothing and is not
/// recorded here).
async fn render_person(
    state: &Arc<AppState>,
    compiled: &Arc<CompiledTemplate>,
    profile_id: Option<String>,
    identifier: Option<IdentifierBody>,
    actor: &Actor,
    resource: &'static str,
) -> Result<(RenderedEmail, RenderReport), ApiError> {
    let render = render_state(state)?;
    let profile = find(state, profile_id, identifier).await?;
    let input = read_input(state, profile).await?;
    let profile_id = input.profile.id.clone();
    let gatekeeper = render.gatekeeper.clone();
    let template = compiled.clone();
    let result = blocking(move || {
        let identifiers = input.profile.identifiers.clone();
        match gatekeeper.permit(&identifiers, template.purpose(), None, input) {
            Ok(permit) => Ok(Ok(template.render_with_report(permit))),
            Err(denied) => Ok(Err(denied)),
        }
    })
    .await?;
    match result {
        Err(denied) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "consent_denied",
            format!("profile {profile_id}: {denied}"),
        )),
        Ok(Err(error)) => {
            record(
                state,
                actor,
                compiled,
                &profile_id,
                resource,
                Outcome::Failed,
            )
            .await?;
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "render_failed",
                error.to_string(),
            ))
        }
        Ok(Ok(rendered)) => {
            record(state, actor, compiled, &profile_id, resource, Outcome::Ok).await?;
            Ok(rendered)
        }
    }
}

/// The answer of one person's render: the email, the report and the template's warnings.
fn preview(email: &RenderedEmail, report: &RenderReport, compiled: &CompiledTemplate) -> Value {
    json!({
        "template": email.template,
        "version": email.version,
        "purpose": email.purpose,
        "profile_id": email.profile_id,
        "subject": email.subject,
        "preheader": email.preheader,
        "html": email.html,
        "text": email.text,
        "fallbacks": report.fallbacks,
        "missing": report.missing,
        "blocked_urls": report.blocked_urls,
        "warnings": compiled.warnings().iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

/// Renders for `sample` stored profiles spread from the sparsest to the richest.
async fn matrix(
    state: &Arc<AppState>,
    compiled: Arc<CompiledTemplate>,
    sample: usize,
    actor: Actor,
) -> Result<Response, ApiError> {
    let store = profiles(state)?.store.clone();
    let chosen = blocking(move || pick_sample(&*store, sample)).await?;
    let mut rows = Vec::with_capacity(chosen.len());
    for profile in chosen {
        let input = read_input(state, profile).await?;
        let profile_id = input.profile.id.clone();
        let n_traits = input.profile.traits.len();
        let gatekeeper = render_state(state)?.gatekeeper.clone();
        let template = compiled.clone();
        let result = blocking(move || {
            let identifiers = input.profile.identifiers.clone();
            Ok(
                match gatekeeper.permit(&identifiers, template.purpose(), None, input) {
                    Ok(permit) => Ok(template.render_with_report(permit)),
                    Err(denied) => Err(denied),
                },
            )
        })
        .await?;
        let row = match result {
            Err(denied) => {
                json!({"profile_id": profile_id, "traits": n_traits, "denied": denied.reason.code()})
            }
            Ok(Err(error)) => {
                record(
                    state,
                    &actor,
                    &compiled,
                    &profile_id,
                    RENDER_RESOURCE,
                    Outcome::Failed,
                )
                .await?;
                json!({"profile_id": profile_id, "traits": n_traits, "error": error.to_string()})
            }
            Ok(Ok((email, report))) => {
                record(
                    state,
                    &actor,
                    &compiled,
                    &profile_id,
                    RENDER_RESOURCE,
                    Outcome::Ok,
                )
                .await?;
                json!({
                    "profile_id": profile_id,
                    "traits": n_traits,
                    "subject": email.subject,
                    "fallbacks": report.fallbacks,
                    "missing": report.missing,
                    "blocked_urls": report.blocked_urls,
                })
            }
        };
        rows.push(row);
    }
    Ok(Json(json!({
        "template": compiled.name(),
        "version": compiled.version(),
        "purpose": compiled.purpose(),
        "rows": rows,
    }))
    .into_response())
}

/// Up to `sample` profiles from the change feed, spread evenly over the range from the fewest
/// traits to the most, so sparse profiles are always among them.
fn pick_sample(store: &dyn ProfileStore, sample: usize) -> Result<Vec<Profile>, ApiError> {
    let candidates_wanted = (sample * 10).max(200);
    let mut candidates = Vec::new();
    let mut cursor = 0;
    while candidates.len() < candidates_wanted {
        let changes = store
            .changes(None, cursor, 1000)
            .map_err(|error| ApiError::internal(&error))?;
        let Some(last) = changes.last() else { break };
        cursor = last.seq;
        for change in changes {
            if change.kind == ChangeKind::Upserted
                && let Found::Active { profile, .. } =
                    view::find(store, change.id).map_err(|error| ApiError::internal(&error))?
            {
                candidates.push(*profile);
            }
        }
    }
    candidates.sort_by_key(|profile| (profile.traits.len(), profile.id.clone()));
    candidates.dedup_by(|a, b| a.id == b.id);
    if candidates.len() <= sample {
        return Ok(candidates);
    }
    let step = (candidates.len() - 1) as f64 / (sample - 1).max(1) as f64;
    Ok((0..sample)
        .map(|index| candidates[((index as f64) * step).round() as usize].clone())
        .collect())
}

async fn find(
    state: &AppState,
    profile_id: Option<String>,
    identifier: Option<IdentifierBody>,
) -> Result<Profile, ApiError> {
    let profiles = profiles(state)?;
    let store = profiles.store.clone();
    let keyer = profiles.keyer.clone();
    let found = match (profile_id, identifier) {
        (Some(id), None) => {
            let id = parse_id(&id)?;
            blocking(move || view::find(&*store, id).map_err(|e| ApiError::internal(&e))).await?
        }
        (None, Some(identifier)) => {
            if profiles.rules.type_index(&identifier.kind).is_none() {
                return Err(invalid_body(
                    "identifier.type: not a configured identifier type",
                ));
            }
            blocking(move || {
                view::find_by_identifier(&*store, &keyer, &identifier.kind, &identifier.value)
                    .map_err(|e| ApiError::internal(&e))
            })
            .await?
        }
        _ => {
            return Err(invalid_body(
                "give `template` and exactly one of `profile_id`, `identifier` and `sample`",
            ));
        }
    };
    match found {
        Found::Active { profile, .. } => Ok(*profile),
        // The identifier is personal data: it is not echoed.
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "profile_not_found",
            "no active profile with that id or identifier",
        )),
    }
}

/// The profile and its most recent events, read back (decrypted) through the event log.
async fn read_input(state: &AppState, profile: Profile) -> Result<RenderInput, ApiError> {
    let store = profiles(state)?.store.clone();
    let id: ProfileId = profile.id.parse().map_err(|e| ApiError::internal(&e))?;
    let entries = blocking(move || {
        store
            .timeline(&id, None, EVENTS_PER_PERSON)
            .map_err(|error| ApiError::internal(&error))
    })
    .await?;
    let mut events = Vec::with_capacity(entries.len());
    for entry in entries {
        let records = state
            .events
            .read(entry.event.partition, entry.event.offset, 1)
            .await
            .map_err(|error| ApiError::internal(&error))?;
        if let Some(record) = records.first()
            && record.offset == entry.event.offset
            && let Ok(event) = serde_json::from_slice::<Value>(&record.payload)
        {
            events.push(event);
        }
    }
    Ok(RenderInput { profile, events })
}

fn actor_of(principal: Option<&Principal>) -> Result<Actor, ApiError> {
    match principal {
        None | Some(Principal::Admin) => Ok(Actor::Admin),
        Some(Principal::Key(id)) => Actor::api_key(id).map_err(|error| ApiError::internal(&error)),
    }
}

/// Records one person's render or test send (`resource`, the template's purpose, their
/// profile id) before it is answered or sent; without an audit log nothing is recorded.
async fn record(
    state: &AppState,
    actor: &Actor,
    compiled: &CompiledTemplate,
    profile_id: &str,
    resource: &'static str,
    outcome: Outcome,
) -> Result<(), ApiError> {
    let Some(log) = state.audit.as_ref() else {
        return Ok(());
    };
    let purpose = Purpose::new(compiled.purpose()).map_err(|error| ApiError::internal(&error))?;
    let subject = profile_id
        .parse::<ProfileId>()
        .ok()
        .map(ProfileRef::profile);
    log.append(vec![AuditRecord {
        actor: actor.clone(),
        action: Action::Read,
        purpose,
        resource: Resource::new(resource),
        subject,
        outcome,
    }])
    .await
    .map(|_| ())
    .map_err(|error| {
        tracing::error!(%error, "cannot record a render in the audit log; nothing is released");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            "the render could not be recorded in the audit log, so nothing is released; retry later",
        )
    })
}

/// `PUT /v1/templates/{name}` with the template's TOML (parts inline): the static check runs
/// first; problems answer 422 `template_invalid` with every diagnostic (part, line, column);
/// a clean template is saved (when the server has a templates directory) and compiled.
pub(crate) async fn save(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let render = render_state(&state)?;
    let text =
        std::str::from_utf8(&body).map_err(|_| invalid_body("the template is UTF-8 TOML"))?;
    let source = trib_render::source::parse(&name, text, None)
        .map_err(|error| invalid_body(error.to_string()))?;
    let diagnostics = render.compiler.check(&source);
    if diagnostics
        .iter()
        .any(|diagnostic| diagnostic.severity == trib_render::Severity::Error)
    {
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "success": false,
                "code": "template_invalid",
                "message": format!("template {name} fails the static check"),
                "diagnostics": diagnostics,
            })),
        )
            .into_response());
    }
    let compiled = render.compiler.compile(&source).map_err(|error| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "template_invalid",
            error.to_string(),
        )
    })?;
    if let Some(dir) = render.templates_dir.clone() {
        let text = text.to_owned();
        let file_name = format!("{name}.toml");
        blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|error| ApiError::internal(&error))?;
            let temporary = dir.join(format!(".{file_name}.tmp"));
            std::fs::write(&temporary, text).map_err(|error| ApiError::internal(&error))?;
            std::fs::rename(&temporary, dir.join(&file_name))
                .map_err(|error| ApiError::internal(&error))
        })
        .await?;
    }
    let version = compiled.version().to_owned();
    render
        .templates
        .write()
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "internal error",
            )
        })?
        .insert(compiled);
    Ok(Json(json!({"name": name, "version": version, "diagnostics": diagnostics})).into_response())
}
