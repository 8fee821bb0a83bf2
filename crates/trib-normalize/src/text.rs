//! Free-text rules: names, trimming, lowercasing. They never fail.

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

/// Normalizes a person or company name: removes control and invisible format characters, turns
/// each run of whitespace into one space, trims, and puts the result in Unicode NFC. Case is
/// kept.
///
/// ```
/// assert_eq!(trib_normalize::name("  Zoë \t Ångström "), "Zoë Ångström");
/// ```
pub fn name(input: &str) -> String {
    if is_clean_ascii(input) {
        return input.to_owned();
    }
    let mut cleaned = String::with_capacity(input.len());
    let mut pending_space = false;
    for character in input.chars() {
        if character.is_whitespace() {
            pending_space = !cleaned.is_empty();
            continue;
        }
        if is_invisible(character) {
            continue;
        }
        if pending_space {
            cleaned.push(' ');
            pending_space = false;
        }
        cleaned.push(character);
    }
    if cleaned.is_ascii() || is_nfc_quick(cleaned.chars()) == IsNormalized::Yes {
        cleaned
    } else {
        cleaned.nfc().collect()
    }
}

/// Removes surrounding Unicode whitespace.
pub fn trim(input: &str) -> &str {
    input.trim()
}

/// Trims and lowercases (Unicode lowercase mapping), for tags and categories.
pub fn lowercase(input: &str) -> String {
    let trimmed = input.trim();
    if trimmed.is_ascii() {
        trimmed.to_ascii_lowercase()
    } else {
        trimmed.to_lowercase()
    }
}

/// True when [`name`] would return the input unchanged without looking further: printable
/// ASCII, no surrounding spaces, no double spaces.
fn is_clean_ascii(input: &str) -> bool {
    let bytes = input.as_bytes();
    if bytes.first() == Some(&b' ') || bytes.last() == Some(&b' ') {
        return false;
    }
    let mut previous_space = false;
    for &byte in bytes {
        if !(b' '..=b'~').contains(&byte) {
            return false;
        }
        let space = byte == b' ';
        if space && previous_space {
            return false;
        }
        previous_space = space;
    }
    true
}

/// Control characters that are not whitespace, and the invisible format characters that only
/// get into names by copy and paste. Zero-width joiners (U+200C, U+200D) are kept: they change
/// the rendering of Indic and Persian scripts.
fn is_invisible(character: char) -> bool {
    character.is_control()
        || matches!(
            character,
            '\u{00AD}' // soft hyphen
                | '\u{200B}' // zero-width space
                | '\u{2060}' // word joiner
                | '\u{FEFF}' // byte-order mark, zero-width no-break space
        )
}

#[cfg(test)]
mod tests {
    #[track_caller]
    fn check(input: &str, expect: &str) {
        assert_eq!(super::name(input), expect, "name({input:?})");
    }

    #[test]
    fn names() {
        check("Ada Lovelace", "Ada Lovelace");
        check("  Zoë   Ångström ", "Zoë Ångström");
        check("Jose\u{301}", "José"); // decomposed e + combining acute → NFC
        check("A\u{30A}ngstro\u{308}m", "Ångström");
        check("Anne\tMarie\nDupont", "Anne Marie Dupont");
        check("Anne\u{00A0}\u{2003}Marie", "Anne Marie"); // no-break and em spaces
        check("DUPONT", "DUPONT"); // case is kept
        check("mcDonald", "mcDonald");
        check("Ann\u{0}e\u{7}", "Anne"); // controls removed
        check("\u{FEFF}Bob\u{200B}by", "Bobby");
        check("Nor\u{00AD}bert", "Norbert");
        check("محمد\u{200C}رضا", "محمد\u{200C}رضا"); // ZWNJ kept
        check("山田  太郎", "山田 太郎");
        check("", "");
        check(" \t\n ", "");
        check("\u{200B}", "");
        check("a \u{0} b", "a b");
    }

    #[test]
    fn trim_and_lowercase() {
        for (input, trimmed, lowered) in [
            ("  a b \u{00A0}", "a b", "a b"),
            ("x", "x", "x"),
            ("", "", ""),
            ("\t\n", "", ""),
            ("  VIP Customer ", "VIP Customer", "vip customer"),
            ("ÉTÉ", "ÉTÉ", "été"),
            ("ΣΟΦΟΣ", "ΣΟΦΟΣ", "σοφος"),
            ("İstanbul", "İstanbul", "i\u{307}stanbul"),
            ("\u{3000}全角\u{3000}", "全角", "全角"),
            ("MiXeD-Case_42", "MiXeD-Case_42", "mixed-case_42"),
        ] {
            assert_eq!(super::trim(input), trimmed, "trim({input:?})");
            assert_eq!(super::lowercase(input), lowered, "lowercase({input:?})");
        }
    }
}
