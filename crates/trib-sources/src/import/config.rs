//! The `[sources.import]` mapping: how the rows of a file become events.
//!
//! [`ImportMapping`] is the serde shape the config crate embeds (it owns the TOML file; this
//! module only says what the table means). [`ImportMapping::validate`] returns every problem
//! with its path relative to the table (`columns[2].target`), so the config crate can prefix
//! it (`sources[1].import.columns[2].target: ...`). The engine runs the same validation before
//! it opens the file, and then compiles the mapping into the private `Target`s used per row.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use trib_normalize::{OnError, Rule};

/// How the rows of an imported file become events: one `[sources.import]` table.
///
/// ```toml
/// [sources.import]
/// kind = "identify"
/// timestamp = { column = "updated_at", format = "%d/%m/%Y %H:%M" }
///
/// [[sources.import.columns]]
/// column = "Email"
/// target = "email"
/// normalize = "email"
///
/// [[sources.import.columns]]
/// column = "Plan"
/// target = "traits.plan"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportMapping {
    /// `format`: `"csv"` or `"ndjson"`. Default: from the file name, `.csv`/`.tsv` for CSV,
    /// `.ndjson`/`.jsonl` for NDJSON, each optionally followed by `.gz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<FileFormat>,
    /// `delimiter` (CSV only): the one ASCII character between fields, e.g. `";"`, `"\t"`,
    /// `"|"`. Default `","` (`"\t"` for a `.tsv` file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    /// `kind`: what each row becomes, `"identify"` (the default: a row describes a person, the
    /// mapped values become traits) or `"track"` (a row is something a person did, the mapped
    /// values become properties).
    #[serde(default)]
    pub kind: ImportKind,
    /// `event`: the event name of every row, required when `kind = "track"` and refused
    /// otherwise, e.g. `"Order Completed"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// `timestamp`: the column holding when the row happened. Without it every row gets the
    /// time the import started. A row whose timestamp is empty or does not parse is
    /// quarantined (`missing_value`, `invalid_value`; field `timestamp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<TimestampColumn>,
    /// `time_zone`: the IANA time zone (`"Europe/Paris"`) of date-times written without an
    /// offset, in the `timestamp` column and in `type = "timestamp"` columns. Default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// `columns`: one `[[sources.import.columns]]` table per imported column; columns of the
    /// file that are not listed are ignored. At least one must map to an identifier
    /// (`user_id`, `anonymous_id`, `email`, `phone`, `crm_id` or `id.<type>`).
    #[serde(default)]
    pub columns: Vec<ColumnMapping>,
}

/// The format of an imported file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// RFC 4180 CSV with a header row.
    Csv,
    /// One JSON object per line; blank lines are skipped.
    Ndjson,
}

impl FileFormat {
    /// Returns the config name (`csv`, `ndjson`).
    pub fn as_str(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Ndjson => "ndjson",
        }
    }
}

/// What each imported row becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportKind {
    /// An `identify` call: the row describes a person.
    #[default]
    Identify,
    /// A `track` call named by [`ImportMapping::event`]: the row is something a person did.
    Track,
}

/// The `timestamp = { column = "...", format = "..." }` of an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampColumn {
    /// `column`: the CSV header (exact) or NDJSON key (a dotted path reaches into objects).
    pub column: String,
    /// `format`: a `strftime` format as understood by jiff's `strptime` (`"%d/%m/%Y %H:%M"`).
    /// Without it RFC 3339 (`2024-03-01T09:30:00+01:00`), a date-time without offset
    /// (`2024-03-01 09:30:00`, taken in `time_zone`) and a date (`2024-03-01`, midnight) are
    /// accepted. A format without an offset is read in `time_zone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// One `[[sources.import.columns]]` table: where one column's value goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnMapping {
    /// `column`: the CSV header, exactly as written in the file, or the NDJSON key (a top-level
    /// key, else a dotted path such as `"address.city"`).
    pub column: String,
    /// `target`: where the value goes.
    ///
    /// * `user_id`, `anonymous_id`: the event's `userId` / `anonymousId`.
    /// * `email`, `phone`, `crm_id`, `id.<type>`: an entry of `context.externalIds`
    ///   (`{"id": ..., "type": "email", "collection": "users", "encoding": "none"}`), as Segment
    ///   writes them; for `identify` rows `email` and `phone` are also set as `traits.email` and
    ///   `traits.phone` unless a column maps to those traits.
    /// * `traits.<name>`, `properties.<name>`: a trait (any kind) or a property (`track` only);
    ///   a dotted name (`traits.address.city`) creates nested objects.
    pub target: String,
    /// `type`: how the text is read, `"string"` (default), `"integer"`, `"number"`,
    /// `"boolean"` (`true`/`false`, `yes`/`no`, `y`/`n`, `t`/`f`, `1`/`0`, any case), `"date"`
    /// (kept as `YYYY-MM-DD`), `"timestamp"` (kept as RFC 3339 in UTC) or `"json"` (the text is
    /// JSON, e.g. a products array). An empty or blank value counts as absent.
    #[serde(rename = "type", default)]
    pub value_type: ValueType,
    /// `format`: for `date` and `timestamp` columns, a `strftime` format as understood by jiff's
    /// `strptime` (`"%d/%m/%Y"`). Default: ISO 8601 (see [`TimestampColumn::format`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// `normalize`: a normalization rule for `string` columns (`"email"`, `"phone"`,
    /// `"country"`, `"currency"`, `"timestamp"`, `"name"`, `"trim"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<Rule>,
    /// `on_error`: what a value that does not parse as its `type` or fails its `normalize` rule
    /// does: `"reject"` (default) quarantines the row; `"drop"` imports the row without the
    /// field and counts it in the report's `fields_dropped`.
    #[serde(default)]
    pub on_error: OnError,
    /// `required`: a row whose value is missing, empty or dropped is quarantined
    /// (`missing_value`). Default `false`.
    #[serde(default)]
    pub required: bool,
}

/// The `type` of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// Text, kept as written (NDJSON numbers and booleans become their text).
    #[default]
    String,
    /// A whole number that fits in 64 bits.
    Integer,
    /// A finite decimal number (`19.99`, `-3`, `1e3`).
    Number,
    /// `true`/`false`, `yes`/`no`, `y`/`n`, `t`/`f`, `1`/`0`, any case.
    Boolean,
    /// A calendar date, kept as `YYYY-MM-DD`.
    Date,
    /// A point in time, kept as RFC 3339 in UTC (`2024-03-01T08:30:00Z`).
    Timestamp,
    /// JSON text (CSV) or any JSON value (NDJSON), kept as parsed.
    Json,
}

impl ValueType {
    fn as_str(self) -> &'static str {
        match self {
            ValueType::String => "string",
            ValueType::Integer => "integer",
            ValueType::Number => "number",
            ValueType::Boolean => "boolean",
            ValueType::Date => "date",
            ValueType::Timestamp => "timestamp",
            ValueType::Json => "json",
        }
    }
}

/// Where a column's value goes, parsed from [`ColumnMapping::target`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    UserId,
    AnonymousId,
    /// An entry of `context.externalIds` with this `type`.
    ExternalId(String),
    /// A path under `traits`.
    Trait(Vec<String>),
    /// A path under `properties`.
    Property(Vec<String>),
    /// A Segment consent category: `context.consent.categoryPreferences.<category>`, a
    /// boolean (`true` grants, `false` denies or withdraws).
    Consent(String),
}

impl Target {
    /// Parses a target, or says why it is not one.
    pub(crate) fn parse(target: &str) -> Result<Target, String> {
        match target {
            "user_id" => return Ok(Target::UserId),
            "anonymous_id" => return Ok(Target::AnonymousId),
            "email" | "phone" | "crm_id" => return Ok(Target::ExternalId(target.to_owned())),
            _ => {}
        }
        if let Some(category) = target.strip_prefix("consent.") {
            if !is_plain_name(category) {
                return Err(
                    "the consent category after `consent.` must be 1 to 64 characters from \
                     a-z, 0-9, `_` and `-`"
                        .to_owned(),
                );
            }
            return Ok(Target::Consent(category.to_owned()));
        }
        if let Some(id_type) = target.strip_prefix("id.") {
            if !is_plain_name(id_type) {
                return Err(
                    "the identifier type after `id.` must be 1 to 64 characters from \
                     a-z, 0-9, `_` and `-`"
                        .to_owned(),
                );
            }
            return Ok(Target::ExternalId(id_type.to_owned()));
        }
        let (root, rest) = target.split_once('.').unwrap_or((target, ""));
        let make: fn(Vec<String>) -> Target = match root {
            "traits" => Target::Trait,
            "properties" => Target::Property,
            _ => {
                return Err(
                    "must be user_id, anonymous_id, email, phone, crm_id, id.<type>, \
                     traits.<name>, properties.<name> or consent.<category>"
                        .to_owned(),
                );
            }
        };
        if rest.is_empty() {
            return Err(format!("`{root}` needs a field name: `{root}.<name>`"));
        }
        let path: Vec<String> = rest.split('.').map(str::to_owned).collect();
        if path.iter().any(|segment| segment.trim().is_empty()) {
            return Err(format!("`{target}` has an empty segment between dots"));
        }
        Ok(make(path))
    }

    /// Whether the value identifies a person (and so must be a string).
    pub(crate) fn is_identifier(&self) -> bool {
        matches!(
            self,
            Target::UserId | Target::AnonymousId | Target::ExternalId(_)
        )
    }
}

impl ImportMapping {
    /// Returns every problem of the mapping as `(path, message)`, the path relative to the
    /// `[sources.import]` table (`columns[2].target`, `delimiter`). Empty means valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let mut problem = |path: String, message: String| problems.push((path, message));

        if let Some(delimiter) = &self.delimiter {
            if self.format == Some(FileFormat::Ndjson) {
                problem(
                    "delimiter".to_owned(),
                    "only applies to CSV files, not with format = \"ndjson\"".to_owned(),
                );
            } else if let Err(message) = parse_delimiter(delimiter) {
                problem("delimiter".to_owned(), message);
            }
        }
        match (self.kind, &self.event) {
            (ImportKind::Track, None) => problem(
                "event".to_owned(),
                "is required when kind = \"track\"".to_owned(),
            ),
            (ImportKind::Track, Some(event)) if event.trim().is_empty() => {
                problem("event".to_owned(), "must not be empty".to_owned());
            }
            (ImportKind::Identify, Some(_)) => problem(
                "event".to_owned(),
                "only applies when kind = \"track\"".to_owned(),
            ),
            _ => {}
        }
        if let Some(timestamp) = &self.timestamp {
            if timestamp.column.is_empty() {
                problem(
                    "timestamp.column".to_owned(),
                    "must not be empty".to_owned(),
                );
            }
            if let Some(format) = &timestamp.format
                && let Err(message) = check_time_format(format)
            {
                problem("timestamp.format".to_owned(), message);
            }
        }
        if let Some(time_zone) = &self.time_zone
            && jiff::tz::TimeZone::get(time_zone).is_err()
        {
            problem(
                "time_zone".to_owned(),
                format!(
                    "unknown time zone `{time_zone}`, expected an IANA name such as \"Europe/Paris\""
                ),
            );
        }
        if self.columns.is_empty() {
            problem(
                "columns".to_owned(),
                "at least one column must be mapped".to_owned(),
            );
        }

        let mut identifiers = 0;
        // Target → the first column index using it, to find duplicates and prefix conflicts.
        let mut data_paths: BTreeMap<(bool, Vec<String>), usize> = BTreeMap::new();
        let mut external_ids: BTreeMap<String, usize> = BTreeMap::new();
        for (index, column) in self.columns.iter().enumerate() {
            let at = |field: &str| format!("columns[{index}].{field}");
            if column.column.is_empty() {
                problem(at("column"), "must not be empty".to_owned());
            }
            let target = match Target::parse(&column.target) {
                Ok(target) => target,
                Err(message) => {
                    problem(at("target"), message);
                    continue;
                }
            };
            match &target {
                Target::Consent(category) => {
                    let key = format!("consent.{category}");
                    if let Some(first) = external_ids.insert(key.clone(), index) {
                        problem(
                            at("target"),
                            format!("`{key}` is already the target of columns[{first}]"),
                        );
                    }
                }
                Target::UserId | Target::AnonymousId => {
                    identifiers += 1;
                    let name = column.target.as_str();
                    if let Some(first) = external_ids.insert(name.to_owned(), index) {
                        problem(
                            at("target"),
                            format!("`{name}` is already the target of columns[{first}]"),
                        );
                    }
                }
                Target::ExternalId(id_type) => {
                    identifiers += 1;
                    if let Some(first) = external_ids.insert(id_type.clone(), index) {
                        problem(
                            at("target"),
                            format!(
                                "the identifier type `{id_type}` is already the target of \
                                 columns[{first}]"
                            ),
                        );
                    }
                }
                Target::Trait(path) | Target::Property(path) => {
                    let is_trait = matches!(target, Target::Trait(_));
                    if !is_trait && self.kind == ImportKind::Identify {
                        problem(
                            at("target"),
                            "properties are only kept for kind = \"track\"; use traits.<name>"
                                .to_owned(),
                        );
                    }
                    for (other_key, other_index) in &data_paths {
                        let (other_is_trait, other_path) = other_key;
                        if *other_is_trait != is_trait {
                            continue;
                        }
                        let shorter = path.len().min(other_path.len());
                        if path[..shorter] == other_path[..shorter] {
                            let message = if path.len() == other_path.len() {
                                format!(
                                    "`{}` is already the target of columns[{other_index}]",
                                    column.target
                                )
                            } else {
                                format!(
                                    "`{}` overlaps the target of columns[{other_index}] \
                                     (one is inside the other)",
                                    column.target
                                )
                            };
                            problem(at("target"), message);
                            break;
                        }
                    }
                    data_paths.insert((is_trait, path.clone()), index);
                }
            }
            if target.is_identifier()
                && !matches!(column.value_type, ValueType::String | ValueType::Integer)
            {
                problem(
                    at("type"),
                    format!(
                        "an identifier must be of type \"string\" or \"integer\", not \"{}\"",
                        column.value_type.as_str()
                    ),
                );
            }
            match (&column.format, column.value_type) {
                (Some(format), ValueType::Date | ValueType::Timestamp) => {
                    if let Err(message) = check_time_format(format) {
                        problem(at("format"), message);
                    }
                }
                (Some(_), other) => problem(
                    at("format"),
                    format!(
                        "only applies to type = \"date\" or \"timestamp\", not \"{}\"",
                        other.as_str()
                    ),
                ),
                (None, _) => {}
            }
            if column.normalize.is_some() && column.value_type != ValueType::String {
                problem(
                    at("normalize"),
                    format!(
                        "only applies to type = \"string\", not \"{}\"",
                        column.value_type.as_str()
                    ),
                );
            }
        }
        if identifiers == 0 && !self.columns.is_empty() {
            problem(
                "columns".to_owned(),
                "no column maps to an identifier: map one to user_id, anonymous_id, email, \
                 phone, crm_id or id.<type>"
                    .to_owned(),
            );
        }
        problems
    }
}

/// Reads a `delimiter` value: exactly one ASCII character that can separate fields.
pub(crate) fn parse_delimiter(delimiter: &str) -> Result<u8, String> {
    match delimiter.as_bytes() {
        [byte] if byte.is_ascii() && !matches!(byte, b'"' | b'\n' | b'\r') => Ok(*byte),
        [b'"' | b'\n' | b'\r'] => Err("must not be a quote or a line break".to_owned()),
        _ => Err(format!(
            "must be exactly one ASCII character such as \",\", \";\", \"\\t\" or \"|\", not {delimiter:?}"
        )),
    }
}

/// Checks a `strftime` format by formatting a fixed time with it.
fn check_time_format(format: &str) -> Result<(), String> {
    if format.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let sample = jiff::civil::date(2024, 3, 1)
        .at(9, 30, 0, 0)
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .map_err(|error| format!("cannot be checked: {error}"))?;
    jiff::fmt::strtime::format(format, &sample)
        .map(|_| ())
        .map_err(|error| format!("invalid strftime format: {error}"))
}

/// `a-z`, `0-9`, `_`, `-`, 1 to 64 characters: identifier types end up in stored ids.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_' || byte == b'-'
        })
}
