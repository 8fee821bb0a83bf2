//! Dangerous URLs: where a Liquid output starts a URL attribute, and the guard that keeps a
//! person's data from choosing the URL's scheme.
//!
//! A value such as `javascript:alert(1)` printed at the start of `href` is escaped by the HTML
//! part's automatic escaping, but escaping does not change what the link does. So the compile
//! step finds every output that stands at the start of a URL attribute ([`URL_ATTRIBUTES`]) of
//! the compiled HTML (after MJML, so `mj-button href` is seen as the `<a href>` it becomes;
//! Outlook's conditional comments are read as HTML too) and appends the `tributary_url_guard`
//! filter to it. At render time the guard passes a value whose scheme is in
//! [`ALLOWED_SCHEMES`], or that has no scheme (a relative URL, a `#fragment`), and replaces any
//! other by [`BLOCKED_URL`], recording which output it replaced so the render report can say
//! so.
//!
//! "At the start" means that the attribute's literal text before the output (Liquid tags and
//! other outputs left out, entities decoded) has none of `:`, `/`, `?` and `#`: after
//! `https://shop.example/?u=` a value can no longer change the scheme, after `java` it can.
//! The scheme is read the way browsers read it: entities decoded (`java&#115;cript:`), tabs
//! and line breaks removed, leading spaces and control characters skipped, any case.
//!
//! Not covered: URLs inside CSS (`style="background:url(...)"`) and `<meta http-equiv=refresh>`.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use liquid_core::parser::{FilterArguments, ParameterReflection};
use liquid_core::{Expression, Filter, FilterReflection, ParseFilter, Runtime, Value, ValueView};

use crate::scan::{MarkupKind, Scan};

/// Attributes whose value is a URL (lowercase). `background-url` is MJML's (`mj-section`,
/// `mj-hero`), for the static check of MJML sources.
pub const URL_ATTRIBUTES: &[&str] = &[
    "action",
    "background",
    "background-url",
    "cite",
    "classid",
    "codebase",
    "data",
    "dynsrc",
    "formaction",
    "href",
    "icon",
    "longdesc",
    "lowsrc",
    "manifest",
    "poster",
    "profile",
    "src",
    "srcset",
    "usemap",
    "xlink:href",
    "xml:base",
];

/// The schemes a URL taken from a variable may have (any case). Values without a scheme
/// (relative URLs, `#fragment`, `//host/path`) pass as well.
pub const ALLOWED_SCHEMES: &[&str] = &["http", "https", "mailto", "tel", "cid"];

/// What a refused URL value renders as: inert as a link and as a resource.
pub const BLOCKED_URL: &str = "about:blank";

/// The name of the guard filter the compile step appends (templates cannot use it: it is not
/// among the check's filters).
pub(crate) const GUARD_FILTER: &str = "tributary_url_guard";

/// An output that starts the value of a URL attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UrlSite {
    /// Index of the output in `Scan::markups`.
    pub(crate) markup: usize,
    /// The attribute's name, lowercase.
    pub(crate) attribute: String,
}

/// The outputs of `text` (HTML with Liquid markup, already scanned) that start the value of a
/// URL attribute, in order.
pub(crate) fn url_sites(text: &str, scanned: &Scan) -> Vec<UrlSite> {
    let mut sites = Vec::new();
    let mut state = State::Text;
    let mut tag_name = String::new();
    let mut attribute = String::new();
    // The literal text of the current attribute value so far (markup left out).
    let mut literal = String::new();
    let mut markups = scanned.markups.iter().enumerate().peekable();
    let mut at = 0;
    while at < text.len() {
        // Markup inside a comment or raw text that a jump went past is not looked at.
        while markups
            .peek()
            .is_some_and(|(_, markup)| markup.span.start < at)
        {
            markups.next();
        }
        if let Some(&(index, markup)) = markups.peek()
            && markup.span.start == at
        {
            markups.next();
            if state == State::BeforeValue {
                state = State::Value(None);
                literal.clear();
            }
            if matches!(state, State::Value(_))
                && markup.kind == MarkupKind::Output
                && URL_ATTRIBUTES.contains(&attribute.as_str())
                && scheme_free(&literal)
            {
                sites.push(UrlSite {
                    markup: index,
                    attribute: attribute.clone(),
                });
            }
            at = markup.span.end;
            continue;
        }
        let rest = &text[at..];
        let Some(c) = rest.chars().next() else { break };
        at += c.len_utf8();
        match state {
            State::Text => {
                if c != '<' {
                    continue;
                }
                if let Some(after) = rest.strip_prefix("<!--") {
                    // Outlook's conditional comments hold HTML it renders: read their content.
                    at += if after.starts_with("[if") {
                        after.find("]>").map_or(after.len(), |end| end + 2)
                    } else if after.starts_with('>') {
                        1
                    } else if after.starts_with("<![endif]") {
                        0
                    } else {
                        after.find("-->").map_or(after.len(), |end| end + 3)
                    } + 3;
                } else if rest.starts_with("<!") || rest.starts_with("<?") || rest.starts_with("</")
                {
                    at += rest[1..].find('>').map_or(rest.len() - 1, |end| end + 1);
                } else if rest[1..].starts_with(|c: char| c.is_ascii_alphabetic()) {
                    state = State::TagName;
                    tag_name.clear();
                }
            }
            State::TagName => match c {
                '>' => state = end_of_start_tag(text, &mut at, &tag_name),
                '/' => state = State::BeforeAttribute,
                c if c.is_ascii_whitespace() => state = State::BeforeAttribute,
                c => tag_name.push(c.to_ascii_lowercase()),
            },
            State::BeforeAttribute | State::AfterAttributeName => match c {
                '>' => state = end_of_start_tag(text, &mut at, &tag_name),
                '=' if state == State::AfterAttributeName => state = State::BeforeValue,
                '/' => state = State::BeforeAttribute,
                c if c.is_ascii_whitespace() => {}
                c => {
                    attribute.clear();
                    attribute.push(c.to_ascii_lowercase());
                    state = State::AttributeName;
                }
            },
            State::AttributeName => match c {
                '>' => state = end_of_start_tag(text, &mut at, &tag_name),
                '=' => state = State::BeforeValue,
                '/' => state = State::BeforeAttribute,
                c if c.is_ascii_whitespace() => state = State::AfterAttributeName,
                c => attribute.push(c.to_ascii_lowercase()),
            },
            State::BeforeValue => match c {
                '>' => state = end_of_start_tag(text, &mut at, &tag_name),
                '"' | '\'' => {
                    state = State::Value(Some(c));
                    literal.clear();
                }
                c if c.is_ascii_whitespace() => {}
                c => {
                    state = State::Value(None);
                    literal.clear();
                    literal.push(c);
                }
            },
            State::Value(Some(quote)) => {
                if c == quote {
                    state = State::BeforeAttribute;
                } else {
                    literal.push(c);
                }
            }
            State::Value(None) => match c {
                '>' => state = end_of_start_tag(text, &mut at, &tag_name),
                c if c.is_ascii_whitespace() => state = State::BeforeAttribute,
                c => literal.push(c),
            },
        }
    }
    sites
}

/// Whether a value taken from a variable may stand at the start of a URL attribute: it has no
/// scheme, or one of [`ALLOWED_SCHEMES`], read as a browser reads it.
pub fn is_allowed_url(value: &str) -> bool {
    // Nearly every value: no scheme and no entity that could spell one.
    if !value.contains([':', '&']) {
        return true;
    }
    let decoded = decode_entities(value);
    let cleaned: Cow<'_, str> = if decoded.contains(['\t', '\n', '\r']) {
        decoded
            .chars()
            .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
            .collect::<String>()
            .into()
    } else {
        decoded
    };
    let url = cleaned.trim_start_matches(|c: char| c <= ' ');
    match url.find([':', '/', '?', '#']) {
        Some(end) if url[end..].starts_with(':') => ALLOWED_SCHEMES
            .iter()
            .any(|scheme| url[..end].eq_ignore_ascii_case(scheme)),
        _ => true,
    }
}

/// The Liquid filter that replaces a URL value whose scheme is not allowed by [`BLOCKED_URL`]
/// (`| tributary_url_guard: SITE`, appended by the compile step only).
#[derive(Debug, Clone, Copy)]
pub(crate) struct UrlGuard;

thread_local! {
    /// The numbers of the guarded outputs (sites) whose value was replaced on this thread
    /// since the last [`take_blocked`]. Rendering a part is synchronous, so the render that
    /// clears the list before a part and takes it after sees only its own replacements.
    static BLOCKED: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// Takes the sites whose value was replaced since the last call, on this thread.
pub(crate) fn take_blocked() -> Vec<usize> {
    BLOCKED.with(|blocked| std::mem::take(&mut *blocked.borrow_mut()))
}

impl FilterReflection for UrlGuard {
    fn name(&self) -> &str {
        GUARD_FILTER
    }

    fn description(&self) -> &str {
        "Replaces a URL whose scheme is not http, https, mailto, tel or cid by about:blank."
    }

    fn positional_parameters(&self) -> &'static [ParameterReflection] {
        &[]
    }

    fn keyword_parameters(&self) -> &'static [ParameterReflection] {
        &[]
    }
}

impl ParseFilter for UrlGuard {
    fn parse(&self, mut arguments: FilterArguments<'_>) -> liquid_core::Result<Box<dyn Filter>> {
        let site = match arguments.positional.next() {
            Some(Expression::Literal(value)) => value
                .as_scalar()
                .and_then(|scalar| scalar.to_integer())
                .and_then(|site| usize::try_from(site).ok()),
            _ => None,
        };
        match site {
            Some(site) => Ok(Box::new(UrlGuardFilter { site })),
            None => Err(liquid_core::Error::with_msg(format!(
                "`{GUARD_FILTER}` takes the number of its site"
            ))),
        }
    }

    fn reflection(&self) -> &dyn FilterReflection {
        self
    }
}

#[derive(Debug)]
struct UrlGuardFilter {
    site: usize,
}

impl fmt::Display for UrlGuardFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{GUARD_FILTER}: {}", self.site)
    }
}

impl Filter for UrlGuardFilter {
    fn evaluate(
        &self,
        input: &dyn ValueView,
        _runtime: &dyn Runtime,
    ) -> liquid_core::Result<Value> {
        if input.is_nil() || is_allowed_url(&input.to_kstr()) {
            return Ok(input.to_value());
        }
        BLOCKED.with(|blocked| blocked.borrow_mut().push(self.site));
        Ok(Value::scalar(BLOCKED_URL))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Text,
    TagName,
    BeforeAttribute,
    AttributeName,
    AfterAttributeName,
    BeforeValue,
    /// Inside a value, with its quote (`None`: unquoted).
    Value(Option<char>),
}

/// After the `>` of a start tag: text, or for elements whose content is not HTML, the text
/// after their content.
fn end_of_start_tag(text: &str, at: &mut usize, tag_name: &str) -> State {
    if matches!(tag_name, "script" | "style" | "textarea" | "title" | "xmp") {
        let needle = format!("</{tag_name}");
        let lower = text[*at..].to_ascii_lowercase();
        *at += lower.find(&needle).unwrap_or(lower.len());
    }
    State::Text
}

/// Whether the literal start of an attribute value leaves the scheme open.
fn scheme_free(literal: &str) -> bool {
    !decode_entities(literal).contains([':', '/', '?', '#'])
}

/// `text` with character references decoded: numeric ones (with or without `;`) and the named
/// ones that stand for characters that matter in a URL's scheme. Others are kept as they are.
fn decode_entities(text: &str) -> Cow<'_, str> {
    if !text.contains('&') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let (decoded, used) = entity(rest);
        match decoded {
            Some(c) => out.push(c),
            None => out.push('&'),
        }
        rest = &rest[used.max(1)..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The character of the reference at the start of `text` (which starts with `&`) and the
/// bytes it takes; `None` when it is not one.
fn entity(text: &str) -> (Option<char>, usize) {
    let body = &text[1..];
    if let Some(number) = body.strip_prefix('#') {
        let (digits, radix, skip) = match number.strip_prefix(['x', 'X']) {
            Some(hex) => (hex, 16, 3),
            None => (number, 10, 2),
        };
        let length = digits
            .find(|c: char| !c.is_digit(radix))
            .unwrap_or(digits.len());
        if length == 0 {
            return (None, 1);
        }
        let code = digits[..length]
            .chars()
            .try_fold(0u32, |code, digit| {
                code.checked_mul(radix)?.checked_add(digit.to_digit(radix)?)
            })
            .and_then(char::from_u32)
            .filter(|&c| c != '\0')
            .unwrap_or(char::REPLACEMENT_CHARACTER);
        let semicolon = usize::from(digits[length..].starts_with(';'));
        return (Some(code), skip + length + semicolon);
    }
    let length = body
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(body.len());
    if !body[length..].starts_with(';') {
        return (None, 1);
    }
    let decoded = match &body[..length] {
        "Tab" => '\t',
        "NewLine" => '\n',
        "colon" => ':',
        "sol" => '/',
        "quest" => '?',
        "num" => '#',
        "period" => '.',
        "plus" => '+',
        "amp" | "AMP" => '&',
        "lt" | "LT" => '<',
        "gt" | "GT" => '>',
        "quot" | "QUOT" => '"',
        "apos" => '\'',
        _ => return (None, 1),
    };
    (Some(decoded), 1 + length + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn sites(html: &str) -> Vec<(String, String)> {
        let scanned = crate::scan::scan(html).expect("scans");
        url_sites(html, &scanned)
            .into_iter()
            .map(|site| {
                let markup = &scanned.markups[site.markup];
                (site.attribute, html[markup.inner.clone()].trim().to_owned())
            })
            .collect()
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn outputs_at_the_start_of_url_attributes_are_sites() {
        assert_eq!(
            sites(
                "<a href=\"{{ a }}\" title=\"{{ t }}\">{{ text }}</a>\
                 <img SRC = '  {{ b | default: \"x\" }}'><form action={{ c }}>\
                 <svg><use xlink:href=\"{{ d }}\"/></svg>"
            ),
            pairs(&[
                ("href", "a"),
                ("src", "b | default: \"x\""),
                ("action", "c"),
                ("xlink:href", "d")
            ])
        );
    }

    #[test]
    fn a_literal_scheme_path_query_or_fragment_before_the_output_closes_the_scheme() {
        assert_eq!(
            sites(
                "<a href=\"https://shop.example/?u={{ a }}\"></a><a href=\"/p/{{ b }}\"></a>\
                 <a href=\"#{{ c }}\"></a><a href=\"mailto:{{ d }}\"></a>\
                 <a href=\"javascript&colon;{{ e }}\"></a>"
            ),
            Vec::<(String, String)>::new()
        );
        // Literal text without those characters, tags and other outputs leave it open.
        assert_eq!(
            sites(
                "<a href=\"java{{ a }}\"></a><a href=\"{% if x %}{% endif %}{{ b }}{{ c }}\"></a>"
            ),
            pairs(&[("href", "a"), ("href", "b"), ("href", "c")])
        );
    }

    #[test]
    fn comments_scripts_and_text_are_not_attributes_but_conditional_comments_are_html() {
        assert_eq!(
            sites(
                "<!-- <a href=\"{{ a }}\"> --><script>var s = '<a href=\"{{ b }}\">';</script>\
                 <p>href=\"{{ c }}\"</p><!--[if mso]><v:roundrect href=\"{{ d }}\"><![endif]-->\
                 <!--[if !mso]><!--><a href=\"{{ e }}\"></a><!--<![endif]-->"
            ),
            pairs(&[("href", "d"), ("href", "e")])
        );
    }

    #[test]
    fn only_http_https_mailto_tel_cid_and_scheme_less_urls_are_allowed() {
        for allowed in [
            "https://shop.example/a?b=c:d",
            "HTTP://x",
            "mailto:a@example.com",
            "tel:+331",
            "cid:logo",
            "/relative:path",
            "#top",
            "page?x=a:b",
            "",
            "//cdn.example/x.png",
        ] {
            assert!(is_allowed_url(allowed), "{allowed:?}");
        }
        for refused in [
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "vbscript:msgbox(1)",
            "data:text/html,<script>alert(1)</script>",
            "  javascript:alert(1)",
            "\u{1}\u{8}javascript:alert(1)",
            "java\tscript:alert(1)",
            "java\nscript:alert(1)",
            "java&#115;cript:alert(1)",
            "java&#x73cript:alert(1)",
            "&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(1)",
            "javascript&colon;alert(1)",
            "java&Tab;script:alert(1)",
            ":alert(1)",
            "script:alert(1)",
        ] {
            assert!(!is_allowed_url(refused), "{refused:?}");
        }
        // Entities are decoded once, as a browser does: after `escape`, `java&amp;#115;cript:`
        // reads `java&#115;cript:`, whose `&` ends the scheme, so the `#` makes a fragment.
        assert!(is_allowed_url("java&amp;#115;cript:alert(1)"));
    }

    #[test]
    fn entities_decode_with_or_without_semicolon_and_unknown_ones_stay() {
        assert_eq!(decode_entities("a&#115;b&#x73;c&#115d"), "asbscsd");
        assert_eq!(decode_entities("&unknown; & &#;"), "&unknown; & &#;");
        assert_eq!(decode_entities("&#0;&#x110000;"), "\u{fffd}\u{fffd}");
    }
}
