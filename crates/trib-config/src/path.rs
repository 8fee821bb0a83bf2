//! TOML paths (`sources[1].write_key`) and their line numbers in the source text.
//!
//! Every problem the crate reports names a path. The line is found afterwards by walking the
//! spanned parse tree ([`toml::de::DeTable`]) along that path, so validation code never has to
//! carry spans around.

use std::fmt;

use toml::de::{DeTable, DeValue};

/// A location in a TOML document: a list of table keys and array indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TomlPath {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl TomlPath {
    /// The document root; displays as an empty string.
    pub(crate) fn root() -> Self {
        Self::default()
    }

    /// A top-level key.
    pub(crate) fn key(key: &str) -> Self {
        Self::root().join(key)
    }

    /// This path followed by a table key.
    pub(crate) fn join(&self, key: &str) -> Self {
        let mut path = self.clone();
        path.push_key(key);
        path
    }

    /// This path followed by an array index.
    pub(crate) fn at(&self, index: usize) -> Self {
        let mut path = self.clone();
        path.push_index(index);
        path
    }

    pub(crate) fn push_key(&mut self, key: &str) {
        self.segments.push(Segment::Key(key.to_owned()));
    }

    pub(crate) fn push_index(&mut self, index: usize) {
        self.segments.push(Segment::Index(index));
    }

    pub(crate) fn pop(&mut self) {
        self.segments.pop();
    }

    /// Converts the path that `serde_path_to_error` recorded.
    pub(crate) fn from_serde(path: &serde_path_to_error::Path) -> Self {
        let mut result = Self::root();
        for segment in path.iter() {
            match segment {
                serde_path_to_error::Segment::Seq { index } => result.push_index(*index),
                serde_path_to_error::Segment::Map { key } => result.push_key(key),
                serde_path_to_error::Segment::Enum { variant } => result.push_key(variant),
                // Nothing useful to show; the line number still points at the problem.
                serde_path_to_error::Segment::Unknown => {}
            }
        }
        result
    }

    /// The 1-based line of the deepest part of this path that exists in `document`.
    ///
    /// A missing key (`sources[0].name` in a source without a name) resolves to the line of its
    /// parent table. The root itself has no useful line.
    pub(crate) fn line_in(&self, document: &DeTable<'_>, text: &str) -> Option<usize> {
        let mut span = None;
        let mut table = Some(document);
        let mut array = None;
        for segment in &self.segments {
            let value = match (segment, table, array) {
                (Segment::Key(key), Some(current), _) => current.get(key.as_str()),
                (Segment::Index(index), _, Some(current)) => {
                    let items: &[toml::Spanned<DeValue<'_>>] = current;
                    items.get(*index)
                }
                _ => None,
            };
            let Some(value) = value else { break };
            span = Some(value.span());
            table = value.get_ref().as_table();
            array = value.get_ref().as_array().map(|items| &items[..]);
        }
        span.map(|span| line_of_offset(text, span.start))
    }
}

impl fmt::Display for TomlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Key(key) => {
                    if position > 0 {
                        f.write_str(".")?;
                    }
                    if is_bare_key(key) {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// The 1-based line that contains byte `offset` of `text`.
pub(crate) fn line_of_offset(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|byte| **byte == b'\n')
        .count()
        + 1
}

/// Whether TOML accepts `key` without quotes.
fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_keys_and_indexes() {
        let path = TomlPath::key("sources").at(2).join("write_key");
        assert_eq!(path.to_string(), "sources[2].write_key");
        assert_eq!(TomlPath::key("a.b").join("c").to_string(), r#""a.b".c"#);
        assert_eq!(TomlPath::root().to_string(), "");
    }

    #[test]
    fn finds_the_line_of_the_deepest_existing_part() {
        let text = "version = 1\n\n[[sources]]\nname = \"a\"\n\n[[sources]]\nname = \"b\"\nwrite_key = \"k\"\n";
        let document = DeTable::parse(text).unwrap();
        let line = |path: TomlPath| path.line_in(document.get_ref(), text);
        assert_eq!(line(TomlPath::key("version")), Some(1));
        assert_eq!(
            line(TomlPath::key("sources").at(1).join("write_key")),
            Some(8)
        );
        assert_eq!(line(TomlPath::key("sources").at(0).join("name")), Some(4));
        // sources[0] has no write_key: the line of its table is the best we can do.
        let missing = line(TomlPath::key("sources").at(0).join("write_key"));
        assert!(matches!(missing, Some(3..=4)), "{missing:?}");
        assert_eq!(line(TomlPath::key("server")), None);
    }
}
