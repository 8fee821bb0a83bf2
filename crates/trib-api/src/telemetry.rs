//! Prometheus metrics: the recorder and the names the API records.
//!
//! Counters are labelled by `source` (the configured source name, so cardinality is bounded by
//! the configuration) and, for rejections, by the stable rejection `code`.

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// Messages received in ingestion requests that passed authentication.
pub(crate) const EVENTS_RECEIVED: &str = "tributary_events_received_total";
/// Messages stored in the event log.
pub(crate) const EVENTS_ACCEPTED: &str = "tributary_events_accepted_total";
/// Messages stored in the quarantine instead, labelled by `code`.
pub(crate) const EVENTS_REJECTED: &str = "tributary_events_rejected_total";
/// Messages whose `messageId` was already in the log within the deduplication window.
pub(crate) const EVENTS_DUPLICATE: &str = "tributary_events_duplicate_total";
/// Messages about an erased person (who has not come back with consent): not stored.
pub(crate) const EVENTS_ERASED: &str = "tributary_events_erased_total";
/// Requests refused as a whole (authentication, malformed body, size), labelled by `code`.
pub(crate) const REQUESTS_REFUSED: &str = "tributary_requests_refused_total";
/// Seconds from the start of an ingestion request to its durable acknowledgement.
pub(crate) const ACK_LATENCY: &str = "tributary_ack_latency_seconds";

const ACK_LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Seconds from a profile change to its confirmation in an ESP, per destination.
const SYNC_FRESHNESS: &str = "tributary_sync_freshness_seconds";
const SYNC_FRESHNESS_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
];
/// Seconds per ESP API call, per destination.
const SYNC_API_LATENCY: &str = "tributary_sync_api_latency_seconds";
const SYNC_API_LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the process-wide Prometheus recorder and returns the handle that renders
/// `/metrics`. Call once per process.
pub fn install_metrics_recorder() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(ACK_LATENCY.to_owned()), ACK_LATENCY_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(SYNC_FRESHNESS.to_owned()),
            SYNC_FRESHNESS_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(SYNC_API_LATENCY.to_owned()),
            SYNC_API_LATENCY_BUCKETS,
        )?
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    metrics::describe_histogram!(
        SYNC_FRESHNESS,
        metrics::Unit::Seconds,
        "From a profile change to its confirmation in the ESP, per destination."
    );
    metrics::describe_histogram!(
        SYNC_API_LATENCY,
        metrics::Unit::Seconds,
        "ESP API call latency, per destination."
    );
    for (name, help) in [
        (
            "tributary_sync_sent_total",
            "Records handed to a destination's connector.",
        ),
        (
            "tributary_sync_confirmed_total",
            "Records the ESP confirmed (read back or job completed).",
        ),
        (
            "tributary_sync_failed_total",
            "Record failures, by error class (throttled, transient, invalid_record, auth, fatal).",
        ),
        (
            "tributary_sync_retried_total",
            "Records scheduled for a retry, by error class.",
        ),
        (
            "tributary_sync_dead_lettered_total",
            "Records moved to the dead-letter queue, by error class.",
        ),
        (
            "tributary_sync_unchanged_total",
            "Changed profiles whose mapped fields the ESP already holds (no call).",
        ),
        (
            "tributary_sync_skipped_total",
            "Profiles not sent, by reason (no_consent, denied, withdrawn, suppressed_*, no_email).",
        ),
        (
            "tributary_sync_deleted_total",
            "Deletions carried out at a destination.",
        ),
        (
            "tributary_sync_api_calls_total",
            "ESP API calls, by endpoint and HTTP status (or timeout/transport).",
        ),
    ] {
        metrics::describe_counter!(name, help);
    }
    metrics::describe_counter!(
        EVENTS_RECEIVED,
        "Messages received from authenticated sources."
    );
    metrics::describe_counter!(EVENTS_ACCEPTED, "Messages durably stored in the event log.");
    metrics::describe_counter!(
        EVENTS_REJECTED,
        "Messages stored in the quarantine, by rejection code."
    );
    metrics::describe_counter!(
        EVENTS_DUPLICATE,
        "Messages dropped as retries of an already stored messageId."
    );
    metrics::describe_counter!(
        EVENTS_ERASED,
        "Messages not stored because their person was erased and gave no new consent."
    );
    metrics::describe_counter!(
        REQUESTS_REFUSED,
        "Ingestion requests refused as a whole, by error code."
    );
    metrics::describe_histogram!(
        ACK_LATENCY,
        metrics::Unit::Seconds,
        "Time from request start to durable acknowledgement."
    );
}
