//! Compiling a checked template once per version: MJML to HTML, automatic escaping, the
//! derived text part, and the Liquid parse of every part.
//!
//! **MJML and Liquid.** MJML is compiled to HTML *before* Liquid runs, once per template
//! version, so a render costs only the Liquid pass (recompiling MJML per person would cost
//! about a millisecond each). Liquid markup passes through mrml as text: outputs and inline
//! tags inside `mj-text`, `mj-button` and attribute values are kept verbatim. A block tag that
//! stands between MJML elements (`{% if %}` before an `<mj-section>`, `{% for %}` around one)
//! would be dropped by the MJML parser, so it is wrapped in an HTML comment before mrml and
//! unwrapped after: mrml keeps comments where they stand, and each section renders its own
//! balanced Outlook (`<!--[if mso]>`) wrappers, so removing or repeating a whole section with
//! Liquid keeps the HTML well formed. The resulting HTML is then parsed as Liquid.
//!
//! **Escaping.** Every `{{ }}` of the HTML part gets a final `escape_once` filter (so a value
//! captured from an already escaped output is not escaped twice) unless its chain ends in
//! `escape`, `escape_once` or `raw`; `raw` is removed and prints the value as is. The subject,
//! preheader and text parts are not escaped.
//!
//! **URLs.** Every output of the HTML that starts the value of a URL attribute (`href`,
//! `src`, ...; see [`crate::url`]) also gets a final `tributary_url_guard` filter (before
//! `escape_once`), which renders a value whose scheme is not http, https, mailto, tel or cid
//! as `about:blank` and records it for the render report. Only those outputs pay for it.
//!
//! **Text.** When a template has no `text`, one is derived from the Liquid HTML at compile
//! time (tags removed, links as `label (url)`), and rendered like any text part.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use crate::check::{self, CheckOptions, Diagnostic, Severity};
use crate::context::{ContextPlan, Probe};
use crate::error::RenderError;
use crate::scan::{self, MarkupKind, Scan};
use crate::source::{Body, TemplateSource};
use crate::text;
use crate::url::{self, UrlSite};
use crate::vocabulary::{PurposeFields, Vocabulary};

/// Limits on one render: the size of each part and the time a part may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest a rendered part may be, in bytes. Default 1 MiB.
    pub max_output_bytes: usize,
    /// The longest a part may take to render. Default 1 s. Checked as output is written: a
    /// loop that writes nothing is bounded by the size of the data it loops over (templates
    /// cannot build large ranges: the static check bounds literal ranges and `limit:`).
    pub max_render_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_output_bytes: 1024 * 1024,
            max_render_time: Duration::from_secs(1),
        }
    }
}

/// Checks and compiles templates against one vocabulary and purpose policy.
#[derive(Debug, Clone)]
pub struct Compiler {
    vocabulary: Arc<Vocabulary>,
    fields: Arc<PurposeFields>,
    options: CheckOptions,
    limits: Limits,
}

/// A template ready to render: every part parsed once, MJML already compiled.
pub struct CompiledTemplate {
    pub(crate) name: String,
    pub(crate) purpose: String,
    pub(crate) version: String,
    pub(crate) subject: liquid::Template,
    pub(crate) preheader: liquid::Template,
    pub(crate) html: liquid::Template,
    pub(crate) text: liquid::Template,
    pub(crate) plan: ContextPlan,
    pub(crate) probes: Vec<Probe>,
    pub(crate) limits: Limits,
    /// The guarded URL outputs of the HTML, by site number: (attribute, variable).
    pub(crate) url_sites: Vec<(String, String)>,
    warnings: Vec<Diagnostic>,
}

impl std::fmt::Debug for CompiledTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledTemplate")
            .field("name", &self.name)
            .field("purpose", &self.purpose)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The one Liquid parser: the standard tags and filters, and the URL guard the compile step
/// appends; partials (`include`, `render`) have no source, and the static check refuses them.
pub(crate) fn parser() -> &'static liquid::Parser {
    static PARSER: LazyLock<liquid::Parser> = LazyLock::new(|| {
        liquid::ParserBuilder::with_stdlib()
            .filter(url::UrlGuard)
            .build()
            .expect("the standard library parser always builds")
    });
    &PARSER
}

impl Compiler {
    /// A compiler for templates over this vocabulary and these purposes.
    pub fn new(
        vocabulary: Vocabulary,
        fields: PurposeFields,
        options: CheckOptions,
        limits: Limits,
    ) -> Self {
        Self {
            vocabulary: Arc::new(vocabulary),
            fields: Arc::new(fields),
            options,
            limits,
        }
    }

    /// Runs the static check only.
    pub fn check(&self, source: &TemplateSource) -> Vec<Diagnostic> {
        check::check(source, &self.vocabulary, &self.fields, self.options)
    }

    /// Checks and compiles a template; refuses it when the check finds an error.
    pub fn compile(&self, source: &TemplateSource) -> Result<CompiledTemplate, RenderError> {
        let diagnostics = self.check(source);
        if diagnostics.iter().any(|d| d.severity == Severity::Error) {
            return Err(RenderError::Check {
                name: source.name.clone(),
                diagnostics: diagnostics
                    .into_iter()
                    .filter(|d| d.severity == Severity::Error)
                    .collect(),
            });
        }
        let liquid_html = match &source.body {
            Body::Html(html) => html.clone(),
            Body::Mjml(mjml) => mjml_to_html(&source.name, mjml)?,
        };
        let text_source = match &source.text {
            Some(text) => text.clone(),
            None => text::html_to_text(&liquid_html),
        };

        let mut scans = Vec::new();
        let mut url_sites = Vec::new();
        let parse = |part: &'static str,
                     text: &str,
                     escape: bool,
                     scans: &mut Vec<Scan>,
                     url_sites: &mut Vec<(String, String)>| {
            let scanned = scan::scan(text).map_err(|error| RenderError::Render {
                template: source.name.clone(),
                part,
                message: error.message,
            })?;
            let guarded = if escape {
                url::url_sites(text, &scanned)
            } else {
                Vec::new()
            };
            for site in &guarded {
                url_sites.push((
                    site.attribute.clone(),
                    printed_variable(text, &scanned, site),
                ));
            }
            let prepared = rewrite_outputs(text, &scanned, escape, &guarded);
            scans.push(scanned);
            parser()
                .parse(&prepared)
                .map_err(|error| RenderError::Render {
                    template: source.name.clone(),
                    part,
                    message: error.to_string(),
                })
        };
        let subject = parse(
            "subject",
            &source.subject,
            false,
            &mut scans,
            &mut url_sites,
        )?;
        let preheader = parse(
            "preheader",
            &source.preheader,
            false,
            &mut scans,
            &mut url_sites,
        )?;
        let html = parse("html", &liquid_html, true, &mut scans, &mut url_sites)?;
        let text = parse("text", &text_source, false, &mut scans, &mut url_sites)?;
        let (plan, probes) = ContextPlan::from_scans(&self.vocabulary, &scans);
        Ok(CompiledTemplate {
            name: source.name.clone(),
            purpose: source.purpose.clone(),
            version: source.version.clone(),
            subject,
            preheader,
            html,
            text,
            plan,
            probes,
            limits: self.limits,
            url_sites,
            warnings: diagnostics,
        })
    }
}

impl CompiledTemplate {
    /// The template's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The purpose its data must be permitted for.
    pub fn purpose(&self) -> &str {
        &self.purpose
    }

    /// The version it was compiled from.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The check's warnings (errors refuse compilation).
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }
}

/// Compiled templates by name, each compiled once per version.
#[derive(Debug, Default, Clone)]
pub struct Templates {
    by_name: BTreeMap<String, Arc<CompiledTemplate>>,
}

impl Templates {
    /// Compiles every source; the templates that fail come back with their error, the others
    /// are kept. A template whose name and version are already in `previous` is reused.
    pub fn compile_all(
        compiler: &Compiler,
        sources: &[TemplateSource],
        previous: Option<&Templates>,
    ) -> (Templates, Vec<RenderError>) {
        let mut templates = Templates::default();
        let mut failures = Vec::new();
        for source in sources {
            let reused = previous
                .and_then(|previous| previous.by_name.get(&source.name))
                .filter(|compiled| {
                    compiled.version == source.version && compiled.purpose == source.purpose
                });
            let compiled = match reused {
                Some(compiled) => compiled.clone(),
                None => match compiler.compile(source) {
                    Ok(compiled) => Arc::new(compiled),
                    Err(error) => {
                        failures.push(error);
                        continue;
                    }
                },
            };
            templates.by_name.insert(source.name.clone(), compiled);
        }
        (templates, failures)
    }

    /// The compiled template called `name`.
    pub fn get(&self, name: &str) -> Result<Arc<CompiledTemplate>, RenderError> {
        self.by_name
            .get(name)
            .cloned()
            .ok_or_else(|| RenderError::UnknownTemplate(name.to_owned()))
    }

    /// Adds or replaces one compiled template.
    pub fn insert(&mut self, template: CompiledTemplate) {
        self.by_name
            .insert(template.name.clone(), Arc::new(template));
    }

    /// The names of the compiled templates.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

/// Compiles MJML to HTML, keeping Liquid markup (see the module docs).
fn mjml_to_html(name: &str, mjml: &str) -> Result<String, RenderError> {
    const OPEN: &str = "<!--tributary-liquid:";
    const CLOSE: &str = ":tributary-liquid-->";
    let scanned = scan::scan(mjml).map_err(|error| RenderError::Mjml {
        name: name.to_owned(),
        message: error.message,
    })?;
    let mut protected = String::with_capacity(mjml.len() + 64);
    let mut at = 0;
    for markup in &scanned.markups {
        protected.push_str(&mjml[at..markup.span.start]);
        let before = mjml[..markup.span.start].trim_end().chars().last();
        let after = mjml[markup.span.end..].trim_start().chars().next();
        let between_elements =
            matches!(before, None | Some('>' | '}')) && matches!(after, None | Some('<' | '{'));
        if markup.kind == MarkupKind::Tag && between_elements {
            protected.push_str(OPEN);
            protected.push_str(&mjml[markup.span.clone()]);
            protected.push_str(CLOSE);
        } else {
            protected.push_str(&mjml[markup.span.clone()]);
        }
        at = markup.span.end;
    }
    protected.push_str(&mjml[at..]);

    let mjml_error = |message: String| RenderError::Mjml {
        name: name.to_owned(),
        message,
    };
    // The default parser options have no include loader: `mj-include` cannot read files.
    let parsed = mrml::parse(&protected).map_err(|error| mjml_error(error.to_string()))?;
    let html = parsed
        .element
        .render(&mrml::prelude::render::RenderOptions::default())
        .map_err(|error| mjml_error(error.to_string()))?;
    Ok(html.replace(OPEN, "").replace(CLOSE, ""))
}

/// Rewrites the outputs of a part for Liquid: removes a final `| raw`, appends the URL guard
/// to the outputs of `guarded` (numbered in order), and with `escape` appends
/// `| escape_once` to every other output not already escaped.
pub(crate) fn rewrite_outputs(
    text: &str,
    scanned: &Scan,
    escape: bool,
    guarded: &[UrlSite],
) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut at = 0;
    for (index, markup) in scanned.markups.iter().enumerate() {
        if markup.kind != MarkupKind::Output {
            continue;
        }
        let inner = markup.inner.clone();
        let last_filter = scanned
            .filters
            .iter()
            .rfind(|filter| inner.contains(&filter.offset));
        let mut end = inner.end;
        let mut append_escape = escape;
        if let Some(filter) = last_filter {
            match filter.name.as_str() {
                "raw" => {
                    if let Some(pipe) = text[inner.start..filter.offset].rfind('|') {
                        out.push_str(&text[at..inner.start + pipe]);
                        at = inner.end;
                    }
                    append_escape = false;
                    end = at;
                }
                "escape" | "escape_once" => append_escape = false,
                _ => {}
            }
        }
        let site = guarded.iter().position(|site| site.markup == index);
        if site.is_some() || append_escape {
            out.push_str(&text[at..end]);
            if let Some(site) = site {
                out.push_str(&format!(" | {}: {site}", url::GUARD_FILTER));
            }
            if append_escape {
                out.push_str(" | escape_once");
            }
            out.push(' ');
            at = end;
        }
    }
    out.push_str(&text[at..]);
    out
}

/// The variable an output prints, for reports: its first path (`profile.traits.website`), or
/// its expression when it reads none.
fn printed_variable(text: &str, scanned: &Scan, site: &UrlSite) -> String {
    let inner = scanned.markups[site.markup].inner.clone();
    scanned
        .references
        .iter()
        .find(|reference| inner.contains(&reference.offset))
        .map_or_else(
            || text[inner].trim().to_owned(),
            |reference| reference.path.join("."),
        )
}

/// The value at a path of a render's Liquid globals (`None` when a segment is absent); a
/// segment `[N]` indexes an array.
pub(crate) fn lookup<'a>(
    globals: &'a liquid::Object,
    path: &[String],
) -> Option<&'a liquid::model::Value> {
    use liquid::model::Value as Liquid;
    fn index(segment: &str) -> Option<&str> {
        segment.strip_prefix('[')?.strip_suffix(']')
    }
    let (first, rest) = path.split_first()?;
    let mut node = match index(first) {
        Some(_) => return None,
        None => globals.get(first.as_str())?,
    };
    for segment in rest {
        node = match (index(segment), node) {
            (Some(index), Liquid::Array(items)) => items.get(index.parse::<usize>().ok()?)?,
            (None, Liquid::Object(object)) => object.get(segment.as_str())?,
            _ => return None,
        };
    }
    Some(node)
}
