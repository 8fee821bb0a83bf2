//! A person's data cannot turn into active content: URL attributes that start with it keep only
//! harmless schemes (issue 7), `raw` is refused on it, and the preheader is escaped.

use serde_json::{Value, json};
use trib_render::{
    BlockedUrl, CheckOptions, CompiledTemplate, Compiler, Diagnostic, DiagnosticKind, Limits,
    PurposeFields, RenderReport, RenderedEmail, Severity, TemplateSource, Vocabulary,
};

use crate::support::{Consent, person};

/// Traits with free text a person controls: a website and a bio.
fn compiler() -> Compiler {
    let traits = json!({
        "type": "object",
        "properties": {
            "firstName": {"type": "string"},
            "website": {"type": "string"},
            "bio": {"type": "string"},
        }
    });
    let order = json!({
        "type": "object",
        "properties": {"url": {"type": "string"}}
    });
    Compiler::new(
        Vocabulary::new(
            Some(&traits),
            [("Link Shared".to_owned(), order)],
            ["email".to_owned()],
        ),
        PurposeFields::defaults_for(["email_marketing"]),
        CheckOptions::default(),
        Limits::default(),
    )
}

fn source(body: &str) -> TemplateSource {
    source_with("", "html", body)
}

fn source_with(preheader: &str, kind: &str, body: &str) -> TemplateSource {
    trib_render::source::parse(
        "t",
        &format!(
            "purpose = \"email_marketing\"\nversion = 1\nsubject = \"Hi\"\npreheader = {preheader:?}\n{kind} = '''\n{body}'''\n"
        ),
        None,
    )
    .expect("definition parses")
}

fn render(compiled: &CompiledTemplate, traits: Value) -> (RenderedEmail, RenderReport) {
    let consent = Consent::new();
    let input = person(&json!({
        "identifiers": {"email": "pat@example.com"},
        "traits": traits,
        "events": [{"type": "track", "event": "Link Shared", "timestamp": "2026-03-03T10:00:00Z",
                    "properties": {"url": "javascript:alert(2)"}}],
    }));
    consent.grant(&input.profile, "email_marketing");
    let permitted = consent
        .gatekeeper
        .permit(
            &input.profile.identifiers.clone(),
            "email_marketing",
            None,
            input,
        )
        .expect("consent was granted");
    compiled.render_with_report(permitted).expect("renders")
}

fn blocked(attribute: &str, variable: &str) -> BlockedUrl {
    BlockedUrl {
        part: "html",
        attribute: attribute.to_owned(),
        variable: variable.to_owned(),
    }
}

const DANGEROUS: [&str; 9] = [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "  javascript:alert(1)",
    "\u{1}\u{10}javascript:alert(1)",
    "java\tscript:alert(1)",
    "vbscript:msgbox(1)",
    "data:text/html,<script>alert(1)</script>",
    "java&#115;cript:alert(1)",
    "javascript&colon;alert(1)",
];

#[test]
fn a_dangerous_url_at_the_start_of_an_attribute_renders_as_about_blank_and_is_reported() {
    let compiled = compiler()
        .compile(&source(
            "<a href=\"{{ profile.traits.website | default: '#' }}\">site</a>\
             <img src=\" {{ profile.traits.website | default: '' }}\">\
             <a href=\"https://shop.example/?u={{ profile.traits.website | default: '' | url_encode }}\">shop</a>",
        ))
        .expect("compiles (with an unsafe_url warning)");
    for value in DANGEROUS {
        let (email, report) = render(&compiled, json!({"website": value}));
        assert!(
            email.html.starts_with(
                "<a href=\"about:blank\">site</a><img src=\" about:blank\"><a href=\"https://shop.example/?u="
            ),
            "{value:?}: {}",
            email.html
        );
        assert_eq!(
            report.blocked_urls,
            [
                blocked("href", "profile.traits.website"),
                blocked("src", "profile.traits.website")
            ],
            "{value:?}"
        );
        // The text part is not HTML: nothing there runs a link.
        assert!(email.text.contains("site"), "{}", email.text);
    }
    for value in [
        "https://pat.example/me",
        "mailto:pat@example.com",
        "tel:+33123",
        "/profile",
        "#top",
    ] {
        let (email, report) = render(&compiled, json!({"website": value}));
        assert!(
            email
                .html
                .starts_with(&format!("<a href=\"{value}\">site</a>")),
            "{value:?}: {}",
            email.html
        );
        assert!(report.blocked_urls.is_empty(), "{value:?}");
    }
}

#[test]
fn mjml_attributes_and_values_taken_through_locals_are_guarded_too() {
    let compiled = compiler()
        .compile(&source_with(
            "",
            "mjml",
            "<mjml><mj-body><mj-section><mj-column>\
             <mj-button href=\"{{ profile.traits.website | default: '#' }}\">Go</mj-button>\
             {% for link in events.recent %}<mj-text><a href=\"{{ link.properties.url | default: '#' }}\">shared</a></mj-text>{% endfor %}\
             </mj-column></mj-section></mj-body></mjml>",
        ))
        .expect("compiles");
    let (email, report) = render(&compiled, json!({"website": "javascript:alert(1)"}));
    assert!(!email.html.contains("javascript"), "{}", email.html);
    assert_eq!(email.html.matches("href=\"about:blank\"").count(), 2);
    assert_eq!(
        report.blocked_urls,
        [
            blocked("href", "profile.traits.website"),
            blocked("href", "link.properties.url")
        ]
    );
}

#[track_caller]
fn diagnostics(body: &str) -> Vec<Diagnostic> {
    compiler().check(&source(body))
}

#[track_caller]
fn only(body: &str) -> Diagnostic {
    let diagnostics = diagnostics(body);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    diagnostics.into_iter().next().expect("one")
}

#[test]
fn the_check_warns_when_a_url_attribute_starts_with_the_persons_data() {
    let warning = only("<p>\n<a href=\"{{ profile.traits.website | default: '#' }}\">x</a>");
    assert_eq!(
        (
            warning.kind,
            warning.severity,
            warning.part,
            warning.line,
            warning.column
        ),
        (DiagnosticKind::UnsafeUrl, Severity::Warning, "html", 2, 13),
        "{warning}"
    );
    assert!(
        warning
            .message
            .contains("`href` starts with `profile.traits.website`"),
        "{warning}"
    );
    let through_local = only(
        "{% assign site = profile.traits.website | default: '#' %}<a href=\"{{ site }}\">x</a>",
    );
    assert_eq!(through_local.kind, DiagnosticKind::UnsafeUrl);
    assert!(
        through_local
            .message
            .contains("`site` (from `profile.traits.website`)"),
        "{through_local}"
    );
    // A literal start fixes the scheme; ids and template-defined values are not the person's.
    for clean in [
        "<a href=\"https://shop.example/?u={{ profile.traits.website | default: '' }}\">x</a>",
        "<a href=\"mailto:{{ profile.email | default: '' }}\">x</a>",
        "<a href=\"{{ profile.id }}\">x</a>",
        "{% assign home = 'https://shop.example' %}<a href=\"{{ home }}\">x</a>",
        "<p title=\"{{ profile.traits.website | default: '' }}\">{{ profile.traits.website | default: '' }}</p>",
    ] {
        assert!(
            diagnostics(clean).is_empty(),
            "{clean}: {:#?}",
            diagnostics(clean)
        );
    }
    // The guard filter is the compiler's own.
    assert_eq!(
        only("<p>{{ profile.traits.website | default: '' | tributary_url_guard: 0 }}</p>").kind,
        DiagnosticKind::UnknownFilter
    );
}

#[test]
fn raw_on_the_persons_data_is_an_error_naming_the_field() {
    let error = only("<p>{{ profile.traits.bio | default: '' | raw }}</p>");
    assert_eq!(
        (error.kind, error.severity, error.line, error.column),
        (DiagnosticKind::RawPersonalData, Severity::Error, 1, 42),
        "{error}"
    );
    assert!(error.message.contains("`profile.traits.bio`"), "{error}");
    for (body, field) in [
        (
            "{% assign b = profile.traits.bio | default: '' %}{{ b | raw }}",
            "`b` (from `profile.traits.bio`)",
        ),
        (
            "{% assign a = profile.traits.bio | default: '' %}{% assign b = a | upcase %}{{ b | raw }}",
            "`b` (from `profile.traits.bio`)",
        ),
        (
            "{% for e in events.recent %}{{ e.properties.url | raw }}{% endfor %}",
            "`e.properties.url` (from `events.recent`)",
        ),
        (
            "{{ 'Hi ' | append: profile.traits.firstName | raw }}",
            "`profile.traits.firstName`",
        ),
    ] {
        let error = only(body);
        assert_eq!(error.kind, DiagnosticKind::RawPersonalData, "{body}");
        assert!(error.message.contains(field), "{body}: {error}");
    }
    assert!(matches!(
        compiler().compile(&source("{{ profile.traits.bio | default: '' | raw }}")),
        Err(trib_render::RenderError::Check { .. })
    ));
}

#[test]
fn raw_on_template_defined_values_stays_allowed() {
    let compiled = compiler()
        .compile(&source(
            "{% assign banner = '<b>Sale</b>' %}{{ banner | raw }}\
             {% capture card %}<i>{{ profile.traits.bio | default: '' }}</i>{% endcapture %}{{ card | raw }}",
        ))
        .expect("raw on template values compiles");
    let (email, _) = render(&compiled, json!({"bio": "<script>x</script>"}));
    assert_eq!(
        email.html.trim_end(),
        "<b>Sale</b><i>&lt;script&gt;x&lt;/script&gt;</i>"
    );
}

#[test]
fn the_preheader_is_a_hidden_escaped_block_right_after_body() {
    let hidden = "<div style=\"display:none;font-size:1px;color:#ffffff;line-height:1px;max-height:0px;max-width:0px;opacity:0;overflow:hidden;mso-hide:all;\">";
    let compiled = compiler()
        .compile(&source_with(
            "{{ profile.traits.bio | default: '' }}",
            "html",
            "<html><head><title>T</title></head><BODY class=\"x\"><p>Hi</p></BODY></html>",
        ))
        .expect("compiles");
    let (email, _) = render(&compiled, json!({"bio": "<b>\"Tom\" & 'Jerry'</b>"}));
    assert_eq!(
        email.html.trim_end(),
        format!(
            "<html><head><title>T</title></head><BODY class=\"x\">{hidden}&lt;b&gt;&quot;Tom&quot; &amp; &#39;Jerry&#39;&lt;/b&gt;</div><p>Hi</p></BODY></html>"
        )
    );
    assert_eq!(email.preheader, "<b>\"Tom\" & 'Jerry'</b>");
    // Empty: no block.
    let (email, _) = render(&compiled, json!({}));
    assert!(!email.html.contains("display:none"), "{}", email.html);
    // A fragment without <body> gets it first.
    let fragment = compiler()
        .compile(&source_with("Sale", "html", "<p>Hi</p>"))
        .expect("compiles");
    let (email, _) = render(&fragment, json!({}));
    assert_eq!(
        email.html.trim_end(),
        format!("{hidden}Sale</div><p>Hi</p>")
    );
    // MJML: after the compiled <body>, before mrml's content.
    let mjml = compiler()
        .compile(&source_with(
            "Sale",
            "mjml",
            "<mjml><mj-body><mj-section><mj-column><mj-text>Hi</mj-text></mj-column></mj-section></mj-body></mjml>",
        ))
        .expect("compiles");
    let (email, _) = render(&mjml, json!({}));
    let body = email.html.find("<body").expect("body");
    let after_body = &email.html[body..];
    let content = after_body.find('>').expect("body tag ends") + 1;
    assert!(
        after_body[content..].starts_with(&format!("{hidden}Sale</div>")),
        "{after_body}"
    );
}
