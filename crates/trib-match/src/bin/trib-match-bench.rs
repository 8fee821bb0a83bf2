//! Benchmark: generate N labelled records, deduplicate them, evaluate against the truth.
//!
//! ```text
//! trib-match-bench [--records N] [--seed S] [--config matching.toml] [--keep DIR]
//! ```
//!
//! Prints the time of each phase, the total, peak RSS (VmHWM), pair counts and pairwise
//! precision / recall / F1. Build with `--release`.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use trib_match::{GenerateOptions, MatchConfig, dedupe, evaluate, generate};

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn run() -> Result<(), String> {
    let mut records = 1_000_000usize;
    let mut seed = 1u64;
    let mut config_path: Option<PathBuf> = None;
    let mut keep: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--records" => {
                records = value()?
                    .replace('_', "")
                    .parse()
                    .map_err(|e| format!("--records: {e}"))?
            }
            "--seed" => seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--config" => config_path = Some(value()?.into()),
            "--keep" => keep = Some(value()?.into()),
            "-h" | "--help" => {
                println!(
                    "trib-match-bench [--records N] [--seed S] [--config matching.toml] [--keep DIR]"
                );
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let config = match &config_path {
        Some(p) => MatchConfig::from_toml_str(
            &std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
        )
        .map_err(|e| e.to_string())?,
        None => MatchConfig::example(),
    };
    let dir = match &keep {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
            d.clone()
        }
        None => std::env::temp_dir().join(format!("trib-match-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let data = dir.join("records.csv");
    let clusters = dir.join("clusters.csv");

    let t = Instant::now();
    let gen_stats = generate(
        records,
        seed,
        BufWriter::new(File::create(&data).map_err(|e| e.to_string())?),
        &GenerateOptions::default(),
    )
    .map_err(|e| e.to_string())?;
    let gen_time = t.elapsed();
    println!(
        "generate: {} records, {} entities ({} duplicated), {} true pairs in {:.2?}",
        gen_stats.records,
        gen_stats.entities,
        gen_stats.duplicated_entities,
        gen_stats.true_pairs,
        gen_time
    );

    let t = Instant::now();
    let report = dedupe(
        BufReader::new(File::open(&data).map_err(|e| e.to_string())?),
        BufWriter::new(File::create(&clusters).map_err(|e| e.to_string())?),
        &config,
    )
    .map_err(|e| e.to_string())?;
    let dedupe_time = t.elapsed();
    let tm = &report.timings;
    println!(
        "dedupe phases: read {:.2?}, blocking {:.2?}, compare {:.2?}, fit {:.2?}, cluster {:.2?}, write {:.2?}",
        tm.read, tm.blocking, tm.compare, tm.fit, tm.cluster, tm.write
    );
    println!("dedupe total: {:.2?}", dedupe_time);
    println!(
        "pairs: {} in blocks, {} compared, {} oversized blocks skipped; {} merges ({} refused by cap), {} review pairs, {} clusters; EM {} iterations (converged: {})",
        report.candidate_pairs,
        report.pairs_compared,
        report.blocking.oversized_blocks,
        report.merges,
        report.refused_merges,
        report.review_pairs,
        report.clusters,
        report.em_iterations,
        report.em_converged
    );
    for f in &report.parameters.fields {
        let levels: Vec<String> = f
            .labels
            .iter()
            .zip(f.m.iter().zip(&f.u))
            .map(|(l, (m, u))| format!("{l} m={m:.4} u={u:.6} w={:+.2}", (m / u).log2()))
            .collect();
        println!("  {:<11} {}", f.name, levels.join(" | "));
    }
    if let Some(p) = report.parameters.match_proportion {
        println!("  match proportion among compared pairs: {p:.4}");
    }

    let t = Instant::now();
    let scores = evaluate(
        BufReader::new(File::open(&data).map_err(|e| e.to_string())?),
        BufReader::new(File::open(&clusters).map_err(|e| e.to_string())?),
    )
    .map_err(|e| e.to_string())?;
    println!(
        "evaluate ({:.2?}): precision {:.4}, recall {:.4}, F1 {:.4} (tp {}, fp {}, fn {})",
        t.elapsed(),
        scores.precision,
        scores.recall,
        scores.f1,
        scores.true_pos,
        scores.false_pos,
        scores.false_neg
    );
    match peak_rss_kib() {
        Some(kib) => println!("peak RSS: {:.1} MiB", kib as f64 / 1024.0),
        None => println!("peak RSS: unavailable"),
    }
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trib-match-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
