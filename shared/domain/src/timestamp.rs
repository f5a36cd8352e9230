//! RFC 3339 timestamps to the microsecond in UTC (`2026-12-01T19:35:23.123456Z`), the
//! one form Portico writes where it formats a time per message: the `timestamp` of a
//! webhook body, the `occurredAt` of a live announcement and the live cursor.
//!
//! chrono formats through `core::fmt` (about 2,000 instructions a timestamp, measured
//! with callgrind); this writes the 27 bytes directly, and reading one back checks its
//! shape without a calendar parse. Both agree byte for byte with
//! `to_rfc3339_opts(SecondsFormat::Micros, true)` (tested), and a time chrono cannot
//! put in 27 bytes (a year past 9999 or before 0) goes through chrono.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};

/// Length of the fixed form, `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
const LEN: usize = 27;

/// A time in the fixed form, ready to be written; cheap to copy and compare.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Rfc3339Micros(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    Fixed([u8; LEN]),
    Other(Box<str>),
}

impl Rfc3339Micros {
    /// `time`, formatted.
    pub fn new(time: DateTime<Utc>) -> Self {
        let year = time.year();
        if !(0..=9999).contains(&year) {
            return Self(Repr::Other(
                time.to_rfc3339_opts(SecondsFormat::Micros, true).into(),
            ));
        }
        // chrono keeps a leap second as second 59 with 1e9 or more nanoseconds and
        // prints it as second 60.
        let (second, nanos) = match time.nanosecond() {
            n if n >= 1_000_000_000 => (60, n - 1_000_000_000),
            n => (time.second(), n),
        };
        let mut out = *b"0000-00-00T00:00:00.000000Z";
        put(&mut out[0..4], year.unsigned_abs());
        put(&mut out[5..7], time.month());
        put(&mut out[8..10], time.day());
        put(&mut out[11..13], time.hour());
        put(&mut out[14..16], time.minute());
        put(&mut out[17..19], second);
        put(&mut out[20..26], nanos / 1_000);
        Self(Repr::Fixed(out))
    }

    /// Reads text that should already be in the fixed form: kept as it is when it is
    /// (no calendar arithmetic), parsed and formatted again when it is any other RFC
    /// 3339 time, `None` when it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        if let Ok(fixed) = <[u8; LEN]>::try_from(text.as_bytes())
            && is_fixed_form(&fixed)
        {
            return Some(Self(Repr::Fixed(fixed)));
        }
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| Self::new(t.with_timezone(&Utc)))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Only ASCII digits and separators are ever stored in the array.
            Repr::Fixed(bytes) => std::str::from_utf8(bytes).unwrap_or_default(),
            Repr::Other(text) => text,
        }
    }
}

impl std::fmt::Debug for Rfc3339Micros {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Rfc3339Micros {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<DateTime<Utc>> for Rfc3339Micros {
    fn from(time: DateTime<Utc>) -> Self {
        Self::new(time)
    }
}

impl serde::Serialize for Rfc3339Micros {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Rfc3339Micros {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 timestamp"))
    }
}

/// Serialises a `DateTime<Utc>` field in the fixed form
/// (`#[serde(serialize_with = "portico_domain::timestamp::serialize")]`).
pub fn serialize<S: serde::Serializer>(
    time: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(Rfc3339Micros::new(*time).as_str())
}

/// Deserialises a `DateTime<Utc>` field written by [`serialize`]
/// (`#[serde(deserialize_with = "portico_domain::timestamp::deserialize")]`): the
/// fixed form is read by position, any other RFC 3339 time through chrono's parser.
pub fn deserialize<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<DateTime<Utc>, D::Error> {
    use serde::Deserialize as _;
    let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
    from_fixed_form(&text)
        .or_else(|| {
            DateTime::parse_from_rfc3339(&text)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        })
        .ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 timestamp"))
}

/// The time `text` says when it is in the fixed form (and a real date and time).
fn from_fixed_form(text: &str) -> Option<DateTime<Utc>> {
    let b = <&[u8; LEN]>::try_from(text.as_bytes()).ok()?;
    if !is_fixed_form(b) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| number(&b[r]).unwrap_or_default();
    let (second, micros) = match n(17..19) {
        // A leap second, as chrono keeps it.
        60 => (59, n(20..26) + 1_000_000),
        s => (s, n(20..26)),
    };
    chrono::NaiveDate::from_ymd_opt(i32::try_from(n(0..4)).ok()?, n(5..7), n(8..10))?
        .and_hms_micro_opt(n(11..13), n(14..16), second, micros)
        .map(|t| t.and_utc())
}

/// The decimal number `digits` spell, `None` when one is not a digit (what [`put`]
/// wrote, read back).
fn number(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// Writes `value` as zero-padded decimal digits filling `out`.
fn put(out: &mut [u8], mut value: u32) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Whether `b` is `YYYY-MM-DDTHH:MM:SS.ffffffZ` with every field in range (the day
/// within 31; a caller that needs the calendar parses the text).
fn is_fixed_form(b: &[u8; LEN]) -> bool {
    let digits = |r: std::ops::Range<usize>| number(&b[r]);
    let separators = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (26, b'Z'),
    ];
    if separators.iter().any(|&(i, c)| b[i] != c) {
        return false;
    }
    let in_range = |r: std::ops::Range<usize>, lo: u32, hi: u32| {
        digits(r).is_some_and(|v| (lo..=hi).contains(&v))
    };
    digits(0..4).is_some()
        && in_range(5..7, 1, 12)
        && in_range(8..10, 1, 31)
        && in_range(11..13, 0, 23)
        && in_range(14..16, 0, 59)
        && in_range(17..19, 0, 60)
        && digits(20..26).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, SubsecRound, TimeZone};

    fn chrono_form(t: DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    #[test]
    fn matches_chrono_byte_for_byte() {
        let mut t = Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).single();
        let samples = [
            Utc::now(),
            DateTime::<Utc>::UNIX_EPOCH,
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
                .single()
                .unwrap_or_default(),
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
            DateTime::from_timestamp(1_764_617_723, 123_456_789).unwrap_or_default(),
            DateTime::from_timestamp(1_764_617_723, 999_999_999).unwrap_or_default(),
            DateTime::from_timestamp(1_764_617_723, 1_000).unwrap_or_default(),
        ];
        for s in samples {
            assert_eq!(Rfc3339Micros::new(s).as_str(), chrono_form(s), "{s:?}");
        }
        // Every day of a leap year and a few thousand odd instants besides.
        for _ in 0..5_000 {
            let Some(now) = t else { break };
            assert_eq!(Rfc3339Micros::new(now).as_str(), chrono_form(now));
            t = now.checked_add_signed(chrono::Duration::microseconds(6_311_520_000_123));
        }
    }

    #[test]
    fn a_leap_second_prints_as_second_60() {
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 1_500_000))
            .map(|n| n.and_utc());
        let Some(leap) = leap else {
            panic!("chrono refused a leap second")
        };
        assert_eq!(Rfc3339Micros::new(leap).as_str(), chrono_form(leap));
        assert_eq!(
            Rfc3339Micros::new(leap).as_str(),
            "2016-12-31T23:59:60.500000Z"
        );
    }

    #[test]
    fn years_outside_four_digits_go_through_chrono() {
        let far = Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).single();
        let Some(far) = far else {
            panic!("chrono refused year 10000")
        };
        assert_eq!(Rfc3339Micros::new(far).as_str(), chrono_form(far));
    }

    #[test]
    fn parsing_keeps_the_fixed_form_and_normalises_others() {
        let fixed = "2026-12-01T19:35:23.123456Z";
        assert_eq!(
            Rfc3339Micros::parse(fixed).map(|t| t.to_string()),
            Some(fixed.into())
        );
        // chrono's own serde form (nanoseconds), an offset and RFC 3339's space for
        // the `T` are normalised.
        assert_eq!(
            Rfc3339Micros::parse("2026-12-01 19:35:23.123456Z").map(|t| t.to_string()),
            Some(fixed.into())
        );
        assert_eq!(
            Rfc3339Micros::parse("2026-12-01T19:35:23.123456789Z").map(|t| t.to_string()),
            Some(fixed.into())
        );
        assert_eq!(
            Rfc3339Micros::parse("2026-12-01T20:35:23.123456+01:00").map(|t| t.to_string()),
            Some(fixed.into())
        );
        for bad in [
            "",
            "yesterday",
            "2026-13-01T19:35:23.123456Z",
            "2026-12-01T24:35:23.123456Z",
            "2026-12-01T19:35:23.12345xZ",
        ] {
            assert_eq!(Rfc3339Micros::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_fixed_form_reads_back_to_the_same_instant() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct At {
            #[serde(serialize_with = "serialize", deserialize_with = "super::deserialize")]
            at: DateTime<Utc>,
        }
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 1_250_000))
            .map(|n| n.and_utc())
            .unwrap_or_default();
        let mut t = DateTime::<Utc>::UNIX_EPOCH;
        let mut samples = vec![leap, Utc::now().trunc_subsecs(6)];
        for _ in 0..2_000 {
            samples.push(t);
            t += chrono::Duration::microseconds(15_778_800_000_123);
        }
        for at in samples {
            let text = serde_json::to_string(&At { at }).unwrap_or_default();
            let back: At = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(back.at, at, "{text}");
        }
        // Other RFC 3339 forms still read; a date that does not exist does not.
        let other: At = serde_json::from_str(r#"{"at":"2026-12-01T20:35:23.5+01:00"}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            Rfc3339Micros::new(other.at).as_str(),
            "2026-12-01T19:35:23.500000Z"
        );
        assert!(serde_json::from_str::<At>(r#"{"at":"2026-02-30T00:00:00.000000Z"}"#).is_err());
    }

    #[test]
    fn serde_round_trip() {
        #[derive(serde::Serialize)]
        struct Out {
            #[serde(serialize_with = "serialize")]
            at: DateTime<Utc>,
        }
        let at = DateTime::from_timestamp(1_764_617_723, 123_456_789).unwrap_or_default();
        let text = serde_json::to_string(&Out { at }).unwrap_or_default();
        assert_eq!(text, r#"{"at":"2025-12-01T19:35:23.123456Z"}"#);
        let back: Rfc3339Micros = serde_json::from_str(r#""2025-12-01T19:35:23.123456Z""#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.as_str(), "2025-12-01T19:35:23.123456Z");
    }
}
