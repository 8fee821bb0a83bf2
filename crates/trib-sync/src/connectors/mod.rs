//! The ESP connectors: one [`Connector`](crate::Connector) per ESP, each built from a small
//! config struct and calling its API through [`Api`](crate::http::Api).
//!
//! * [`mailchimp`]: Marketing API 3.0, one `PUT` per member (concurrent, ≤10 connections) or
//!   `POST /batches` for large batches; confirmed from the member (or batch result) returned.
//! * [`hubspot`]: CRM v3 `batch/upsert` by email (≤100), 200/207 per contact; confirmed from
//!   the results' properties.
//! * [`sendgrid`]: Marketing Contacts `PUT` (asynchronous job, polled), confirmed by a search
//!   by email.
//! * [`webhook`]: a JSON array POSTed with an HMAC-SHA256 signature; a 2xx confirms.
//!
//! The helpers here are shared: loose value comparison for confirmation (ESPs echo numbers
//! as strings), and running per-record calls concurrently.

pub mod hubspot;
pub mod mailchimp;
pub mod sendgrid;
pub mod webhook;

use std::future::Future;
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinSet;

pub use hubspot::{HubspotConfig, HubspotConnector};
pub use mailchimp::{MailchimpConfig, MailchimpConnector};
pub use sendgrid::{SendgridConfig, SendgridConnector};
pub use webhook::{WebhookConfig, WebhookConnector};

use crate::connector::{CallError, ErrorClass, ItemOutcome};
use crate::http::{Api, transient};

/// Asynchronous jobs (Mailchimp batches, SendGrid imports) whose outcome is unknown: still
/// running at their deadline, or their status unreadable. While one may still apply, nothing
/// is written (or deleted, where a late job could re-create the record), so that it never
/// overwrites a newer value. Kept in memory.
#[derive(Default)]
pub(crate) struct Outstanding(std::sync::Mutex<Vec<String>>);

/// What a job's status answer says (the only field read).
#[derive(serde::Deserialize)]
struct JobStatus {
    #[serde(default)]
    status: String,
}

impl Outstanding {
    fn ids(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a job, once.
    pub(crate) fn add(&self, id: String) {
        let mut ids = self.ids();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }

    /// Reads each job's status (`GET url_of(id)`, as `endpoint`): finished ones (`finished`
    /// says which statuses end a job) and ones the ESP no longer knows (404) are forgotten;
    /// while one still runs, fails as transient, naming `what` it is.
    pub(crate) async fn wait(
        &self,
        api: &Api,
        endpoint: &'static str,
        what: &str,
        url_of: impl Fn(&str) -> String,
        finished: fn(&str) -> bool,
    ) -> Result<(), CallError> {
        let ids = self.ids().clone();
        for id in ids {
            let response = api
                .send(endpoint, api.request(reqwest::Method::GET, &url_of(&id)))
                .await?;
            match response.status {
                404 => {}
                _ if response.is_success() => {
                    let job: JobStatus = response.json(endpoint)?;
                    if !finished(&job.status) {
                        return Err(transient(
                            None,
                            format!(
                                "an earlier {what}, abandoned at its deadline, is still {}: \
                                 nothing is written until it finishes",
                                job.status
                            ),
                        ));
                    }
                }
                status => {
                    return Err(transient(
                        Some(status),
                        format!("{endpoint}: {}", response.error_summary()),
                    ));
                }
            }
            self.ids().retain(|outstanding| *outstanding != id);
        }
        Ok(())
    }
}

/// Whether the value an ESP holds (`held`) is the value that was sent. ESPs store many
/// values as text, so a number or boolean equals its text form (`3` and `"3"`), and `null`
/// equals an empty string or a missing value (clearing a field).
pub fn values_match(sent: &Value, held: Option<&Value>) -> bool {
    let held = held.unwrap_or(&Value::Null);
    if sent == held {
        return true;
    }
    match (sent, held) {
        (Value::Null, Value::String(text)) | (Value::String(text), Value::Null) => text.is_empty(),
        (Value::Number(_) | Value::Bool(_), Value::String(text))
        | (Value::String(text), Value::Number(_) | Value::Bool(_)) => {
            let other = if matches!(sent, Value::String(_)) {
                held
            } else {
                sent
            };
            scalar_matches(text, other)
        }
        (Value::Number(left), Value::Number(right)) => left.as_f64() == right.as_f64(),
        _ => false,
    }
}

/// A value as an ESP's text field holds it: strings as they are, `null` as empty, numbers
/// and booleans in their JSON form, arrays and objects as JSON text.
pub fn value_as_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Whether `email` looks like an address the ESPs accept (one `@`, a non-empty local part, a
/// dotted domain without empty labels, no whitespace, ≤254 characters). Records failing it
/// are refused locally as `InvalidRecord` where an ESP would refuse them late or refuse the
/// whole call (SendGrid's job errors, its search's 400).
pub fn plausible_email(email: &str) -> bool {
    if email.len() > 254 || email.chars().any(char::is_whitespace) {
        return false;
    }
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty())
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

fn scalar_matches(text: &str, value: &Value) -> bool {
    match value {
        Value::Bool(flag) => text.eq_ignore_ascii_case(if *flag { "true" } else { "false" }),
        Value::Number(number) => {
            text == number.to_string()
                || matches!((text.trim().parse::<f64>(), number.as_f64()), (Ok(left), Some(right)) if left == right)
        }
        _ => false,
    }
}

/// Runs `call` for every item, concurrently (the destination's limiter caps what is in
/// flight), and returns the results in the items' order.
pub(crate) async fn run_each<T, F, Fut>(
    items: Vec<T>,
    call: F,
) -> Vec<Result<ItemOutcome, CallError>>
where
    T: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<ItemOutcome, CallError>> + Send + 'static,
{
    let count = items.len();
    let mut tasks = JoinSet::new();
    for (index, item) in items.into_iter().enumerate() {
        let future = call(item);
        tasks.spawn(async move { (index, future.await) });
    }
    let mut results: Vec<Option<Result<ItemOutcome, CallError>>> =
        (0..count).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, result)) => results[index] = Some(result),
            Err(error) => tracing::error!(%error, "connector call task failed"),
        }
    }
    results
        .into_iter()
        .map(|result| {
            result.unwrap_or_else(|| {
                Err(CallError {
                    class: ErrorClass::Transient,
                    status: None,
                    retry_after: None,
                    detail: "call task failed".to_owned(),
                })
            })
        })
        .collect()
}

/// Turns per-record call results into the connector's answer: when **every** record's call
/// failed, the batch failed as a whole (`Err` with the first error, so the engine sees the
/// class and `Retry-After`); otherwise failed calls become [`ItemOutcome::Failed`].
pub(crate) fn collapse(
    results: Vec<Result<ItemOutcome, CallError>>,
) -> Result<Vec<ItemOutcome>, CallError> {
    if !results.is_empty() && results.iter().all(Result::is_err) {
        let mut errors = results.into_iter().filter_map(Result::err);
        // The most urgent class first: a throttle carries the delay the engine must honour.
        let mut first = errors.next().ok_or_else(unreachable_error)?;
        for error in errors {
            if error.class == ErrorClass::Throttled && first.class != ErrorClass::Throttled {
                first = error;
            }
        }
        return Err(first);
    }
    Ok(results
        .into_iter()
        .map(|result| match result {
            Ok(outcome) => outcome,
            Err(error) => ItemOutcome::Failed {
                class: error.class,
                detail: error.detail,
            },
        })
        .collect())
}

fn unreachable_error() -> CallError {
    CallError {
        class: ErrorClass::Fatal,
        status: None,
        retry_after: None,
        detail: "no results".to_owned(),
    }
}

/// Reads a deleted record back (`GET url`): 404 confirms the deletion, a 2xx means the ESP
/// accepted the delete without applying it.
pub(crate) async fn verify_gone(
    api: &crate::http::Api,
    endpoint: &'static str,
    url: &str,
    esp_id: String,
) -> Result<ItemOutcome, CallError> {
    let response = api
        .send(endpoint, api.request(reqwest::Method::GET, url))
        .await?;
    Ok(match response.status {
        404 | 410 => ItemOutcome::Confirmed { esp_id },
        200..=299 => ItemOutcome::NotApplied {
            detail: "record still present after the delete".to_owned(),
        },
        _ => ItemOutcome::Failed {
            class: ErrorClass::Fatal,
            detail: format!("{endpoint}: {}", response.error_summary()),
        },
    })
}

/// Exponential backoff for polling an ESP job: 100 ms doubling up to 2 s.
pub(crate) fn poll_delay(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(2))
}

/// Reads an asynchronous job's status (`read`) until `ended` says it finished, pausing
/// [`poll_delay`] between reads (longer when a throttled answer asks), for at most `limit`.
/// A read that fails transiently or is throttled is read again until then: giving up on a
/// job that runs anyway would only leave it outstanding, holding back every later write until
/// another status read succeeds. At the deadline: `still_running(status)` for a job still
/// running, or the last read's error.
pub(crate) async fn poll_job<T, F: Future<Output = Result<T, CallError>>>(
    limit: Duration,
    mut read: impl FnMut() -> F,
    ended: impl Fn(&T) -> bool,
    still_running: impl Fn(&T) -> CallError,
) -> Result<T, CallError> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut attempt = 0;
    loop {
        let mut delay = poll_delay(attempt);
        match read().await {
            Ok(job) if ended(&job) => return Ok(job),
            Ok(job) => {
                if tokio::time::Instant::now() + delay > deadline {
                    return Err(still_running(&job));
                }
            }
            Err(error) if matches!(error.class, ErrorClass::Transient | ErrorClass::Throttled) => {
                delay = delay.max(error.retry_after.unwrap_or_default());
                if tokio::time::Instant::now() + delay > deadline {
                    return Err(error);
                }
                tracing::debug!(detail = %error.detail, "a job status read failed; reading it again");
            }
            Err(error) => return Err(error),
        }
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

/// Trims a configured base URL's trailing slashes.
pub(crate) fn trim_base(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

/// A contact of the connectors' unit tests: `fields` (a JSON object) both sent and desired,
/// subscribed, no ESP id yet.
#[cfg(test)]
pub(crate) fn test_contact(email: &str, fields: Value) -> crate::connector::Contact {
    let fields: std::collections::BTreeMap<String, Value> =
        serde_json::from_value(fields).expect("object");
    crate::connector::Contact {
        profile_id: format!("p-{email}"),
        email: email.into(),
        desired: fields.clone(),
        fields,
        subscribed: true,
        esp_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[track_caller]
    fn check(sent: Value, held: Option<Value>, expect: bool) {
        assert_eq!(
            values_match(&sent, held.as_ref()),
            expect,
            "{sent} vs {held:?}"
        );
    }

    #[test]
    fn values_match_loosely_across_text_and_numbers() {
        check(json!("Ada"), Some(json!("Ada")), true);
        check(json!("Ada"), Some(json!("Bob")), false);
        check(json!(3), Some(json!("3")), true);
        check(json!("3"), Some(json!(3)), true);
        check(json!(3.5), Some(json!("3.50")), true);
        check(json!(true), Some(json!("true")), true);
        check(json!(false), Some(json!("true")), false);
        check(json!(null), None, true);
        check(json!(null), Some(json!("")), true);
        check(json!(""), None, true);
        check(json!("x"), None, false);
        check(json!(2), Some(json!(2.0)), true);
        check(json!({"a": 1}), Some(json!({"a": 1})), true);
    }

    #[test]
    fn collapse_fails_the_batch_only_when_every_call_failed() {
        let error = |class| CallError {
            class,
            status: Some(500),
            retry_after: None,
            detail: "x".to_owned(),
        };
        let all_failed = collapse(vec![
            Err(error(ErrorClass::Transient)),
            Err(error(ErrorClass::Throttled)),
        ]);
        assert_eq!(
            all_failed.expect_err("batch error").class,
            ErrorClass::Throttled
        );
        let mixed = collapse(vec![
            Ok(ItemOutcome::Confirmed { esp_id: "1".into() }),
            Err(error(ErrorClass::Transient)),
        ])
        .expect("per-record outcomes");
        assert!(matches!(
            mixed[1],
            ItemOutcome::Failed {
                class: ErrorClass::Transient,
                ..
            }
        ));
        assert_eq!(collapse(Vec::new()).expect("empty"), Vec::new());
    }

    #[test]
    fn poll_delay_backs_off_to_two_seconds() {
        assert_eq!(poll_delay(0), Duration::from_millis(100));
        assert_eq!(poll_delay(3), Duration::from_millis(800));
        assert_eq!(poll_delay(30), Duration::from_secs(2));
    }

    fn failure(class: ErrorClass) -> CallError {
        CallError {
            class,
            status: Some(503),
            retry_after: None,
            detail: "status read failed".to_owned(),
        }
    }

    /// Polls answers in order (the last one again when they run out).
    async fn poll(
        answers: Vec<Result<&'static str, ErrorClass>>,
        limit: Duration,
    ) -> (Result<&'static str, CallError>, usize) {
        let reads = std::sync::atomic::AtomicUsize::new(0);
        let result = poll_job(
            limit,
            || {
                let n = reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answer = answers[n.min(answers.len() - 1)];
                async move { answer.map_err(failure) }
            },
            |status| *status == "finished",
            |status| failure_detail(status),
        )
        .await;
        (result, reads.into_inner())
    }

    fn failure_detail(status: &str) -> CallError {
        CallError {
            detail: format!("still {status}"),
            ..failure(ErrorClass::Transient)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_status_read_that_fails_transiently_is_read_again() {
        let (result, reads) = poll(
            vec![
                Err(ErrorClass::Transient),
                Ok("pending"),
                Err(ErrorClass::Throttled),
                Ok("finished"),
            ],
            Duration::from_secs(60),
        )
        .await;
        assert_eq!(result.unwrap(), "finished");
        assert_eq!(reads, 4);

        // Auth or fatal failures end it at once.
        let (result, reads) = poll(vec![Err(ErrorClass::Auth)], Duration::from_secs(60)).await;
        assert_eq!(result.unwrap_err().class, ErrorClass::Auth);
        assert_eq!(reads, 1);

        // At the deadline: the last failure, or the status of a job still running.
        let (result, _) = poll(vec![Err(ErrorClass::Transient)], Duration::from_secs(5)).await;
        assert_eq!(result.unwrap_err().detail, "status read failed");
        let (result, reads) = poll(vec![Ok("pending")], Duration::from_secs(5)).await;
        assert_eq!(result.unwrap_err().detail, "still pending");
        assert!(reads > 3, "{reads} reads in 5 s");
    }
}
