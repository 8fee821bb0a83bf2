//! SendGrid Marketing Campaigns contacts: asynchronous upsert and delete jobs, job status,
//! search by emails and field definitions.
//!
//! `PUT /v3/marketing/contacts` validates the request at once (400 `{"errors":[{field,
//! message}]}` for a missing identifier, an unknown field or custom field id, a too-long
//! value, a wrong custom field type, or more than 30,000 contacts), answers 202 `{"job_id"}`
//! and applies the job after `SimConfig::sendgrid_job_delay`. A contact whose email is not a
//! valid address is refused *in the job* (its `errored_count`), as SendGrid reports
//! per-contact problems through the job. Contacts are written with `custom_fields` keyed by
//! field-definition id and read back (search) keyed by field **name**, as SendGrid does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post, put};
use serde_json::{Map, Value, json};

use crate::common::{
    FaultPlan, is_valid_email, json, lock, now_seconds, query_pairs, random_subset, read_request,
    with_fault,
};
use crate::state::Shared;
use crate::{SimConfig, SimContact};

/// The documented request limits of `PUT /v3/marketing/contacts`.
const MAX_CONTACTS: usize = 30_000;
const MAX_BYTES: usize = 6 * 1024 * 1024;
/// Search by emails takes at most 100 addresses.
const MAX_SEARCH: usize = 100;

/// Writable reserved fields of `ContactRequest` with their `maxLength` (0: none).
const RESERVED: [(&str, usize); 12] = [
    ("address_line_1", 100),
    ("address_line_2", 100),
    ("city", 60),
    ("country", 50),
    ("email", 254),
    ("phone_number_id", 0),
    ("external_id", 254),
    ("anonymous_id", 254),
    ("first_name", 50),
    ("last_name", 50),
    ("postal_code", 0),
    ("state_province_region", 50),
];
const IDENTIFIERS: [&str; 4] = ["email", "phone_number_id", "external_id", "anonymous_id"];

/// Contacts and jobs.
#[derive(Default)]
pub(crate) struct Store {
    /// By key: the lower-cased email, or `external_id:…`, `anonymous_id:…`,
    /// `phone_number_id:…` for contacts without email.
    contacts: BTreeMap<String, Contact>,
    jobs: BTreeMap<String, Job>,
}

#[derive(Clone)]
struct Contact {
    id: String,
    /// Reserved fields by name (`email` included), as strings or arrays.
    reserved: BTreeMap<String, Value>,
    /// Custom fields by definition id.
    custom: BTreeMap<String, Value>,
    list_ids: BTreeSet<String>,
    created_at: String,
    updated_at: String,
}

struct Job {
    id: String,
    status: &'static str,
    job_type: &'static str,
    requested_count: usize,
    created_count: usize,
    updated_count: usize,
    deleted_count: usize,
    errored_count: usize,
    started_at: String,
    finished_at: Option<String>,
}

impl Job {
    /// A job just accepted: `pending`, nothing counted yet.
    fn pending(id: String, job_type: &'static str, requested_count: usize) -> Self {
        Self {
            id,
            status: "pending",
            job_type,
            requested_count,
            created_count: 0,
            updated_count: 0,
            deleted_count: 0,
            errored_count: 0,
            started_at: now_seconds(),
            finished_at: None,
        }
    }
}

impl Store {
    pub(crate) fn contacts(&self) -> BTreeMap<String, SimContact> {
        self.contacts
            .iter()
            .map(|(key, contact)| {
                let mut fields: BTreeMap<String, Value> = contact
                    .reserved
                    .iter()
                    .filter(|(name, _)| name.as_str() != "email")
                    .map(|(name, value)| (name.clone(), value.clone()))
                    .collect();
                fields.extend(contact.custom.clone());
                (
                    key.clone(),
                    SimContact {
                        id: contact.id.clone(),
                        email: contact
                            .reserved
                            .get("email")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        status: None,
                        fields,
                    },
                )
            })
            .collect()
    }
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/v3/marketing/contacts",
            put(put_contacts).delete(delete_contacts),
        )
        .route("/v3/marketing/contacts/imports/{id}", get(get_job))
        .route("/v3/marketing/contacts/search/emails", post(search_emails))
        .route("/v3/marketing/field_definitions", get(field_definitions))
        .fallback(not_found)
}

/// An `{"errors":[{"field","message"}]}` answer.
pub(crate) fn errors(status: StatusCode, field: Option<&str>, message: &str) -> Response {
    json(
        status,
        &json!({ "errors": [{ "field": field, "message": message }] }),
    )
}

fn errors_list(list: Vec<Value>) -> Response {
    json(StatusCode::BAD_REQUEST, &json!({ "errors": list }))
}

fn field_error(field: &str, message: &str) -> Value {
    json!({ "field": field, "message": message })
}

async fn not_found() -> Response {
    errors(StatusCode::NOT_FOUND, None, "resource not found")
}

/// One validated contact of an upsert request.
struct Upsert {
    key: String,
    reserved: BTreeMap<String, Value>,
    custom: BTreeMap<String, Value>,
    /// Refused by the job (invalid email).
    invalid: bool,
}

async fn put_contacts(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (plan, _query, bytes) = read_request(request).await;
    if bytes.len() > MAX_BYTES {
        return errors(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            "request body is larger than 6MB",
        );
    }
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&bytes) else {
        return errors(StatusCode::BAD_REQUEST, None, "invalid JSON");
    };
    let mut problems = Vec::new();
    let mut list_ids = Vec::new();
    match body.get("list_ids") {
        None | Some(Value::Null) => {}
        Some(Value::Array(ids)) => {
            for (index, id) in ids.iter().enumerate() {
                match id.as_str().filter(|id| uuid::Uuid::parse_str(id).is_ok()) {
                    Some(id) => list_ids.push(id.to_owned()),
                    None => problems.push(field_error(
                        &format!("list_ids[{index}]"),
                        "must be a valid UUID",
                    )),
                }
            }
        }
        Some(_) => problems.push(field_error("list_ids", "must be an array of strings")),
    }
    let contacts = match body.get("contacts") {
        Some(Value::Array(contacts)) if !contacts.is_empty() && contacts.len() <= MAX_CONTACTS => {
            contacts
        }
        Some(Value::Array(_)) => {
            return errors(
                StatusCode::BAD_REQUEST,
                Some("contacts"),
                "must contain between 1 and 30000 contacts",
            );
        }
        _ => {
            return errors(StatusCode::BAD_REQUEST, Some("contacts"), "is required");
        }
    };
    let mut upserts = Vec::with_capacity(contacts.len());
    for (index, contact) in contacts.iter().enumerate() {
        match validate_contact(&shared.config, index, contact) {
            Ok(upsert) => upserts.push(upsert),
            Err(mut found) => problems.append(&mut found),
        }
    }
    if !problems.is_empty() {
        return errors_list(problems);
    }
    let job_id = uuid::Uuid::new_v4().to_string();
    lock(&shared.sendgrid).jobs.insert(
        job_id.clone(),
        Job::pending(job_id.clone(), "upsert", upserts.len()),
    );
    let job_shared = Arc::clone(&shared);
    let id = job_id.clone();
    shared.spawn(async move {
        tokio::time::sleep(job_shared.config.sendgrid_job_delay).await;
        run_upsert(&job_shared, &id, upserts, list_ids, plan);
    });
    let response = json(StatusCode::ACCEPTED, &json!({ "job_id": job_id }));
    fault_mark(response, plan)
}

fn fault_mark(response: Response, plan: FaultPlan) -> Response {
    if plan.partial.is_some() {
        with_fault(response, "partial")
    } else if plan.not_applied {
        with_fault(response, "not_applied")
    } else {
        response
    }
}

fn validate_contact(
    config: &SimConfig,
    index: usize,
    contact: &Value,
) -> Result<Upsert, Vec<Value>> {
    let at = |field: &str| format!("contacts[{index}].{field}");
    let Some(contact) = contact.as_object() else {
        return Err(vec![field_error(
            &format!("contacts[{index}]"),
            "must be an object",
        )]);
    };
    let mut problems = Vec::new();
    let mut reserved = BTreeMap::new();
    let mut custom = BTreeMap::new();
    for (name, value) in contact {
        if name == "custom_fields" {
            let Some(fields) = value.as_object() else {
                problems.push(field_error(&at(name), "must be an object"));
                continue;
            };
            for (id, value) in fields {
                let Some((_, _, field_type)) = config
                    .sendgrid_custom_fields
                    .iter()
                    .find(|(known, _, _)| known == id)
                else {
                    problems.push(field_error(
                        &at(&format!("custom_fields.{id}")),
                        "custom field ID does not exist",
                    ));
                    continue;
                };
                let ok = match field_type.as_str() {
                    "Number" => {
                        value.is_number()
                            || value
                                .as_str()
                                .is_some_and(|text| text.parse::<f64>().is_ok())
                    }
                    _ => value.is_string(),
                };
                if !ok {
                    problems.push(field_error(
                        &at(&format!("custom_fields.{id}")),
                        &format!("must be a valid {} value", field_type.to_lowercase()),
                    ));
                    continue;
                }
                custom.insert(id.clone(), value.clone());
            }
            continue;
        }
        if name == "alternate_emails" {
            let valid = value.as_array().is_some_and(|emails| {
                emails.len() <= 5
                    && emails
                        .iter()
                        .all(|email| email.as_str().is_some_and(|email| email.len() <= 254))
            });
            if valid {
                reserved.insert(name.clone(), value.clone());
            } else {
                problems.push(field_error(
                    &at(name),
                    "must be an array of at most 5 emails",
                ));
            }
            continue;
        }
        let Some((_, max_length)) = RESERVED.iter().find(|(known, _)| known == name) else {
            problems.push(field_error(&at(name), "unknown field"));
            continue;
        };
        let Some(text) = value.as_str() else {
            problems.push(field_error(&at(name), "must be a string"));
            continue;
        };
        if *max_length > 0 && text.chars().count() > *max_length {
            problems.push(field_error(
                &at(name),
                &format!("must be at most {max_length} characters"),
            ));
            continue;
        }
        let text = if name == "email" {
            // "The email field will be changed to all lower-case."
            text.trim().to_lowercase()
        } else {
            text.to_owned()
        };
        reserved.insert(name.clone(), Value::String(text));
    }
    let key = IDENTIFIERS.iter().find_map(|identifier| {
        reserved
            .get(*identifier)
            .and_then(Value::as_str)
            .filter(|value| !value.is_empty())
            .map(|value| {
                if *identifier == "email" {
                    value.to_owned()
                } else {
                    format!("{identifier}:{value}")
                }
            })
    });
    let Some(key) = key else {
        problems.push(field_error(
            &format!("contacts[{index}]"),
            "at least one identifier (email, phone_number_id, external_id, anonymous_id) is required",
        ));
        return Err(problems);
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let invalid = reserved
        .get("email")
        .and_then(Value::as_str)
        .is_some_and(|email| !is_valid_email(email));
    Ok(Upsert {
        key,
        reserved,
        custom,
        invalid,
    })
}

/// Applies an upsert job. `not_applied` completes it with the counts it would have had and
/// writes nothing; `partial` refuses a random subset of the valid contacts (counted in
/// `errored_count`) without writing them.
fn run_upsert(
    shared: &Shared,
    job_id: &str,
    upserts: Vec<Upsert>,
    list_ids: Vec<String>,
    plan: FaultPlan,
) {
    let failing = plan.partial.map(|seed| random_subset(seed, upserts.len()));
    let now = now_seconds();
    let mut state = lock(&shared.sendgrid);
    let (mut created, mut updated, mut errored) = (0, 0, 0);
    for (index, upsert) in upserts.into_iter().enumerate() {
        if upsert.invalid || failing.as_ref().is_some_and(|failing| failing[index]) {
            errored += 1;
            continue;
        }
        let exists = state.contacts.contains_key(&upsert.key);
        if exists {
            updated += 1;
        } else {
            created += 1;
        }
        if plan.not_applied {
            continue;
        }
        let contact = state.contacts.entry(upsert.key).or_insert_with(|| Contact {
            id: uuid::Uuid::new_v4().to_string(),
            reserved: BTreeMap::new(),
            custom: BTreeMap::new(),
            list_ids: BTreeSet::new(),
            created_at: now.clone(),
            updated_at: now.clone(),
        });
        // The spec: "Any fields omitted from the request will remain as they were." That
        // holds for reserved fields and for each custom field id left out of
        // `custom_fields`.
        contact.reserved.extend(upsert.reserved);
        contact.custom.extend(upsert.custom);
        contact.list_ids.extend(list_ids.iter().cloned());
        contact.updated_at = now.clone();
    }
    let written = if plan.not_applied {
        0
    } else {
        created + updated
    };
    if let Some(job) = state.jobs.get_mut(job_id) {
        job.created_count = created;
        job.updated_count = updated;
        job.errored_count = errored;
        job.status = job_status(job.requested_count, errored);
        job.finished_at = Some(now_seconds());
    }
    drop(state);
    shared.count_writes(written as u64);
}

/// `completed` without errors, `failed` when every record errored, `errored` otherwise.
fn job_status(requested: usize, errored: usize) -> &'static str {
    if errored == 0 {
        "completed"
    } else if errored >= requested {
        "failed"
    } else {
        "errored"
    }
}

async fn delete_contacts(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (plan, query, _bytes) = read_request(request).await;
    let pairs = query_pairs(query.as_deref());
    let ids: Option<Vec<String>> = pairs
        .iter()
        .find(|(name, _)| name == "ids")
        .map(|(_, ids)| {
            ids.split(',')
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .collect()
        });
    let delete_all = pairs
        .iter()
        .any(|(name, value)| name == "delete_all_contacts" && value == "true");
    let ids = match (ids, delete_all) {
        (Some(ids), false) if !ids.is_empty() => Some(ids),
        (None, true) => None,
        _ => {
            return errors(
                StatusCode::BAD_REQUEST,
                Some("ids"),
                "set either `ids` (a comma-separated list of contact ids) or `delete_all_contacts=true`",
            );
        }
    };
    let job_id = uuid::Uuid::new_v4().to_string();
    let requested = ids.as_ref().map_or(0, Vec::len);
    lock(&shared.sendgrid).jobs.insert(
        job_id.clone(),
        Job::pending(job_id.clone(), "delete", requested),
    );
    let job_shared = Arc::clone(&shared);
    let id = job_id.clone();
    shared.spawn(async move {
        tokio::time::sleep(job_shared.config.sendgrid_job_delay).await;
        let mut state = lock(&job_shared.sendgrid);
        let doomed: Vec<String> = state
            .contacts
            .iter()
            .filter(|(_, contact)| ids.as_ref().is_none_or(|ids| ids.contains(&contact.id)))
            .map(|(key, _)| key.clone())
            .collect();
        if !plan.not_applied {
            for key in &doomed {
                state.contacts.remove(key);
            }
        }
        if let Some(job) = state.jobs.get_mut(&id) {
            job.deleted_count = doomed.len();
            if ids.is_none() {
                job.requested_count = doomed.len();
            }
            job.status = "completed";
            job.finished_at = Some(now_seconds());
        }
        drop(state);
        if !plan.not_applied {
            job_shared.count_writes(doomed.len() as u64);
        }
    });
    let response = json(StatusCode::ACCEPTED, &json!({ "job_id": job_id }));
    if plan.not_applied {
        with_fault(response, "not_applied")
    } else {
        response
    }
}

async fn get_job(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let state = lock(&shared.sendgrid);
    let Some(job) = state.jobs.get(&id) else {
        return errors(StatusCode::NOT_FOUND, None, "job not found");
    };
    let mut body = json!({
        "id": job.id,
        "status": job.status,
        "job_type": job.job_type,
        "results": {
            "requested_count": job.requested_count,
            "created_count": job.created_count,
            "updated_count": job.updated_count,
            "deleted_count": job.deleted_count,
            "errored_count": job.errored_count,
        },
        "started_at": job.started_at,
    });
    if let Some(finished_at) = &job.finished_at {
        body["finished_at"] = Value::String(finished_at.clone());
    }
    json(StatusCode::OK, &body)
}

async fn search_emails(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (_plan, _query, bytes) = read_request(request).await;
    let Ok(body) = serde_json::from_slice::<Value>(&bytes) else {
        return errors(StatusCode::BAD_REQUEST, None, "invalid JSON");
    };
    let Some(emails) = body.get("emails").and_then(Value::as_array) else {
        return errors(StatusCode::BAD_REQUEST, Some("emails"), "is required");
    };
    if emails.len() > MAX_SEARCH {
        return errors(
            StatusCode::BAD_REQUEST,
            Some("emails"),
            "must contain at most 100 emails",
        );
    }
    let mut wanted = Vec::new();
    for (index, email) in emails.iter().enumerate() {
        let Some(email) = email.as_str() else {
            return errors(
                StatusCode::BAD_REQUEST,
                Some(&format!("emails[{index}]")),
                "must be a string",
            );
        };
        if email.is_empty() {
            // "Empty strings are excluded from the search and will not be returned."
            continue;
        }
        let email = email.trim().to_lowercase();
        if !is_valid_email(&email) {
            return errors(
                StatusCode::BAD_REQUEST,
                Some(&format!("emails[{index}]")),
                "invalid email",
            );
        }
        wanted.push(email);
    }
    let state = lock(&shared.sendgrid);
    let mut result = Map::new();
    let mut found = 0;
    for email in wanted {
        let contact = state.contacts.get(&email).or_else(|| {
            state.contacts.values().find(|contact| {
                contact
                    .reserved
                    .get("alternate_emails")
                    .and_then(Value::as_array)
                    .is_some_and(|alternates| {
                        alternates
                            .iter()
                            .any(|alternate| alternate.as_str() == Some(email.as_str()))
                    })
            })
        });
        let entry = match contact {
            Some(contact) => {
                found += 1;
                json!({ "contact": contact_details(&shared, contact) })
            }
            None => json!({ "error": "contact not found" }),
        };
        result.insert(email, entry);
    }
    drop(state);
    if found == 0 {
        return errors(StatusCode::NOT_FOUND, None, "no contacts found");
    }
    json(StatusCode::OK, &json!({ "result": result }))
}

/// A contact as SendGrid returns it: every reserved field (empty when unset) and custom
/// fields keyed by field **name**.
fn contact_details(shared: &Shared, contact: &Contact) -> Value {
    let text = |name: &str| {
        contact
            .reserved
            .get(name)
            .cloned()
            .unwrap_or_else(|| Value::String(String::new()))
    };
    let custom_fields: Map<String, Value> = contact
        .custom
        .iter()
        .map(|(id, value)| {
            let name = shared
                .config
                .sendgrid_custom_fields
                .iter()
                .find(|(known, _, _)| known == id)
                .map_or(id.as_str(), |(_, name, _)| name.as_str());
            (name.to_owned(), value.clone())
        })
        .collect();
    let mut details = json!({
        "id": contact.id,
        "email": text("email"),
        "first_name": text("first_name"),
        "last_name": text("last_name"),
        "alternate_emails": contact.reserved.get("alternate_emails").cloned().unwrap_or_else(|| json!([])),
        "address_line_1": text("address_line_1"),
        "address_line_2": text("address_line_2"),
        "city": text("city"),
        "state_province_region": text("state_province_region"),
        "postal_code": text("postal_code"),
        "country": text("country"),
        "phone_number": "",
        "whatsapp": "",
        "line": "",
        "facebook": "",
        "unique_name": "",
        "list_ids": contact.list_ids,
        "segment_ids": [],
        "custom_fields": custom_fields,
        "created_at": contact.created_at,
        "updated_at": contact.updated_at,
        "_metadata": { "self": format!("{}/v3/marketing/contacts/{}", shared.base_url, contact.id) },
    });
    for identifier in ["external_id", "anonymous_id", "phone_number_id"] {
        if let Some(value) = contact.reserved.get(identifier) {
            details[identifier] = value.clone();
        }
    }
    details
}

async fn field_definitions(State(shared): State<Arc<Shared>>) -> Response {
    let custom: Vec<Value> = shared
        .config
        .sendgrid_custom_fields
        .iter()
        .map(|(id, name, field_type)| json!({ "id": id, "name": name, "field_type": field_type }))
        .collect();
    let reserved_names = [
        ("first_name", "T", false),
        ("last_name", "T", false),
        ("email", "T", false),
        ("alternate_emails", "T", false),
        ("address_line_1", "T", false),
        ("address_line_2", "T", false),
        ("city", "T", false),
        ("state_province_region", "T", false),
        ("postal_code", "T", false),
        ("country", "T", false),
        ("phone_number", "T", false),
        ("whatsapp", "T", false),
        ("line", "T", false),
        ("facebook", "T", false),
        ("unique_name", "T", false),
        ("email_domains", "T", true),
        ("last_clicked", "D", true),
        ("last_opened", "D", true),
        ("last_emailed", "D", true),
        ("singlesend_id", "T", true),
        ("automation_id", "T", true),
        ("created_at", "D", true),
        ("updated_at", "D", true),
        ("contact_id", "T", true),
    ];
    let reserved: Vec<Value> = reserved_names
        .iter()
        .enumerate()
        .map(|(index, (name, kind, read_only))| {
            let mut field = json!({
                "id": format!("_rf{index}_{kind}"),
                "name": name,
                "field_type": if *kind == "D" { "Date" } else { "Text" },
            });
            if *read_only {
                field["read_only"] = Value::Bool(true);
            }
            field
        })
        .collect();
    json(
        StatusCode::OK,
        &json!({
            "custom_fields": custom,
            "reserved_fields": reserved,
            "_metadata": { "self": format!("{}/v3/marketing/field_definitions", shared.base_url) },
        }),
    )
}
