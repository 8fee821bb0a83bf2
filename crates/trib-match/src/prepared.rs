//! Per-record features computed once: every field value is normalized and interned, so that
//! records become rows of small integer codes, equal values compare by code, and similarity,
//! dates, numbers and nickname sets are computed once per distinct value.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::config::{ComparatorKind, FieldConfig, Normalize};
use crate::nicknames::nickname_groups;
use crate::text::{Ymd, normalize_into};

/// Code of a missing value.
pub(crate) const MISSING: u32 = u32::MAX;

/// A small, fast, deterministic hasher (the FxHash mix) for interning and blocking keys.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // A final avalanche so that the low bits used by hash tables are well mixed.
        let mut h = self.hash;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h
    }
}

pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;

/// Hash of a string with [`FxHasher`].
pub(crate) fn hash_str(s: &str) -> u64 {
    let mut h = FxHasher::default();
    h.write(s.as_bytes());
    h.write_u8(0xff);
    h.finish()
}

/// One field over all records.
#[derive(Debug, Default)]
pub(crate) struct Column {
    /// Value code of every record ([`MISSING`] when absent or unparsable).
    pub(crate) codes: Vec<u32>,
    /// Distinct normalized values, by code.
    pub(crate) values: Vec<Box<str>>,
    /// Parsed dates by code (date fields only).
    pub(crate) dates: Vec<Ymd>,
    /// Parsed numbers by code (numeric fields only).
    pub(crate) numbers: Vec<f64>,
    /// Nickname group sets by code (fields with `nicknames = true` only).
    pub(crate) nicks: Vec<u128>,
}

/// All records, prepared for blocking and comparison.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    pub(crate) ids: Vec<String>,
    pub(crate) columns: Vec<Column>,
}

impl Prepared {
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}

struct FieldPrep {
    kind: ComparatorKind,
    normalize: Normalize,
    nicknames: bool,
    index: HashMap<Box<str>, u32, FxBuild>,
}

/// Builds a [`Prepared`] one record at a time.
pub(crate) struct PreparedBuilder {
    fields: Vec<FieldPrep>,
    prepared: Prepared,
    buf: String,
}

impl PreparedBuilder {
    pub(crate) fn new(fields: &[FieldConfig]) -> Self {
        PreparedBuilder {
            fields: fields
                .iter()
                .map(|f| FieldPrep {
                    kind: f.kind(),
                    normalize: f.normalization(),
                    nicknames: f.nicknames,
                    index: HashMap::default(),
                })
                .collect(),
            prepared: Prepared {
                ids: Vec::new(),
                columns: fields.iter().map(|_| Column::default()).collect(),
            },
            buf: String::new(),
        }
    }

    pub(crate) fn reserve(&mut self, records: usize) {
        self.prepared.ids.reserve(records);
        for col in &mut self.prepared.columns {
            col.codes.reserve(records);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.prepared.ids.len()
    }

    /// Adds a record; `values` yields one raw value per configured field, in order.
    pub(crate) fn push<'v>(
        &mut self,
        id: String,
        values: impl IntoIterator<Item = Option<&'v str>>,
    ) {
        self.prepared.ids.push(id);
        for ((field, col), raw) in self
            .fields
            .iter_mut()
            .zip(&mut self.prepared.columns)
            .zip(values)
        {
            let code = match raw {
                None => MISSING,
                Some(raw) => intern(field, col, raw, &mut self.buf),
            };
            col.codes.push(code);
        }
    }

    pub(crate) fn finish(self) -> Prepared {
        self.prepared
    }
}

fn intern(field: &mut FieldPrep, col: &mut Column, raw: &str, buf: &mut String) -> u32 {
    if !normalize_into(raw, field.normalize, buf) {
        return MISSING;
    }
    if let Some(&code) = field.index.get(buf.as_str()) {
        return code;
    }
    // New distinct value: parse what its comparator needs; unparsable values are missing.
    let (date, number) = match field.kind {
        ComparatorKind::Date => match Ymd::parse(buf) {
            Some(d) => (Some(d), None),
            None => return MISSING,
        },
        ComparatorKind::Numeric => match buf.parse::<f64>() {
            Ok(n) if n.is_finite() => (None, Some(n)),
            _ => return MISSING,
        },
        _ => (None, None),
    };
    let code = col.values.len() as u32;
    if let Some(d) = date {
        col.dates.push(d);
    }
    if let Some(n) = number {
        col.numbers.push(n);
    }
    if field.nicknames {
        col.nicks.push(nickname_groups(buf));
    }
    let value: Box<str> = buf.as_str().into();
    col.values.push(value.clone());
    field.index.insert(value, code);
    code
}
