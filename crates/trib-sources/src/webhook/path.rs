//! A small subset of JSONPath (RFC 9535) for picking values out of webhook bodies.
//!
//! Supported:
//!
//! * the root `$` (the whole body) and, in a mapping with `each`, `@` (the current element);
//! * member names in shorthand (`$.customer.email`: a letter, `_` or non-ASCII character, then
//!   also digits) or in brackets with single or double quotes (`$['X-Id']`, `$["first name"]`,
//!   with the RFC's escapes);
//! * array indexes, negative ones counting from the end (`$.line_items[0]`, `$.items[-1]`);
//! * the wildcard (`[*]` or `.*`), only where several values are expected (`each`).
//!
//! Not supported (refused when the configuration is validated): descendant segments (`..`),
//! slices (`[1:3]`), filters (`[?@.price > 10]`), unions (`[0,1]`) and functions.
//!
//! A path without a wildcard is a *singular query* in RFC terms: it selects at most one value.

use std::fmt;

use serde_json::Value;

/// A parsed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonPath {
    root: Root,
    segments: Vec<Segment>,
    text: String,
}

/// What a path starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Root {
    /// `$`: the whole body.
    Document,
    /// `@`: the element of an `each` fan-out (the body itself when there is none).
    Current,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Name(String),
    Index(i64),
    Wildcard,
}

impl JsonPath {
    /// Parses `text`, or says what is wrong with it.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        Parser {
            text,
            bytes: text.as_bytes(),
            position: 0,
        }
        .parse()
    }

    /// Returns what the path starts from.
    pub(crate) fn root(&self) -> Root {
        self.root
    }

    /// Returns whether the path selects at most one value (it has no wildcard).
    pub(crate) fn is_singular(&self) -> bool {
        !self.segments.contains(&Segment::Wildcard)
    }

    /// Returns the one value a singular path selects, if it exists. A wildcard selects nothing
    /// here (validation keeps wildcards out of singular positions).
    pub(crate) fn select_one<'v>(
        &self,
        document: &'v Value,
        current: &'v Value,
    ) -> Option<&'v Value> {
        let mut node = self.start(document, current);
        for segment in &self.segments {
            node = match segment {
                Segment::Name(name) => node.as_object()?.get(name)?,
                Segment::Index(index) => element(node.as_array()?, *index)?,
                Segment::Wildcard => return None,
            };
        }
        Some(node)
    }

    /// Returns every value the path selects, in document order (objects: key order).
    pub(crate) fn select_all<'v>(&self, document: &'v Value, current: &'v Value) -> Vec<&'v Value> {
        let mut nodes = vec![self.start(document, current)];
        for segment in &self.segments {
            let mut next = Vec::new();
            for node in nodes {
                match segment {
                    Segment::Name(name) => next.extend(node.as_object().and_then(|o| o.get(name))),
                    Segment::Index(index) => {
                        next.extend(node.as_array().and_then(|a| element(a, *index)));
                    }
                    Segment::Wildcard => match node {
                        Value::Array(items) => next.extend(items),
                        Value::Object(members) => next.extend(members.values()),
                        _ => {}
                    },
                }
            }
            nodes = next;
        }
        nodes
    }

    fn start<'v>(&self, document: &'v Value, current: &'v Value) -> &'v Value {
        match self.root {
            Root::Document => document,
            Root::Current => current,
        }
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn element(items: &[Value], index: i64) -> Option<&Value> {
    let position = if index < 0 {
        let back = usize::try_from(index.unsigned_abs()).ok()?;
        items.len().checked_sub(back)?
    } else {
        usize::try_from(index).ok()?
    };
    items.get(position)
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    position: usize,
}

impl Parser<'_> {
    fn parse(mut self) -> Result<JsonPath, String> {
        let root = match self.bytes.first() {
            Some(b'$') => Root::Document,
            Some(b'@') => Root::Current,
            _ => return Err(format!("must start with `$` (or `@`), got {:?}", self.text)),
        };
        self.position = 1;
        let mut segments = Vec::new();
        while let Some(&byte) = self.bytes.get(self.position) {
            let segment = match byte {
                b'.' => self.dot_segment()?,
                b'[' => self.bracket_segment()?,
                _ => {
                    return Err(self.error("expected `.` or `[`"));
                }
            };
            segments.push(segment);
        }
        Ok(JsonPath {
            root,
            segments,
            text: self.text.to_owned(),
        })
    }

    fn error(&self, what: &str) -> String {
        format!(
            "{what} at character {} of {:?}",
            self.position + 1,
            self.text
        )
    }

    fn dot_segment(&mut self) -> Result<Segment, String> {
        self.position += 1; // `.`
        match self.bytes.get(self.position) {
            Some(b'.') => Err(unsupported(self.text, "descendant segments (`..`)")),
            Some(b'*') => {
                self.position += 1;
                Ok(Segment::Wildcard)
            }
            _ => {
                let rest = &self.text[self.position..];
                let mut end = 0;
                for (offset, character) in rest.char_indices() {
                    let allowed = character.is_ascii_alphabetic()
                        || character == '_'
                        || !character.is_ascii()
                        || (offset > 0 && character.is_ascii_digit());
                    if !allowed {
                        break;
                    }
                    end = offset + character.len_utf8();
                }
                if end == 0 {
                    return Err(self.error(
                        "expected a member name (a letter or `_` first; use ['...'] for others)",
                    ));
                }
                self.position += end;
                Ok(Segment::Name(rest[..end].to_owned()))
            }
        }
    }

    fn bracket_segment(&mut self) -> Result<Segment, String> {
        self.position += 1; // `[`
        self.skip_blanks();
        let segment = match self.bytes.get(self.position) {
            Some(b'*') => {
                self.position += 1;
                Segment::Wildcard
            }
            Some(&quote @ (b'\'' | b'"')) => Segment::Name(self.string(quote)?),
            Some(b'-' | b'0'..=b'9') => Segment::Index(self.index()?),
            Some(b'?') => return Err(unsupported(self.text, "filters (`[?...]`)")),
            Some(b':') => return Err(unsupported(self.text, "slices (`[a:b]`)")),
            _ => return Err(self.error("expected a quoted name, an index or `*`")),
        };
        self.skip_blanks();
        match self.bytes.get(self.position) {
            Some(b']') => {
                self.position += 1;
                Ok(segment)
            }
            Some(b',') => Err(unsupported(self.text, "unions (`[a,b]`)")),
            Some(b':') => Err(unsupported(self.text, "slices (`[a:b]`)")),
            _ => Err(self.error("expected `]`")),
        }
    }

    fn skip_blanks(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.position) {
            self.position += 1;
        }
    }

    fn index(&mut self) -> Result<i64, String> {
        let start = self.position;
        if self.bytes.get(self.position) == Some(&b'-') {
            self.position += 1;
        }
        while let Some(b'0'..=b'9') = self.bytes.get(self.position) {
            self.position += 1;
        }
        let digits = &self.text[start..self.position];
        let unsigned = digits.strip_prefix('-').unwrap_or(digits);
        if unsigned.is_empty()
            || (unsigned.len() > 1 && unsigned.starts_with('0'))
            || digits == "-0"
        {
            return Err(format!("invalid array index {digits:?} in {:?}", self.text));
        }
        digits
            .parse()
            .map_err(|_| format!("array index {digits} is out of range in {:?}", self.text))
    }

    /// Reads a quoted member name, with the escapes of RFC 9535 (those of JSON, plus `\'`).
    fn string(&mut self, quote: u8) -> Result<String, String> {
        self.position += 1; // opening quote
        let mut name = String::new();
        let rest = &self.text[self.position..];
        let mut characters = rest.char_indices();
        while let Some((offset, character)) = characters.next() {
            if character == char::from(quote) {
                self.position += offset + 1;
                return Ok(name);
            }
            if character != '\\' {
                if character.is_control() {
                    return Err(format!(
                        "control character in a quoted name in {:?}",
                        self.text
                    ));
                }
                name.push(character);
                continue;
            }
            let escaped = match characters.next().map(|(_, escaped)| escaped) {
                Some('b') => '\u{8}',
                Some('f') => '\u{c}',
                Some('n') => '\n',
                Some('r') => '\r',
                Some('t') => '\t',
                Some(other @ ('/' | '\\' | '\'' | '"')) => other,
                Some('u') => {
                    let hex: String = characters.by_ref().take(4).map(|(_, c)| c).collect();
                    u32::from_str_radix(&hex, 16)
                        .ok()
                        .filter(|_| hex.len() == 4)
                        .and_then(char::from_u32)
                        .ok_or_else(|| {
                            format!(
                                "invalid `\\u` escape (surrogate pairs are not supported) in {:?}",
                                self.text
                            )
                        })?
                }
                _ => {
                    return Err(format!(
                        "invalid escape in a quoted name in {:?}",
                        self.text
                    ));
                }
            };
            name.push(escaped);
        }
        Err(format!("unterminated quoted name in {:?}", self.text))
    }
}

fn unsupported(text: &str, what: &str) -> String {
    format!("{what} are not supported, in {text:?}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[track_caller]
    fn check(path: &str, document: &Value, expected: &[Value]) {
        let parsed = JsonPath::parse(path).unwrap_or_else(|error| panic!("{path}: {error}"));
        let selected: Vec<Value> = parsed
            .select_all(document, document)
            .into_iter()
            .cloned()
            .collect();
        assert_eq!(selected, expected, "{path}");
        if parsed.is_singular() {
            assert_eq!(
                parsed.select_one(document, document).cloned(),
                expected.first().cloned(),
                "{path}"
            );
        }
        assert_eq!(parsed.to_string(), path);
    }

    #[track_caller]
    fn check_error(path: &str, expected: &str) {
        let error = JsonPath::parse(path).unwrap_err();
        assert!(error.contains(expected), "{path}: {error}");
    }

    #[test]
    fn selects_members_indexes_and_wildcards() {
        let document = json!({
            "id": 820982911946154508_u64,
            "customer": {"email": "jon@example.com", "first name": "Jon", "o'k": 1, "tags": ["a", "b", "c"]},
            "line_items": [{"sku": "A"}, {"sku": "B"}],
            "über": true,
            "v2": 2,
        });
        check("$", &document, std::slice::from_ref(&document));
        check("$.id", &document, &[json!(820982911946154508_u64)]);
        check("$.customer.email", &document, &[json!("jon@example.com")]);
        check("$['customer'][\"first name\"]", &document, &[json!("Jon")]);
        check("$.customer['o\\'k']", &document, &[json!(1)]);
        check("$[ 'customer' ].tags[0]", &document, &[json!("a")]);
        check("$.customer.tags[-1]", &document, &[json!("c")]);
        check("$.customer.tags[-4]", &document, &[]);
        check("$.customer.tags[3]", &document, &[]);
        check("$.über", &document, &[json!(true)]);
        check("$.v2", &document, &[json!(2)]);
        check("$.missing.deeper", &document, &[]);
        check("$.id.deeper", &document, &[]);
        check("$.line_items[*].sku", &document, &[json!("A"), json!("B")]);
        check(
            "$.line_items.*",
            &document,
            &[json!({"sku": "A"}), json!({"sku": "B"})],
        );
        check(
            "$.customer.tags[*]",
            &document,
            &[json!("a"), json!("b"), json!("c")],
        );
        check("$.id[*]", &document, &[]);
    }

    #[test]
    fn current_node_paths_start_from_the_element() {
        let document = json!({"events": [{"email": "a@example.com"}]});
        let element = &document["events"][0];
        let path = JsonPath::parse("@.email").unwrap();
        assert_eq!(path.root(), Root::Current);
        assert_eq!(
            path.select_one(&document, element),
            Some(&json!("a@example.com"))
        );
        let path = JsonPath::parse("$.events[0].email").unwrap();
        assert_eq!(
            path.select_one(&document, element),
            Some(&json!("a@example.com"))
        );
    }

    #[test]
    fn refuses_what_it_does_not_support() {
        check_error("customer.email", "must start with `$`");
        check_error("", "must start with `$`");
        check_error("$..email", "descendant segments");
        check_error("$.items[?@.price > 1]", "filters");
        check_error("$.items[1:2]", "slices");
        check_error("$.items[:2]", "slices");
        check_error("$.items[0,1]", "unions");
        check_error("$.", "expected a member name");
        check_error("$.1st", "expected a member name");
        check_error("$.first-name", "expected `.` or `[`");
        check_error("$[01]", "invalid array index");
        check_error("$[-0]", "invalid array index");
        check_error("$[99999999999999999999]", "out of range");
        check_error("$['open", "unterminated");
        check_error("$['a'", "expected `]`");
        check_error("$['\\x']", "invalid escape");
        check_error("$[name]", "expected a quoted name");
    }

    #[test]
    fn quoted_names_decode_escapes() {
        let path = JsonPath::parse(r#"$["a\"b\u00e9\n"]"#).unwrap();
        let document = json!({"a\"bé\n": 1});
        assert_eq!(path.select_one(&document, &document), Some(&json!(1)));
    }
}
