//! HubSpot CRM v3 contacts: batch upsert by email (200, or 207 multi-status with per-input
//! errors), batch read, GDPR delete and read by id.
//!
//! Error bodies follow HubSpot's `Error`/`StandardError` shapes: `{status: "error", message,
//! correlationId, category, ...}`. Per-input failures in a 207 carry `category`
//! `VALIDATION_ERROR` (with a nested `code` such as `INVALID_EMAIL` or
//! `PROPERTY_DOESNT_EXIST`) for real refusals, and `INTERNAL_ERROR` for the injected
//! `partial` fault, so a client can tell a transient failure from a bad record. Property
//! values are stored and returned as strings; emails are lower-cased.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use crate::SimContact;
use crate::common::{
    is_valid_email, json, lock, now_millis, query_pairs, random_subset, read_request, with_fault,
};
use crate::state::Shared;

/// HubSpot's batch endpoints take at most 100 inputs (documented, not in the spec).
const MAX_BATCH: usize = 100;
/// The first contact id handed out.
const FIRST_ID: u64 = 1001;

/// Contacts by lower-cased email.
#[derive(Default)]
pub(crate) struct Store {
    by_email: BTreeMap<String, Contact>,
    next_id: u64,
}

#[derive(Clone)]
struct Contact {
    id: String,
    email: String,
    properties: BTreeMap<String, String>,
    created_at: String,
    updated_at: String,
}

impl Store {
    pub(crate) fn contacts(&self) -> BTreeMap<String, SimContact> {
        self.by_email
            .iter()
            .map(|(email, contact)| {
                (
                    email.clone(),
                    SimContact {
                        id: contact.id.clone(),
                        email: email.clone(),
                        status: None,
                        fields: contact
                            .properties
                            .iter()
                            .filter(|(name, _)| name.as_str() != "email")
                            .map(|(name, value)| (name.clone(), Value::String(value.clone())))
                            .collect(),
                    },
                )
            })
            .collect()
    }

    fn by_id(&self, id: &str) -> Option<&Contact> {
        self.by_email.values().find(|contact| contact.id == id)
    }

    fn allocate_id(&mut self) -> String {
        let id = FIRST_ID + self.next_id;
        self.next_id += 1;
        id.to_string()
    }
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/crm/v3/objects/contacts/batch/upsert", post(batch_upsert))
        .route("/crm/v3/objects/contacts/batch/read", post(batch_read))
        .route("/crm/v3/objects/contacts/gdpr-delete", post(gdpr_delete))
        .route("/crm/v3/objects/contacts/{contact_id}", get(get_contact))
        .fallback(not_found)
}

/// An error answer in HubSpot's shape.
pub(crate) fn error(status: StatusCode, category: &str, message: &str) -> Response {
    json(
        status,
        &json!({
            "status": "error",
            "message": message,
            "correlationId": uuid::Uuid::new_v4().to_string(),
            "category": category,
        }),
    )
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "OBJECT_NOT_FOUND",
        "resource not found",
    )
}

/// Parses the body as a JSON object or answers HubSpot's 400.
fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, Box<Response>> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "Invalid input JSON on line 1: the body must be a JSON object",
        ))),
    }
}

/// A per-input failure of a batch call.
fn input_error(category: &str, code: &str, message: &str, id: &str) -> Value {
    json!({
        "status": "error",
        "category": category,
        "message": message,
        "context": { "ids": [id] },
        "errors": [{ "message": message, "code": code }],
    })
}

fn result_json(contact: &Contact, properties: Map<String, Value>, new: Option<bool>) -> Value {
    let mut result = json!({
        "id": contact.id,
        "properties": properties,
        "createdAt": contact.created_at,
        "updatedAt": contact.updated_at,
        "archived": false,
    });
    if let Some(new) = new {
        result["new"] = Value::Bool(new);
    }
    result
}

/// Every stored property plus HubSpot's defaults.
fn all_properties(contact: &Contact) -> Map<String, Value> {
    let mut properties: Map<String, Value> = contact
        .properties
        .iter()
        .map(|(name, value)| (name.clone(), Value::String(value.clone())))
        .collect();
    properties.insert("email".to_owned(), Value::String(contact.email.clone()));
    default_properties(contact, &mut properties);
    properties
}

fn default_properties(contact: &Contact, properties: &mut Map<String, Value>) {
    properties.insert("hs_object_id".to_owned(), Value::String(contact.id.clone()));
    properties.insert(
        "createdate".to_owned(),
        Value::String(contact.created_at.clone()),
    );
    properties.insert(
        "lastmodifieddate".to_owned(),
        Value::String(contact.updated_at.clone()),
    );
}

/// One input that passed validation.
struct ValidInput {
    /// The input's `id` as sent (for error contexts).
    given_id: String,
    /// The contact it targets: by email, or by existing object id.
    target: Target,
    properties: BTreeMap<String, String>,
}

enum Target {
    Email(String),
    Existing(String),
}

/// A batch request's other members, and its `inputs`.
type BatchBody = (Map<String, Value>, Vec<Value>);

/// A batch request's body (a JSON object) and its `inputs` (required, at most
/// [`MAX_BATCH`], taken out of the body), or the 400 HubSpot answers.
fn batch_body(bytes: &[u8]) -> Result<BatchBody, Box<Response>> {
    let mut body = parse_object(bytes)?;
    let Some(Value::Array(inputs)) = body.remove("inputs") else {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "Invalid input JSON: `inputs` is required",
        )));
    };
    if inputs.len() > MAX_BATCH {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &format!("Batch input limit exceeded: at most {MAX_BATCH} inputs per request"),
        )));
    }
    Ok((body, inputs))
}

async fn batch_upsert(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (plan, _query, bytes) = read_request(request).await;
    let (_, inputs) = match batch_body(&bytes) {
        Ok(parsed) => parsed,
        Err(response) => return *response,
    };
    let started_at = now_millis();
    let known = &shared.config.hubspot_properties;
    let mut errors = Vec::new();
    let mut valid = Vec::new();
    let mut seen = BTreeSet::new();
    {
        let state = lock(&shared.hubspot);
        for input in inputs {
            let given_id = match input.get("id") {
                Some(Value::String(id)) => id.clone(),
                Some(Value::Number(id)) => id.to_string(),
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "VALIDATION_ERROR",
                        "Invalid input JSON: every input needs an `id`",
                    );
                }
            };
            let Some(raw_properties) = input.get("properties").and_then(Value::as_object) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "VALIDATION_ERROR",
                    "Invalid input JSON: every input needs `properties`",
                );
            };
            let id_property = input.get("idProperty").and_then(Value::as_str);
            let target = match id_property {
                Some("email") => Target::Email(given_id.trim().to_lowercase()),
                None | Some("hs_object_id") => Target::Existing(given_id.clone()),
                Some(_) => {
                    errors.push(input_error(
                        "VALIDATION_ERROR",
                        "INVALID_ID_PROPERTY",
                        "The idProperty is not a unique property of contacts",
                        &given_id,
                    ));
                    continue;
                }
            };
            let key = match &target {
                Target::Email(email) => email.clone(),
                Target::Existing(id) => format!("#{id}"),
            };
            if !seen.insert(key) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "VALIDATION_ERROR",
                    "Duplicate IDs found in batch input",
                );
            }
            let mut properties = BTreeMap::new();
            let mut unknown = None;
            for (name, value) in raw_properties {
                if !known.contains(name) {
                    unknown = Some(name.clone());
                    break;
                }
                let value = match value {
                    Value::String(text) => text.clone(),
                    Value::Null => String::new(),
                    Value::Bool(flag) => flag.to_string(),
                    Value::Number(number) => number.to_string(),
                    other => other.to_string(),
                };
                properties.insert(name.clone(), value);
            }
            if let Some(name) = unknown {
                errors.push(input_error(
                    "VALIDATION_ERROR",
                    "PROPERTY_DOESNT_EXIST",
                    &format!("Property values were not valid: Property \"{name}\" does not exist"),
                    &given_id,
                ));
                continue;
            }
            match &target {
                Target::Email(email) => {
                    let property_email = properties.get("email").map(|email| email.to_lowercase());
                    if !is_valid_email(email)
                        || property_email.is_some_and(|other| !is_valid_email(&other))
                    {
                        errors.push(input_error(
                            "VALIDATION_ERROR",
                            "INVALID_EMAIL",
                            "Property values were not valid: Email address is invalid",
                            &given_id,
                        ));
                        continue;
                    }
                }
                Target::Existing(id) => {
                    if state.by_id(id).is_none() {
                        errors.push(input_error(
                            "OBJECT_NOT_FOUND",
                            "OBJECT_NOT_FOUND",
                            "Object not found: no contact has this id",
                            &given_id,
                        ));
                        continue;
                    }
                }
            }
            valid.push(ValidInput {
                given_id,
                target,
                properties,
            });
        }
    }

    let mut fault = None;
    if let Some(seed) = plan.partial
        && !valid.is_empty()
    {
        let failing = random_subset(seed, valid.len());
        let mut kept = Vec::new();
        for (input, fails) in valid.into_iter().zip(failing) {
            if fails {
                errors.push(input_error(
                    "INTERNAL_ERROR",
                    "INTERNAL_ERROR",
                    "An internal error occurred while writing this record; retry it",
                    &input.given_id,
                ));
            } else {
                kept.push(input);
            }
        }
        valid = kept;
        fault = Some("partial");
    }

    let mut results = Vec::new();
    if plan.not_applied {
        fault = Some("not_applied");
    } else {
        let mut state = lock(&shared.hubspot);
        let now = now_millis();
        for input in valid {
            let (contact, new) = apply(&mut state, input, &now);
            results.push(result_json(&contact, all_properties(&contact), Some(new)));
        }
        drop(state);
        shared.count_writes(results.len() as u64);
    }
    let mut body = json!({
        "status": "COMPLETE",
        "results": results,
        "startedAt": started_at,
        "completedAt": now_millis(),
    });
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        body["numErrors"] = json!(errors.len());
        body["errors"] = Value::Array(errors);
        StatusCode::MULTI_STATUS
    };
    let response = json(status, &body);
    match fault {
        Some(fault) => with_fault(response, fault),
        None => response,
    }
}

/// Creates or updates one contact; properties left out keep their value.
fn apply(state: &mut Store, input: ValidInput, now: &str) -> (Contact, bool) {
    let existing_email = match &input.target {
        Target::Email(email) => email.clone(),
        Target::Existing(id) => state
            .by_id(id)
            .map(|contact| contact.email.clone())
            .unwrap_or_default(),
    };
    let new = !state.by_email.contains_key(&existing_email);
    let mut contact = match state.by_email.remove(&existing_email) {
        Some(contact) => contact,
        None => Contact {
            id: state.allocate_id(),
            email: existing_email.clone(),
            properties: BTreeMap::new(),
            created_at: now.to_owned(),
            updated_at: now.to_owned(),
        },
    };
    for (name, value) in input.properties {
        if name == "email" {
            // Setting `email` changes the contact's key (a rename), as in HubSpot.
            contact.email = value.trim().to_lowercase();
            continue;
        }
        contact.properties.insert(name, value);
    }
    contact.updated_at = now.to_owned();
    state
        .by_email
        .insert(contact.email.clone(), contact.clone());
    (contact, new)
}

async fn batch_read(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (_plan, _query, bytes) = read_request(request).await;
    let (body, inputs) = match batch_body(&bytes) {
        Ok(parsed) => parsed,
        Err(response) => return *response,
    };
    let by_email = match body.get("idProperty").and_then(Value::as_str) {
        Some("email") => true,
        None | Some("hs_object_id") => false,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "The idProperty is not a unique property of contacts",
            );
        }
    };
    let requested: Vec<String> = body
        .get("properties")
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let started_at = now_millis();
    let state = lock(&shared.hubspot);
    let mut results = Vec::new();
    let mut missing = Vec::new();
    for input in inputs {
        let id = match input.get("id") {
            Some(Value::String(id)) => id.clone(),
            Some(Value::Number(id)) => id.to_string(),
            _ => continue,
        };
        let found = if by_email {
            state.by_email.get(&id.trim().to_lowercase())
        } else {
            state.by_id(&id)
        };
        match found {
            Some(contact) => results.push(result_json(
                contact,
                requested_properties(contact, &requested),
                None,
            )),
            None => missing.push(Value::String(id)),
        }
    }
    drop(state);
    let mut body = json!({
        "status": "COMPLETE",
        "results": results,
        "startedAt": started_at,
        "completedAt": now_millis(),
    });
    if missing.is_empty() {
        return json(StatusCode::OK, &body);
    }
    body["numErrors"] = json!(1);
    body["errors"] = json!([{
        "status": "error",
        "category": "OBJECT_NOT_FOUND",
        "message": "Could not get some CONTACT objects, they may be deleted or not exist. Check that ids are valid.",
        "context": { "ids": missing },
    }]);
    json(StatusCode::MULTI_STATUS, &body)
}

/// The requested properties (null when unset) plus HubSpot's defaults.
fn requested_properties(contact: &Contact, requested: &[String]) -> Map<String, Value> {
    let mut properties = Map::new();
    for name in requested {
        let value = if name == "email" {
            Value::String(contact.email.clone())
        } else {
            contact
                .properties
                .get(name)
                .map_or(Value::Null, |value| Value::String(value.clone()))
        };
        properties.insert(name.clone(), value);
    }
    default_properties(contact, &mut properties);
    properties
}

async fn get_contact(
    State(shared): State<Arc<Shared>>,
    Path(contact_id): Path<String>,
    request: Request,
) -> Response {
    let (_plan, query, _bytes) = read_request(request).await;
    let pairs = query_pairs(query.as_deref());
    let by_email = pairs
        .iter()
        .any(|(name, value)| name == "idProperty" && value == "email");
    let requested: Vec<String> = pairs
        .iter()
        .filter(|(name, _)| name == "properties")
        .flat_map(|(_, value)| value.split(',').map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let state = lock(&shared.hubspot);
    let found = if by_email {
        state.by_email.get(&contact_id.to_lowercase())
    } else {
        state.by_id(&contact_id)
    };
    match found {
        Some(contact) => {
            let properties = if requested.is_empty() {
                all_properties(contact)
            } else {
                requested_properties(contact, &requested)
            };
            json(StatusCode::OK, &result_json(contact, properties, None))
        }
        None => error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "resource not found",
        ),
    }
}

/// `POST /crm/v3/objects/contacts/gdpr-delete` `{"objectId": ID}` or
/// `{"objectId": EMAIL, "idProperty": "email"}` → 204.
///
/// HubSpot documents that an email matching no contact is added to a blocklist (and the call
/// succeeds); the simulator answers 404 for any absent contact instead, so that a client can
/// see it deleted nothing, and keeps no blocklist.
async fn gdpr_delete(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (plan, _query, bytes) = read_request(request).await;
    let body = match parse_object(&bytes) {
        Ok(body) => body,
        Err(response) => return *response,
    };
    let object_id = match body.get("objectId") {
        Some(Value::String(id)) => id.clone(),
        Some(Value::Number(id)) => id.to_string(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "Invalid input JSON: `objectId` is required",
            );
        }
    };
    let by_email = match body.get("idProperty").and_then(Value::as_str) {
        Some("email") => true,
        None | Some("hs_object_id") => false,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "The idProperty is not a unique property of contacts",
            );
        }
    };
    let mut state = lock(&shared.hubspot);
    let email = if by_email {
        Some(object_id.trim().to_lowercase()).filter(|email| state.by_email.contains_key(email))
    } else {
        state.by_id(&object_id).map(|contact| contact.email.clone())
    };
    let Some(email) = email else {
        return error(
            StatusCode::NOT_FOUND,
            "OBJECT_NOT_FOUND",
            "resource not found",
        );
    };
    if plan.not_applied {
        return with_fault(StatusCode::NO_CONTENT.into_response(), "not_applied");
    }
    state.by_email.remove(&email);
    drop(state);
    shared.count_writes(1);
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_numeric_strings() {
        let mut state = Store::default();
        assert_eq!(state.allocate_id(), "1001");
        assert_eq!(state.allocate_id(), "1002");
        assert!(crate::common::is_valid_email("a@example.com"));
    }
}
