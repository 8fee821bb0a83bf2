//! `${NAME}` substitution in string values, applied to the parsed document before serde sees it.
//!
//! `${NAME}` is replaced by the variable, `$${` stands for a literal `${`, and any other `$` is
//! kept as it is. Only string *values* are rewritten (at any depth, including inside arrays of tables); table
//! keys, numbers and booleans are left alone. A substituted value is not scanned again, so a
//! variable whose value contains `${...}` is used as it is.

use std::borrow::Cow;

use toml::de::{DeTable, DeValue};

use crate::path::TomlPath;

/// A looked-up environment: returns the value of a variable, or `None` when it is not set.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A problem found while interpolating one string, with the path of that string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InterpolationProblem {
    pub(crate) path: TomlPath,
    pub(crate) message: String,
}

/// Replaces `${NAME}` in every string value of `document`, reporting every problem found.
pub(crate) fn interpolate_document(
    document: &mut DeTable<'_>,
    env: EnvLookup<'_>,
) -> Vec<InterpolationProblem> {
    let mut problems = Vec::new();
    let mut path = TomlPath::root();
    interpolate_table(document, env, &mut path, &mut problems);
    problems
}

fn interpolate_table(
    table: &mut DeTable<'_>,
    env: EnvLookup<'_>,
    path: &mut TomlPath,
    problems: &mut Vec<InterpolationProblem>,
) {
    for (key, value) in table.iter_mut() {
        path.push_key(key.get_ref());
        interpolate_value(value.get_mut(), env, path, problems);
        path.pop();
    }
}

fn interpolate_value(
    value: &mut DeValue<'_>,
    env: EnvLookup<'_>,
    path: &mut TomlPath,
    problems: &mut Vec<InterpolationProblem>,
) {
    match value {
        DeValue::String(text) => match interpolate_str(text, env) {
            Ok(Cow::Borrowed(_)) => {}
            Ok(Cow::Owned(replaced)) => *text = Cow::Owned(replaced),
            Err(messages) => {
                problems.extend(messages.into_iter().map(|message| InterpolationProblem {
                    path: path.clone(),
                    message,
                }));
            }
        },
        DeValue::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                path.push_index(index);
                interpolate_value(item.get_mut(), env, path, problems);
                path.pop();
            }
        }
        DeValue::Table(table) => interpolate_table(table, env, path, problems),
        DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) | DeValue::Datetime(_) => {}
    }
}

/// Substitutes one string. Returns every problem in it; messages never repeat the string itself,
/// which may be a secret.
pub(crate) fn interpolate_str<'a>(
    input: &'a str,
    env: EnvLookup<'_>,
) -> Result<Cow<'a, str>, Vec<String>> {
    if !input.contains('$') {
        return Ok(Cow::Borrowed(input));
    }
    let mut output = String::with_capacity(input.len());
    let mut problems = Vec::new();
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        output.push_str(&rest[..dollar]);
        rest = &rest[dollar..];
        if let Some(after) = rest.strip_prefix("$${") {
            output.push_str("${");
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            let Some(close) = after.find('}') else {
                problems.push(
                    r#"unterminated "${", expected "${NAME}" (write "$${" for a literal "${")"#
                        .to_owned(),
                );
                rest = "";
                break;
            };
            let name = &after[..close];
            rest = &after[close + 1..];
            if !is_variable_name(name) {
                problems.push(format!(
                    "invalid environment variable name {name:?} in \"${{...}}\", \
                     expected letters, digits and '_'"
                ));
            } else if let Some(value) = env(name) {
                output.push_str(&value);
            } else {
                problems.push(format!("environment variable {name} is not set"));
            }
        } else {
            output.push('$');
            rest = &rest[1..];
        }
    }
    output.push_str(rest);
    if problems.is_empty() {
        Ok(Cow::Owned(output))
    } else {
        Err(problems)
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`, the portable shell variable name.
fn is_variable_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(first) if first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("secret".to_owned()),
            "EMPTY" => Some(String::new()),
            "TRICKY" => Some("${KEY}".to_owned()),
            _ => None,
        }
    }

    #[track_caller]
    fn check(input: &str, expected: Result<&str, &[&str]>) {
        let actual = interpolate_str(input, &env);
        let actual = actual
            .as_ref()
            .map(|text| text.as_ref())
            .map_err(|problems| problems.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(
            actual,
            expected.map_err(<[&str]>::to_vec),
            "input: {input:?}"
        );
    }

    #[test]
    fn substitutes_and_escapes() {
        check("plain", Ok("plain"));
        check("${KEY}", Ok("secret"));
        check("a-${KEY}-b-${KEY}", Ok("a-secret-b-secret"));
        check("${EMPTY}", Ok(""));
        check("$${KEY}", Ok("${KEY}"));
        // Scanning is left to right: a lone '$' is literal, then "$${" is the escape.
        check("$$${KEY}", Ok("$${KEY}"));
        check("cost: $5, $$, $", Ok("cost: $5, $$, $"));
        check("${TRICKY}", Ok("${KEY}"));
        check("ünï${KEY}cødé", Ok("ünïsecretcødé"));
    }

    #[test]
    fn reports_every_problem_without_the_value() {
        check(
            "${MISSING}",
            Err(&["environment variable MISSING is not set"]),
        );
        check(
            "${A}:${B}",
            Err(&[
                "environment variable A is not set",
                "environment variable B is not set",
            ]),
        );
        check(
            "${KEY",
            Err(&[r#"unterminated "${", expected "${NAME}" (write "$${" for a literal "${")"#]),
        );
        check(
            "${}",
            Err(&[
                r#"invalid environment variable name "" in "${...}", expected letters, digits and '_'"#,
            ]),
        );
        check(
            "${KEY:-default}",
            Err(&[
                r#"invalid environment variable name "KEY:-default" in "${...}", expected letters, digits and '_'"#,
            ]),
        );
        check(
            "${1X}",
            Err(&[
                r#"invalid environment variable name "1X" in "${...}", expected letters, digits and '_'"#,
            ]),
        );
    }
}
