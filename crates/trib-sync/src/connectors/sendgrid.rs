//! Twilio SendGrid Marketing Contacts.
//!
//! * Upsert: `PUT /v3/marketing/contacts` `{"list_ids":[..]?, "contacts":[..]}`, split so that
//!   one request holds ≤30,000 contacts and ≤6 MB. A contact carries `email`, the reserved
//!   fields of the spec's `ContactRequest` top-level (as strings), and every other field
//!   name under `custom_fields` (names there are custom field ids such as `e1_T`).
//!   A 400 whose errors name `contacts[i]` fails those records (`InvalidRecord`) and the
//!   others are sent again without them. The 202 `job_id` is polled
//!   (`GET /v3/marketing/contacts/imports/{id}`) with backoff until `completed`, `failed` or
//!   `errored`, within [`SendgridConfig::job_deadline`] (past it: `Transient`).
//! * Confirmation: `POST /v3/marketing/contacts/search/emails` (≤100 emails per call) and a
//!   comparison of every sent field → `Confirmed{esp_id: contact id}`, or `NotApplied`
//!   (not found, a field differs: an errored job, or the search not yet showing the job).
//!   SendGrid writes custom fields by id but returns them keyed by field **name**, so the
//!   connector reads `GET /v3/marketing/field_definitions` (cached; refreshed at most once a
//!   minute when an unknown id is sent) to compare them, and to send each custom value in
//!   its field's type (`Number` fields as numbers, `Text`/`Date` as strings).
//! * A record whose email is not a plausible address is refused locally
//!   (`InvalidRecord`): SendGrid would only count it in the job's `errored_count`, and a
//!   search including it fails as a whole (400).
//! * Delete: `DELETE /v3/marketing/contacts?ids=a,b` (≤100 ids per call), then the job is
//!   polled; a completed job confirms every id, and a 404 (no such contacts) does too.
//! * **Partial updates: yes.** The spec's `UpdateContact` says "Any fields omitted from the
//!   request will remain as they were", so sending only the changed fields is safe.
//! * Rate limits are per endpoint and unpublished: each endpoint has its own limiter
//!   ([`Api::rates_per_endpoint`]), which starts without a rate cap and adopts that endpoint's
//!   `X-RateLimit-Limit`, pausing when its `X-RateLimit-Remaining` reaches 0 until
//!   `X-RateLimit-Reset`; the destination's limiter keeps the concurrency cap.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{StreamExt, stream};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use trib_consent::Permitted;

use super::{Outstanding, plausible_email, poll_job, trim_base, value_as_text, values_match};
use crate::connector::{
    CallError, Connector, Contact, DeleteTarget, DestinationKind, ErrorClass, ItemOutcome, Limits,
};
use crate::http::{Api, Auth, DEFAULT_TIMEOUT, transient};

/// The default API root.
pub const DEFAULT_BASE_URL: &str = "https://api.sendgrid.com";

/// The reserved (top-level) contact fields of the spec's `ContactRequest`; any other field
/// name is a custom field id.
pub const RESERVED_FIELDS: [&str; 13] = [
    "address_line_1",
    "address_line_2",
    "alternate_emails",
    "city",
    "country",
    "email",
    "phone_number_id",
    "external_id",
    "anonymous_id",
    "first_name",
    "last_name",
    "postal_code",
    "state_province_region",
];

/// Most contacts per `PUT` (spec `maxItems`).
pub const MAX_CONTACTS_PER_PUT: usize = 30_000;
/// Most bytes per `PUT` body (docs: 6 MB); a little headroom is kept.
pub const MAX_PUT_BYTES: usize = 6_000_000 - 4_096;
/// Most emails per search call.
pub const MAX_SEARCH: usize = 100;

/// SendGrid's limits. A batch is as large as one `PUT` may be (30,000 contacts; the
/// connector splits it further at 6 MB); its confirmation takes one search per 100 contacts,
/// run [`LIMITS`]`.max_concurrency` at a time.
pub const LIMITS: Limits = Limits {
    max_batch: MAX_CONTACTS_PER_PUT,
    max_delete_batch: 100,
    max_concurrency: 4,
    rate_max: None,
    rate_interval: Duration::from_secs(1),
    partial_updates: true,
};

/// One SendGrid destination.
#[derive(Clone)]
pub struct SendgridConfig {
    /// The API root; `None` means [`DEFAULT_BASE_URL`].
    pub base_url: Option<String>,
    /// The API key (Bearer).
    pub api_key: String,
    /// Lists every upserted contact is added to (may be empty).
    pub list_ids: Vec<String>,
    /// How long to poll an import or delete job before the call counts as transient.
    pub job_deadline: Duration,
    /// Per-call timeout.
    pub timeout: Duration,
}

impl SendgridConfig {
    /// A config for the real API, no lists, a 2-minute job deadline.
    pub fn new(api_key: impl Into<String>) -> Self {
        Self {
            base_url: None,
            api_key: api_key.into(),
            list_ids: Vec::new(),
            job_deadline: Duration::from_secs(120),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for SendgridConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendgridConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"***")
            .field("list_ids", &self.list_ids)
            .finish_non_exhaustive()
    }
}

/// The running SendGrid connector.
pub struct SendgridConnector {
    api: Api,
    base: Arc<str>,
    list_ids: Vec<String>,
    job_deadline: Duration,
    /// The custom field definitions and when they were read.
    fields: Mutex<Option<(Arc<FieldDefinitions>, tokio::time::Instant)>>,
    /// Import jobs whose outcome is unknown (still running at the deadline, or their status
    /// unreadable): nothing is written or deleted until they have finished, so that one
    /// applying late never overwrites a newer write or re-creates a deleted contact. Kept in
    /// memory only (SendGrid has no endpoint that lists running imports).
    outstanding: Outstanding,
}

/// Custom field id (`e1_T`) → (name, type: `Text`, `Number` or `Date`).
pub type FieldDefinitions = HashMap<String, (String, String)>;

/// How often the field definitions may be re-read when an unknown id is sent.
const FIELDS_REFRESH: Duration = Duration::from_secs(60);

/// Whether a job's status is final.
fn job_ended(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "errored")
}

/// An import or delete job's status (the fields read here).
#[derive(Debug, Deserialize)]
struct Job {
    #[serde(default)]
    status: String,
}

impl SendgridConnector {
    /// Labels the connector's API metrics with the configured destination name.
    pub fn named(mut self, name: &str) -> Self {
        self.api = self.api.labelled(name);
        self
    }

    /// Builds the connector.
    pub fn new(config: &SendgridConfig) -> Result<Self, CallError> {
        let base = trim_base(config.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL));
        Ok(Self {
            api: Api::new(
                DestinationKind::Sendgrid,
                &LIMITS,
                Auth::Bearer(config.api_key.clone()),
                config.timeout,
            )?
            .rates_per_endpoint(),
            base: base.into(),
            list_ids: config.list_ids.clone(),
            job_deadline: config.job_deadline,
            fields: Mutex::new(None),
            outstanding: Outstanding::default(),
        })
    }

    /// The custom field definitions, read once and again (at most once a minute) when one
    /// of `needed` is unknown.
    async fn field_definitions(&self, needed: &[&str]) -> Result<Arc<FieldDefinitions>, CallError> {
        let cached = self
            .fields
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some((definitions, read_at)) = &cached {
            let complete = needed.iter().all(|id| definitions.contains_key(*id));
            if complete || read_at.elapsed() < FIELDS_REFRESH {
                return Ok(definitions.clone());
            }
        }
        let request = self.api.request(
            Method::GET,
            &format!("{}/v3/marketing/field_definitions", self.base),
        );
        let body: Value = self
            .api
            .send_expect_success("field_definitions.get", request)
            .await?
            .json("field_definitions.get")?;
        let definitions = Arc::new(parse_field_definitions(&body));
        *self
            .fields
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((definitions.clone(), tokio::time::Instant::now()));
        Ok(definitions)
    }

    /// The HTTP client (its limiter), for the engine's metrics and tests.
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// Sends `indices` of `contacts` in one PUT; on a 400 naming contacts, marks them failed
    /// and sends the rest again. Returns the job id, or `None` when nothing was left to send.
    async fn put_contacts(
        &self,
        contacts: &[Contact],
        definitions: &FieldDefinitions,
        mut indices: Vec<usize>,
        outcomes: &mut [Option<ItemOutcome>],
    ) -> Result<Option<String>, CallError> {
        let url = format!("{}/v3/marketing/contacts", self.base);
        // Each round removes at least one record, or stops.
        loop {
            if indices.is_empty() {
                return Ok(None);
            }
            let chosen: Vec<&Contact> = indices.iter().map(|index| &contacts[*index]).collect();
            let body = put_body(&self.list_ids, &chosen, definitions);
            let request = self.api.request(Method::PUT, &url).json(&body);
            let response = self.api.send("contacts.put", request).await?;
            match response.status {
                200..=299 => {
                    let job_id =
                        job_id(&response.json::<Value>("contacts.put")?).ok_or_else(|| {
                            transient(Some(response.status), "contacts.put: no job_id".to_owned())
                        })?;
                    return Ok(Some(job_id));
                }
                400 => {
                    let refused = refused_positions(&response.json_or_null(), chosen.len());
                    if refused.is_empty() {
                        return Err(response.error(ErrorClass::Fatal, "contacts.put"));
                    }
                    for (position, detail) in refused {
                        outcomes[indices[position]] = Some(ItemOutcome::Failed {
                            class: ErrorClass::InvalidRecord,
                            detail,
                        });
                    }
                    indices.retain(|index| outcomes[*index].is_none());
                }
                404 => return Err(response.error(ErrorClass::Auth, "contacts.put")),
                _ => return Err(response.error(ErrorClass::Fatal, "contacts.put")),
            }
        }
    }

    /// Looks at the import jobs whose outcome is unknown: finished (or unknown to SendGrid)
    /// ones are forgotten; while one still runs, the call fails as transient before sending
    /// anything (its records stay pending and are retried later).
    async fn wait_for_outstanding(&self) -> Result<(), CallError> {
        self.outstanding
            .wait(
                &self.api,
                "contacts.import_status",
                "contacts job",
                |id| format!("{}/v3/marketing/contacts/imports/{id}", self.base),
                job_ended,
            )
            .await
    }

    /// Polls a job until it ends (see [`poll_job`]); `Ok(status)` is `completed`, `failed`
    /// or `errored`.
    async fn wait_for_job(&self, job_id: &str) -> Result<String, CallError> {
        let url = format!("{}/v3/marketing/contacts/imports/{job_id}", self.base);
        let job = poll_job(
            self.job_deadline,
            || self.api.get_json::<Job>("contacts.import_status", &url),
            |job| job_ended(&job.status),
            |job| {
                transient(
                    None,
                    format!("contacts job still {} at the deadline", job.status),
                )
            },
        )
        .await?;
        Ok(job.status)
    }

    /// PUTs the contacts at `chunk` (≤ 30,000, ≤ 6 MB), waits for the job, and confirms them:
    /// outcomes go to `outcomes`, a failed search to `failed` for its contacts. `Err` when
    /// the PUT or the job failed.
    async fn put_and_confirm(
        &self,
        contacts: &[Contact],
        definitions: &FieldDefinitions,
        chunk: &[usize],
        outcomes: &mut [Option<ItemOutcome>],
        failed: &mut [Option<CallError>],
    ) -> Result<(), CallError> {
        let Some(job_id) = self
            .put_contacts(contacts, definitions, chunk.to_vec(), outcomes)
            .await?
        else {
            return Ok(());
        };
        let status = match self.wait_for_job(&job_id).await {
            Ok(status) => status,
            Err(error) => {
                self.outstanding.add(job_id);
                return Err(error);
            }
        };
        if status != "completed" {
            tracing::warn!(job_status = %status, "sendgrid upsert job did not complete");
        }
        let sent: Vec<usize> = chunk
            .iter()
            .copied()
            .filter(|index| outcomes[*index].is_none())
            .collect();
        let to_confirm: Vec<&Contact> = sent.iter().map(|index| &contacts[*index]).collect();
        for (index, result) in sent
            .into_iter()
            .zip(self.confirm(&to_confirm, definitions).await)
        {
            match result {
                Ok(outcome) => outcomes[index] = Some(outcome),
                Err(error) => failed[index] = Some(error),
            }
        }
        Ok(())
    }

    /// Reads `contacts` back (one search per 100, four at a time; the destination's limiter
    /// and concurrency cap still apply to each call): one result per contact, in order, an
    /// `Err` for the contacts of a search that failed.
    async fn confirm(
        &self,
        contacts: &[&Contact],
        definitions: &FieldDefinitions,
    ) -> Vec<Result<ItemOutcome, CallError>> {
        let searches: Vec<_> = contacts
            .chunks(MAX_SEARCH)
            .map(|chunk| self.confirm_chunk(chunk, definitions))
            .collect();
        let mut searches = stream::iter(searches).buffered(LIMITS.max_concurrency);
        let mut results = Vec::with_capacity(contacts.len());
        let mut chunks = contacts.chunks(MAX_SEARCH);
        while let Some(answer) = searches.next().await {
            let size = chunks.next().map_or(0, <[&Contact]>::len);
            match answer {
                Ok(outcomes) => results.extend(outcomes.into_iter().map(Ok)),
                Err(error) => results.extend(std::iter::repeat_n(Err(error), size)),
            }
        }
        results
    }

    /// Confirms at most [`MAX_SEARCH`] contacts with one search.
    async fn confirm_chunk(
        &self,
        chunk: &[&Contact],
        definitions: &FieldDefinitions,
    ) -> Result<Vec<ItemOutcome>, CallError> {
        let emails: Vec<String> = chunk
            .iter()
            .map(|contact| contact.email.to_lowercase())
            .collect();
        let result = self.search_emails(&emails).await?;
        Ok(chunk
            .iter()
            .map(|contact| confirm_contact(contact, &result, definitions))
            .collect())
    }

    /// Contact ids by lower-cased email, for the emails SendGrid holds (one search per 100).
    async fn contact_ids(&self, emails: &[String]) -> Result<HashMap<String, String>, CallError> {
        let mut ids = HashMap::new();
        for chunk in emails.chunks(MAX_SEARCH) {
            let result = self.search_emails(chunk).await?;
            for email in chunk {
                if let Some(id) = result
                    .get("result")
                    .and_then(|result| result.get(email))
                    .and_then(|entry| entry.get("contact"))
                    .and_then(|contact| contact.get("id"))
                    .and_then(Value::as_str)
                    .filter(|id| !id.is_empty())
                {
                    ids.insert(email.clone(), id.to_owned());
                }
            }
        }
        Ok(ids)
    }

    /// `POST /v3/marketing/contacts/search/emails` for at most [`MAX_SEARCH`] lower-cased
    /// emails: the answer, or `Null` when none of them is known (yet).
    async fn search_emails(&self, emails: &[String]) -> Result<Value, CallError> {
        let url = format!("{}/v3/marketing/contacts/search/emails", self.base);
        let request = self
            .api
            .request(Method::POST, &url)
            .json(&json!({ "emails": emails }));
        let response = self.api.send("contacts.search_emails", request).await?;
        match response.status {
            200 => response.json::<Value>("contacts.search_emails"),
            404 => Ok(Value::Null),
            _ => Err(response.error(ErrorClass::Fatal, "contacts.search_emails")),
        }
    }
}

#[async_trait::async_trait]
impl Connector for SendgridConnector {
    fn kind(&self) -> DestinationKind {
        DestinationKind::Sendgrid
    }

    fn limits(&self) -> Limits {
        LIMITS
    }

    async fn upsert(&self, batch: Vec<Permitted<Contact>>) -> Result<Vec<ItemOutcome>, CallError> {
        self.wait_for_outstanding().await?;
        let contacts: Vec<Contact> = batch.into_iter().map(Permitted::into_inner).collect();
        let mut outcomes: Vec<Option<ItemOutcome>> = contacts
            .iter()
            .map(|contact| {
                (!plausible_email(&contact.email)).then(|| ItemOutcome::Failed {
                    class: ErrorClass::InvalidRecord,
                    detail: "email is not a valid address".to_owned(),
                })
            })
            .collect();
        let custom_ids: Vec<&str> = contacts
            .iter()
            .flat_map(|contact| contact.fields.keys())
            .map(String::as_str)
            .filter(|name| !RESERVED_FIELDS.contains(name))
            .collect();
        let definitions = if custom_ids.is_empty() {
            Arc::new(FieldDefinitions::new())
        } else {
            self.field_definitions(&custom_ids).await?
        };
        let valid: Vec<usize> = (0..contacts.len())
            .filter(|index| outcomes[*index].is_none())
            .collect();
        // A failed PUT, job or search fails only the contacts it was for; the batch fails as
        // a whole (for the engine's breaker and `Retry-After`) only when every contact did.
        let mut failed: Vec<Option<CallError>> = vec![None; contacts.len()];
        for chunk in split_for_put(&self.list_ids, &contacts, &valid, &definitions) {
            if let Err(error) = self
                .put_and_confirm(&contacts, &definitions, &chunk, &mut outcomes, &mut failed)
                .await
            {
                for index in chunk {
                    if outcomes[index].is_none() && failed[index].is_none() {
                        failed[index] = Some(error.clone());
                    }
                }
            }
        }
        super::collapse(
            outcomes
                .into_iter()
                .zip(failed)
                .map(|(outcome, failed)| match (outcome, failed) {
                    (Some(outcome), _) => Ok(outcome),
                    (None, Some(error)) => Err(error),
                    (None, None) => Ok(ItemOutcome::NotApplied {
                        detail: "not sent".to_owned(),
                    }),
                })
                .collect(),
        )
    }

    async fn delete(&self, targets: Vec<DeleteTarget>) -> Result<Vec<ItemOutcome>, CallError> {
        // Erasures wait too: an import applying after the delete would re-create the person.
        self.wait_for_outstanding().await?;
        // Targets known only by email get their contact ids first (one search per 100); one
        // that SendGrid does not hold is already gone (its id stays empty).
        let by_email = |target: &DeleteTarget| {
            target
                .email
                .as_ref()
                .filter(|_| target.esp_id.is_empty())
                .map(|email| email.expose().trim().to_lowercase())
        };
        let emails: Vec<String> = targets.iter().filter_map(by_email).collect();
        let ids_by_email = self.contact_ids(&emails).await?;
        let mut targets = targets;
        for target in &mut targets {
            if let Some(id) = by_email(target).and_then(|email| ids_by_email.get(&email)) {
                target.esp_id = id.clone();
            }
        }
        let held: Vec<&str> = targets
            .iter()
            .map(|target| target.esp_id.as_str())
            .filter(|id| !id.is_empty())
            .collect();
        for ids in held.chunks(LIMITS.max_delete_batch) {
            let request = self
                .api
                .request(
                    Method::DELETE,
                    &format!("{}/v3/marketing/contacts", self.base),
                )
                .query(&[("ids", ids.join(","))]);
            let response = self.api.send("contacts.delete", request).await?;
            match response.status {
                200..=299 => {
                    if let Some(job_id) = job_id(&response.json_or_null()) {
                        let status = self.wait_for_job(&job_id).await?;
                        if status != "completed" {
                            return Err(transient(None, format!("contacts delete job {status}")));
                        }
                    }
                }
                // No such contacts: already gone.
                404 => {}
                400 => return Err(response.error(ErrorClass::Fatal, "contacts.delete")),
                _ => return Err(response.error(ErrorClass::Fatal, "contacts.delete")),
            }
        }
        // Every call succeeded (a failure returned above): every target is gone.
        Ok(targets
            .into_iter()
            .map(|target| ItemOutcome::Confirmed {
                esp_id: target.esp_id,
            })
            .collect())
    }
}

/// One contact of the PUT body: `email`, reserved fields top-level (as text, but
/// `alternate_emails` as a list), other fields under `custom_fields`, in their defined type.
pub fn contact_body(contact: &Contact, definitions: &FieldDefinitions) -> Value {
    let mut body = Map::new();
    body.insert(
        "email".to_owned(),
        Value::String(contact.email.to_lowercase()),
    );
    let mut custom = Map::new();
    for (name, value) in &contact.fields {
        if name == "email" {
            continue;
        }
        if RESERVED_FIELDS.contains(&name.as_str()) {
            let value = if name == "alternate_emails" {
                value.clone()
            } else {
                Value::String(value_as_text(value))
            };
            body.insert(name.clone(), value);
        } else {
            let field_type = definitions
                .get(name)
                .map(|(_, field_type)| field_type.as_str());
            custom.insert(name.clone(), typed_custom_value(value, field_type));
        }
    }
    if !custom.is_empty() {
        body.insert("custom_fields".to_owned(), Value::Object(custom));
    }
    Value::Object(body)
}

/// A custom field value in its field's type: numbers for `Number` (when the value reads as
/// one), text for `Text` and `Date`, as it is for an unknown field (SendGrid refuses it).
pub fn typed_custom_value(value: &Value, field_type: Option<&str>) -> Value {
    match (field_type, value) {
        (Some("Number"), Value::String(text)) => text
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| text.trim().parse::<f64>().map(Value::from))
            .unwrap_or_else(|_| value.clone()),
        (Some("Text" | "Date"), Value::Number(_) | Value::Bool(_)) => {
            Value::String(value_as_text(value))
        }
        _ => value.clone(),
    }
}

/// Reads `GET /v3/marketing/field_definitions` (`custom_fields: [{id, name, field_type}]`).
pub fn parse_field_definitions(body: &Value) -> FieldDefinitions {
    let mut definitions = FieldDefinitions::new();
    let fields = body.get("custom_fields").and_then(Value::as_array);
    for field in fields.into_iter().flatten() {
        let text = |key: &str| field.get(key).and_then(Value::as_str).map(str::to_owned);
        if let (Some(id), Some(name)) = (text("id"), text("name")) {
            definitions.insert(id, (name, text("field_type").unwrap_or_default()));
        }
    }
    definitions
}

/// The PUT body for `contacts`.
pub fn put_body(
    list_ids: &[String],
    contacts: &[&Contact],
    definitions: &FieldDefinitions,
) -> Value {
    let contacts: Vec<Value> = contacts
        .iter()
        .map(|contact| contact_body(contact, definitions))
        .collect();
    let mut body = Map::new();
    if !list_ids.is_empty() {
        body.insert("list_ids".to_owned(), json!(list_ids));
    }
    body.insert("contacts".to_owned(), Value::Array(contacts));
    Value::Object(body)
}

/// Splits the contacts at `indices` into PUTs of ≤30,000 contacts and ≤6 MB each.
pub fn split_for_put(
    list_ids: &[String],
    contacts: &[Contact],
    indices: &[usize],
    definitions: &FieldDefinitions,
) -> Vec<Vec<usize>> {
    split_by(
        list_ids,
        contacts,
        indices,
        definitions,
        (MAX_CONTACTS_PER_PUT, MAX_PUT_BYTES),
    )
}

fn split_by(
    list_ids: &[String],
    contacts: &[Contact],
    indices: &[usize],
    definitions: &FieldDefinitions,
    (max_count, max_bytes): (usize, usize),
) -> Vec<Vec<usize>> {
    let envelope = put_body(list_ids, &[], definitions).to_string().len();
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut bytes = envelope;
    for &index in indices {
        // The contact's JSON plus a separating comma.
        let size = contact_body(&contacts[index], definitions)
            .to_string()
            .len()
            + 1;
        if !current.is_empty() && (current.len() >= max_count || bytes + size > max_bytes) {
            chunks.push(std::mem::take(&mut current));
            bytes = envelope;
        }
        current.push(index);
        bytes += size;
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// The positions (in the request's `contacts`) a 400 names in `errors[].field`
/// (`contacts[3].email`), with a redacted reason.
pub fn refused_positions(body: &Value, count: usize) -> BTreeMap<usize, String> {
    let mut refused = BTreeMap::new();
    let errors = body.get("errors").and_then(Value::as_array);
    for error in errors.into_iter().flatten() {
        let field = error
            .get("field")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(rest) = field.strip_prefix("contacts[") else {
            continue;
        };
        let Some(position) = rest
            .split(']')
            .next()
            .and_then(|digits| digits.parse::<usize>().ok())
        else {
            continue;
        };
        if position < count {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("refused");
            refused
                .entry(position)
                .or_insert_with(|| crate::http::redact(&format!("{field}: {message}")));
        }
    }
    refused
}

/// Confirms one contact against the search result: found, and every sent field equal
/// (custom fields are returned keyed by name).
pub fn confirm_contact(
    contact: &Contact,
    search: &Value,
    definitions: &FieldDefinitions,
) -> ItemOutcome {
    let email = contact.email.to_lowercase();
    let found = search
        .get("result")
        .and_then(|result| result.get(&email))
        .and_then(|entry| entry.get("contact"));
    let Some(found) = found else {
        return ItemOutcome::NotApplied {
            detail: "contact not found after the job".to_owned(),
        };
    };
    let Some(id) = found
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
    else {
        return ItemOutcome::NotApplied {
            detail: "contact found without an id".to_owned(),
        };
    };
    for (name, value) in &contact.fields {
        if name == "email" {
            continue;
        }
        let held = if RESERVED_FIELDS.contains(&name.as_str()) {
            found.get(name)
        } else {
            let custom = found.get("custom_fields");
            let by_name = definitions
                .get(name)
                .and_then(|(field_name, _)| custom.and_then(|custom| custom.get(field_name)));
            by_name.or_else(|| custom.and_then(|custom| custom.get(name)))
        };
        if !values_match(value, held) {
            return ItemOutcome::NotApplied {
                detail: format!("field {name} not applied"),
            };
        }
    }
    ItemOutcome::Confirmed {
        esp_id: id.to_owned(),
    }
}

/// `job_id` of a 202 answer (a string; the spec types the delete answer's as an object).
fn job_id(body: &Value) -> Option<String> {
    match body.get("job_id")? {
        Value::String(id) if !id.is_empty() => Some(id.clone()),
        Value::Object(map) => map.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::test_contact as contact;

    fn definitions() -> FieldDefinitions {
        parse_field_definitions(&json!({"custom_fields": [
            {"id": "e1_T", "name": "plan", "field_type": "Text"},
            {"id": "w2_N", "name": "score", "field_type": "Number"},
        ], "reserved_fields": [{"id": "_rf0_T", "name": "first_name", "field_type": "Text"}]}))
    }

    #[test]
    fn reserved_fields_go_top_level_and_custom_ids_under_custom_fields() {
        let ann = contact(
            "Ann@Example.com",
            json!({"first_name": "Ann", "postal_code": 12345, "e1_T": 7, "w2_N": "3", "x9_T": true}),
        );
        let list = "b1f6c9d2-0000-4000-8000-000000000001".to_owned();
        assert_eq!(
            put_body(&[list], &[&ann], &definitions()),
            json!({"list_ids": ["b1f6c9d2-0000-4000-8000-000000000001"],
                   "contacts": [{"email": "ann@example.com", "first_name": "Ann", "postal_code": "12345",
                                 "custom_fields": {"e1_T": "7", "w2_N": 3, "x9_T": true}}]})
        );
        let bare = contact("bob@example.com", json!({}));
        assert_eq!(
            put_body(&[], &[&bare], &definitions()),
            json!({"contacts": [{"email": "bob@example.com"}]})
        );
    }

    #[test]
    fn puts_are_split_by_count_and_size() {
        let contacts: Vec<Contact> = (0..10)
            .map(|index| {
                contact(
                    &format!("c{index}@example.com"),
                    json!({"e1_T": "x".repeat(100)}),
                )
            })
            .collect();
        let all: Vec<usize> = (0..10).collect();
        let defs = definitions();
        let lengths = |chunks: Vec<Vec<usize>>| chunks.iter().map(Vec::len).collect::<Vec<_>>();
        let by_count = split_by(&[], &contacts, &all, &defs, (4, usize::MAX));
        assert_eq!(lengths(by_count), vec![4, 4, 2]);
        let one = contact_body(&contacts[0], &defs).to_string().len() + 1;
        let envelope = put_body(&[], &[], &defs).to_string().len();
        let by_size = split_by(&[], &contacts, &all, &defs, (100, envelope + 3 * one));
        assert_eq!(lengths(by_size), vec![3, 3, 3, 1]);
        assert_eq!(
            split_for_put(&[], &contacts, &[1, 5], &defs),
            vec![vec![1, 5]]
        );
    }

    #[test]
    fn a_400_names_the_refused_contacts() {
        let body = json!({"errors": [
            {"field": "contacts[1].email", "message": "x@y is not valid"},
            {"field": "list_ids", "message": "bad"},
            {"field": "contacts[9].email", "message": "out of range"},
        ]});
        let refused = refused_positions(&body, 3);
        assert_eq!(refused.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert!(!refused[&1].contains('@'));
    }

    #[test]
    fn confirmation_reads_reserved_fields_and_custom_fields_by_name() {
        let ann = contact("ann@example.com", json!({"first_name": "Ann", "w2_N": 3}));
        let defs = definitions();
        let search = json!({"result": {"ann@example.com": {"contact": {
            "id": "c-1", "email": "ann@example.com", "first_name": "Ann", "custom_fields": {"score": 3}}}}});
        assert_eq!(
            confirm_contact(&ann, &search, &defs),
            ItemOutcome::Confirmed {
                esp_id: "c-1".into()
            }
        );
        let stale = json!({"result": {"ann@example.com": {"contact": {
            "id": "c-1", "first_name": "Ann", "custom_fields": {"score": 2}}}}});
        let missing = json!({"result": {"ann@example.com": {"error": "contact not found"}}});
        for answer in [stale, missing, Value::Null] {
            assert!(matches!(
                confirm_contact(&ann, &answer, &defs),
                ItemOutcome::NotApplied { .. }
            ));
        }
    }

    #[test]
    fn job_ids_are_read_in_both_shapes() {
        assert_eq!(job_id(&json!({"job_id": "j1"})), Some("j1".to_owned()));
        assert_eq!(
            job_id(&json!({"job_id": {"id": "j2"}})),
            Some("j2".to_owned())
        );
        assert_eq!(job_id(&json!({})), None);
    }
}
