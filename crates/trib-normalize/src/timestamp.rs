//! Timestamps → UTC instants, and dates → civil dates, with jiff. No time zone database is
//! consulted (that would be I/O): only numeric offsets are applied.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time};
use jiff::fmt::strtime::{self, BrokenDownTime};
use jiff::fmt::temporal::Pieces;
use jiff::tz::Offset;
use serde_json::Number;

use crate::{NormalizeError, codes};

/// Epoch values with an absolute value below this are seconds, others milliseconds.
const EPOCH_MILLISECONDS_FROM: i64 = 100_000_000_000;

/// Parses a date-time to a UTC instant. Without `format`: RFC 3339 / ISO 8601 with or without
/// an offset (none means UTC), a date alone (midnight UTC), or epoch seconds or milliseconds
/// as a string of digits. With a `strftime` `format`: that format, or RFC 3339 with an offset.
/// Details are in the crate docs.
///
/// ```
/// use trib_normalize::timestamp;
/// let instant = timestamp("2024-01-31T12:00:00+02:00", None).unwrap();
/// assert_eq!(instant.to_string(), "2024-01-31T10:00:00Z");
/// let instant = timestamp("31/01/2024 12:00", Some("%d/%m/%Y %H:%M")).unwrap();
/// assert_eq!(instant.to_string(), "2024-01-31T12:00:00Z");
/// ```
pub fn timestamp(input: &str, format: Option<&str>) -> Result<Timestamp, NormalizeError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(invalid("it is empty"));
    }
    if let Some(format) = format {
        if let Ok(parsed) = strtime::parse(format, text) {
            return broken_down_to_timestamp(&parsed);
        }
        // Keep normalized values (RFC 3339 in UTC) valid, so that normalizing is idempotent.
        return match Pieces::parse(text) {
            Ok(pieces) if pieces.offset().is_some() => pieces_to_timestamp(&pieces),
            _ => Err(invalid(&format!("it does not match the format `{format}`"))),
        };
    }
    if let Some(epoch) = epoch_integer(text) {
        return from_epoch_integer(epoch);
    }
    let pieces = Pieces::parse(text).map_err(|_| not_recognized())?;
    pieces_to_timestamp(&pieces)
}

/// Parses a date: the civil date as written (a date-time's own date, whatever its offset), or
/// the UTC date of an epoch value. Accepts what [`timestamp`] accepts, and with a `format`
/// also any ISO 8601 date.
///
/// ```
/// use trib_normalize::date;
/// assert_eq!(date("1990-05-17T00:00:00+02:00", None).unwrap().to_string(), "1990-05-17");
/// assert_eq!(date("17.05.1990", Some("%d.%m.%Y")).unwrap().to_string(), "1990-05-17");
/// ```
pub fn date(input: &str, format: Option<&str>) -> Result<Date, NormalizeError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(invalid("it is empty"));
    }
    if let Some(format) = format {
        if let Ok(day) = strtime::parse(format, text).and_then(|parsed| parsed.to_date()) {
            return Ok(day);
        }
        return Pieces::parse(text)
            .map(|pieces| pieces.date())
            .map_err(|_| invalid(&format!("it does not match the format `{format}`")));
    }
    if let Some(epoch) = epoch_integer(text) {
        return Ok(Offset::UTC.to_datetime(from_epoch_integer(epoch)?).date());
    }
    Pieces::parse(text)
        .map(|pieces| pieces.date())
        .map_err(|_| not_recognized())
}

/// A JSON number as epoch seconds or milliseconds (see the crate docs).
pub(crate) fn from_epoch_number(number: &Number) -> Result<Timestamp, NormalizeError> {
    if let Some(integer) = number.as_i64() {
        return from_epoch_integer(integer);
    }
    let Some(float) = number.as_f64().filter(|float| float.is_finite()) else {
        return Err(out_of_range());
    };
    let microseconds = if float.abs() < EPOCH_MILLISECONDS_FROM as f64 {
        (float * 1e6).round()
    } else {
        (float * 1e3).round()
    };
    // jiff's range is about ±2.6e17 µs; this bound keeps the cast exact and in range of i64.
    if microseconds.abs() >= 1e18 {
        return Err(out_of_range());
    }
    Timestamp::from_microsecond(microseconds as i64).map_err(|_| out_of_range())
}

/// Checks that a `strftime` format can be used, by formatting the epoch with it.
pub(crate) fn check_format(format: &str) -> Result<(), NormalizeError> {
    if format.trim().is_empty() {
        return Err(NormalizeError::new(
            codes::INVALID_OPTIONS,
            "timestamp_format: it is empty",
        ));
    }
    strtime::format(format, Timestamp::UNIX_EPOCH)
        .map(drop)
        .map_err(|error| {
            NormalizeError::new(codes::INVALID_OPTIONS, format!("timestamp_format: {error}"))
        })
}

fn invalid(detail: &str) -> NormalizeError {
    NormalizeError::new(
        codes::INVALID_TIMESTAMP,
        format!("not a valid timestamp: {detail}"),
    )
}

fn not_recognized() -> NormalizeError {
    invalid(
        "it is not RFC 3339, ISO 8601 or an epoch number; set a timestamp format for other forms",
    )
}

fn out_of_range() -> NormalizeError {
    invalid("it is out of the supported range (years -9999 to 9999)")
}

/// A string of ASCII digits with an optional minus sign.
fn epoch_integer(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    // Too many digits for an i64 is out of range, not "not a number".
    Some(text.parse().unwrap_or(i64::MAX))
}

fn from_epoch_integer(epoch: i64) -> Result<Timestamp, NormalizeError> {
    let instant = if epoch.unsigned_abs() < EPOCH_MILLISECONDS_FROM.unsigned_abs() {
        Timestamp::from_second(epoch)
    } else {
        Timestamp::from_millisecond(epoch)
    };
    instant.map_err(|_| out_of_range())
}

fn pieces_to_timestamp(pieces: &Pieces<'_>) -> Result<Timestamp, NormalizeError> {
    let datetime = DateTime::from_parts(pieces.date(), pieces.time().unwrap_or(Time::midnight()));
    let offset = match pieces.to_numeric_offset() {
        Some(offset) => offset,
        None if pieces.time_zone_annotation().is_some() => {
            return Err(invalid("it names a time zone but has no UTC offset"));
        }
        None => Offset::UTC,
    };
    offset.to_timestamp(datetime).map_err(|_| out_of_range())
}

fn broken_down_to_timestamp(parsed: &BrokenDownTime) -> Result<Timestamp, NormalizeError> {
    if parsed.timestamp().is_none()
        && parsed.offset().is_none()
        && parsed.iana_time_zone().is_some()
    {
        return Err(invalid("it names a time zone but has no UTC offset"));
    }
    if let Ok(instant) = parsed.to_timestamp() {
        return Ok(instant);
    }
    let datetime = parsed
        .to_datetime()
        .map_err(|_| invalid("the format does not give a complete date"))?;
    parsed
        .offset()
        .unwrap_or(Offset::UTC)
        .to_timestamp(datetime)
        .map_err(|_| out_of_range())
}

#[cfg(test)]
mod tests {
    use crate::codes::INVALID_TIMESTAMP;

    #[track_caller]
    fn check(input: &str, format: Option<&str>, expect: Option<&str>) {
        match (super::timestamp(input, format), expect) {
            (Ok(actual), Some(expect)) => {
                assert_eq!(
                    actual.to_string(),
                    expect,
                    "timestamp({input:?}, {format:?})"
                );
            }
            (Err(error), None) => {
                assert_eq!(
                    error.code, INVALID_TIMESTAMP,
                    "timestamp({input:?}, {format:?})"
                );
            }
            (actual, expect) => {
                panic!("timestamp({input:?}, {format:?}) = {actual:?}, expected {expect:?}")
            }
        }
    }

    #[track_caller]
    fn check_date(input: &str, format: Option<&str>, expect: Option<&str>) {
        match (super::date(input, format), expect) {
            (Ok(actual), Some(expect)) => {
                assert_eq!(actual.to_string(), expect, "date({input:?}, {format:?})")
            }
            (Err(error), None) => {
                assert_eq!(error.code, INVALID_TIMESTAMP, "date({input:?}, {format:?})")
            }
            (actual, expect) => {
                panic!("date({input:?}, {format:?}) = {actual:?}, expected {expect:?}")
            }
        }
    }

    #[test]
    fn timestamps_without_format() {
        check("2024-01-31T12:00:00Z", None, Some("2024-01-31T12:00:00Z"));
        check(
            "2024-01-31T12:00:00+02:00",
            None,
            Some("2024-01-31T10:00:00Z"),
        );
        check(
            "2024-01-31T12:00:00-05:30",
            None,
            Some("2024-01-31T17:30:00Z"),
        );
        check("2024-01-31t12:00:00z", None, Some("2024-01-31T12:00:00Z"));
        check(
            " 2024-01-31T12:00:00.250Z ",
            None,
            Some("2024-01-31T12:00:00.25Z"),
        );
        check("2024-01-31 12:00:00", None, Some("2024-01-31T12:00:00Z"));
        check("2024-01-31T12:00", None, Some("2024-01-31T12:00:00Z"));
        check("2024-01-31", None, Some("2024-01-31T00:00:00Z"));
        check(
            "2024-01-31T12:00:00+01:00[Europe/Paris]",
            None,
            Some("2024-01-31T11:00:00Z"),
        );
        check(
            "2024-12-31T23:30:00-01:00",
            None,
            Some("2025-01-01T00:30:00Z"),
        );
        check("1706702400", None, Some("2024-01-31T12:00:00Z"));
        check("1706702400000", None, Some("2024-01-31T12:00:00Z"));
        check("-86400", None, Some("1969-12-31T00:00:00Z"));
        check("0", None, Some("1970-01-01T00:00:00Z"));
    }

    #[test]
    fn invalid_timestamps() {
        check("", None, None);
        check("yesterday", None, None);
        check("01/02/2024", None, None); // ambiguous without a format
        check("2024-02-30", None, None);
        check("2024-01-31T25:00:00Z", None, None);
        check("2024-01-31T12:00:00[Europe/Paris]", None, None); // a zone name needs an offset
        check("2024-01-31T12:00:00Z trailing", None, None);
        check("99999999999999999999999", None, None);
        check("1706702400.5", None, None); // fractional epochs only as JSON numbers
        check("31/01/2024", Some("%Y-%m-%d"), None);
        check("2024-01-31 12:00", Some("%d/%m/%Y %H:%M"), None); // no offset: not RFC 3339
    }

    #[test]
    fn timestamps_with_format() {
        let format = Some("%d/%m/%Y %H:%M");
        check("31/01/2024 12:00", format, Some("2024-01-31T12:00:00Z"));
        check("2024-01-31T12:00:00Z", format, Some("2024-01-31T12:00:00Z"));
        check("01/02/2024", Some("%m/%d/%Y"), Some("2024-01-02T00:00:00Z"));
        check(
            "31.01.2024 12:00 +0100",
            Some("%d.%m.%Y %H:%M %z"),
            Some("2024-01-31T11:00:00Z"),
        );
        check("1706702400", Some("%s"), Some("2024-01-31T12:00:00Z"));
        check(
            "Jan 31 2024 3pm",
            Some("%b %d %Y %I%P"),
            Some("2024-01-31T15:00:00Z"),
        );
    }

    #[test]
    fn dates() {
        check_date("2024-01-31", None, Some("2024-01-31"));
        check_date("1990-05-17T00:00:00+02:00", None, Some("1990-05-17"));
        check_date("1990-05-17T23:30:00-05:00", None, Some("1990-05-17"));
        check_date("1990-05-17 08:00", None, Some("1990-05-17"));
        check_date("17.05.1990", Some("%d.%m.%Y"), Some("1990-05-17"));
        check_date("1990-05-17", Some("%d.%m.%Y"), Some("1990-05-17"));
        check_date("1706702400", None, Some("2024-01-31"));
        check_date("1990-02-29", None, None);
        check_date("17/05/1990", None, None);
        check_date("17.05.1990", Some("%Y-%m-%d"), None);
        check_date("", None, None);
    }
}
