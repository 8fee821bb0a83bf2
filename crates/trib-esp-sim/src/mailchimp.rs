//! Mailchimp Marketing API 3.0: list members (add-or-update, read, permanent delete), merge
//! fields, and asynchronous batches whose results are a gzipped tar at `response_body_url`.
//!
//! Errors are `application/problem+json` (`type`, `title`, `status`, `detail`, `instance`,
//! plus `errors: [{field, message}]` for 400 `Invalid Resource`), as in the spec's
//! `Problem_Detail_Document`. Members are keyed by subscriber hash (MD5 of the lower-cased
//! email); the path also takes the email itself, as the spec says.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Map, Value, json};
use tower::ServiceExt as _;

use crate::common::{
    FaultPlan, json_with_type, lock, now_offset, percent_encode, random_subset, read_request,
    subscriber_hash, with_fault,
};
use crate::state::Shared;
use crate::{SimConfig, SimContact};

/// Mailchimp refuses new batches while this many are pending (release note 2021-11-16).
const MAX_PENDING_BATCHES: usize = 500;
/// Operation results per JSON file in a batch's tar.
const RESULTS_PER_FILE: usize = 1000;
const STATUSES: [&str; 5] = [
    "subscribed",
    "unsubscribed",
    "cleaned",
    "pending",
    "transactional",
];

/// Lists, members and batches.
pub(crate) struct Store {
    lists: BTreeMap<String, List>,
    batches: BTreeMap<String, Batch>,
    next_web_id: u64,
}

#[derive(Default)]
struct List {
    members: BTreeMap<String, Member>,
    /// Subscriber hashes permanently deleted: they cannot be re-added through the API.
    forgotten: BTreeSet<String>,
}

#[derive(Clone)]
struct Member {
    email_address: String,
    status: String,
    merge_fields: BTreeMap<String, Value>,
    email_type: String,
    language: String,
    vip: bool,
    interests: Map<String, Value>,
    timestamp_opt: String,
    last_changed: String,
    web_id: u64,
}

struct Batch {
    id: String,
    status: &'static str,
    total_operations: usize,
    finished_operations: usize,
    errored_operations: usize,
    submitted_at: String,
    completed_at: String,
    response_body_url: String,
    archive: Option<Vec<u8>>,
}

impl Store {
    pub(crate) fn new(config: &SimConfig) -> Self {
        Store {
            lists: config
                .mailchimp_lists
                .iter()
                .map(|id| (id.clone(), List::default()))
                .collect(),
            batches: BTreeMap::new(),
            next_web_id: 1,
        }
    }

    /// Members of every list by lower-cased email (a member of several lists: the last list
    /// in configuration order wins).
    pub(crate) fn contacts(&self, config: &SimConfig) -> BTreeMap<String, SimContact> {
        let mut contacts = BTreeMap::new();
        for list_id in &config.mailchimp_lists {
            let Some(list) = self.lists.get(list_id) else {
                continue;
            };
            for (hash, member) in &list.members {
                contacts.insert(
                    member.email_address.clone(),
                    SimContact {
                        id: hash.clone(),
                        email: member.email_address.clone(),
                        status: Some(member.status.clone()),
                        fields: member.merge_fields.clone(),
                    },
                );
            }
        }
        contacts
    }
}

/// The routes under `/3.0`, plus the batch result files.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .nest("/3.0", api_routes())
        .route(
            "/_sim/mailchimp/batches/{batch_id}/response.tar.gz",
            get(batch_archive),
        )
        .fallback(not_found)
}

/// The API without the `/3.0` prefix: batch operations are run through it.
fn api_routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/lists/{list_id}/members/{subscriber_hash}",
            get(get_member).put(put_member).delete(archive_member),
        )
        .route(
            "/lists/{list_id}/members/{subscriber_hash}/actions/delete-permanent",
            post(delete_permanent),
        )
        .route("/lists/{list_id}/merge-fields", get(merge_fields))
        .route("/batches", post(post_batch).get(list_batches))
        .route("/batches/{batch_id}", get(get_batch))
        .fallback(not_found)
}

/// A problem+json answer.
pub(crate) fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    problem_with_errors(status, title, detail, None)
}

fn problem_with_errors(
    status: StatusCode,
    title: &str,
    detail: &str,
    errors: Option<Vec<Value>>,
) -> Response {
    let mut body = json!({
        "type": "https://mailchimp.com/developer/marketing/docs/errors/",
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
        "instance": uuid::Uuid::new_v4().to_string(),
    });
    if let Some(errors) = errors {
        body["errors"] = Value::Array(errors);
    }
    json_with_type(status, &body, "application/problem+json; charset=utf-8")
}

fn invalid_resource(field: &str, message: &str) -> Response {
    problem_with_errors(
        StatusCode::BAD_REQUEST,
        "Invalid Resource",
        "The resource submitted could not be validated. For field-specific details, see the 'errors' array.",
        Some(vec![json!({ "field": field, "message": message })]),
    )
}

fn resource_not_found() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "Resource Not Found",
        "The requested resource could not be found.",
    )
}

async fn not_found() -> Response {
    resource_not_found()
}

fn json_ok(body: &Value) -> Response {
    json_with_type(StatusCode::OK, body, "application/json; charset=utf-8")
}

/// The path's member key: a subscriber hash, or an email (hashed).
fn path_hash(key: &str) -> String {
    if key.contains('@') {
        subscriber_hash(key)
    } else {
        key.to_ascii_lowercase()
    }
}

fn member_json(list_id: &str, hash: &str, member: &Member) -> Value {
    let name = |tag: &str| {
        member
            .merge_fields
            .get(tag)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let full_name = format!("{} {}", name("FNAME"), name("LNAME"))
        .trim()
        .to_owned();
    json!({
        "id": hash,
        "email_address": member.email_address,
        "unique_email_id": &hash[..10.min(hash.len())],
        "contact_id": hash,
        "full_name": full_name,
        "web_id": member.web_id,
        "email_type": member.email_type,
        "status": member.status,
        "merge_fields": member.merge_fields,
        "interests": member.interests,
        "stats": { "avg_open_rate": 0, "avg_click_rate": 0 },
        "ip_signup": "",
        "timestamp_signup": "",
        "ip_opt": "",
        "timestamp_opt": member.timestamp_opt,
        "member_rating": 2,
        "last_changed": member.last_changed,
        "language": member.language,
        "vip": member.vip,
        "email_client": "",
        "location": { "latitude": 0, "longitude": 0, "gmtoff": 0, "dstoff": 0,
                      "country_code": "", "timezone": "", "region": "" },
        "source": "API - Generic",
        "tags_count": 0,
        "tags": [],
        "list_id": list_id,
        "_links": [],
    })
}

async fn get_member(
    State(shared): State<Arc<Shared>>,
    Path((list_id, key)): Path<(String, String)>,
) -> Response {
    let state = lock(&shared.mailchimp);
    let hash = path_hash(&key);
    match state
        .lists
        .get(&list_id)
        .and_then(|list| list.members.get(&hash))
    {
        Some(member) => json_ok(&member_json(&list_id, &hash, member)),
        None => resource_not_found(),
    }
}

async fn put_member(
    State(shared): State<Arc<Shared>>,
    Path((list_id, key)): Path<(String, String)>,
    request: Request,
) -> Response {
    let (plan, _query, bytes) = read_request(request).await;
    let Ok(body) = serde_json::from_slice::<Value>(&bytes) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "JSON Parse Error",
            "We encountered an unspecified JSON parsing error.",
        );
    };
    let Some(body) = body.as_object() else {
        return invalid_resource("", "The request body must be a JSON object.");
    };
    let config = &shared.config;
    if !config.mailchimp_lists.contains(&list_id) {
        return resource_not_found();
    }
    // `Add_List_Members_2` requires both (see the spec README's quirks).
    let Some(email) = body.get("email_address").and_then(Value::as_str) else {
        return invalid_resource("email_address", "This value should not be blank.");
    };
    let Some(status_if_new) = body.get("status_if_new").and_then(Value::as_str) else {
        return invalid_resource("status_if_new", "This value should not be blank.");
    };
    if !STATUSES.contains(&status_if_new) {
        return invalid_resource(
            "status_if_new",
            "Value must be one of: subscribed, unsubscribed, cleaned, pending, transactional",
        );
    }
    let status = match body.get("status") {
        None | Some(Value::Null) => None,
        Some(Value::String(status)) if STATUSES.contains(&status.as_str()) => Some(status.clone()),
        Some(_) => {
            return invalid_resource(
                "status",
                "Value must be one of: subscribed, unsubscribed, cleaned, pending, transactional",
            );
        }
    };
    let email = email.trim().to_lowercase();
    let hash = subscriber_hash(&email);
    if path_hash(&key) != hash {
        return invalid_resource(
            "email_address",
            "The email address does not match the subscriber hash in the path.",
        );
    }
    if !crate::common::is_valid_email(&email) {
        return invalid_resource(
            "email_address",
            "This email address looks fake or invalid. Please enter a real email address.",
        );
    }
    let mut merge_fields = BTreeMap::new();
    match body.get("merge_fields") {
        None | Some(Value::Null) => {}
        Some(Value::Object(fields)) => {
            for (tag, value) in fields {
                if !config.mailchimp_merge_fields.contains(tag) {
                    return invalid_resource(
                        tag,
                        "This merge field does not exist on this audience.",
                    );
                }
                merge_fields.insert(tag.clone(), value.clone());
            }
        }
        Some(_) => return invalid_resource("merge_fields", "Schema describes object."),
    }

    let mut state = lock(&shared.mailchimp);
    let next_web_id = state.next_web_id;
    let Some(list) = state.lists.get_mut(&list_id) else {
        return resource_not_found();
    };
    if list.forgotten.contains(&hash) {
        return problem(
            StatusCode::BAD_REQUEST,
            "Forgotten Email Not Subscribed",
            "This contact was permanently deleted and cannot be re-imported. The contact must re-subscribe to get back on the list.",
        );
    }
    let existing = list.members.get(&hash).cloned();
    if plan.not_applied {
        let old = existing.map_or_else(|| json!({}), |old| member_json(&list_id, &hash, &old));
        return with_fault(json_ok(&old), "not_applied");
    }
    let now = now_offset();
    let is_new = existing.is_none();
    let mut member = existing.unwrap_or_else(|| Member {
        email_address: email.clone(),
        status: status_if_new.to_owned(),
        merge_fields: config
            .mailchimp_merge_fields
            .iter()
            .map(|tag| (tag.clone(), Value::String(String::new())))
            .collect(),
        email_type: "html".to_owned(),
        language: String::new(),
        vip: false,
        interests: Map::new(),
        timestamp_opt: now.clone(),
        last_changed: now.clone(),
        web_id: next_web_id,
    });
    // Merge fields left out of the body keep their value.
    member.merge_fields.extend(merge_fields);
    if let Some(status) = status {
        member.status = status;
    }
    if let Some(email_type) = body.get("email_type").and_then(Value::as_str) {
        member.email_type = email_type.to_owned();
    }
    if let Some(language) = body.get("language").and_then(Value::as_str) {
        member.language = language.to_owned();
    }
    if let Some(vip) = body.get("vip").and_then(Value::as_bool) {
        member.vip = vip;
    }
    if let Some(interests) = body.get("interests").and_then(Value::as_object) {
        member.interests.extend(interests.clone());
    }
    member.last_changed = now;
    let answer = member_json(&list_id, &hash, &member);
    list.members.insert(hash, member);
    if is_new {
        state.next_web_id += 1;
    }
    drop(state);
    shared.count_writes(1);
    json_ok(&answer)
}

/// `POST .../actions/delete-permanent`: removes the member and forgets the email, which can
/// never be added again (204).
async fn delete_permanent(
    State(shared): State<Arc<Shared>>,
    Path((list_id, key)): Path<(String, String)>,
    request: Request,
) -> Response {
    remove_member(&shared, &list_id, &key, request, true).await
}

/// `DELETE /lists/{list_id}/members/{subscriber_hash}`: archives the member (204). Unlike a
/// permanent delete, the email can be added again.
async fn archive_member(
    State(shared): State<Arc<Shared>>,
    Path((list_id, key)): Path<(String, String)>,
    request: Request,
) -> Response {
    remove_member(&shared, &list_id, &key, request, false).await
}

/// Removes a member (404 when absent); `forget` also bars the email from being re-added.
async fn remove_member(
    shared: &Shared,
    list_id: &str,
    key: &str,
    request: Request,
    forget: bool,
) -> Response {
    let (plan, _query, _bytes) = read_request(request).await;
    let hash = path_hash(key);
    let mut state = lock(&shared.mailchimp);
    let Some(list) = state.lists.get_mut(list_id) else {
        return resource_not_found();
    };
    if !list.members.contains_key(&hash) {
        return resource_not_found();
    }
    if plan.not_applied {
        return with_fault(StatusCode::NO_CONTENT.into_response(), "not_applied");
    }
    list.members.remove(&hash);
    if forget {
        list.forgotten.insert(hash);
    }
    drop(state);
    shared.count_writes(1);
    StatusCode::NO_CONTENT.into_response()
}

async fn merge_fields(State(shared): State<Arc<Shared>>, Path(list_id): Path<String>) -> Response {
    if !shared.config.mailchimp_lists.contains(&list_id) {
        return resource_not_found();
    }
    let fields: Vec<Value> = shared
        .config
        .mailchimp_merge_fields
        .iter()
        .enumerate()
        .map(|(index, tag)| {
            json!({
                "merge_id": index + 1,
                "tag": tag,
                "name": tag,
                "type": "text",
                "required": false,
                "default_value": "",
                "public": false,
                "display_order": index + 2,
                "options": { "size": 25 },
                "help_text": "",
                "list_id": list_id,
                "_links": [],
            })
        })
        .collect();
    json_ok(&json!({
        "merge_fields": fields,
        "list_id": list_id,
        "total_items": fields.len(),
        "_links": [],
    }))
}

/// One operation of a batch, as sent.
struct Operation {
    method: Method,
    path: String,
    params: Option<Map<String, Value>>,
    body: Option<String>,
    operation_id: Option<String>,
}

async fn post_batch(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (plan, _query, bytes) = read_request(request).await;
    let Ok(body) = serde_json::from_slice::<Value>(&bytes) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "JSON Parse Error",
            "We encountered an unspecified JSON parsing error.",
        );
    };
    let Some(raw_operations) = body.get("operations").and_then(Value::as_array) else {
        return invalid_resource("operations", "Required property missing.");
    };
    let mut operations = Vec::with_capacity(raw_operations.len());
    for (index, raw) in raw_operations.iter().enumerate() {
        let method = raw
            .get("method")
            .and_then(Value::as_str)
            .and_then(|method| Method::from_bytes(method.to_ascii_uppercase().as_bytes()).ok())
            .filter(|method| {
                [
                    Method::GET,
                    Method::POST,
                    Method::PUT,
                    Method::PATCH,
                    Method::DELETE,
                ]
                .contains(method)
            });
        let Some(method) = method else {
            return invalid_resource(
                &format!("operations.item:{index}.method"),
                "Value must be one of: GET, POST, PUT, PATCH, DELETE",
            );
        };
        let Some(path) = raw.get("path").and_then(Value::as_str) else {
            return invalid_resource(
                &format!("operations.item:{index}.path"),
                "Required property missing.",
            );
        };
        let body = match raw.get("body") {
            None | Some(Value::Null) => None,
            Some(Value::String(body)) => Some(body.clone()),
            Some(_) => {
                return invalid_resource(
                    &format!("operations.item:{index}.body"),
                    "Schema describes string.",
                );
            }
        };
        operations.push(Operation {
            method,
            path: path.to_owned(),
            params: raw.get("params").and_then(Value::as_object).cloned(),
            body,
            operation_id: raw
                .get("operation_id")
                .and_then(Value::as_str)
                .map(str::to_owned),
        });
    }

    let mut state = lock(&shared.mailchimp);
    let pending = state
        .batches
        .values()
        .filter(|batch| batch.status != "finished")
        .count();
    if pending >= MAX_PENDING_BATCHES {
        drop(state);
        lock(&shared.stats).limit_refusals += 1;
        return problem(
            StatusCode::TOO_MANY_REQUESTS,
            "Too Many Requests",
            "You have exceeded the limit of 500 pending batches.",
        );
    }
    let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let batch = Batch {
        id: id.clone(),
        status: "pending",
        total_operations: operations.len(),
        finished_operations: 0,
        errored_operations: 0,
        submitted_at: now_offset(),
        completed_at: String::new(),
        response_body_url: String::new(),
        archive: None,
    };
    let answer = batch_json(&batch);
    state.batches.insert(id.clone(), batch);
    drop(state);

    let job_shared = Arc::clone(&shared);
    shared.spawn(run_batch(job_shared, id, operations, plan));
    let response = json_ok(&answer);
    match plan {
        FaultPlan {
            partial: Some(_), ..
        } => with_fault(response, "partial"),
        FaultPlan {
            not_applied: true, ..
        } => with_fault(response, "not_applied"),
        _ => response,
    }
}

/// Runs a batch's operations one by one through the API routes (the same code as the single
/// endpoints), then builds the result archive. `partial` answers a random subset with 500
/// without running them; `not_applied` runs every operation in "answer as if applied" mode.
async fn run_batch(shared: Arc<Shared>, id: String, operations: Vec<Operation>, plan: FaultPlan) {
    if !shared.config.mailchimp_batch_delay.is_zero() {
        tokio::time::sleep(shared.config.mailchimp_batch_delay).await;
    }
    set_batch(&shared, &id, |batch| batch.status = "started");
    let api = api_routes().with_state(Arc::clone(&shared));
    let failing = plan
        .partial
        .map(|seed| random_subset(seed, operations.len()));
    let mut results = Vec::with_capacity(operations.len());
    let mut errored = 0;
    for (index, operation) in operations.into_iter().enumerate() {
        let (status, response) = if failing.as_ref().is_some_and(|failing| failing[index]) {
            (
                500,
                json!({
                    "type": "https://mailchimp.com/developer/marketing/docs/errors/",
                    "title": "Internal Server Error",
                    "status": 500,
                    "detail": "An unexpected internal error has occurred. Please contact Support for more information.",
                    "instance": uuid::Uuid::new_v4().to_string(),
                })
                .to_string(),
            )
        } else {
            run_operation(&api, &operation, plan.not_applied).await
        };
        if status >= 400 {
            errored += 1;
        }
        results.push(json!({
            "status_code": status,
            "operation_id": operation.operation_id,
            "response": response,
        }));
        set_batch(&shared, &id, |batch| batch.finished_operations = index + 1);
    }
    let archive = build_archive(&id, &results);
    let url = format!(
        "{}/_sim/mailchimp/batches/{id}/response.tar.gz",
        shared.base_url
    );
    set_batch(&shared, &id, |batch| {
        batch.status = "finished";
        batch.errored_operations = errored;
        batch.completed_at = now_offset();
        batch.response_body_url = url;
        batch.archive = archive;
    });
}

async fn run_operation(api: &Router, operation: &Operation, not_applied: bool) -> (u16, String) {
    let path = operation
        .path
        .strip_prefix("/3.0")
        .unwrap_or(&operation.path);
    let mut uri = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    if let Some(params) = &operation.params {
        let query: Vec<String> = params
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                format!("{}={}", percent_encode(name), percent_encode(&value))
            })
            .collect();
        if !query.is_empty() {
            uri = format!("{uri}?{}", query.join("&"));
        }
    }
    let request = Request::builder()
        .method(operation.method.clone())
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(operation.body.clone().unwrap_or_default()));
    let Ok(mut request) = request else {
        return (
            404,
            json!({"title": "Resource Not Found", "status": 404}).to_string(),
        );
    };
    request.extensions_mut().insert(FaultPlan {
        partial: None,
        not_applied,
    });
    let response = match api.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// A gzipped tar of JSON files, each an array of `{status_code, operation_id, response}`.
fn build_archive(id: &str, results: &[Value]) -> Option<Vec<u8>> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    let mtime = jiff::Timestamp::now().as_second().max(0).unsigned_abs();
    for (index, chunk) in results.chunks(RESULTS_PER_FILE).enumerate() {
        let content = Value::Array(chunk.to_vec()).to_string();
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_cksum();
        builder
            .append_data(
                &mut header,
                format!("{id}/{index}.json"),
                content.as_bytes(),
            )
            .ok()?;
    }
    builder.into_inner().ok()?.finish().ok()
}

fn set_batch(shared: &Shared, id: &str, change: impl FnOnce(&mut Batch)) {
    if let Some(batch) = lock(&shared.mailchimp).batches.get_mut(id) {
        change(batch);
    }
}

fn batch_json(batch: &Batch) -> Value {
    json!({
        "id": batch.id,
        "status": batch.status,
        "total_operations": batch.total_operations,
        "finished_operations": batch.finished_operations,
        "errored_operations": batch.errored_operations,
        "submitted_at": batch.submitted_at,
        "completed_at": batch.completed_at,
        "response_body_url": batch.response_body_url,
        "_links": [],
    })
}

/// `GET /batches?count=&offset=`: the batches in id order (`count` at most 1,000, default 10).
async fn list_batches(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let number = |name: &'static str, default: usize| -> Result<usize, &'static str> {
        query
            .get(name)
            .map_or(Ok(default), |text| text.parse().map_err(|_| name))
    };
    let (count, offset) = match (number("count", 10), number("offset", 0)) {
        (Ok(count), Ok(offset)) => (count, offset),
        (Err(name), _) | (_, Err(name)) => {
            return invalid_resource(name, "Schema describes integer.");
        }
    };
    if count > 1_000 {
        return invalid_resource("count", "Must be less than or equal to 1000.");
    }
    let state = lock(&shared.mailchimp);
    let batches: Vec<Value> = state
        .batches
        .values()
        .skip(offset)
        .take(count)
        .map(batch_json)
        .collect();
    json_ok(&json!({
        "batches": batches,
        "total_items": state.batches.len(),
        "_links": [],
    }))
}

async fn get_batch(State(shared): State<Arc<Shared>>, Path(batch_id): Path<String>) -> Response {
    match lock(&shared.mailchimp).batches.get(&batch_id) {
        Some(batch) => json_ok(&batch_json(batch)),
        None => resource_not_found(),
    }
}

async fn batch_archive(
    State(shared): State<Arc<Shared>>,
    Path(batch_id): Path<String>,
) -> Response {
    let archive = lock(&shared.mailchimp)
        .batches
        .get(&batch_id)
        .and_then(|batch| batch.archive.clone());
    match archive {
        Some(bytes) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-gzip")],
            bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
