//! Step one of loading: TOML text → spanned document → `${ENV}` interpolation → `Raw*` struct.
//!
//! The spanned document is kept so that every later problem, including validation problems
//! found in step two, can be given a line number from its TOML path.

use serde::de::DeserializeOwned;
use toml::de::DeTable;

use crate::error::Problem;
use crate::interpolate::{EnvLookup, interpolate_document};
use crate::path::{TomlPath, line_of_offset};

/// The parsed document, kept to turn TOML paths into line numbers.
pub(crate) struct SourceMap<'a> {
    document: DeTable<'a>,
    text: &'a str,
}

impl SourceMap<'_> {
    /// A problem at `path`, with the line of `path` in the document.
    pub(crate) fn problem(&self, path: &TomlPath, message: impl Into<String>) -> Problem {
        Problem {
            path: path.to_string(),
            line: path.line_in(&self.document, self.text),
            message: message.into(),
        }
    }
}

/// Parses `text`, interpolates `${NAME}` when `env` is given, and deserializes the result.
///
/// Interpolation problems are all reported together. Serde stops at the first unknown key or
/// wrong type, so at most one such problem is reported.
pub(crate) fn parse_raw<'a, T: DeserializeOwned>(
    text: &'a str,
    env: Option<EnvLookup<'_>>,
) -> Result<(T, SourceMap<'a>), Vec<Problem>> {
    let document = DeTable::parse(text).map_err(|error| vec![syntax_problem(text, &error)])?;
    let source_map = SourceMap {
        document: document.get_ref().clone(),
        text,
    };

    let mut document = document;
    if let Some(env) = env {
        let problems = interpolate_document(document.get_mut(), env);
        if !problems.is_empty() {
            return Err(problems
                .into_iter()
                .map(|problem| source_map.problem(&problem.path, problem.message))
                .collect());
        }
    }

    let deserializer = toml::de::Deserializer::from(document);
    match serde_path_to_error::deserialize(deserializer) {
        Ok(raw) => Ok((raw, source_map)),
        Err(error) => {
            let path = TomlPath::from_serde(error.path());
            let inner = error.into_inner();
            let line = match inner.span() {
                Some(span) => Some(line_of_offset(text, span.start)),
                None => path.line_in(&source_map.document, text),
            };
            Err(vec![Problem {
                path: path.to_string(),
                line,
                message: plain_serde_message(inner.message()),
            }])
        }
    }
}

fn syntax_problem(text: &str, error: &toml::de::Error) -> Problem {
    Problem {
        path: String::new(),
        line: error.span().map(|span| line_of_offset(text, span.start)),
        message: format!("invalid TOML: {}", error.message()),
    }
}

/// Replaces the Rust names in serde's messages with TOML ones: "expected i64" becomes
/// "expected an integer", "expected struct RawServer" becomes "expected a table".
fn plain_serde_message(message: &str) -> String {
    let mut message = message
        .replace("expected i64", "expected an integer")
        .replace("expected a boolean", "expected a boolean (true or false)")
        .replace("expected a sequence", "expected an array");
    if let Some(start) = message.find("expected struct Raw") {
        let name_end = message[start + "expected struct ".len()..]
            .find(|c: char| !c.is_ascii_alphanumeric())
            .map_or(message.len(), |end| start + "expected struct ".len() + end);
        message.replace_range(start..name_end, "expected a table");
    }
    message
}

#[cfg(test)]
mod tests {
    use super::plain_serde_message;

    #[test]
    fn serde_messages_use_toml_words() {
        let check = |input: &str, expected: &str| assert_eq!(plain_serde_message(input), expected);
        check(
            "invalid type: string \"8\", expected i64",
            "invalid type: string \"8\", expected an integer",
        );
        check(
            "invalid type: integer `5`, expected struct RawServer",
            "invalid type: integer `5`, expected a table",
        );
        check(
            "invalid type: integer `5`, expected struct RawServer!",
            "invalid type: integer `5`, expected a table!",
        );
        check(
            "invalid type: integer `5`, expected a sequence",
            "invalid type: integer `5`, expected an array",
        );
    }
}
