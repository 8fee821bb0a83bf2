//! Rendering needs a permit for the template's purpose.

use serde_json::json;
use trib_consent::DenyReason;
use trib_render::{CheckOptions, RenderError};

use crate::support::{Consent, compiler, person, template};

#[test]
fn a_profile_without_consent_for_the_purpose_cannot_be_rendered() {
    let compiled = compiler(CheckOptions::default())
        .compile(&template("weekly"))
        .expect("compiles");
    let consent = Consent::new();
    let input = person(
        &json!({"identifiers": {"email": "no-consent@example.com"}, "traits": {"firstName": "Noé"}}),
    );
    let denied = consent
        .gatekeeper
        .permit(
            &input.profile.identifiers,
            compiled.purpose(),
            None,
            input.clone(),
        )
        .expect_err("no consent is recorded");
    assert_eq!(denied.reason, DenyReason::NoConsent);

    // Consent for another purpose does not help: a permit for it is refused by the template.
    consent.grant(&input.profile, "analytics");
    let other = consent
        .gatekeeper
        .permit(&input.profile.identifiers, "analytics", None, input.clone())
        .expect("analytics is granted");
    match compiled.render(other) {
        Err(RenderError::PurposeMismatch { permitted, .. }) => assert_eq!(permitted, "analytics"),
        other => panic!("expected a purpose mismatch, got {other:?}"),
    }

    // Once granted, it renders; after a withdrawal it is refused again.
    consent.grant(&input.profile, "email_marketing");
    let permitted = consent
        .gatekeeper
        .permit(
            &input.profile.identifiers,
            "email_marketing",
            None,
            input.clone(),
        )
        .expect("granted");
    assert!(
        compiled
            .render(permitted)
            .expect("renders")
            .html
            .contains("Hi Noé,")
    );
}

#[test]
fn a_purpose_with_fields_exposes_only_those_fields() {
    // order_emails allows firstName, email and Order Completed: the plan is not in the context.
    let compiler = compiler(CheckOptions::default());
    let mut source = template("receipt");
    source.body = trib_render::Body::Html("{{ profile.traits.plan | default: 'none' }}".into());
    let error = compiler.compile(&source).expect_err("plan is not allowed");
    let RenderError::Check { diagnostics, .. } = error else {
        panic!("expected a check error");
    };
    assert_eq!(
        diagnostics[0].kind,
        trib_render::DiagnosticKind::FieldNotAllowed
    );
}
