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

/// Installs the process-wide Prometheus recorder and returns the handle that renders
/// `/metrics`. Call once per process.
pub fn install_metrics_recorder() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(ACK_LATENCY.to_owned()), ACK_LATENCY_BUCKETS)?
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
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
