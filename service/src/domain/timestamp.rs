//! Instants as the API sees them: parsed liberally from RFC 3339 / ISO 8601 (what botocore, the
//! Rust SDK and people with curl send), kept as microseconds since the Unix epoch, and written
//! back in UTC with millisecond precision (`2026-11-23T10:15:30.123Z`), as RDS does. The
//! calendar is jiff's; what this adds is what the API accepts beyond it and refuses within it.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use jiff::civil::{Date, Time};
use jiff::fmt::temporal::{Pieces, PiecesOffset};
use jiff::tz::Offset;
use jiff::{Span, Unit};

/// Microseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

const MICROS_PER_SEC: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SEC;
const EPOCH: Date = jiff::civil::date(1970, 1, 1);

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
        parse(text.trim()).ok_or_else(|| {
            format!("{text:?} is not an ISO 8601 timestamp (e.g. 2026-11-23T10:15:30Z)")
        })
    }
}

fn parse(text: &str) -> Option<Timestamp> {
    // jiff takes an hour alone ("T10") and at most nanoseconds; the API wants minutes, and
    // takes (and drops) any further digits.
    let bytes = text.as_bytes();
    if bytes.len() > 10 {
        let minutes = bytes.get(11..16)?;
        let shape_ok = minutes[..2].iter().all(u8::is_ascii_digit)
            && minutes[2] == b':'
            && minutes[3..].iter().all(u8::is_ascii_digit);
        if !matches!(bytes[10], b'T' | b't' | b' ') || !shape_ok {
            return None;
        }
    }
    let text = truncate_fraction(text);
    let pieces = Pieces::parse(text.as_ref()).ok()?;
    let offset = match pieces.offset() {
        None | Some(PiecesOffset::Zulu) => Offset::UTC,
        Some(PiecesOffset::Numeric(numeric)) => numeric.offset(),
        Some(_) => return None,
    };
    // ISO 8601 offsets stop at ±23:59.
    if offset.seconds().abs() >= 24 * 3600 {
        return None;
    }
    let time = pieces.time().unwrap_or(Time::midnight());
    // Through days since the epoch rather than jiff's Timestamp, whose range stops a day
    // short of the end of year 9999.
    let days = i64::from(pieces.date().since((Unit::Day, EPOCH)).ok()?.get_days());
    let of_day = ((i64::from(time.hour()) * 60 + i64::from(time.minute())) * 60
        + i64::from(time.second()))
        * MICROS_PER_SEC
        + i64::from(time.subsec_nanosecond()) / 1_000;
    Some(Timestamp(
        days * MICROS_PER_DAY + of_day - i64::from(offset.seconds()) * MICROS_PER_SEC,
    ))
}

/// The text with its fraction of a second cut to nine digits.
fn truncate_fraction(text: &str) -> std::borrow::Cow<'_, str> {
    let Some(dot) = text.find(['.', ',']) else {
        return text.into();
    };
    let digits = text[dot + 1..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    if digits <= 9 {
        return text.into();
    }
    format!("{}{}", &text[..dot + 10], &text[dot + 1 + digits..]).into()
}

impl fmt::Display for Timestamp {
    /// `YYYY-MM-DDThh:mm:ss.mmmZ`, always UTC, always milliseconds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(MICROS_PER_SEC);
        let millis = self.0.rem_euclid(MICROS_PER_SEC) / 1_000;
        let of_day = secs.rem_euclid(86_400);
        let date = EPOCH
            .checked_add(Span::new().days(secs.div_euclid(86_400)))
            .map_err(|_| fmt::Error)?;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            date.year(),
            date.month(),
            date.day(),
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
    fn takes_any_number_of_fraction_digits() {
        assert_eq!(
            parse("2018-03-19T10:00:00.1234567891234Z"),
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
