#![allow(dead_code)]

use trib_match::{GenerateOptions, MatchConfig, MatchRecord, generate};

/// Generated CSV text.
pub(crate) fn generated_csv(n: usize, seed: u64) -> String {
    let mut buf = Vec::new();
    generate(n, seed, &mut buf, &GenerateOptions::default()).unwrap();
    String::from_utf8(buf).unwrap()
}

/// Generated records as (MatchRecord in the example config's field order, entity id).
pub(crate) fn generated_records(
    n: usize,
    seed: u64,
    config: &MatchConfig,
) -> Vec<(MatchRecord, String)> {
    let text = generated_csv(n, seed);
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let id = col("record_id");
    let entity = col("entity_id");
    let fields: Vec<usize> = config.fields.iter().map(|f| col(&f.name)).collect();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            let rec = MatchRecord {
                id: r[id].to_owned(),
                fields: fields
                    .iter()
                    .map(|&c| Some(r[c].to_owned()).filter(|v| !v.is_empty()))
                    .collect(),
            };
            (rec, r[entity].to_owned())
        })
        .collect()
}
