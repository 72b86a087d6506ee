//! Timestamps: ISO 8601 text and epoch numbers in, milliseconds since the Unix epoch out.
//!
//! Hand-written rather than a date crate: the accepted grammar is small, the browser bundle
//! stays small, and every refusal can say exactly what is wrong with the value.
//!
//! Accepted text: `YYYY-MM-DD`, optionally followed by `T` (or `t` or a space) and `HH:MM`,
//! `HH:MM:SS` or `HH:MM:SS.fraction` (any number of digits, truncated to milliseconds), and an
//! optional offset `Z`, `±HH:MM`, `±HHMM` or `±HH`. Without an offset the time is UTC. Years
//! outside 0001–9999 are refused: PostgreSQL could store them, but in a browser app they are
//! always a bug (an epoch in seconds read as milliseconds, a typo in a year).

use std::fmt::Write as _;

/// Milliseconds since 1970-01-01T00:00:00Z of 0001-01-01T00:00:00Z.
pub const MIN_MS: i64 = -62_135_596_800_000;
/// Milliseconds since 1970-01-01T00:00:00Z of 9999-12-31T23:59:59.999Z.
pub const MAX_MS: i64 = 253_402_300_799_999;

/// Why a value is not an accepted timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// The text does not follow the ISO 8601 shape.
    #[error("not an ISO 8601 date-time (expected like 2024-05-01T10:30:00Z): {0}")]
    Shape(&'static str),
    /// A component is out of its range (month 13, February 30, hour 25, …).
    #[error("{0} is out of range")]
    Component(&'static str),
    /// The instant is before 0001-01-01 or after 9999-12-31.
    #[error("the date is outside years 0001–9999")]
    OutOfRange,
    /// The number is not finite.
    #[error("not a finite number")]
    NotFinite,
}

/// Parses ISO 8601 text into milliseconds since the Unix epoch.
pub fn parse_iso8601(text: &str) -> Result<i64, TimestampError> {
    let b = text.as_bytes();
    let mut p = Cursor { b, i: 0 };
    if matches!(b.first(), Some(b'+' | b'-')) {
        // Expanded years (`+275760-09-13`, what JavaScript writes past 9999) are outside our range.
        return Err(TimestampError::OutOfRange);
    }
    let year = p.digits(4, "year")?;
    p.expect(b'-', "expected a '-' after the year")?;
    let month = p.digits(2, "month")?;
    p.expect(b'-', "expected a '-' after the month")?;
    let day = p.digits(2, "day")?;
    if !(1..=12).contains(&month) {
        return Err(TimestampError::Component("month"));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(TimestampError::Component("day"));
    }
    let (mut hour, mut minute, mut second, mut millis) = (0, 0, 0, 0);
    let mut offset_minutes = 0i64;
    if p.peek().is_some() {
        if !matches!(p.next(), Some(b'T' | b't' | b' ')) {
            return Err(TimestampError::Shape("expected 'T' between date and time"));
        }
        hour = p.digits(2, "hour")?;
        p.expect(b':', "expected a ':' after the hour")?;
        minute = p.digits(2, "minute")?;
        if p.peek() == Some(b':') {
            p.next();
            second = p.digits(2, "second")?;
            if matches!(p.peek(), Some(b'.' | b',')) {
                p.next();
                let start = p.i;
                let mut scale = 100;
                while let Some(d) = p.peek().filter(u8::is_ascii_digit) {
                    millis += i64::from(d - b'0') * scale;
                    scale /= 10;
                    p.next();
                }
                if p.i == start {
                    return Err(TimestampError::Shape(
                        "expected digits after the decimal point",
                    ));
                }
            }
        }
        if hour > 23 {
            return Err(TimestampError::Component("hour"));
        }
        if minute > 59 {
            return Err(TimestampError::Component("minute"));
        }
        if second > 59 {
            return Err(TimestampError::Component("second"));
        }
        match p.next() {
            None => {}
            Some(b'Z' | b'z') => {}
            Some(sign @ (b'+' | b'-')) => {
                let oh = p.digits(2, "offset hours")?;
                if p.peek() == Some(b':') {
                    p.next();
                }
                let om = if p.peek().is_some() {
                    p.digits(2, "offset minutes")?
                } else {
                    0
                };
                if oh > 23 || om > 59 {
                    return Err(TimestampError::Component("offset"));
                }
                offset_minutes = oh * 60 + om;
                if sign == b'-' {
                    offset_minutes = -offset_minutes;
                }
            }
            Some(_) => return Err(TimestampError::Shape("unexpected character after the time")),
        }
        if p.peek().is_some() {
            return Err(TimestampError::Shape("unexpected characters at the end"));
        }
    }
    let days = days_from_civil(year, month, day);
    let ms = ((days * 24 + hour) * 60 + minute - offset_minutes) * 60_000 + second * 1000 + millis;
    check_range(ms)
}

/// Converts an epoch number (milliseconds, or seconds when `seconds` is set) into milliseconds.
/// Fractions of a millisecond are truncated toward negative infinity.
pub fn from_epoch(value: f64, seconds: bool) -> Result<i64, TimestampError> {
    if !value.is_finite() {
        return Err(TimestampError::NotFinite);
    }
    let ms = if seconds { value * 1000.0 } else { value }.floor();
    if ms < MIN_MS as f64 || ms > MAX_MS as f64 {
        return Err(TimestampError::OutOfRange);
    }
    // The range check above keeps the value well inside i64.
    #[allow(clippy::cast_possible_truncation, reason = "range-checked just above")]
    Ok(ms as i64)
}

/// Formats milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (what PostgreSQL reads
/// into `timestamptz` and JavaScript's `toISOString` writes).
pub fn format(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let mut out = String::with_capacity(24);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    );
    out
}

fn check_range(ms: i64) -> Result<i64, TimestampError> {
    if (MIN_MS..=MAX_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(TimestampError::OutOfRange)
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek();
        self.i += usize::from(c.is_some());
        c
    }

    fn expect(&mut self, c: u8, what: &'static str) -> Result<(), TimestampError> {
        if self.next() == Some(c) {
            Ok(())
        } else {
            Err(TimestampError::Shape(what))
        }
    }

    fn digits(&mut self, n: usize, what: &'static str) -> Result<i64, TimestampError> {
        let mut v = 0i64;
        for _ in 0..n {
            match self.next() {
                Some(d) if d.is_ascii_digit() => v = v * 10 + i64::from(d - b'0'),
                _ => return Err(TimestampError::Shape(digits_message(what))),
            }
        }
        Ok(v)
    }
}

fn digits_message(what: &'static str) -> &'static str {
    match what {
        "year" => "expected a four-digit year",
        "month" => "expected a two-digit month",
        "day" => "expected a two-digit day",
        "hour" => "expected a two-digit hour",
        "minute" => "expected two-digit minutes",
        "second" => "expected two-digit seconds",
        _ => "expected a two-digit offset",
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepted_shapes() {
        let cases = [
            ("1970-01-01T00:00:00.000Z", 0),
            ("1970-01-01", 0),
            ("2024-01-15T10:30:00.000Z", 1_705_314_600_000),
            ("2024-01-15T10:30:00Z", 1_705_314_600_000),
            ("2024-01-15T10:30Z", 1_705_314_600_000),
            ("2024-01-15 10:30:00", 1_705_314_600_000),
            ("2024-01-15T12:30:00+02:00", 1_705_314_600_000),
            ("2024-01-15T12:30:00+0200", 1_705_314_600_000),
            ("2024-01-15T08:30:00-02", 1_705_314_600_000),
            ("2024-01-15T10:30:00.123456Z", 1_705_314_600_123),
            ("2024-02-29", 1_709_164_800_000),
            ("0001-01-01T00:00:00Z", MIN_MS),
            ("9999-12-31T23:59:59.999Z", MAX_MS),
        ];
        for (text, ms) in cases {
            assert_eq!(parse_iso8601(text), Ok(ms), "{text}");
        }
    }

    #[test]
    fn refused_values_each_with_its_reason() {
        let cases = [
            ("", "empty"),
            ("2024", "year only"),
            ("24-01-15", "two-digit year"),
            ("2024-1-15", "one-digit month"),
            ("2024-13-01", "month 13"),
            ("2023-02-29", "not a leap year"),
            ("2024-04-31", "April has 30 days"),
            ("2024-01-15T24:00:00Z", "hour 24"),
            ("2024-01-15T10:60:00Z", "minute 60"),
            (
                "2024-01-15T10:30:60Z",
                "leap second, refused by JavaScript too",
            ),
            ("2024-01-15T10:30:00.Z", "decimal point without digits"),
            ("2024-01-15T10:30:00ZZ", "trailing garbage"),
            ("2024-01-15T10:30:00+25:00", "offset hours 25"),
            ("+275760-09-13T00:00:00.000Z", "expanded year beyond 9999"),
            ("0000-12-31T23:59:59Z", "year zero is before 0001"),
            ("15/01/2024", "not ISO"),
            ("Mon Jan 15 2024", "Date.toString output is not ISO"),
            ("2024-01-15T10:30:00 Z", "space before the offset"),
        ];
        for (text, why) in cases {
            assert!(parse_iso8601(text).is_err(), "{why}: {text:?} was accepted");
        }
    }

    #[test]
    fn epoch_numbers() {
        assert_eq!(
            from_epoch(1_705_314_600_000.0, false),
            Ok(1_705_314_600_000)
        );
        assert_eq!(from_epoch(1_705_314_600.0, true), Ok(1_705_314_600_000));
        assert_eq!(from_epoch(f64::NAN, false), Err(TimestampError::NotFinite));
        assert_eq!(from_epoch(8.64e15, false), Err(TimestampError::OutOfRange));
        assert_eq!(from_epoch(1e300, true), Err(TimestampError::OutOfRange));
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(ms in MIN_MS..=MAX_MS) {
            prop_assert_eq!(parse_iso8601(&format(ms)), Ok(ms));
        }
    }
}
