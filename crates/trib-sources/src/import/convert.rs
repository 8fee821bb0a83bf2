//! One row → one [`Event`], or the reason it cannot be one: typed values, normalization,
//! identifiers. Pure functions over a compiled [`Plan`]; no I/O.
//!
//! # Identity
//!
//! `user_id` and `anonymous_id` columns set `userId` and `anonymousId`. Every other identifier
//! (`email`, `phone`, `crm_id`, `id.<type>`) becomes an entry of `context.externalIds`, as
//! Segment writes them. A row with neither `userId` nor `anonymousId` gets a deterministic
//! `anonymousId` derived from its first identifier in the order `crm_id`, `id.<type>` (mapping
//! order), `email`, `phone`: `imp:<type>:<32 hex digits of SHA-256("<type>:<value>")>`, computed
//! after normalization. The same person therefore gets the same id in every import and every
//! file (so identity resolution can link them, and their events share a partition), and no raw
//! personal data ends up in an id or a partition key. A row without any identifier value is
//! quarantined (`missing_identity`).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Arc;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};
use trib_core::{Event, EventType, JsonMap};
use trib_normalize::{NormalizeError, OnError, Rule};

use super::config::{ImportKind, ImportMapping, Target, ValueType};
use super::error::ImportError;
use super::read::to_hex;

/// The order in which identifiers are chosen to derive an `anonymousId`.
const ANONYMOUS_ID_PRIORITY: [&str; 3] = ["crm_id", "email", "phone"];
/// How many distinct values a per-column normalization cache keeps before it starts over (and
/// how many values seen once it remembers).
const NORMALIZE_CACHE_ENTRIES: usize = 65_536;

/// A validated mapping, resolved against the file's columns.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) source: String,
    kind: EventType,
    event_name: Option<String>,
    columns: Vec<ColumnPlan>,
    timestamp: Option<CellLocation>,
    timestamp_format: Option<String>,
    time_zone: TimeZone,
    normalize: trib_normalize::Options,
    /// `imp-<16 hex digits of the file hash>-`.
    message_id_prefix: String,
    pub(crate) received_at: Timestamp,
    /// `received_at` as JSON (a quoted RFC 3339 string), written into every event.
    received_at_json: Vec<u8>,
    /// `import:<file name>`.
    pub(crate) origin: String,
    /// The CSV header (empty for NDJSON).
    pub(crate) header: Arc<[String]>,
    /// Identify rows copy `email`/`phone` identifiers into traits unless a column maps there.
    email_trait: bool,
    phone_trait: bool,
}

#[derive(Debug)]
struct ColumnPlan {
    location: CellLocation,
    target: Target,
    target_name: String,
    value_type: ValueType,
    format: Option<String>,
    normalize: Option<Rule>,
    /// Rules worth caching: expensive (phone) or with few distinct values (country, currency).
    cached: bool,
    on_error: OnError,
    required: bool,
}

/// Where a value is in a row.
#[derive(Debug, Clone)]
struct CellLocation {
    /// The column as configured, for messages.
    column: String,
    /// The CSV column index.
    index: usize,
    /// The NDJSON dotted path, tried when the whole name is not a top-level key.
    path: Vec<String>,
}

/// One row as read from the file.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RowInput<'a> {
    Csv(CsvRow<'a>),
    Json(&'a JsonMap),
}

/// The fields of one CSV row inside a chunk of rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CsvRow<'a> {
    pub(crate) bytes: &'a [u8],
    /// Where the row's first field starts in `bytes`.
    pub(crate) start: usize,
    /// The end of each field in `bytes`.
    pub(crate) ends: &'a [usize],
}

impl<'a> CsvRow<'a> {
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(crate) fn field(&self, index: usize) -> &'a [u8] {
        let start = if index == 0 {
            self.start
        } else {
            self.ends[index - 1]
        };
        &self.bytes[start..self.ends[index]]
    }
}

/// Why a row is quarantined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) code: String,
    pub(crate) field: Option<String>,
    pub(crate) reason: String,
    pub(crate) schema: Option<String>,
}

impl Problem {
    pub(crate) fn new(code: &str, field: Option<&str>, reason: String) -> Self {
        Self {
            code: code.to_owned(),
            field: field.map(str::to_owned),
            reason,
            schema: None,
        }
    }
}

/// An event built from a row, with the fields it had to leave out.
#[derive(Debug)]
pub(crate) struct Converted {
    pub(crate) event: Event,
    /// `"<target>: <code>"` for each field dropped by `on_error = "drop"`.
    pub(crate) dropped: Vec<String>,
}

/// Per-worker caches of normalization results, one per cached column (by column index).
#[derive(Debug, Default)]
pub(crate) struct Caches {
    columns: Vec<ColumnCache>,
}

/// The normalization results of one column's values. Normalization is a pure function, so the
/// cache changes the cost, never the result.
///
/// A value is cached the second time it is seen: a doorkeeper remembers the hashes of values
/// seen once. Mostly unique values (phone numbers) would otherwise fill the cache with entries
/// that are never used again, each costing a copy of the value and of its result.
#[derive(Debug, Default)]
struct ColumnCache {
    results: HashMap<String, Result<Value, NormalizeError>>,
    /// Hashes (by `results`' hasher) of the values seen once since it last started over.
    seen_once: HashSet<u64, BuildHasherDefault<HashIsKey>>,
}

impl ColumnCache {
    /// Returns the normalization of `text`, computed by `normalize` unless cached.
    fn normalize(
        &mut self,
        text: &str,
        normalize: impl FnOnce() -> Result<Value, NormalizeError>,
    ) -> Result<Value, NormalizeError> {
        if let Some(result) = self.results.get(text) {
            return result.clone();
        }
        let result = normalize();
        let hash = self.results.hasher().hash_one(text);
        if self.seen_once.remove(&hash) {
            if self.results.len() >= NORMALIZE_CACHE_ENTRIES {
                self.results.clear();
            }
            self.results.insert(text.to_owned(), result.clone());
        } else {
            if self.seen_once.len() >= NORMALIZE_CACHE_ENTRIES {
                self.seen_once.clear();
            }
            self.seen_once.insert(hash);
        }
        result
    }
}

/// A hasher for keys that are already hashes: it keeps the `u64` as it is.
#[derive(Debug, Default)]
struct HashIsKey(u64);

impl Hasher for HashIsKey {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than u64, which are not used; stay correct regardless.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// Why a value could not be read as its type.
enum ValueError {
    Utf8,
    Invalid(String),
}

impl Plan {
    /// Compiles a validated mapping; `header` is the CSV header (None for NDJSON). Fails when a
    /// mapped column is not in the header.
    pub(crate) fn compile(
        mapping: &ImportMapping,
        source: &str,
        normalize: &trib_normalize::Options,
        header: Option<&[String]>,
        file: &std::path::Path,
        sha256: &str,
        received_at: Timestamp,
    ) -> Result<Plan, ImportError> {
        let mut missing = Vec::new();
        let mut locate = |column: &str, at: String| -> CellLocation {
            let index = match header {
                Some(header) => match header.iter().position(|name| name == column) {
                    Some(index) => index,
                    None => {
                        missing.push(format!("`{column}` ({at})"));
                        0
                    }
                },
                None => 0,
            };
            CellLocation {
                column: column.to_owned(),
                index,
                path: column.split('.').map(str::to_owned).collect(),
            }
        };
        let mut columns = Vec::with_capacity(mapping.columns.len());
        for (index, column) in mapping.columns.iter().enumerate() {
            let target =
                Target::parse(&column.target).map_err(|message| ImportError::InvalidMapping {
                    problems: vec![format!("columns[{index}].target: {message}")],
                })?;
            columns.push(ColumnPlan {
                location: locate(&column.column, format!("columns[{index}]")),
                target,
                target_name: column.target.clone(),
                value_type: column.value_type,
                format: column.format.clone(),
                normalize: column.normalize,
                cached: matches!(
                    column.normalize,
                    Some(Rule::Phone | Rule::Country | Rule::Currency)
                ),
                on_error: column.on_error,
                required: column.required,
            });
        }
        let timestamp = mapping
            .timestamp
            .as_ref()
            .map(|timestamp| locate(&timestamp.column, "timestamp.column".to_owned()));
        if let Some(header) = header
            && !missing.is_empty()
        {
            const SHOWN: usize = 30;
            let mut names: Vec<&str> = header.iter().take(SHOWN).map(String::as_str).collect();
            if header.len() > SHOWN {
                names.push("...");
            }
            return Err(ImportError::MissingColumns {
                path: file.to_path_buf(),
                missing,
                header: names.join(", "),
            });
        }
        let time_zone = match &mapping.time_zone {
            Some(name) => TimeZone::get(name).map_err(|error| ImportError::InvalidMapping {
                problems: vec![format!("time_zone: {error}")],
            })?,
            None => TimeZone::UTC,
        };
        let maps_trait = |name: &str| {
            columns
                .iter()
                .any(|column| matches!(&column.target, Target::Trait(path) if path.len() == 1 && path[0] == name))
        };
        let identify = mapping.kind == ImportKind::Identify;
        let email_trait = identify && !maps_trait("email");
        let phone_trait = identify && !maps_trait("phone");
        let file_name = file.file_name().map_or_else(
            || file.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        );
        Ok(Plan {
            source: source.to_owned(),
            kind: match mapping.kind {
                ImportKind::Identify => EventType::Identify,
                ImportKind::Track => EventType::Track,
            },
            event_name: match mapping.kind {
                ImportKind::Identify => None,
                ImportKind::Track => mapping.event.clone(),
            },
            columns,
            timestamp,
            timestamp_format: mapping.timestamp.as_ref().and_then(|t| t.format.clone()),
            time_zone,
            normalize: normalize.clone(),
            message_id_prefix: format!("imp-{}-", &sha256[..16.min(sha256.len())]),
            received_at,
            received_at_json: serde_json::to_vec(&received_at).unwrap_or_default(),
            origin: format!("import:{file_name}"),
            header: header.map_or_else(|| Arc::from(Vec::new()), Arc::from),
            email_trait,
            phone_trait,
        })
    }

    /// `imp-<first 16 hex digits of the file's SHA-256>-`: every row's messageId starts so.
    pub(crate) fn message_id_prefix(&self) -> &str {
        &self.message_id_prefix
    }

    /// Returns the messageId of row `number`.
    pub(crate) fn message_id(&self, number: u64) -> String {
        let mut id = String::with_capacity(self.message_id_prefix.len() + 20);
        id.push_str(&self.message_id_prefix);
        // Formatting into a String cannot fail.
        let _ = write!(id, "{number}");
        id
    }

    /// Builds the event of one row, or says why it is quarantined.
    pub(crate) fn convert(
        &self,
        row: RowInput<'_>,
        number: u64,
        caches: &mut Caches,
    ) -> Result<Converted, Problem> {
        if let RowInput::Csv(csv) = row
            && csv.len() != self.header.len()
        {
            return Err(Problem::new(
                "wrong_column_count",
                None,
                format!(
                    "row {number} has {} fields, the header has {}",
                    csv.len(),
                    self.header.len()
                ),
            ));
        }
        let mut user_id = None;
        let mut anonymous_id = None;
        let mut external_ids: Vec<(&str, String)> = Vec::new();
        let mut traits = JsonMap::new();
        let mut properties = JsonMap::new();
        let mut consent = JsonMap::new();
        let mut dropped = Vec::new();

        for (column_index, column) in self.columns.iter().enumerate() {
            let value = match self.column_value(row, number, column_index, column, caches) {
                Ok(value) => value,
                Err(problem) => {
                    if column.on_error == OnError::Drop
                        && !column.required
                        && problem.code != "invalid_utf8"
                    {
                        dropped.push(format!("{}: {}", column.target_name, problem.code));
                        continue;
                    }
                    return Err(problem);
                }
            };
            let Some(value) = value else {
                if column.required {
                    return Err(Problem::new(
                        "missing_value",
                        Some(&column.target_name),
                        format!(
                            "row {number}: the required column `{}` is empty or missing",
                            column.location.column
                        ),
                    ));
                }
                continue;
            };
            match &column.target {
                Target::UserId => user_id = Some(identifier_text(value)),
                Target::AnonymousId => anonymous_id = Some(identifier_text(value)),
                Target::ExternalId(id_type) => {
                    let text = identifier_text(value);
                    if (self.email_trait && id_type == "email")
                        || (self.phone_trait && id_type == "phone")
                    {
                        traits.insert(id_type.clone(), Value::String(text.clone()));
                    }
                    external_ids.push((id_type, text));
                }
                Target::Trait(path) => insert_path(&mut traits, path, value),
                Target::Property(path) => insert_path(&mut properties, path, value),
                Target::Consent(category) => {
                    let granted = match &value {
                        Value::Bool(granted) => Some(*granted),
                        Value::String(text) => {
                            match read_text(text, ValueType::Boolean, None, &self.time_zone) {
                                Ok(Some(Value::Bool(granted))) => Some(granted),
                                _ => None,
                            }
                        }
                        Value::Number(n) if n.as_i64() == Some(1) => Some(true),
                        Value::Number(n) if n.as_i64() == Some(0) => Some(false),
                        _ => None,
                    };
                    let Some(granted) = granted else {
                        return Err(Problem::new(
                            "invalid_value",
                            Some(&column.target_name),
                            format!(
                                "row {number}, column `{}`: a consent must be true or false \
                                 (or yes/no, 1/0)",
                                column.location.column
                            ),
                        ));
                    };
                    consent.insert(category.clone(), Value::Bool(granted));
                }
            }
        }

        let timestamp = match &self.timestamp {
            None => self.received_at,
            Some(location) => {
                let cell = cell(row, location);
                match read_timestamp_cell(cell, self.timestamp_format.as_deref(), &self.time_zone) {
                    Ok(Some(timestamp)) => timestamp,
                    Ok(None) => {
                        return Err(Problem::new(
                            "missing_value",
                            Some("timestamp"),
                            format!(
                                "row {number}: the timestamp column `{}` is empty or missing",
                                location.column
                            ),
                        ));
                    }
                    Err(ValueError::Utf8) => {
                        return Err(invalid_utf8(number, "timestamp", &location.column));
                    }
                    Err(ValueError::Invalid(why)) => {
                        return Err(Problem::new(
                            "invalid_value",
                            Some("timestamp"),
                            format!("row {number}, column `{}`: {why}", location.column),
                        ));
                    }
                }
            }
        };

        if user_id.is_none() && anonymous_id.is_none() {
            anonymous_id = derived_anonymous_id(&external_ids);
            if anonymous_id.is_none() {
                return Err(Problem::new(
                    "missing_identity",
                    None,
                    format!("row {number} has no value in any identifier column"),
                ));
            }
        }

        let mut context = JsonMap::new();
        if !external_ids.is_empty() {
            let ids = external_ids
                .into_iter()
                .map(|(id_type, id)| {
                    let mut entry = Map::with_capacity(4);
                    entry.insert("id".to_owned(), Value::String(id));
                    entry.insert("type".to_owned(), Value::String(id_type.to_owned()));
                    entry.insert("collection".to_owned(), Value::String("users".to_owned()));
                    entry.insert("encoding".to_owned(), Value::String("none".to_owned()));
                    Value::Object(entry)
                })
                .collect();
            context.insert("externalIds".to_owned(), Value::Array(ids));
        }
        if !consent.is_empty() {
            let mut preferences = JsonMap::new();
            preferences.insert("categoryPreferences".to_owned(), Value::Object(consent));
            context.insert("consent".to_owned(), Value::Object(preferences));
        }

        let (traits, properties) = match self.kind {
            EventType::Track => ((!traits.is_empty()).then_some(traits), Some(properties)),
            _ => (Some(traits), None),
        };
        let event = Event {
            message_id: self.message_id(number),
            source: self.source.clone(),
            kind: self.kind,
            user_id,
            anonymous_id,
            event: self.event_name.clone(),
            name: None,
            category: None,
            group_id: None,
            previous_id: None,
            traits,
            properties,
            context,
            integrations: JsonMap::new(),
            timestamp,
            original_timestamp: None,
            sent_at: None,
            received_at: self.received_at,
            extra: JsonMap::new(),
        };
        Ok(Converted { event, dropped })
    }

    /// Reads, types and normalizes one column's value; `None` when absent or empty.
    fn column_value(
        &self,
        row: RowInput<'_>,
        number: u64,
        column_index: usize,
        column: &ColumnPlan,
        caches: &mut Caches,
    ) -> Result<Option<Value>, Problem> {
        let value = match read_cell(
            cell(row, &column.location),
            column.value_type,
            column.format.as_deref(),
            &self.time_zone,
        ) {
            Ok(Some(value)) => value,
            Ok(None) => return Ok(None),
            Err(ValueError::Utf8) => {
                return Err(invalid_utf8(
                    number,
                    &column.target_name,
                    &column.location.column,
                ));
            }
            Err(ValueError::Invalid(why)) => {
                return Err(Problem::new(
                    "invalid_value",
                    Some(&column.target_name),
                    format!("row {number}, column `{}`: {why}", column.location.column),
                ));
            }
        };
        let Some(rule) = column.normalize else {
            return Ok(Some(value));
        };
        let normalized = if column.cached
            && let Value::String(text) = &value
        {
            if caches.columns.len() <= column_index {
                caches
                    .columns
                    .resize_with(column_index + 1, ColumnCache::default);
            }
            caches.columns[column_index].normalize(text, || {
                trib_normalize::normalize_value(rule, &value, &self.normalize)
            })
        } else {
            trib_normalize::normalize_value(rule, &value, &self.normalize)
        };
        match normalized {
            Ok(Value::Null) => Ok(None),
            Ok(value) => Ok(Some(value)),
            Err(error) => Err(Problem::new(
                error.code,
                Some(&column.target_name),
                format!(
                    "row {number}, column `{}`: {}",
                    column.location.column, error.reason
                ),
            )),
        }
    }
}

/// A cell of a row: CSV bytes or a JSON value.
enum Cell<'a> {
    Absent,
    Text(&'a [u8]),
    Json(&'a Value),
}

fn cell<'a>(row: RowInput<'a>, location: &CellLocation) -> Cell<'a> {
    match row {
        RowInput::Csv(csv) => {
            if location.index < csv.len() {
                Cell::Text(csv.field(location.index))
            } else {
                Cell::Absent
            }
        }
        RowInput::Json(object) => {
            if let Some(value) = object.get(&location.column) {
                return Cell::Json(value);
            }
            let Some((first, rest)) = location.path.split_first() else {
                return Cell::Absent;
            };
            let mut current = object.get(first);
            for segment in rest {
                current = current.and_then(|value| value.get(segment));
            }
            current.map_or(Cell::Absent, Cell::Json)
        }
    }
}

fn invalid_utf8(number: u64, field: &str, column: &str) -> Problem {
    Problem::new(
        "invalid_utf8",
        Some(field),
        format!(
            "row {number}, column `{column}` is not valid UTF-8 (is the file in another encoding?)"
        ),
    )
}

/// Reads a cell as `value_type`; `Ok(None)` when it is absent, empty or blank.
fn read_cell(
    cell: Cell<'_>,
    value_type: ValueType,
    format: Option<&str>,
    time_zone: &TimeZone,
) -> Result<Option<Value>, ValueError> {
    match cell {
        Cell::Absent | Cell::Json(Value::Null) => Ok(None),
        Cell::Text(bytes) => {
            let text = std::str::from_utf8(bytes).map_err(|_| ValueError::Utf8)?;
            read_text(text, value_type, format, time_zone)
        }
        Cell::Json(Value::String(text)) => read_text(text, value_type, format, time_zone),
        Cell::Json(value) => read_json(value, value_type),
    }
}

fn read_text(
    text: &str,
    value_type: ValueType,
    format: Option<&str>,
    time_zone: &TimeZone,
) -> Result<Option<Value>, ValueError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let value = match value_type {
        ValueType::String => Value::String(text.to_owned()),
        ValueType::Integer => trimmed
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| ValueError::Invalid("not a whole number".to_owned()))?,
        ValueType::Number => parse_number(trimmed)?,
        ValueType::Boolean => Value::Bool(parse_boolean(trimmed)?),
        ValueType::Date => Value::String(parse_date(trimmed, format)?.to_string()),
        ValueType::Timestamp => {
            Value::String(parse_timestamp(trimmed, format, time_zone)?.to_string())
        }
        ValueType::Json => match serde_json::from_str::<Value>(trimmed) {
            Ok(Value::Null) => return Ok(None),
            Ok(value) => value,
            Err(error) => return Err(ValueError::Invalid(format!("not valid JSON: {error}"))),
        },
    };
    Ok(Some(value))
}

fn read_json(value: &Value, value_type: ValueType) -> Result<Option<Value>, ValueError> {
    let wrong = |expected: &str| {
        Err(ValueError::Invalid(format!(
            "expected {expected}, found {}",
            trib_core::json_kind(value)
        )))
    };
    match (value_type, value) {
        (ValueType::Json, value) => Ok(Some(value.clone())),
        (ValueType::String, Value::Number(number)) => Ok(Some(Value::String(number.to_string()))),
        (ValueType::String, Value::Bool(flag)) => Ok(Some(Value::String(flag.to_string()))),
        (ValueType::Integer, Value::Number(number)) => {
            if number.is_i64() || number.is_u64() {
                return Ok(Some(Value::Number(number.clone())));
            }
            match number.as_f64() {
                Some(float) if float.fract() == 0.0 && float.abs() < 9.0e15 => {
                    Ok(Some(Value::from(float as i64)))
                }
                _ => wrong("a whole number"),
            }
        }
        (ValueType::Number, Value::Number(number)) => Ok(Some(Value::Number(number.clone()))),
        (ValueType::Boolean, Value::Bool(flag)) => Ok(Some(Value::Bool(*flag))),
        (ValueType::String, _) => wrong("a string"),
        (ValueType::Integer, _) => wrong("a whole number"),
        (ValueType::Number, _) => wrong("a number"),
        (ValueType::Boolean, _) => wrong("a boolean"),
        (ValueType::Date, _) => wrong("a date string"),
        (ValueType::Timestamp, _) => wrong("a timestamp string"),
    }
}

fn parse_number(text: &str) -> Result<Value, ValueError> {
    if let Ok(integer) = text.parse::<i64>() {
        return Ok(Value::from(integer));
    }
    let invalid = || ValueError::Invalid("not a number".to_owned());
    // Rust also reads "inf" and "NaN", which JSON cannot hold.
    if !text.bytes().any(|byte| byte.is_ascii_digit()) {
        return Err(invalid());
    }
    let float = text.parse::<f64>().map_err(|_| invalid())?;
    Number::from_f64(float)
        .map(Value::Number)
        .ok_or_else(invalid)
}

fn parse_boolean(text: &str) -> Result<bool, ValueError> {
    const TRUE: [&str; 5] = ["true", "yes", "y", "t", "1"];
    const FALSE: [&str; 5] = ["false", "no", "n", "f", "0"];
    if TRUE.iter().any(|word| text.eq_ignore_ascii_case(word)) {
        Ok(true)
    } else if FALSE.iter().any(|word| text.eq_ignore_ascii_case(word)) {
        Ok(false)
    } else {
        Err(ValueError::Invalid(
            "not a boolean (true/false, yes/no, 1/0)".to_owned(),
        ))
    }
}

fn parse_date(text: &str, format: Option<&str>) -> Result<Date, ValueError> {
    match format {
        Some(format) => jiff::fmt::strtime::parse(format, text)
            .and_then(|parsed| parsed.to_date())
            .map_err(|_| ValueError::Invalid(format!("not a date in the format `{format}`"))),
        None => text
            .parse::<Date>()
            .map_err(|_| ValueError::Invalid("not a date (expected YYYY-MM-DD)".to_owned())),
    }
}

/// Parses a point in time; date-times without an offset are read in `time_zone`.
fn parse_timestamp(
    text: &str,
    format: Option<&str>,
    time_zone: &TimeZone,
) -> Result<Timestamp, ValueError> {
    if let Some(format) = format {
        let invalid = || ValueError::Invalid(format!("not a timestamp in the format `{format}`"));
        let parsed = jiff::fmt::strtime::parse(format, text).map_err(|_| invalid())?;
        if parsed.timestamp().is_some() || parsed.offset().is_some() {
            return parsed.to_timestamp().map_err(|_| invalid());
        }
        if parsed.iana_time_zone().is_some() {
            return parsed
                .to_zoned_datetime()
                .map(|zoned| zoned.timestamp())
                .map_err(|_| invalid());
        }
        let civil = match parsed.to_datetime() {
            Ok(civil) => civil,
            Err(_) => parsed
                .to_date()
                .map_err(|_| invalid())?
                .to_datetime(jiff::civil::Time::midnight()),
        };
        return civil_to_timestamp(civil, time_zone).ok_or_else(invalid);
    }
    if let Ok(timestamp) = text.parse::<Timestamp>() {
        return Ok(timestamp);
    }
    let civil = if let Ok(civil) = text.parse::<DateTime>() {
        Some(civil)
    } else {
        text.parse::<Date>()
            .ok()
            .map(|date| date.to_datetime(jiff::civil::Time::midnight()))
    };
    civil
        .and_then(|civil| civil_to_timestamp(civil, time_zone))
        .ok_or_else(|| {
            ValueError::Invalid(
                "not a timestamp (expected RFC 3339 such as 2024-03-01T09:30:00Z, or set format)"
                    .to_owned(),
            )
        })
}

fn civil_to_timestamp(civil: DateTime, time_zone: &TimeZone) -> Option<Timestamp> {
    time_zone.to_timestamp(civil).ok()
}

fn read_timestamp_cell(
    cell: Cell<'_>,
    format: Option<&str>,
    time_zone: &TimeZone,
) -> Result<Option<Timestamp>, ValueError> {
    let text = match cell {
        Cell::Absent | Cell::Json(Value::Null) => return Ok(None),
        Cell::Text(bytes) => std::str::from_utf8(bytes).map_err(|_| ValueError::Utf8)?,
        Cell::Json(Value::String(text)) => text,
        Cell::Json(other) => {
            return Err(ValueError::Invalid(format!(
                "expected a timestamp string, found {}",
                trib_core::json_kind(other)
            )));
        }
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    parse_timestamp(trimmed, format, time_zone).map(Some)
}

/// Identifiers are strings: whole numbers become their decimal text.
fn identifier_text(value: Value) -> String {
    match value {
        Value::String(text) => text,
        other => other.to_string(),
    }
}

/// Sets `value` at `path` inside `map`, creating objects on the way.
fn insert_path(map: &mut JsonMap, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = map;
    for segment in parents {
        let entry = current
            .entry(segment.clone())
            .or_insert_with(|| Value::Object(JsonMap::new()));
        if !entry.is_object() {
            *entry = Value::Object(JsonMap::new());
        }
        let Value::Object(next) = entry else {
            return;
        };
        current = next;
    }
    current.insert(last.clone(), value);
}

/// `imp:<type>:<hash>` from the preferred identifier, or `None` without any.
fn derived_anonymous_id(external_ids: &[(&str, String)]) -> Option<String> {
    let preferred = ANONYMOUS_ID_PRIORITY
        .iter()
        .take(1)
        .find_map(|wanted| external_ids.iter().find(|(id_type, _)| id_type == wanted))
        .or_else(|| {
            external_ids
                .iter()
                .find(|(id_type, _)| !ANONYMOUS_ID_PRIORITY.contains(id_type))
        })
        .or_else(|| {
            ANONYMOUS_ID_PRIORITY[1..]
                .iter()
                .find_map(|wanted| external_ids.iter().find(|(id_type, _)| id_type == wanted))
        })?;
    let (id_type, value) = preferred;
    let mut hasher = Sha256::new();
    hasher.update(id_type.as_bytes());
    hasher.update(b":");
    hasher.update(value.as_bytes());
    let digest = hasher.finalize();
    Some(format!("imp:{id_type}:{}", to_hex(&digest[..16])))
}

impl Plan {
    /// Appends `event` as JSON to `out`, byte for byte as `serde_json::to_writer` writes it (the
    /// derived `Serialize`: fields in declaration order, absent options and empty maps left
    /// out, `extra` flattened), only faster: strings with nothing to escape are copied whole,
    /// and a timestamp equal to the import's `receivedAt` is copied already formatted. On
    /// error, `out` may hold part of the event.
    pub(crate) fn write_event_json(
        &self,
        out: &mut Vec<u8>,
        event: &Event,
    ) -> Result<(), serde_json::Error> {
        // Every field, so that a new one does not compile until it is written here too.
        let Event {
            message_id,
            source,
            kind,
            user_id,
            anonymous_id,
            event,
            name,
            category,
            group_id,
            previous_id,
            traits,
            properties,
            context,
            integrations,
            timestamp,
            original_timestamp,
            sent_at,
            received_at,
            extra,
        } = event;
        let mut object = JsonObject::begin(out);
        object.key("messageId")?;
        write_json_str(object.out, message_id)?;
        object.key("source")?;
        write_json_str(object.out, source)?;
        object.key("type")?;
        write_json_str(object.out, kind.as_str())?;
        let strings = [
            ("userId", user_id),
            ("anonymousId", anonymous_id),
            ("event", event),
            ("name", name),
            ("category", category),
            ("groupId", group_id),
            ("previousId", previous_id),
        ];
        for (key, value) in strings {
            if let Some(value) = value {
                object.key(key)?;
                write_json_str(object.out, value)?;
            }
        }
        for (key, map) in [("traits", traits), ("properties", properties)] {
            if let Some(map) = map {
                object.key(key)?;
                write_json_map(object.out, map)?;
            }
        }
        for (key, map) in [("context", context), ("integrations", integrations)] {
            if !map.is_empty() {
                object.key(key)?;
                write_json_map(object.out, map)?;
            }
        }
        object.key("timestamp")?;
        self.write_timestamp_json(object.out, timestamp)?;
        for (key, value) in [
            ("originalTimestamp", original_timestamp),
            ("sentAt", sent_at),
        ] {
            if let Some(value) = value {
                object.key(key)?;
                write_json_str(object.out, value)?;
            }
        }
        object.key("receivedAt")?;
        self.write_timestamp_json(object.out, received_at)?;
        for (key, value) in extra {
            object.key(key)?;
            write_json_value(object.out, value)?;
        }
        object.end();
        Ok(())
    }

    fn write_timestamp_json(
        &self,
        out: &mut Vec<u8>,
        timestamp: &Timestamp,
    ) -> Result<(), serde_json::Error> {
        if *timestamp == self.received_at && !self.received_at_json.is_empty() {
            out.extend_from_slice(&self.received_at_json);
            Ok(())
        } else {
            serde_json::to_writer(out, timestamp)
        }
    }
}

/// Writes the members of a JSON object: `{`, then `"key":` before each value, then `}`.
struct JsonObject<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> JsonObject<'a> {
    fn begin(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, empty: true }
    }

    /// Writes the key of the next member (and the comma before it).
    fn key(&mut self, key: &str) -> Result<(), serde_json::Error> {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        write_json_str(self.out, key)?;
        self.out.push(b':');
        Ok(())
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

fn write_json_map(out: &mut Vec<u8>, map: &JsonMap) -> Result<(), serde_json::Error> {
    let mut object = JsonObject::begin(out);
    for (key, value) in map {
        object.key(key)?;
        write_json_value(object.out, value)?;
    }
    object.end();
    Ok(())
}

/// Writes a JSON value as serde_json does; strings take the fast path of [`write_json_str`].
fn write_json_value(out: &mut Vec<u8>, value: &Value) -> Result<(), serde_json::Error> {
    match value {
        Value::String(text) => write_json_str(out, text),
        Value::Object(map) => write_json_map(out, map),
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_json_value(out, item)?;
            }
            out.push(b']');
            Ok(())
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => serde_json::to_writer(out, value),
    }
}

/// Writes a JSON string as serde_json does: when nothing in it needs escaping (a control
/// character, `"` or `\`), which is nearly always, it is copied in one go.
fn write_json_str(out: &mut Vec<u8>, text: &str) -> Result<(), serde_json::Error> {
    // No early exit: the compiler can then check many bytes at a time.
    let plain = text.bytes().fold(true, |plain, byte| {
        plain & (byte >= 0x20) & (byte != b'"') & (byte != b'\\')
    });
    if !plain {
        return serde_json::to_writer(out, text);
    }
    out.reserve(text.len() + 2);
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
    Ok(())
}

/// The raw CSV row as a JSON object (header → value, in header order) for the quarantine.
/// Extra fields go under `"__extra__"`; invalid UTF-8 is replaced and flagged with
/// `"__invalid_utf8__": true`; a blank header name becomes `column_<n>`.
pub(crate) fn csv_row_json(header: &[String], row: CsvRow<'_>) -> String {
    let mut out = String::with_capacity(64 + row.ends.last().map_or(0, |end| end - row.start) * 2);
    let mut invalid_utf8 = false;
    out.push('{');
    let shared = header.len().min(row.len());
    for (index, name) in header.iter().enumerate().take(shared) {
        if index > 0 {
            out.push(',');
        }
        if name.trim().is_empty() {
            push_json_string(&mut out, &format!("column_{}", index + 1));
        } else {
            push_json_string(&mut out, name);
        }
        out.push(':');
        invalid_utf8 |= push_lossy(&mut out, row.field(index));
    }
    if row.len() > header.len() {
        if shared > 0 {
            out.push(',');
        }
        out.push_str("\"__extra__\":[");
        for index in header.len()..row.len() {
            if index > header.len() {
                out.push(',');
            }
            invalid_utf8 |= push_lossy(&mut out, row.field(index));
        }
        out.push(']');
    }
    if invalid_utf8 {
        if row.len() > 0 {
            out.push(',');
        }
        out.push_str("\"__invalid_utf8__\":true");
    }
    out.push('}');
    out
}

/// A line of an NDJSON file for the quarantine: as is when it is JSON, else a JSON string.
pub(crate) fn line_json(line: &[u8]) -> String {
    if let Ok(text) = std::str::from_utf8(line)
        && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
    {
        return text.trim().to_owned();
    }
    let mut out = String::new();
    push_lossy(&mut out, line);
    out
}

/// Appends `bytes` as a JSON string; returns whether invalid UTF-8 was replaced.
fn push_lossy(out: &mut String, bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    push_json_string(out, &text);
    matches!(text, std::borrow::Cow::Owned(_))
}

fn push_json_string(out: &mut String, text: &str) {
    // Serializing a str into a String cannot fail; fall back to an empty string regardless.
    match serde_json::to_string(text) {
        Ok(json) => out.push_str(&json),
        Err(_) => out.push_str("\"\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_text(text: &str, value_type: ValueType, format: Option<&str>, expect: Option<Value>) {
        let result = read_text(text, value_type, format, &TimeZone::UTC);
        match (result, expect) {
            (Ok(got), expect) => assert_eq!(got, expect, "{text:?} as {value_type:?}"),
            (Err(ValueError::Invalid(why)), None) => assert!(!why.is_empty()),
            (Err(ValueError::Invalid(why)), Some(expect)) => {
                panic!("{text:?} as {value_type:?}: {why}, expected {expect}")
            }
            (Err(ValueError::Utf8), _) => panic!("utf8"),
        }
    }

    #[test]
    fn text_values_are_typed() {
        use serde_json::json;
        check_text(" 42 ", ValueType::Integer, None, Some(json!(42)));
        check_text("4.2", ValueType::Integer, None, None);
        check_text("19.99", ValueType::Number, None, Some(json!(19.99)));
        check_text("-3", ValueType::Number, None, Some(json!(-3)));
        check_text("1e3", ValueType::Number, None, Some(json!(1000.0)));
        check_text("NaN", ValueType::Number, None, None);
        check_text("inf", ValueType::Number, None, None);
        check_text("Yes", ValueType::Boolean, None, Some(json!(true)));
        check_text("0", ValueType::Boolean, None, Some(json!(false)));
        check_text("maybe", ValueType::Boolean, None, None);
        check_text(
            "2024-03-01",
            ValueType::Date,
            None,
            Some(json!("2024-03-01")),
        );
        check_text(
            "01/03/2024",
            ValueType::Date,
            Some("%d/%m/%Y"),
            Some(json!("2024-03-01")),
        );
        check_text("31/02/2024", ValueType::Date, Some("%d/%m/%Y"), None);
        check_text(
            "2024-03-01T09:30:00+01:00",
            ValueType::Timestamp,
            None,
            Some(json!("2024-03-01T08:30:00Z")),
        );
        check_text(
            "2024-03-01 09:30:00",
            ValueType::Timestamp,
            None,
            Some(json!("2024-03-01T09:30:00Z")),
        );
        check_text(
            "01/03/2024 09:30",
            ValueType::Timestamp,
            Some("%d/%m/%Y %H:%M"),
            Some(json!("2024-03-01T09:30:00Z")),
        );
        check_text("yesterday", ValueType::Timestamp, None, None);
        check_text(
            r#"[{"sku":"A1","qty":2}]"#,
            ValueType::Json,
            None,
            Some(json!([{"sku": "A1", "qty": 2}])),
        );
        check_text("[1,", ValueType::Json, None, None);
        check_text("   ", ValueType::String, None, None);
        check_text(
            " keep spaces ",
            ValueType::String,
            None,
            Some(json!(" keep spaces ")),
        );
    }

    #[test]
    fn civil_times_are_read_in_the_configured_zone() {
        let paris = TimeZone::get("Europe/Paris").unwrap();
        let timestamp = parse_timestamp("2024-07-01 12:00", Some("%Y-%m-%d %H:%M"), &paris)
            .ok()
            .unwrap();
        assert_eq!(timestamp.to_string(), "2024-07-01T10:00:00Z");
    }

    #[test]
    fn anonymous_ids_prefer_crm_id_then_custom_then_email_and_hide_the_value() {
        let email = ("email", "ada@example.com".to_owned());
        let crm = ("crm_id", "C-1".to_owned());
        let custom = ("shop", "S9".to_owned());
        let id = derived_anonymous_id(&[email.clone(), custom.clone(), crm]).unwrap();
        assert!(id.starts_with("imp:crm_id:"), "{id}");
        let id = derived_anonymous_id(&[email.clone(), custom]).unwrap();
        assert!(id.starts_with("imp:shop:"), "{id}");
        let id = derived_anonymous_id(std::slice::from_ref(&email)).unwrap();
        assert!(id.starts_with("imp:email:") && !id.contains("ada"), "{id}");
        assert_eq!(id.len(), "imp:email:".len() + 32);
        assert_eq!(derived_anonymous_id(&[email]).unwrap(), id, "deterministic");
        assert_eq!(derived_anonymous_id(&[]), None);
    }

    fn test_plan(received_at: Timestamp) -> Plan {
        let mapping: ImportMapping = serde_json::from_value(serde_json::json!({
            "kind": "identify",
            "columns": [{"column": "id", "target": "user_id"}],
        }))
        .unwrap();
        Plan::compile(
            &mapping,
            "crm",
            &trib_normalize::Options::default(),
            None,
            std::path::Path::new("f.ndjson"),
            "0123456789abcdef",
            received_at,
        )
        .unwrap()
    }

    #[track_caller]
    fn check_event_json(plan: &Plan, event: &Event) {
        let mut out = b"prefix".to_vec();
        plan.write_event_json(&mut out, event).unwrap();
        let expected = serde_json::to_vec(event).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out[6..]),
            String::from_utf8_lossy(&expected)
        );
        assert_eq!(&out[..6], b"prefix");
    }

    #[test]
    fn events_are_written_as_serde_json_writes_them() {
        use serde_json::json;
        let received_at: Timestamp = "2026-11-28T16:43:19.546276141Z".parse().unwrap();
        let plan = test_plan(received_at);
        let object = |value: Value| value.as_object().cloned().unwrap();
        let tricky = [
            "",
            "plain",
            "quote \" and backslash \\ and slash /",
            "controls \u{0}\u{1}\u{8}\t\n\u{b}\u{c}\r\u{1f} and del \u{7f}",
            "unicode é 田中 😀 \u{2028}\u{2029} \u{feff}",
            "a long plain string of more than thirty-two bytes, to cross chunks",
            "a long string of more than thirty-two bytes ending with a quote\"",
        ];
        let mut minimal = Event {
            message_id: "m1".to_owned(),
            source: "crm".to_owned(),
            kind: EventType::Identify,
            user_id: None,
            anonymous_id: None,
            event: None,
            name: None,
            category: None,
            group_id: None,
            previous_id: None,
            traits: None,
            properties: None,
            context: JsonMap::new(),
            integrations: JsonMap::new(),
            timestamp: received_at,
            original_timestamp: None,
            sent_at: None,
            received_at,
            extra: JsonMap::new(),
        };
        check_event_json(&plan, &minimal);
        minimal.traits = Some(JsonMap::new());
        minimal.properties = Some(JsonMap::new());
        minimal.timestamp = "2024-03-01T09:30:00Z".parse().unwrap();
        minimal.received_at = "2024-03-01T09:30:00.5+00:00".parse().unwrap();
        check_event_json(&plan, &minimal);
        // Every ASCII character alone in a string, a key and a value.
        for byte in 0_u8..=0x7f {
            let text = format!("a{}b", char::from(byte));
            minimal.user_id = Some(text.clone());
            minimal.traits = Some(object(json!({ &text: text })));
            check_event_json(&plan, &minimal);
        }
        for kind in EventType::ALL {
            for text in tricky {
                let event = Event {
                    message_id: text.to_owned(),
                    source: text.to_owned(),
                    kind,
                    user_id: Some(text.to_owned()),
                    anonymous_id: Some(format!("anon {text}")),
                    event: Some(text.to_owned()),
                    name: Some(text.to_owned()),
                    category: Some(text.to_owned()),
                    group_id: Some(text.to_owned()),
                    previous_id: Some(text.to_owned()),
                    traits: Some(object(json!({
                        text: text,
                        "numbers": [0, -1, 18446744073709551615_u64, -9223372036854775808_i64,
                            1.5, -0.0, 1e300, 2.5e-8, 0.1, 100000000000000000000.0],
                        "nested": {"a": {"b": [null, true, false, {}, []]}, text: {text: text}},
                        "empty": {},
                    }))),
                    properties: Some(object(json!({"revenue": 19.99, text: [text]}))),
                    context: object(json!({"externalIds": [{"id": text, "type": "email"}]})),
                    integrations: object(json!({"All": false, text: true})),
                    timestamp: received_at,
                    original_timestamp: Some(text.to_owned()),
                    sent_at: Some(text.to_owned()),
                    received_at: "2026-01-01T00:00:00Z".parse().unwrap(),
                    extra: object(json!({"channel": "server", text: 1, "messageId": "again"})),
                };
                check_event_json(&plan, &event);
            }
        }
    }

    #[test]
    fn raw_csv_rows_keep_order_extras_and_flag_bad_bytes() {
        let header = ["b".to_owned(), "a".to_owned()];
        let bytes = b"1\xff23";
        let ends = [1, 3, 4];
        let row = CsvRow {
            bytes,
            start: 0,
            ends: &ends,
        };
        assert_eq!(
            csv_row_json(&header, row),
            r#"{"b":"1","a":"�2","__extra__":["3"],"__invalid_utf8__":true}"#
        );
        assert_eq!(line_json(b" {\"a\": 1} "), "{\"a\": 1}");
        assert_eq!(line_json(b"{oops"), "\"{oops\"");
    }
}
