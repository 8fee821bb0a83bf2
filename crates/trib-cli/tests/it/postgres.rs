//! `tributary serve` with `[store] kind = "postgres"`: identity resolution writes golden profiles
//! to PostgreSQL, and they survive a hard kill and a restart. Runs when PostgreSQL is reachable
//! at `TRIBUTARY_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`); CI sets
//! `TRIBUTARY_REQUIRE_POSTGRES=1` so it never skips there.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::json;

use crate::support::{ServerProcess, lookup, send, wait_for};

fn postgres_url() -> Option<String> {
    let url = std::env::var("TRIBUTARY_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let host_port = url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("127.0.0.1:5432")
        .to_owned();
    let reachable = host_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok());
    if reachable {
        return Some(url);
    }
    assert!(
        std::env::var("TRIBUTARY_REQUIRE_POSTGRES").as_deref() != Ok("1"),
        "PostgreSQL is required (TRIBUTARY_REQUIRE_POSTGRES=1) but {host_port} is unreachable"
    );
    eprintln!("skipped: PostgreSQL is not reachable at {host_port}");
    None
}

#[test]
fn serve_keeps_golden_profiles_in_postgres_across_a_hard_restart() {
    let Some(url) = postgres_url() else { return };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema = format!("trib_cli_{}_{nanos}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start_with(
        &dir.path().join("data"),
        &format!("[store]\nkind = \"postgres\"\nurl = \"{url}\"\nschema = \"{schema}\"\n"),
    );
    send(
        &server,
        json!([
            {"type": "page", "anonymousId": "pg-anon", "name": "Home"},
            {"type": "identify", "userId": "pg-user", "anonymousId": "pg-anon",
             "traits": {"email": "PG.Person@example.com", "plan": "pro"}}
        ]),
    );
    let profile = wait_for(&server, "email=pg.person@example.com", |p| {
        p["event_count"] == 2
    });
    let id = profile["id"].as_str().unwrap().to_owned();
    assert_eq!(profile["traits"]["plan"], "pro");

    server.kill_hard();
    server.restart();
    // Still there after the restart, and new events land on the same profile.
    let again = lookup(&server, "user_id=pg-user").expect("profile lost in the restart");
    assert_eq!(again["id"].as_str(), Some(id.as_str()));
    send(
        &server,
        json!([{"type": "track", "userId": "pg-user", "event": "Order Completed"}]),
    );
    let after = wait_for(&server, "anonymous_id=pg-anon", |p| p["event_count"] == 3);
    assert_eq!(after["id"].as_str(), Some(id.as_str()));
    assert!(server.stop_gracefully().success());
    // Best effort: drop the test's schema when psql is there.
    let _ = std::process::Command::new("psql")
        .args([
            url.as_str(),
            "-qc",
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        ])
        .output();
}
