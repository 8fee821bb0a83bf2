//! Phone numbers → E.164, with libphonenumber's metadata (the `rlibphonenumber` port).

use rlibphonenumber::enums::Region;
use rlibphonenumber::{PHONE_NUMBER_UTIL, ParseError, PhoneNumber, PhoneNumberFormat};

use crate::{NormalizeError, codes};

/// Longer input is not a phone number; rejecting it early bounds the parser's work.
const MAX_INPUT_LEN: usize = 64;
/// `+` and at most 15 digits (ITU-T E.164).
const E164_MAX_LEN: usize = 16;

/// Normalizes a phone number to E.164 (`+14155552671`). A number without a country code is
/// read in the national format of `default_region` (anything [`country`](crate::country)
/// accepts); without a default region it is rejected.
///
/// ```
/// use trib_normalize::phone;
/// assert_eq!(phone("+44 20 7946 0958", None).unwrap(), "+442079460958");
/// assert_eq!(phone("(415) 555-2671", Some("US")).unwrap(), "+14155552671");
/// ```
pub fn phone(input: &str, default_region: Option<&str>) -> Result<String, NormalizeError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(NormalizeError::phone("it is empty"));
    }
    if text.len() > MAX_INPUT_LEN {
        return Err(NormalizeError::phone("it is too long"));
    }
    check_characters(text)?;
    // A leading `+` carries the country, and the default region must not change the result:
    // a region would make the parser accept its own international call prefix, nothing more.
    let region = if text.starts_with('+') {
        None
    } else {
        match default_region {
            Some(region_name) => Some(region(region_name)?),
            None => {
                return Err(NormalizeError::phone(
                    "it has no country code (+...) and no default region is set",
                ));
            }
        }
    };
    let number = PhoneNumber::parse(text, region).map_err(|error| {
        NormalizeError::phone(match error {
            ParseError::InvalidCountryCode => "the country code is not valid",
            ParseError::TooShortAfterIdd | ParseError::TooShortNsn => "it is too short",
            ParseError::TooLongNsn => "it is too long",
            ParseError::NotANumber(_) => "it does not look like a phone number",
        })
    })?;
    if number
        .extension
        .as_deref()
        .is_some_and(|extension| !extension.is_empty())
    {
        return Err(NormalizeError::phone("extensions are not accepted"));
    }
    if !number.is_valid() {
        return Err(NormalizeError::phone(
            "it is not a valid number for its country",
        ));
    }
    let e164 = number.format_as(PhoneNumberFormat::E164);
    // libphonenumber accepts some national-only numbers (Japanese 0066 toll-free numbers)
    // that are longer than the 15 digits E.164 allows; no provider accepts them.
    if e164.len() > E164_MAX_LEN {
        return Err(NormalizeError::phone(
            "it is longer than the 15 digits E.164 allows",
        ));
    }
    Ok(e164.into_owned())
}

/// Resolves a default region (any spelling [`country`](crate::country) accepts) to a
/// libphonenumber region. Fails with `invalid_options`, because the region comes from
/// configuration, not from the value.
pub(crate) fn region(name: &str) -> Result<Region, NormalizeError> {
    let alpha2 = crate::country(name).map_err(|_| {
        NormalizeError::new(
            codes::INVALID_OPTIONS,
            "default_region: not a known country",
        )
    })?;
    alpha2
        .parse::<Region>()
        .ok()
        .filter(|region| {
            PHONE_NUMBER_UTIL
                .get_country_code_for_region(*region)
                .is_some()
        })
        .ok_or_else(|| {
            NormalizeError::new(
                codes::INVALID_OPTIONS,
                format!("default_region: {alpha2} has no phone numbering plan of its own"),
            )
        })
}

/// The decimal digits of a JSON integer usable as a phone number (spreadsheets turn numbers
/// into integers, and sometimes into floats with no fraction).
pub(crate) fn integer_digits(number: &serde_json::Number) -> Option<String> {
    if let Some(integer) = number.as_u64() {
        return Some(integer.to_string());
    }
    let float = number.as_f64()?;
    // Below 2^53, every integer is exact.
    if float >= 0.0 && float.fract() == 0.0 && float < 9_007_199_254_740_992.0 {
        let integer = float as u64;
        return Some(integer.to_string());
    }
    None
}

/// Accepts only what people write in phone numbers. This rules out extensions and vanity
/// letters (see the crate docs) and keeps arbitrary text away from the parser.
fn check_characters(text: &str) -> Result<(), NormalizeError> {
    let mut n_digits = 0_usize;
    for (index, character) in text.char_indices() {
        match character {
            '0'..='9' => n_digits += 1,
            '+' if index == 0 => {}
            '+' => return Err(NormalizeError::phone("it has a + that is not at the start")),
            ' ' | '\u{00A0}' | '(' | ')' | '-' | '.' | '/' => {}
            _ if character.is_alphabetic()
                || character == '#'
                || character == ','
                || character == ';' =>
            {
                return Err(NormalizeError::phone(
                    "it contains letters or extension marks (extensions and vanity numbers are not accepted)",
                ));
            }
            _ => {
                return Err(NormalizeError::phone(
                    "it contains characters that are not digits or separators",
                ));
            }
        }
    }
    if n_digits == 0 {
        return Err(NormalizeError::phone("it has no digits"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::codes::{INVALID_OPTIONS, INVALID_PHONE};

    #[track_caller]
    fn check(input: &str, region: Option<&str>, expect: Result<&str, &str>) {
        match (super::phone(input, region), expect) {
            (Ok(actual), Ok(expect)) => assert_eq!(actual, expect, "phone({input:?}, {region:?})"),
            (Err(error), Err(expect_reason)) => {
                assert_eq!(
                    error.code, INVALID_PHONE,
                    "phone({input:?}, {region:?}): {error:?}"
                );
                assert_eq!(
                    error.reason,
                    format!("not a valid phone number: {expect_reason}")
                );
                let digits: String = input.chars().filter(char::is_ascii_digit).collect();
                if digits.len() > 3 {
                    assert!(
                        !error.reason.contains(&digits),
                        "{error:?} echoes the number"
                    );
                }
            }
            (actual, expect) => {
                panic!("phone({input:?}, {region:?}) = {actual:?}, expected {expect:?}")
            }
        }
    }

    #[test]
    fn international_and_national_numbers() {
        check("+44 20 7946 0958", None, Ok("+442079460958"));
        check("+44 20 7946 0958", Some("US"), Ok("+442079460958"));
        check("+44 (0)20 7946 0958", None, Ok("+442079460958"));
        check("020 7946 0958", Some("GB"), Ok("+442079460958"));
        check("020 7946 0958", Some("united kingdom"), Ok("+442079460958"));
        check("(415) 555-2671", Some("US"), Ok("+14155552671"));
        check("415.555.2671", Some("us"), Ok("+14155552671"));
        check("+1 415 555 2671", None, Ok("+14155552671"));
        check("+14155552671", None, Ok("+14155552671"));
        check("  +33 6 12 34 56 78 ", None, Ok("+33612345678"));
        check("06 12 34 56 78", Some("FR"), Ok("+33612345678"));
        check("0033 6 12 34 56 78", Some("FR"), Ok("+33612345678"));
        check("030 123456", Some("DE"), Ok("+4930123456"));
        check("+49 30 123456", Some("FR"), Ok("+4930123456"));
        check("090-1234-5678", Some("JP"), Ok("+819012345678"));
        check("+81 90 1234 5678", None, Ok("+819012345678"));
        check("+55 11 91234-5678", None, Ok("+5511912345678"));
    }

    #[test]
    fn invalid_numbers() {
        check("", Some("US"), Err("it is empty"));
        check(
            "(415) 555-2671",
            None,
            Err("it has no country code (+...) and no default region is set"),
        );
        check(
            "+1 415 555 2671 ext. 12",
            None,
            Err(
                "it contains letters or extension marks (extensions and vanity numbers are not accepted)",
            ),
        );
        check(
            "1-800-FLOWERS",
            Some("US"),
            Err(
                "it contains letters or extension marks (extensions and vanity numbers are not accepted)",
            ),
        );
        check("+999 1234 5678", None, Err("the country code is not valid"));
        check(
            "+1 415",
            None,
            Err("it is not a valid number for its country"),
        );
        check(
            "+44 20 7946 095",
            None,
            Err("it is not a valid number for its country"),
        );
        check(
            "123",
            Some("US"),
            Err("it is not a valid number for its country"),
        );
        check(
            "+1 (415) 555-2671 +1",
            None,
            Err("it has a + that is not at the start"),
        );
        check("+", None, Err("it has no digits"));
        check("---", Some("US"), Err("it has no digits"));
        check(
            "415*555*2671",
            Some("US"),
            Err("it contains characters that are not digits or separators"),
        );
        check(&"1".repeat(80), Some("US"), Err("it is too long"));
        check("+1 234 567 8901 2345 6789", None, Err("it is too long"));
        check(
            "442079460958",
            Some("US"),
            Err("it is not a valid number for its country"),
        );
        check(
            "00660000000000",
            Some("JP"),
            Err("it is longer than the 15 digits E.164 allows"),
        );
    }

    #[test]
    fn unknown_default_region_is_an_options_error() {
        let error = super::phone("415 555 2671", Some("Atlantis")).unwrap_err();
        assert_eq!(error.code, INVALID_OPTIONS);
        let error = super::phone("415 555 2671", Some("AQ")).unwrap_err();
        assert_eq!(
            (error.code, error.reason.as_str()),
            (
                INVALID_OPTIONS,
                "default_region: AQ has no phone numbering plan of its own"
            )
        );
    }
}
