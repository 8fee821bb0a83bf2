//! Personalized rendering: Liquid templates over a person's consented data, MJML compiled to
//! responsive HTML once per template version, static checks before anything is sent, previews
//! and test sends.
//!
//! * [`source`]: templates are `NAME.toml` files in the templates directory (`purpose`,
//!   `version`, `subject`, `preheader`, `html`/`mjml` inline or `*_file`, optional `text`).
//! * [`check`]: the static check: unknown variables, fields the purpose does not allow,
//!   optional fields printed without `default`, unknown filters, `include`/`render`, `raw` on
//!   a person's data (refused), URL attributes that start with a person's data (a warning);
//!   each with the part, line and column.
//! * [`compile`]: [`Compiler`] checks and compiles a template ([`CompiledTemplate`]): MJML →
//!   HTML with mrml first (Liquid kept as text), automatic HTML escaping of outputs, the URL
//!   guard on outputs that start a URL attribute, the text part derived from the HTML when
//!   absent, every part parsed by `liquid` once.
//! * [`url`]: where an output starts a URL attribute of the HTML, and the guard that renders
//!   a value whose scheme is not http, https, mailto, tel or cid (or none) as `about:blank`.
//! * [`context`]: the Liquid context of one person (`profile.traits.*`, `profile.email` and the
//!   other allowed identifier types, `events.recent`, `events.last.EVENT_KEY`), holding only
//!   what the template reads.
//! * [`render`]: [`CompiledTemplate::render`] takes a `Permitted<RenderInput>` only, so a
//!   person without consent for the template's purpose cannot be rendered; it puts the
//!   preheader, escaped, as a hidden block after `<body>`, and can report which fallbacks
//!   fired, which fields were missing and which URL values were blocked.
//! * [`send`]: a test send over SMTP (lettre, rustls with ring) to an internal seed list.
//!
//! Sandbox: no partials (`include`/`render` are refused by the check and have no source), no
//! `mj-include` loader, no file or network access while rendering; each part is limited in
//! size and time ([`Limits`]). Ranges in loops are bounded by Liquid itself only by the data
//! they loop over; the time limit is checked as output is written.
//!
//! The crate does not read configuration, the profile store, the consent ledger or the audit
//! log: callers (the API, the CLI) fetch the person, obtain the permit and record the access.

pub mod check;
pub mod compile;
pub mod context;
mod error;
pub mod render;
mod scan;
pub mod send;
pub mod source;
mod text;
pub mod url;
pub mod vocabulary;

pub use check::{CheckOptions, Diagnostic, DiagnosticKind, Severity};
pub use compile::{CompiledTemplate, Compiler, Limits, Templates};
pub use context::RenderInput;
pub use error::RenderError;
pub use render::{BlockedUrl, RenderReport, RenderedEmail};
pub use send::{SmtpSecurity, SmtpSettings, send_to_seeds};
pub use source::{Body, TemplateSource};
pub use vocabulary::{PurposeFields, Vocabulary, event_key};
