//! Property tests over the public API: no rule panics on any input, and every rule is
//! idempotent (normalizing a normalized value changes nothing).

use proptest::prelude::*;
use serde_json::{Value, json};
use trib_normalize::{Options, Rule, normalize_value};

const ALL_RULES: [Rule; 10] = [
    Rule::Email,
    Rule::Phone,
    Rule::Country,
    Rule::Currency,
    Rule::Amount,
    Rule::Timestamp,
    Rule::Date,
    Rule::Name,
    Rule::Trim,
    Rule::Lowercase,
];

const REGIONS: [&str; 8] = ["US", "GB", "FR", "DE", "JP", "BR", "IN", "AU"];
const CURRENCIES: [&str; 6] = ["EUR", "USD", "JPY", "KWD", "CLF", "GBP"];
const FORMATS: [Option<&str>; 3] = [None, Some("%d/%m/%Y %H:%M"), Some("%m/%d/%Y")];

fn options() -> impl Strategy<Value = Options> {
    (0..REGIONS.len(), 0..CURRENCIES.len(), 0..FORMATS.len()).prop_map(
        |(region, currency, format)| Options {
            default_region: Some(REGIONS[region].to_owned()),
            timestamp_format: FORMATS[format].map(str::to_owned),
            currency: Some(CURRENCIES[currency].to_owned()),
        },
    )
}

fn rule() -> impl Strategy<Value = Rule> {
    (0..ALL_RULES.len()).prop_map(|index| ALL_RULES[index])
}

/// 256 cases per property, unless `PROPTEST_CASES` asks for more (for a longer local run).
fn config() -> ProptestConfig {
    if std::env::var_os("PROPTEST_CASES").is_some() {
        ProptestConfig::default()
    } else {
        ProptestConfig::with_cases(256)
    }
}

/// Normalizes once; if that succeeds, checks the result normalizes to itself.
#[track_caller]
fn assert_idempotent(rule: Rule, input: &Value, options: &Options) {
    if let Ok(once) = normalize_value(rule, input, options) {
        let twice = normalize_value(rule, &once, options);
        assert_eq!(
            twice.as_ref(),
            Ok(&once),
            "{rule:?}: {input} → {once} → {twice:?} with {options:?}"
        );
    }
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN and infinities become null
        any::<String>().prop_map(Value::String),
        "\\PC{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,3}", inner, 0..3)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn plausible_email() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ ]{0,2}[A-Za-z0-9._%+'-]{1,20}@[A-Za-z0-9-]{1,15}(\\.[A-Za-z]{2,6}){1,2}[ ]{0,2}",
        "[a-zà-ÿA-ZÀ-Þ]{1,10}@[a-zà-ÿ]{1,10}\\.(de|com|fr)",
        "[用户名]{1,4}@[例子测试]{1,4}\\.(广告|中国|com)",
        "[a-z]{1,10}@xn--[a-z0-9]{2,10}\\.[a-z]{2,3}",
    ]
}

fn plausible_phone() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\+[1-9][0-9 ().-]{6,16}",
        "[0(][0-9 ().-]{6,14}",
        "[2-9][0-9]{2}[ .-]?[2-9][0-9]{2}[ .-]?[0-9]{4}",
        "\\+(1|33|44|49|81|91) ?[1-9][0-9]{7,10}",
        "(00|011)[1-9][0-9]{8,12}",
    ]
}

fn plausible_country() -> impl Strategy<Value = String> {
    let names = prop::sample::select(vec![
        "fr",
        "FRA",
        "France",
        " united states ",
        "USA",
        "U.S.A.",
        "uk",
        "United Kingdom",
        "Czechia",
        "Czech Republic",
        "Deutschland",
        "Côte d'Ivoire",
        "Bosnia & Herzegovina",
        "Türkiye",
        "Samoa",
        "Atlantis",
        "Korea",
        "South Korea",
        "japan",
        "jpn",
        "BRASIL",
        "méxico",
        "Viet Nam",
    ]);
    (names, any::<bool>(), "[ \t]{0,2}").prop_map(|(name, upper, padding)| {
        let cased = if upper {
            name.to_uppercase()
        } else {
            name.to_lowercase()
        };
        format!("{padding}{cased}{padding}")
    })
}

fn plausible_amount() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[-+]?[0-9]{1,3}([,. '][0-9]{3}){0,3}([.,][0-9]{1,5})?".prop_map(Value::String),
        "[-]?[0-9]{0,12}[.,]?[0-9]{0,6}".prop_map(Value::String),
        (-1e13..1e13_f64).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
    ]
}

fn plausible_timestamp() -> impl Strategy<Value = Value> {
    // Seconds between the years 1 and 9998, offsets within ±18 hours.
    let seconds = -62_135_596_800_i64..253_370_764_800;
    let offset = -64_800_i32..=64_800;
    prop_oneof![
        (seconds.clone(), offset, 0..1_000_000_000_i32).prop_map(|(seconds, offset, nanos)| {
            let instant =
                jiff::Timestamp::new(seconds, nanos).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            let offset = jiff::tz::Offset::from_seconds(offset - offset % 60)
                .unwrap_or(jiff::tz::Offset::UTC);
            Value::String(instant.display_with_offset(offset).to_string())
        }),
        seconds
            .clone()
            .prop_map(|seconds| Value::String(seconds.to_string())),
        seconds.prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}([ T][0-9]{2}:[0-9]{2}(:[0-9]{2})?)?(Z|[+-][0-9]{2}:[0-9]{2})?"
            .prop_map(Value::String),
        "[0-9]{2}/[0-9]{2}/[0-9]{4}( [0-9]{2}:[0-9]{2})?".prop_map(Value::String),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn no_rule_panics_and_every_rule_is_idempotent_on_any_json(
        rule in rule(), input in any_json(), options in options()
    ) {
        assert_idempotent(rule, &input, &options);
    }

    #[test]
    fn every_rule_is_idempotent_on_arbitrary_strings(input in "\\PC{0,30}", options in options()) {
        for rule in ALL_RULES {
            assert_idempotent(rule, &json!(input), &options);
        }
    }

    #[test]
    fn emails(input in plausible_email(), options in options()) {
        assert_idempotent(Rule::Email, &json!(input), &options);
        if let Ok(email) = trib_normalize::email(&input) {
            prop_assert!(email.len() <= 254);
            prop_assert_eq!(email.to_lowercase(), email.clone());
            prop_assert!(email.is_ascii() || !input.is_ascii());
            prop_assert!(!email.contains(char::is_whitespace));
        }
    }

    #[test]
    fn phones(input in plausible_phone(), options in options()) {
        assert_idempotent(Rule::Phone, &json!(input), &options);
        if let Ok(Value::String(e164)) = normalize_value(Rule::Phone, &json!(input), &options) {
            prop_assert!(e164.starts_with('+'));
            prop_assert!(e164[1..].bytes().all(|byte| byte.is_ascii_digit()));
            prop_assert!(e164.len() <= 16);
        }
    }

    /// Everything that passes the character check reaches libphonenumber, whose parser has
    /// panicked on odd input before (rust-phonenumber#43).
    #[test]
    fn phones_from_separator_soup(input in "[0-9+() ./\u{a0}-]{0,30}", options in options()) {
        assert_idempotent(Rule::Phone, &json!(input), &options);
    }

    #[test]
    fn countries(input in plausible_country(), options in options()) {
        assert_idempotent(Rule::Country, &json!(input), &options);
    }

    #[test]
    fn currencies(input in "[ ]?[A-Za-z]{3}[ ]?|€|£|\\$|US\\$|¥|euros?|yen", options in options()) {
        assert_idempotent(Rule::Currency, &json!(input), &options);
    }

    #[test]
    fn amounts(input in plausible_amount(), options in options()) {
        assert_idempotent(Rule::Amount, &input, &options);
        // A JSON number is rounded to the nearest minor unit.
        if let (Some(original), Ok(Value::Number(rounded))) =
            (input.as_f64(), normalize_value(Rule::Amount, &input, &options))
        {
            let minor_units = match options.currency.as_deref() {
                Some("JPY") => 0,
                Some("KWD") => 3,
                Some("CLF") => 4,
                _ => 2,
            };
            let unit = 10_f64.powi(-minor_units);
            let rounded = rounded.as_f64().unwrap_or(f64::NAN);
            prop_assert!((rounded - original).abs() <= unit / 2.0 * (1.0 + 1e-9) + original.abs() * 1e-15,
                "{original} → {rounded}");
        }
    }

    #[test]
    fn timestamps_and_dates(input in plausible_timestamp(), options in options()) {
        assert_idempotent(Rule::Timestamp, &input, &options);
        assert_idempotent(Rule::Date, &input, &options);
    }

    #[test]
    fn names(input in any::<String>()) {
        let once = trib_normalize::name(&input);
        prop_assert_eq!(trib_normalize::name(&once), once.clone());
        prop_assert_eq!(once.trim(), once.as_str());
        prop_assert!(!once.contains("  "));
        prop_assert!(!once.contains(char::is_control));
    }
}
