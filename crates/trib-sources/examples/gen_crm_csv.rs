//! Writes a deterministic CRM export as CSV, for the import benchmark and manual testing.
//!
//! ```text
//! cargo run --release -p trib-sources --example gen_crm_csv -- ROWS OUT.csv
//! ```
//!
//! Columns: `id, email, first_name, last_name, phone, country, plan, created_at,
//! lifetime_value, address, marketing_opt_in`. The values are realistic and carry the quirks of
//! real exports: quoted names with commas, an address with an embedded line break, Unicode
//! names, phone numbers in several national formats, country names and codes mixed, and a few
//! invalid emails (about 1 in 500 rows). The same arguments always produce the same bytes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;

const FIRST_NAMES: &[&str] = &[
    "Ada", "Grace", "Alan", "Linus", "Margaret", "José", "Zoë", "Łukasz", "Søren", "Chloé",
    "Müller", "Aiko", "Mohammed", "Priya", "Olumide", "Siobhán", "Björn", "Nguyễn", "Ana", "Li",
    "John", "Mary", "Peter", "Sofia", "Lucas",
];
const LAST_NAMES: &[&str] = &[
    "Lovelace",
    "Hopper",
    "Turing",
    "Torvalds",
    "Hamilton",
    "García",
    "Dubois",
    "Kowalski",
    "Kierkegaard",
    "Øyvindsen",
    "Schäfer",
    "田中",
    "Al-Farsi",
    "Sharma",
    "Adeyemi",
    "O'Brien",
    "Smith, Jr.",
    "Nguyen",
    "Costa",
    "Wang",
    "Doe",
    "\"Big\" Brown",
    "Rossi",
    "Petrov",
    "Silva",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "Example.org",
    "mail.example.net",
    "exämple.de",
    "corp.example.co.uk",
];
const COUNTRIES: &[&str] = &[
    "US",
    "France",
    "DEU",
    "United Kingdom",
    "es",
    "Italy",
    "JP",
    "Brazil",
    "IN",
    "Nigeria",
];
const PLANS: &[&str] = &["free", "starter", "pro", "enterprise"];
const STREETS: &[&str] = &[
    "Main Street",
    "Rue de Rivoli",
    "Hauptstraße",
    "High Street",
    "Calle Mayor",
    "Via Roma",
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(rows), Some(out)) = (
        args.get(1).and_then(|rows| rows.parse::<u64>().ok()),
        args.get(2),
    ) else {
        eprintln!("usage: gen_crm_csv ROWS OUT.csv");
        return ExitCode::FAILURE;
    };
    match generate(rows, out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("gen_crm_csv: {out}: {error}");
            ExitCode::FAILURE
        }
    }
}

fn generate(rows: u64, out: &str) -> std::io::Result<()> {
    let mut writer = BufWriter::with_capacity(1 << 20, File::create(out)?);
    writer.write_all(
        b"id,email,first_name,last_name,phone,country,plan,created_at,lifetime_value,address,marketing_opt_in\n",
    )?;
    let mut random = SplitMix(0x5EED_CAFE);
    let mut line = String::with_capacity(256);
    for row in 1..=rows {
        line.clear();
        let first = pick(&mut random, FIRST_NAMES);
        let last = pick(&mut random, LAST_NAMES);
        let domain = pick(&mut random, DOMAINS);
        let email = if row.is_multiple_of(500) {
            format!("{}@@{domain}", ascii_lower(first))
        } else if row.is_multiple_of(777) {
            "n/a".to_owned()
        } else {
            let local = ascii_lower(first);
            let case = if row.is_multiple_of(13) { "  " } else { "" };
            format!("{case}{local}.{row}@{domain}{case}")
        };
        let phone = match random.next() % 4 {
            0 => format!(
                "+1 415 {:03} {:04}",
                random.next() % 1000,
                random.next() % 10_000
            ),
            1 => format!("(212) 555-{:04}", random.next() % 10_000),
            2 => format!(
                "+33 6 {:02} {:02} {:02} {:02}",
                random.next() % 100,
                random.next() % 100,
                random.next() % 100,
                random.next() % 100
            ),
            _ => format!("+44 20 7946 {:04}", random.next() % 10_000),
        };
        let country = pick(&mut random, COUNTRIES);
        let plan = pick(&mut random, PLANS);
        let created_at = format!(
            "20{:02}-{:02}-{:02} {:02}:{:02}:{:02}",
            15 + random.next() % 10,
            1 + random.next() % 12,
            1 + random.next() % 28,
            random.next() % 24,
            random.next() % 60,
            random.next() % 60
        );
        let value = format!("{}.{:02}", random.next() % 20_000, random.next() % 100);
        let street = pick(&mut random, STREETS);
        let address = if row.is_multiple_of(100) {
            format!(
                "{} {street}\nApt {}",
                1 + random.next() % 200,
                1 + random.next() % 50
            )
        } else {
            format!("{} {street}", 1 + random.next() % 200)
        };
        let opt_in = if random.next().is_multiple_of(2) {
            "true"
        } else {
            "false"
        };
        let fields = [
            format!("C{row:08}"),
            email,
            first.to_owned(),
            last.to_owned(),
            phone,
            country.to_owned(),
            plan.to_owned(),
            created_at,
            value,
            address,
            opt_in.to_owned(),
        ];
        for (index, field) in fields.iter().enumerate() {
            if index > 0 {
                line.push(',');
            }
            push_field(&mut line, field);
        }
        line.push('\n');
        writer.write_all(line.as_bytes())?;
    }
    writer.flush()
}

/// Quotes a field when RFC 4180 requires it.
fn push_field(line: &mut String, field: &str) {
    if field.contains([',', '"', '\n', '\r']) {
        line.push('"');
        line.push_str(&field.replace('"', "\"\""));
        line.push('"');
    } else {
        line.push_str(field);
    }
}

fn ascii_lower(name: &str) -> String {
    let lower: String = name
        .chars()
        .filter(char::is_ascii_alphabetic)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if lower.is_empty() {
        "user".to_owned()
    } else {
        lower
    }
}

fn pick<'a>(random: &mut SplitMix, items: &[&'a str]) -> &'a str {
    items[(random.next() % items.len() as u64) as usize]
}

/// SplitMix64: tiny, fast and deterministic.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
