//! A generator of realistic, labelled person records with duplicates, for tests and
//! benchmarks.

use std::io::Write;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

use crate::MatchError;
use crate::nicknames::NICKNAMES;

const FIRST_NAMES: &str = include_str!("../data/first_names.txt");
const LAST_NAMES: &str = include_str!("../data/last_names.txt");

const STREETS: &[&str] = &[
    "Oak",
    "Maple",
    "Cedar",
    "Pine",
    "Elm",
    "Washington",
    "Lake",
    "Hill",
    "Park",
    "Main",
    "Church",
    "Spring",
    "Ridge",
    "Sunset",
    "Highland",
    "Forest",
    "River",
    "Meadow",
    "Willow",
    "Jackson",
    "Lincoln",
    "Franklin",
    "Madison",
    "Jefferson",
    "Adams",
    "Chestnut",
    "Walnut",
    "Birch",
    "Spruce",
    "Poplar",
    "Hickory",
    "Magnolia",
    "Dogwood",
    "Laurel",
    "Valley",
    "Mill",
    "Prospect",
    "Union",
    "Center",
    "Market",
    "Water",
    "Bridge",
    "School",
    "Railroad",
    "Liberty",
    "Pleasant",
    "Broad",
    "Cherry",
    "Orchard",
    "Grove",
    "Summit",
    "Harbor",
    "Bay",
    "Canyon",
    "Sycamore",
    "Aspen",
    "Juniper",
    "Heritage",
    "Colonial",
    "Fairview",
    "Greenwood",
    "Kingston",
    "Lakeview",
    "Riverside",
    "Woodland",
    "Hillcrest",
    "Windsor",
    "Cambridge",
    "Oxford",
    "Hamilton",
    "Monroe",
    "Garfield",
    "Grant",
    "Clinton",
    "Tyler",
    "Taylor",
    "Wilson",
    "Harrison",
    "Polk",
    "Pierce",
    "Buchanan",
    "Arthur",
    "Cleveland",
    "Hayes",
];

/// Street suffixes and their usual abbreviations.
const SUFFIXES: &[(&str, &str)] = &[
    ("Street", "St"),
    ("Avenue", "Ave"),
    ("Road", "Rd"),
    ("Lane", "Ln"),
    ("Drive", "Dr"),
    ("Court", "Ct"),
    ("Place", "Pl"),
    ("Boulevard", "Blvd"),
    ("Terrace", "Ter"),
    ("Parkway", "Pkwy"),
];

/// Cities and the first three digits of their postcodes.
const CITIES: &[(&str, u32)] = &[
    ("Springfield", 627),
    ("Riverside", 925),
    ("Franklin", 370),
    ("Greenville", 296),
    ("Bristol", 67),
    ("Clinton", 284),
    ("Fairview", 750),
    ("Salem", 973),
    ("Madison", 537),
    ("Georgetown", 786),
    ("Arlington", 222),
    ("Ashland", 975),
    ("Burlington", 54),
    ("Manchester", 31),
    ("Oxford", 386),
    ("Milton", 21),
    ("Newport", 28),
    ("Auburn", 368),
    ("Dayton", 454),
    ("Lexington", 405),
    ("Jackson", 392),
    ("Winchester", 226),
    ("Columbia", 292),
    ("Kingston", 124),
    ("Dover", 199),
    ("Hudson", 44),
    ("Centerville", 458),
    ("Chester", 190),
    ("Marion", 433),
    ("Mount Vernon", 105),
    ("Portland", 972),
    ("Austin", 787),
    ("Denver", 802),
    ("Boston", 21),
    ("Seattle", 981),
    ("Phoenix", 850),
    ("Atlanta", 303),
    ("Chicago", 606),
    ("Houston", 770),
    ("Dallas", 752),
    ("Miami", 331),
    ("Tampa", 336),
    ("Orlando", 328),
    ("Nashville", 372),
    ("Memphis", 381),
    ("Louisville", 402),
    ("Richmond", 232),
    ("Raleigh", 276),
    ("Charlotte", 282),
    ("Columbus", 432),
    ("Cleveland", 441),
    ("Detroit", 482),
    ("Milwaukee", 532),
    ("Minneapolis", 554),
    ("Omaha", 681),
    ("Kansas City", 641),
    ("Saint Louis", 631),
    ("Tulsa", 741),
    ("Albuquerque", 871),
    ("Tucson", 857),
    ("Sacramento", 958),
    ("San Diego", 921),
    ("Fresno", 937),
    ("Reno", 895),
    ("Boise", 837),
    ("Spokane", 992),
    ("Anchorage", 995),
    ("Honolulu", 968),
    ("Buffalo", 142),
    ("Rochester", 146),
    ("Albany", 122),
    ("Hartford", 61),
    ("Providence", 29),
    ("Pittsburgh", 152),
];

const DOMAINS: &[&str] = &[
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "hotmail.com",
    "icloud.com",
    "aol.com",
    "proton.me",
    "mail.com",
    "comcast.net",
    "att.net",
];

/// Options of [`generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Proportion of entities that have duplicate records.
    pub duplicate_rate: f64,
    /// A duplicated entity gets between 1 and this many extra records.
    pub max_duplicates: usize,
    /// Multiplier of every corruption probability of duplicates (0: exact copies).
    pub corruption: f64,
    /// Probability that an entity has no email (and, separately, no phone).
    pub missing_contact: f64,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            duplicate_rate: 0.4,
            max_duplicates: 4,
            corruption: 1.0,
            missing_contact: 0.1,
        }
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateStats {
    /// Records written.
    pub records: usize,
    /// Distinct entities.
    pub entities: usize,
    /// Entities with more than one record.
    pub duplicated_entities: usize,
    /// Pairs of records of one entity (the pairs a perfect matcher merges).
    pub true_pairs: u64,
}

/// Column names written by [`generate`], in order.
pub const GENERATED_COLUMNS: [&str; 10] = [
    "record_id",
    "entity_id",
    "first_name",
    "last_name",
    "dob",
    "address",
    "city",
    "postcode",
    "email",
    "phone",
];

struct Person {
    first: String,
    last: String,
    dob: (u16, u8, u8),
    number: u32,
    street: usize,
    suffix: usize,
    city: usize,
    postcode: String,
    email: Option<String>,
    phone: Option<String>,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64 finaliser
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Index into a list of `n` with a mild preference for the start (common names first).
fn skewed(rng: &mut StdRng, n: usize) -> usize {
    let r: f64 = rng.random();
    ((r.powf(1.6) * n as f64) as usize).min(n - 1)
}

fn capitalize(s: &str) -> String {
    s.split(' ')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

struct Lists {
    first: Vec<&'static str>,
    last: Vec<&'static str>,
}

impl Lists {
    fn new() -> Self {
        let words = |s: &'static str| s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        Lists {
            first: words(FIRST_NAMES),
            last: words(LAST_NAMES),
        }
    }
}

fn new_address(rng: &mut StdRng, p: &mut Person) {
    p.number = rng.random_range(1..3000);
    p.street = rng.random_range(0..STREETS.len());
    p.suffix = rng.random_range(0..SUFFIXES.len());
    p.city = rng.random_range(0..CITIES.len());
    p.postcode = format!("{:03}{:02}", CITIES[p.city].1, rng.random_range(0..100));
}

fn person(rng: &mut StdRng, unique: u64, lists: &Lists, opts: &GenerateOptions) -> Person {
    let first = lists.first[skewed(rng, lists.first.len())].to_owned();
    let last = lists.last[skewed(rng, lists.last.len())].to_owned();
    let year = rng.random_range(1940..2006);
    let month = rng.random_range(1..13);
    let day = rng.random_range(1..29);
    // Mailboxes belong to one person: the number comes from the entity, so that two people
    // of the same name do not share an address.
    let nn = unique % 100_000;
    let local = match rng.random_range(0..4) {
        0 => format!("{first}.{last}{nn}"),
        1 => format!("{}{last}{nn}", &first[..1]),
        2 => format!("{first}{}{nn}", &last[..1]),
        _ => format!("{first}_{last}{nn}"),
    };
    let email = (!rng.random_bool(opts.missing_contact))
        .then(|| format!("{local}@{}", DOMAINS[rng.random_range(0..DOMAINS.len())]));
    let phone = (!rng.random_bool(opts.missing_contact)).then(|| {
        format!(
            "({}) {}-{:04}",
            rng.random_range(201..990),
            rng.random_range(200..1000),
            rng.random_range(0..10000)
        )
    });
    let mut p = Person {
        first: capitalize(&first),
        last: capitalize(&last),
        dob: (year, month, day),
        number: 0,
        street: 0,
        suffix: 0,
        city: 0,
        postcode: String::new(),
        email,
        phone,
    };
    new_address(rng, &mut p);
    p
}

/// One random edit: insert, delete, substitute or transpose a character.
fn typo(rng: &mut StdRng, s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    if chars.len() < 2 {
        return s.to_owned();
    }
    let digits = chars.iter().all(char::is_ascii_digit);
    let random_char = |rng: &mut StdRng| {
        if digits {
            char::from(b'0' + rng.random_range(0..10u8))
        } else {
            char::from(b'a' + rng.random_range(0..26u8))
        }
    };
    let pos = rng.random_range(0..chars.len());
    match rng.random_range(0..4) {
        0 => {
            let c = random_char(rng);
            chars.insert(pos, c);
        }
        1 => {
            chars.remove(pos);
        }
        2 => chars[pos] = random_char(rng),
        _ => {
            let p = pos.min(chars.len() - 2);
            chars.swap(p, p + 1);
        }
    }
    chars.into_iter().collect()
}

fn nickname_of(rng: &mut StdRng, first: &str) -> Option<String> {
    let lower = first.to_lowercase();
    let options: Vec<&str> = NICKNAMES
        .iter()
        .flat_map(|&(nick, formal)| [(nick, formal), (formal, nick)])
        .filter(|&(from, _)| from == lower)
        .map(|(_, to)| to)
        .collect();
    if options.is_empty() {
        return None;
    }
    Some(capitalize(options[rng.random_range(0..options.len())]))
}

struct Row {
    first: Option<String>,
    last: Option<String>,
    dob: Option<String>,
    address: Option<String>,
    city: Option<String>,
    postcode: Option<String>,
    email: Option<String>,
    phone: Option<String>,
}

fn clean_row(p: &Person) -> Row {
    let (y, m, d) = p.dob;
    Row {
        first: Some(p.first.clone()),
        last: Some(p.last.clone()),
        dob: Some(format!("{y:04}-{m:02}-{d:02}")),
        address: Some(format!(
            "{} {} {}",
            p.number, STREETS[p.street], SUFFIXES[p.suffix].0
        )),
        city: Some(CITIES[p.city].0.to_owned()),
        postcode: Some(p.postcode.clone()),
        email: p.email.clone(),
        phone: p.phone.clone(),
    }
}

/// A duplicate of `p` with realistic corruption.
fn corrupted_row(rng: &mut StdRng, p: &Person, c: f64) -> Row {
    let mut hit = |p: f64| rng.random_bool((p * c).min(1.0));
    // Decide everything first, then apply (keeps the borrow checker happy with one rng).
    let moved = hit(0.05);
    let mut person = Person {
        first: p.first.clone(),
        last: p.last.clone(),
        dob: p.dob,
        number: p.number,
        street: p.street,
        suffix: p.suffix,
        city: p.city,
        postcode: p.postcode.clone(),
        email: p.email.clone(),
        phone: p.phone.clone(),
    };
    let flags = [
        hit(0.03), // 0 swap names
        hit(0.10), // 1 nickname
        hit(0.08), // 2 first typo
        hit(0.03), // 3 first missing
        hit(0.08), // 4 last typo
        hit(0.02), // 5 last missing
        hit(0.04), // 6 dob transposed
        hit(0.04), // 7 dob digit typo
        hit(0.04), // 8 dob missing
        hit(0.25), // 9 abbreviate street suffix
        hit(0.06), // 10 address typo
        hit(0.04), // 11 address missing
        hit(0.03), // 12 city typo
        hit(0.05), // 13 city missing
        hit(0.03), // 14 postcode typo
        hit(0.05), // 15 postcode missing
        hit(0.10), // 16 email domain changed
        hit(0.04), // 17 email typo
        hit(0.15), // 18 email missing
        hit(0.04), // 19 phone typo
        hit(0.15), // 20 phone missing
        hit(0.05), // 21 upper-case last name
    ];
    if moved {
        new_address(rng, &mut person);
    }
    let mut row = clean_row(&person);
    if flags[1]
        && let Some(nick) = nickname_of(rng, &person.first)
    {
        row.first = Some(nick);
    }
    if flags[2] {
        row.first = row.first.map(|f| typo(rng, &f));
    }
    if flags[4] {
        row.last = row.last.map(|l| typo(rng, &l));
    }
    if flags[21] {
        row.last = row.last.map(|l| l.to_uppercase());
    }
    if flags[0] {
        std::mem::swap(&mut row.first, &mut row.last);
    }
    if flags[3] {
        row.first = None;
    }
    if flags[5] {
        row.last = None;
    }
    let (y, m, d) = person.dob;
    if flags[6] && d <= 12 && d != m {
        row.dob = Some(format!("{y:04}-{d:02}-{m:02}"));
    }
    if flags[7] {
        row.dob = row.dob.map(|s| {
            // change one digit of YYYYMMDD, keeping the separators
            let mut b = s.into_bytes();
            let digit_positions = [2usize, 3, 5, 6, 8, 9];
            let at = digit_positions[rng.random_range(0..digit_positions.len())];
            let old = b[at];
            let mut new = b'0' + rng.random_range(0..10u8);
            if new == old {
                new = b'0' + (new - b'0' + 1) % 10;
            }
            b[at] = new;
            String::from_utf8(b).unwrap_or_default()
        });
    }
    if flags[8] {
        row.dob = None;
    }
    if flags[9] {
        row.address = Some(format!(
            "{} {} {}",
            person.number, STREETS[person.street], SUFFIXES[person.suffix].1
        ));
    }
    if flags[10] {
        row.address = row.address.map(|a| typo(rng, &a));
    }
    if flags[11] {
        row.address = None;
    }
    if flags[12] {
        row.city = row.city.map(|c| typo(rng, &c));
    }
    if flags[13] {
        row.city = None;
    }
    if flags[14] {
        row.postcode = row.postcode.map(|pc| typo(rng, &pc));
    }
    if flags[15] {
        row.postcode = None;
    }
    if flags[16] {
        row.email = row.email.map(|e| {
            let local = e.split('@').next().unwrap_or_default().to_owned();
            format!("{local}@{}", DOMAINS[rng.random_range(0..DOMAINS.len())])
        });
    }
    if flags[17] {
        row.email = row.email.map(|e| typo(rng, &e));
    }
    if flags[18] {
        row.email = None;
    }
    if flags[19] {
        row.phone = row.phone.map(|ph| {
            let digits: String = ph.chars().filter(char::is_ascii_digit).collect();
            typo(rng, &digits)
        });
    } else if rng.random_bool(0.3) {
        // Same number, other formatting.
        row.phone = row
            .phone
            .map(|ph| ph.chars().filter(char::is_ascii_digit).collect());
    }
    if flags[20] {
        row.phone = None;
    }
    row
}

/// Writes `n` labelled person records as CSV (columns [`GENERATED_COLUMNS`]): entities with
/// first and last name, date of birth, street address, city, postcode, email and phone; a
/// proportion of entities get 1 to `max_duplicates` extra records with typos, nicknames,
/// swapped names, missing values, transposed day and month, abbreviated street suffixes,
/// other email domains, moves. Column `entity_id` is the ground truth for [`evaluate`]
/// (crate::evaluate). Rows are shuffled; record ids are zero-padded so that their byte order
/// is their numeric order. The output is a pure function of `n`, `seed` and `opts`.
pub fn generate<W: Write>(
    n: usize,
    seed: u64,
    output: W,
    opts: &GenerateOptions,
) -> Result<GenerateStats, MatchError> {
    let lists = Lists::new();
    let mut rng = StdRng::seed_from_u64(seed);
    // Plan: how many records each entity gets.
    let mut sizes: Vec<u8> = Vec::new();
    let mut total = 0usize;
    while total < n {
        let extra =
            if opts.max_duplicates > 0 && rng.random_bool(opts.duplicate_rate.clamp(0.0, 1.0)) {
                rng.random_range(1..=opts.max_duplicates.min(254))
            } else {
                0
            };
        let k = (1 + extra).min(n - total);
        sizes.push(k as u8);
        total += k;
    }
    let mut slots: Vec<(u32, u8)> = Vec::with_capacity(n);
    for (e, &k) in sizes.iter().enumerate() {
        slots.extend((0..k).map(|c| (e as u32, c)));
    }
    slots.shuffle(&mut rng);

    let width = n.max(1).to_string().len();
    let mut out = csv::Writer::from_writer(output);
    out.write_record(GENERATED_COLUMNS)?;
    for (i, &(e, copy)) in slots.iter().enumerate() {
        let entity_seed = mix(seed ^ mix(u64::from(e)));
        let mut erng = StdRng::seed_from_u64(entity_seed);
        let base = person(&mut erng, entity_seed, &lists, opts);
        let row = if copy == 0 {
            clean_row(&base)
        } else {
            let mut crng = StdRng::seed_from_u64(mix(entity_seed ^ u64::from(copy)));
            corrupted_row(&mut crng, &base, opts.corruption)
        };
        let cell = |v: &Option<String>| v.clone().unwrap_or_default();
        out.write_record([
            format!("r{:0width$}", i + 1),
            format!("e{:0width$}", e + 1),
            cell(&row.first),
            cell(&row.last),
            cell(&row.dob),
            cell(&row.address),
            cell(&row.city),
            cell(&row.postcode),
            cell(&row.email),
            cell(&row.phone),
        ])?;
    }
    out.flush()?;
    Ok(GenerateStats {
        records: n,
        entities: sizes.len(),
        duplicated_entities: sizes.iter().filter(|&&k| k > 1).count(),
        true_pairs: sizes
            .iter()
            .map(|&k| u64::from(k) * u64::from(k.saturating_sub(1)) / 2)
            .sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typo_changes_by_one_edit() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..200 {
            let t = typo(&mut rng, "jefferson");
            let d = strsim::levenshtein("jefferson", &t);
            // A transposition is two Levenshtein edits; equal adjacent letters may give none.
            assert!(d <= 2, "{t}");
        }
        assert_eq!(typo(&mut rng, "a"), "a");
    }

    #[test]
    fn nicknames_both_ways() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(nickname_of(&mut rng, "Bill").as_deref(), Some("William"));
        let n = nickname_of(&mut rng, "William").unwrap();
        assert!(
            ["Will", "Bill", "Billy", "Willy"].contains(&n.as_str()),
            "{n}"
        );
        assert_eq!(nickname_of(&mut rng, "Zoe"), None);
    }

    #[test]
    fn stats_match_the_file() {
        let mut buf = Vec::new();
        let stats = generate(500, 3, &mut buf, &GenerateOptions::default()).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(text.lines().count(), 501);
        assert_eq!(stats.records, 500);
        let mut sizes = std::collections::HashMap::new();
        for line in text.lines().skip(1) {
            *sizes
                .entry(line.split(',').nth(1).unwrap().to_owned())
                .or_insert(0u64) += 1;
        }
        assert_eq!(sizes.len(), stats.entities);
        assert_eq!(
            sizes.values().map(|k| k * (k - 1) / 2).sum::<u64>(),
            stats.true_pairs
        );
        assert!(stats.duplicated_entities > 50, "{stats:?}");
    }
}
