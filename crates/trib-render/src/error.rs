//! [`RenderError`], the crate's one error type.

use std::path::PathBuf;

use crate::check::Diagnostic;

/// Why a template could not be loaded, compiled, rendered or sent.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// A template file or the templates directory cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A `NAME.toml` is not a valid template definition.
    #[error("template {name}: {message}")]
    Definition { name: String, message: String },
    /// The static check found errors; the template is not compiled.
    #[error("template {name} has {} error(s); first: {}", .diagnostics.len(), first(.diagnostics))]
    Check {
        name: String,
        diagnostics: Vec<Diagnostic>,
    },
    /// MJML could not be compiled to HTML.
    #[error("template {name}: mjml: {message}")]
    Mjml { name: String, message: String },
    /// No template has this name.
    #[error("no template named {0:?}")]
    UnknownTemplate(String),
    /// The permit was made for another purpose than the template's.
    #[error(
        "the data was permitted for purpose `{permitted}`, but template {template} is for `{purpose}`"
    )]
    PurposeMismatch {
        template: String,
        purpose: String,
        permitted: String,
    },
    /// Rendering failed (a value of the wrong type for a filter, for instance). The message
    /// names the template part, never a value.
    #[error("template {template}: rendering the {part} failed: {message}")]
    Render {
        template: String,
        part: &'static str,
        message: String,
    },
    /// A part grew past the output limit.
    #[error("template {template}: the {part} exceeds the output limit of {limit} bytes")]
    OutputTooLarge {
        template: String,
        part: &'static str,
        limit: usize,
    },
    /// Rendering took longer than the time limit.
    #[error("template {template}: rendering the {part} exceeded the time limit of {limit_ms} ms")]
    Timeout {
        template: String,
        part: &'static str,
        limit_ms: u128,
    },
    /// The message could not be built or sent over SMTP.
    #[error("smtp: {0}")]
    Smtp(String),
}

fn first(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .first()
        .map_or_else(String::new, ToString::to_string)
}
