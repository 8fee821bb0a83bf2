//! The static check: what a template reads, checked against the trait schema, the identifier
//! types, the event schemas and the fields its purpose allows, before anything is rendered.
//!
//! Each problem is a [`Diagnostic`] with the template part, line and column:
//! - `syntax`: Liquid that does not parse, or unclosed markup;
//! - `sandbox`: `include` or `render` (templates never read other files);
//! - `unknown_purpose`: the template's purpose is not declared in `[[privacy.purposes]]`;
//! - `unknown_variable`: a variable that is not a trait of the schema, an identifier type, an
//!   event of the registry or a name the template declares;
//! - `field_not_allowed`: a known field the purpose's `fields` do not allow;
//! - `missing_default`: an optional field printed without a `default` filter (an error or a
//!   warning, by `[render] missing_default`);
//! - `unknown_filter`: a filter Liquid does not have;
//! - `raw_personal_data` (error): `raw` on an output of the HTML/MJML body that reads the
//!   person's data (`profile.*` other than `profile.id`, `events.*`), directly or through a
//!   local assigned or looped from it: HTML from a profile never reaches the email unescaped.
//!   `raw` on template-defined values (literals, `capture`s, whose outputs are escaped) is fine;
//! - `unsafe_url` (warning): a URL attribute of the body (`href`, `src`, ... see
//!   [`crate::url`]) starts with the person's data, so the data chooses the scheme; at render
//!   time such a value is replaced unless it is http(s), mailto, tel, cid or scheme-less.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::scan::{self, MarkupKind, Reference, Scan, Use};
use crate::source::TemplateSource;
use crate::vocabulary::{Allowance, PurposeFields, Vocabulary};

/// Filters templates may use: Liquid's standard filters, and `raw`, which turns the HTML
/// part's automatic escaping off for one output.
pub const FILTERS: &[&str] = &[
    "abs",
    "append",
    "at_least",
    "at_most",
    "capitalize",
    "ceil",
    "compact",
    "concat",
    "date",
    "default",
    "divided_by",
    "downcase",
    "escape",
    "escape_once",
    "first",
    "floor",
    "join",
    "last",
    "lstrip",
    "map",
    "minus",
    "modulo",
    "newline_to_br",
    "plus",
    "prepend",
    "remove",
    "remove_first",
    "replace",
    "replace_first",
    "reverse",
    "round",
    "rstrip",
    "size",
    "slice",
    "sort",
    "sort_natural",
    "split",
    "strip",
    "strip_html",
    "strip_newlines",
    "times",
    "truncate",
    "truncatewords",
    "uniq",
    "upcase",
    "url_decode",
    "url_encode",
    "where",
    "raw",
];

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The template is refused.
    Error,
    /// Reported; the template still compiles.
    Warning,
}

/// The kind of a [`Diagnostic`], with a stable snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiagnosticKind {
    Syntax,
    Sandbox,
    UnknownPurpose,
    UnknownVariable,
    FieldNotAllowed,
    MissingDefault,
    UnknownFilter,
    RawPersonalData,
    UnsafeUrl,
}

/// One problem of a template, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub template: String,
    /// `subject`, `preheader`, `html`, `mjml`, `text` or `purpose`.
    pub part: &'static str,
    /// 1-based line and column (in characters) within the part.
    pub line: usize,
    pub column: usize,
    pub kind: DiagnosticKind,
    pub severity: Severity,
    pub message: String,
}

/// Options of the static check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    /// The severity of `missing_default` (`[render] missing_default`, default error).
    pub missing_default: Severity,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            missing_default: Severity::Error,
        }
    }
}

impl DiagnosticKind {
    /// The stable snake_case name.
    pub fn code(self) -> &'static str {
        match self {
            DiagnosticKind::Syntax => "syntax",
            DiagnosticKind::Sandbox => "sandbox",
            DiagnosticKind::UnknownPurpose => "unknown_purpose",
            DiagnosticKind::UnknownVariable => "unknown_variable",
            DiagnosticKind::FieldNotAllowed => "field_not_allowed",
            DiagnosticKind::MissingDefault => "missing_default",
            DiagnosticKind::UnknownFilter => "unknown_filter",
            DiagnosticKind::RawPersonalData => "raw_personal_data",
            DiagnosticKind::UnsafeUrl => "unsafe_url",
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{} {}:{}:{}: {severity}[{}]: {}",
            self.template,
            self.part,
            self.line,
            self.column,
            self.kind.code(),
            self.message
        )
    }
}

/// Checks a template; returns every problem found (errors and warnings), in part order.
pub fn check(
    source: &TemplateSource,
    vocabulary: &Vocabulary,
    fields: &PurposeFields,
    options: CheckOptions,
) -> Vec<Diagnostic> {
    let mut checker = Checker {
        template: source,
        vocabulary,
        fields,
        options,
        diagnostics: Vec::new(),
    };
    if !fields.is_declared(&source.purpose) {
        checker.diagnostics.push(Diagnostic {
            template: source.name.clone(),
            part: "purpose",
            line: 1,
            column: 1,
            kind: DiagnosticKind::UnknownPurpose,
            severity: Severity::Error,
            message: format!(
                "purpose {:?} is not declared in [[privacy.purposes]]",
                source.purpose
            ),
        });
    }
    for (part, text) in parts(source) {
        checker.part(part, text);
    }
    checker.diagnostics
}

/// The Liquid parts of a template with their names.
pub(crate) fn parts(source: &TemplateSource) -> Vec<(&'static str, &str)> {
    let mut parts = vec![
        ("subject", source.subject.as_str()),
        ("preheader", source.preheader.as_str()),
        (source.body.part_name(), source.body.source()),
    ];
    if let Some(text) = &source.text {
        parts.push(("text", text.as_str()));
    }
    parts
}

struct Checker<'a> {
    template: &'a TemplateSource,
    vocabulary: &'a Vocabulary,
    fields: &'a PurposeFields,
    options: CheckOptions,
    diagnostics: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn push(
        &mut self,
        part: &'static str,
        text: &str,
        offset: usize,
        kind: DiagnosticKind,
        message: String,
    ) {
        let (line, column) = scan::line_column(text, offset);
        let severity = match kind {
            DiagnosticKind::MissingDefault => self.options.missing_default,
            DiagnosticKind::UnsafeUrl => Severity::Warning,
            _ => Severity::Error,
        };
        self.diagnostics.push(Diagnostic {
            template: self.template.name.clone(),
            part,
            line,
            column,
            kind,
            severity,
            message,
        });
    }

    fn part(&mut self, part: &'static str, text: &str) {
        let scanned = match scan::scan(text) {
            Ok(scanned) => scanned,
            Err(error) => {
                self.push(
                    part,
                    text,
                    error.offset,
                    DiagnosticKind::Syntax,
                    error.message,
                );
                return;
            }
        };
        if let Err(error) = crate::compile::parser().parse(&crate::compile::rewrite_outputs(
            text,
            &scanned,
            false,
            &[],
        )) {
            let message = error.to_string();
            // Unknown filters are reported below with their position.
            if message.contains("Unknown filter") {
                return self.after_parse(part, text, &scanned);
            }
            let (line, column) = liquid_position(&message).unwrap_or((1, 1));
            self.diagnostics.push(Diagnostic {
                template: self.template.name.clone(),
                part,
                line,
                column,
                kind: DiagnosticKind::Syntax,
                severity: Severity::Error,
                message: first_line_of_liquid_error(&message),
            });
        }
        self.after_parse(part, text, &scanned);
    }

    fn after_parse(&mut self, part: &'static str, text: &str, scanned: &Scan) {
        for (tag, offset) in &scanned.tags {
            let rest = tag_rest(text, *offset + tag.len());
            if (tag == "for" || tag == "tablerow")
                && let Some(problem) = loop_bound_problem(rest)
            {
                self.push(part, text, *offset, DiagnosticKind::Sandbox, problem);
            }
            if tag == "cycle" && !only_literals(rest) {
                self.push(
                    part,
                    text,
                    *offset,
                    DiagnosticKind::Sandbox,
                    "`cycle` takes string literals only (it prints its values without escaping)"
                        .to_owned(),
                );
            }
            if tag == "include" || tag == "render" {
                self.push(
                    part,
                    text,
                    *offset,
                    DiagnosticKind::Sandbox,
                    format!(
                        "`{tag}` is not available: templates cannot read other templates or files"
                    ),
                );
            }
        }
        for filter in &scanned.filters {
            if !FILTERS.contains(&filter.name.as_str()) {
                self.push(
                    part,
                    text,
                    filter.offset,
                    DiagnosticKind::UnknownFilter,
                    format!("unknown filter `{}`", filter.name),
                );
            }
        }
        for reference in &scanned.references {
            if let Some((kind, message)) = self.reference(scanned, reference) {
                self.push(part, text, reference.offset, kind, message);
            }
        }
        if part == self.template.body.part_name() {
            self.personal_data_in_body(part, text, scanned);
        }
    }

    /// `raw` on the person's data, and URL attributes that start with it (body part only:
    /// the other parts are not HTML).
    fn personal_data_in_body(&mut self, part: &'static str, text: &str, scanned: &Scan) {
        let tainted = tainted_locals(scanned);
        for markup in &scanned.markups {
            if markup.kind != MarkupKind::Output {
                continue;
            }
            let Some(raw) = scanned
                .filters
                .iter()
                .find(|filter| filter.name == "raw" && markup.inner.contains(&filter.offset))
            else {
                continue;
            };
            if let Some(field) = scanned
                .references
                .iter()
                .filter(|reference| markup.inner.contains(&reference.offset))
                .find_map(|reference| personal_field(reference, &tainted))
            {
                self.push(
                    part,
                    text,
                    raw.offset,
                    DiagnosticKind::RawPersonalData,
                    format!(
                        "`raw` would print {field} without escaping: a person's data is always escaped (remove `raw`)"
                    ),
                );
            }
        }
        for site in crate::url::url_sites(text, scanned) {
            let markup = &scanned.markups[site.markup];
            if let Some((reference, field)) = scanned
                .references
                .iter()
                .filter(|reference| markup.inner.contains(&reference.offset))
                .find_map(|reference| Some((reference, personal_field(reference, &tainted)?)))
            {
                self.push(
                    part,
                    text,
                    reference.offset,
                    DiagnosticKind::UnsafeUrl,
                    format!(
                        "`{}` starts with {field}, so the person's data chooses the link's scheme; start it with a literal such as `https://example.com/` (at render time, a value that is not http(s), mailto, tel, cid or relative becomes `{}`)",
                        site.attribute,
                        crate::url::BLOCKED_URL
                    ),
                );
            }
        }
    }

    /// The problem of one variable reference, if any.
    fn reference(&self, scanned: &Scan, reference: &Reference) -> Option<(DiagnosticKind, String)> {
        use DiagnosticKind::{FieldNotAllowed, MissingDefault, UnknownVariable};
        let path = &reference.path;
        let shown = path.join(".");
        let root = path.first()?;
        if scanned.locals.contains(root) {
            return None;
        }
        let purpose = &self.template.purpose;
        let not_allowed = |what: String| {
            Some((
                FieldNotAllowed,
                format!("{what} is not among the fields purpose `{purpose}` allows"),
            ))
        };
        let needs_default =
            reference.usage == Use::Output && !reference.has_default && !reference.guarded;
        let missing_default = || {
            Some((
                MissingDefault,
                format!("`{shown}` may be missing: add a fallback, such as `| default: \"...\"`"),
            ))
        };
        match root.as_str() {
            "profile" => {
                let Some(second) = path.get(1) else {
                    return Some((
                        UnknownVariable,
                        "name a field: profile.traits.NAME, profile.id or profile.IDENTIFIER_TYPE"
                            .to_owned(),
                    ));
                };
                if second == "id" {
                    return (path.len() > 2)
                        .then(|| (UnknownVariable, format!("unknown variable `{shown}`")));
                }
                if second == "traits" {
                    let Some(name) = path.get(2) else {
                        return Some((
                            UnknownVariable,
                            "name a trait: profile.traits.NAME".to_owned(),
                        ));
                    };
                    let explicit = self.fields.explicit(purpose);
                    let schema = self.vocabulary.trait_schema(name);
                    let declared = explicit.is_some_and(|fields| fields.contains(name));
                    if schema.is_none() && !declared {
                        return Some((
                            UnknownVariable,
                            format!("`{shown}`: trait `{name}` is not in the trait schema"),
                        ));
                    }
                    if self.fields.trait_allowed(self.vocabulary, purpose, name)
                        == Allowance::NotAllowed
                    {
                        return not_allowed(format!("trait `{name}`"));
                    }
                    if let Some(problem) =
                        schema.and_then(|schema| sub_path_problem(schema, &path[3..]))
                    {
                        return Some((UnknownVariable, format!("`{shown}`: {problem}")));
                    }
                    if needs_default && !self.vocabulary.required_traits.contains(name) {
                        return missing_default();
                    }
                    return None;
                }
                if self.vocabulary.identifier_types.contains(second) {
                    if self.fields.identifier_allowed(purpose, second) == Allowance::NotAllowed {
                        return not_allowed(format!("identifier `{second}`"));
                    }
                    if path.len() > 2 {
                        return Some((UnknownVariable, format!("unknown variable `{shown}`")));
                    }
                    return needs_default.then(missing_default).flatten();
                }
                Some((
                    UnknownVariable,
                    format!(
                        "`{shown}`: `{second}` is not a field of profile (traits, id, or an identifier type)"
                    ),
                ))
            }
            "events" => match path.get(1).map(String::as_str) {
                Some("recent") => {
                    if self.fields.event_allowed(purpose, None) == Allowance::NotAllowed {
                        return not_allowed("events".to_owned());
                    }
                    None
                }
                Some("last") => {
                    let Some(key) = path.get(2) else {
                        return Some((
                            UnknownVariable,
                            "name an event: events.last.EVENT_KEY".to_owned(),
                        ));
                    };
                    let Some((_, schema)) = self.vocabulary.events.get(key) else {
                        return Some((
                            UnknownVariable,
                            format!("`{shown}`: no event schema has the key `{key}`"),
                        ));
                    };
                    if self.fields.event_allowed(purpose, Some(key)) == Allowance::NotAllowed {
                        return not_allowed(format!("event `{key}`"));
                    }
                    match path.get(3).map(String::as_str) {
                        None | Some("name" | "timestamp") if path.len() <= 4 => {}
                        Some("properties") => {
                            if let Some(problem) = sub_path_problem(schema, &path[4..]) {
                                return Some((UnknownVariable, format!("`{shown}`: {problem}")));
                            }
                        }
                        _ => {
                            return Some((
                                UnknownVariable,
                                format!("`{shown}`: an event has name, timestamp and properties"),
                            ));
                        }
                    }
                    needs_default.then(missing_default).flatten()
                }
                _ => Some((
                    UnknownVariable,
                    "use events.recent or events.last.EVENT_KEY".to_owned(),
                )),
            },
            _ => Some((UnknownVariable, format!("unknown variable `{shown}`"))),
        }
    }
}

/// The person's field a reference reads, shown for a message (`` `profile.traits.bio` ``, or
/// `` `bio` (from `profile.traits.bio`) `` for a local): `profile.*` but `profile.id` (an id
/// Tributary made) and `events.*`, directly or through a tainted local.
fn personal_field(reference: &Reference, tainted: &BTreeMap<String, String>) -> Option<String> {
    let root = reference.path.first()?;
    let shown = reference.path.join(".");
    if let Some(source) = tainted.get(root) {
        return Some(format!("`{shown}` (from `{source}`)"));
    }
    match (root.as_str(), reference.path.get(1).map(String::as_str)) {
        ("profile", Some("id")) => None,
        ("profile" | "events", _) => Some(format!("`{shown}`")),
        _ => None,
    }
}

/// The locals that hold the person's data, each with the field it comes from: assigned or
/// looped (`for`, `tablerow`) from an expression that reads it, directly or through another
/// such local, wherever the definition stands (a loop may run it before a use). A `capture`
/// holds rendered body output, in which the person's data is already escaped, so it is not
/// tainted.
fn tainted_locals(scanned: &Scan) -> BTreeMap<String, String> {
    let mut tainted: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let mut changed = false;
        for (local, reads) in &scanned.definitions {
            if tainted.contains_key(local) {
                continue;
            }
            let source =
                scanned.references[reads.clone()]
                    .iter()
                    .find_map(|reference| match tainted.get(reference.path.first()?) {
                        Some(source) => Some(source.clone()),
                        None => personal_field(reference, &BTreeMap::new())
                            .map(|_| reference.path.join(".")),
                    });
            if let Some(source) = source {
                tainted.insert(local.clone(), source);
                changed = true;
            }
        }
        if !changed {
            return tainted;
        }
    }
}

/// Whether `segments` name something the schema can hold; `None` when fine or not checkable.
fn sub_path_problem(schema: &Value, segments: &[String]) -> Option<String> {
    let mut node = schema;
    for segment in segments {
        if matches!(segment.as_str(), "size" | "first" | "last") {
            return None;
        }
        if segment.starts_with('[') {
            node = node.get("items")?;
            continue;
        }
        let properties = node.get("properties")?.as_object()?;
        match properties.get(segment) {
            Some(next) => node = next,
            None => return Some(format!("the schema has no property `{segment}` here")),
        }
    }
    None
}

/// `L:C` from liquid's ` --> L:C` error header.
fn liquid_position(message: &str) -> Option<(usize, usize)> {
    let after = &message[message.find("--> ")? + 4..];
    let end = after.find(|c: char| !(c.is_ascii_digit() || c == ':'))?;
    let (line, column) = after[..end].split_once(':')?;
    Some((line.parse().ok()?, column.parse().ok()?))
}

fn first_line_of_liquid_error(message: &str) -> String {
    let useful: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !line.starts_with("liquid:")
                && !line.starts_with('|')
                && !line.starts_with("-->")
                && !line.chars().next().is_some_and(|c| c.is_ascii_digit())
        })
        .collect();
    let text = useful.join(" ");
    let text = text.trim_start_matches("= ").to_owned();
    if text.is_empty() {
        message
            .trim_start_matches("liquid: ")
            .lines()
            .next()
            .unwrap_or("")
            .to_owned()
    } else {
        text
    }
}

/// The most iterations a literal range or a `limit:` may ask for. Liquid builds a range as a
/// list before looping, so `(1..2000000000)` would exhaust memory before any time limit
/// applies; ranges are therefore bounded at check (and compile) time.
pub const MAX_LOOP_RANGE: i64 = 1_000;

/// The text of a tag after its name, up to its closing `%}`.
fn tag_rest(text: &str, after_name: usize) -> &str {
    let rest = text.get(after_name..).unwrap_or_default();
    rest.find("%}").map_or(rest, |end| &rest[..end])
}

/// Why a `for`/`tablerow` loop's range or limit is not acceptable, if it is not.
fn loop_bound_problem(rest: &str) -> Option<String> {
    if let (Some(open), Some(close)) = (rest.find('('), rest.rfind(')'))
        && open < close
        && let Some((low, high)) = rest[open + 1..close].split_once("..")
    {
        let bounds = (
            low.trim().parse::<i64>().ok(),
            high.trim().parse::<i64>().ok(),
        );
        return match bounds {
            (Some(low), Some(high)) if high.saturating_sub(low) < MAX_LOOP_RANGE => None,
            (Some(_), Some(_)) => Some(format!(
                "a range may span at most {MAX_LOOP_RANGE} values"
            )),
            _ => Some(
                "a range's ends must be number literals (a range built from data could exhaust memory)"
                    .to_owned(),
            ),
        };
    }
    if let Some(at) = rest.find("limit:") {
        let value: String = rest[at + 6..]
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        match value.parse::<i64>() {
            Ok(limit) if limit <= MAX_LOOP_RANGE => {}
            _ => {
                return Some(format!(
                    "`limit:` must be a number literal of at most {MAX_LOOP_RANGE}"
                ));
            }
        }
    }
    None
}

/// Whether a tag's arguments are string literals only (quotes, commas, colons, spaces).
fn only_literals(rest: &str) -> bool {
    let mut quote: Option<char> = None;
    for c in rest.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, c) if c.is_whitespace() || c == ',' || c == ':' || c == '-' => {}
            (None, _) => return false,
        }
    }
    quote.is_none()
}

#[cfg(test)]
mod bound_tests {
    use super::{loop_bound_problem, only_literals};

    #[test]
    fn loops_over_data_or_small_literal_ranges_pass_and_huge_ones_are_refused() {
        assert_eq!(
            loop_bound_problem(" product in events.order_completed.products "),
            None
        );
        assert_eq!(loop_bound_problem(" i in (1..3) "), None);
        assert_eq!(loop_bound_problem(" p in products limit: 3 "), None);
        assert!(loop_bound_problem(" i in (1..2000000000) ").is_some());
        assert!(loop_bound_problem(" i in (1..profile.traits.n) ").is_some());
        assert!(loop_bound_problem(" p in products limit: 1000000 ").is_some());
        assert!(loop_bound_problem(" p in products limit: n ").is_some());
    }

    #[test]
    fn cycle_takes_string_literals_only() {
        assert!(only_literals(" 'odd', 'even' "));
        assert!(only_literals(" \"group\": 'a', 'b' "));
        assert!(!only_literals(" profile.traits.firstName, 'x' "));
    }
}
