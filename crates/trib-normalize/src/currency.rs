//! Currencies → ISO 4217 codes, with the `iso_currency` tables.

use iso_currency::Currency;

use crate::{NormalizeError, codes};

/// Normalizes a currency code, unambiguous symbol or common English name to its ISO 4217 code
/// (`"eur"` → `"EUR"`, `"€"` → `"EUR"`). Ambiguous symbols (`$`, `¥`, `kr`) and codes that are
/// not money in circulation (`XAU`, `XXX`) are rejected; the crate docs list what is accepted.
///
/// ```
/// assert_eq!(trib_normalize::currency("usd").unwrap(), "USD");
/// assert_eq!(trib_normalize::currency("$").unwrap_err().code, "unknown_currency");
/// ```
pub fn currency(input: &str) -> Result<&'static str, NormalizeError> {
    lookup(input).map(|found| found.code())
}

/// Looks up a currency as [`currency`] does, returning the table entry (for its minor units).
pub(crate) fn lookup(input: &str) -> Result<Currency, NormalizeError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(NormalizeError::new(
            codes::UNKNOWN_CURRENCY,
            "the currency is empty",
        ));
    }
    let found = match by_code(text) {
        Some(found) => Some(found),
        None => by_symbol(text)?.or_else(|| by_name(text)),
    };
    let Some(found) = found else {
        return Err(NormalizeError::new(
            codes::UNKNOWN_CURRENCY,
            "not a known ISO 4217 currency code, symbol or name",
        ));
    };
    // Metals, units of account, the testing code and "no currency" have no minor units.
    if found.is_special() || found.exponent().is_none() {
        return Err(NormalizeError::new(
            codes::UNKNOWN_CURRENCY,
            format!(
                "{} is an ISO 4217 code for a precious metal, a unit of account, testing or no currency, not for money",
                found.code()
            ),
        ));
    }
    Ok(found)
}

/// Three ASCII letters in any case, without allocating.
fn by_code(text: &str) -> Option<Currency> {
    let [first, second, third] = *text.as_bytes() else {
        return None;
    };
    let upper = [
        first.to_ascii_uppercase(),
        second.to_ascii_uppercase(),
        third.to_ascii_uppercase(),
    ];
    if !upper.iter().all(u8::is_ascii_uppercase) {
        return None;
    }
    std::str::from_utf8(&upper)
        .ok()
        .and_then(Currency::from_code)
}

/// Symbols: `Ok(None)` if not a symbol, an error if the symbol is ambiguous.
fn by_symbol(text: &str) -> Result<Option<Currency>, NormalizeError> {
    let ambiguous = |symbol: &str, examples: &str| {
        Err(NormalizeError::new(
            codes::UNKNOWN_CURRENCY,
            format!(
                "the symbol {symbol} is used by several currencies ({examples}); use an ISO 4217 code"
            ),
        ))
    };
    Ok(Some(match text {
        "€" => Currency::EUR,
        "£" => Currency::GBP,
        "US$" | "U$S" => Currency::USD,
        "C$" | "CA$" | "Can$" => Currency::CAD,
        "A$" | "AU$" => Currency::AUD,
        "NZ$" => Currency::NZD,
        "HK$" => Currency::HKD,
        "S$" | "SG$" => Currency::SGD,
        "R$" => Currency::BRL,
        "MX$" => Currency::MXN,
        "₹" => Currency::INR,
        "₩" => Currency::KRW,
        "₽" => Currency::RUB,
        "₺" => Currency::TRY,
        "₪" => Currency::ILS,
        "₫" => Currency::VND,
        "฿" => Currency::THB,
        "₱" => Currency::PHP,
        "₴" => Currency::UAH,
        "₦" => Currency::NGN,
        "₸" => Currency::KZT,
        "₾" => Currency::GEL,
        "₼" => Currency::AZN,
        "zł" | "zl" => Currency::PLN,
        "Kč" => Currency::CZK,
        "$" => return ambiguous("$", "USD, CAD, AUD, MXN and others"),
        "¥" | "￥" => return ambiguous("¥", "JPY, CNY"),
        "kr" | "kr." | "Kr" => return ambiguous("kr", "SEK, NOK, DKK, ISK"),
        "R" => return ambiguous("R", "ZAR, and R$ for BRL"),
        "Fr" | "Fr." | "fr." => return ambiguous("Fr", "CHF, XOF, XAF and others"),
        _ => return Ok(None),
    }))
}

/// Common English names, case-insensitive, singular or plural. Bare "dollar", "pound",
/// "franc", "peso", "rupee", "krona" are not listed: each names several currencies.
fn by_name(text: &str) -> Option<Currency> {
    let lower = text.to_lowercase();
    let singular = lower.strip_suffix('s').unwrap_or(&lower);
    Some(match singular.trim() {
        "euro" => Currency::EUR,
        "us dollar" | "u.s. dollar" | "united states dollar" | "american dollar" => Currency::USD,
        "pound sterling" | "sterling" | "british pound" | "gb pound" => Currency::GBP,
        "yen" | "japanese yen" => Currency::JPY,
        "yuan" | "renminbi" | "chinese yuan" => Currency::CNY,
        "swiss franc" => Currency::CHF,
        "canadian dollar" => Currency::CAD,
        "australian dollar" => Currency::AUD,
        "new zealand dollar" => Currency::NZD,
        "hong kong dollar" => Currency::HKD,
        "singapore dollar" => Currency::SGD,
        "indian rupee" => Currency::INR,
        "brazilian real" | "real" | "reai" => Currency::BRL,
        "mexican peso" => Currency::MXN,
        "swedish krona" | "swedish kronor" => Currency::SEK,
        "norwegian krone" | "norwegian kroner" => Currency::NOK,
        "danish krone" | "danish kroner" => Currency::DKK,
        "polish zloty" | "złoty" | "zloty" => Currency::PLN,
        "south african rand" | "rand" => Currency::ZAR,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use crate::codes::UNKNOWN_CURRENCY;

    #[track_caller]
    fn check(input: &str, expect: Option<&str>) {
        match (super::currency(input), expect) {
            (Ok(actual), Some(expect)) => assert_eq!(actual, expect, "currency({input:?})"),
            (Err(error), None) => assert_eq!(error.code, UNKNOWN_CURRENCY, "currency({input:?})"),
            (actual, expect) => panic!("currency({input:?}) = {actual:?}, expected {expect:?}"),
        }
    }

    #[test]
    fn codes_symbols_and_names() {
        check("EUR", Some("EUR"));
        check("eur", Some("EUR"));
        check(" usd ", Some("USD"));
        check("Jpy", Some("JPY"));
        check("KWD", Some("KWD"));
        check("CLF", Some("CLF")); // a fund code, with minor units
        check("BGN", Some("BGN")); // superseded, still accepted
        check("€", Some("EUR"));
        check("£", Some("GBP"));
        check("US$", Some("USD"));
        check("C$", Some("CAD"));
        check("R$", Some("BRL"));
        check("₹", Some("INR"));
        check("zł", Some("PLN"));
        check("Euro", Some("EUR"));
        check("euros", Some("EUR"));
        check("US Dollars", Some("USD"));
        check("pound sterling", Some("GBP"));
        check("Swiss Francs", Some("CHF"));
        check("yen", Some("JPY"));
    }

    #[test]
    fn unknown_currencies() {
        check("", None);
        check("XYZ", None);
        check("EURO1", None);
        check("EU", None);
        check("$", None);
        check("¥", None);
        check("kr", None);
        check("dollar", None);
        check("XXX", None);
        check("XAU", None);
        check("XTS", None);
        check("XDR", None);
        check("€€", None);
        check("1EU", None);
    }

    #[test]
    fn ambiguity_is_explained() {
        let error = super::currency("$").unwrap_err();
        assert_eq!(
            error.reason,
            "the symbol $ is used by several currencies (USD, CAD, AUD, MXN and others); use an ISO 4217 code"
        );
        let error = super::currency("xxx").unwrap_err();
        assert!(
            error.reason.starts_with("XXX is an ISO 4217 code for"),
            "{error:?}"
        );
    }
}
