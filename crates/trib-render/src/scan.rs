//! A small scanner for Liquid markup, for the static check and the compile-time rewrites.
//!
//! The `liquid` crate parses templates into opaque renderers, so it cannot tell which variables
//! and filters a template uses, nor where. This module finds every `{{ ... }}` and `{% ... %}`
//! (skipping `{% raw %}` and `{% comment %}` bodies) and reads the variable paths and filter
//! names inside them, with their byte offsets, so that problems are reported with a line and a
//! column. It does not evaluate anything; `liquid` stays the parser that renders.

use std::collections::BTreeSet;
use std::ops::Range;

/// One `{{ ... }}` or `{% ... %}` in a template part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Markup {
    /// `{{ }}` or `{% %}`.
    pub(crate) kind: MarkupKind,
    /// From the opening `{` to after the closing `}`.
    pub(crate) span: Range<usize>,
    /// The text between the delimiters (and their `-` whitespace controls).
    pub(crate) inner: Range<usize>,
}

/// Whether markup outputs a value or is a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MarkupKind {
    Output,
    Tag,
}

/// Where a variable is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// The value printed by `{{ }}`: a missing value prints nothing unless a `default` catches it.
    Output,
    /// A condition, a loop source, an assignment or a filter argument: a missing value is
    /// `nil`, which these handle.
    Other,
}

/// A variable path read by the template, such as `profile.traits.firstName`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reference {
    /// The path's segments; a numeric index is kept as `[0]`.
    pub(crate) path: Vec<String>,
    /// Byte offset of the path's first character in the part.
    pub(crate) offset: usize,
    pub(crate) usage: Use,
    /// For an output, whether its filter chain has `default`.
    pub(crate) has_default: bool,
    /// Whether a segment is indexed by a variable (`traits[name]`): the path stops there.
    pub(crate) dynamic: bool,
    /// For an output, whether an enclosing `if`/`unless` tests this same path (so it is
    /// printed only when present).
    pub(crate) guarded: bool,
}

/// A filter applied in the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FilterUse {
    pub(crate) name: String,
    /// Byte offset of the filter's name.
    pub(crate) offset: usize,
}

/// Everything the scanner found in one part.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scan {
    pub(crate) markups: Vec<Markup>,
    pub(crate) references: Vec<Reference>,
    pub(crate) filters: Vec<FilterUse>,
    /// Tag names with the offset of the name (`if`, `for`, `include`, ...).
    pub(crate) tags: Vec<(String, usize)>,
    /// Names the template declares (`for x in`, `assign`, `capture`, ...) plus `forloop`.
    pub(crate) locals: BTreeSet<String>,
    /// The locals defined from an expression (`assign x = ...`, `for x in ...`, `tablerow`),
    /// each with the range of `references` its expression reads.
    pub(crate) definitions: Vec<(String, Range<usize>)>,
    /// Open blocks, each with the paths its condition tests (while scanning).
    guards: Vec<Vec<Vec<String>>>,
}

/// A scanning problem: unclosed markup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanError {
    pub(crate) offset: usize,
    pub(crate) message: String,
}

/// Finds every markup of `source` and what it reads.
pub(crate) fn scan(source: &str) -> Result<Scan, ScanError> {
    let markups = find_markups(source)?;
    let mut result = Scan {
        locals: ["forloop", "tablerowloop"]
            .into_iter()
            .map(str::to_owned)
            .collect(),
        ..Scan::default()
    };
    for markup in &markups {
        let tokens = tokenize(source, markup.inner.clone());
        match markup.kind {
            MarkupKind::Output => {
                let first = result.references.len();
                read_expression(&tokens, true, &mut result);
                for index in first..result.references.len() {
                    let guarded = result
                        .guards
                        .iter()
                        .flatten()
                        .any(|path| *path == result.references[index].path);
                    result.references[index].guarded = guarded;
                }
            }
            MarkupKind::Tag => read_tag(&tokens, &mut result),
        }
    }
    result.markups = markups;
    Ok(result)
}

/// The 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn find_markups(source: &str) -> Result<Vec<Markup>, ScanError> {
    let bytes = source.as_bytes();
    let mut markups = Vec::new();
    let mut at = 0;
    // Inside `{% raw %}` or `{% comment %}`: the tag that ends it.
    let mut skipping: Option<&'static str> = None;
    while let Some(found) = source[at..].find('{') {
        let start = at + found;
        let kind = match bytes.get(start + 1) {
            Some(b'{') => MarkupKind::Output,
            Some(b'%') => MarkupKind::Tag,
            _ => {
                at = start + 1;
                continue;
            }
        };
        let close = if kind == MarkupKind::Output {
            "}}"
        } else {
            "%}"
        };
        let Some(end_rel) = find_close(&source[start + 2..], close) else {
            if skipping.is_some() {
                break;
            }
            return Err(ScanError {
                offset: start,
                message: format!(
                    "`{}` is never closed with `{close}`",
                    &source[start..start + 2]
                ),
            });
        };
        let end = start + 2 + end_rel + 2;
        let mut inner = start + 2..end - 2;
        if source[inner.clone()].starts_with('-') {
            inner.start += 1;
        }
        if inner.end > inner.start && source[inner.clone()].ends_with('-') {
            inner.end -= 1;
        }
        let name = first_word(&source[inner.clone()]);
        if let Some(end_tag) = skipping {
            if kind == MarkupKind::Tag && name == end_tag {
                skipping = None;
            }
            at = end;
            continue;
        }
        if kind == MarkupKind::Tag {
            match name {
                "raw" => skipping = Some("endraw"),
                "comment" => skipping = Some("endcomment"),
                _ => {}
            }
        }
        markups.push(Markup {
            kind,
            span: start..end,
            inner,
        });
        at = end;
    }
    Ok(markups)
}

/// The offset of `close` in `text`, ignoring quoted strings.
fn find_close(text: &str, close: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut quote: Option<u8> = None;
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        match quote {
            Some(q) if byte == q => quote = None,
            Some(_) => {}
            None if byte == b'"' || byte == b'\'' => quote = Some(byte),
            None if text[index..].starts_with(close) => return Some(index),
            None => {}
        }
        index += 1;
    }
    None
}

fn first_word(text: &str) -> &str {
    let trimmed = text.trim_start();
    let end = trimmed
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(trimmed.len());
    &trimmed[..end]
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str,
    Number(String),
    Dot,
    DotDot,
    LeftBracket,
    RightBracket,
    Pipe,
    Colon,
    Other,
}

fn tokenize(source: &str, range: Range<usize>) -> Vec<(Token, usize)> {
    let text = &source[range.clone()];
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        let offset = range.start + index;
        if byte.is_ascii_whitespace() {
            index += 1;
        } else if byte == b'"' || byte == b'\'' {
            let end = text[index + 1..]
                .find(byte as char)
                .map_or(bytes.len(), |at| index + 1 + at + 1);
            tokens.push((Token::Str, offset));
            index = end;
        } else if byte.is_ascii_digit()
            || (byte == b'-' && bytes.get(index + 1).is_some_and(u8::is_ascii_digit))
        {
            let mut end = index + 1;
            while end < bytes.len()
                && (bytes[end].is_ascii_digit()
                    || (bytes[end] == b'.' && bytes.get(end + 1).is_some_and(u8::is_ascii_digit)))
            {
                end += 1;
            }
            tokens.push((Token::Number(text[index..end].to_owned()), offset));
            index = end;
        } else if byte.is_ascii_alphabetic() || byte == b'_' {
            let mut end = index + 1;
            while end < bytes.len()
                && (bytes[end].is_ascii_alphanumeric()
                    || bytes[end] == b'_'
                    || bytes[end] == b'-'
                    || bytes[end] == b'?')
            {
                end += 1;
            }
            tokens.push((Token::Ident(text[index..end].to_owned()), offset));
            index = end;
        } else {
            let token = match byte {
                b'.' if bytes.get(index + 1) == Some(&b'.') => {
                    index += 1;
                    Token::DotDot
                }
                b'.' => Token::Dot,
                b'[' => Token::LeftBracket,
                b']' => Token::RightBracket,
                b'|' => Token::Pipe,
                b':' => Token::Colon,
                _ => Token::Other,
            };
            tokens.push((token, offset));
            index += 1;
        }
    }
    tokens
}

const KEYWORDS: [&str; 12] = [
    "and", "or", "contains", "in", "true", "false", "nil", "null", "empty", "blank", "reversed",
    "with",
];

fn read_tag(tokens: &[(Token, usize)], scan: &mut Scan) {
    let Some((Token::Ident(name), name_offset)) = tokens.first() else {
        return;
    };
    scan.tags.push((name.clone(), *name_offset));
    let rest = &tokens[1..];
    match name.as_str() {
        "for" | "tablerow" => {
            scan.guards.push(Vec::new());
            let first = scan.references.len();
            // Skip `x in`.
            read_expression(rest.get(2..).unwrap_or_default(), false, scan);
            if let Some((Token::Ident(local), _)) = rest.first() {
                scan.locals.insert(local.clone());
                let reads = first..scan.references.len();
                scan.definitions.push((local.clone(), reads));
            }
        }
        "assign" => {
            let first = scan.references.len();
            // Skip `x =`.
            read_expression(rest.get(2..).unwrap_or_default(), false, scan);
            if let Some((Token::Ident(local), _)) = rest.first() {
                scan.locals.insert(local.clone());
                let reads = first..scan.references.len();
                scan.definitions.push((local.clone(), reads));
            }
        }
        "capture" | "increment" | "decrement" => {
            if let Some((Token::Ident(local), _)) = rest.first() {
                scan.locals.insert(local.clone());
            }
        }
        "if" | "elsif" | "unless" => {
            let first = scan.references.len();
            read_expression(rest, false, scan);
            let tested: Vec<Vec<String>> = scan.references[first..]
                .iter()
                .map(|reference| reference.path.clone())
                .collect();
            if name == "elsif" {
                if let Some(frame) = scan.guards.last_mut() {
                    frame.clear();
                    frame.extend(tested);
                }
            } else {
                scan.guards.push(tested);
            }
        }
        "case" | "when" | "cycle" => {
            read_expression(rest, false, scan);
            if name == "case" {
                scan.guards.push(Vec::new());
            }
        }
        "else" => {
            if let Some(frame) = scan.guards.last_mut() {
                frame.clear();
            }
        }
        "endif" | "endunless" | "endcase" | "endfor" | "endtablerow" => {
            scan.guards.pop();
        }
        _ => {}
    }
}

/// Reads paths and filters from a token run. With `output`, the first path is the printed
/// value and the chain's `default` counts for it.
fn read_expression(tokens: &[(Token, usize)], output: bool, scan: &mut Scan) {
    let has_default = output
        && tokens.windows(2).any(|pair| {
            pair[0].0 == Token::Pipe && pair[1].0 == Token::Ident("default".to_owned())
        });
    let mut first_path = output;
    let mut index = 0;
    while index < tokens.len() {
        let (token, offset) = &tokens[index];
        match token {
            Token::Pipe => {
                if let Some((Token::Ident(filter), filter_offset)) = tokens.get(index + 1) {
                    scan.filters.push(FilterUse {
                        name: filter.clone(),
                        offset: *filter_offset,
                    });
                    index += 2;
                    continue;
                }
                first_path = false;
            }
            Token::Ident(word) => {
                let is_named_argument = matches!(tokens.get(index + 1), Some((Token::Colon, _)));
                if is_named_argument || KEYWORDS.contains(&word.as_str()) {
                    index += 1;
                    continue;
                }
                let (reference, next) = read_path(tokens, index);
                let usage = if first_path { Use::Output } else { Use::Other };
                scan.references.push(Reference {
                    usage,
                    has_default: usage == Use::Output && has_default,
                    offset: *offset,
                    ..reference
                });
                first_path = false;
                index = next;
                continue;
            }
            Token::Str | Token::Number(_) => first_path = false,
            _ => {}
        }
        index += 1;
    }
}

/// Reads `a.b["c"][0]` starting at an identifier; returns the path and the next token index.
fn read_path(tokens: &[(Token, usize)], start: usize) -> (Reference, usize) {
    let mut path = Vec::new();
    if let (Token::Ident(word), _) = &tokens[start] {
        path.push(word.clone());
    }
    let mut dynamic = false;
    let mut index = start + 1;
    loop {
        match (
            tokens.get(index),
            tokens.get(index + 1),
            tokens.get(index + 2),
        ) {
            (Some((Token::Dot, _)), Some((Token::Ident(word), _)), _) if !dynamic => {
                path.push(word.clone());
                index += 2;
            }
            (
                Some((Token::LeftBracket, _)),
                Some((Token::Number(number), _)),
                Some((Token::RightBracket, _)),
            ) if !dynamic => {
                path.push(format!("[{number}]"));
                index += 3;
            }
            (
                Some((Token::LeftBracket, _)),
                Some((Token::Str, _)),
                Some((Token::RightBracket, _)),
            ) => {
                // A quoted key: treated as dynamic, since its text is not kept.
                dynamic = true;
                index += 3;
            }
            (Some((Token::LeftBracket, _)), _, _) => {
                dynamic = true;
                // Skip to the matching bracket; the index expression is read as its own path.
                index += 1;
                let mut depth = 1;
                while let Some((token, _)) = tokens.get(index) {
                    match token {
                        Token::LeftBracket => depth += 1,
                        Token::RightBracket => {
                            depth -= 1;
                            if depth == 0 {
                                index += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    index += 1;
                }
            }
            _ => break,
        }
    }
    (
        Reference {
            path,
            offset: 0,
            usage: Use::Other,
            has_default: false,
            dynamic,
            guarded: false,
        },
        index,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(source: &str) -> Vec<(String, Use, bool)> {
        scan(source)
            .expect("scans")
            .references
            .into_iter()
            .map(|r| (r.path.join("."), r.usage, r.has_default))
            .collect()
    }

    #[test]
    fn reads_outputs_conditions_loops_and_filters() {
        let source = "Hi {{ profile.traits.firstName | default: \"there\" }}!\n\
            {% if profile.traits.plan == 'pro' and events.last.x %}{% endif %}\n\
            {% for p in events.last.order_completed.properties.products limit: 3 %}{{ p.name | upcase }}{% endfor %}\n\
            {% raw %}{{ not.scanned }}{% endraw %}{{ profile.email }}";
        assert_eq!(
            paths(source),
            vec![
                ("profile.traits.firstName".to_owned(), Use::Output, true),
                ("profile.traits.plan".to_owned(), Use::Other, false),
                ("events.last.x".to_owned(), Use::Other, false),
                (
                    "events.last.order_completed.properties.products".to_owned(),
                    Use::Other,
                    false
                ),
                ("p.name".to_owned(), Use::Output, false),
                ("profile.email".to_owned(), Use::Output, false),
            ]
        );
        let scanned = scan(source).expect("scans");
        let filters: Vec<&str> = scanned.filters.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(filters, ["default", "upcase"]);
        assert!(scanned.locals.contains("p"));
    }

    #[test]
    fn positions_are_lines_and_columns() {
        let source = "a\nbé {{ x }}";
        let scanned = scan(source).expect("scans");
        assert_eq!(line_column(source, scanned.references[0].offset), (2, 7));
        let error = scan("x {{ y").expect_err("unclosed");
        assert_eq!(line_column("x {{ y", error.offset), (1, 3));
    }
}
