//! The contract's exact RFC 3339 grammar, and the instant type it yields.
//!
//! Timestamps arriving at Portcullis decide orderings that matter ("was the
//! SIM swapped before or after the port-out request?"), so they are parsed
//! strictly and compared exactly: to the nanosecond, after conversion to UTC.
//! The accepted grammar is a deliberately narrow profile of RFC 3339:
//!
//! ```text
//! YYYY-MM-DD ('T'|'t') HH:MM:SS [ '.' 1*9DIGIT ] ( 'Z' | 'z' | ('+'|'-') HH:MM )
//! ```
//!
//! with ASCII digits only, years 0001-9999 both as written and once converted
//! to UTC, a real calendar date, hour 00-23, minute 00-59, second 00-59 (leap
//! seconds are rejected: nothing downstream could order them), and offsets of
//! at most 23:59. Nothing is trimmed or repaired: a trailing newline or a
//! space is an error, so one instant has a bounded, well-known set of
//! spellings and hostile input cannot widen it.
//!
//! The scanner is hand-written over bytes and does not allocate; the `time`
//! crate is used only for calendar validity and the conversion to Unix time,
//! never for parsing, so its own (more permissive) grammar cannot leak in.

use std::fmt;
use std::str::FromStr;

use ::time::{Date, Month, PrimitiveDateTime, Time, UtcOffset};

/// Why a timestamp was rejected: a short, static, human-readable reason.
///
/// Static so that rejecting hostile input never allocates and never echoes
/// the input back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeError(pub &'static str);

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for TimeError {}

const NANOS_PER_SEC: u32 = 1_000_000_000;

/// Unix seconds of 0001-01-01T00:00:00Z.
const MIN_SECS: i64 = -62_135_596_800;
/// Unix seconds of 9999-12-31T23:59:59Z.
const MAX_SECS: i64 = 253_402_300_799;

/// Multiplier that right-pads a fraction of `n` digits to nanoseconds,
/// indexed by `n` (1..=9 are used).
const FRACTION_SCALE: [u32; 10] = [
    1_000_000_000,
    100_000_000,
    10_000_000,
    1_000_000,
    100_000,
    10_000,
    1_000,
    100,
    10,
    1,
];

/// An instant in UTC, to the nanosecond, years 0001-9999.
///
/// Held as Unix seconds plus nanoseconds so that equality and ordering are
/// plain integer comparisons: two spellings of one instant with different
/// offsets are equal, and instants 1 ns apart are ordered. The range is that
/// of four-digit years, so every value formats back into the grammar it was
/// parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z, within `MIN_SECS..=MAX_SECS`.
    secs: i64,
    /// Nanoseconds past `secs`, always below one second.
    nanos: u32,
}

impl Timestamp {
    /// 0001-01-01T00:00:00Z, the earliest representable instant.
    pub const MIN: Timestamp = Timestamp {
        secs: MIN_SECS,
        nanos: 0,
    };

    /// 9999-12-31T23:59:59.999999999Z, the latest representable instant.
    pub const MAX: Timestamp = Timestamp {
        secs: MAX_SECS,
        nanos: NANOS_PER_SEC - 1,
    };

    /// Builds an instant from Unix seconds and nanoseconds.
    ///
    /// `None` if `nanos` is a whole second or more, or the instant falls
    /// outside [`Timestamp::MIN`]..=[`Timestamp::MAX`].
    pub const fn from_unix(secs: i64, nanos: u32) -> Option<Timestamp> {
        if nanos >= NANOS_PER_SEC || secs < MIN_SECS || secs > MAX_SECS {
            None
        } else {
            Some(Timestamp { secs, nanos })
        }
    }

    /// Whole seconds since the Unix epoch (negative before 1970).
    pub fn unix_secs(self) -> i64 {
        self.secs
    }

    /// Nanoseconds past [`Timestamp::unix_secs`], in `0..1_000_000_000`.
    pub fn subsec_nanos(self) -> u32 {
        self.nanos
    }

    /// Nanoseconds since the Unix epoch. Total: the range fits an `i128`
    /// with vast room to spare (about 2.5e20 against 1.7e38).
    pub fn as_nanos(self) -> i128 {
        i128::from(self.secs) * i128::from(NANOS_PER_SEC) + i128::from(self.nanos)
    }

    /// Builds an instant from nanoseconds since the Unix epoch; `None`
    /// outside [`Timestamp::MIN`]..=[`Timestamp::MAX`].
    pub fn from_nanos(n: i128) -> Option<Timestamp> {
        let per = i128::from(NANOS_PER_SEC);
        // Euclidean division keeps the remainder non-negative for instants
        // before 1970, matching the (secs, nanos >= 0) representation.
        let secs = i64::try_from(n.div_euclid(per)).ok()?;
        let nanos = u32::try_from(n.rem_euclid(per)).ok()?;
        Timestamp::from_unix(secs, nanos)
    }

    /// Parses the contract's RFC 3339 profile (see the module docs).
    ///
    /// Does not allocate. Every rejection carries a short reason.
    pub fn parse(s: &str) -> Result<Timestamp, TimeError> {
        let mut c = Scanner {
            b: s.as_bytes(),
            i: 0,
        };

        let year = c.digits(4).ok_or(TimeError("expected 4-digit year"))?;
        c.expect(b'-', "expected '-' after year")?;
        let month = c.digits(2).ok_or(TimeError("expected 2-digit month"))?;
        c.expect(b'-', "expected '-' after month")?;
        let day = c.digits(2).ok_or(TimeError("expected 2-digit day"))?;
        match c.next() {
            Some(b'T' | b't') => {}
            _ => return Err(TimeError("expected 'T' between date and time")),
        }
        let hour = c.digits(2).ok_or(TimeError("expected 2-digit hour"))?;
        c.expect(b':', "expected ':' after hour")?;
        let minute = c.digits(2).ok_or(TimeError("expected 2-digit minute"))?;
        c.expect(b':', "expected ':' after minute")?;
        let second = c.digits(2).ok_or(TimeError("expected 2-digit second"))?;

        let mut nanos: u32 = 0;
        if c.peek() == Some(b'.') {
            c.i += 1;
            let mut n: usize = 0;
            while let Some(d) = c.peek_digit() {
                if n == 9 {
                    return Err(TimeError("fraction must have 1 to 9 digits"));
                }
                nanos = nanos * 10 + d;
                n += 1;
                c.i += 1;
            }
            // n is in 1..=9 here, within the table; `get` keeps this total.
            nanos *= match FRACTION_SCALE.get(n) {
                Some(&scale) if n > 0 => scale,
                _ => return Err(TimeError("fraction must have 1 to 9 digits")),
            };
        }

        // Offset in seconds east of UTC.
        let offset_secs: i32 = match c.next() {
            Some(b'Z' | b'z') => 0,
            Some(sign @ (b'+' | b'-')) => {
                let oh = c
                    .digits(2)
                    .ok_or(TimeError("expected 2-digit offset hour"))?;
                c.expect(b':', "expected ':' in offset")?;
                let om = c
                    .digits(2)
                    .ok_or(TimeError("expected 2-digit offset minute"))?;
                if oh > 23 {
                    return Err(TimeError("offset hour must be 00-23"));
                }
                if om > 59 {
                    return Err(TimeError("offset minute must be 00-59"));
                }
                // oh <= 23 and om <= 59, so the cast and product are small.
                let magnitude = (oh * 3600 + om * 60) as i32;
                if sign == b'-' { -magnitude } else { magnitude }
            }
            Some(b',') => return Err(TimeError("decimal separator must be '.'")),
            Some(_) => return Err(TimeError("expected 'Z' or a +HH:MM/-HH:MM offset")),
            None => return Err(TimeError("missing 'Z' or offset")),
        };
        if c.i != c.b.len() {
            return Err(TimeError("unexpected characters after offset"));
        }

        // Field ranges, checked here for precise reasons before `time`
        // confirms the calendar (days per month, leap years).
        if year == 0 {
            return Err(TimeError("year must be 0001-9999"));
        }
        if !(1..=12).contains(&month) {
            return Err(TimeError("month must be 01-12"));
        }
        if hour > 23 {
            return Err(TimeError("hour must be 00-23"));
        }
        if minute > 59 {
            return Err(TimeError("minute must be 00-59"));
        }
        if second > 59 {
            return Err(TimeError("second must be 00-59 (no leap seconds)"));
        }

        // All fields are bounded by the checks above (year <= 9999, the rest
        // two digits), so the narrowing casts below cannot truncate.
        let month = Month::try_from(month as u8).map_err(|_| TimeError("month must be 01-12"))?;
        let date = Date::from_calendar_date(year as i32, month, day as u8)
            .map_err(|_| TimeError("day does not exist in that month"))?;
        let time = Time::from_hms_nano(hour as u8, minute as u8, second as u8, nanos)
            .map_err(|_| TimeError("time of day out of range"))?;
        let offset = UtcOffset::from_whole_seconds(offset_secs)
            .map_err(|_| TimeError("offset out of range"))?;
        // `unix_timestamp` is plain arithmetic on the local date, time and
        // offset, so it is defined even when the UTC date would be year 0 or
        // 10000; the range check that follows rejects exactly those.
        let secs = PrimitiveDateTime::new(date, time)
            .assume_offset(offset)
            .unix_timestamp();
        Timestamp::from_unix(secs, nanos)
            .ok_or(TimeError("instant in UTC is outside years 0001-9999"))
    }

    /// Formats as `YYYY-MM-DDTHH:MM:SS[.fraction]Z` in UTC.
    ///
    /// The fraction appears only when non-zero, with trailing zeros trimmed,
    /// so each instant has exactly one output spelling, and that spelling
    /// parses back to the same instant.
    pub fn to_rfc3339_utc(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Timestamp {
    /// Same text as [`Timestamp::to_rfc3339_utc`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.secs.div_euclid(86_400);
        let sod = self.secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            sod / 3600,
            sod % 3600 / 60,
            sod % 60
        )?;
        if self.nanos != 0 {
            let mut frac = self.nanos;
            let mut width = 9;
            // Drop trailing zeros. Terminates: nanos != 0, so some digit is
            // non-zero, and width stays >= 1.
            loop {
                let last_digit = frac % 10;
                if last_digit != 0 {
                    break;
                }
                frac /= 10;
                width -= 1;
            }
            write!(f, ".{frac:0width$}")?;
        }
        f.write_str("Z")
    }
}

impl FromStr for Timestamp {
    type Err = TimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Timestamp::parse(s)
    }
}

/// Proleptic Gregorian (year, month, day) of a count of days since
/// 1970-01-01 (H. Hinnant's `civil_from_days`).
///
/// Hand-written rather than going through `time` because it is total: it
/// has no error path to handle, where `time`'s constructors return `Result`
/// even for the dates a [`Timestamp`] is guaranteed to hold. Cross-checked
/// against `time` in the tests.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based month
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A cursor over the input bytes; every read goes through `get`, so no
/// input, however short, can index out of bounds.
struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn peek_digit(&self) -> Option<u32> {
        match self.peek() {
            Some(d @ b'0'..=b'9') => Some(u32::from(d - b'0')),
            _ => None,
        }
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    /// Exactly `n` ASCII digits (n <= 4 here, so no overflow).
    fn digits(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            v = v * 10 + self.peek_digit()?;
            self.i += 1;
        }
        Some(v)
    }

    fn expect(&mut self, want: u8, why: &'static str) -> Result<(), TimeError> {
        if self.next() == Some(want) {
            Ok(())
        } else {
            Err(TimeError(why))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::time::OffsetDateTime;

    fn p(s: &str) -> Timestamp {
        match Timestamp::parse(s) {
            Ok(t) => t,
            Err(e) => panic!("{s:?} rejected: {e}"),
        }
    }

    fn bad(s: &str) -> TimeError {
        match Timestamp::parse(s) {
            Ok(t) => panic!("{s:?} accepted as {t:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn constants_match_calendar() {
        assert_eq!(p("0001-01-01T00:00:00Z"), Timestamp::MIN);
        assert_eq!(p("9999-12-31T23:59:59.999999999Z"), Timestamp::MAX);
        assert_eq!(p("1970-01-01T00:00:00Z").unix_secs(), 0);
        assert_eq!(Timestamp::MIN.to_rfc3339_utc(), "0001-01-01T00:00:00Z");
        assert_eq!(
            Timestamp::MAX.to_rfc3339_utc(),
            "9999-12-31T23:59:59.999999999Z"
        );
    }

    #[test]
    fn valid_forms() {
        let base = p("2024-01-01T00:00:00Z");
        assert_eq!(base.unix_secs(), 1_704_067_200);
        assert_eq!(base.subsec_nanos(), 0);
        assert_eq!(p("2024-01-01t00:00:00z"), base);
        assert_eq!(p("2024-01-01T00:00:00z"), base);
        assert_eq!(p("2024-01-01t00:00:00Z"), base);
        assert_eq!(p("2024-01-01T05:30:00+05:30"), base);
        assert_eq!(p("2023-12-31T00:01:00-23:59"), base);
        assert_eq!(p("2024-01-01T23:59:00+23:59"), base);
        assert_eq!(p("2024-01-01T00:00:00+00:00"), base);
        assert_eq!(p("2024-01-01T00:00:00-00:00"), base);
        assert_eq!(p("2024-01-01T00:00:00.5Z").subsec_nanos(), 500_000_000);
        assert_eq!(p("2024-01-01T00:00:00.000000001Z").subsec_nanos(), 1);
        assert_eq!(
            p("2024-01-01T00:00:00.123456789Z").subsec_nanos(),
            123_456_789
        );
        assert_eq!(p("2024-01-01T00:00:00.0Z"), base);
        assert_eq!(p("2024-01-01T00:00:00.000000000Z"), base);
        assert_eq!(p("2024-01-01T00:00:00.12Z").subsec_nanos(), 120_000_000);
        assert_eq!(
            p("2024-02-29T12:00:00Z").to_rfc3339_utc(),
            "2024-02-29T12:00:00Z"
        );
        assert_eq!(
            p("2000-02-29T00:00:00Z").to_rfc3339_utc(),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            p("2024-12-31T23:59:59Z").to_rfc3339_utc(),
            "2024-12-31T23:59:59Z"
        );
        assert_eq!(p("1969-12-31T23:59:59.5Z").as_nanos(), -500_000_000);
        assert_eq!(p("0001-01-01T00:30:00+00:30"), Timestamp::MIN);
        assert_eq!(p("9999-12-31T22:59:59.999999999-01:00"), Timestamp::MAX);
        assert_eq!("2024-01-01T00:00:00Z".parse::<Timestamp>(), Ok(base));
    }

    #[test]
    fn offsets_apply_in_the_right_direction() {
        // 12:00 at +02:00 is 10:00 UTC; at -02:00 it is 14:00 UTC.
        assert_eq!(
            p("2024-06-01T12:00:00+02:00").to_rfc3339_utc(),
            "2024-06-01T10:00:00Z"
        );
        assert_eq!(
            p("2024-06-01T12:00:00-02:00").to_rfc3339_utc(),
            "2024-06-01T14:00:00Z"
        );
        assert_eq!(
            p("2024-06-01T12:00:00-00:30").to_rfc3339_utc(),
            "2024-06-01T12:30:00Z"
        );
        assert_eq!(
            p("2024-03-01T00:10:00+00:20").to_rfc3339_utc(),
            "2024-02-29T23:50:00Z"
        );
    }

    #[test]
    fn invalid_forms() {
        for s in [
            "",
            " ",
            "Z",
            "2024",
            "2024-01-01",
            "2024-01-01T",
            "2024-01-01T00:00",      // missing seconds
            "2024-01-01T00:00Z",     // missing seconds
            "2024-01-01T00:00:00",   // missing zone
            "2024-1-01T00:00:00Z",   // 1-digit month
            "2024-01-1T00:00:00Z",   // 1-digit day
            "24-01-01T00:00:00Z",    // 2-digit year
            "02024-01-01T00:00:00Z", // 5-digit year
            "+2024-01-01T00:00:00Z", // sign
            "-2024-01-01T00:00:00Z",
            "2024-01-01T0:00:00Z",
            "2024-01-01T00:0:00Z",
            "2024-01-01T00:00:0Z",
            "2024-01-01 00:00:00Z", // space separator
            "2024-01-01_00:00:00Z",
            "2024-01-01x00:00:00Z",
            "2024/01/01T00:00:00Z",
            "2024-01-01T00.00.00Z",
            " 2024-01-01T00:00:00Z",  // leading space
            "2024-01-01T00:00:00Z ",  // trailing space
            "2024-01-01T00:00:00Z\n", // trailing newline
            "2024-01-01T00:00:00Z\r\n",
            "2024-01-01T00:00:00\nZ",
            "2024-01-01T00:00:00ZZ",
            "2024-01-01T00:00:00+00:00Z",
            "2024-01-01T00:00:00.Z", // empty fraction
            "2024-01-01T00:00:00.",
            "2024-01-01T00:00:00.1234567890Z", // 10-digit fraction
            "2024-01-01T00:00:00.000000000000Z",
            "2024-01-01T00:00:00,5Z", // comma separator
            "2024-01-01T00:00:00.5.5Z",
            "2024-01-01T00:00:00.+00:00",
            "2024-01-01T00:00:00+24:00", // offset hour 24
            "2024-01-01T00:00:00+23:60", // offset minute 60
            "2024-01-01T00:00:00-24:00",
            "2024-01-01T00:00:00+99:99",
            "2024-01-01T00:00:00+0530", // offset without colon
            "2024-01-01T00:00:00+05",
            "2024-01-01T00:00:00+5:30",
            "2024-01-01T00:00:00+05:3",
            "2024-01-01T00:00:00+05:30:00",
            "2024-01-01T00:00:00UTC",
            "2024-01-01T00:00:00GMT",
            "2024-01-01T00:00:00z ",
            "2024-02-30T00:00:00Z", // Feb 30
            "2023-02-29T00:00:00Z", // not a leap year
            "1900-02-29T00:00:00Z", // century, not leap
            "2100-02-29T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-13-01T00:00:00Z", // month 13
            "2024-00-01T00:00:00Z", // month 0
            "2024-01-00T00:00:00Z", // day 0
            "2024-01-32T00:00:00Z",
            "0000-01-01T00:00:00Z", // year 0
            "2024-01-01T24:00:00Z", // hour 24
            "2024-01-01T00:60:00Z", // minute 60
            "2024-12-31T23:59:60Z", // leap second
            "2016-12-31T23:59:60Z", // a real leap second, still invalid
            "2024-01-01T00:00:61Z",
            "0001-01-01T00:30:00+01:00", // UTC year 0
            "0001-01-01T00:00:00+00:01",
            "9999-12-31T23:30:00-01:00", // UTC year 10000
            "9999-12-31T23:59:59-00:01",
            "2024-0\u{0661}-01T00:00:00Z", // Arabic-Indic digit
            "\u{FF12}024-01-01T00:00:00Z", // fullwidth digit
            "2024-01-01T00:00:00\u{FF3A}", // fullwidth Z
        ] {
            bad(s);
        }
    }

    #[test]
    fn error_reasons() {
        assert_eq!(bad(""), TimeError("expected 4-digit year"));
        assert_eq!(
            bad("2024-01-01 00:00:00Z"),
            TimeError("expected 'T' between date and time")
        );
        assert_eq!(
            bad("2024-01-01T00:00:00.1234567890Z"),
            TimeError("fraction must have 1 to 9 digits")
        );
        assert_eq!(
            bad("2024-01-01T00:00:00.Z"),
            TimeError("fraction must have 1 to 9 digits")
        );
        assert_eq!(
            bad("2024-01-01T00:00:00,5Z"),
            TimeError("decimal separator must be '.'")
        );
        assert_eq!(
            bad("2024-01-01T00:00:00+24:00"),
            TimeError("offset hour must be 00-23")
        );
        assert_eq!(
            bad("2024-01-01T00:00:00+23:60"),
            TimeError("offset minute must be 00-59")
        );
        assert_eq!(
            bad("2024-01-01T00:00:00Z\n"),
            TimeError("unexpected characters after offset")
        );
        assert_eq!(
            bad("2024-02-30T00:00:00Z"),
            TimeError("day does not exist in that month")
        );
        assert_eq!(
            bad("2024-13-01T00:00:00Z"),
            TimeError("month must be 01-12")
        );
        assert_eq!(
            bad("0000-01-01T00:00:00Z"),
            TimeError("year must be 0001-9999")
        );
        assert_eq!(bad("2024-01-01T24:00:00Z"), TimeError("hour must be 00-23"));
        assert_eq!(
            bad("2024-01-01T00:60:00Z"),
            TimeError("minute must be 00-59")
        );
        assert_eq!(
            bad("2024-12-31T23:59:60Z"),
            TimeError("second must be 00-59 (no leap seconds)")
        );
        assert_eq!(
            bad("0001-01-01T00:30:00+01:00"),
            TimeError("instant in UTC is outside years 0001-9999")
        );
        assert_eq!(
            bad("9999-12-31T23:30:00-01:00"),
            TimeError("instant in UTC is outside years 0001-9999")
        );
        assert_eq!(
            bad("2024-01-01T00:00:00"),
            TimeError("missing 'Z' or offset")
        );
        assert_eq!(TimeError("x").to_string(), "x");
    }

    #[test]
    fn exact_comparison() {
        let a = p("2024-01-01T00:00:00.000000001Z");
        let b = p("2024-01-01T00:00:00.000000002Z");
        assert_ne!(a, b);
        assert!(a < b);
        assert_eq!(b.as_nanos() - a.as_nanos(), 1);
        // Across a second boundary, and before 1970.
        assert!(p("2024-01-01T00:00:00.999999999Z") < p("2024-01-01T00:00:01Z"));
        assert!(p("1969-12-31T23:59:59.999999999Z") < p("1970-01-01T00:00:00Z"));
        assert!(p("1969-12-31T23:59:58.999999999Z") < p("1969-12-31T23:59:59Z"));
        // Same instant, different offsets.
        assert_eq!(p("2024-01-01T05:30:00+05:30"), p("2024-01-01T00:00:00Z"));
        assert_eq!(
            p("2024-01-01T05:30:00.25+05:30"),
            p("2023-12-31T23:00:00.250-01:00")
        );
        // Ordering follows UTC, not the written wall-clock time.
        assert!(p("2024-01-01T10:00:00+05:00") < p("2024-01-01T06:00:00Z"));
    }

    #[test]
    fn unix_and_nanos_constructors() {
        assert_eq!(Timestamp::from_unix(0, 1_000_000_000), None);
        assert_eq!(
            Timestamp::from_unix(0, 999_999_999).map(|t| t.subsec_nanos()),
            Some(999_999_999)
        );
        assert_eq!(Timestamp::from_unix(MIN_SECS, 0), Some(Timestamp::MIN));
        assert_eq!(Timestamp::from_unix(MIN_SECS - 1, 999_999_999), None);
        assert_eq!(
            Timestamp::from_unix(MAX_SECS, 999_999_999),
            Some(Timestamp::MAX)
        );
        assert_eq!(Timestamp::from_unix(MAX_SECS + 1, 0), None);
        assert_eq!(Timestamp::from_unix(i64::MIN, 0), None);
        assert_eq!(Timestamp::from_unix(i64::MAX, 0), None);

        assert_eq!(
            Timestamp::from_nanos(Timestamp::MIN.as_nanos()),
            Some(Timestamp::MIN)
        );
        assert_eq!(
            Timestamp::from_nanos(Timestamp::MAX.as_nanos()),
            Some(Timestamp::MAX)
        );
        assert_eq!(Timestamp::from_nanos(Timestamp::MIN.as_nanos() - 1), None);
        assert_eq!(Timestamp::from_nanos(Timestamp::MAX.as_nanos() + 1), None);
        assert_eq!(Timestamp::from_nanos(i128::MIN), None);
        assert_eq!(Timestamp::from_nanos(i128::MAX), None);
        let t = Timestamp::from_nanos(-1).unwrap();
        assert_eq!((t.unix_secs(), t.subsec_nanos()), (-1, 999_999_999));
        assert_eq!(t.to_rfc3339_utc(), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(
            Timestamp::from_nanos(0).unwrap().to_rfc3339_utc(),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn formatting_trims_fraction() {
        let f = |secs, nanos| Timestamp::from_unix(secs, nanos).unwrap().to_rfc3339_utc();
        assert_eq!(f(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(f(0, 500_000_000), "1970-01-01T00:00:00.5Z");
        assert_eq!(f(0, 1), "1970-01-01T00:00:00.000000001Z");
        assert_eq!(f(0, 10), "1970-01-01T00:00:00.00000001Z");
        assert_eq!(f(0, 120_000_000), "1970-01-01T00:00:00.12Z");
        assert_eq!(f(0, 123_456_789), "1970-01-01T00:00:00.123456789Z");
        assert_eq!(f(1_704_067_200, 0), "2024-01-01T00:00:00Z");
        assert_eq!(format!("{}", Timestamp::MIN), "0001-01-01T00:00:00Z");
    }

    /// SplitMix64: a tiny, seeded, reproducible generator.
    struct SplitMix(u64);

    impl SplitMix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }

    #[test]
    fn round_trip_and_cross_check_with_time_crate() {
        let span = (MAX_SECS - MIN_SECS) as u64 + 1;
        let mut rng = SplitMix(42);
        let check = |t: Timestamp| {
            let s = t.to_rfc3339_utc();
            assert_eq!(Timestamp::parse(&s), Ok(t), "{s}");
            // Calendar fields agree with the time crate.
            let odt = OffsetDateTime::from_unix_timestamp_nanos(t.as_nanos()).unwrap();
            let want = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                odt.year(),
                u8::from(odt.month()),
                odt.day(),
                odt.hour(),
                odt.minute(),
                odt.second()
            );
            assert!(s.starts_with(&want), "{s} vs {want}");
            assert_eq!(odt.nanosecond(), t.subsec_nanos());
            assert_eq!(Timestamp::from_nanos(t.as_nanos()), Some(t));
        };
        check(Timestamp::MIN);
        check(Timestamp::MAX);
        for _ in 0..20_000 {
            let secs = MIN_SECS + (rng.next() % span) as i64;
            let nanos = match rng.next() % 4 {
                0 => 0,
                1 => (rng.next() % 1000) as u32 * 1_000_000,
                _ => (rng.next() % 1_000_000_000) as u32,
            };
            check(Timestamp::from_unix(secs, nanos).unwrap());
        }
        // Every day boundary around leap days and the epoch.
        for days in -800..800i64 {
            check(Timestamp::from_unix(days * 86_400, 0).unwrap());
            check(Timestamp::from_unix(days * 86_400 - 1, 999_999_999).unwrap());
        }
    }

    #[test]
    fn civil_from_days_matches_time_crate_every_day() {
        let first = MIN_SECS.div_euclid(86_400);
        let last = MAX_SECS.div_euclid(86_400);
        let epoch = Date::from_calendar_date(1970, Month::January, 1).unwrap();
        let epoch_jd = i64::from(epoch.to_julian_day());
        for days in first..=last {
            let date = Date::from_julian_day((epoch_jd + days) as i32).unwrap();
            let want = (
                i64::from(date.year()),
                i64::from(u8::from(date.month())),
                i64::from(date.day()),
            );
            assert_eq!(civil_from_days(days), want, "day {days}");
        }
    }

    #[test]
    fn parse_never_panics_on_random_input() {
        let alphabet = b"0123456789-:TZtz.+ ";
        let mut rng = SplitMix(0xC0FFEE);
        let mut accepted = 0u32;
        for _ in 0..100_000 {
            let len = (rng.next() % 41) as usize;
            let mut buf = [0u8; 40];
            for b in buf.iter_mut().take(len) {
                *b = alphabet[(rng.next() % alphabet.len() as u64) as usize];
            }
            let s = std::str::from_utf8(&buf[..len]).unwrap();
            if let Ok(t) = Timestamp::parse(s) {
                accepted += 1;
                assert_eq!(Timestamp::parse(&t.to_rfc3339_utc()), Ok(t));
            }
        }
        // Random strings almost never match; the loop is about not panicking.
        assert!(accepted < 100_000);
    }

    #[test]
    fn parse_never_panics_on_mutated_valid_input() {
        // Random byte-level mutations of valid timestamps reach deep into the
        // grammar (calendar and offset checks), unlike purely random strings.
        let seeds: [&[u8]; 4] = [
            b"2024-02-29T23:59:59.123456789+05:30",
            b"0001-01-01T00:00:00Z",
            b"9999-12-31T23:59:59.999999999-23:59",
            b"1999-12-31t12:00:00.5z",
        ];
        let alphabet = b"0123456789-:TZtz.+ ,\n";
        let mut rng = SplitMix(7);
        let mut accepted = 0u32;
        for _ in 0..100_000 {
            let seed = seeds[(rng.next() % seeds.len() as u64) as usize];
            let mut v = seed.to_vec();
            for _ in 0..=(rng.next() % 3) {
                let pos = (rng.next() % (v.len() as u64 + 1)) as usize;
                let ch = alphabet[(rng.next() % alphabet.len() as u64) as usize];
                match rng.next() % 3 {
                    0 if pos < v.len() => v[pos] = ch,
                    1 if pos < v.len() => {
                        v.remove(pos);
                    }
                    _ => v.insert(pos, ch),
                }
            }
            let s = std::str::from_utf8(&v).unwrap();
            if let Ok(t) = Timestamp::parse(s) {
                accepted += 1;
                assert_eq!(Timestamp::parse(&t.to_rfc3339_utc()), Ok(t));
            }
        }
        assert!(accepted > 0);
    }
}
