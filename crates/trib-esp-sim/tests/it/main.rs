//! Integration tests: each simulator over real HTTP on loopback, driven with reqwest.

mod faults;
mod hubspot;
mod mailchimp;
mod sendgrid;
mod spec;
mod webhook;

use std::time::Duration;

use serde_json::{Value, json};
use trib_esp_sim::{SimConfig, SimKind, Simulator};

/// Starts a simulator on a free loopback port.
async fn start(config: SimConfig) -> Simulator {
    Simulator::start(config, "127.0.0.1:0".parse().expect("address"))
        .await
        .expect("simulator starts")
}

async fn start_kind(kind: SimKind) -> Simulator {
    start(SimConfig::new(kind)).await
}

fn client() -> reqwest::Client {
    crate::client_builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// The body of a response as JSON (`Null` when empty).
async fn body(response: reqwest::Response) -> Value {
    let bytes = response.bytes().await.expect("body");
    if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON body")
    }
}

/// The add-or-update body the Mailchimp tests send (validated against the spec in
/// `spec.rs`).
fn mailchimp_member(email: &str, merge_fields: Value) -> Value {
    json!({
        "email_address": email,
        "status_if_new": "subscribed",
        "merge_fields": merge_fields,
    })
}

/// Polls `check` every 20 ms for up to 5 s until it returns `Some`.
async fn eventually<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..250 {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not met within 5 s");
}

/// A client builder for the tests. In a workspace build reqwest has rustls without a built-in
/// crypto provider (trib-sync chooses ring), so ring is installed as the process default first.
pub(crate) fn client_builder() -> reqwest::ClientBuilder {
    #[allow(deprecated)] // rustls 0.23.48 deprecates ring's provider (no post-quantum kx)
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}
