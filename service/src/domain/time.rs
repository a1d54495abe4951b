//! Instants as the API sees them: parsed liberally from RFC 3339 / ISO 8601 (what botocore, the
//! Rust SDK and people with curl send), kept as microseconds since the Unix epoch, and written
//! back in UTC with millisecond precision (`2026-11-23T10:15:30.123Z`), as RDS does.
//!
//! The calendar arithmetic is Howard Hinnant's days-from-civil algorithm; it is exact for the
//! proleptic Gregorian calendar, which is all ISO 8601 needs.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

const MICROS_PER_SEC: i64 = 1_000_000;
const SECS_PER_DAY: i64 = 86_400;

impl Timestamp {
    pub const fn from_micros(us: i64) -> Self {
        Timestamp(us)
    }

    pub const fn as_micros(self) -> i64 {
        self.0
    }

    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970");
        Timestamp(since.as_micros() as i64)
    }

    pub fn plus_secs(self, secs: i64) -> Self {
        Timestamp(self.0.saturating_add(secs.saturating_mul(MICROS_PER_SEC)))
    }

    pub fn plus_millis(self, ms: i64) -> Self {
        Timestamp(self.0.saturating_add(ms.saturating_mul(1_000)))
    }

    /// Parses an ISO 8601 / RFC 3339 date-time: `YYYY-MM-DD`, then `T` (or a space) and
    /// `hh:mm`, optional `:ss`, optional fraction (any number of digits, kept to the
    /// microsecond), then `Z`, `±hh:mm`, `±hhmm` or `±hh`. A missing offset means UTC, and a
    /// bare date means its midnight UTC.
    pub fn parse(text: &str) -> Result<Self, String> {
        Parser::new(text.trim()).date_time().ok_or_else(|| {
            format!("{text:?} is not an ISO 8601 timestamp (e.g. 2026-11-23T10:15:30Z)")
        })
    }
}

impl fmt::Display for Timestamp {
    /// `YYYY-MM-DDThh:mm:ss.mmmZ`, always UTC, always milliseconds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(MICROS_PER_SEC);
        let millis = self.0.rem_euclid(MICROS_PER_SEC) / 1_000;
        let days = secs.div_euclid(SECS_PER_DAY);
        let of_day = secs.rem_euclid(SECS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            of_day / 3600,
            of_day % 3600 / 60,
            of_day % 60
        )
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    /// Accepts an ISO 8601 string, or a number of seconds since the epoch (what AWS JSON
    /// protocols send for timestamps).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an ISO 8601 timestamp")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Timestamp, E> {
                epoch_seconds(v as f64)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Timestamp, E> {
                epoch_seconds(v as f64)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Timestamp, E> {
                epoch_seconds(v)
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn epoch_seconds<E: serde::de::Error>(secs: f64) -> Result<Timestamp, E> {
    // Years 0..=9999 only, as ISO 8601 strings allow.
    if !(-62_167_219_200.0..=253_402_300_799.0).contains(&secs) {
        return Err(E::custom(format!(
            "{secs} seconds since the epoch is out of range"
        )));
    }
    Ok(Timestamp((secs * MICROS_PER_SEC as f64).round() as i64))
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            bytes: text.as_bytes(),
            at: 0,
        }
    }

    fn date_time(mut self) -> Option<Timestamp> {
        let year = self.digits(4)?;
        self.expect(b'-')?;
        let month = self.digits(2)?;
        self.expect(b'-')?;
        let day = self.digits(2)?;
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return None;
        }
        let mut micros_of_day = 0;
        let mut offset_secs = 0;
        if self.at < self.bytes.len() {
            if !matches!(self.bytes[self.at], b'T' | b't' | b' ') {
                return None;
            }
            self.at += 1;
            let hour = self.digits(2)?;
            self.expect(b':')?;
            let minute = self.digits(2)?;
            let mut second = 0;
            let mut fraction = 0;
            if self.peek() == Some(b':') {
                self.at += 1;
                second = self.digits(2)?;
                if matches!(self.peek(), Some(b'.') | Some(b',')) {
                    self.at += 1;
                    fraction = self.fraction_micros()?;
                }
            }
            // 24:00:00 is not accepted; a leap second (…:60) is not representable either.
            if hour > 23 || minute > 59 || second > 59 {
                return None;
            }
            micros_of_day = ((hour * 60 + minute) * 60 + second) * MICROS_PER_SEC + fraction;
            offset_secs = self.offset()?;
        }
        if self.at != self.bytes.len() {
            return None;
        }
        let days = days_from_civil(year, month, day);
        Some(Timestamp(
            days * SECS_PER_DAY * MICROS_PER_SEC + micros_of_day - offset_secs * MICROS_PER_SEC,
        ))
    }

    fn offset(&mut self) -> Option<i64> {
        match self.peek() {
            None => Some(0),
            Some(b'Z') | Some(b'z') => {
                self.at += 1;
                Some(0)
            }
            Some(sign @ (b'+' | b'-')) => {
                self.at += 1;
                let hours = self.digits(2)?;
                let minutes = match self.peek() {
                    Some(b':') => {
                        self.at += 1;
                        self.digits(2)?
                    }
                    Some(b'0'..=b'9') => self.digits(2)?,
                    _ => 0,
                };
                if hours > 23 || minutes > 59 {
                    return None;
                }
                let secs = (hours * 60 + minutes) * 60;
                Some(if sign == b'-' { -secs } else { secs })
            }
            Some(_) => None,
        }
    }

    /// Up to 6 digits are kept; further digits are accepted and dropped (nanosecond inputs).
    fn fraction_micros(&mut self) -> Option<i64> {
        let start = self.at;
        let mut micros = 0;
        while let Some(b @ b'0'..=b'9') = self.peek() {
            if self.at - start < 6 {
                micros = micros * 10 + i64::from(b - b'0');
            }
            self.at += 1;
        }
        let count = self.at - start;
        if count == 0 {
            return None;
        }
        for _ in count..6 {
            micros *= 10;
        }
        Some(micros)
    }

    fn digits(&mut self, count: usize) -> Option<i64> {
        let end = self.at.checked_add(count)?;
        let slice = self.bytes.get(self.at..end)?;
        let mut value = 0;
        for &b in slice {
            if !b.is_ascii_digit() {
                return None;
            }
            value = value * 10 + i64::from(b - b'0');
        }
        self.at = end;
        Some(value)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> String {
        Timestamp::parse(text).unwrap().to_string()
    }

    #[test]
    fn accepts_what_aws_clients_and_people_send() {
        assert_eq!(parse("2018-03-19T10:00:00Z"), "2018-03-19T10:00:00.000Z");
        assert_eq!(
            parse("2018-03-19T10:00:00.123000Z"),
            "2018-03-19T10:00:00.123Z"
        );
        assert_eq!(parse("2017-07-08T18:00Z"), "2017-07-08T18:00:00.000Z");
        assert_eq!(
            parse("2018-03-19T10:00:00+00:00"),
            "2018-03-19T10:00:00.000Z"
        );
        assert_eq!(
            parse("2018-03-19T12:30:00+02:30"),
            "2018-03-19T10:00:00.000Z"
        );
        assert_eq!(
            parse("2018-03-19T05:00:00-0500"),
            "2018-03-19T10:00:00.000Z"
        );
        assert_eq!(parse("2018-03-19 10:00:00"), "2018-03-19T10:00:00.000Z");
        assert_eq!(parse("2018-03-19"), "2018-03-19T00:00:00.000Z");
        assert_eq!(
            parse("2018-03-19T10:00:00.123456789Z"),
            "2018-03-19T10:00:00.123Z"
        );
    }

    #[test]
    fn keeps_microseconds_but_prints_milliseconds() {
        let t = Timestamp::parse("2026-11-23T10:15:30.123456Z").unwrap();
        assert_eq!(t.as_micros() % 1_000_000, 123_456);
        assert_eq!(t.to_string(), "2026-11-23T10:15:30.123Z");
    }

    #[test]
    fn rejects_what_is_not_a_timestamp() {
        for bad in [
            "",
            "yesterday",
            "2018-02-30T00:00:00Z",
            "2018-13-01T00:00:00Z",
            "2018-03-19T24:00:00Z",
            "2018-03-19T10:00:00+25:00",
            "2018-03-19T10:00:00Zjunk",
            "2018-03-19T10",
            "2018-03-19T10:00:00.Z",
            "18-03-19",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn round_trips_across_leap_years_and_the_epoch() {
        for text in [
            "1970-01-01T00:00:00.000Z",
            "1969-12-31T23:59:59.999Z",
            "2000-02-29T12:00:00.000Z",
            "2024-12-31T23:59:59.999Z",
            "9999-12-31T23:59:59.999Z",
        ] {
            assert_eq!(parse(text), text);
        }
        assert_eq!(
            Timestamp::parse("1970-01-01T00:00:01Z")
                .unwrap()
                .as_micros(),
            1_000_000
        );
    }

    #[test]
    fn deserializes_strings_and_epoch_seconds() {
        let t: Timestamp = serde_json::from_str("\"2018-03-19T10:00:00Z\"").unwrap();
        let n: Timestamp = serde_json::from_str("1521453600").unwrap();
        assert_eq!(t, n);
        let f: Timestamp = serde_json::from_str("1521453600.5").unwrap();
        assert_eq!(f.as_micros() - t.as_micros(), 500_000);
        assert!(serde_json::from_str::<Timestamp>("true").is_err());
        assert!(serde_json::from_str::<Timestamp>("1e300").is_err());
    }
}
