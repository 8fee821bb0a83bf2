//! Tests of `normalize_value`: JSON types, absent values, options.

use serde_json::{Value, json};

use crate::{Options, Rule, codes, normalize_value};

#[track_caller]
fn check(rule: Rule, input: Value, options: &Options, expect: Result<Value, &str>) {
    match (normalize_value(rule, &input, options), expect) {
        (Ok(actual), Ok(expect)) => assert_eq!(actual, expect, "{rule:?}({input})"),
        (Err(error), Err(code)) => assert_eq!(error.code, code, "{rule:?}({input}): {error:?}"),
        (actual, expect) => panic!("{rule:?}({input}) = {actual:?}, expected {expect:?}"),
    }
}

fn options() -> Options {
    Options {
        default_region: Some("US".to_owned()),
        timestamp_format: None,
        currency: Some("EUR".to_owned()),
    }
}

#[test]
fn every_rule_through_json() {
    let options = options();
    check(
        Rule::Email,
        json!(" Ann@Example.COM "),
        &options,
        Ok(json!("ann@example.com")),
    );
    check(
        Rule::Phone,
        json!("(415) 555-2671"),
        &options,
        Ok(json!("+14155552671")),
    );
    check(
        Rule::Phone,
        json!(4155552671_u64),
        &options,
        Ok(json!("+14155552671")),
    );
    check(
        Rule::Phone,
        json!(4155552671.0),
        &options,
        Ok(json!("+14155552671")),
    );
    check(Rule::Country, json!("France"), &options, Ok(json!("FR")));
    check(Rule::Currency, json!("eur"), &options, Ok(json!("EUR")));
    check(Rule::Amount, json!("1.234,50"), &options, Ok(json!(1234.5)));
    check(Rule::Amount, json!(12), &options, Ok(json!(12.0)));
    check(
        Rule::Timestamp,
        json!("2024-01-31 12:00:00"),
        &options,
        Ok(json!("2024-01-31T12:00:00Z")),
    );
    check(
        Rule::Timestamp,
        json!(1706702400),
        &options,
        Ok(json!("2024-01-31T12:00:00Z")),
    );
    check(
        Rule::Timestamp,
        json!(1706702400123_i64),
        &options,
        Ok(json!("2024-01-31T12:00:00.123Z")),
    );
    check(
        Rule::Timestamp,
        json!(1706702400.5),
        &options,
        Ok(json!("2024-01-31T12:00:00.5Z")),
    );
    check(
        Rule::Date,
        json!("1990-05-17T10:00:00Z"),
        &options,
        Ok(json!("1990-05-17")),
    );
    check(
        Rule::Date,
        json!(1706702400),
        &options,
        Ok(json!("2024-01-31")),
    );
    check(
        Rule::Name,
        json!("  Zoë   Ångström "),
        &options,
        Ok(json!("Zoë Ångström")),
    );
    check(Rule::Trim, json!("  x  "), &options, Ok(json!("x")));
    check(Rule::Lowercase, json!(" VIP "), &options, Ok(json!("vip")));
}

#[test]
fn absent_values_stay_absent() {
    let options = options();
    for rule in ALL_RULES {
        check(rule, Value::Null, &options, Ok(Value::Null));
        check(rule, json!(""), &options, Ok(Value::Null));
        check(rule, json!(" \t "), &options, Ok(Value::Null));
    }
    check(Rule::Name, json!("\u{200B}"), &options, Ok(Value::Null));
}

#[test]
fn wrong_types() {
    let options = options();
    for rule in ALL_RULES {
        check(rule, json!(true), &options, Err(codes::WRONG_TYPE));
        check(rule, json!(["a"]), &options, Err(codes::WRONG_TYPE));
        check(
            rule,
            json!({"number": "+14155552671"}),
            &options,
            Err(codes::WRONG_TYPE),
        );
    }
    for rule in [
        Rule::Email,
        Rule::Country,
        Rule::Currency,
        Rule::Name,
        Rule::Trim,
        Rule::Lowercase,
    ] {
        check(rule, json!(12), &options, Err(codes::WRONG_TYPE));
    }
    check(
        Rule::Phone,
        json!(-4155552671_i64),
        &options,
        Err(codes::WRONG_TYPE),
    );
    check(Rule::Phone, json!(415.5), &options, Err(codes::WRONG_TYPE));
    let error = normalize_value(Rule::Phone, &json!({"n": 1}), &options).unwrap_err();
    assert_eq!(
        error.reason,
        "the phone rule expects a string or a non-negative integer, not an object"
    );
}

#[test]
fn options_are_used_and_checked() {
    let none = Options::default();
    check(
        Rule::Phone,
        json!("(415) 555-2671"),
        &none,
        Err(codes::INVALID_PHONE),
    );
    check(
        Rule::Phone,
        json!("+1 415 555 2671"),
        &none,
        Ok(json!("+14155552671")),
    );
    check(
        Rule::Amount,
        json!("12"),
        &none,
        Err(codes::INVALID_OPTIONS),
    );
    let yen = Options {
        currency: Some("¥".to_owned()),
        ..Options::default()
    };
    check(
        Rule::Amount,
        json!("12"),
        &yen,
        Err(codes::UNKNOWN_CURRENCY),
    );
    let formatted = Options {
        timestamp_format: Some("%d/%m/%Y".to_owned()),
        ..Options::default()
    };
    check(
        Rule::Timestamp,
        json!("31/01/2024"),
        &formatted,
        Ok(json!("2024-01-31T00:00:00Z")),
    );
    check(
        Rule::Date,
        json!("31/01/2024"),
        &formatted,
        Ok(json!("2024-01-31")),
    );

    assert_eq!(options().check(), Ok(()));
    assert_eq!(none.check(), Ok(()));
    for bad in [
        Options {
            default_region: Some("Atlantis".to_owned()),
            ..Options::default()
        },
        Options {
            currency: Some("XXX".to_owned()),
            ..Options::default()
        },
        Options {
            timestamp_format: Some("%Y-%m-%d %!".to_owned()),
            ..Options::default()
        },
        Options {
            timestamp_format: Some(" ".to_owned()),
            ..Options::default()
        },
    ] {
        assert_eq!(
            bad.check().map_err(|error| error.code),
            Err(codes::INVALID_OPTIONS),
            "{bad:?}"
        );
    }
}

#[test]
fn rules_and_options_deserialize() {
    let rules: Vec<Rule> =
        serde_json::from_value(json!(["email", "phone", "amount", "date", "lowercase"])).unwrap();
    assert_eq!(
        rules,
        [
            Rule::Email,
            Rule::Phone,
            Rule::Amount,
            Rule::Date,
            Rule::Lowercase
        ]
    );
    let on_error: crate::OnError = serde_json::from_value(json!("drop")).unwrap();
    assert_eq!(on_error, crate::OnError::Drop);
    let options: Options = serde_json::from_value(json!({"default_region": "FR"})).unwrap();
    assert_eq!(options.default_region.as_deref(), Some("FR"));
    assert!(serde_json::from_value::<Options>(json!({"region": "FR"})).is_err());
}

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
