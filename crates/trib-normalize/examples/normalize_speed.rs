//! Rough cost of each rule, in nanoseconds per call through `normalize_value`.
//!
//! Run with `cargo run --release -p trib-normalize --example normalize_speed`. Not a benchmark
//! suite: one thread, a few realistic inputs per rule cycled many times, wall-clock time.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trib_normalize::{Options, Rule, normalize_value};

/// How long each measurement runs.
const BUDGET: Duration = Duration::from_millis(300);

fn main() {
    let options = Options {
        default_region: Some("US".to_owned()),
        timestamp_format: None,
        currency: Some("EUR".to_owned()),
    };
    let cases: Vec<(&str, Rule, Vec<Value>)> = vec![
        (
            "email (ascii)",
            Rule::Email,
            strings(&[
                "ann.lee@example.com",
                " Bob.Smith+news@Example.CO.UK ",
                "x_y-z@mail.example.org",
            ]),
        ),
        (
            "email (idn)",
            Rule::Email,
            strings(&["user@bücher.de", "用户@例子.广告"]),
        ),
        (
            "phone (e164)",
            Rule::Phone,
            strings(&["+14155552671", "+442079460958", "+33612345678"]),
        ),
        (
            "phone (national)",
            Rule::Phone,
            strings(&["(415) 555-2671", "212-555-0187", "650.253.0000"]),
        ),
        (
            "phone (intl, spaced)",
            Rule::Phone,
            strings(&["+44 20 7946 0958", "+33 6 12 34 56 78", "+49 30 123456"]),
        ),
        (
            "country (code)",
            Rule::Country,
            strings(&["US", "fr", "DEU"]),
        ),
        (
            "country (name)",
            Rule::Country,
            strings(&["United States", "France", "Côte d'Ivoire"]),
        ),
        ("currency", Rule::Currency, strings(&["EUR", "usd", "€"])),
        (
            "amount (string)",
            Rule::Amount,
            strings(&["1,234.50", "12.5", "1.234,56"]),
        ),
        (
            "amount (number)",
            Rule::Amount,
            vec![json!(12.5), json!(1234), json!(0.125)],
        ),
        (
            "timestamp (rfc3339)",
            Rule::Timestamp,
            strings(&["2024-01-31T12:00:00Z", "2024-01-31T12:00:00+02:00"]),
        ),
        (
            "timestamp (civil)",
            Rule::Timestamp,
            strings(&["2024-01-31 12:00:00", "2024-01-31"]),
        ),
        (
            "timestamp (epoch)",
            Rule::Timestamp,
            vec![json!(1_706_702_400), json!(1_706_702_400_123_i64)],
        ),
        (
            "date",
            Rule::Date,
            strings(&["1990-05-17", "1990-05-17T00:00:00+02:00"]),
        ),
        (
            "name (ascii)",
            Rule::Name,
            strings(&["Ada Lovelace", "Grace Hopper", "Alan  Turing "]),
        ),
        (
            "name (unicode)",
            Rule::Name,
            strings(&["  Zoë   Ångström ", "José Martínez", "山田 太郎"]),
        ),
        ("trim", Rule::Trim, strings(&["  gold ", "silver"])),
        (
            "lowercase",
            Rule::Lowercase,
            strings(&[" VIP ", "Newsletter"]),
        ),
    ];
    println!("{:<24} {:>10}", "rule", "ns/call");
    for (label, rule, inputs) in &cases {
        for input in inputs {
            if let Err(error) = normalize_value(*rule, input, &options) {
                println!("{label}: {input} fails: {error}");
            }
        }
        let nanos = measure(|| {
            for input in inputs {
                let _ = black_box(normalize_value(*rule, black_box(input), &options));
            }
        }) / inputs.len() as f64;
        println!("{label:<24} {nanos:>10.0}");
    }

    // A typical imported row: email, first and last name, country, signup time, lifetime value,
    // and optionally a phone.
    let row = [
        (Rule::Email, json!(" Ann.Lee@Example.com")),
        (Rule::Name, json!("Ann")),
        (Rule::Name, json!("Lee ")),
        (Rule::Country, json!("United States")),
        (Rule::Timestamp, json!("2024-01-31 12:00:00")),
        (Rule::Amount, json!("1,234.50")),
    ];
    let phone = (Rule::Phone, json!("(415) 555-2671"));
    for (label, with_phone) in [
        ("row of 6 fields", false),
        ("row of 6 fields + phone", true),
    ] {
        let nanos = measure(|| {
            for (rule, value) in row.iter().chain(with_phone.then_some(&phone)) {
                let _ = black_box(normalize_value(*rule, black_box(value), &options));
            }
        });
        println!(
            "{label:<24} {nanos:>10.0} ns/row = {:.0} rows/s per core",
            1e9 / nanos
        );
    }
}

fn strings(values: &[&str]) -> Vec<Value> {
    values.iter().map(|value| json!(value)).collect()
}

/// Nanoseconds per call of `work`, after a warm-up.
fn measure(mut work: impl FnMut()) -> f64 {
    for _ in 0..100 {
        work();
    }
    let start = Instant::now();
    let mut n_calls: u64 = 0;
    while start.elapsed() < BUDGET {
        for _ in 0..100 {
            work();
        }
        n_calls += 100;
    }
    start.elapsed().as_nanos() as f64 / n_calls as f64
}
