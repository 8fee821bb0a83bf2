//! HubSpot CRM v3 contacts.
//!
//! * Upsert: `POST /crm/v3/objects/contacts/batch/upsert` with ≤100 inputs
//!   `{"idProperty":"email","id":<email>,"properties":{..strings..},"objectWriteTraceId":"trib-<i>"}`.
//!   HubSpot answers 200 (all applied) or 207 (multi-status: `results` plus `errors`); a 400
//!   may refuse the whole batch because of one input. Each record is matched to its result
//!   by the echoed `objectWriteTraceId` (then by the `email` property), and to its errors by
//!   the trace id or email in the error's `context`.
//! * Per record: an error with category `VALIDATION_ERROR` or `INVALID_EMAIL` is
//!   `Failed(InvalidRecord)`, any other category `Failed(Transient)`; a result is
//!   `Confirmed{esp_id: contact id}` only when its `properties` carry every sent value;
//!   no result and no error is `NotApplied`.
//! * Delete: `POST /crm/v3/objects/contacts/gdpr-delete` `{"objectId": <id>}` per contact
//!   (concurrently); after a 204, `GET /crm/v3/objects/contacts/{id}` must answer 404 (else
//!   `NotApplied`); a 404 to the delete means already gone and is confirmed.
//! * Limits: 100 inputs per call, 100 calls per 10 s (the Free/Starter private-app limit;
//!   the limiter rises to what `X-HubSpot-RateLimit-Max` advertises). Partial updates: yes.
//!
//! Property values are strings: numbers and booleans in their JSON form, `null` as `""`
//! (which clears the property).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Map, Value, json};
use trib_consent::Permitted;

use super::{collapse, run_each, trim_base, value_as_text, values_match, verify_gone};
use crate::connector::{
    CallError, Connector, Contact, DeleteTarget, DestinationKind, ErrorClass, ItemOutcome, Limits,
};
use crate::http::{Api, Auth, DEFAULT_TIMEOUT};

/// The default API root.
pub const DEFAULT_BASE_URL: &str = "https://api.hubapi.com";

/// HubSpot's documented limits (private app, Free/Starter tier).
pub const LIMITS: Limits = Limits {
    max_batch: 100,
    max_delete_batch: 100,
    max_concurrency: 10,
    rate_max: Some(100),
    rate_interval: Duration::from_secs(10),
    partial_updates: true,
};

/// The error categories that mean the record's content is refused.
pub const INVALID_RECORD_CATEGORIES: [&str; 2] = ["VALIDATION_ERROR", "INVALID_EMAIL"];

/// One HubSpot destination.
#[derive(Clone)]
pub struct HubspotConfig {
    /// The API root; `None` means [`DEFAULT_BASE_URL`].
    pub base_url: Option<String>,
    /// A private-app (or OAuth) access token.
    pub token: String,
    /// Per-call timeout.
    pub timeout: Duration,
}

impl HubspotConfig {
    /// A config for the real API with the default timeout.
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            base_url: None,
            token: token.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for HubspotConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubspotConfig")
            .field("base_url", &self.base_url)
            .field("token", &"***")
            .finish_non_exhaustive()
    }
}

/// The running HubSpot connector.
pub struct HubspotConnector {
    api: Api,
    base: Arc<str>,
}

impl HubspotConnector {
    /// Labels the connector's API metrics with the configured destination name.
    pub fn named(mut self, name: &str) -> Self {
        self.api = self.api.labelled(name);
        self
    }

    /// Builds the connector.
    pub fn new(config: &HubspotConfig) -> Result<Self, CallError> {
        let base = trim_base(config.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL));
        Ok(Self {
            api: Api::new(
                DestinationKind::Hubspot,
                &LIMITS,
                Auth::Bearer(config.token.clone()),
                config.timeout,
            )?,
            base: base.into(),
        })
    }

    /// The HTTP client (its limiter), for the engine's metrics and tests.
    pub fn api(&self) -> &Api {
        &self.api
    }
}

/// The trace id of the `index`th input (echoed by HubSpot in results and error contexts).
pub fn trace_id(index: usize) -> String {
    format!("trib-{index}")
}

/// The `batch/upsert` body.
pub fn upsert_body(contacts: &[Contact]) -> Value {
    let inputs: Vec<Value> = contacts
        .iter()
        .enumerate()
        .map(|(index, contact)| {
            let properties: Map<String, Value> = contact
                .fields
                .iter()
                .map(|(name, value)| (name.clone(), Value::String(value_as_text(value))))
                .collect();
            json!({
                "idProperty": "email",
                "id": contact.email,
                "properties": properties,
                "objectWriteTraceId": trace_id(index),
            })
        })
        .collect();
    json!({ "inputs": inputs })
}

/// Reads a `batch/upsert` answer (200, 207, or a 400 that names inputs) into one outcome
/// per contact.
pub fn upsert_outcomes(contacts: &[Contact], body: &Value) -> Vec<ItemOutcome> {
    let index_of = lookup(contacts);
    let mut outcomes: Vec<Option<ItemOutcome>> = vec![None; contacts.len()];
    let results = body.get("results").and_then(Value::as_array);
    for result in results.into_iter().flatten() {
        let properties = result.get("properties");
        let by_trace = result.get("objectWriteTraceId").and_then(Value::as_str);
        let by_email = properties
            .and_then(|properties| properties.get("email"))
            .and_then(Value::as_str);
        let Some(index) = by_trace
            .and_then(|trace| index_of.get(trace))
            .or_else(|| by_email.and_then(|email| index_of.get(email.to_lowercase().as_str())))
            .copied()
        else {
            continue;
        };
        outcomes[index] = Some(confirm_result(&contacts[index], result));
    }
    // A standalone 400 is one error object; a 207 lists them under `errors`.
    let errors: Vec<&Value> = match body.get("errors").and_then(Value::as_array) {
        Some(errors) if body.get("results").is_some() => errors.iter().collect(),
        _ if body.get("category").is_some() => vec![body],
        _ => Vec::new(),
    };
    for error in errors {
        let category = error
            .get("category")
            .and_then(Value::as_str)
            .unwrap_or("UNKNOWN");
        let class = if INVALID_RECORD_CATEGORIES.contains(&category) {
            ErrorClass::InvalidRecord
        } else {
            ErrorClass::Transient
        };
        let mut texts = Vec::new();
        collect_strings(error.get("context"), &mut texts);
        collect_strings(error.get("id"), &mut texts);
        collect_strings(error.get("objectWriteTraceId"), &mut texts);
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default();
        for text in texts {
            if let Some(index) = index_of.get(text.to_lowercase().as_str()).copied()
                && outcomes[index].is_none()
            {
                // The ESP's message quotes the refused value (a name, a phone): keep only the
                // category and the property names it refers to.
                let _ = message;
                let properties = property_names(error);
                outcomes[index] = Some(ItemOutcome::Failed {
                    class,
                    detail: if properties.is_empty() {
                        category.to_string()
                    } else {
                        format!("{category}: property {}", properties.join(", "))
                    },
                });
            }
        }
    }
    outcomes
        .into_iter()
        .map(|outcome| {
            outcome.unwrap_or_else(|| ItemOutcome::NotApplied {
                detail: "no result for the contact in the batch response".to_owned(),
            })
        })
        .collect()
}

/// The property names an error's `errors[].context.propertyName` (or `name`) fields mention.
fn property_names(error: &Value) -> Vec<String> {
    let mut names = Vec::new();
    for detail in error
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for key in ["propertyName", "name"] {
            let found = detail
                .get("context")
                .and_then(|context| context.get(key))
                .into_iter()
                .flat_map(|value| match value {
                    Value::Array(items) => items.clone(),
                    other => vec![other.clone()],
                });
            for value in found {
                if let Some(text) = value.as_str()
                    && !text.contains('@')
                    && text.len() <= 100
                    && !names.iter().any(|n| n == text)
                {
                    names.push(text.to_owned());
                }
            }
        }
    }
    names
}

/// Confirms one result against the contact: every sent property must read back equal.
pub fn confirm_result(contact: &Contact, result: &Value) -> ItemOutcome {
    let Some(id) = result.get("id").and_then(id_text) else {
        return ItemOutcome::NotApplied {
            detail: "result without a contact id".to_owned(),
        };
    };
    let properties = result.get("properties");
    for (name, value) in &contact.fields {
        let held = properties.and_then(|properties| properties.get(name));
        let sent = Value::String(value_as_text(value));
        if !values_match(&sent, held) {
            return ItemOutcome::NotApplied {
                detail: format!("property {name} not applied"),
            };
        }
    }
    ItemOutcome::Confirmed { esp_id: id }
}

#[async_trait::async_trait]
impl Connector for HubspotConnector {
    fn kind(&self) -> DestinationKind {
        DestinationKind::Hubspot
    }

    fn limits(&self) -> Limits {
        LIMITS
    }

    async fn upsert(&self, batch: Vec<Permitted<Contact>>) -> Result<Vec<ItemOutcome>, CallError> {
        let contacts: Vec<Contact> = batch.into_iter().map(Permitted::into_inner).collect();
        if contacts.is_empty() {
            return Ok(Vec::new());
        }
        let mut outcomes = Vec::with_capacity(contacts.len());
        for chunk in contacts.chunks(LIMITS.max_batch) {
            let request = self
                .api
                .request(
                    Method::POST,
                    &format!("{}/crm/v3/objects/contacts/batch/upsert", self.base),
                )
                .json(&upsert_body(chunk));
            let response = self.api.send("contacts.batch_upsert", request).await?;
            let body = match response.status {
                200 | 207 => response.json("contacts.batch_upsert")?,
                400 | 422 => {
                    let body = response.json_or_null();
                    let chunk_outcomes = upsert_outcomes(chunk, &body);
                    // A 400 that names none of the inputs refuses the request itself.
                    if chunk_outcomes
                        .iter()
                        .all(|outcome| matches!(outcome, ItemOutcome::NotApplied { .. }))
                    {
                        // e.g. an unknown property: the destination's setup, not a record.
                        return Err(response.error(ErrorClass::Auth, "contacts.batch_upsert"));
                    }
                    body
                }
                404 => return Err(response.error(ErrorClass::Auth, "contacts.batch_upsert")),
                _ => return Err(response.error(ErrorClass::Fatal, "contacts.batch_upsert")),
            };
            outcomes.extend(upsert_outcomes(chunk, &body));
        }
        Ok(outcomes)
    }

    async fn delete(&self, targets: Vec<DeleteTarget>) -> Result<Vec<ItemOutcome>, CallError> {
        let api = self.api.clone();
        let base = self.base.clone();
        let url = format!("{base}/crm/v3/objects/contacts/gdpr-delete");
        let results = run_each(targets, move |target| {
            let api = api.clone();
            let url = url.clone();
            // By contact id, or (an erasure of a push with no known outcome) by email.
            let by_email = target
                .email
                .as_ref()
                .filter(|_| target.esp_id.is_empty())
                .map(|email| email.expose().trim().to_lowercase());
            let (body, contact_url) = match &by_email {
                Some(email) => (
                    json!({ "objectId": email, "idProperty": "email" }),
                    contact_url_by_email(&base, email),
                ),
                None => (
                    json!({ "objectId": target.esp_id }),
                    format!("{base}/crm/v3/objects/contacts/{}", target.esp_id),
                ),
            };
            async move {
                let request = api.request(Method::POST, &url).json(&body);
                let response = api.send("contacts.gdpr_delete", request).await?;
                Ok(match response.status {
                    // Read back: a 204 that deleted nothing must not count as erased.
                    200..=299 => {
                        return verify_gone(&api, "contacts.get", &contact_url, target.esp_id)
                            .await;
                    }
                    404 => ItemOutcome::Confirmed {
                        esp_id: target.esp_id,
                    },
                    400 => ItemOutcome::Failed {
                        class: ErrorClass::InvalidRecord,
                        detail: format!("gdpr-delete: {}", response.error_summary()),
                    },
                    _ => ItemOutcome::Failed {
                        class: ErrorClass::Fatal,
                        detail: format!("gdpr-delete: {}", response.error_summary()),
                    },
                })
            }
        })
        .await;
        collapse(results)
    }
}

/// `GET /crm/v3/objects/contacts/{email}?idProperty=email`, the email percent-encoded as one
/// path segment.
fn contact_url_by_email(base: &str, email: &str) -> String {
    match reqwest::Url::parse(&format!("{base}/crm/v3/objects/contacts")) {
        Ok(mut url) => {
            if let Ok(mut segments) = url.path_segments_mut() {
                segments.push(email);
            }
            url.query_pairs_mut().append_pair("idProperty", "email");
            url.to_string()
        }
        // The base URL was parsed when the connector was built; keep the call well-formed.
        Err(_) => format!("{base}/crm/v3/objects/contacts/{email}?idProperty=email"),
    }
}

/// Trace id and lower-cased email → input index.
fn lookup(contacts: &[Contact]) -> HashMap<String, usize> {
    let mut index_of = HashMap::with_capacity(contacts.len() * 2);
    for (index, contact) in contacts.iter().enumerate() {
        index_of.insert(trace_id(index), index);
        index_of
            .entry(contact.email.to_lowercase())
            .or_insert(index);
    }
    index_of
}

fn collect_strings(value: Option<&Value>, out: &mut Vec<String>) {
    match value {
        Some(Value::String(text)) => out.push(text.clone()),
        Some(Value::Array(items)) => items
            .iter()
            .for_each(|item| collect_strings(Some(item), out)),
        Some(Value::Object(map)) => map
            .values()
            .for_each(|item| collect_strings(Some(item), out)),
        _ => {}
    }
}

fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::test_contact as contact;

    #[test]
    fn body_uses_email_as_id_property_and_string_values() {
        let contacts = [contact(
            "ann@example.com",
            json!({"firstname": "Ann", "score": 3, "vip": true, "plan": null}),
        )];
        assert_eq!(
            upsert_body(&contacts),
            json!({"inputs": [{"idProperty": "email", "id": "ann@example.com",
                "properties": {"firstname": "Ann", "score": "3", "vip": "true", "plan": ""},
                "objectWriteTraceId": "trib-0"}]})
        );
    }

    #[test]
    fn multi_status_answers_are_read_per_contact() {
        let contacts = [
            contact("ann@example.com", json!({"firstname": "Ann"})),
            contact("bob@example.com", json!({"firstname": "Bob"})),
            contact("cat@example.com", json!({"firstname": "Cat"})),
            contact("dan@example.com", json!({"firstname": "Dan"})),
            contact("eve@example.com", json!({"firstname": "Eve"})),
            contact("fay@example.com", json!({"firstname": "Fay"})),
        ];
        let body = json!({
            "status": "COMPLETE",
            "results": [
                // Matched by trace id, value applied.
                {"id": "101", "objectWriteTraceId": "trib-0", "properties": {"email": "ann@example.com", "firstname": "Ann"}},
                // Matched by email (no trace id), value not applied.
                {"id": "102", "properties": {"email": "BOB@example.com", "firstname": "Robert"}},
                // Numeric id.
                {"id": 106, "properties": {"email": "fay@example.com", "firstname": "Fay"}},
            ],
            "numErrors": 2,
            "errors": [
                {"status": "error", "category": "VALIDATION_ERROR", "message": "Email cat@example.com is invalid",
                 "context": {"objectWriteTraceId": ["trib-2"]}},
                {"status": "error", "category": "OBJECT_NOT_FOUND", "message": "later",
                 "context": {"emails": ["dan@example.com"]}},
            ],
        });
        let outcomes = upsert_outcomes(&contacts, &body);
        assert_eq!(
            outcomes[0],
            ItemOutcome::Confirmed {
                esp_id: "101".into()
            }
        );
        assert!(matches!(outcomes[1], ItemOutcome::NotApplied { .. }));
        match &outcomes[2] {
            ItemOutcome::Failed { class, detail } => {
                assert_eq!(*class, ErrorClass::InvalidRecord);
                assert!(!detail.contains('@'), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            outcomes[3],
            ItemOutcome::Failed {
                class: ErrorClass::Transient,
                ..
            }
        ));
        assert!(
            matches!(outcomes[4], ItemOutcome::NotApplied { .. }),
            "no result: not applied"
        );
        assert_eq!(
            outcomes[5],
            ItemOutcome::Confirmed {
                esp_id: "106".into()
            }
        );
    }

    #[test]
    fn a_whole_batch_400_names_the_invalid_input() {
        let contacts = [
            contact("ann@example.com", json!({"firstname": "Ann"})),
            contact("not-an-email", json!({"firstname": "X"})),
        ];
        let body = json!({"status": "error", "category": "INVALID_EMAIL", "message": "Invalid email",
                          "context": {"ids": ["not-an-email"]}});
        let outcomes = upsert_outcomes(&contacts, &body);
        assert!(
            matches!(outcomes[0], ItemOutcome::NotApplied { .. }),
            "retried without the bad one"
        );
        assert!(matches!(
            outcomes[1],
            ItemOutcome::Failed {
                class: ErrorClass::InvalidRecord,
                ..
            }
        ));
    }
}
