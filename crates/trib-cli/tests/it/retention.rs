//! Retention end to end: a server with a tiny purge interval blanks old events of an expiring
//! type and drops old contact traits from profiles, and keeps recent ones.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{ServerProcess, send, wait_for};

#[test]
fn old_events_and_old_contact_traits_expire_while_recent_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(
        &dir.path().join("data"),
        // The embedded log, as shipped: the purge seals a partition's active segment to blank
        // an expired record in it.
        r#"
[retention]
interval = "1s"

[retention.events]
"Order Completed" = "30d"

[retention.traits]
contact = "30d"
"#,
    );
    let now = jiff::Timestamp::now().to_string();
    let old = "2020-01-01T00:00:00Z";
    send(
        &server,
        json!([
            {"type": "identify", "userId": "u-old", "timestamp": old,
             "traits": {"email": "old.person@example.com", "plan": "gold"}},
            {"type": "track", "userId": "u-old", "event": "Order Completed", "timestamp": old,
             "messageId": "order-old", "properties": {"revenue": 10}},
            {"type": "track", "userId": "u-old", "event": "Signed Up", "timestamp": old,
             "messageId": "signup-old"},
            {"type": "track", "userId": "u-new", "event": "Order Completed", "timestamp": now,
             "messageId": "order-new", "properties": {"revenue": 20}},
            {"type": "identify", "userId": "u-new", "timestamp": now,
             "traits": {"email": "new.person@example.com"}},
        ]),
    );

    // The old contact trait goes; its class-less neighbour stays.
    let profile = wait_for(&server, "user_id=u-old", |p| {
        p["traits"].get("plan").is_some() && p["traits"].get("email").is_none()
    });
    assert_eq!(profile["traits"]["plan"], "gold", "{profile}");
    let recent = wait_for(&server, "user_id=u-new", |p| {
        p["traits"].get("email").is_some()
    });
    assert_eq!(
        recent["traits"]["email"], "new.person@example.com",
        "{recent}"
    );

    // The old order is blanked; the recent order and the event without a TTL stay.
    let deadline = Instant::now() + Duration::from_secs(20);
    let ids = loop {
        let ids: Vec<String> = server
            .stored_events()
            .iter()
            .filter_map(|event| event["messageId"].as_str().map(str::to_owned))
            .collect();
        if !ids.contains(&"order-old".to_owned()) || Instant::now() > deadline {
            break ids;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!ids.contains(&"order-old".to_owned()), "{ids:?}");
    assert!(ids.contains(&"order-new".to_owned()), "{ids:?}");
    assert!(ids.contains(&"signup-old".to_owned()), "{ids:?}");

    let metrics = server.metrics();
    for name in [
        "tributary_retention_events_blanked_total{type=\"Order Completed\"} 1",
        "tributary_retention_observations_expired_total{class=\"contact\"} 1",
        "tributary_retention_last_run_timestamp_seconds",
        "tributary_retention_run_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing in:\n{metrics}");
    }
}
