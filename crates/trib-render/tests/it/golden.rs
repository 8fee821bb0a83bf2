//! Golden renders: every example template × every case under `golden/<case>/input.json`,
//! compared with `golden/<case>/<template>.out` (subject, preheader, report, HTML, text).
//! Run with `UPDATE_GOLDEN=1` to rewrite the expected files, then review the diff.

use std::path::Path;

use serde_json::Value;
use trib_render::CheckOptions;

use crate::support::{Consent, compiler, person, template};

const TEMPLATES: [&str; 3] = ["weekly", "welcome", "receipt"];

#[test]
fn every_template_renders_every_case_as_recorded() {
    let compiler = compiler(CheckOptions::default());
    let consent = Consent::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .expect("golden dir")
        .map(|entry| entry.expect("entry").path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 4, "golden cases are missing");
    for case in cases {
        let description: Value = serde_json::from_str(
            &std::fs::read_to_string(case.join("input.json")).expect("input.json"),
        )
        .expect("input.json is JSON");
        for name in TEMPLATES {
            let compiled = compiler
                .compile(&template(name))
                .expect("example template compiles");
            let input = person(&description);
            consent.grant(&input.profile, compiled.purpose());
            let permitted = consent
                .gatekeeper
                .permit(
                    &input.profile.identifiers.clone(),
                    compiled.purpose(),
                    None,
                    input,
                )
                .expect("consent was granted");
            let (email, report) = compiled
                .render_with_report(permitted)
                .unwrap_or_else(|error| panic!("{}/{name}: {error}", case.display()));
            let actual = format!(
                "subject: {}\npreheader: {}\nfallbacks: {}\nmissing: {}\n--- html\n{}\n--- text\n{}",
                email.subject,
                email.preheader,
                report.fallbacks.join(", "),
                report.missing.join(", "),
                email.html,
                email.text
            );
            let expected_path = case.join(format!("{name}.out"));
            if update {
                std::fs::write(&expected_path, &actual).expect("write golden");
                continue;
            }
            let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
            if expected != actual {
                failures.push(format!(
                    "{} differs (UPDATE_GOLDEN=1 rewrites it)",
                    expected_path.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn hostile_values_are_escaped_in_html_but_not_in_text() {
    let compiler = compiler(CheckOptions::default());
    let consent = Consent::new();
    let description: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/golden/hostile/input.json"),
        )
        .expect("input"),
    )
    .expect("json");
    let compiled = compiler.compile(&template("weekly")).expect("compiles");
    let input = person(&description);
    consent.grant(&input.profile, "email_marketing");
    let permitted = consent
        .gatekeeper
        .permit(
            &input.profile.identifiers.clone(),
            "email_marketing",
            None,
            input,
        )
        .expect("permitted");
    let email = compiled.render(permitted).expect("renders");
    assert!(!email.html.contains("<script>alert"), "{}", email.html);
    assert!(
        email
            .html
            .contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;")
            || email
                .html
                .contains("&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"),
        "{}",
        email.html
    );
    assert!(!email.html.contains("<img src=x"), "{}", email.html);
    assert!(
        email.text.contains("Hi <script>alert('x')</script>,"),
        "{}",
        email.text
    );
    assert!(
        email.subject.starts_with("<script>"),
        "the subject is not HTML"
    );
}
