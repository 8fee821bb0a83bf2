//! The signed webhook receiver (format in the crate docs). The signature is checked by the
//! server's gate before the handler runs; the handler validates the whole body first and
//! applies nothing when any element is malformed.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use crate::SimContact;
use crate::common::{json, lock, read_request, with_fault};
use crate::state::Shared;

/// Records by profile id.
#[derive(Default)]
pub(crate) struct Store {
    records: BTreeMap<String, SimContact>,
}

impl Store {
    pub(crate) fn contacts(&self) -> BTreeMap<String, SimContact> {
        self.records.clone()
    }
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new().fallback(receive)
}

enum Event {
    Upsert(SimContact),
    Delete(String),
}

fn bad_request(message: &str) -> Response {
    json(StatusCode::BAD_REQUEST, &json!({ "error": message }))
}

fn parse_event(value: &Value) -> Result<Event, String> {
    let object = value.as_object().ok_or("every event must be an object")?;
    let profile_id = object
        .get("profile_id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or("`profile_id` must be a non-empty string")?
        .to_owned();
    match object.get("type").and_then(Value::as_str) {
        Some("upsert") => {
            let email = object
                .get("email")
                .and_then(Value::as_str)
                .ok_or("an upsert needs `email`")?
                .to_lowercase();
            let fields = match object.get("fields") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(fields)) => fields.clone(),
                Some(_) => return Err("`fields` must be an object".to_owned()),
            };
            Ok(Event::Upsert(SimContact {
                id: profile_id,
                email,
                status: None,
                fields: fields.into_iter().collect(),
            }))
        }
        Some("delete") => Ok(Event::Delete(profile_id)),
        _ => Err("`type` must be \"upsert\" or \"delete\"".to_owned()),
    }
}

async fn receive(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    if request.method() != axum::http::Method::POST {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({ "error": "only POST is accepted" }),
        );
    }
    let (plan, _query, bytes) = read_request(request).await;
    let Ok(body) = serde_json::from_slice::<Value>(&bytes) else {
        return bad_request("the body must be JSON");
    };
    let elements = match &body {
        Value::Array(elements) => elements.iter().collect::<Vec<_>>(),
        single => vec![single],
    };
    let mut events = Vec::with_capacity(elements.len());
    for element in elements {
        match parse_event(element) {
            Ok(event) => events.push(event),
            Err(message) => return bad_request(&message),
        }
    }
    let received = events.len();
    let answer = json(StatusCode::OK, &json!({ "received": received }));
    if plan.not_applied {
        return with_fault(answer, "not_applied");
    }
    let mut state = lock(&shared.webhook);
    for event in events {
        match event {
            Event::Upsert(record) => {
                state.records.insert(record.id.clone(), record);
            }
            Event::Delete(profile_id) => {
                state.records.remove(&profile_id);
            }
        }
    }
    drop(state);
    shared.count_writes(received as u64);
    answer
}
