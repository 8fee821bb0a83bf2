//! Rendering a compiled template for one person, from a `Permitted<RenderInput>` only.
//!
//! The rendered preheader is also put into the HTML, HTML-escaped, as the usual hidden block
//! right after `<body ...>` (at the start of a fragment without `<body>`), when it is not empty;
//! MJML templates get it the same way after compilation, so they need no `<mj-preview>`.

use std::io;
use std::time::Instant;

use liquid::model::{Value as Liquid, ValueView};
use serde::Serialize;
use trib_consent::Permitted;

use crate::compile::{CompiledTemplate, lookup};
use crate::context::RenderInput;
use crate::error::RenderError;
use crate::url;

/// One person's email.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenderedEmail {
    pub template: String,
    pub version: String,
    pub purpose: String,
    /// The profile it was rendered for (an id, not personal data).
    pub profile_id: String,
    pub subject: String,
    pub preheader: String,
    pub html: String,
    pub text: String,
}

/// What a render used of a person's data: the printed fields that fell back to their `default`
/// and the printed fields the person lacks (for the render matrix).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RenderReport {
    /// Paths whose `default` fired (the value was nil, false or empty).
    pub fallbacks: Vec<String>,
    /// Paths printed without a `default` whose value was missing (printed as nothing).
    pub missing: Vec<String>,
    /// URL attributes whose value, taken from a variable, had a scheme that is not allowed and
    /// was rendered as `about:blank` (each guarded output once).
    pub blocked_urls: Vec<BlockedUrl>,
}

/// A URL attribute value that was replaced by [`url::BLOCKED_URL`]: the value (never shown:
/// it is the person's data) started the attribute and its scheme was not http, https, mailto,
/// tel or cid (see [`crate::url`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockedUrl {
    /// The part, `html`.
    pub part: &'static str,
    /// The attribute, such as `href`.
    pub attribute: String,
    /// The variable printed there, such as `profile.traits.website`.
    pub variable: String,
}

impl std::fmt::Display for BlockedUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: `{}` from `{}` is not an http(s), mailto, tel, cid or relative URL and was rendered as {}",
            self.part,
            self.attribute,
            self.variable,
            url::BLOCKED_URL
        )
    }
}

impl CompiledTemplate {
    /// Renders the email for the person in `input`, which must be permitted for the template's
    /// purpose.
    pub fn render(&self, input: Permitted<RenderInput>) -> Result<RenderedEmail, RenderError> {
        self.render_inner(input, false).map(|(email, _)| email)
    }

    /// Renders and reports which fallbacks fired and which printed fields were missing.
    pub fn render_with_report(
        &self,
        input: Permitted<RenderInput>,
    ) -> Result<(RenderedEmail, RenderReport), RenderError> {
        self.render_inner(input, true)
    }

    fn render_inner(
        &self,
        input: Permitted<RenderInput>,
        with_report: bool,
    ) -> Result<(RenderedEmail, RenderReport), RenderError> {
        if input.purpose() != self.purpose {
            return Err(RenderError::PurposeMismatch {
                template: self.name.clone(),
                purpose: self.purpose.clone(),
                permitted: input.purpose().to_owned(),
            });
        }
        let input = input.into_inner();
        let globals = self.plan.build(&input);
        let mut report = if with_report {
            self.report(&globals)
        } else {
            RenderReport::default()
        };
        let subject = self.part("subject", &self.subject, &globals)?;
        let preheader = one_line(&self.part("preheader", &self.preheader, &globals)?);
        // Left over from a render on this thread that failed in its HTML part.
        url::take_blocked();
        let html = self.part("html", &self.html, &globals);
        let mut blocked = url::take_blocked();
        let mut html = html?;
        inject_preheader(&mut html, &preheader);
        if with_report {
            blocked.sort_unstable();
            blocked.dedup();
            report.blocked_urls = blocked
                .into_iter()
                .filter_map(|site| self.url_sites.get(site))
                .map(|(attribute, variable)| BlockedUrl {
                    part: "html",
                    attribute: attribute.clone(),
                    variable: variable.clone(),
                })
                .collect();
        }
        let email = RenderedEmail {
            template: self.name.clone(),
            version: self.version.clone(),
            purpose: self.purpose.clone(),
            profile_id: input.profile.id,
            subject: one_line(&subject),
            preheader,
            html,
            text: tidy_text(&self.part("text", &self.text, &globals)?),
        };
        Ok((email, report))
    }

    fn part(
        &self,
        part: &'static str,
        template: &liquid::Template,
        globals: &liquid::Object,
    ) -> Result<String, RenderError> {
        let mut writer = LimitedWriter {
            buffer: Vec::with_capacity(template_capacity(part)),
            limit: self.limits.max_output_bytes,
            started: Instant::now(),
            time_limit: self.limits.max_render_time,
            writes: 0,
            exceeded: None,
        };
        let result = template.render_to(&mut writer, globals);
        match (result, writer.exceeded) {
            (_, Some(Exceeded::Size)) => Err(RenderError::OutputTooLarge {
                template: self.name.clone(),
                part,
                limit: self.limits.max_output_bytes,
            }),
            (_, Some(Exceeded::Time)) => Err(RenderError::Timeout {
                template: self.name.clone(),
                part,
                limit_ms: self.limits.max_render_time.as_millis(),
            }),
            (Err(error), None) => Err(RenderError::Render {
                template: self.name.clone(),
                part,
                message: error.to_string(),
            }),
            (Ok(()), None) => {
                String::from_utf8(writer.buffer).map_err(|error| RenderError::Render {
                    template: self.name.clone(),
                    part,
                    message: error.to_string(),
                })
            }
        }
    }

    fn report(&self, globals: &liquid::Object) -> RenderReport {
        let mut report = RenderReport::default();
        for probe in &self.probes {
            let absent = match lookup(globals, &probe.path) {
                None | Some(Liquid::Nil) => true,
                // Numbers and dates never print as nothing: only an empty string does.
                Some(Liquid::Scalar(scalar)) => {
                    scalar.to_bool() == Some(false) || scalar.to_kstr().is_empty()
                }
                Some(Liquid::Array(items)) => items.is_empty(),
                Some(_) => false,
            };
            if absent {
                let path = probe.path.join(".");
                if probe.has_default {
                    report.fallbacks.push(path);
                } else {
                    report.missing.push(path);
                }
            }
        }
        report
    }
}

/// A first allocation for a part's output, so the HTML is not copied while it grows.
fn template_capacity(part: &str) -> usize {
    if part == "html" { 32 * 1024 } else { 1024 }
}

/// The hidden preheader block: shown by inbox previews, not in the opened email.
const PREHEADER_STYLE: &str = "display:none;font-size:1px;color:#ffffff;line-height:1px;max-height:0px;max-width:0px;opacity:0;overflow:hidden;mso-hide:all;";

/// Inserts the preheader, HTML-escaped, as a hidden block right after `<body ...>`, or at the
/// start of a fragment without `<body>`; nothing when the preheader is empty.
fn inject_preheader(html: &mut String, preheader: &str) {
    if preheader.is_empty() {
        return;
    }
    let at = body_content_start(html).unwrap_or(0);
    let mut block = String::with_capacity(preheader.len() + PREHEADER_STYLE.len() + 32);
    block.push_str("<div style=\"");
    block.push_str(PREHEADER_STYLE);
    block.push_str("\">");
    for c in preheader.chars() {
        match c {
            '&' => block.push_str("&amp;"),
            '<' => block.push_str("&lt;"),
            '>' => block.push_str("&gt;"),
            '"' => block.push_str("&quot;"),
            '\'' => block.push_str("&#39;"),
            c => block.push(c),
        }
    }
    block.push_str("</div>");
    html.insert_str(at, &block);
}

/// The offset after the `>` of the `<body ...>` start tag, in any case.
fn body_content_start(html: &str) -> Option<usize> {
    let is_body = |at: usize| {
        html.get(at..at + 5)
            .is_some_and(|tag| tag.eq_ignore_ascii_case("<body"))
            && html[at + 5..].starts_with(|c: char| c == '>' || c == '/' || c.is_ascii_whitespace())
    };
    // The common spelling first (a fast search), then any case.
    let start = match html.find("<body") {
        Some(at) if is_body(at) => at,
        _ => html
            .match_indices('<')
            .map(|(at, _)| at)
            .find(|&at| is_body(at))?,
    };
    html[start..].find('>').map(|end| start + end + 1)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Trims trailing spaces and collapses runs of blank lines, which Liquid tags leave behind.
fn tidy_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank_run += 1;
            if blank_run > 1 || out.is_empty() {
                continue;
            }
        } else {
            blank_run = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out.push('\n');
    out
}

enum Exceeded {
    Size,
    Time,
}

/// A buffer that refuses to grow past a limit or to keep writing past a deadline, so a
/// runaway loop stops with an error instead of exhausting memory.
struct LimitedWriter {
    buffer: Vec<u8>,
    limit: usize,
    started: Instant,
    time_limit: std::time::Duration,
    writes: u32,
    exceeded: Option<Exceeded>,
}

impl io::Write for LimitedWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.buffer.len() + bytes.len() > self.limit {
            self.exceeded = Some(Exceeded::Size);
            return Err(io::Error::other("output limit"));
        }
        self.writes = self.writes.wrapping_add(1);
        // Reading the clock on every write would cost more than most writes.
        if self.writes.is_multiple_of(64) && self.started.elapsed() > self.time_limit {
            self.exceeded = Some(Exceeded::Time);
            return Err(io::Error::other("time limit"));
        }
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
