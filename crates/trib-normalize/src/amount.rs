//! Monetary amounts, rounded to the minor units of their currency, in exact decimal arithmetic.

use serde_json::{Number, Value};

use crate::{NormalizeError, codes};

/// The most significant digits an amount may have once rounded: an `f64` holds every decimal
/// of up to 15 significant digits exactly enough to print it back unchanged.
const MAX_SIGNIFICANT_DIGITS: u32 = 15;
/// The most digits read from a string; anything longer is not an amount.
const MAX_INPUT_DIGITS: usize = 30;

/// Normalizes an amount to a JSON number rounded (half away from zero) to the minor units of
/// `currency` (anything [`currency`](crate::currency) accepts). The value is a JSON number or a
/// string; how separators in strings are read is described in the crate docs.
///
/// ```
/// use serde_json::json;
/// use trib_normalize::amount;
/// assert_eq!(amount(&json!("1,234.505"), "EUR").unwrap(), json!(1234.51));
/// assert_eq!(amount(&json!("1.234,5"), "eur").unwrap(), json!(1234.5));
/// assert_eq!(amount(&json!(1234.5), "JPY").unwrap(), json!(1235));
/// assert_eq!(amount(&json!("12,3456"), "KWD").unwrap(), json!(12.346));
/// ```
pub fn amount(value: &Value, currency: &str) -> Result<Value, NormalizeError> {
    let found = crate::currency::lookup(currency)?;
    let minor_units = u32::from(found.exponent().unwrap_or(2));
    let decimal = match value {
        Value::Number(number) => parse_number_literal(&number.to_string())?,
        Value::String(text) => parse_text(text, minor_units)?,
        _ => {
            return Err(NormalizeError::wrong_type(
                "amount",
                "a number or a string",
                value,
            ));
        }
    };
    let minor = decimal.round_to(minor_units)?;
    let signed = if decimal.negative { -minor } else { minor };
    if minor_units == 0 {
        return Ok(Value::from(signed));
    }
    // Both operands are exact in an f64 (below 2^53 and 10^22), and IEEE division rounds
    // correctly, so this is the double nearest to the decimal amount.
    let float = signed as f64 / 10_f64.powi(minor_units.cast_signed());
    Number::from_f64(float)
        .map(Value::Number)
        .ok_or_else(|| invalid("it is not a finite number"))
}

fn invalid(detail: &str) -> NormalizeError {
    NormalizeError::new(
        codes::INVALID_AMOUNT,
        format!("not a valid amount: {detail}"),
    )
}

/// `mantissa × 10^-scale`, negated if `negative`.
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    mantissa: u128,
    scale: i32,
}

impl Decimal {
    /// The absolute value in minor units, rounded half away from zero.
    fn round_to(&self, minor_units: u32) -> Result<i64, NormalizeError> {
        let target = minor_units.cast_signed();
        let minor = if self.scale <= target {
            let factor = pow10(target - self.scale).ok_or_else(too_large)?;
            self.mantissa.checked_mul(factor).ok_or_else(too_large)?
        } else {
            match pow10(self.scale - target) {
                Some(divisor) => {
                    let quotient = self.mantissa / divisor;
                    let remainder = self.mantissa % divisor;
                    if remainder >= divisor - remainder {
                        quotient + 1
                    } else {
                        quotient
                    }
                }
                // The mantissa is below 10^38, so it is less than half of the divisor.
                None => 0,
            }
        };
        if minor >= 10_u128.pow(MAX_SIGNIFICANT_DIGITS) {
            return Err(too_large());
        }
        i64::try_from(minor).map_err(|_| too_large())
    }
}

fn too_large() -> NormalizeError {
    invalid("it has more than 15 significant digits, more than a JSON number holds exactly")
}

fn pow10(exponent: i32) -> Option<u128> {
    10_u128.checked_pow(u32::try_from(exponent).ok()?)
}

/// Parses a JSON number literal as serde_json prints it: `-12`, `12.5`, `1e20`, `1.5e-7`.
fn parse_number_literal(literal: &str) -> Result<Decimal, NormalizeError> {
    let (negative, unsigned) = match literal.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, literal),
    };
    let (significand, exponent) = match unsigned.find(['e', 'E']) {
        Some(index) => {
            let exponent: i32 = unsigned[index + 1..]
                .parse()
                .map_err(|_| invalid("it is not a number"))?;
            (&unsigned[..index], exponent)
        }
        None => (unsigned, 0),
    };
    let (integer, fraction) = significand.split_once('.').unwrap_or((significand, ""));
    let mantissa = digits_value([integer, fraction])?;
    let fraction_len = i32::try_from(fraction.len()).map_err(|_| too_large())?;
    let scale = fraction_len.checked_sub(exponent).ok_or_else(too_large)?;
    Ok(Decimal {
        negative,
        mantissa,
        scale,
    })
}

/// Parses an amount written by people; the separator rules are in the crate docs.
fn parse_text(text: &str, minor_units: u32) -> Result<Decimal, NormalizeError> {
    let trimmed = text.trim();
    let (negative, body) = if let Some(rest) = trimmed.strip_prefix(['-', '\u{2212}']) {
        (true, rest)
    } else {
        (false, trimmed.strip_prefix('+').unwrap_or(trimmed))
    };
    let mut n_dots = 0;
    let mut n_commas = 0;
    let mut space_grouping = None;
    for character in body.chars() {
        match character {
            '0'..='9' => {}
            '.' => n_dots += 1,
            ',' => n_commas += 1,
            ' ' | '\u{00A0}' | '\u{202F}' | '\u{2009}' | '\'' | '\u{2019}' => {
                if space_grouping.is_some_and(|previous| previous != character) {
                    return Err(invalid("it mixes different grouping separators"));
                }
                space_grouping = Some(character);
            }
            _ => {
                return Err(invalid(
                    "it contains characters other than digits, separators and a sign",
                ));
            }
        }
    }
    let (decimal_separator, grouping) = match (n_dots, n_commas) {
        (0, 0) => (None, space_grouping),
        (_, 0) if n_dots == 1 => (Some('.'), space_grouping),
        (_, 0) => (None, Some('.')),
        (0, 1) => {
            let (before, after) = body.split_once(',').unwrap_or((body, ""));
            let before_digits = before
                .rsplit(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap_or("");
            let could_be_grouping = after.len() == 3
                && !before_digits.is_empty()
                && before_digits.len() <= 3
                && space_grouping.is_none();
            if !could_be_grouping {
                (Some(','), space_grouping)
            } else if minor_units < 3 {
                (None, Some(','))
            } else {
                return Err(invalid(
                    "a comma followed by three digits is ambiguous for a currency with three decimals",
                ));
            }
        }
        (0, _) => (None, Some(',')),
        (_, _) => {
            let last_dot = body.rfind('.');
            let last_comma = body.rfind(',');
            if last_dot > last_comma {
                (Some('.'), Some(','))
            } else {
                (Some(','), Some('.'))
            }
        }
    };
    if space_grouping.is_some() && grouping != space_grouping {
        return Err(invalid("it mixes different grouping separators"));
    }
    let (integer, fraction) = match decimal_separator {
        Some(separator) => {
            let (integer, fraction) = body.split_once(separator).unwrap_or((body, ""));
            if fraction.contains(separator) {
                return Err(invalid("it has more than one decimal separator"));
            }
            (integer, fraction)
        }
        None => (body, ""),
    };
    if !fraction.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(invalid("it has separators after the decimal separator"));
    }
    let integer_digits = match grouping {
        Some(separator) if integer.contains(separator) => ungroup(integer, separator)?,
        _ => {
            if !integer.bytes().all(|byte| byte.is_ascii_digit()) {
                return Err(invalid("its separators are not in the expected places"));
            }
            integer.to_owned()
        }
    };
    if integer_digits.is_empty() && fraction.is_empty() {
        return Err(invalid("it has no digits"));
    }
    let mantissa = digits_value([&integer_digits, fraction])?;
    let scale = i32::try_from(fraction.len()).map_err(|_| too_large())?;
    Ok(Decimal {
        negative,
        mantissa,
        scale,
    })
}

/// Removes grouping separators, checking they group by three: `1,234,567`, not `12,34`.
fn ungroup(integer: &str, separator: char) -> Result<String, NormalizeError> {
    let mut digits = String::with_capacity(integer.len());
    for (index, group) in integer.split(separator).enumerate() {
        let well_formed = group.bytes().all(|byte| byte.is_ascii_digit())
            && if index == 0 {
                (1..=3).contains(&group.len())
            } else {
                group.len() == 3
            };
        if !well_formed {
            return Err(invalid(
                "its grouping separators do not separate groups of three digits",
            ));
        }
        digits.push_str(group);
    }
    Ok(digits)
}

fn digits_value<'a>(parts: impl IntoIterator<Item = &'a str>) -> Result<u128, NormalizeError> {
    let mut value: u128 = 0;
    let mut n_digits = 0;
    for part in parts {
        for byte in part.bytes() {
            if !byte.is_ascii_digit() {
                return Err(invalid("it is not a number"));
            }
            n_digits += 1;
            if n_digits > MAX_INPUT_DIGITS {
                return Err(invalid("it has too many digits"));
            }
            value = value * 10 + u128::from(byte - b'0');
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::codes::{INVALID_AMOUNT, UNKNOWN_CURRENCY, WRONG_TYPE};

    #[track_caller]
    fn check(input: Value, currency: &str, expect: Result<Value, &str>) {
        match (super::amount(&input, currency), expect) {
            (Ok(actual), Ok(expect)) => assert_eq!(actual, expect, "amount({input}, {currency})"),
            (Err(error), Err(code)) => {
                assert_eq!(error.code, code, "amount({input}, {currency}): {error:?}")
            }
            (actual, expect) => {
                panic!("amount({input}, {currency}) = {actual:?}, expected {expect:?}")
            }
        }
    }

    #[test]
    fn strings() {
        check(json!("12.5"), "EUR", Ok(json!(12.5)));
        check(json!("1,234.50"), "EUR", Ok(json!(1234.5)));
        check(json!("1.234,50"), "EUR", Ok(json!(1234.5)));
        check(json!("1 234,50"), "EUR", Ok(json!(1234.5)));
        check(json!("1 234,567"), "EUR", Ok(json!(1234.57)));
        check(json!("1\u{202F}234,50"), "EUR", Ok(json!(1234.5)));
        check(json!("1'234.50"), "CHF", Ok(json!(1234.5)));
        check(json!("12,5"), "EUR", Ok(json!(12.5)));
        check(json!("1,234"), "USD", Ok(json!(1234.0)));
        check(json!("1,234,567"), "USD", Ok(json!(1_234_567.0)));
        check(json!("1.234.567"), "EUR", Ok(json!(1_234_567.0)));
        check(json!("1.234"), "USD", Ok(json!(1.23)));
        check(json!("1234,567"), "EUR", Ok(json!(1234.57)));
        check(json!(" -12.345 "), "EUR", Ok(json!(-12.35)));
        check(json!("−0.125"), "EUR", Ok(json!(-0.13)));
        check(json!("+7"), "EUR", Ok(json!(7.0)));
        check(json!(".5"), "EUR", Ok(json!(0.5)));
        check(json!("12."), "EUR", Ok(json!(12.0)));
        check(json!("-0.001"), "EUR", Ok(json!(0.0)));
        check(json!("1,234.5"), "JPY", Ok(json!(1235)));
        check(json!("1234.4"), "JPY", Ok(json!(1234)));
        check(json!("12.3456"), "KWD", Ok(json!(12.346)));
        check(json!("0.00005"), "CLF", Ok(json!(0.0001)));
        check(
            json!("999999999999.99"),
            "EUR",
            Ok(json!(999_999_999_999.99)),
        );
    }

    #[test]
    fn invalid_strings() {
        check(json!("1,234"), "KWD", Err(INVALID_AMOUNT)); // ambiguous
        check(json!("$12"), "USD", Err(INVALID_AMOUNT));
        check(json!("12 EUR"), "EUR", Err(INVALID_AMOUNT));
        check(json!("1e3"), "EUR", Err(INVALID_AMOUNT));
        check(json!("(12.50)"), "EUR", Err(INVALID_AMOUNT));
        check(json!("12,34,56"), "EUR", Err(INVALID_AMOUNT));
        check(json!("1.2.3,4"), "EUR", Err(INVALID_AMOUNT));
        check(json!("1,2.3,4"), "EUR", Err(INVALID_AMOUNT));
        check(json!("1 234'5"), "EUR", Err(INVALID_AMOUNT));
        check(json!("1 234.567,5"), "EUR", Err(INVALID_AMOUNT));
        check(json!("."), "EUR", Err(INVALID_AMOUNT));
        check(json!("-"), "EUR", Err(INVALID_AMOUNT));
        check(json!("--1"), "EUR", Err(INVALID_AMOUNT));
        check(json!("12.5"), "XXX", Err(UNKNOWN_CURRENCY));
        check(json!("12.5"), "$", Err(UNKNOWN_CURRENCY));
        check(json!("10000000000000.00"), "EUR", Err(INVALID_AMOUNT)); // 16 digits
        check(json!("1".repeat(40)), "EUR", Err(INVALID_AMOUNT));
        check(json!(true), "EUR", Err(WRONG_TYPE));
        check(json!({"value": 1}), "EUR", Err(WRONG_TYPE));
    }

    #[test]
    fn numbers() {
        check(json!(12), "EUR", Ok(json!(12.0)));
        check(json!(-12), "JPY", Ok(json!(-12)));
        check(json!(1.005), "EUR", Ok(json!(1.01))); // the decimal written, not the binary value
        check(json!(2.675), "EUR", Ok(json!(2.68)));
        check(json!(0.1), "KWD", Ok(json!(0.1)));
        check(json!(1e-30), "EUR", Ok(json!(0.0)));
        check(json!(1.5e3), "EUR", Ok(json!(1500.0)));
        check(json!(1e20), "EUR", Err(INVALID_AMOUNT));
        check(json!(u64::MAX), "JPY", Err(INVALID_AMOUNT));
        check(
            json!(999_999_999_999_999_u64),
            "JPY",
            Ok(json!(999_999_999_999_999_i64)),
        );
    }
}
