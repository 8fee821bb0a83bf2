//! A generic signed webhook destination.
//!
//! Each call POSTs a JSON array of
//! `{"type":"upsert","profile_id":..,"email":..,"fields":{..}}` and
//! `{"type":"delete","profile_id":..}` items with the header
//! `X-Tributary-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
//! (the receiver recomputes it over the raw body and refuses old timestamps, which stops
//! replays). A 2xx confirms every item (`esp_id` = profile id).
//!
//! A 400, 413 or 422 refuses the batch without saying which item was wrong, so the batch is
//! split in halves and each half sent again, down to single items: a lone refused item is
//! `Failed(InvalidRecord)`, and the valid ones are delivered at a cost of about
//! `2·log2(n)` extra calls per bad item. A 404 or 410 means the URL is wrong (`Auth`, a
//! setup problem). Partial updates: no (a receiver gets every mapped field, so it can
//! replace its copy of the record).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use trib_consent::Permitted;

use super::hex;
use crate::connector::{
    CallError, Connector, Contact, DeleteTarget, DestinationKind, ErrorClass, ItemOutcome, Limits,
};
use crate::http::{Api, Auth, DEFAULT_TIMEOUT};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Tributary-Signature";

/// The webhook's limits (ours: a receiver documents none).
pub const LIMITS: Limits = Limits {
    max_batch: 500,
    max_delete_batch: 500,
    max_concurrency: 4,
    rate_max: None,
    rate_interval: Duration::from_secs(1),
    partial_updates: false,
};

/// One webhook destination.
#[derive(Clone)]
pub struct WebhookConfig {
    /// Where to POST.
    pub url: String,
    /// The shared HMAC secret.
    pub secret: String,
    /// Per-call timeout.
    pub timeout: Duration,
}

impl WebhookConfig {
    /// A config with the default timeout.
    pub fn new(url: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            secret: secret.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &"***")
            .finish_non_exhaustive()
    }
}

/// The running webhook connector.
pub struct WebhookConnector {
    api: Api,
    url: String,
    secret: Vec<u8>,
}

/// The signature header's value for `body` at `timestamp` (Unix seconds).
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={timestamp},v1={}", hex(&mac.finalize().into_bytes()))
}

/// The payload item of an upsert.
pub fn upsert_item(contact: &Contact) -> Value {
    json!({
        "type": "upsert",
        "profile_id": contact.profile_id,
        "email": contact.email,
        "fields": contact.fields,
    })
}

/// The payload item of a delete.
pub fn delete_item(target: &DeleteTarget) -> Value {
    json!({ "type": "delete", "profile_id": target.profile_id })
}

impl WebhookConnector {
    /// Labels the connector's API metrics with the configured destination name.
    pub fn named(mut self, name: &str) -> Self {
        self.api = self.api.labelled(name);
        self
    }

    /// Builds the connector.
    pub fn new(config: &WebhookConfig) -> Result<Self, CallError> {
        Ok(Self {
            api: Api::new(
                DestinationKind::Webhook,
                &LIMITS,
                Auth::None,
                config.timeout,
            )?,
            url: config.url.clone(),
            secret: config.secret.as_bytes().to_vec(),
        })
    }

    /// The HTTP client (its limiter), for the engine's metrics and tests.
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// Sends `items` (with their esp ids), splitting refused batches down to single items.
    async fn deliver(&self, items: Vec<(Value, String)>) -> Result<Vec<ItemOutcome>, CallError> {
        let mut outcomes: Vec<Option<ItemOutcome>> = vec![None; items.len()];
        // Ranges of `items` still to send; a refused range is split in two.
        let mut pending = Vec::new();
        pending.push(0..items.len());
        let mut delivered_any = false;
        while let Some(range) = pending.pop() {
            if range.is_empty() {
                continue;
            }
            let payload = Value::Array(
                items[range.clone()]
                    .iter()
                    .map(|(item, _)| item.clone())
                    .collect(),
            );
            let body = payload.to_string().into_bytes();
            let timestamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs());
            let request = self
                .api
                .request(Method::POST, &self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, signature(&self.secret, timestamp, &body))
                .body(body);
            let response = match self.api.send("webhook.post", request).await {
                Ok(response) => response,
                // After part of the batch went through, the rest fails per item; before,
                // the whole call failed.
                Err(error) if delivered_any => {
                    for index in range {
                        outcomes[index] = Some(ItemOutcome::Failed {
                            class: error.class,
                            detail: error.detail.clone(),
                        });
                    }
                    continue;
                }
                Err(error) => return Err(error),
            };
            match response.status {
                200..=299 => {
                    delivered_any = true;
                    for index in range {
                        outcomes[index] = Some(ItemOutcome::Confirmed {
                            esp_id: items[index].1.clone(),
                        });
                    }
                }
                400 | 413 | 422 if range.len() > 1 => {
                    let middle = range.start + range.len() / 2;
                    pending.push(middle..range.end);
                    pending.push(range.start..middle);
                }
                400 | 413 | 422 => {
                    outcomes[range.start] = Some(ItemOutcome::Failed {
                        class: ErrorClass::InvalidRecord,
                        detail: format!("webhook refused the item: {}", response.error_summary()),
                    });
                }
                404 | 410 => return Err(response.error(ErrorClass::Auth, "webhook.post")),
                _ => return Err(response.error(ErrorClass::Fatal, "webhook.post")),
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|outcome| {
                outcome.unwrap_or_else(|| ItemOutcome::NotApplied {
                    detail: "not sent".to_owned(),
                })
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl Connector for WebhookConnector {
    fn kind(&self) -> DestinationKind {
        DestinationKind::Webhook
    }

    fn limits(&self) -> Limits {
        LIMITS
    }

    async fn upsert(&self, batch: Vec<Permitted<Contact>>) -> Result<Vec<ItemOutcome>, CallError> {
        let items = batch
            .iter()
            .map(|permitted| {
                let contact = permitted.value();
                (upsert_item(contact), contact.profile_id.clone())
            })
            .collect();
        self.deliver(items).await
    }

    async fn delete(&self, targets: Vec<DeleteTarget>) -> Result<Vec<ItemOutcome>, CallError> {
        let items = targets
            .iter()
            .map(|target| (delete_item(target), target.profile_id.clone()))
            .collect();
        self.deliver(items).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // HMAC-SHA256(key="key", "1700000000.{}"), computed independently (Python hmac).
        assert_eq!(
            signature(b"key", 1_700_000_000, b"{}"),
            "t=1700000000,v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }

    #[test]
    fn payload_items() {
        let contact = Contact {
            profile_id: "p1".into(),
            email: "ann@example.com".into(),
            fields: BTreeMap::from([("plan".to_owned(), json!("gold"))]),
            desired: BTreeMap::new(),
            subscribed: false,
            esp_id: None,
        };
        assert_eq!(
            upsert_item(&contact),
            json!({"type": "upsert", "profile_id": "p1", "email": "ann@example.com", "fields": {"plan": "gold"}})
        );
        let target = DeleteTarget {
            profile_id: "p1".into(),
            esp_id: "p1".into(),
            email: None,
            permanent: true,
        };
        assert_eq!(
            delete_item(&target),
            json!({"type": "delete", "profile_id": "p1"})
        );
    }
}
