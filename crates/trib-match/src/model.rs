//! Comparison vectors (agreement levels per field) and the Fellegi-Sunter parameters.

use crate::config::{ComparatorKind, FieldConfig};
use crate::prepared::{Column, MISSING, Prepared};
use crate::text::{jaro_winkler, normalized_levenshtein};

/// Level code of a field whose value is missing on either side.
pub(crate) const LEVEL_MISSING: u8 = 15;

/// The agreement level of every field for one pair, packed 4 bits per field.
///
/// Level 0 is always exact agreement, the last level of a field is `else` (disagreement);
/// see [`FieldConfig::level_labels`]. A field missing on either side has no level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Levels {
    packed: u64,
    fields: u8,
}

impl Levels {
    pub(crate) fn from_packed(packed: u64, fields: usize) -> Self {
        Levels {
            packed,
            fields: fields as u8,
        }
    }

    /// Number of fields.
    pub fn len(self) -> usize {
        usize::from(self.fields)
    }

    /// Whether there are no fields (never, for a valid configuration).
    pub fn is_empty(self) -> bool {
        self.fields == 0
    }

    /// Level of field `field`, `None` when the value is missing on either side (or `field` is
    /// out of range).
    pub fn get(self, field: usize) -> Option<u8> {
        if field >= self.len() {
            return None;
        }
        let level = level_of(self.packed, field);
        (level != LEVEL_MISSING).then_some(level)
    }

    /// Levels of all fields, in configuration order.
    pub fn iter(self) -> impl Iterator<Item = Option<u8>> {
        (0..self.len()).map(move |f| self.get(f))
    }
}

#[inline]
pub(crate) fn level_of(packed: u64, field: usize) -> u8 {
    ((packed >> (4 * field)) & 0xf) as u8
}

/// How one field is compared.
#[derive(Debug, Clone)]
pub(crate) struct FieldComparator {
    kind: ComparatorKind,
    thresholds: Vec<f64>,
    nicknames: bool,
    relative: bool,
    /// Number of levels, `else` included.
    pub(crate) levels: u8,
}

impl FieldComparator {
    pub(crate) fn new(field: &FieldConfig) -> Self {
        FieldComparator {
            kind: field.kind(),
            thresholds: field.levels.clone(),
            nicknames: field.nicknames,
            relative: field.relative,
            levels: field.level_labels().len() as u8,
        }
    }

    /// Agreement level of two value codes of `col`.
    #[inline]
    pub(crate) fn level(&self, col: &Column, a: u32, b: u32) -> u8 {
        if a == MISSING || b == MISSING {
            return LEVEL_MISSING;
        }
        if a == b {
            return 0;
        }
        let else_level = self.levels - 1;
        let (a, b) = (a as usize, b as usize);
        let mut next = 1u8;
        match self.kind {
            ComparatorKind::Exact => {}
            ComparatorKind::JaroWinkler | ComparatorKind::Levenshtein => {
                if !self.thresholds.is_empty() {
                    let (x, y) = (&*col.values[a], &*col.values[b]);
                    let sim = if self.kind == ComparatorKind::JaroWinkler {
                        jaro_winkler(x, y)
                    } else {
                        normalized_levenshtein(x, y)
                    };
                    for &t in &self.thresholds {
                        if sim >= t {
                            return next;
                        }
                        next += 1;
                    }
                }
            }
            ComparatorKind::Date => {
                let (x, y) = (col.dates[a], col.dates[b]);
                return if x == y {
                    0
                } else if x.transposed(y) {
                    1
                } else if x.one_digit_apart(y) {
                    2
                } else if x.year == y.year {
                    3
                } else {
                    4
                };
            }
            ComparatorKind::Numeric => {
                let (x, y) = (col.numbers[a], col.numbers[b]);
                let mut diff = (x - y).abs();
                if diff == 0.0 {
                    return 0;
                }
                if self.relative {
                    diff /= x.abs().max(y.abs());
                }
                for &t in &self.thresholds {
                    if diff <= t {
                        return next;
                    }
                    next += 1;
                }
            }
        }
        if self.nicknames && (col.nicks[a] & col.nicks[b]) != 0 {
            return next;
        }
        else_level
    }
}

/// Packed comparison vector of records `i` and `j`.
#[inline]
pub(crate) fn compare_records(
    comparators: &[FieldComparator],
    prepared: &Prepared,
    i: usize,
    j: usize,
) -> u64 {
    let mut packed = 0u64;
    for (f, (cmp, col)) in comparators.iter().zip(&prepared.columns).enumerate() {
        let level = cmp.level(col, col.codes[i], col.codes[j]);
        packed |= u64::from(level) << (4 * f);
    }
    packed
}

/// m and u of one field, per level.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldParameters {
    /// Field name.
    pub name: String,
    /// Level labels ([`FieldConfig::level_labels`]).
    pub labels: Vec<String>,
    /// P(level | pair is a match), per level.
    pub m: Vec<f64>,
    /// P(level | pair is not a match), per level.
    pub u: Vec<f64>,
    /// Whether m and u were fixed in the configuration rather than estimated.
    pub fixed: bool,
}

impl FieldParameters {
    /// Match weight of a level: log2(m / u).
    pub fn weight(&self, level: u8) -> f64 {
        let l = usize::from(level);
        (self.m[l] / self.u[l]).log2()
    }
}

/// The Fellegi-Sunter model: m and u of every field.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameters {
    /// Per field, in configuration order.
    pub fields: Vec<FieldParameters>,
    /// Estimated proportion of matches among candidate pairs (EM's λ); `None` when every
    /// field's parameters were fixed in the configuration.
    pub match_proportion: Option<f64>,
}

impl Parameters {
    /// Match weight of a comparison vector: the sum of log2(m/u) of each field's level;
    /// missing fields add 0.
    pub fn weight(&self, levels: Levels) -> f64 {
        levels
            .iter()
            .zip(&self.fields)
            .map(|(level, field)| level.map_or(0.0, |l| field.weight(l)))
            .sum()
    }

    pub(crate) fn weight_table(&self) -> WeightTable {
        let mut table = [[0.0f64; 16]; 16];
        for (row, field) in table.iter_mut().zip(&self.fields) {
            for (l, cell) in row.iter_mut().enumerate().take(field.m.len()) {
                *cell = field.weight(l as u8);
            }
            // LEVEL_MISSING (15) stays 0: missing is neutral.
        }
        WeightTable {
            table,
            fields: self.fields.len(),
        }
    }
}

/// Match weights by field and level code, for fast scoring.
pub(crate) struct WeightTable {
    table: [[f64; 16]; 16],
    fields: usize,
}

impl WeightTable {
    #[inline]
    pub(crate) fn weight(&self, packed: u64) -> f64 {
        let mut w = 0.0;
        for f in 0..self.fields {
            w += self.table[f][usize::from(level_of(packed, f))];
        }
        w
    }
}
