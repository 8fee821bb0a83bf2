//! Deriving the plain-text part from the HTML part's Liquid source, once per template version.
//!
//! Tags are removed (block elements become line breaks), `head`, `style`, `script` and
//! comments (including Outlook's conditional comments) are dropped, links become
//! `label (url)`, the common entities are decoded, and Liquid markup is kept verbatim so the
//! result is itself a Liquid template (rendered without HTML escaping).

/// The text template of an HTML Liquid template.
pub(crate) fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 4);
    let mut links: Vec<String> = Vec::new();
    let mut at = 0;
    while at < html.len() {
        let rest = &html[at..];
        if rest.starts_with("{{") || rest.starts_with("{%") {
            let close = if rest.starts_with("{{") { "}}" } else { "%}" };
            let end = rest.find(close).map_or(rest.len(), |end| end + 2);
            out.push_str(&rest[..end]);
            at += end;
        } else if rest.starts_with("<!--") {
            at += rest.find("-->").map_or(rest.len(), |end| end + 3);
        } else if rest.starts_with('<') {
            let end = tag_end(rest);
            let tag = &rest[1..end.saturating_sub(1).max(1)];
            let closing = tag.starts_with('/');
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase();
            at += end;
            match name.as_str() {
                "head" | "style" | "script" | "title" if !closing => {
                    let needle = format!("</{name}");
                    let lower = html[at..].to_ascii_lowercase();
                    at += lower.find(&needle).unwrap_or(lower.len());
                }
                "br" | "p" | "div" | "tr" | "li" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6"
                | "table" | "ul" | "ol" | "hr" => out.push('\n'),
                "td" | "th" if !closing => out.push(' '),
                "a" if !closing => links.push(attribute(tag, "href").unwrap_or_default()),
                "a" => {
                    if let Some(href) = links.pop()
                        && !href.is_empty()
                        && href != "#"
                        && !out.trim_end().ends_with(&href)
                    {
                        out.push_str(" (");
                        out.push_str(&href);
                        out.push(')');
                    }
                }
                _ => {}
            }
        } else if rest.starts_with('&') {
            let (decoded, used) = entity(rest);
            out.push_str(decoded);
            at += used;
        } else {
            let Some(character) = rest.chars().next() else {
                break;
            };
            if character.is_whitespace() {
                if !out.ends_with([' ', '\n']) && !out.is_empty() {
                    out.push(' ');
                }
            } else {
                out.push(character);
            }
            at += character.len_utf8();
        }
    }
    let mut text = String::with_capacity(out.len());
    let mut blank = false;
    for line in out.lines().map(str::trim) {
        if line.is_empty() {
            if !blank && !text.is_empty() {
                text.push('\n');
            }
            blank = true;
        } else {
            text.push_str(line);
            text.push('\n');
            blank = false;
        }
    }
    text
}

/// The length of the tag at the start of `text`, quotes and Liquid markup respected.
fn tag_end(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut quote: Option<u8> = None;
    for (index, &byte) in bytes.iter().enumerate().skip(1) {
        match quote {
            Some(q) if byte == q => quote = None,
            Some(_) => {}
            None if byte == b'"' || byte == b'\'' => quote = Some(byte),
            None if byte == b'>' => return index + 1,
            None => {}
        }
    }
    text.len()
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let start = lower.find(&format!("{name}="))? + name.len() + 1;
    let rest = &tag[start..];
    let quote = rest.chars().next()?;
    if quote == '"' || quote == '\'' {
        let end = rest[1..].find(quote)?;
        Some(rest[1..=end].to_owned())
    } else {
        Some(rest.split_whitespace().next()?.to_owned())
    }
}

fn entity(text: &str) -> (&'static str, usize) {
    for (name, decoded) in [
        ("&amp;", "&"),
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&quot;", "\""),
        ("&#39;", "'"),
        ("&apos;", "'"),
        ("&nbsp;", " "),
        ("&zwnj;", ""),
    ] {
        if text.starts_with(name) {
            return (decoded, name.len());
        }
    }
    ("&", 1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_liquid_and_link_targets() {
        let html = "<html><head><style>p{}</style></head><body><!--[if mso]><table><![endif]-->\
            <p>Hi {{ profile.traits.firstName | default: 'there' }} &amp; co</p>\
            <a href=\"https://x.test/?u={{ profile.id }}\">Shop</a>{% if a %}<div>A</div>{% endif %}</body></html>";
        assert_eq!(
            super::html_to_text(html),
            "Hi {{ profile.traits.firstName | default: 'there' }} & co\nShop (https://x.test/?u={{ profile.id }}){% if a %}\nA\n{% endif %}\n"
        );
    }
}
