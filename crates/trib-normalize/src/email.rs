//! Email addresses: the policy is in the crate docs.

use std::borrow::Cow;

use idna::AsciiDenyList;
use unicode_normalization::UnicodeNormalization;

use crate::NormalizeError;

/// The longest address (in bytes, normalized) that SMTP paths allow: RFC 5321's 256-byte path
/// minus the angle brackets.
const MAX_ADDRESS_LEN: usize = 254;
const MAX_LOCAL_LEN: usize = 64;
const MAX_DOMAIN_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;
/// Input longer than this is rejected before any Unicode processing, so a huge value costs
/// nothing. Normalization can only shrink ASCII, and IDNA output is longer than its input, so
/// nothing valid is lost.
const MAX_INPUT_LEN: usize = 4 * MAX_ADDRESS_LEN;

/// Normalizes an email address: trims, lowercases the whole address, converts the domain to its
/// ASCII (punycode) form, and checks it against the policy described in the crate docs.
///
/// ```
/// assert_eq!(trib_normalize::email(" Ann@Bücher.DE ").unwrap(), "ann@xn--bcher-kva.de");
/// assert_eq!(trib_normalize::email("ann@localhost").unwrap_err().code, "invalid_email");
/// ```
pub fn email(input: &str) -> Result<String, NormalizeError> {
    let address = input.trim();
    if address.is_empty() {
        return Err(NormalizeError::email("it is empty"));
    }
    if address.len() > MAX_INPUT_LEN {
        return Err(too_long());
    }
    if address.starts_with('"') {
        return Err(NormalizeError::email("quoted local parts are not accepted"));
    }
    if address.chars().any(char::is_whitespace) {
        return Err(NormalizeError::email("it contains whitespace"));
    }
    let Some(at) = address.rfind('@') else {
        return Err(NormalizeError::email("it has no @"));
    };
    let (local, domain) = (&address[..at], &address[at + 1..]);
    if local.contains('@') {
        return Err(NormalizeError::email("it has more than one @"));
    }
    if local.is_empty() {
        return Err(NormalizeError::email("the part before the @ is empty"));
    }
    if domain.is_empty() {
        return Err(NormalizeError::email("the domain is empty"));
    }
    check_local(local)?;
    let ascii_domain = normalize_domain(domain)?;

    let mut normalized = String::with_capacity(local.len() + 1 + ascii_domain.len());
    if local.is_ascii() {
        normalized.extend(
            local
                .bytes()
                .map(|byte| char::from(byte.to_ascii_lowercase())),
        );
    } else {
        normalized.extend(local.to_lowercase().nfc());
    }
    if normalized.len() > MAX_LOCAL_LEN {
        return Err(NormalizeError::email(
            "the part before the @ is longer than 64 bytes",
        ));
    }
    normalized.push('@');
    normalized.push_str(&ascii_domain);
    if normalized.len() > MAX_ADDRESS_LEN {
        return Err(too_long());
    }
    Ok(normalized)
}

fn too_long() -> NormalizeError {
    NormalizeError::email("it is longer than 254 bytes")
}

/// Checks a dot-atom local part: atext and non-ASCII characters separated by single dots.
fn check_local(local: &str) -> Result<(), NormalizeError> {
    if local.starts_with('.') || local.ends_with('.') {
        return Err(NormalizeError::email(
            "the part before the @ starts or ends with a dot",
        ));
    }
    if local.contains("..") {
        return Err(NormalizeError::email(
            "the part before the @ has consecutive dots",
        ));
    }
    for character in local.chars() {
        let allowed = if character.is_ascii() {
            character.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(character)
        } else {
            !character.is_control()
        };
        if !allowed {
            return Err(match character {
                '"' | '\\' => NormalizeError::email("quoted local parts are not accepted"),
                '(' | ')' => NormalizeError::email("comments are not accepted"),
                '<' | '>' => NormalizeError::email("it looks like a display name with an address"),
                _ if character.is_ascii_graphic() => NormalizeError::email(&format!(
                    "the part before the @ contains `{character}`, which is not allowed"
                )),
                _ => NormalizeError::email("the part before the @ contains a control character"),
            });
        }
    }
    Ok(())
}

/// Converts the domain to lowercase ASCII (UTS 46 / IDNA 2008 with STD3 rules) and checks it is
/// a host name with at least one dot.
fn normalize_domain(domain: &str) -> Result<Cow<'_, str>, NormalizeError> {
    if domain.starts_with('[') {
        return Err(NormalizeError::email("IP-address domains are not accepted"));
    }
    if domain.starts_with('.') || domain.ends_with('.') {
        return Err(NormalizeError::email(
            "the domain starts or ends with a dot",
        ));
    }
    if domain.contains("..") {
        return Err(NormalizeError::email("the domain has consecutive dots"));
    }
    let ascii =
        idna::domain_to_ascii_cow(domain.as_bytes(), AsciiDenyList::STD3).map_err(|_| {
            NormalizeError::email(
                "the domain is not a valid host name or internationalized domain name",
            )
        })?;
    check_host_name(&ascii)?;
    Ok(ascii)
}

/// Checks what UTS 46 leaves to the caller: DNS lengths, hyphen placement, at least two labels,
/// and a top-level domain that is not numeric (which would make the domain an IPv4 address).
fn check_host_name(ascii: &str) -> Result<(), NormalizeError> {
    if ascii.len() > MAX_DOMAIN_LEN {
        return Err(NormalizeError::email("the domain is longer than 253 bytes"));
    }
    if !ascii.contains('.') {
        return Err(NormalizeError::email("the domain has no dot"));
    }
    let mut top_level = "";
    for label in ascii.split('.') {
        if label.is_empty() {
            // UTS 46 maps ideographic full stops to dots, so doubled or trailing dots can
            // appear only now.
            return Err(NormalizeError::email("the domain has an empty label"));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(NormalizeError::email(
                "a domain label is longer than 63 bytes",
            ));
        }
        if !label
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        {
            return Err(NormalizeError::email(
                "the domain contains a character that is not allowed",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(NormalizeError::email(
                "a domain label starts or ends with a hyphen",
            ));
        }
        top_level = label;
    }
    if top_level.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(NormalizeError::email(
            "the domain is numeric, like an IP address",
        ));
    }
    if top_level.len() < 2 {
        return Err(NormalizeError::email(
            "the top-level domain is shorter than two characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::codes::INVALID_EMAIL;

    #[track_caller]
    fn check(input: &str, expect: Result<&str, &str>) {
        let actual = super::email(input);
        match (actual, expect) {
            (Ok(actual), Ok(expect)) => assert_eq!(actual, expect, "email({input:?})"),
            (Err(error), Err(expect_reason)) => {
                assert_eq!(error.code, INVALID_EMAIL, "email({input:?})");
                assert_eq!(
                    error.reason,
                    format!("not a valid email address: {expect_reason}")
                );
                // Reasons never echo the address.
                if input.len() > 3 {
                    assert!(
                        !error.reason.contains(input.trim()),
                        "{error:?} echoes {input:?}"
                    );
                }
            }
            (actual, expect) => panic!("email({input:?}) = {actual:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn valid_addresses() {
        check("ann@example.com", Ok("ann@example.com"));
        check("  Ann.Lee@Example.COM \n", Ok("ann.lee@example.com"));
        check("ann+news@example.co.uk", Ok("ann+news@example.co.uk"));
        check("o'brien@example.ie", Ok("o'brien@example.ie"));
        check(
            "a!#$%&'*+-/=?^_`{|}~@example.com",
            Ok("a!#$%&'*+-/=?^_`{|}~@example.com"),
        );
        check("user@bücher.de", Ok("user@xn--bcher-kva.de"));
        check("USER@BÜCHER.DE", Ok("user@xn--bcher-kva.de"));
        check("user@xn--bcher-kva.de", Ok("user@xn--bcher-kva.de"));
        check("用户@例子.广告", Ok("用户@xn--fsqu00a.xn--4rr70v"));
        check("用户@例子。广告", Ok("用户@xn--fsqu00a.xn--4rr70v")); // ideographic full stop
        check("Zoë@example.com", Ok("zoë@example.com"));
        check(" Zoë@Bücher.DE ", Ok("zoë@xn--bcher-kva.de"));
        check("Zoe\u{308}@example.com", Ok("zoë@example.com")); // decomposed → NFC
        check("x@a-b.example", Ok("x@a-b.example"));
        check("1@123.example", Ok("1@123.example"));
        check(
            &format!("{}@example.com", "a".repeat(64)),
            Ok(&format!("{}@example.com", "a".repeat(64))),
        );
    }

    #[test]
    fn invalid_addresses() {
        check("", Err("it is empty"));
        check("   ", Err("it is empty"));
        check("ann.example.com", Err("it has no @"));
        check("ann@@example.com", Err("it has more than one @"));
        check("a@b@example.com", Err("it has more than one @"));
        check("@example.com", Err("the part before the @ is empty"));
        check("ann@", Err("the domain is empty"));
        check("ann@localhost", Err("the domain has no dot"));
        check("ann lee@example.com", Err("it contains whitespace"));
        check("ann@exa mple.com", Err("it contains whitespace"));
        check(
            "ann..lee@example.com",
            Err("the part before the @ has consecutive dots"),
        );
        check(
            ".ann@example.com",
            Err("the part before the @ starts or ends with a dot"),
        );
        check(
            "ann.@example.com",
            Err("the part before the @ starts or ends with a dot"),
        );
        check("ann@example..com", Err("the domain has consecutive dots"));
        check(
            "ann@example.com.",
            Err("the domain starts or ends with a dot"),
        );
        check(
            "\"ann lee\"@example.com",
            Err("quoted local parts are not accepted"),
        );
        check(
            "\"ann\"@example.com",
            Err("quoted local parts are not accepted"),
        );
        check(
            "ann@[127.0.0.1]",
            Err("IP-address domains are not accepted"),
        );
        check(
            "ann@127.0.0.1",
            Err("the domain is numeric, like an IP address"),
        );
        check(
            "Ann<ann@example.com>",
            Err("it looks like a display name with an address"),
        );
        check("ann(comment)@example.com", Err("comments are not accepted"));
        check(
            "ann,lee@example.com",
            Err("the part before the @ contains `,`, which is not allowed"),
        );
        check(
            "ann@exam_ple.com",
            Err("the domain is not a valid host name or internationalized domain name"),
        );
        check(
            "ann@-example.com",
            Err("a domain label starts or ends with a hyphen"),
        );
        check(
            "ann@example.c",
            Err("the top-level domain is shorter than two characters"),
        );
        check(
            "ann@xn--zz.com",
            Err("the domain is not a valid host name or internationalized domain name"),
        );
        check(
            "a\u{0}b@example.com",
            Err("the part before the @ contains a control character"),
        );
        check(
            &format!("{}@example.com", "a".repeat(65)),
            Err("the part before the @ is longer than 64 bytes"),
        );
        check(
            &format!("ann@{}.com", "a".repeat(64)),
            Err("a domain label is longer than 63 bytes"),
        );
        let long_domain = vec!["a".repeat(60); 5].join(".") + ".com";
        check(
            &format!("ann@{long_domain}"),
            Err("the domain is longer than 253 bytes"),
        );
        let long_address = format!(
            "{}@{}.com",
            "a".repeat(64),
            vec!["b".repeat(62); 3].join(".")
        );
        check(&long_address, Err("it is longer than 254 bytes"));
        check(&"a".repeat(5000), Err("it is longer than 254 bytes"));
    }
}
