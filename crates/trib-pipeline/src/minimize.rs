//! Data minimization: which fields a source may bring.

use serde_json::Value;
use trib_core::JsonMap;

/// The `allowed_fields` patterns of a source: dotted paths, where a last segment `*` allows
/// everything below (`properties.*`, `traits.email`, `context.page.*`).
#[derive(Debug, Clone)]
pub struct FieldFilter {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl FieldFilter {
    /// Builds a filter from validated patterns.
    pub fn new(patterns: &[String]) -> FieldFilter {
        let mut exact = Vec::new();
        let mut prefixes = Vec::new();
        for pattern in patterns {
            match pattern.strip_suffix('*') {
                Some(prefix) => prefixes.push(prefix.to_owned()),
                None => exact.push(pattern.clone()),
            }
        }
        FieldFilter { exact, prefixes }
    }

    /// Whether the field at `path`, with everything below it, is allowed.
    pub fn allows(&self, path: &str) -> bool {
        self.exact.iter().any(|pattern| pattern == path)
            || self
                .prefixes
                .iter()
                .any(|prefix| path.starts_with(prefix.as_str()))
    }

    /// Whether some pattern allows a field below `path` (so an object at `path` is kept, with
    /// only its allowed fields).
    fn allows_below(&self, path: &str) -> bool {
        self.exact.iter().chain(&self.prefixes).any(|pattern| {
            pattern.len() > path.len()
                && pattern.starts_with(path)
                && pattern.as_bytes()[path.len()] == b'.'
        })
    }

    /// Removes from `map` (found at `path`) every field no pattern allows, adding the removed
    /// fields' paths to `removed`.
    pub fn retain(&self, map: &mut JsonMap, path: &str, removed: &mut Vec<String>) {
        let keys: Vec<String> = map.keys().cloned().collect();
        for key in keys {
            let field = format!("{path}.{key}");
            if self.allows(&field) {
                continue;
            }
            let keep_part = match map.get_mut(&key) {
                Some(Value::Object(inner)) if self.allows_below(&field) => {
                    self.retain(inner, &field, removed);
                    !inner.is_empty()
                }
                _ => false,
            };
            if !keep_part {
                map.remove(&key);
                if !removed
                    .iter()
                    .any(|earlier| field.starts_with(earlier.as_str()))
                {
                    removed.push(field);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[track_caller]
    fn check(
        patterns: &[&str],
        input: Value,
        path: &str,
        expected: Value,
        expected_removed: &[&str],
    ) {
        let patterns: Vec<String> = patterns
            .iter()
            .map(|pattern| (*pattern).to_owned())
            .collect();
        let filter = FieldFilter::new(&patterns);
        let mut map = input.as_object().cloned().unwrap();
        let mut removed = Vec::new();
        filter.retain(&mut map, path, &mut removed);
        assert_eq!(Value::Object(map), expected);
        assert_eq!(removed, expected_removed);
    }

    #[test]
    fn exact_wildcard_and_nested_patterns() {
        check(
            &["traits.email"],
            json!({"email": "a@example.com", "ssn": "1"}),
            "traits",
            json!({"email": "a@example.com"}),
            &["traits.ssn"],
        );
        check(
            &["properties.*"],
            json!({"a": 1, "b": {"c": 2}}),
            "properties",
            json!({"a": 1, "b": {"c": 2}}),
            &[],
        );
        check(
            &["traits.address.city"],
            json!({"address": {"city": "Paris", "street": "1 rue X"}, "age": 3}),
            "traits",
            json!({"address": {"city": "Paris"}}),
            &["traits.address.street", "traits.age"],
        );
        check(
            &["context.page.*"],
            json!({"page": {"url": "u"}, "ip": "1.2.3.4"}),
            "context",
            json!({"page": {"url": "u"}}),
            &["context.ip"],
        );
        check(
            &[],
            json!({"a": {"b": 1}}),
            "properties",
            json!({}),
            &["properties.a"],
        );
        // A pattern that only shares a prefix of characters does not allow a sibling.
        check(
            &["traits.email"],
            json!({"emailVerified": true}),
            "traits",
            json!({}),
            &["traits.emailVerified"],
        );
    }
}
