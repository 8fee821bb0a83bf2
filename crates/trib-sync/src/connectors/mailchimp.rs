//! Mailchimp Marketing API 3.0 (audience members).
//!
//! * Upsert: `PUT /3.0/lists/{list}/members/{md5(lower email)}` with `email_address`,
//!   `status_if_new` (`subscribed` with consent, else `transactional`) and `merge_fields`,
//!   one call per member, run concurrently: the destination's limiter keeps at most 10 in
//!   flight (Mailchimp's 10 simultaneous connections per key). Batches larger than
//!   [`MailchimpConfig::batch_threshold`] go through `POST /3.0/batches` instead: one call
//!   carries every PUT, `GET /3.0/batches/{id}` is polled until `finished`, and the gzipped
//!   tar of results at `response_body_url` is read, correlating by `operation_id`.
//!   A `/batches` job still running at [`MailchimpConfig::batch_deadline`] (or whose status
//!   could not be read) may apply later: its id is kept, and no upsert is sent until `GET /3.0/batches/{id}` says `finished`
//!   (each attempt meanwhile fails as transient before writing), so a late batch never
//!   overwrites a newer write (nor undoes a mirror-mode archive; erasures are not held
//!   back: delete-permanent cannot be undone). The ids are kept in memory: a restart
//!   forgets them.
//! * Confirmation: the member in the response (or the batch result) must carry every sent
//!   merge field's value; otherwise the record is [`ItemOutcome::NotApplied`].
//! * Delete: `POST .../members/{hash}/actions/delete-permanent` (erasure; the email cannot be
//!   re-added afterwards), then `GET .../members/{hash}` must answer 404 (else
//!   `NotApplied`); a 404 to the delete means already gone and is confirmed.
//! * `esp_id` is the subscriber hash. Partial updates: yes (merge fields left out are kept).
//!
//! Mailchimp documents no rate limit and no rate-limit headers, only the connection cap; a
//! 429 makes the limiter halve its concurrency and pause.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use md5::{Digest, Md5};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use trib_consent::Permitted;

use super::{Outstanding, collapse, hex, poll_job, run_each, trim_base, values_match, verify_gone};
use crate::connector::{
    CallError, Connector, Contact, DeleteTarget, DestinationKind, ErrorClass, ItemOutcome, Limits,
};
use crate::http::{Api, ApiResponse, Auth, DEFAULT_TIMEOUT, transient};

/// Mailchimp's documented limits. `max_batch` bounds one `/batches` call; batches up to
/// [`MailchimpConfig::batch_threshold`] are sent as concurrent PUTs.
pub const LIMITS: Limits = Limits {
    max_batch: 5_000,
    max_delete_batch: 100,
    max_concurrency: 10,
    rate_max: None,
    rate_interval: Duration::from_secs(1),
    partial_updates: true,
};

/// One Mailchimp destination.
#[derive(Clone)]
pub struct MailchimpConfig {
    /// The API root without `/3.0`; `None` means `https://<dc>.api.mailchimp.com`, `<dc>`
    /// being the API key's suffix (`…-us6`).
    pub base_url: Option<String>,
    /// The API key (sent as the Basic auth password).
    pub api_key: String,
    /// The audience (list) id.
    pub list_id: String,
    /// Batches with more records than this use `POST /batches` (asynchronous, minutes on the
    /// real service) instead of concurrent PUTs.
    pub batch_threshold: usize,
    /// How long to wait for a `/batches` job to finish before the call counts as transient.
    pub batch_deadline: Duration,
    /// Per-call timeout.
    pub timeout: Duration,
}

/// How recent a running batch must be to hold back writes after a restart: older ones are
/// taken as stuck (or another tool's), not as this destination's abandoned batch.
const ADOPT_WITHIN: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// The running Mailchimp connector.
pub struct MailchimpConnector {
    api: Api,
    base: Arc<str>,
    list_id: Arc<str>,
    batch_threshold: usize,
    batch_deadline: Duration,
    /// `/batches` jobs still running when their deadline passed: no upsert is sent until
    /// they finish, so that one applying late never overwrites a newer write.
    outstanding: Outstanding,
    /// Whether the batches still running when this process started (`GET /batches`) have
    /// been added to `outstanding`: a restart must not forget a batch abandoned before it.
    adopted: tokio::sync::OnceCell<()>,
}

impl MailchimpConfig {
    /// A config with the default threshold (100), batch deadline (10 min) and timeout.
    pub fn new(api_key: impl Into<String>, list_id: impl Into<String>) -> Self {
        Self {
            base_url: None,
            api_key: api_key.into(),
            list_id: list_id.into(),
            batch_threshold: 100,
            batch_deadline: Duration::from_secs(600),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for MailchimpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailchimpConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"***")
            .field("list_id", &self.list_id)
            .field("batch_threshold", &self.batch_threshold)
            .finish_non_exhaustive()
    }
}

/// The data center an API key belongs to: the text after its last `-` (`us6`).
pub fn datacenter(api_key: &str) -> Option<&str> {
    let (_, dc) = api_key.rsplit_once('-')?;
    (!dc.is_empty() && dc.chars().all(|c| c.is_ascii_alphanumeric())).then_some(dc)
}

/// Mailchimp's subscriber hash: hex MD5 of the lower-cased email (an identifier, not
/// security).
pub fn subscriber_hash(email: &str) -> String {
    hex(&Md5::digest(email.trim().to_lowercase().as_bytes()))
}

/// The body of the member PUT.
pub fn member_body(contact: &Contact) -> Value {
    let mut body = json!({
        "email_address": contact.email,
        "status_if_new": if contact.subscribed { "subscribed" } else { "transactional" },
        "merge_fields": contact.fields,
    });
    // `status_if_new` does not touch an existing member: without email-marketing consent
    // (never given, or withdrawn) an existing subscriber must be unsubscribed explicitly.
    if !contact.subscribed && contact.esp_id.is_some() {
        body["status"] = json!("unsubscribed");
    }
    body
}

/// Confirms a member object returned by Mailchimp against what was sent.
pub fn confirm_member(contact: &Contact, member: &Value) -> ItemOutcome {
    let email = member.get("email_address").and_then(Value::as_str);
    if email.map(str::to_lowercase) != Some(contact.email.to_lowercase()) {
        return ItemOutcome::NotApplied {
            detail: "member in the response is not the one sent".to_owned(),
        };
    }
    if !contact.subscribed && member.get("status").and_then(Value::as_str) == Some("subscribed") {
        return ItemOutcome::NotApplied {
            detail: "member still subscribed without email-marketing consent".to_owned(),
        };
    }
    let merge_fields = member.get("merge_fields");
    for (name, value) in &contact.fields {
        if !values_match(value, merge_fields.and_then(|fields| fields.get(name))) {
            return ItemOutcome::NotApplied {
                detail: format!("merge field {name} not applied"),
            };
        }
    }
    ItemOutcome::Confirmed {
        esp_id: subscriber_hash(&contact.email),
    }
}

/// Classes a member call's non-2xx answer (other than those [`Api::send`] classes itself).
pub fn member_error_outcome(status: u16, body: &Value) -> Result<ItemOutcome, CallError> {
    let title = body
        .get("title")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let detail = crate::http::redact(
        &[
            title,
            body.get("detail")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        ]
        .join(": "),
    );
    match (status, title) {
        // A list that does not exist: the destination's setup, for every record.
        (404, _) => Err(CallError {
            class: ErrorClass::Auth,
            status: Some(status),
            retry_after: None,
            detail: format!("members.put: {detail}"),
        }),
        (400 | 422, _) => Ok(ItemOutcome::Failed {
            class: ErrorClass::InvalidRecord,
            detail,
        }),
        _ => Ok(ItemOutcome::Failed {
            class: ErrorClass::Fatal,
            detail: format!("HTTP {status}: {detail}"),
        }),
    }
}

impl MailchimpConnector {
    /// Labels the connector's API metrics with the configured destination name.
    pub fn named(mut self, name: &str) -> Self {
        self.api = self.api.labelled(name);
        self
    }

    /// Builds the connector; fails (`Auth`) when no base URL is given and the key has no
    /// data-center suffix.
    pub fn new(config: &MailchimpConfig) -> Result<Self, CallError> {
        let base = match &config.base_url {
            Some(url) => trim_base(url),
            None => {
                let dc = datacenter(&config.api_key).ok_or_else(|| CallError {
                    class: ErrorClass::Auth,
                    status: None,
                    retry_after: None,
                    detail: "the Mailchimp API key has no data-center suffix (…-us6)".to_owned(),
                })?;
                format!("https://{dc}.api.mailchimp.com")
            }
        };
        let auth = Auth::Basic {
            user: "tributary".to_owned(),
            password: config.api_key.clone(),
        };
        Ok(Self {
            api: Api::new(DestinationKind::Mailchimp, &LIMITS, auth, config.timeout)?,
            base: base.into(),
            list_id: config.list_id.clone().into(),
            batch_threshold: config.batch_threshold,
            batch_deadline: config.batch_deadline,
            outstanding: Outstanding::default(),
            adopted: tokio::sync::OnceCell::new(),
        })
    }

    /// Looks at the batches abandoned at their deadline: finished (or unknown to Mailchimp)
    /// ones are forgotten; while one still runs, the upsert fails as transient before
    /// sending anything (its records stay pending and are retried later).
    async fn wait_for_outstanding(&self) -> Result<(), CallError> {
        // Once, and concurrent first writes wait for that one listing (a second one could
        // take the first write's fresh batch for an abandoned one).
        self.adopted
            .get_or_try_init(|| self.adopt_running_batches())
            .await?;
        self.outstanding
            .wait(
                &self.api,
                "batches.get",
                "batch",
                |id| format!("{}/3.0/batches/{id}", self.base),
                |status| status == "finished",
            )
            .await
    }

    /// Once per process, before the first write: every batch Mailchimp still runs (`GET
    /// /batches`, 1,000 a page) that was submitted in the last [`ADOPT_WITHIN`] becomes
    /// outstanding. The ids of batches abandoned at their deadline live only in memory, so
    /// after a restart this is how a batch of the previous process that may still apply old
    /// values holds back new writes. Batches are listed per account, so another tool's recent
    /// running batch is waited for too (until it finishes). A failure is throttled, auth or
    /// transient (nothing was written); the listing is tried again at the next write.
    async fn adopt_running_batches(&self) -> Result<(), CallError> {
        #[derive(Deserialize)]
        struct Listed {
            id: String,
            #[serde(default)]
            status: String,
            #[serde(default)]
            submitted_at: Option<String>,
        }
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            batches: Vec<Listed>,
            #[serde(default)]
            total_items: usize,
        }
        const PAGE: usize = 1_000;
        // A refused key is what a write would meet too (auth); any other refusal of the
        // listing must not fail the records as invalid or fatal: nothing was sent.
        let as_transient = |error: CallError| match error.class {
            ErrorClass::Throttled | ErrorClass::Transient | ErrorClass::Auth => error,
            _ => transient(
                error.status,
                format!("listing running batches: {}", error.detail),
            ),
        };
        let since = jiff::Timestamp::now() - ADOPT_WITHIN;
        let mut running = Vec::new();
        let mut offset = 0;
        loop {
            let url = format!(
                "{}/3.0/batches?count={PAGE}&offset={offset}\
                 &fields=batches.id,batches.status,batches.submitted_at,total_items",
                self.base
            );
            let page: Page = self
                .api
                .get_json("batches.list", &url)
                .await
                .map_err(as_transient)?;
            let read = page.batches.len();
            running.extend(
                page.batches
                    .into_iter()
                    .filter(|batch| batch.status != "finished")
                    // A batch whose time cannot be read is taken, to be safe.
                    .filter(|batch| {
                        batch
                            .submitted_at
                            .as_deref()
                            .and_then(|at| at.parse::<jiff::Timestamp>().ok())
                            .is_none_or(|at| at >= since)
                    })
                    .map(|batch| batch.id),
            );
            offset += read;
            if read < PAGE || offset >= page.total_items {
                break;
            }
        }
        if !running.is_empty() {
            tracing::warn!(
                batches = running.len(),
                "mailchimp batches still running at start: writes wait until they finish"
            );
        }
        for id in running {
            self.outstanding.add(id);
        }
        Ok(())
    }

    /// The HTTP client (its limiter), for the engine's metrics and tests.
    pub fn api(&self) -> &Api {
        &self.api
    }

    fn member_path(&self, hash: &str) -> String {
        format!("/lists/{}/members/{hash}", self.list_id)
    }

    async fn upsert_each(&self, contacts: Vec<Contact>) -> Result<Vec<ItemOutcome>, CallError> {
        let api = self.api.clone();
        let base = self.base.clone();
        let list_id = self.list_id.clone();
        let results = run_each(contacts, move |contact| {
            let api = api.clone();
            let url = format!(
                "{base}/3.0/lists/{list_id}/members/{}",
                subscriber_hash(&contact.email)
            );
            async move {
                let request = api.request(Method::PUT, &url).json(&member_body(&contact));
                let response = api.send("members.put", request).await?;
                if response.is_success() {
                    let member: Value = response.json("members.put")?;
                    Ok(confirm_member(&contact, &member))
                } else {
                    member_error_outcome(response.status, &response.json_or_null())
                }
            }
        })
        .await;
        collapse(results)
    }

    async fn upsert_batch(&self, contacts: Vec<Contact>) -> Result<Vec<ItemOutcome>, CallError> {
        let mut operations = Vec::with_capacity(contacts.len());
        for (index, contact) in contacts.iter().enumerate() {
            operations.push(json!({
                "method": "PUT",
                "path": self.member_path(&subscriber_hash(&contact.email)),
                "operation_id": index.to_string(),
                "body": member_body(contact).to_string(),
            }));
        }
        let body = json!({ "operations": operations });
        let request = self
            .api
            .request(Method::POST, &format!("{}/3.0/batches", self.base))
            .json(&body);
        let batch: Batch = self
            .api
            .send_expect_success("batches.post", request)
            .await?
            .json("batches.post")?;
        let finished = match self.wait_for_batch(batch.id.clone()).await {
            Ok(finished) => finished,
            Err(error) => {
                // Past its deadline, or its status unreadable: it may still apply later, so
                // later writes wait for it (`wait_for_outstanding`).
                self.outstanding.add(batch.id);
                return Err(error);
            }
        };
        let Some(results_url) = finished.response_body_url.filter(|url| !url.is_empty()) else {
            return Err(transient(
                None,
                "batches.get: finished without a results URL".to_owned(),
            ));
        };
        let request = self.api.request_without_auth(Method::GET, &results_url);
        let archive = self
            .api
            .send_expect_success("batches.results", request)
            .await?;
        let results = read_batch_results(&archive)?;
        Ok(contacts
            .iter()
            .enumerate()
            .map(|(index, contact)| match results.get(&index.to_string()) {
                Some(result) => batch_result_outcome(contact, result),
                None => ItemOutcome::NotApplied {
                    detail: "no result for the operation in the batch".to_owned(),
                },
            })
            .collect())
    }

    /// Polls a batch until it is `finished` (see [`poll_job`]).
    async fn wait_for_batch(&self, id: String) -> Result<Batch, CallError> {
        let url = format!("{}/3.0/batches/{id}", self.base);
        poll_job(
            self.batch_deadline,
            || self.api.get_json::<Batch>("batches.get", &url),
            |batch| batch.status == "finished",
            |batch| {
                transient(
                    None,
                    format!("batches.get: batch still {} at the deadline", batch.status),
                )
            },
        )
        .await
    }
}

#[async_trait::async_trait]
impl Connector for MailchimpConnector {
    fn kind(&self) -> DestinationKind {
        DestinationKind::Mailchimp
    }

    fn limits(&self) -> Limits {
        LIMITS
    }

    async fn upsert(&self, batch: Vec<Permitted<Contact>>) -> Result<Vec<ItemOutcome>, CallError> {
        let contacts: Vec<Contact> = batch.into_iter().map(Permitted::into_inner).collect();
        self.wait_for_outstanding().await?;
        if contacts.len() > self.batch_threshold {
            self.upsert_batch(contacts).await
        } else {
            self.upsert_each(contacts).await
        }
    }

    async fn delete(&self, targets: Vec<DeleteTarget>) -> Result<Vec<ItemOutcome>, CallError> {
        // An archive (mirror mode) could be undone by a batch applying late; a permanent
        // delete cannot, and an erasure is never held back.
        if targets.iter().any(|target| !target.permanent) {
            self.wait_for_outstanding().await?;
        }
        let api = self.api.clone();
        let base = self.base.clone();
        let list_id = self.list_id.clone();
        let results = run_each(targets, move |mut target| {
            let api = api.clone();
            // Known only by email (an erasure of a push with no known outcome): the
            // subscriber hash is the email's.
            if target.esp_id.is_empty()
                && let Some(email) = &target.email
            {
                target.esp_id = subscriber_hash(email.expose());
            }
            let member_url = format!("{base}/3.0/lists/{list_id}/members/{}", target.esp_id);
            async move {
                if !is_subscriber_hash(&target.esp_id) {
                    return Ok(ItemOutcome::Failed {
                        class: ErrorClass::Fatal,
                        detail: "esp_id is not a subscriber hash".to_owned(),
                    });
                }
                // Erasure: delete-permanent (the email can never be re-imported). Mirror
                // mode: archive (`DELETE` the member), which lets the person come back.
                let response = if target.permanent {
                    let url = format!("{member_url}/actions/delete-permanent");
                    api.send("members.delete_permanent", api.request(Method::POST, &url))
                        .await?
                } else {
                    api.send("members.archive", api.request(Method::DELETE, &member_url))
                        .await?
                };
                if response.is_success() {
                    // Read back: a 204 that deleted nothing must not count as erased.
                    return verify_gone(&api, "members.get", &member_url, target.esp_id).await;
                }
                Ok(delete_outcome(&target, &response))
            }
        })
        .await;
        collapse(results)
    }
}

/// A `/batches` job (the fields read here).
#[derive(Debug, Deserialize)]
struct Batch {
    id: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    response_body_url: Option<String>,
}

/// One operation's result in the batch results archive.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchResult {
    pub status_code: u16,
    #[serde(default)]
    pub operation_id: Option<String>,
    /// The operation's response body, as a JSON string.
    #[serde(default)]
    pub response: String,
}

/// Reads the gzipped tar of JSON arrays of results, keyed by `operation_id`.
pub fn read_batch_results(
    archive: &ApiResponse,
) -> Result<HashMap<String, BatchResult>, CallError> {
    let unreadable = |what: &str| transient(None, format!("batches.results: {what}"));
    let decoder = flate2::read::GzDecoder::new(archive.body.as_ref());
    let mut tar = tar::Archive::new(decoder);
    let mut results = HashMap::new();
    let entries = tar.entries().map_err(|_| unreadable("not a tar archive"))?;
    for entry in entries {
        let mut entry = entry.map_err(|_| unreadable("broken tar entry"))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let mut text = String::new();
        entry
            .read_to_string(&mut text)
            .map_err(|_| unreadable("unreadable tar entry"))?;
        if text.trim().is_empty() {
            continue;
        }
        let items: Vec<BatchResult> =
            serde_json::from_str(&text).map_err(|_| unreadable("results are not a JSON array"))?;
        for item in items {
            if let Some(id) = item.operation_id.clone() {
                results.insert(id, item);
            }
        }
    }
    Ok(results)
}

/// One operation result of a `/batches` job, confirmed like a PUT's response.
pub fn batch_result_outcome(contact: &Contact, result: &BatchResult) -> ItemOutcome {
    let body: Value = serde_json::from_str(&result.response).unwrap_or(Value::Null);
    match result.status_code {
        200..=299 => confirm_member(contact, &body),
        429 => ItemOutcome::Failed {
            class: ErrorClass::Throttled,
            detail: "operation throttled in the batch".to_owned(),
        },
        500..=599 => ItemOutcome::Failed {
            class: ErrorClass::Transient,
            detail: format!("operation failed with HTTP {}", result.status_code),
        },
        401 | 403 => ItemOutcome::Failed {
            class: ErrorClass::Auth,
            detail: format!("operation refused with HTTP {}", result.status_code),
        },
        status => match member_error_outcome(status, &body) {
            Ok(outcome) => outcome,
            Err(error) => ItemOutcome::Failed {
                class: error.class,
                detail: error.detail,
            },
        },
    }
}

fn delete_outcome(target: &DeleteTarget, response: &ApiResponse) -> ItemOutcome {
    match response.status {
        // 404: the member is already gone (or never existed): confirmed.
        200..=299 | 404 => ItemOutcome::Confirmed {
            esp_id: target.esp_id.clone(),
        },
        status => ItemOutcome::Failed {
            class: if status == 400 {
                ErrorClass::InvalidRecord
            } else {
                ErrorClass::Fatal
            },
            detail: format!("delete-permanent: {}", response.error_summary()),
        },
    }
}

fn is_subscriber_hash(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Write;

    fn contact(fields: Value) -> Contact {
        let fields: BTreeMap<String, Value> = serde_json::from_value(fields).expect("object");
        Contact {
            profile_id: "p1".into(),
            email: "Ann@Example.com".into(),
            desired: fields.clone(),
            fields,
            subscribed: true,
            esp_id: None,
        }
    }

    #[test]
    fn hash_and_datacenter() {
        // md5("ann@example.com")
        assert_eq!(
            subscriber_hash(" Ann@Example.COM"),
            subscriber_hash("ann@example.com")
        );
        assert_eq!(subscriber_hash("a"), "0cc175b9c0f1b6a831c399e269772661");
        assert_eq!(datacenter("0123abcd-us6"), Some("us6"));
        assert_eq!(datacenter("nodash"), None);
        let config = MailchimpConfig::new("key-us21", "L1");
        assert!(MailchimpConnector::new(&config).is_ok());
        let error = MailchimpConnector::new(&MailchimpConfig::new("key", "L1"))
            .err()
            .expect("no dc");
        assert_eq!(error.class, ErrorClass::Auth);
    }

    #[test]
    fn member_body_carries_status_if_new_and_merge_fields() {
        let mut ann = contact(json!({"FNAME": "Ann", "SCORE": 3}));
        assert_eq!(
            member_body(&ann),
            json!({"email_address": "Ann@Example.com", "status_if_new": "subscribed",
                   "merge_fields": {"FNAME": "Ann", "SCORE": 3}})
        );
        ann.subscribed = false;
        assert_eq!(member_body(&ann)["status_if_new"], "transactional");
        assert!(member_body(&ann).get("status").is_none(), "a new member");
        // An existing member who has no (or withdrew) email-marketing consent.
        ann.esp_id = Some(subscriber_hash("ann@example.com"));
        assert_eq!(member_body(&ann)["status"], "unsubscribed");
        let still = json!({"email_address": "ann@example.com", "status": "subscribed",
                           "merge_fields": {"FNAME": "Ann", "SCORE": 3}});
        assert!(matches!(
            confirm_member(&ann, &still),
            ItemOutcome::NotApplied { .. }
        ));
    }

    #[test]
    fn confirmation_compares_merge_fields() {
        let ann = contact(json!({"FNAME": "Ann", "SCORE": 3}));
        let member = json!({"email_address": "ann@example.com", "merge_fields": {"FNAME": "Ann", "SCORE": "3", "LNAME": ""}});
        assert_eq!(
            confirm_member(&ann, &member),
            ItemOutcome::Confirmed {
                esp_id: subscriber_hash("ann@example.com")
            }
        );
        let stale = json!({"email_address": "ann@example.com", "merge_fields": {"FNAME": "Old", "SCORE": 3}});
        assert!(matches!(
            confirm_member(&ann, &stale),
            ItemOutcome::NotApplied { .. }
        ));
        let empty = json!({});
        assert!(matches!(
            confirm_member(&ann, &empty),
            ItemOutcome::NotApplied { .. }
        ));
    }

    #[test]
    fn member_errors_are_classed_by_status() {
        let invalid = json!({"title": "Invalid Resource", "detail": "ann@example.com looks fake"});
        match member_error_outcome(400, &invalid).expect("per record") {
            ItemOutcome::Failed { class, detail } => {
                assert_eq!(class, ErrorClass::InvalidRecord);
                assert!(!detail.contains('@'), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        let missing_list = json!({"title": "Resource Not Found"});
        assert_eq!(
            member_error_outcome(404, &missing_list)
                .expect_err("setup")
                .class,
            ErrorClass::Auth
        );
    }

    #[test]
    fn batch_results_archive_is_read_and_correlated() {
        let results = json!([
            {"status_code": 200, "operation_id": "0",
             "response": json!({"email_address": "ann@example.com", "merge_fields": {"FNAME": "Ann"}}).to_string()},
            {"status_code": 400, "operation_id": "1",
             "response": json!({"title": "Invalid Resource"}).to_string()},
        ])
        .to_string();
        let mut tar_bytes = Vec::new();
        {
            let mut builder = tar::Builder::new(&mut tar_bytes);
            let mut header = tar::Header::new_gnu();
            header.set_size(results.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, "abc.json", results.as_bytes())
                .expect("tar entry");
            builder.finish().expect("tar");
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar_bytes).expect("gzip");
        let archive = ApiResponse {
            status: 200,
            headers: Default::default(),
            body: gz.finish().expect("gzip").into(),
        };
        let parsed = read_batch_results(&archive).expect("archive");
        let ann = contact(json!({"FNAME": "Ann"}));
        assert!(matches!(
            batch_result_outcome(&ann, &parsed["0"]),
            ItemOutcome::Confirmed { .. }
        ));
        assert!(matches!(
            batch_result_outcome(&ann, &parsed["1"]),
            ItemOutcome::Failed {
                class: ErrorClass::InvalidRecord,
                ..
            }
        ));
        let garbage = ApiResponse {
            status: 200,
            headers: Default::default(),
            body: "nope".into(),
        };
        assert_eq!(
            read_batch_results(&garbage).expect_err("garbage").class,
            ErrorClass::Transient
        );
    }
}
