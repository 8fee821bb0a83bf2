//! Template definitions: a directory of `NAME.toml` files.
//!
//! ```toml
//! purpose = "email_marketing"   # a declared [[privacy.purposes]] name
//! version = 3                   # any string or integer; compiled once per version
//! subject = "{{ profile.traits.firstName | default: 'Hello' }}, your picks"
//! preheader = "New this week"
//! mjml_file = "weekly.mjml"     # or mjml = "...", html = "...", html_file = "..."
//! text = "..."                  # optional: derived from the HTML when absent
//! ```
//!
//! `*_file` paths are relative to the templates directory and must stay inside it: templates
//! never read other files.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::error::RenderError;

/// One template as written, before checking and compiling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSource {
    /// The file name without `.toml`.
    pub name: String,
    /// The declared purpose the template's data is permitted for.
    pub purpose: String,
    /// The version; a changed version is compiled again.
    pub version: String,
    pub subject: String,
    pub preheader: String,
    /// The HTML body, or MJML compiled to HTML.
    pub body: Body,
    /// The plain-text body; derived from the HTML when absent.
    pub text: Option<String>,
}

/// The body of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Html(String),
    Mjml(String),
}

impl Body {
    /// The Liquid source of the body.
    pub fn source(&self) -> &str {
        match self {
            Body::Html(text) | Body::Mjml(text) => text,
        }
    }

    /// `html` or `mjml`, the part's name in diagnostics.
    pub fn part_name(&self) -> &'static str {
        match self {
            Body::Html(_) => "html",
            Body::Mjml(_) => "mjml",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    purpose: String,
    version: toml::Value,
    subject: String,
    #[serde(default)]
    preheader: String,
    html: Option<String>,
    html_file: Option<String>,
    mjml: Option<String>,
    mjml_file: Option<String>,
    text: Option<String>,
    text_file: Option<String>,
}

/// Reads every `*.toml` template of `dir`, sorted by name.
pub fn load_dir(dir: &Path) -> Result<Vec<TemplateSource>, RenderError> {
    let read_error = |source| RenderError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_error)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    paths.sort();
    paths.iter().map(|path| load_file(path)).collect()
}

/// Reads one `NAME.toml` template; `*_file` parts are read beside it.
pub fn load_file(path: &Path) -> Result<TemplateSource, RenderError> {
    let name = path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap_or_default()
        .to_owned();
    let text = read(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&name, &text, Some(dir))
}

/// Parses a template definition; `dir` is where `*_file` parts are read (none without it).
pub fn parse(name: &str, text: &str, dir: Option<&Path>) -> Result<TemplateSource, RenderError> {
    let definition = |message: String| RenderError::Definition {
        name: name.to_owned(),
        message,
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(definition(
            "a template name is made of a-z, A-Z, 0-9, `_` and `-`".to_owned(),
        ));
    }
    let raw: RawTemplate = toml::from_str(text).map_err(|error| definition(error.to_string()))?;
    let version = match raw.version {
        toml::Value::String(text) if !text.trim().is_empty() => text,
        toml::Value::Integer(number) => number.to_string(),
        _ => {
            return Err(definition(
                "version: a non-empty string or an integer".to_owned(),
            ));
        }
    };
    let part = |inline: Option<String>, file: Option<String>, key: &str| match (inline, file) {
        (Some(_), Some(_)) => Err(definition(format!("give {key} or {key}_file, not both"))),
        (Some(text), None) => Ok(Some(text)),
        (None, Some(file)) => {
            let dir = dir.ok_or_else(|| {
                definition(format!(
                    "{key}_file: not available for templates sent inline"
                ))
            })?;
            Ok(Some(read(&inside(dir, &file).map_err(definition)?)?))
        }
        (None, None) => Ok(None),
    };
    let html = part(raw.html, raw.html_file, "html")?;
    let mjml = part(raw.mjml, raw.mjml_file, "mjml")?;
    let body = match (html, mjml) {
        (Some(html), None) => Body::Html(html),
        (None, Some(mjml)) => Body::Mjml(mjml),
        (Some(_), Some(_)) => {
            return Err(definition(
                "give an html or an mjml body, not both".to_owned(),
            ));
        }
        (None, None) => return Err(definition("an html or mjml body is required".to_owned())),
    };
    Ok(TemplateSource {
        name: name.to_owned(),
        purpose: raw.purpose,
        version,
        subject: raw.subject,
        preheader: raw.preheader,
        body,
        text: part(raw.text, raw.text_file, "text")?,
    })
}

/// `file` under `dir`, refusing absolute paths and `..`.
fn inside(dir: &Path, file: &str) -> Result<PathBuf, String> {
    let relative = Path::new(file);
    if relative
        .components()
        .all(|component| matches!(component, Component::Normal(_)))
    {
        Ok(dir.join(relative))
    } else {
        Err(format!(
            "{file:?}: a part file is a relative path inside the templates directory"
        ))
    }
}

fn read(path: &Path) -> Result<String, RenderError> {
    std::fs::read_to_string(path).map_err(|source| RenderError::Read {
        path: path.to_owned(),
        source,
    })
}
