//! The static check: one test per kind of problem, each with its part, line and column.

use trib_render::{CheckOptions, Diagnostic, DiagnosticKind, Severity, TemplateSource};

use crate::support::compiler;

fn source(purpose: &str, html: &str) -> TemplateSource {
    trib_render::source::parse(
        "t",
        &format!("purpose = {purpose:?}\nversion = 1\nsubject = \"Hi\"\nhtml = '''\n{html}'''\n"),
        None,
    )
    .expect("definition parses")
}

#[track_caller]
fn only(purpose: &str, html: &str, options: CheckOptions) -> Diagnostic {
    let diagnostics = compiler(options).check(&source(purpose, html));
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    diagnostics.into_iter().next().expect("one")
}

#[track_caller]
fn check(html: &str, kind: DiagnosticKind, line: usize, column: usize, needle: &str) {
    let diagnostic = only("email_marketing", html, CheckOptions::default());
    assert_eq!(
        (
            diagnostic.kind,
            diagnostic.part,
            diagnostic.line,
            diagnostic.column
        ),
        (kind, "html", line, column),
        "{diagnostic}"
    );
    assert_eq!(diagnostic.severity, Severity::Error);
    assert!(diagnostic.message.contains(needle), "{diagnostic}");
}

#[test]
fn an_unknown_variable_is_an_error() {
    check(
        "<p>\n  {{ profile.traits.favouriteColour | default: 'blue' }}</p>",
        DiagnosticKind::UnknownVariable,
        2,
        6,
        "not in the trait schema",
    );
    check(
        "{{ customer.name | default: 'x' }}",
        DiagnosticKind::UnknownVariable,
        1,
        4,
        "customer",
    );
    check(
        "{{ events.last.order_shipped.name | default: 'x' }}",
        DiagnosticKind::UnknownVariable,
        1,
        4,
        "no event schema",
    );
    check(
        "{{ events.last.order_completed.properties.colour | default: 'x' }}",
        DiagnosticKind::UnknownVariable,
        1,
        4,
        "no property `colour`",
    );
}

#[test]
fn a_field_the_purpose_does_not_allow_is_an_error() {
    // email_marketing has no `fields`: every schema trait and the email identifier only.
    check(
        "{{ profile.phone | default: '' }}",
        DiagnosticKind::FieldNotAllowed,
        1,
        4,
        "identifier `phone`",
    );
    // order_emails lists firstName, email and events.order_completed.
    let diagnostic = only(
        "order_emails",
        "x {% if profile.traits.plan %}{% endif %}",
        CheckOptions::default(),
    );
    assert_eq!(
        (diagnostic.kind, diagnostic.line, diagnostic.column),
        (DiagnosticKind::FieldNotAllowed, 1, 9)
    );
    let diagnostic = only(
        "order_emails",
        "{% for e in events.recent %}{% endfor %}",
        CheckOptions::default(),
    );
    assert_eq!(diagnostic.kind, DiagnosticKind::FieldNotAllowed);
}

#[test]
fn an_optional_field_without_fallback_is_an_error_or_a_warning_by_config() {
    check(
        "Dear {{ profile.traits.lastName }}",
        DiagnosticKind::MissingDefault,
        1,
        9,
        "default",
    );
    let warning = only(
        "email_marketing",
        "Dear {{ profile.traits.lastName }}",
        CheckOptions {
            missing_default: Severity::Warning,
        },
    );
    assert_eq!(
        (warning.kind, warning.severity),
        (DiagnosticKind::MissingDefault, Severity::Warning)
    );
    // A warning does not stop compilation; a guard (`if`) or a default needs no fallback.
    compiler(CheckOptions {
        missing_default: Severity::Warning,
    })
    .compile(&source(
        "email_marketing",
        "Dear {{ profile.traits.lastName }}",
    ))
    .expect("warnings compile");
    let clean = compiler(CheckOptions::default()).check(&source(
        "email_marketing",
        "{% if profile.traits.lastName %}Dear {{ profile.traits.lastName }}{% endif %}",
    ));
    assert!(clean.is_empty(), "{clean:#?}");
}

#[test]
fn an_unknown_filter_is_an_error() {
    check(
        "{{ profile.traits.firstName | default: 'x' | shout }}",
        DiagnosticKind::UnknownFilter,
        1,
        46,
        "`shout`",
    );
}

#[test]
fn includes_are_refused_by_the_sandbox() {
    let diagnostics = compiler(CheckOptions::default())
        .check(&source("email_marketing", "a\n{% include 'footer' %}"));
    let sandbox = diagnostics
        .iter()
        .find(|d| d.kind == DiagnosticKind::Sandbox)
        .expect("sandbox diagnostic");
    assert_eq!((sandbox.line, sandbox.column), (2, 4));
}

#[test]
fn broken_liquid_is_a_syntax_error() {
    let diagnostic = only(
        "email_marketing",
        "ok\n{% iff x %}",
        CheckOptions::default(),
    );
    assert_eq!(
        (diagnostic.kind, diagnostic.line),
        (DiagnosticKind::Syntax, 2),
        "{diagnostic}"
    );
    let unclosed = only("email_marketing", "{{ profile.id ", CheckOptions::default());
    assert_eq!(
        (unclosed.kind, unclosed.line, unclosed.column),
        (DiagnosticKind::Syntax, 1, 1)
    );
}

#[test]
fn an_undeclared_purpose_is_an_error() {
    let diagnostic = only("newsletters", "{{ profile.id }}", CheckOptions::default());
    assert_eq!(
        (diagnostic.kind, diagnostic.part),
        (DiagnosticKind::UnknownPurpose, "purpose")
    );
}

#[test]
fn the_example_templates_pass() {
    for name in ["weekly", "welcome", "receipt"] {
        let diagnostics = compiler(CheckOptions::default()).check(&crate::support::template(name));
        assert!(diagnostics.is_empty(), "{name}: {diagnostics:#?}");
    }
}
