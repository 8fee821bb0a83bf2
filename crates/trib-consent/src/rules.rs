//! The `[privacy]` rules: declared purposes with their legal basis, how Segment consent
//! categories map to purposes, and which event records consent.
//!
//! `trib-config` parses and validates `tributary.toml` into these types; this module only says
//! what they mean.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// The purposes declared when `[privacy]` is absent, each needing consent.
pub const DEFAULT_PURPOSES: [&str; 3] = ["email_marketing", "personalization", "analytics"];

/// The proof fields kept from a consent record (`form_id`, `text_version`, `url`); anything
/// else (an IP address, free text) is dropped before storage.
pub const PROOF_FIELDS: [&str; 3] = ["form_id", "text_version", "url"];

/// The validated `[privacy]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivacyRules {
    /// `[[privacy.purposes]]`: every purpose data may be used for. Never empty, names unique.
    pub purposes: Vec<Purpose>,
    /// `[privacy.segment_categories]`: Segment consent category name → purpose name. A category
    /// not listed maps to the purpose of the same name, if one is declared.
    pub segment_categories: BTreeMap<String, String>,
    /// `[privacy.consent_event]`: the event that records one purpose's consent.
    pub consent_event: ConsentEventRule,
}

/// One `[[privacy.purposes]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purpose {
    /// `name`: 1 to 64 of `a-z`, `0-9` and `_` (`email_marketing`).
    pub name: String,
    /// `legal_basis`: why data may be used for this purpose (GDPR art. 6(1)).
    pub legal_basis: LegalBasis,
    /// `basis_note`: where the basis is documented; required unless the basis is `consent`.
    pub basis_note: Option<String>,
}

/// A lawful basis for processing (GDPR art. 6(1) a–f).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegalBasis {
    /// The person agreed; without a recorded grant the purpose is denied.
    Consent,
    /// Needed for a contract with the person.
    Contract,
    /// Required by law.
    LegalObligation,
    /// Protects someone's life.
    VitalInterests,
    /// A task in the public interest.
    PublicTask,
    /// A documented legitimate interest.
    LegitimateInterest,
}

/// `[privacy.consent_event]`: the track event that records consent for one purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentEventRule {
    /// `name`: the track event's name. Default `"Consent Updated"`.
    pub name: String,
    /// `purpose`: dotted path of the purpose name. Default `properties.purpose`.
    pub purpose_path: String,
    /// `status`: dotted path of the status (`granted`, `denied`, `withdrawn`, or a boolean).
    /// Default `properties.status`.
    pub status_path: String,
    /// `proof`: dotted path of an object with the proof fields ([`PROOF_FIELDS`]).
    /// Default `properties.proof`.
    pub proof_path: String,
}

impl Default for PrivacyRules {
    fn default() -> Self {
        Self {
            purposes: DEFAULT_PURPOSES
                .iter()
                .map(|name| Purpose {
                    name: (*name).to_owned(),
                    legal_basis: LegalBasis::Consent,
                    basis_note: None,
                })
                .collect(),
            segment_categories: BTreeMap::new(),
            consent_event: ConsentEventRule::default(),
        }
    }
}

impl Default for ConsentEventRule {
    fn default() -> Self {
        Self {
            name: "Consent Updated".to_owned(),
            purpose_path: "properties.purpose".to_owned(),
            status_path: "properties.status".to_owned(),
            proof_path: "properties.proof".to_owned(),
        }
    }
}

impl PrivacyRules {
    /// The declared purpose called `name`.
    pub fn purpose(&self, name: &str) -> Option<&Purpose> {
        self.purposes.iter().find(|purpose| purpose.name == name)
    }

    /// The purpose a Segment consent category stands for, if any.
    pub fn purpose_of_category(&self, category: &str) -> Option<&Purpose> {
        match self.segment_categories.get(category) {
            Some(purpose) => self.purpose(purpose),
            None => self.purpose(category),
        }
    }
}

impl LegalBasis {
    /// Every basis, in the order of GDPR art. 6(1).
    pub const ALL: [LegalBasis; 6] = [
        LegalBasis::Consent,
        LegalBasis::Contract,
        LegalBasis::LegalObligation,
        LegalBasis::VitalInterests,
        LegalBasis::PublicTask,
        LegalBasis::LegitimateInterest,
    ];

    /// The name used in the config file, the ledger and the API (`legitimate_interest`).
    pub fn as_str(self) -> &'static str {
        match self {
            LegalBasis::Consent => "consent",
            LegalBasis::Contract => "contract",
            LegalBasis::LegalObligation => "legal_obligation",
            LegalBasis::VitalInterests => "vital_interests",
            LegalBasis::PublicTask => "public_task",
            LegalBasis::LegitimateInterest => "legitimate_interest",
        }
    }
}

impl fmt::Display for LegalBasis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A legal basis name that is not one of [`LegalBasis::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown legal basis {0:?}; use one of {known}", known = LegalBasis::ALL.map(LegalBasis::as_str).join(", "))]
pub struct UnknownLegalBasis(pub String);

impl FromStr for LegalBasis {
    type Err = UnknownLegalBasis;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        LegalBasis::ALL
            .into_iter()
            .find(|basis| basis.as_str() == name)
            .ok_or_else(|| UnknownLegalBasis(name.to_owned()))
    }
}

/// What is wrong with a purpose name, if anything.
pub fn purpose_name_problem(name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_');
    (!valid).then(|| format!("must be 1 to 64 of a-z, 0-9 and _, got {name:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_map_explicitly_or_by_name() {
        let mut rules = PrivacyRules::default();
        rules
            .segment_categories
            .insert("Advertising".into(), "email_marketing".into());
        assert_eq!(
            rules.purpose_of_category("Advertising").map(|p| &*p.name),
            Some("email_marketing")
        );
        assert_eq!(
            rules.purpose_of_category("analytics").map(|p| &*p.name),
            Some("analytics")
        );
        assert!(rules.purpose_of_category("Functional").is_none());
    }

    #[test]
    fn legal_bases_round_trip() {
        for basis in LegalBasis::ALL {
            assert_eq!(basis.as_str().parse::<LegalBasis>(), Ok(basis));
        }
        let error = "because".parse::<LegalBasis>().unwrap_err();
        assert!(error.to_string().contains("legitimate_interest"), "{error}");
        assert!(purpose_name_problem("email_marketing").is_none());
        assert!(purpose_name_problem("Email").is_some());
        assert!(purpose_name_problem("").is_some());
    }
}
