//! String similarity, phonetic codes, normalization and date parsing, written to run without
//! allocating on the short ASCII strings that make up almost all names and addresses.

use crate::config::Normalize;

/// Stack buffer length used by the similarity functions; longer strings fall back to the heap.
const STACK: usize = 64;

/// Normalizes a raw cell: `None` when nothing is left (the value is missing).
#[cfg(test)]
pub(crate) fn normalize(raw: &str, how: Normalize) -> Option<String> {
    let mut out = String::new();
    normalize_into(raw, how, &mut out).then_some(out)
}

/// Normalizes a raw cell into `out` (cleared first); false when nothing is left.
pub(crate) fn normalize_into(raw: &str, how: Normalize, out: &mut String) -> bool {
    out.clear();
    match how {
        Normalize::Text => {
            for word in raw.split_whitespace() {
                if !out.is_empty() {
                    out.push(' ');
                }
                if word.is_ascii() {
                    out.extend(word.bytes().map(|b| char::from(b.to_ascii_lowercase())));
                } else {
                    for c in word.chars() {
                        out.extend(c.to_lowercase());
                    }
                }
            }
        }
        Normalize::Alnum => {
            for c in raw.chars().filter(|c| c.is_alphanumeric()) {
                out.extend(c.to_lowercase());
            }
        }
        Normalize::Digits => out.extend(raw.chars().filter(char::is_ascii_digit)),
    }
    !out.is_empty()
}

/// Jaro-Winkler similarity in `[0, 1]` (prefix scale 0.1, prefix of at most 4 characters,
/// applied when the Jaro similarity exceeds 0.7). Same results as `strsim::jaro_winkler`.
pub fn jaro_winkler(a: &str, b: &str) -> f64 {
    if a.is_ascii() && b.is_ascii() {
        jaro_winkler_slice(a.as_bytes(), b.as_bytes())
    } else {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        jaro_winkler_slice(&a, &b)
    }
}

fn jaro_winkler_slice<T: PartialEq>(a: &[T], b: &[T]) -> f64 {
    let sim = jaro_slice(a, b);
    if sim > 0.7 {
        let prefix = a.iter().zip(b).take(4).take_while(|(x, y)| x == y).count();
        sim + 0.1 * prefix as f64 * (1.0 - sim)
    } else {
        sim
    }
}

fn jaro_slice<T: PartialEq>(a: &[T], b: &[T]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let mut a_stack = [false; STACK];
    let mut b_stack = [false; STACK];
    let mut a_heap = Vec::new();
    let mut b_heap = Vec::new();
    let a_flags: &mut [bool] = if a.len() <= STACK {
        &mut a_stack[..a.len()]
    } else {
        a_heap.resize(a.len(), false);
        &mut a_heap
    };
    let b_flags: &mut [bool] = if b.len() <= STACK {
        &mut b_stack[..b.len()]
    } else {
        b_heap.resize(b.len(), false);
        &mut b_heap
    };
    let range = (a.len().max(b.len()) / 2).saturating_sub(1);
    let mut matches = 0usize;
    for (i, x) in a.iter().enumerate() {
        let lo = i.saturating_sub(range);
        let hi = (i + range + 1).min(b.len());
        for j in lo..hi {
            if !b_flags[j] && b[j] == *x {
                a_flags[i] = true;
                b_flags[j] = true;
                matches += 1;
                break;
            }
        }
    }
    if matches == 0 {
        return 0.0;
    }
    let mut transpositions = 0usize;
    let mut j = 0usize;
    for (i, x) in a.iter().enumerate() {
        if !a_flags[i] {
            continue;
        }
        while !b_flags[j] {
            j += 1;
        }
        if b[j] != *x {
            transpositions += 1;
        }
        j += 1;
    }
    let m = matches as f64;
    (m / a.len() as f64 + m / b.len() as f64 + (m - (transpositions / 2) as f64) / m) / 3.0
}

/// Levenshtein distance normalized to a similarity: `1 - distance / max(len)` (1 for two
/// empty strings). Same results as `strsim::normalized_levenshtein`.
pub fn normalized_levenshtein(a: &str, b: &str) -> f64 {
    if a.is_ascii() && b.is_ascii() {
        norm_lev_slice(a.as_bytes(), b.as_bytes())
    } else {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        norm_lev_slice(&a, &b)
    }
}

fn norm_lev_slice<T: PartialEq>(a: &[T], b: &[T]) -> f64 {
    let longest = a.len().max(b.len());
    if longest == 0 {
        return 1.0;
    }
    1.0 - levenshtein_slice(a, b) as f64 / longest as f64
}

fn levenshtein_slice<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    if a.is_empty() {
        return b.len();
    }
    if b.is_empty() {
        return a.len();
    }
    let mut stack = [0usize; STACK + 1];
    let mut heap = Vec::new();
    let row: &mut [usize] = if b.len() < STACK {
        &mut stack[..=b.len()]
    } else {
        heap.resize(b.len() + 1, 0);
        &mut heap
    };
    for (j, cell) in row.iter_mut().enumerate() {
        *cell = j;
    }
    for (i, x) in a.iter().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let above = row[j + 1];
            let cost = usize::from(x != y);
            row[j + 1] = (diag + cost).min(above + 1).min(row[j] + 1);
            diag = above;
        }
    }
    row[b.len()]
}

/// American Soundex: first letter and three digits (`robert` → `R163`, `tymczak` → `T522`).
/// Non-letters are ignored; `None` when there is no ASCII letter.
pub fn soundex(s: &str) -> Option<String> {
    fn code(c: u8) -> u8 {
        match c {
            b'b' | b'f' | b'p' | b'v' => b'1',
            b'c' | b'g' | b'j' | b'k' | b'q' | b's' | b'x' | b'z' => b'2',
            b'd' | b't' => b'3',
            b'l' => b'4',
            b'm' | b'n' => b'5',
            b'r' => b'6',
            b'h' | b'w' => b'h',
            _ => b'0', // vowels and y: separate equal codes
        }
    }
    let mut letters = s
        .bytes()
        .filter(u8::is_ascii_alphabetic)
        .map(|c| c.to_ascii_lowercase());
    let first = letters.next()?;
    let mut out = vec![first.to_ascii_uppercase()];
    let mut last = code(first);
    for c in letters {
        let k = code(c);
        match k {
            b'h' => {} // h and w do not separate equal codes
            b'0' => last = b'0',
            _ => {
                if k != last {
                    out.push(k);
                    if out.len() == 4 {
                        break;
                    }
                }
                last = k;
            }
        }
    }
    out.resize(4, b'0');
    String::from_utf8(out).ok()
}

/// A calendar date as written: year, month, day (not checked against the calendar, so that a
/// typo such as month 13 still compares digit by digit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ymd {
    pub(crate) year: u16,
    pub(crate) month: u8,
    pub(crate) day: u8,
}

impl Ymd {
    /// Parses `YYYY-MM-DD`, `YYYY/MM/DD`, `YYYY.MM.DD` (one- or two-digit month and day) or
    /// `YYYYMMDD`.
    pub(crate) fn parse(s: &str) -> Option<Ymd> {
        let s = s.trim();
        let (y, m, d) = if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
            (&s[..4], &s[4..6], &s[6..])
        } else {
            let mut parts = s.split(['-', '/', '.']);
            let y = parts.next()?;
            let m = parts.next()?;
            let d = parts.next()?;
            if parts.next().is_some() || y.len() != 4 || m.len() > 2 || d.len() > 2 {
                return None;
            }
            (y, m, d)
        };
        let num = |p: &str| -> Option<u16> {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        Some(Ymd {
            year: num(y)?,
            month: u8::try_from(num(m)?).ok()?,
            day: u8::try_from(num(d)?).ok()?,
        })
    }

    fn digits(self) -> [u8; 8] {
        let mut out = [0u8; 8];
        let parts = [
            (self.year / 1000) % 10,
            (self.year / 100) % 10,
            (self.year / 10) % 10,
            self.year % 10,
            u16::from(self.month / 10),
            u16::from(self.month % 10),
            u16::from(self.day / 10),
            u16::from(self.day % 10),
        ];
        for (o, p) in out.iter_mut().zip(parts) {
            *o = p as u8;
        }
        out
    }

    /// Exactly one of the eight digits of `YYYYMMDD` differs.
    pub(crate) fn one_digit_apart(self, other: Ymd) -> bool {
        self.digits()
            .iter()
            .zip(other.digits())
            .filter(|(a, b)| **a != *b)
            .count()
            == 1
    }

    /// Same year, day and month swapped (and not equal).
    pub(crate) fn transposed(self, other: Ymd) -> bool {
        self.year == other.year
            && self.month == other.day
            && self.day == other.month
            && self.month != self.day
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soundex_codes() {
        for (name, code) in [
            ("robert", "R163"),
            ("rupert", "R163"),
            ("rubin", "R150"),
            ("ashcraft", "A261"),
            ("ashcroft", "A261"),
            ("tymczak", "T522"),
            ("pfister", "P236"),
            ("honeyman", "H555"),
            ("lee", "L000"),
            ("o'brien", "O165"),
        ] {
            assert_eq!(soundex(name).as_deref(), Some(code), "{name}");
        }
        assert_eq!(soundex("123"), None);
    }

    #[test]
    fn normalization() {
        assert_eq!(
            normalize("  Mary   ANN ", Normalize::Text).as_deref(),
            Some("mary ann")
        );
        assert_eq!(normalize(" \t", Normalize::Text), None);
        assert_eq!(
            normalize("(415) 555-0101", Normalize::Digits).as_deref(),
            Some("4155550101")
        );
        assert_eq!(
            normalize("SW1A 1AA", Normalize::Alnum).as_deref(),
            Some("sw1a1aa")
        );
        assert_eq!(normalize("n/a-", Normalize::Digits), None);
    }

    #[test]
    fn date_parsing_and_relations() {
        let d = |s| Ymd::parse(s).unwrap();
        assert_eq!(
            d("1980-03-07"),
            Ymd {
                year: 1980,
                month: 3,
                day: 7
            }
        );
        assert_eq!(d("19800307"), d("1980/3/7"));
        assert_eq!(Ymd::parse("07/03/1980"), None);
        assert_eq!(Ymd::parse("1980-03"), None);
        assert_eq!(Ymd::parse("abcd-ef-gh"), None);
        assert!(d("1980-03-07").transposed(d("1980-07-03")));
        assert!(!d("1980-03-03").transposed(d("1980-03-03")));
        assert!(!d("1980-03-07").transposed(d("1981-07-03")));
        assert!(d("1980-03-07").one_digit_apart(d("1980-03-17")));
        assert!(d("1980-03-07").one_digit_apart(d("1981-03-07")));
        assert!(!d("1980-03-07").one_digit_apart(d("1980-03-07")));
        assert!(!d("1980-03-07").one_digit_apart(d("1981-03-08")));
    }

    #[test]
    fn long_and_unicode_strings_take_the_slow_path() {
        let long_a = "a".repeat(100) + "b";
        let long_b = "a".repeat(100) + "c";
        assert_eq!(normalized_levenshtein(&long_a, &long_b), 1.0 - 1.0 / 101.0);
        assert!((jaro_winkler("zoë", "zoe") - strsim::jaro_winkler("zoë", "zoe")).abs() < 1e-12);
        assert!(
            (jaro_winkler(&long_a, &long_b) - strsim::jaro_winkler(&long_a, &long_b)).abs() < 1e-12
        );
    }
}
