//! Validation and normalization of field values, as pure functions: no I/O, no async, no
//! mutable global state. The only global is libphonenumber's read-only metadata, built from
//! compiled-in data on the first phone normalized (a few milliseconds).
//!
//! Values enter as JSON ([`normalize_value`]) or as `&str` (the typed functions [`email`],
//! [`phone`], [`country`], [`currency`], [`amount`], [`timestamp`], [`date`], [`name`],
//! [`trim`], [`lowercase`]). A value leaves either in its normal form or as a
//! [`NormalizeError`] with a stable `code` (see [`codes`]) and a `reason` for people. What a
//! caller does with a failure is its own business, configured per field with [`OnError`]; this
//! crate only reports.
//!
//! Every rule is **idempotent**: normalizing a normalized value returns it unchanged (the
//! property tests check this for every rule), so re-importing or replaying data is safe.
//! Reasons never repeat the rejected value, because they end up in logs and quarantine
//! listings (a mis-mapped column could put anything there).
//!
//! # Absent values
//!
//! In [`normalize_value`], JSON `null` stays `null`, and a string that is empty or only
//! whitespace becomes `null` for every rule (so does a name that is empty once invisible
//! characters are removed). An empty CSV cell means "no value", not "an invalid phone number":
//! rejecting it would quarantine every row with an optional empty column. A caller that
//! requires a field checks for `null` itself. The typed functions, by contrast, reject empty
//! input (`email("")` is an `invalid_email` error).
//!
//! # The rules
//!
//! **Email** ([`email`]). Surrounding whitespace is trimmed and the *whole* address is
//! lowercased, the domain converted to its ASCII (IDNA / punycode) form:
//! `" Zoë@Bücher.DE "` → `"zoë@xn--bcher-kva.de"`. The local part is lowercased too, although
//! RFC 5321 lets it be case-sensitive: no mainstream mailbox provider treats it so, ESPs match
//! addresses case-insensitively (Mailchimp's subscriber hash is the MD5 of the lowercased
//! address), and identity resolution needs one spelling per mailbox, or `Ann@x.com` and
//! `ann@x.com` become two profiles. Non-ASCII local parts (RFC 6531, `用户@例子.广告`) are
//! accepted, lowercased and put in Unicode NFC; note that many ESPs still refuse them. The policy
//! is deliberately stricter than RFC 5322, accepting only what ESPs accept: a dot-atom local part
//! (letters, digits, ``!#$%&'*+-/=?^_`{|}~`` and non-ASCII letters; no leading, trailing or
//! doubled dot; at most 64 bytes) and a DNS host name with at least one dot (labels of letters,
//! digits and inner hyphens, at most 63 bytes each, a top-level domain of at least two
//! characters that is not all digits). Rejected: no `@` or more than one, an empty side,
//! whitespace anywhere, quoted local parts (`"a b"@x.com`), IP-address literals
//! (`a@[127.0.0.1]`), comments, display names (`Ann <a@x.com>`), a trailing dot on the domain,
//! and anything longer than 254 bytes once normalized. No DNS or SMTP check is made (that would
//! be I/O), and sub-addresses (`+tag`) and Gmail dots are kept: they are the user's choice.
//! The `email_address` crate was considered; its RFC grammar is looser than this policy, so
//! checking the policy directly is simpler, faster and gives more precise reasons.
//!
//! **Phone** ([`phone`]). Parsed and validated with libphonenumber's metadata, through the
//! `rlibphonenumber` port, and formatted as E.164 (`"+44 20 7946 0958"` → `"+442079460958"`).
//! A number with a leading `+` (or an international call prefix the default region knows, like
//! `00` in France) carries its own country; any other number is read in the national format of
//! the default region (`Options::default_region`, e.g. `"(415) 555-2671"` with `US` →
//! `"+14155552671"`), and is rejected without one. The number must be *valid* for its country
//! according to the metadata, not just plausible in length, so that bad numbers fail here
//! rather than at the SMS provider, and its E.164 form must have at most 15 digits (a few
//! national-only numbers, like Japanese `0066` toll-free ones, are longer). Only digits,
//! spaces, `+`, `(`, `)`, `-`, `.` and `/` are accepted: extensions (`x123`, `ext. 5`) are
//! rejected, because E.164 cannot hold them and dropping them would make two extensions of one
//! switchboard the same identity; vanity letters (`1-800-FLOWERS`) are rejected too. JSON
//! integers are accepted and read as their digits (a spreadsheet that lost the `+` gives a
//! national number, so `442079460958` with region `US` is rejected rather than guessed).
//! A phone costs about 1.1–1.4 µs (the `normalize_speed` example), ten times any other rule:
//! callers importing many rows with repeated numbers may cache by raw string. The `phonenumber`
//! crate was measured first at 8–15 µs per number (most of it hashing regex sources in its
//! shared regex cache, behind a mutex); it also returned `+78695109545` for `0078695109545`
//! from Germany and then rejected that output, breaking idempotence.
//!
//! **Country** ([`country`]) → ISO 3166-1 alpha-2, upper case (`"fr"`, `"FRA"`, `"France"`,
//! `" united states "` → `"FR"`, `"FR"`, `"FR"`, `"US"`). Case, surrounding whitespace, spaces,
//! dots, hyphens, apostrophes, commas, parentheses and Latin diacritics are ignored
//! (`"Côte d'Ivoire"` and `"cote divoire"` → `"CI"`; `"U.S.A."` → `"US"`; `&` reads as `and`).
//! Accepted: alpha-2 and alpha-3 codes, the ISO short and official English names and the aliases
//! the `celes` crate knows (`"Czech Republic"`, `"Russia"`, `"South Korea"`, `"Holland"`,
//! `"Ivory Coast"`, `"England"`, `"Scotland"`, ...), plus this crate's own list: `UK`, `Britain`,
//! `Wales`, `UAE`, `DRC`, `Samoa` (which `celes` would read as American Samoa) and the
//! endonyms of the larger European and Latin American markets (`Deutschland`, `Österreich`,
//! `Schweiz`/`Suisse`/`Svizzera`, `España`, `Italia`, `Nederland`, `België`/`Belgique`,
//! `Polska`, `Sverige`, `Norge`, `Danmark`, `Suomi`, `Česko`, `Brasil`, `México`, `Éire`, ...;
//! see `country.rs`). Not accepted: numeric codes (`"250"`: a postcode in the wrong column would
//! silently become a country), names in non-Latin scripts, and ambiguous words like `"Korea"`.
//! `"Guinea"` and `"Congo"` are read as ISO names them: Guinea (`GN`) and the Republic of the
//! Congo (`CG`); `"DRC"` is the Democratic Republic of the Congo (`CD`).
//!
//! **Currency** ([`currency`]) → ISO 4217 code, upper case, from a code in any case (`"eur"`),
//! an unambiguous symbol (`€`, `£`, `₹`, `₩`, `₽`, `₺`, `₪`, `₫`, `฿`, `₱`, `₴`, `₦`, `₸`,
//! `₾`, `₼`, `zł`, `Kč`, and prefixed dollars: `US$`, `C$`/`CA$`, `A$`/`AU$`, `NZ$`, `HK$`,
//! `S$`, `R$`, `MX$`) or a common English name (`"euro"`, `"US dollars"`, `"pound sterling"`,
//! `"yen"`, `"Swiss franc"`, ... see `currency.rs`). `£` reads as GBP (its other users are small
//! and write their own code in practice). Ambiguous symbols are rejected rather than guessed:
//! `$` (USD, CAD, AUD, MXN and a dozen more), `¥` (JPY or CNY), `kr` (SEK, NOK, DKK, ISK), `R`,
//! `Fr`; so is a bare `"dollar"`. Codes that are not money in circulation are rejected too: the
//! precious metals (`XAU`), units of account (`XDR`), testing (`XTS`) and no currency (`XXX`).
//! Superseded codes (`BGN`, `HRK`) are still accepted, because historical records use them.
//!
//! **Amount** ([`amount`]) → a JSON number rounded half away from zero to the currency's minor
//! units (EUR 2, JPY 0, KWD 3); currencies without minor units output integers. The currency
//! is `Options::currency` in [`normalize_value`]; when it comes from a sibling field, normalize
//! that field first and call [`amount`] with it. Input is a JSON number or a string. Strings may
//! have a sign (`-`, `+`, `−`) and grouping separators (`,`, `.`, space, no-break spaces, `'`),
//! which must group the integer part by three. The decimal separator is decided like this:
//! with both `.` and `,`, the one that comes last is decimal (`"1,234.50"` and `"1.234,50"` are
//! both 1234.5); a single `.` is decimal (`"1.234"` is 1.234), several are grouping
//! (`"1.234.567"`); a single `,` is decimal (`"12,5"`), except that a `,` followed by exactly
//! three digits reads as grouping for currencies with fewer than three minor units
//! (`"1,234"` EUR is 1234, since 1.234 would be more precise than the currency) and is rejected
//! as ambiguous for currencies with three or more (`"1,234"` KWD). Currency symbols and codes
//! inside the amount, exponents in strings, and parentheses for negatives are rejected.
//! Amounts with more than 15 significant digits after rounding are rejected, because a JSON
//! number (an `f64`) could not hold them exactly.
//!
//! **Timestamp** ([`timestamp`]) → RFC 3339 in UTC (`"2024-01-31T10:00:00Z"`), fractional
//! seconds kept when present. Accepted without a format: RFC 3339 / ISO 8601 with any offset
//! (`2024-01-31T12:00:00+02:00`, `Z`, a space instead of `T`, an RFC 9557 `[zone]` annotation
//! after the offset, which is ignored), the same without an offset (`2024-01-31 12:00:00`: read
//! as UTC, because exports from servers and databases are overwhelmingly UTC and guessing a
//! tenant zone would be worse; set a format with `%z` to be explicit), a date alone
//! (`2024-01-31`: midnight UTC), and epoch numbers: JSON numbers, or strings of digits with an
//! optional `-`. An epoch whose absolute value is below 10^11 is seconds, otherwise
//! milliseconds (10^11 seconds is the year 5138, 10^11 milliseconds is March 1973, so
//! millisecond values from before 1973 are misread; fractional seconds are kept to the
//! microsecond). A zone name without an offset is rejected, since resolving it needs the time
//! zone database (I/O). Slashed dates (`01/02/2024`) are rejected as ambiguous: set
//! `Options::timestamp_format`, a `strftime` format parsed with jiff's `strptime`
//! (`"%d/%m/%Y %H:%M"`); a value matching it without an offset is UTC, one without a time is
//! midnight. With a format, RFC 3339 with an offset is still accepted, so that normalized values
//! normalize to themselves.
//!
//! **Date** ([`date`]) → `YYYY-MM-DD`, for dates without a time of day (birthdays). Accepts
//! what the timestamp rule accepts; the date is the one written (`1990-05-17T00:00:00+02:00` is
//! `1990-05-17`, not the UTC date), except epoch numbers, which are UTC.
//!
//! **Name** ([`name`]) → Unicode NFC, control characters and invisible format characters
//! (zero-width space, word joiner, byte-order mark, soft hyphen) removed, every run of
//! whitespace (including tabs, newlines and no-break spaces) turned into one space, trimmed.
//! Case is never changed: `"McDonald"`, `"van der Berg"` and `"DUPONT"` are what the person
//! typed, and there is no correct automatic title case. Zero-width joiners stay (they matter in
//! Indic and Persian scripts).
//!
//! **Trim** ([`trim`]) removes surrounding Unicode whitespace. **Lowercase** ([`lowercase`])
//! trims and lowercases (Unicode), for tags and categories.
//!
//! # Types
//!
//! Each rule accepts JSON strings; Phone also takes non-negative integers, Amount any number,
//! Timestamp and Date epoch numbers. Other types (booleans, arrays, objects, or a number where a
//! string is needed) fail with `wrong_type`.
//!
//! # What this crate does not do
//!
//! No network checks (MX records, SMTP probing, carrier lookups), no disposable-domain lists
//! (they go stale), no time zone database lookups, no caching (callers know their access
//! patterns; phones are the one rule where caching pays).

mod amount;
mod country;
mod currency;
mod email;
mod error;
mod phone;
mod text;
mod timestamp;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use amount::amount;
pub use country::country;
pub use currency::currency;
pub use email::email;
pub use error::{NormalizeError, codes};
pub use phone::phone;
pub use text::{lowercase, name, trim};
pub use timestamp::{date, timestamp};

/// What a rule does with a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Trims, lowercases the whole address, converts the domain to ASCII (IDNA), and checks the
    /// syntax against what ESPs accept ([`email`]).
    Email,
    /// Parses with the default region and formats as E.164: `+14155550123` ([`phone`]).
    Phone,
    /// Country name, alpha-2 or alpha-3 code → ISO 3166-1 alpha-2: `"France"` → `"FR"`
    /// ([`country`]).
    Country,
    /// Currency code, name or unambiguous symbol → ISO 4217 code: `"eur"` → `"EUR"`
    /// ([`currency`]).
    Currency,
    /// A decimal amount → a JSON number rounded to the minor units of `Options::currency`
    /// ([`amount`]).
    Amount,
    /// A date-time in any accepted format → RFC 3339 in UTC ([`timestamp`]).
    Timestamp,
    /// A date, or a date-time whose written date is kept → `YYYY-MM-DD` ([`date`]).
    Date,
    /// Unicode NFC, invisible characters removed, whitespace collapsed and trimmed, case kept:
    /// for person and company names ([`name`]).
    Name,
    /// Surrounding whitespace trimmed ([`trim`]).
    Trim,
    /// Trimmed and lowercased: for tags and categories ([`lowercase`]).
    Lowercase,
}

/// What happens to a value that a rule cannot normalize.
///
/// This crate never acts on it: [`normalize_value`] always returns the error, and the caller
/// (an import or the ingestion pipeline) applies the field's `OnError`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The whole record is rejected (quarantined) with the reason.
    #[default]
    Reject,
    /// The field is removed from the record, and the reason recorded.
    Drop,
}

/// Context a rule may need. The same options usually apply to a whole import or source; check
/// them once with [`Options::check`] before normalizing values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// The region for phone numbers written without a country code: anything [`country`]
    /// accepts (`"US"`, `"gb"`, `"Germany"`).
    pub default_region: Option<String>,
    /// A `strftime`-style format (jiff's `strptime`) for timestamps and dates that are not
    /// RFC 3339, e.g. `"%d/%m/%Y %H:%M"`.
    pub timestamp_format: Option<String>,
    /// The currency of amounts: anything [`currency`] accepts. Required by [`Rule::Amount`].
    pub currency: Option<String>,
}

impl Options {
    /// Checks that the options are usable, so that a configuration mistake is reported once
    /// instead of as an error on every value. Fails with code `invalid_options`.
    pub fn check(&self) -> Result<(), NormalizeError> {
        if let Some(region) = &self.default_region {
            phone::region(region)?;
        }
        if let Some(currency) = &self.currency {
            currency::currency(currency).map_err(|error| {
                NormalizeError::new(
                    codes::INVALID_OPTIONS,
                    format!("currency: {}", error.reason),
                )
            })?;
        }
        if let Some(format) = &self.timestamp_format {
            timestamp::check_format(format)?;
        }
        Ok(())
    }
}

/// Normalizes one JSON value with a rule: the entry point callers use.
///
/// `null` stays `null`, and a blank string becomes `null` (see the crate docs, "Absent
/// values"). Otherwise the result is a string, except for [`Rule::Amount`], which returns a
/// number.
pub fn normalize_value(
    rule: Rule,
    value: &Value,
    options: &Options,
) -> Result<Value, NormalizeError> {
    if value.is_null() {
        return Ok(Value::Null);
    }
    if let Value::String(text) = value
        && text.trim().is_empty()
    {
        return Ok(Value::Null);
    }
    match rule {
        Rule::Email => Ok(Value::String(email(expect_string(rule, value)?)?)),
        Rule::Phone => {
            let region = options.default_region.as_deref();
            match value {
                Value::Number(number) => match phone::integer_digits(number) {
                    Some(digits) => Ok(Value::String(phone(&digits, region)?)),
                    None => Err(NormalizeError::wrong_type(
                        "phone",
                        "a string or a non-negative integer",
                        value,
                    )),
                },
                _ => Ok(Value::String(phone(expect_string(rule, value)?, region)?)),
            }
        }
        Rule::Country => Ok(Value::String(
            country(expect_string(rule, value)?)?.to_owned(),
        )),
        Rule::Currency => Ok(Value::String(
            currency(expect_string(rule, value)?)?.to_owned(),
        )),
        Rule::Amount => match options.currency.as_deref() {
            Some(code) => amount(value, code),
            None => Err(NormalizeError::new(
                codes::INVALID_OPTIONS,
                "the amount rule needs a currency in its options",
            )),
        },
        Rule::Timestamp => {
            let format = options.timestamp_format.as_deref();
            let instant = match value {
                Value::Number(number) => timestamp::from_epoch_number(number)?,
                _ => timestamp(expect_string(rule, value)?, format)?,
            };
            Ok(Value::String(instant.to_string()))
        }
        Rule::Date => {
            let format = options.timestamp_format.as_deref();
            let day = match value {
                Value::Number(number) => jiff::tz::Offset::UTC
                    .to_datetime(timestamp::from_epoch_number(number)?)
                    .date(),
                _ => date(expect_string(rule, value)?, format)?,
            };
            Ok(Value::String(day.to_string()))
        }
        Rule::Name => non_blank(name(expect_string(rule, value)?)),
        Rule::Trim => non_blank(trim(expect_string(rule, value)?).to_owned()),
        Rule::Lowercase => non_blank(lowercase(expect_string(rule, value)?)),
    }
}

fn expect_string(rule: Rule, value: &Value) -> Result<&str, NormalizeError> {
    match value {
        Value::String(text) => Ok(text),
        _ => {
            let expected = match rule {
                Rule::Phone => "a string or a non-negative integer",
                Rule::Timestamp | Rule::Date => "a string or an epoch number",
                _ => "a string",
            };
            Err(NormalizeError::wrong_type(rule_name(rule), expected, value))
        }
    }
}

fn non_blank(text: String) -> Result<Value, NormalizeError> {
    Ok(if text.is_empty() {
        Value::Null
    } else {
        Value::String(text)
    })
}

fn rule_name(rule: Rule) -> &'static str {
    match rule {
        Rule::Email => "email",
        Rule::Phone => "phone",
        Rule::Country => "country",
        Rule::Currency => "currency",
        Rule::Amount => "amount",
        Rule::Timestamp => "timestamp",
        Rule::Date => "date",
        Rule::Name => "name",
        Rule::Trim => "trim",
        Rule::Lowercase => "lowercase",
    }
}

#[cfg(test)]
mod tests;
