//! A test send to a real SMTP server on loopback (Python's aiosmtpd, installed with
//! `pip install aiosmtpd` when missing), asserted on the message it received.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use trib_render::{CheckOptions, SmtpSecurity, SmtpSettings, send_to_seeds};

use crate::support::{Consent, compiler, person, template};

struct Sink {
    child: Child,
}

impl Drop for Sink {
    fn drop(&mut self) {
        // Closing stdin stops the server; kill it if it lingers.
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ensure_aiosmtpd() {
    let present = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|status| status.success());
    if !present {
        let installed = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "aiosmtpd"])
            .status()
            .is_ok_and(|status| status.success());
        assert!(
            installed,
            "aiosmtpd is missing and `pip install aiosmtpd` failed"
        );
    }
}

fn start_sink(out: &Path) -> (Sink, u16) {
    ensure_aiosmtpd();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/smtp_sink.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(out)
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("sink output");
    assert_eq!(line.trim(), "ready", "the SMTP sink did not start");
    (Sink { child }, port)
}

#[test]
fn a_test_send_arrives_with_its_subject_html_and_text() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("received.json");
    let (_sink, port) = start_sink(&out);

    let compiled = compiler(CheckOptions::default())
        .compile(&template("weekly"))
        .expect("compiles");
    let description: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/golden/unicode/input.json"),
        )
        .expect("input"),
    )
    .expect("json");
    let consent = Consent::new();
    let input = person(&description);
    consent.grant(&input.profile, "email_marketing");
    let identifiers = input.profile.identifiers.clone();
    let permitted = consent
        .gatekeeper
        .permit(&identifiers, "email_marketing", None, input)
        .expect("permitted");
    let email = compiled.render(permitted).expect("renders");

    let settings = SmtpSettings {
        host: "127.0.0.1".into(),
        port,
        security: SmtpSecurity::None,
        username: Some("qa".into()),
        password: Some("s3cret".into()),
        from: "Tributary QA <qa@example.com>".into(),
        timeout: Duration::from_secs(10),
    };
    let seeds = vec![
        "seed-1@example.com".to_owned(),
        "Seed Two <seed-2@example.com>".to_owned(),
    ];
    send_to_seeds(&email, &seeds, &settings).expect("sent");

    let deadline = Instant::now() + Duration::from_secs(10);
    while !out.exists() {
        assert!(Instant::now() < deadline, "no message arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    let received: Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("received")).expect("json");
    let normalize = |text: &str| text.replace("\r\n", "\n").trim_end().to_owned();
    assert_eq!(received["subject"], email.subject.as_str());
    assert_eq!(received["subject"], "Zoë 李, your picks this week");
    assert_eq!(
        normalize(received["html"].as_str().expect("html")),
        normalize(&email.html)
    );
    assert_eq!(
        normalize(received["text"].as_str().expect("text")),
        normalize(&email.text)
    );
    assert!(email.text.contains("Café ☕ — «spécial»"));
    assert_eq!(
        received["rcpt_tos"],
        serde_json::json!(["seed-1@example.com", "seed-2@example.com"])
    );
    assert_eq!(received["mail_from"], "qa@example.com");
    assert_eq!(received["authenticated"], true);

    // Wrong credentials are refused and reported (aiosmtpd leaves lettre's fallback from
    // PLAIN to LOGIN waiting, hence the short timeout).
    let wrong = SmtpSettings {
        password: Some("nope".into()),
        timeout: Duration::from_secs(1),
        ..settings
    };
    assert!(send_to_seeds(&email, &seeds, &wrong).is_err());
}
