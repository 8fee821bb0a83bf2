//! Comparators, table-driven, through the public `Matcher::compare`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use trib_match::{
    MatchConfig, MatchRecord, Matcher, jaro_winkler, normalized_levenshtein, soundex,
};

/// One field per comparator under test, with fixed m/u so that no fit is needed.
const CONFIG: &str = r#"
id_column = "id"
upper_threshold = 10.0
lower_threshold = 2.0
blocking = [["name:soundex"]]

[[fields]]
name = "name"
comparator = "jaro_winkler"
levels = [0.94, 0.88]
nicknames = true
m = [0.7, 0.1, 0.1, 0.05, 0.05]
u = [0.01, 0.01, 0.02, 0.01, 0.95]

[[fields]]
name = "dob"
comparator = "date"
m = [0.8, 0.05, 0.05, 0.05, 0.05]
u = [0.001, 0.001, 0.01, 0.1, 0.888]

[[fields]]
name = "street"
comparator = "levenshtein"
levels = [0.8]
m = [0.7, 0.2, 0.1]
u = [0.01, 0.02, 0.97]

[[fields]]
name = "code"
comparator = "exact"
normalize = "alnum"
m = [0.9, 0.1]
u = [0.01, 0.99]

[[fields]]
name = "amount"
comparator = "numeric"
levels = [1.0, 10.0]
m = [0.5, 0.3, 0.1, 0.1]
u = [0.01, 0.04, 0.1, 0.85]

[[fields]]
name = "income"
comparator = "numeric"
levels = [0.05]
relative = true
m = [0.5, 0.4, 0.1]
u = [0.01, 0.09, 0.9]
"#;

const FIELDS: usize = 6;

fn matcher() -> Matcher {
    Matcher::new(MatchConfig::from_toml_str(CONFIG).unwrap()).unwrap()
}

fn rec(id: &str, field: usize, value: Option<&str>) -> MatchRecord {
    let mut fields = vec![None; FIELDS];
    fields[field] = value.map(str::to_owned);
    MatchRecord {
        id: id.to_owned(),
        fields,
    }
}

/// `(field, a, b, expected level label or None for missing)`.
type Case = (
    usize,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);

const CASES: &[Case] = &[
    // names: exact after normalization, similarity levels, nicknames, disagreement
    (0, Some("William"), Some(" william "), Some("exact")),
    (0, Some("Jonathon"), Some("Jonathan"), Some("jw>=0.94")),
    (0, Some("Martha"), Some("Marhta"), Some("jw>=0.94")),
    (0, Some("Dwayne"), Some("Duane"), Some("else")),
    (0, Some("Kathrin"), Some("Katerina"), Some("jw>=0.88")),
    (0, Some("Bill"), Some("William"), Some("nickname")),
    (0, Some("Liz"), Some("Elizabeth"), Some("nickname")),
    (0, Some("bob"), Some("rob"), Some("nickname")),
    (0, Some("Bob"), Some("Robert"), Some("nickname")),
    (0, Some("Peggy"), Some("Margaret"), Some("nickname")),
    (0, Some("Bill"), Some("Robert"), Some("else")),
    (0, Some("Anna"), Some("Zoe"), Some("else")),
    // missing on either side: no level
    (0, None, Some("William"), None),
    (0, Some("  "), Some("William"), None),
    // dates
    (1, Some("1980-03-07"), Some("1980-03-07"), Some("exact")),
    (1, Some("1980-03-07"), Some("19800307"), Some("exact")),
    (
        1,
        Some("1980-03-07"),
        Some("1980-07-03"),
        Some("transposed_day_month"),
    ),
    (1, Some("1980-03-07"), Some("1980-03-17"), Some("one_digit")),
    (1, Some("1980-03-07"), Some("1981-03-07"), Some("one_digit")),
    (1, Some("1980-03-07"), Some("1980-11-21"), Some("same_year")),
    (1, Some("1980-03-07"), Some("1975-11-21"), Some("else")),
    (1, Some("not a date"), Some("1980-03-07"), None),
    // normalized Levenshtein
    (
        2,
        Some("12 Oak Street"),
        Some("12 Oak Street"),
        Some("exact"),
    ),
    (
        2,
        Some("12 Oak Street"),
        Some("12 Oak Stret"),
        Some("lev>=0.8"),
    ),
    (2, Some("12 Oak Street"), Some("12 Oak St"), Some("else")),
    // exact, alnum normalization
    (3, Some("SW1A 1AA"), Some("sw1a1aa"), Some("exact")),
    (3, Some("SW1A 1AA"), Some("SW1A 1AB"), Some("else")),
    // numeric, absolute tolerances
    (4, Some("100"), Some("100.0"), Some("exact")),
    (4, Some("100"), Some("100.5"), Some("within_1")),
    (4, Some("100"), Some("108"), Some("within_10")),
    (4, Some("100"), Some("120"), Some("else")),
    (4, Some("abc"), Some("120"), None),
    // numeric, relative tolerance
    (5, Some("50000"), Some("52000"), Some("within_0.05")),
    (5, Some("50000"), Some("60000"), Some("else")),
];

#[test]
fn comparator_levels() {
    let m = matcher();
    let params = m.parameters().unwrap().clone();
    for &(field, a, b, expected) in CASES {
        let pair = m.compare(&rec("a", field, a), &rec("b", field, b)).unwrap();
        let got = pair
            .levels
            .get(field)
            .map(|l| params.fields[field].labels[usize::from(l)].as_str());
        assert_eq!(got, expected, "field {field}: {a:?} vs {b:?}");
        // Only the field under test has values, so the weight is that level's weight alone,
        // and missing values weigh exactly 0.
        let expected_weight = pair
            .levels
            .get(field)
            .map_or(0.0, |l| params.fields[field].weight(l));
        assert!(
            (pair.weight - expected_weight).abs() < 1e-12,
            "{a:?} vs {b:?}"
        );
        for other in (0..FIELDS).filter(|&f| f != field) {
            assert_eq!(pair.levels.get(other), None);
        }
    }
}

#[test]
fn weights_add_up_over_fields() {
    let m = matcher();
    let a = MatchRecord {
        id: "a".into(),
        fields: vec![
            Some("Bill".into()),
            Some("1980-03-07".into()),
            None,
            Some("X1".into()),
            None,
            None,
        ],
    };
    let b = MatchRecord {
        id: "b".into(),
        fields: vec![
            Some("William".into()),
            Some("1980-07-03".into()),
            Some("1 Elm St".into()),
            Some("X2".into()),
            None,
            None,
        ],
    };
    let pair = m.compare(&a, &b).unwrap();
    let expected = (0.05f64 / 0.01).log2() + (0.05f64 / 0.001).log2() + (0.1f64 / 0.99).log2();
    assert!(
        (pair.weight - expected).abs() < 1e-9,
        "{} vs {expected}",
        pair.weight
    );
}

#[test]
fn similarity_functions_agree_with_strsim() {
    let words = [
        "",
        "a",
        "martha",
        "marhta",
        "dwayne",
        "duane",
        "dixon",
        "dicksonx",
        "jellyfish",
        "smellyfish",
        "william",
        "williams",
        "o'connor",
        "oconnor",
        "ab",
        "ba",
        "abcdefghij",
        "jihgfedcba",
        "123 oak street",
        "123 oak st",
        "zoë",
        "zoe",
        "müller",
        "mueller",
    ];
    for a in words {
        for b in words {
            let jw = jaro_winkler(a, b);
            assert!(
                (jw - strsim::jaro_winkler(a, b)).abs() < 1e-12,
                "jw {a:?} {b:?}"
            );
            let lev = normalized_levenshtein(a, b);
            assert!(
                (lev - strsim::normalized_levenshtein(a, b)).abs() < 1e-12,
                "lev {a:?} {b:?}"
            );
        }
    }
    assert_eq!(soundex("Smyth").as_deref(), Some("S530"));
    assert_eq!(
        soundex("Smith"),
        soundex("smithe").map(|s| s.to_uppercase())
    );
}
