//! `POST /v1/webhooks/{source}`: deliveries from third-party tools, verified by the source's
//! HMAC signature and mapped to events by its declarative mapping (`[sources.webhook]`).
//!
//! A delivery is marked as seen only after its events are durable, so a sender whose delivery
//! failed to store can retry it; a replay of a stored delivery is refused with 409.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use crate::ingest::{IngestResponse, Intake, RejectionSummary, store};
use crate::{ApiError, AppState, body};

pub(crate) async fn receive(
    State(state): State<Arc<AppState>>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, ApiError> {
    let Some(webhook) = state.webhooks.get(&source) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_webhook_source",
            format!("no source named `{source}` has a [sources.webhook] configuration"),
        ));
    };
    let bytes = body::read_body(&headers, body, state.limits.max_request_bytes).await?;
    let received_at = jiff::Timestamp::now();
    let delivery = webhook
        .verify(&headers, &bytes, received_at)
        .map_err(|error| ApiError::new(error.status(), error.code(), error.to_string()))?;
    let mapped = webhook.map(&delivery, received_at);
    let mut intake = Intake::new(Arc::from(source.as_str()), received_at, mapped.len());
    for (index, outcome) in mapped.into_iter().enumerate() {
        match outcome {
            Ok(event) => intake.events.push((index, event)),
            Err(quarantined) => {
                intake.errors.push(RejectionSummary {
                    index,
                    message_id: quarantined.message_id.clone(),
                    field: quarantined.field.clone(),
                    code: quarantined.code.clone(),
                    reason: quarantined.reason.clone(),
                });
                intake.quarantined.push(quarantined);
            }
        }
    }
    let response = store(&state, intake, "webhook").await?;
    webhook.mark_accepted(&delivery, jiff::Timestamp::now());
    Ok(Json(response))
}
