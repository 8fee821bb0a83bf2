//! Blocking, EM, thresholds, clustering and the CSV entry points.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};

use trib_match::{
    Decision, EXAMPLE_CONFIG_TOML, MatchConfig, MatchError, MatchRecord, Matcher, dedupe,
    dedupe_with_review, evaluate,
};

#[test]
fn example_config_loads_and_validates() {
    let config = MatchConfig::example();
    assert_eq!(config.id_column, "record_id");
    assert_eq!(config.fields.len(), 8);
    assert!(config.validate().is_ok());
    // It is the content of [identity.matching]: nested under that table it parses the same.
    let nested = format!(
        "[identity.matching]\n{}",
        EXAMPLE_CONFIG_TOML
            .replace("[em]", "[identity.matching.em]")
            .replace("[[fields]]", "[[identity.matching.fields]]")
    );
    #[derive(serde::Deserialize)]
    struct Root {
        identity: Identity,
    }
    #[derive(serde::Deserialize)]
    struct Identity {
        matching: MatchConfig,
    }
    let root: Root = toml::from_str(&nested).unwrap();
    assert_eq!(root.identity.matching, config);
}

#[test]
fn validation_names_key_paths() {
    let text = r#"
        id_column = "id"
        upper_threshold = 1.0
        lower_threshold = 5.0
        blocking = [["name:soundex"], ["nope"], ["name:sideways"], []]
        [[fields]]
        name = "name"
        comparator = "jaro_winkler"
        levels = [0.8, 0.9]
        m = [0.5, 0.5]
        u = [0.5, 0.5]
        [[fields]]
        name = "dob"
        comparator = "date"
        levels = [0.5]
        [[fields]]
        name = "x"
        comparator = "foo"
        [[fields]]
        name = "name"
        comparator = "exact"
        relative = true
        normalize = "upper"
    "#;
    let config: MatchConfig = toml::from_str(text).unwrap();
    let errs = config.validate().unwrap_err();
    let expected = [
        "lower_threshold: 5 is above upper_threshold 1",
        "fields[0].levels: similarity thresholds must be strictly decreasing",
        "fields[0].m: expected 4 probabilities (levels exact, jw>=0.8, jw>=0.9, else), found 2",
        "fields[1].levels: the date comparator has fixed levels; remove this key",
        "fields[2].comparator: unknown comparator \"foo\" (expected exact, jaro_winkler, levenshtein, date or numeric)",
        "fields[3].relative: only numeric fields can be relative",
        "fields[3].normalize: unknown normalization \"upper\" (expected text, alnum or digits)",
        "fields[3].name: field \"name\" is defined twice",
        "blocking[1][0]: unknown field \"nope\"",
        "blocking[3]: a rule needs at least one key part",
    ];
    for e in expected {
        assert!(errs.iter().any(|x| x == e), "missing {e:?} in {errs:#?}");
    }
    assert!(
        errs.iter()
            .any(|x| x.starts_with("blocking[2][0]: unknown transform \"sideways\"")),
        "{errs:#?}"
    );
    // Unknown keys are rejected by serde, with the key named.
    let err = MatchConfig::from_toml_str(&format!("{EXAMPLE_CONFIG_TOML}\nupper_treshold = 3.0\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("upper_treshold"), "{err}");
}

fn fixed_config() -> MatchConfig {
    MatchConfig::from_toml_str(
        r#"
        id_column = "id"
        upper_threshold = 10.0
        lower_threshold = 3.0
        max_cluster_size = 3
        blocking = [["last:soundex"], ["dob"]]
        [[fields]]
        name = "first"
        comparator = "jaro_winkler"
        levels = [0.9]
        nicknames = true
        m = [0.85, 0.07, 0.05, 0.03]
        u = [0.01, 0.01, 0.001, 0.979]
        [[fields]]
        name = "last"
        comparator = "jaro_winkler"
        levels = [0.9]
        m = [0.9, 0.07, 0.03]
        u = [0.01, 0.01, 0.98]
        [[fields]]
        name = "dob"
        comparator = "date"
        m = [0.9, 0.03, 0.03, 0.02, 0.02]
        u = [0.0001, 0.0001, 0.001, 0.02, 0.9788]
        "#,
    )
    .unwrap()
}

fn person(id: &str, first: &str, last: &str, dob: &str) -> MatchRecord {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    MatchRecord {
        id: id.into(),
        fields: vec![opt(first), opt(last), opt(dob)],
    }
}

#[test]
fn blocking_finds_pairs_sharing_a_key() {
    let m = Matcher::new(fixed_config()).unwrap();
    let records = [
        person("a", "Ann", "Smith", "1980-01-01"),
        person("b", "Ann", "Smyth", "1990-01-01"), // soundex S530 with a
        person("c", "Bob", "Jones", "1980-01-01"), // same dob as a
        person("d", "Cy", "Brown", "2000-05-05"),  // shares nothing
        person("e", "Ann", "", "1970-01-01"),      // last missing: no soundex key
    ];
    let pairs = m.candidate_pairs(&records).unwrap();
    assert_eq!(pairs, vec![(0, 1), (0, 2)]);
}

#[test]
fn oversized_blocks_are_skipped() {
    let mut config = fixed_config();
    config.max_block_size = 2;
    let m = Matcher::new(config).unwrap();
    let records = [
        person("a", "A", "Smith", "1980-01-01"),
        person("b", "B", "Smith", "1981-01-01"),
        person("c", "C", "Smith", "1982-01-01"),
        person("d", "D", "Jones", "1982-01-01"),
    ];
    // The three Smiths exceed the cap; c and d still share a dob.
    assert_eq!(m.candidate_pairs(&records).unwrap(), vec![(2, 3)]);
}

#[test]
fn thresholds_route_pairs_to_merge_and_review() {
    let m = Matcher::new(fixed_config()).unwrap();
    assert_eq!(m.decide(10.0), Decision::Merge);
    assert_eq!(m.decide(9.99), Decision::Review);
    assert_eq!(m.decide(3.0), Decision::Review);
    assert_eq!(m.decide(2.99), Decision::Distinct);
    let records = [
        person("r1", "William", "Smith", "1980-03-07"),
        person("r2", "Bill", "Smith", "1980-07-03"), // nickname + transposed date: merge
        person("r3", "Willam", "Smith", ""),         // typo + exact last only: review
        person("r4", "Zed", "Smith", "1955-01-01"),  // disagrees: distinct
    ];
    let scored = m.score_pairs(&records).unwrap();
    let weight = |a: usize, b: usize| {
        scored
            .iter()
            .find(|p| p.left == a && p.right == b)
            .map(|p| p.weight)
            .unwrap()
    };
    assert_eq!(m.decide(weight(0, 1)), Decision::Merge);
    assert_eq!(m.decide(weight(0, 2)), Decision::Review);
    assert_eq!(m.decide(weight(0, 3)), Decision::Distinct);

    let res = m.resolve(&records).unwrap();
    assert_eq!(res.cluster_ids, ["r1", "r1", "r3", "r4"]);
    assert_eq!(res.clusters, 3);
    assert_eq!(res.merged_pairs, 1);
    let review: Vec<(&str, &str)> = res
        .review
        .iter()
        .map(|r| (r.left_id.as_str(), r.right_id.as_str()))
        .collect();
    assert!(review.contains(&("r1", "r3")), "{review:?}");
    assert!(
        res.review
            .iter()
            .all(|r| r.weight >= 3.0 && r.weight < 10.0)
    );
    // The review pair carries its levels: first name jw>=0.9, last exact, dob missing.
    let r13 = res.review.iter().find(|r| r.right_id == "r3").unwrap();
    assert_eq!(
        r13.levels.iter().collect::<Vec<_>>(),
        vec![Some(1), Some(0), None]
    );
}

#[test]
fn cluster_cap_refuses_the_weakest_link() {
    let m = Matcher::new(fixed_config()).unwrap(); // max_cluster_size = 3
    let records = [
        person("a", "Ann", "Smith", "1980-01-01"),
        person("b", "Ann", "Smith", "1980-01-01"),
        person("c", "Ann", "Smith", "1980-01-01"),
        person("d", "Anne", "Smith", "1980-01-01"),
    ];
    let res = m.resolve(&records).unwrap();
    // Exact triples merge first; d (weaker first-name level) would make 4 > cap.
    assert_eq!(res.cluster_ids, ["a", "a", "a", "d"]);
    assert_eq!(res.merged_pairs, 3);
    assert_eq!(res.refused_merges, 3);
    assert!(
        res.review
            .iter()
            .all(|r| r.refused_merge && r.right_id == "d")
    );
}

#[test]
fn unfitted_matcher_refuses_to_score() {
    let mut config = fixed_config();
    config.fields[1].m = None;
    config.fields[1].u = None;
    let m = Matcher::new(config).unwrap();
    let err = m.score_pairs(&[person("a", "A", "B", "")]).unwrap_err();
    assert!(
        matches!(err, MatchError::NotFitted(ref f) if f == "last"),
        "{err}"
    );
}

#[test]
fn in_memory_records_are_checked() {
    let m = Matcher::new(fixed_config()).unwrap();
    let err = m
        .resolve(&[person("a", "A", "B", ""), person("a", "C", "D", "")])
        .unwrap_err()
        .to_string();
    assert_eq!(err, "duplicate record id \"a\" (records 0 and 1)");
    let short = MatchRecord {
        id: "x".into(),
        fields: vec![None],
    };
    let err = m.resolve(&[short]).unwrap_err().to_string();
    assert_eq!(
        err,
        "record x: has 1 field values, the configuration has 3 fields"
    );
}

/// EM (with u from random pairs) recovers m and u close to the values measured with the
/// ground truth.
#[test]
fn em_recovers_m_and_u_on_generated_data() {
    let config = MatchConfig::example();
    let data = common::generated_records(10_000, 11, &config);
    let records: Vec<MatchRecord> = data.iter().map(|(r, _)| r.clone()).collect();
    let entity: Vec<&str> = data.iter().map(|(_, e)| e.as_str()).collect();
    let mut m = Matcher::new(config.clone()).unwrap();
    let fit = m.fit(&records).unwrap();
    assert!(fit.converged, "{fit:?}");
    assert!(fit.unestimated_fields.is_empty());
    let params = m.parameters().unwrap().clone();

    // True m: level frequencies among the true matches of the candidate pairs.
    let scored = m.score_pairs(&records).unwrap();
    let fields = config.fields.len();
    let mut match_counts = vec![vec![0u64; 15]; fields];
    let mut matches = 0;
    for p in &scored {
        if entity[p.left] == entity[p.right] {
            matches += 1;
            for (f, level) in p.levels.iter().enumerate() {
                if let Some(l) = level {
                    match_counts[f][usize::from(l)] += 1;
                }
            }
        }
    }
    assert!(matches > 4_000, "{matches}");
    // True u: level frequencies among non-matching pairs of distinct records, measured on
    // consecutive records (the generator shuffles, so these are random pairs).
    let mut nonmatch_counts = vec![vec![0u64; 15]; fields];
    for w in records.windows(2).take(5_000) {
        let p = m.compare(&w[0], &w[1]).unwrap();
        if w[0].fields == w[1].fields {
            continue;
        }
        for (f, level) in p.levels.iter().enumerate() {
            if let Some(l) = level {
                nonmatch_counts[f][usize::from(l)] += 1;
            }
        }
    }
    for (f, fp) in params.fields.iter().enumerate() {
        let total_m: u64 = match_counts[f].iter().sum();
        let total_u: u64 = nonmatch_counts[f].iter().sum();
        for l in 0..fp.m.len() {
            let true_m = match_counts[f][l] as f64 / total_m as f64;
            let true_u = nonmatch_counts[f][l] as f64 / total_u as f64;
            assert!(
                (fp.m[l] - true_m).abs() < 0.04,
                "{} {}: m estimated {:.4}, true {true_m:.4}",
                fp.name,
                fp.labels[l],
                fp.m[l]
            );
            assert!(
                (fp.u[l] - true_u).abs() < 0.02,
                "{} {}: u estimated {:.4}, true {true_u:.4}",
                fp.name,
                fp.labels[l],
                fp.u[l]
            );
        }
        // Agreement is evidence for a match, disagreement against.
        assert!(fp.weight(0) > 3.0, "{}", fp.name);
        assert!(fp.weight((fp.m.len() - 1) as u8) < -1.0, "{}", fp.name);
    }
}

#[test]
fn dedupe_end_to_end_reaches_f1() {
    let data = common::generated_csv(5_000, 5);
    let mut out = Vec::new();
    let report = dedupe(data.as_bytes(), &mut out, &MatchConfig::example()).unwrap();
    assert_eq!(report.records, 5_000);
    assert!(report.pairs_compared > 0 && report.pairs_compared <= report.candidate_pairs);
    assert!(report.merges > 1_000, "{report:?}");
    assert!(report.em_iterations > 0 && report.em_converged);
    let scores = evaluate(data.as_bytes(), out.as_slice()).unwrap();
    assert!(scores.f1 >= 0.95, "{scores:?}");
    assert!(
        scores.precision >= 0.95 && scores.recall >= 0.95,
        "{scores:?}"
    );

    // Every record once, in input order; cluster id = smallest record id of the cluster.
    let text = String::from_utf8(out).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("record_id,cluster_id"));
    let rows: Vec<(&str, &str)> = lines.map(|l| l.split_once(',').unwrap()).collect();
    let input_ids: Vec<&str> = data
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), input_ids);
    let mut min_of: HashMap<&str, &str> = HashMap::new();
    for &(id, c) in &rows {
        let e = min_of.entry(c).or_insert(id);
        if id < *e {
            *e = id;
        }
    }
    assert!(min_of.iter().all(|(c, min)| c == min));
    assert_eq!(min_of.len() as u64, report.clusters);
}

#[test]
fn same_input_gives_same_output() {
    let a = common::generated_csv(3_000, 9);
    let b = common::generated_csv(3_000, 9);
    assert_eq!(a, b, "generator is deterministic");
    assert_ne!(a, common::generated_csv(3_000, 10), "seed matters");
    let run = |data: &str| {
        let mut out = Vec::new();
        let mut review = Vec::new();
        let report = dedupe_with_review(
            data.as_bytes(),
            &mut out,
            Some(&mut review),
            &MatchConfig::example(),
        )
        .unwrap();
        (out, review, report.parameters)
    };
    let first = run(&a);
    let second = run(&a);
    assert_eq!(first.0, second.0);
    assert_eq!(first.1, second.1);
    assert_eq!(first.2, second.2);
    // Review file: header with the field names, and level labels in cells.
    let review = String::from_utf8(first.1).unwrap();
    assert!(review.starts_with(
        "left_id,right_id,weight,first_name,last_name,dob,address,city,postcode,email,phone\n"
    ));
}

fn dedupe_err(csv: &str) -> String {
    let config = MatchConfig::from_toml_str(
        r#"
        id_column = "id"
        upper_threshold = 5.0
        lower_threshold = 1.0
        blocking = [["name"]]
        [[fields]]
        name = "name"
        comparator = "exact"
        m = [0.9, 0.1]
        u = [0.1, 0.9]
        [[fields]]
        name = "dob"
        comparator = "date"
        m = [0.8, 0.05, 0.05, 0.05, 0.05]
        u = [0.01, 0.01, 0.01, 0.1, 0.87]
        "#,
    )
    .unwrap();
    dedupe(csv.as_bytes(), Vec::new(), &config)
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_csv_input_gives_clear_errors() {
    assert_eq!(
        dedupe_err("record,name,dob\n1,a,1980-01-01\n"),
        "CSV header has no column \"id\" (required by id_column)"
    );
    assert_eq!(
        dedupe_err("id,name\n1,a\n"),
        "CSV header has no column \"dob\" (required by fields[1].name)"
    );
    assert_eq!(
        dedupe_err("id,name,dob\n1,a,1980-01-01\n2,b,1980-01-02\n1,c,1980-01-03\n"),
        "line 4: duplicate record id \"1\" (first seen on line 2)"
    );
    assert_eq!(
        dedupe_err("id,name,dob\n1,a,1980-01-01\n2,b\n"),
        "line 3 (record \"2\"): expected 3 fields as in the header, found 2"
    );
    assert_eq!(
        dedupe_err("id,name,dob\n1,a,1980-01-01\n2,b,1980-01-01,extra\n"),
        "line 3 (record \"2\"): expected 3 fields as in the header, found 4"
    );
    assert_eq!(
        dedupe_err("id,name,dob\n1,a,1980-01-01\n ,b,1980-01-01\n"),
        "line 3: empty record id in column \"id\""
    );
    assert_eq!(
        dedupe_err("id,name,name,dob\n"),
        "CSV header names column \"name\" more than once"
    );
    let err = dedupe_err("id,name,dob\n1,\"a,1980-01-01\n");
    assert!(err.contains("line"), "{err}");
    // Errors never echo field values.
    let err = dedupe_err("id,name,dob\n1,secretname\n");
    assert!(!err.contains("secretname"), "{err}");
}

#[test]
fn missing_and_unparsable_values_are_neutral() {
    let data = "id,name,dob\n1,ann,1980-01-01\n2,ann,\n3,ann,garbage\n";
    let config = MatchConfig::from_toml_str(
        r#"
        id_column = "id"
        upper_threshold = 3.0
        lower_threshold = 1.0
        blocking = [["name"]]
        [[fields]]
        name = "name"
        comparator = "exact"
        m = [0.9, 0.1]
        u = [0.1, 0.9]
        [[fields]]
        name = "dob"
        comparator = "date"
        m = [0.8, 0.05, 0.05, 0.05, 0.05]
        u = [0.01, 0.01, 0.01, 0.1, 0.87]
        "#,
    )
    .unwrap();
    let mut out = Vec::new();
    let report = dedupe(data.as_bytes(), &mut out, &config).unwrap();
    // Each pair weighs log2(0.9/0.1) = 3.17 from the name alone: all three merge.
    assert_eq!(report.merges, 3);
    let text = String::from_utf8(out).unwrap();
    let clusters: HashSet<&str> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(clusters, HashSet::from(["1"]));
}
