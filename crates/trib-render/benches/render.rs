//! Personalized renders per second of the weekly MJML newsletter (`config/examples/templates/
//! weekly.*`: subject, header, a loop over the last order's 3 products, conditionals), on one
//! thread, after compilation. Also times the one-off compilation (mrml + Liquid parse).
//!
//! `cargo bench -p trib-render --bench render` (release profile). Permits are obtained
//! before the timed loop (their cost, a consent ledger read, is printed separately).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use trib_consent::ledger::Proof;
use trib_consent::{Gatekeeper, Ledger, LegalBasis, NewEntry, PrivacyRules, Status};
use trib_identity::Keyer;
use trib_identity::profile::Profile;
use trib_render::{CheckOptions, Compiler, Limits, PurposeFields, RenderInput, Vocabulary};

const PEOPLE: usize = 20_000;
const RUNS: usize = 5;

fn main() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/examples");
    let registry = trib_schema::Registry::load(examples.join("schemas")).expect("schemas");
    let vocabulary = Vocabulary::from_registry(&registry, ["email".to_owned()]);
    let compiler = Compiler::new(
        vocabulary,
        PurposeFields::defaults_for(["email_marketing"]),
        CheckOptions::default(),
        Limits::default(),
    );
    let source = trib_render::source::load_file(&examples.join("templates/weekly.toml"))
        .expect("weekly template");
    let mut compile_ms = Vec::new();
    let mut compiled = None;
    for _ in 0..20 {
        let started = Instant::now();
        compiled = Some(compiler.compile(&source).expect("compiles"));
        compile_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let compiled = compiled.expect("compiled");
    println!(
        "compile (check + mrml + liquid parse), median of 20: {:.2} ms",
        median(&mut compile_ms)
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Arc::new(Ledger::open_in(dir.path()).expect("ledger"));
    let keyer = Keyer::new(&[1; 32]);
    let gatekeeper = Gatekeeper::new(
        ledger.clone(),
        keyer.clone(),
        Arc::new(PrivacyRules::default()),
    );
    let people: Vec<RenderInput> = (0..PEOPLE).map(person).collect();
    let entries: Vec<NewEntry> = people
        .iter()
        .map(|input| NewEntry {
            ident_key: keyer.ident_key("email", &input.profile.identifiers[0].value),
            purpose: "email_marketing".into(),
            status: Status::Granted,
            at_ms: 1,
            source: "api:bench".into(),
            legal_basis: LegalBasis::Consent,
            proof: Proof::default(),
        })
        .collect();
    ledger.record(&entries).expect("consent");

    let mut rates = Vec::new();
    let mut cpu_rates = Vec::new();
    let mut bytes = 0;
    for run in 0..RUNS {
        let started = Instant::now();
        let permits: Vec<_> = people
            .iter()
            .map(|input| {
                gatekeeper
                    .permit(
                        &input.profile.identifiers,
                        "email_marketing",
                        None,
                        input.clone(),
                    )
                    .expect("permitted")
            })
            .collect();
        let permit_seconds = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let cpu_started = thread_cpu_seconds();
        for permit in permits {
            let email = compiled.render(permit).expect("renders");
            bytes += email.html.len();
        }
        let seconds = started.elapsed().as_secs_f64();
        let cpu_seconds = thread_cpu_seconds() - cpu_started;
        let rate = PEOPLE as f64 / seconds;
        let cpu_rate = PEOPLE as f64 / cpu_seconds;
        println!(
            "run {run}: {PEOPLE} emails in {seconds:.3} s wall = {rate:.0} emails/s; {cpu_seconds:.3} s on CPU = {cpu_rate:.0} emails per CPU-second ({:.1} µs each); permits: {:.1} µs each",
            cpu_seconds * 1e6 / PEOPLE as f64,
            permit_seconds * 1e6 / PEOPLE as f64
        );
        rates.push(rate);
        cpu_rates.push(cpu_rate);
    }
    println!(
        "median of {RUNS} runs: {:.0} emails/s wall, {:.0} emails per CPU-second, one thread ({} KiB of HTML per email)",
        median(&mut rates),
        median(&mut cpu_rates),
        bytes / (RUNS * PEOPLE) / 1024
    );
}

fn person(index: usize) -> RenderInput {
    let plan = ["free", "plus", "pro"][index % 3];
    let mut traits = serde_json::Map::new();
    if !index.is_multiple_of(5) {
        traits.insert(
            "firstName".into(),
            trait_value(json!(format!("Person{index}"))),
        );
    }
    traits.insert("plan".into(), trait_value(json!(plan)));
    if index.is_multiple_of(2) {
        traits.insert(
            "address".into(),
            trait_value(json!({"city": "Lyon", "country": "FR"})),
        );
    }
    let profile: Profile = serde_json::from_value(json!({
        "id": format!("p_{index:032x}"),
        "identifiers": [{"type": "email", "value": format!("person{index}@example.com"), "first_seen_ms": 1, "source": "bench", "message_id": "m"}],
        "traits": traits,
        "observations": {},
        "sources": ["bench"],
    }))
    .expect("profile");
    let products: Vec<Value> = (0..3)
        .map(|n| json!({"product_id": format!("p{n}"), "name": format!("Product {n} for {index}"), "price": 10.5 + n as f64, "quantity": 1 + n}))
        .collect();
    let events = vec![json!({
        "type": "track", "event": "Order Completed", "timestamp": "2026-03-01T10:00:00Z",
        "properties": {"order_id": format!("A-{index}"), "total": 40.5, "currency": "EUR", "products": products},
    })];
    RenderInput { profile, events }
}

fn trait_value(value: Value) -> Value {
    json!({"value": value, "rule": "latest", "sources": ["bench"], "at_ms": 1})
}

/// The time this thread spent on a CPU (Linux `/proc/thread-self/schedstat`), so that a
/// shared, loaded machine still gives a per-core figure; wall time where it is unavailable.
fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<f64>().ok())
        .map_or_else(
            || {
                static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
                START.get_or_init(Instant::now).elapsed().as_secs_f64()
            },
            |nanos| nanos / 1e9,
        )
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
