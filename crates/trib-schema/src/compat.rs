//! Backward compatibility between two JSON Schema 2020-12 documents.
//!
//! [`is_backward_compatible`]`(old, new)` answers "does `new` accept every value `old`
//! accepts?" It is **sound and conservative**: `Ok(())` is a proof; an `Err` lists what could
//! break, and reasons that start with "cannot prove" mark constructs the checker does not
//! reason about (it never guesses "compatible").
//!
//! How it proves `old ⊆ new`, keyword by keyword of `new`:
//!
//! * Annotations (`title`, `description`, `examples`, `self`, unknown keywords...) constrain
//!   nothing and are ignored. Constraints `old` has and `new` lacks are loosenings: fine.
//! * `type` may widen (`integer` → `number`, `string` → `["string", "null"]`), not narrow.
//!   The other keywords are checked only for the types both schemas accept: a `maxLength` on
//!   a field that was never a string breaks nothing.
//! * `enum`/`const`: when `old` has one, its values are few; each value `old` accepts is run
//!   through the compiled `new` schema, which is exact. Otherwise `new` may not add one.
//! * Numbers: `minimum`/`exclusiveMinimum`/`maximum`/`exclusiveMaximum` may only loosen (with
//!   integer-aware bounds: `exclusiveMinimum: 0` on integers equals `minimum: 1`);
//!   `multipleOf` only to a divisor of the old one.
//! * Strings: `minLength`/`maxLength` may only loosen; `pattern` and `format` may be removed but
//!   not added or changed (whether one regex contains another is not decided here).
//! * Arrays: `prefixItems`/`items` recursively, position by position; `minItems`/`maxItems`
//!   loosen only; `uniqueItems` may not be added.
//! * Objects: `required` may not gain names; `properties` that exist in both are compared
//!   recursively. A property that is **new** in `new` is checked against what `old` allowed
//!   under that name: `old`'s `additionalProperties` (absent means `true`). If `old` had
//!   `additionalProperties: false`, old data never carried the property and any definition is
//!   an ADDITION; otherwise old data may carry it with any value, and the new property is
//!   compatible only if it accepts all of them (in practice: declare the old schema closed).
//!   `additionalProperties` may go from `false` to `true` or a schema, not the other way; a
//!   property removed from `properties` falls under `new`'s `additionalProperties`.
//!   `patternProperties`, `propertyNames`, `dependentRequired`, `min/maxProperties` are
//!   compared conservatively (see the code).
//! * Applicators: `allOf` in `new` is proven branch by branch; `anyOf` in `new` needs one
//!   branch that accepts all of `old`, or every `old` `anyOf`/`oneOf` branch covered by some new
//!   branch. `oneOf`, `not`, `if`/`then`/`else`, `dependentSchemas`, `contains`,
//!   `unevaluated*` next to applicators, and the legacy `dependencies`/`additionalItems` are
//!   accepted only when unchanged from `old` ("cannot prove `oneOf` compatible" otherwise).
//! * `$ref` is followed when it is a local JSON pointer (`#`, `#/$defs/...`); recursive
//!   schemas are handled by assuming a pair of nodes compatible while it is being proven
//!   (coinduction, sound for the finite values JSON can hold). Remote references, `$dynamicRef`
//!   and nested `$id`s are reported as "cannot prove".
//!
//! Limits: numbers are compared as `f64` (integers above 2^53 may be misjudged), and
//! equivalent but differently written schemas (a regex rewritten, an `anyOf` reordered into
//! `oneOf`) are reported as incompatible: the remedy is a MODEL bump, which is always allowed.

use std::collections::HashSet;
use std::fmt;

use serde_json::{Map, Value};

use crate::datapath::{push_index, with_key};
use crate::document::JSON_SCHEMA_2020_12;

/// One way in which a new schema could reject data that the old one accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Incompatibility {
    /// Where in the validated object, JSONPath-like: `$` is the `properties`/`traits` object,
    /// `$.products[*].price` a field of every array item, `$.*` any property not listed.
    pub path: String,
    /// What changed, in lowercase; starts with "cannot prove" when the checker could not
    /// decide rather than found a counterexample.
    pub reason: String,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.path, self.reason)
    }
}

/// Checks that every value `old` accepts is also accepted by `new`.
///
/// Both are JSON Schema 2020-12 documents (roots, so local `$ref`s resolve). Returns every
/// incompatibility found, deduplicated, in discovery order.
pub fn is_backward_compatible(old: &Value, new: &Value) -> Result<(), Vec<Incompatibility>> {
    let mut checker = Checker::new(old, new);
    let found = checker.check(old, new, ROOT);
    let mut seen = HashSet::new();
    let unique: Vec<Incompatibility> = found
        .into_iter()
        .filter(|incompatibility| seen.insert(incompatibility.clone()))
        .collect();
    if unique.is_empty() {
        Ok(())
    } else {
        Err(unique)
    }
}

/// Summarizes reasons for an error message: the count and the first three.
pub(crate) fn summarize(reasons: &[Incompatibility]) -> String {
    let shown: Vec<String> = reasons.iter().take(3).map(ToString::to_string).collect();
    let mut summary = format!(
        "{} problem{}: {}",
        reasons.len(),
        if reasons.len() == 1 { "" } else { "s" },
        shown.join("; ")
    );
    if reasons.len() > 3 {
        summary.push_str(&format!("; and {} more", reasons.len() - 3));
    }
    summary
}

const ROOT: &str = "$";

/// Deeper than this, comparison gives up ("cannot prove").
const MAX_DEPTH: usize = 64;

/// Node comparisons allowed per call; `anyOf` inside `anyOf` can otherwise explode.
const MAX_STEPS: usize = 100_000;

static TRUE_SCHEMA: Value = Value::Bool(true);

/// Keywords that can make a schema reject a value (2020-12 vocabularies, plus the legacy ones
/// the `jsonschema` crate still enforces under 2020-12). Everything else is an annotation.
const CONSTRAINING: &[&str] = &[
    "$ref",
    "$dynamicRef",
    "$recursiveRef",
    "prefixItems",
    "items",
    "additionalItems",
    "contains",
    "minContains",
    "maxContains",
    "additionalProperties",
    "properties",
    "patternProperties",
    "dependentSchemas",
    "dependencies",
    "propertyNames",
    "if",
    "then",
    "else",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "unevaluatedItems",
    "unevaluatedProperties",
    "type",
    "const",
    "enum",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxProperties",
    "minProperties",
    "required",
    "dependentRequired",
    "format",
];

/// Keywords whose result depends on other subschemas at the same level, which makes
/// `unevaluated*` impossible to read locally.
const IN_PLACE_APPLICATORS: &[&str] = &[
    "$ref",
    "$dynamicRef",
    "$recursiveRef",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "dependencies",
];

/// Keyword groups accepted in `new` only when `old` has exactly the same values.
const ONLY_IF_UNCHANGED: &[&[&str]] = &[
    &["oneOf"],
    &["not"],
    &["if", "then", "else"],
    &["dependentSchemas"],
    &["dependencies"],
    &["additionalItems"],
    &["contains", "minContains", "maxContains"],
    &["$dynamicRef"],
    &["$recursiveRef"],
];

// JSON types as bits. Numbers are split into integers and the rest so that `integer` →
// `number` is a widening and the reverse a narrowing.
const NULL: u8 = 1;
const BOOLEAN: u8 = 2;
const OBJECT: u8 = 4;
const ARRAY: u8 = 8;
const STRING: u8 = 16;
const INTEGER: u8 = 32;
const FRACTION: u8 = 64;
const NUMBER: u8 = INTEGER | FRACTION;
const ANY_TYPE: u8 = NULL | BOOLEAN | OBJECT | ARRAY | STRING | NUMBER;

/// What is being proven about a pair of nodes: kept apart so that assuming one never
/// discharges the other.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Obligation {
    /// `old ⊆ new`.
    Whole,
    /// `old ⊆` the local keywords of `new`.
    Local,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Old,
    New,
}

/// What the references of one root look like, computed once.
struct RefProfile {
    /// No nested `$id`, `$anchor` or `$dynamicAnchor`: `#/...` pointers resolve against the root.
    pointers_resolve: bool,
    /// Every `$ref` points into `$defs`/`definitions` and nothing uses `$dynamicRef`: a subschema
    /// can be compiled alone next to a copy of the definitions.
    only_definitions: bool,
}

struct Checker<'a> {
    old_root: &'a Value,
    new_root: &'a Value,
    old_refs: RefProfile,
    new_refs: RefProfile,
    /// The roots' `$defs` and `definitions` are equal, so a `$ref` means the same in both.
    same_definitions: bool,
    /// (old node, new node) pairs being proven; met again, they are assumed (coinduction).
    in_progress: HashSet<(usize, usize, Obligation)>,
    depth: usize,
    steps: usize,
}

#[derive(Clone, Copy)]
struct Bound {
    value: f64,
    exclusive: bool,
}

impl<'a> Checker<'a> {
    fn new(old_root: &'a Value, new_root: &'a Value) -> Self {
        let definitions =
            |root: &Value| (root.get("$defs").cloned(), root.get("definitions").cloned());
        Self {
            old_root,
            new_root,
            old_refs: ref_profile(old_root),
            new_refs: ref_profile(new_root),
            same_definitions: definitions(old_root) == definitions(new_root),
            in_progress: HashSet::new(),
            depth: 0,
            steps: 0,
        }
    }

    /// Proves `old ⊆ new` at `path`; returns what could not be proven.
    fn check(&mut self, old: &Value, new: &Value, path: &str) -> Vec<Incompatibility> {
        if self.depth >= MAX_DEPTH || self.steps >= MAX_STEPS {
            return vec![cannot(
                path,
                "cannot prove compatibility: the schemas are too deep or too complex to compare",
            )];
        }
        self.depth += 1;
        self.steps += 1;
        let found = self.check_node(old, new, path);
        self.depth -= 1;
        found
    }

    fn check_node(&mut self, old: &Value, new: &Value, path: &str) -> Vec<Incompatibility> {
        if is_trivially_true(new) || old == &Value::Bool(false) {
            return Vec::new();
        }
        let Some(new_object) = new.as_object() else {
            return vec![incompatible(
                path,
                "the new schema is `false` here: it rejects every value the old one accepted",
            )];
        };
        let empty = Map::new();
        let old_object = old.as_object().unwrap_or(&empty);

        if (old_object.contains_key("enum") || old_object.contains_key("const"))
            && let Some(found) = self.check_finite(old, new, path)
        {
            return found;
        }
        if let Some(reference) = sole_ref(old_object) {
            return self.follow_old_ref(reference, new, path);
        }
        if let Some(reference) = sole_ref(new_object) {
            return self.follow_new_ref(old, reference, path);
        }

        let mut found = Vec::new();
        match new_object.get("allOf").map(Value::as_array) {
            None => {}
            Some(Some(branches)) => {
                for branch in branches {
                    found.extend(self.check(old, branch, path));
                }
            }
            Some(None) => found.push(cannot(
                path,
                "cannot prove `allOf` compatible: it is not an array",
            )),
        }
        if let Some(reference) = new_object.get("$ref") {
            found.extend(self.follow_new_ref(old, reference, path));
        }
        if new_object.contains_key("anyOf") {
            found.extend(self.check_any_of(old, old_object, new_object, path));
        }
        for group in ONLY_IF_UNCHANGED {
            let present = group
                .iter()
                .find(|keyword| new_object.contains_key(**keyword));
            if let Some(keyword) = present
                && !self.unchanged(old_object, new_object, group)
            {
                found.push(cannot(
                    path,
                    &format!(
                        "cannot prove `{keyword}` compatible: only an unchanged `{keyword}` is accepted"
                    ),
                ));
            }
        }
        found.extend(self.check_against_local(old, new_object, path));
        found
    }

    /// Proves `old ⊆` the local keywords of `new` (everything but the applicators handled in
    /// `check_node`). When `old`'s own local keywords are not enough, tries `old`'s conjuncts
    /// (`$ref`, each `allOf` branch) and disjuncts (every `anyOf`/`oneOf` branch): each is a
    /// superset of `old`, so a proof for one is a proof for `old`.
    fn check_against_local(
        &mut self,
        old: &Value,
        new_object: &Map<String, Value>,
        path: &str,
    ) -> Vec<Incompatibility> {
        if old == &Value::Bool(false) {
            return Vec::new();
        }
        if self.depth >= MAX_DEPTH || self.steps >= MAX_STEPS {
            return vec![cannot(
                path,
                "cannot prove compatibility: the schemas are too deep or too complex to compare",
            )];
        }
        self.depth += 1;
        self.steps += 1;
        let found = self.check_against_local_inner(old, new_object, path);
        self.depth -= 1;
        found
    }

    fn check_against_local_inner(
        &mut self,
        old: &Value,
        new_object: &Map<String, Value>,
        path: &str,
    ) -> Vec<Incompatibility> {
        let empty = Map::new();
        let old_object = old.as_object().unwrap_or(&empty);
        let found = self.local(old_object, new_object, path);
        if found.is_empty() {
            return found;
        }
        if let Some(target) = old_object
            .get("$ref")
            .and_then(|reference| self.resolve(Side::Old, reference))
        {
            let key = (
                address(target),
                address_of_map(new_object),
                Obligation::Local,
            );
            if self.in_progress.insert(key) {
                let alternative = self.check_against_local(target, new_object, path);
                self.in_progress.remove(&key);
                if alternative.is_empty() {
                    return alternative;
                }
            }
        }
        if let Some(branches) = old_object.get("allOf").and_then(Value::as_array) {
            for branch in branches {
                if self
                    .check_against_local(branch, new_object, path)
                    .is_empty()
                {
                    return Vec::new();
                }
            }
        }
        for keyword in ["anyOf", "oneOf"] {
            if let Some(branches) = old_object.get(keyword).and_then(Value::as_array) {
                let mut all_covered = !branches.is_empty();
                for branch in branches {
                    if !self
                        .check_against_local(branch, new_object, path)
                        .is_empty()
                    {
                        all_covered = false;
                        break;
                    }
                }
                if all_covered {
                    return Vec::new();
                }
            }
        }
        found
    }

    /// The local keywords: type, enum/const, number, string, array and object keywords.
    fn local(
        &mut self,
        old: &Map<String, Value>,
        new: &Map<String, Value>,
        path: &str,
    ) -> Vec<Incompatibility> {
        let mut found = Vec::new();
        let old_types = types_of(old) & listed_types(old);
        let new_types = types_of(new);
        let lost = old_types & !new_types;
        if lost != 0 {
            found.push(incompatible(
                path,
                &format!(
                    "`type` narrowed: {} values were accepted before and are rejected now",
                    type_names(lost)
                ),
            ));
        }
        let common = old_types & new_types;
        if common == 0 {
            return found;
        }
        check_listed_values(old, new, old_types, path, &mut found);
        if common & NUMBER != 0 {
            check_numbers(old, new, old_types & NUMBER == INTEGER, path, &mut found);
        }
        if common & STRING != 0 {
            check_strings(old, new, path, &mut found);
        }
        if common & ARRAY != 0 {
            self.check_arrays(old, new, path, &mut found);
        }
        if common & OBJECT != 0 {
            self.check_objects(old, new, path, &mut found);
        }
        found
    }

    fn check_arrays(
        &mut self,
        old: &Map<String, Value>,
        new: &Map<String, Value>,
        path: &str,
        found: &mut Vec<Incompatibility>,
    ) {
        let no_prefix = Vec::new();
        let old_prefix = old
            .get("prefixItems")
            .and_then(Value::as_array)
            .unwrap_or(&no_prefix);
        let new_prefix = new
            .get("prefixItems")
            .and_then(Value::as_array)
            .unwrap_or(&no_prefix);
        // Dropping a constraint of `old` only makes it larger, so unknown shapes become `true`.
        let old_items = match old.get("items") {
            Some(items @ (Value::Object(_) | Value::Bool(_))) => items,
            Some(_) => &TRUE_SCHEMA,
            None if is_local_only(old) && !old.contains_key("contains") => {
                old.get("unevaluatedItems").unwrap_or(&TRUE_SCHEMA)
            }
            None => &TRUE_SCHEMA,
        };
        let new_items = match new.get("items") {
            Some(items @ (Value::Object(_) | Value::Bool(_))) => Some(items),
            Some(_) => {
                if old.get("items") != new.get("items") || old_prefix != new_prefix {
                    found.push(cannot(
                        path,
                        "cannot prove `items` compatible: the array form is not supported in 2020-12, use `prefixItems`",
                    ));
                }
                None
            }
            None => match new.get("unevaluatedItems") {
                Some(unevaluated) if is_trivially_true(unevaluated) => None,
                Some(unevaluated) if is_local_only(new) && !new.contains_key("contains") => {
                    Some(unevaluated)
                }
                Some(_) => {
                    found.push(cannot(
                        path,
                        "cannot prove `unevaluatedItems` compatible next to applicators",
                    ));
                    None
                }
                None => None,
            },
        };
        for index in 0..old_prefix.len().max(new_prefix.len()) {
            let old_item = old_prefix.get(index).unwrap_or(old_items);
            let new_item = new_prefix.get(index).or(new_items);
            if let Some(new_item) = new_item {
                let mut item_path = path.to_owned();
                push_index(&mut item_path, index);
                found.extend(self.check(old_item, new_item, &item_path));
            }
        }
        if let Some(new_items) = new_items {
            found.extend(self.check(old_items, new_items, &format!("{path}[*]")));
        }

        let old_min = unsigned(old, "minItems").unwrap_or(0);
        if let Some(new_min) = unsigned(new, "minItems")
            && new_min > old_min
        {
            found.push(tightened(path, "minItems", Some(old_min), new_min));
        }
        if let Some(new_max) = unsigned(new, "maxItems") {
            let closed_tuple =
                (old_items == &Value::Bool(false)).then_some(old_prefix.len() as u64);
            let old_max = match (unsigned(old, "maxItems"), closed_tuple) {
                (Some(limit), Some(tuple)) => Some(limit.min(tuple)),
                (limit, tuple) => limit.or(tuple),
            };
            if old_max.is_none_or(|old_max| old_max > new_max) {
                found.push(tightened(path, "maxItems", old_max, new_max));
            }
        }
        if new.get("uniqueItems") == Some(&Value::Bool(true))
            && old.get("uniqueItems") != Some(&Value::Bool(true))
        {
            found.push(incompatible(
                path,
                "`uniqueItems` added: arrays with repeated items were accepted before",
            ));
        }
    }

    fn check_objects(
        &mut self,
        old: &Map<String, Value>,
        new: &Map<String, Value>,
        path: &str,
        found: &mut Vec<Incompatibility>,
    ) {
        let old_required = string_set(old.get("required"));
        for name in string_set(new.get("required")) {
            if !old_required.contains(&name) {
                found.push(incompatible(
                    &with_key(path, name),
                    &format!("property `{name}` became required"),
                ));
            }
        }

        let old_min = unsigned(old, "minProperties").unwrap_or(0);
        if let Some(new_min) = unsigned(new, "minProperties")
            && new_min > old_min
        {
            found.push(tightened(path, "minProperties", Some(old_min), new_min));
        }
        if let Some(new_max) = unsigned(new, "maxProperties") {
            let old_max = unsigned(old, "maxProperties");
            if old_max.is_none_or(|old_max| old_max > new_max) {
                found.push(tightened(path, "maxProperties", old_max, new_max));
            }
        }

        if let Some(Value::Object(new_dependent)) = new.get("dependentRequired") {
            for (trigger, needed) in new_dependent {
                let old_needed = string_set(
                    old.get("dependentRequired")
                        .and_then(|dependent| dependent.get(trigger)),
                );
                for name in string_set(Some(needed)) {
                    if !old_needed.contains(&name) && !old_required.contains(&name) {
                        found.push(incompatible(
                            &with_key(path, trigger),
                            &format!("`dependentRequired` now requires `{name}` whenever `{trigger}` is present"),
                        ));
                    }
                }
            }
        }

        if let Some(new_names) = new.get("propertyNames") {
            let old_names = old.get("propertyNames").unwrap_or(&TRUE_SCHEMA);
            for incompatibility in self.check(old_names, new_names, path) {
                found.push(Incompatibility {
                    path: incompatibility.path,
                    reason: format!("`propertyNames`: {}", incompatibility.reason),
                });
            }
        }

        self.check_properties(old, new, path, found);
    }

    /// `properties`, `patternProperties` and `additionalProperties` (and `unevaluatedProperties`
    /// where it means the same as `additionalProperties`).
    fn check_properties(
        &mut self,
        old: &Map<String, Value>,
        new: &Map<String, Value>,
        path: &str,
        found: &mut Vec<Incompatibility>,
    ) {
        let empty = Map::new();
        let old_properties = object_or_empty(old.get("properties"), &empty);
        let new_properties = object_or_empty(new.get("properties"), &empty);
        let old_patterns = object_or_empty(old.get("patternProperties"), &empty);
        let new_patterns = object_or_empty(new.get("patternProperties"), &empty);
        let old_additional = additional_of(old, Side::Old).unwrap_or(&TRUE_SCHEMA);
        let new_additional = match new.get("additionalProperties") {
            Some(additional) => Some(additional),
            None => match new.get("unevaluatedProperties") {
                Some(unevaluated) if is_trivially_true(unevaluated) => None,
                Some(unevaluated) if is_local_only(new) => Some(unevaluated),
                Some(_) => {
                    found.push(cannot(
                        path,
                        "cannot prove `unevaluatedProperties` compatible next to applicators",
                    ));
                    None
                }
                None => None,
            },
        };
        // What `old` allowed for a property it does not list. With `patternProperties` the
        // answer depends on regex matching, which is not evaluated here: assume anything.
        let old_unlisted = if old_patterns.is_empty() {
            old_additional
        } else {
            &TRUE_SCHEMA
        };
        let same_patterns = old_patterns.len() == new_patterns.len()
            && old_patterns
                .keys()
                .all(|pattern| new_patterns.contains_key(pattern));
        // For keys outside both `properties`: with identical patterns, a key matching one is
        // checked pattern against pattern below, and one matching none went through
        // `additionalProperties` in both schemas.
        let old_rest = if old_patterns.is_empty() || same_patterns {
            old_additional
        } else {
            &TRUE_SCHEMA
        };

        for (name, new_property) in new_properties {
            let property_path = with_key(path, name);
            match old_properties.get(name) {
                Some(old_property) => {
                    found.extend(self.check(old_property, new_property, &property_path));
                }
                None => {
                    let problems = self.check(old_unlisted, new_property, &property_path);
                    if !problems.is_empty() {
                        let details: Vec<String> = problems
                            .iter()
                            .map(|problem| problem.reason.clone())
                            .collect();
                        found.push(incompatible(
                            &property_path,
                            &format!(
                                "new property `{name}` may reject values the old schema accepted: \
                                 the old schema allowed unlisted properties (its `additionalProperties` \
                                 was not false), so old events may carry `{name}` with any value ({})",
                                details.join("; ")
                            ),
                        ));
                    }
                }
            }
        }

        if let Some(new_additional) = new_additional.filter(|schema| !is_trivially_true(schema)) {
            for (name, old_property) in old_properties {
                if new_properties.contains_key(name) {
                    continue;
                }
                let property_path = with_key(path, name);
                let problems = self.check(old_property, new_additional, &property_path);
                if problems.is_empty() {
                    continue;
                }
                if new_additional == &Value::Bool(false) {
                    found.push(incompatible(
                        &property_path,
                        &format!(
                            "property `{name}` was removed while `additionalProperties` is false: \
                             old events carrying it are now rejected"
                        ),
                    ));
                } else {
                    found.extend(problems);
                }
            }
            let rest_path = format!("{path}.*");
            let problems = self.check(old_rest, new_additional, &rest_path);
            if !problems.is_empty() {
                if new_additional == &Value::Bool(false) {
                    found.push(incompatible(
                        &rest_path,
                        "`additionalProperties` became false: unlisted properties the old schema \
                         accepted are now rejected",
                    ));
                } else {
                    found.extend(problems);
                }
            }
        }

        for (pattern, new_schema) in new_patterns {
            let pattern_path = format!("{path}[/{pattern}/]");
            if let Some(old_schema) = old_patterns.get(pattern) {
                found.extend(self.check(old_schema, new_schema, &pattern_path));
                continue;
            }
            if is_trivially_true(new_schema) {
                continue;
            }
            // A new pattern may match any key, listed or not.
            let mut provable = self
                .check(old_unlisted, new_schema, &pattern_path)
                .is_empty();
            for old_property in old_properties.values() {
                if !provable {
                    break;
                }
                provable = self
                    .check(old_property, new_schema, &pattern_path)
                    .is_empty();
            }
            if !provable {
                found.push(cannot(
                    &pattern_path,
                    &format!(
                        "cannot prove `patternProperties` compatible: the new pattern `{pattern}` \
                         may match properties whose old values it rejects"
                    ),
                ));
            }
        }
    }

    fn check_any_of(
        &mut self,
        old: &Value,
        old_object: &Map<String, Value>,
        new_object: &Map<String, Value>,
        path: &str,
    ) -> Vec<Incompatibility> {
        if self.unchanged(old_object, new_object, &["anyOf"]) {
            return Vec::new();
        }
        let Some(new_branches) = new_object.get("anyOf").and_then(Value::as_array) else {
            return vec![cannot(
                path,
                "cannot prove `anyOf` compatible: it is not an array",
            )];
        };
        for new_branch in new_branches {
            if self.check(old, new_branch, path).is_empty() {
                return Vec::new();
            }
        }
        let old_branches = old_object
            .get("anyOf")
            .or_else(|| old_object.get("oneOf"))
            .and_then(Value::as_array);
        if let Some(old_branches) = old_branches {
            let mut all_covered = true;
            for old_branch in old_branches {
                let mut covered = false;
                for new_branch in new_branches {
                    if self.check(old_branch, new_branch, path).is_empty() {
                        covered = true;
                        break;
                    }
                }
                if !covered {
                    all_covered = false;
                    break;
                }
            }
            if all_covered {
                return Vec::new();
            }
        }
        vec![cannot(
            path,
            "cannot prove `anyOf` compatible: no branch of the new `anyOf` is shown to accept \
             everything the old schema accepted",
        )]
    }

    /// `old` lists its values (`enum`/`const`): runs each value `old` accepts through the
    /// compiled `new`. Returns `None` when the subschemas cannot be compiled alone.
    fn check_finite(
        &mut self,
        old: &Value,
        new: &Value,
        path: &str,
    ) -> Option<Vec<Incompatibility>> {
        let old_object = old.as_object()?;
        let values: Vec<&Value> = match old_object.get("const") {
            Some(constant) => vec![constant],
            None => old_object.get("enum")?.as_array()?.iter().collect(),
        };
        let old_validator = self.compile_subschema(Side::Old, old)?;
        let new_validator = self.compile_subschema(Side::New, new)?;
        let mut found = Vec::new();
        for value in values {
            if !old_validator.is_valid(value) || new_validator.is_valid(value) {
                continue;
            }
            let shown = show_value(value);
            let listed_in_new = new
                .get("enum")
                .and_then(Value::as_array)
                .map(|listed| listed.iter().any(|candidate| json_equal(candidate, value)));
            let reason = match (listed_in_new, new.get("const")) {
                (Some(false), _) => format!("`enum` value {shown} was removed"),
                (_, Some(constant)) if !json_equal(constant, value) => {
                    format!("`const` changed: {shown} is no longer accepted")
                }
                _ => format!(
                    "value {shown}, allowed by the old `enum`/`const`, is rejected by the new schema"
                ),
            };
            found.push(incompatible(path, &reason));
        }
        Some(found)
    }

    fn compile_subschema(&self, side: Side, node: &Value) -> Option<jsonschema::Validator> {
        let (root, profile) = match side {
            Side::Old => (self.old_root, &self.old_refs),
            Side::New => (self.new_root, &self.new_refs),
        };
        let document = if std::ptr::eq(node, root) {
            node.clone()
        } else if profile.only_definitions {
            let mut wrapper = Map::new();
            wrapper.insert("$schema".to_owned(), Value::from(JSON_SCHEMA_2020_12));
            for container in ["$defs", "definitions"] {
                if let Some(definitions) = root.get(container) {
                    wrapper.insert(container.to_owned(), definitions.clone());
                }
            }
            wrapper.insert("allOf".to_owned(), Value::Array(vec![node.clone()]));
            Value::Object(wrapper)
        } else {
            return None;
        };
        crate::document::compile(&document, "subschema").ok()
    }

    fn follow_old_ref(
        &mut self,
        reference: &Value,
        new: &Value,
        path: &str,
    ) -> Vec<Incompatibility> {
        // An unresolvable reference in `old` is a constraint we cannot read: dropping it only
        // makes `old` larger, which keeps the proof sound.
        let target = self.resolve(Side::Old, reference).unwrap_or(&TRUE_SCHEMA);
        self.assume_while(target, new, path)
    }

    fn follow_new_ref(
        &mut self,
        old: &Value,
        reference: &Value,
        path: &str,
    ) -> Vec<Incompatibility> {
        match self.resolve(Side::New, reference) {
            Some(target) => self.assume_while(old, target, path),
            None => vec![cannot(
                path,
                &format!(
                    "cannot prove `$ref` {reference} compatible: only local references (`#`, `#/$defs/...`) can be followed"
                ),
            )],
        }
    }

    fn assume_while(&mut self, old: &Value, new: &Value, path: &str) -> Vec<Incompatibility> {
        let key = (address(old), address(new), Obligation::Whole);
        if !self.in_progress.insert(key) {
            return Vec::new();
        }
        let found = self.check(old, new, path);
        self.in_progress.remove(&key);
        found
    }

    fn resolve(&self, side: Side, reference: &Value) -> Option<&'a Value> {
        let (root, profile) = match side {
            Side::Old => (self.old_root, &self.old_refs),
            Side::New => (self.new_root, &self.new_refs),
        };
        let reference = reference.as_str()?;
        if !profile.pointers_resolve {
            return None;
        }
        let pointer = reference.strip_prefix('#')?;
        if pointer.is_empty() {
            return Some(root);
        }
        if !pointer.starts_with('/') {
            return None;
        }
        root.pointer(&percent_decode(pointer)?)
    }

    /// The keywords of `group` are all equal in both schemas and mean the same there.
    fn unchanged(
        &self,
        old: &Map<String, Value>,
        new: &Map<String, Value>,
        group: &[&str],
    ) -> bool {
        group.iter().all(|keyword| {
            let value = new.get(*keyword);
            old.get(*keyword) == value
                && value.is_none_or(|value| {
                    !contains_reference(value)
                        || (self.same_definitions
                            && self.old_refs.only_definitions
                            && self.new_refs.only_definitions)
                })
        })
    }
}

/// Enum/const fallback when `check_finite` could not compile: compare the listed values.
fn check_listed_values(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    old_types: u8,
    path: &str,
    found: &mut Vec<Incompatibility>,
) {
    let new_lists: Vec<(&str, Vec<&Value>)> = ["const", "enum"]
        .into_iter()
        .filter_map(|keyword| {
            let allowed = match (keyword, new.get(keyword)?) {
                ("const", constant) => vec![constant],
                (_, Value::Array(values)) => values.iter().collect(),
                _ => return None,
            };
            Some((keyword, allowed))
        })
        .collect();
    if new_lists.is_empty() {
        return;
    }
    // The values `old` can produce when it lists them, or when its types have few values.
    let implied_by_type: Vec<Value> = [
        (NULL, Value::Null),
        (BOOLEAN, Value::Bool(true)),
        (BOOLEAN, Value::Bool(false)),
    ]
    .into_iter()
    .filter(|(bit, _)| old_types & bit != 0)
    .map(|(_, value)| value)
    .collect();
    let old_values: Option<Vec<&Value>> = match (old.get("const"), old.get("enum")) {
        (Some(constant), _) => Some(vec![constant]),
        (None, Some(Value::Array(values))) => Some(values.iter().collect()),
        _ if old_types & !(NULL | BOOLEAN) == 0 => Some(implied_by_type.iter().collect()),
        _ => None,
    };
    for (keyword, allowed) in new_lists {
        match &old_values {
            None => found.push(incompatible(
                path,
                &format!("`{keyword}` added: the old schema accepted values outside it"),
            )),
            Some(values) => {
                for value in values {
                    if !allowed.iter().any(|candidate| json_equal(candidate, value)) {
                        found.push(incompatible(
                            path,
                            &format!("`{keyword}` no longer accepts {}", show_value(value)),
                        ));
                    }
                }
            }
        }
    }
}

fn check_numbers(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    integers_only: bool,
    path: &str,
    found: &mut Vec<Incompatibility>,
) {
    if let Some(new_lower) = lower_bound(new, integers_only) {
        let old_lower = lower_bound(old, integers_only);
        let implied = old_lower.is_some_and(|old_lower| {
            if new_lower.exclusive && !old_lower.exclusive {
                old_lower.value > new_lower.value
            } else {
                old_lower.value >= new_lower.value
            }
        });
        if !implied {
            found.push(incompatible(
                path,
                &format!(
                    "`minimum`/`exclusiveMinimum` tightened: the lower bound went from {} to {}",
                    describe_bound(old_lower, '≥', '>'),
                    describe_bound(Some(new_lower), '≥', '>')
                ),
            ));
        }
    }
    if let Some(new_upper) = upper_bound(new, integers_only) {
        let old_upper = upper_bound(old, integers_only);
        let implied = old_upper.is_some_and(|old_upper| {
            if new_upper.exclusive && !old_upper.exclusive {
                old_upper.value < new_upper.value
            } else {
                old_upper.value <= new_upper.value
            }
        });
        if !implied {
            found.push(incompatible(
                path,
                &format!(
                    "`maximum`/`exclusiveMaximum` tightened: the upper bound went from {} to {}",
                    describe_bound(old_upper, '≤', '<'),
                    describe_bound(Some(new_upper), '≤', '<')
                ),
            ));
        }
    }
    if let Some(new_step) = number(new, "multipleOf") {
        let old_step = number(old, "multipleOf");
        let implied = match old_step {
            Some(old_step) => old_step == new_step || is_multiple(old_step, new_step),
            None => integers_only && is_multiple(1.0, new_step),
        };
        if !implied {
            let before = old_step.map_or_else(|| "none".to_owned(), |step| step.to_string());
            found.push(incompatible(
                path,
                &format!("`multipleOf` tightened from {before} to {new_step}"),
            ));
        }
    }
}

fn check_strings(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    path: &str,
    found: &mut Vec<Incompatibility>,
) {
    let old_min = unsigned(old, "minLength").unwrap_or(0);
    if let Some(new_min) = unsigned(new, "minLength")
        && new_min > old_min
    {
        found.push(tightened(path, "minLength", Some(old_min), new_min));
    }
    if let Some(new_max) = unsigned(new, "maxLength") {
        let old_max = unsigned(old, "maxLength");
        if old_max.is_none_or(|old_max| old_max > new_max) {
            found.push(tightened(path, "maxLength", old_max, new_max));
        }
    }
    for keyword in ["pattern", "format"] {
        if let Some(new_value) = new.get(keyword) {
            match old.get(keyword) {
                Some(old_value) if old_value == new_value => {}
                Some(old_value) => found.push(incompatible(
                    path,
                    &format!(
                        "`{keyword}` changed from {old_value} to {new_value}: strings the old one accepted may be rejected"
                    ),
                )),
                None => found.push(incompatible(
                    path,
                    &format!("`{keyword}` {new_value} added: strings the old schema accepted may not match it"),
                )),
            }
        }
    }
}

fn incompatible(path: &str, reason: &str) -> Incompatibility {
    Incompatibility {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

fn cannot(path: &str, reason: &str) -> Incompatibility {
    incompatible(path, reason)
}

fn tightened(path: &str, keyword: &str, old: Option<u64>, new: u64) -> Incompatibility {
    let reason = match old {
        Some(old) => format!("`{keyword}` tightened from {old} to {new}"),
        None => format!("`{keyword}` {new} added"),
    };
    incompatible(path, &reason)
}

fn is_trivially_true(schema: &Value) -> bool {
    match schema {
        Value::Bool(accepts) => *accepts,
        Value::Object(object) => !object
            .keys()
            .any(|keyword| CONSTRAINING.contains(&keyword.as_str())),
        _ => false,
    }
}

/// The node has no in-place applicator, so `unevaluated*` sees only its own siblings.
fn is_local_only(object: &Map<String, Value>) -> bool {
    !IN_PLACE_APPLICATORS
        .iter()
        .any(|keyword| object.contains_key(*keyword))
}

fn sole_ref(object: &Map<String, Value>) -> Option<&Value> {
    let reference = object.get("$ref")?;
    let alone = object
        .keys()
        .all(|keyword| keyword == "$ref" || !CONSTRAINING.contains(&keyword.as_str()));
    alone.then_some(reference)
}

fn additional_of(object: &Map<String, Value>, side: Side) -> Option<&Value> {
    match object.get("additionalProperties") {
        Some(additional) => Some(additional),
        None if side == Side::Old && is_local_only(object) => object.get("unevaluatedProperties"),
        None => None,
    }
}

fn types_of(object: &Map<String, Value>) -> u8 {
    let bit = |name: &str| match name {
        "null" => NULL,
        "boolean" => BOOLEAN,
        "object" => OBJECT,
        "array" => ARRAY,
        "string" => STRING,
        "integer" => INTEGER,
        "number" => NUMBER,
        _ => ANY_TYPE,
    };
    match object.get("type") {
        Some(Value::String(name)) => bit(name),
        Some(Value::Array(names)) => names
            .iter()
            .filter_map(Value::as_str)
            .fold(0, |types, name| types | bit(name)),
        _ => ANY_TYPE,
    }
}

/// The types of the values `enum`/`const` list, every type when neither is present.
fn listed_types(object: &Map<String, Value>) -> u8 {
    let of_value = |value: &Value| match value {
        Value::Null => NULL,
        Value::Bool(_) => BOOLEAN,
        Value::Object(_) => OBJECT,
        Value::Array(_) => ARRAY,
        Value::String(_) => STRING,
        Value::Number(number) => {
            if number.is_i64()
                || number.is_u64()
                || number.as_f64().is_some_and(|float| float.fract() == 0.0)
            {
                INTEGER
            } else {
                FRACTION
            }
        }
    };
    let mut types = ANY_TYPE;
    if let Some(constant) = object.get("const") {
        types &= of_value(constant);
    }
    if let Some(Value::Array(values)) = object.get("enum") {
        types &= values
            .iter()
            .fold(0, |types, value| types | of_value(value));
    }
    types
}

fn type_names(types: u8) -> String {
    let mut names = Vec::new();
    for (bit, name) in [
        (NULL, "null"),
        (BOOLEAN, "boolean"),
        (OBJECT, "object"),
        (ARRAY, "array"),
        (STRING, "string"),
    ] {
        if types & bit != 0 {
            names.push(name);
        }
    }
    match types & NUMBER {
        NUMBER => names.push("number"),
        INTEGER => names.push("integer"),
        FRACTION => names.push("non-integer number"),
        _ => {}
    }
    names.join(", ")
}

fn lower_bound(object: &Map<String, Value>, integers_only: bool) -> Option<Bound> {
    let inclusive = number(object, "minimum").map(|value| Bound {
        value,
        exclusive: false,
    });
    let exclusive = number(object, "exclusiveMinimum").map(|value| Bound {
        value,
        exclusive: true,
    });
    let normalize = |bound: Bound| {
        if !integers_only {
            bound
        } else if bound.exclusive {
            Bound {
                value: bound.value.floor() + 1.0,
                exclusive: false,
            }
        } else {
            Bound {
                value: bound.value.ceil(),
                exclusive: false,
            }
        }
    };
    tightest(
        inclusive.map(normalize),
        exclusive.map(normalize),
        |left, right| left.value > right.value || (left.value == right.value && left.exclusive),
    )
}

fn upper_bound(object: &Map<String, Value>, integers_only: bool) -> Option<Bound> {
    let inclusive = number(object, "maximum").map(|value| Bound {
        value,
        exclusive: false,
    });
    let exclusive = number(object, "exclusiveMaximum").map(|value| Bound {
        value,
        exclusive: true,
    });
    let normalize = |bound: Bound| {
        if !integers_only {
            bound
        } else if bound.exclusive {
            Bound {
                value: bound.value.ceil() - 1.0,
                exclusive: false,
            }
        } else {
            Bound {
                value: bound.value.floor(),
                exclusive: false,
            }
        }
    };
    tightest(
        inclusive.map(normalize),
        exclusive.map(normalize),
        |left, right| left.value < right.value || (left.value == right.value && left.exclusive),
    )
}

fn tightest(
    first: Option<Bound>,
    second: Option<Bound>,
    tighter: impl Fn(&Bound, &Bound) -> bool,
) -> Option<Bound> {
    match (first, second) {
        (Some(first), Some(second)) => Some(if tighter(&second, &first) {
            second
        } else {
            first
        }),
        (first, second) => first.or(second),
    }
}

fn describe_bound(bound: Option<Bound>, inclusive: char, exclusive: char) -> String {
    match bound {
        None => "none".to_owned(),
        Some(Bound {
            value,
            exclusive: true,
        }) => format!("{exclusive} {value}"),
        Some(Bound {
            value,
            exclusive: false,
        }) => format!("{inclusive} {value}"),
    }
}

fn is_multiple(value: f64, step: f64) -> bool {
    let quotient = value / step;
    quotient.is_finite() && quotient.round() != 0.0 && (quotient - quotient.round()).abs() < 1e-9
}

fn number(object: &Map<String, Value>, keyword: &str) -> Option<f64> {
    object.get(keyword).and_then(Value::as_f64)
}

fn unsigned(object: &Map<String, Value>, keyword: &str) -> Option<u64> {
    let value = object.get(keyword)?;
    value.as_u64().or_else(|| {
        // 2020-12 allows `5.0` for non-negative integers.
        value
            .as_f64()
            .filter(|float| *float >= 0.0 && float.fract() == 0.0)
            .map(|float| float as u64)
    })
}

fn string_set(value: Option<&Value>) -> Vec<&str> {
    value
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn object_or_empty<'v>(
    value: Option<&'v Value>,
    empty: &'v Map<String, Value>,
) -> &'v Map<String, Value> {
    value.and_then(Value::as_object).unwrap_or(empty)
}

/// JSON equality where `1` and `1.0` are the same number, as JSON Schema says.
fn json_equal(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(left), Value::Number(right)) => {
            left == right || matches!((left.as_f64(), right.as_f64()), (Some(l), Some(r)) if l == r)
        }
        (Value::Array(left), Value::Array(right)) => {
            left.len() == right.len() && left.iter().zip(right).all(|(l, r)| json_equal(l, r))
        }
        (Value::Object(left), Value::Object(right)) => {
            left.len() == right.len()
                && left.iter().all(|(key, value)| {
                    right.get(key).is_some_and(|other| json_equal(value, other))
                })
        }
        _ => left == right,
    }
}

fn show_value(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

fn address(value: &Value) -> usize {
    std::ptr::from_ref(value) as usize
}

fn address_of_map(object: &Map<String, Value>) -> usize {
    std::ptr::from_ref(object) as usize
}

fn ref_profile(root: &Value) -> RefProfile {
    let mut profile = RefProfile {
        pointers_resolve: true,
        only_definitions: true,
    };
    visit_keywords(root, true, &mut |keyword, value, is_root| match keyword {
        "$ref" => {
            let local = value.as_str().is_some_and(|reference| {
                reference.starts_with("#/$defs/") || reference.starts_with("#/definitions/")
            });
            profile.only_definitions &= local;
        }
        "$dynamicRef" | "$recursiveRef" => profile.only_definitions = false,
        "$id" | "$anchor" | "$dynamicAnchor" if !is_root && value.is_string() => {
            profile.pointers_resolve = false;
            profile.only_definitions = false;
        }
        _ => {}
    });
    profile
}

/// Calls `visit(keyword, value, is_root)` for every key of every object in the document.
/// Property names are visited as keywords too, which only makes the profile more cautious.
fn visit_keywords(value: &Value, is_root: bool, visit: &mut impl FnMut(&str, &Value, bool)) {
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                visit(key, child, is_root);
                visit_keywords(child, false, visit);
            }
        }
        Value::Array(items) => {
            for item in items {
                visit_keywords(item, false, visit);
            }
        }
        _ => {}
    }
}

fn contains_reference(value: &Value) -> bool {
    let mut found = false;
    visit_keywords(value, false, &mut |keyword, _, _| {
        found |= matches!(keyword, "$ref" | "$dynamicRef" | "$recursiveRef");
    });
    found
}

/// Decodes `%XX` escapes of a URI fragment; `None` if one is malformed.
fn percent_decode(fragment: &str) -> Option<String> {
    if !fragment.contains('%') {
        return Some(fragment.to_owned());
    }
    let bytes = fragment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = fragment.get(index + 1..index + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests;
