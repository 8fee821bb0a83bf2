//! Countries → ISO 3166-1 alpha-2, through the `celes` tables plus a few aliases of our own.

use std::str::FromStr;

use crate::{NormalizeError, codes};

/// Longer keys match nothing (the longest ISO name, without spaces, has 48 letters).
const MAX_KEY_LEN: usize = 64;

/// Normalizes a country name or code to its ISO 3166-1 alpha-2 code (`"France"` → `"FR"`). What
/// is accepted is listed in the crate docs.
///
/// ```
/// assert_eq!(trib_normalize::country(" united states ").unwrap(), "US");
/// assert_eq!(trib_normalize::country("Atlantis").unwrap_err().code, "unknown_country");
/// ```
pub fn country(input: &str) -> Result<&'static str, NormalizeError> {
    let mut key = Key::default();
    for character in input.trim().chars() {
        if !key.push(character) {
            return Err(unknown());
        }
    }
    if key.len == 0 {
        return Err(NormalizeError::new(
            codes::UNKNOWN_COUNTRY,
            "the country is empty",
        ));
    }
    let key = key.as_str();
    if let Some(alpha2) = extra_alias(key) {
        return Ok(alpha2);
    }
    // `from_str` knows codes, names and most aliases; the alias and name tables have a few
    // entries it lacks (`turkiye`).
    celes::Country::from_str(key)
        .or_else(|_| celes::Country::from_alias(key))
        .or_else(|_| celes::Country::from_name(key))
        .map(|country| country.alpha2)
        .map_err(|_| unknown())
}

fn unknown() -> NormalizeError {
    NormalizeError::new(
        codes::UNKNOWN_COUNTRY,
        "not a known country name or ISO 3166-1 code",
    )
}

/// Aliases `celes` lacks, or gets wrong (it reads `samoa` as American Samoa). Keys are in the
/// folded form [`Key`] builds: lowercase ASCII letters only.
fn extra_alias(key: &str) -> Option<&'static str> {
    Some(match key {
        "uk" | "britain" | "wales" | "unitedkingdomofgreatbritainandnorthernireland" => "GB",
        "uae" | "emirates" => "AE",
        "drc" | "drcongo" | "congokinshasa" | "democraticrepublicofcongo" => "CD",
        "congobrazzaville" | "republicofthecongo" | "republicofcongo" => "CG",
        "samoa" | "westernsamoa" | "independentstateofsamoa" => "WS",
        "usvirginislands" => "VI",
        "britishvirginislands" => "VG",
        "vietnam" => "VN",
        "hongkong" => "HK",
        "southkorea" | "korearepublicof" => "KR",
        "northkorea" | "koreademocraticpeoplesrepublicof" => "KP",
        "czechia" | "czechrepublic" | "cesko" | "ceskarepublika" => "CZ",
        "deutschland" | "bundesrepublikdeutschland" => "DE",
        "osterreich" | "oesterreich" => "AT",
        "schweiz" | "suisse" | "svizzera" | "svizra" => "CH",
        "espana" => "ES",
        "italia" => "IT",
        "nederland" => "NL",
        "belgie" | "belgique" | "belgien" => "BE",
        "luxemburg" | "letzebuerg" => "LU",
        "polska" => "PL",
        "sverige" => "SE",
        "norge" | "noreg" => "NO",
        "danmark" => "DK",
        "suomi" => "FI",
        "eire" => "IE",
        "ellada" | "hellas" => "GR",
        "slovensko" => "SK",
        "magyarorszag" => "HU",
        "hrvatska" => "HR",
        "brasil" => "BR",
        "mexico" => "MX",
        _ => return None,
    })
}

/// A lookup key: the input lowercased, Latin diacritics folded, spaces and punctuation dropped,
/// `&` spelled `and`. Kept on the stack: countries are looked up for most rows of an import.
struct Key {
    bytes: [u8; MAX_KEY_LEN],
    len: usize,
}

impl Default for Key {
    fn default() -> Self {
        Self {
            bytes: [0; MAX_KEY_LEN],
            len: 0,
        }
    }
}

impl Key {
    /// Adds one input character; false if the input cannot be a country.
    fn push(&mut self, character: char) -> bool {
        if character.is_ascii_alphabetic() {
            return self.push_str(&[character.to_ascii_lowercase() as u8]);
        }
        match character {
            ' ' | '\u{00A0}' | '.' | '-' | '\'' | '\u{2019}' | ',' | '(' | ')' | '_' => true,
            '&' => self.push_str(b"and"),
            // Combining diacritics, as in decomposed input.
            '\u{0300}'..='\u{036F}' => true,
            _ if character.is_ascii() => false,
            _ => character.to_lowercase().all(|lower| match fold(lower) {
                Some(folded) => self.push_str(folded.as_bytes()),
                None => ('\u{0300}'..='\u{036F}').contains(&lower),
            }),
        }
    }

    fn push_str(&mut self, bytes: &[u8]) -> bool {
        let end = self.len + bytes.len();
        if end > MAX_KEY_LEN {
            return false;
        }
        self.bytes[self.len..end].copy_from_slice(bytes);
        self.len = end;
        true
    }

    fn as_str(&self) -> &str {
        // Only ASCII letters are ever pushed, so this never fails.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

/// Folds a lowercase Latin letter with a diacritic to ASCII, as country names are commonly
/// written without them.
fn fold(lower: char) -> Option<&'static str> {
    Some(match lower {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'æ' => "ae",
        'ç' | 'ć' | 'č' => "c",
        'ď' | 'đ' | 'ð' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ė' | 'ę' | 'ě' => "e",
        'ğ' => "g",
        'ì' | 'í' | 'î' | 'ï' | 'ī' | 'į' | 'ı' => "i",
        'ĺ' | 'ľ' | 'ł' => "l",
        'ñ' | 'ń' | 'ň' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' => "o",
        'œ' => "oe",
        'ŕ' | 'ř' => "r",
        'ś' | 'š' | 'ş' | 'ș' => "s",
        'ß' => "ss",
        'ť' | 'ţ' | 'ț' => "t",
        'þ' => "th",
        'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' | 'ų' => "u",
        'ý' | 'ÿ' => "y",
        'ź' | 'ż' | 'ž' => "z",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use crate::codes::UNKNOWN_COUNTRY;

    #[track_caller]
    fn check(input: &str, expect: Option<&str>) {
        match (super::country(input), expect) {
            (Ok(actual), Some(expect)) => assert_eq!(actual, expect, "country({input:?})"),
            (Err(error), None) => assert_eq!(error.code, UNKNOWN_COUNTRY, "country({input:?})"),
            (actual, expect) => panic!("country({input:?}) = {actual:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn codes_and_names() {
        check("fr", Some("FR"));
        check("FR", Some("FR"));
        check("FRA", Some("FR"));
        check("fra", Some("FR"));
        check("France", Some("FR"));
        check(" united states ", Some("US"));
        check("United States of America", Some("US"));
        check("USA", Some("US"));
        check("U.S.A.", Some("US"));
        check("US", Some("US"));
        check("America", Some("US"));
        check("United Kingdom", Some("GB"));
        check("UK", Some("GB"));
        check("Great Britain", Some("GB"));
        check("England", Some("GB"));
        check("Wales", Some("GB"));
        check("GBR", Some("GB"));
        check("Czechia", Some("CZ"));
        check("Czech Republic", Some("CZ"));
        check("Česko", Some("CZ"));
        check("Deutschland", Some("DE"));
        check("germany", Some("DE"));
        check("Österreich", Some("AT"));
        check("Côte d'Ivoire", Some("CI"));
        check("Cote d\u{2019}Ivoire", Some("CI"));
        check("Co\u{302}te d'Ivoire", Some("CI")); // decomposed
        check("Ivory Coast", Some("CI"));
        check("Bosnia & Herzegovina", Some("BA"));
        check("Bosnia and Herzegovina", Some("BA"));
        check("Russia", Some("RU"));
        check("South Korea", Some("KR"));
        check("Korea, Republic of", Some("KR"));
        check("Viet Nam", Some("VN"));
        check("Vietnam", Some("VN"));
        check("Hong Kong", Some("HK"));
        check("The Netherlands", Some("NL"));
        check("Netherlands", Some("NL"));
        check("Holland", Some("NL"));
        check("Türkiye", Some("TR"));
        check("Turkey", Some("TR"));
        check("Samoa", Some("WS"));
        check("American Samoa", Some("AS"));
        check("México", Some("MX"));
        check("Brasil", Some("BR"));
        check("España", Some("ES"));
        check("Schweiz", Some("CH"));
        check("Switzerland", Some("CH"));
        check("UAE", Some("AE"));
        check("United Arab Emirates", Some("AE"));
        check("DRC", Some("CD"));
        check("Congo", Some("CG"));
        check("Democratic Republic of the Congo", Some("CD"));
        check("Taiwan", Some("TW"));
        check("Guinea", Some("GN"));
        check("Guinea-Bissau", Some("GW"));
        check("St. Lucia", Some("LC"));
        check("Saint Lucia", Some("LC"));
        check("Åland Islands", Some("AX"));
        check("Réunion", Some("RE"));
    }

    #[test]
    fn unknown_countries() {
        check("Atlantis", None);
        check("", None);
        check("   ", None);
        check("XX", None);
        check("250", None); // numeric codes are not accepted
        check("F R", Some("FR")); // spaces are ignored, so this is FR
        check("Korea", None); // ambiguous
        check("Россия", None); // non-Latin names are not covered
        check("Paris, France", None);
        check("fr1", None);
        check(&"a".repeat(100), None);
        check("Soviet Union", None);
    }
}
