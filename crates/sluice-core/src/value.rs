//! Typed values: one variant per logical type, independent of any source's wire format.
//!
//! A source decodes its server's values (text or binary) into [`Value`]s once; every sink
//! encodes them into its own format once. Nothing travels as another database's text dialect.
//! Scalars that need more than a machine number have their own small types here
//! ([`Decimal`], [`Date`], [`Time`], [`TimeTz`], [`Timestamp`], [`Interval`], [`Uuid`]); their
//! `Display` is a neutral ISO 8601 form, used for JSON and logs.
//!
//! Equality is "the same value": floats compare by their bits (NaN equals NaN, `-0` differs
//! from `0`), so rows and keys can be hashed and compared exactly.

use std::fmt;
use std::hash::{Hash, Hasher};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A value that cannot be built: the input names what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

fn bad(msg: impl Into<String>) -> ValueError {
    ValueError(msg.into())
}

/// UTF-8 text that may share the network buffer it arrived in, so decoding a value costs no
/// allocation. Cloning is a reference-count increment.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Text(Bytes);

impl Text {
    /// Wraps received bytes after checking that they are UTF-8.
    pub fn from_utf8(b: Bytes) -> Result<Text, ValueError> {
        match std::str::from_utf8(&b) {
            Ok(_) => Ok(Text(b)),
            Err(e) => Err(bad(format!("invalid UTF-8 in a text value at byte {}", e.valid_up_to()))),
        }
    }

    /// Text from a static string, without copying.
    pub const fn from_static(s: &'static str) -> Text {
        Text(Bytes::from_static(s.as_bytes()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor guarantees valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The UTF-8 bytes, sharing the buffer.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text(Bytes::from(s.into_bytes()))
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Text::from)
    }
}

/// An exact decimal number of any precision, or NaN, or ±infinity.
///
/// Held in canonical text form (`-123.4500`, `NaN`, `Infinity`, `-Infinity`): an optional minus,
/// the integer digits without leading zeros, and the fraction digits as the source gave them, so
/// the scale (`2.50` has scale 2) is kept. Zero is never negative.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Decimal(Text);

/// What kind of number a [`Decimal`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalKind {
    /// A finite number
    Finite,
    /// Not a number
    NaN,
    /// +∞
    Infinity,
    /// −∞
    NegInfinity,
}

/// The most digits a decimal may have before its point, as PostgreSQL's numeric allows.
const DECIMAL_MAX_INT_DIGITS: usize = 131_072;

impl Decimal {
    /// NaN.
    pub const NAN: Decimal = Decimal(Text::from_static("NaN"));
    /// +∞.
    pub const INFINITY: Decimal = Decimal(Text::from_static("Infinity"));
    /// −∞.
    pub const NEG_INFINITY: Decimal = Decimal(Text::from_static("-Infinity"));

    /// Parses `[+-]digits[.digits][e[+-]digits]`, `NaN` or `[+-]Infinity` (case-insensitive, `inf`
    /// accepted). Text already in canonical form is kept without copying.
    pub fn from_text(t: Text) -> Result<Decimal, ValueError> {
        if is_canonical(t.as_bytes()) {
            return Ok(Decimal(t));
        }
        Decimal::parse(t.as_str())
    }

    /// Parses a decimal; see [`Decimal::from_text`].
    pub fn parse(s: &str) -> Result<Decimal, ValueError> {
        let err = || bad(format!("{s:?} is not a decimal number"));
        let trimmed = s.trim();
        let (neg, body) = match trimmed.as_bytes().first() {
            Some(b'-') => (true, &trimmed[1..]),
            Some(b'+') => (false, &trimmed[1..]),
            _ => (false, trimmed),
        };
        if body.eq_ignore_ascii_case("nan") {
            return Ok(Decimal::NAN);
        }
        if body.eq_ignore_ascii_case("infinity") || body.eq_ignore_ascii_case("inf") {
            return Ok(if neg { Decimal::NEG_INFINITY } else { Decimal::INFINITY });
        }
        let (mantissa, exp) = match body.find(['e', 'E']) {
            Some(i) => (&body[..i], body[i + 1..].parse::<i64>().map_err(|_| err())?),
            None => (body, 0),
        };
        let (int, frac) = match mantissa.split_once('.') {
            Some((a, b)) => (a, b),
            None => (mantissa, ""),
        };
        if (int.is_empty() && frac.is_empty()) || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        // Shift the point by the exponent.
        let digits: String = format!("{int}{frac}");
        let point = int.len() as i64 + exp;
        if point > DECIMAL_MAX_INT_DIGITS as i64 || -point > DECIMAL_MAX_INT_DIGITS as i64 {
            return Err(bad(format!("{s:?} is out of the decimal range")));
        }
        let (int, frac) = if point <= 0 {
            (String::new(), format!("{}{digits}", "0".repeat((-point) as usize)))
        } else if point as usize >= digits.len() {
            (format!("{digits}{}", "0".repeat(point as usize - digits.len())), String::new())
        } else {
            (digits[..point as usize].to_string(), digits[point as usize..].to_string())
        };
        // An exponent form keeps only the fraction digits that are significant to it.
        let frac = if exp != 0 { frac.trim_end_matches('0').to_string() } else { frac };
        Ok(Decimal::from_parts(neg, &int, &frac))
    }

    /// A finite decimal from its sign, integer digits and fraction digits (ASCII digits only;
    /// leading integer zeros are dropped).
    pub fn from_parts(negative: bool, int_digits: &str, frac_digits: &str) -> Decimal {
        let int = int_digits.trim_start_matches('0');
        let zero = int.is_empty() && frac_digits.bytes().all(|b| b == b'0');
        let mut s = String::with_capacity(int.len() + frac_digits.len() + 3);
        if negative && !zero {
            s.push('-');
        }
        s.push_str(if int.is_empty() { "0" } else { int });
        if !frac_digits.is_empty() {
            s.push('.');
            s.push_str(frac_digits);
        }
        Decimal(Text::from(s))
    }

    /// A finite decimal `unscaled × 10^-scale` from the unscaled digits (ASCII, no sign).
    pub fn from_unscaled(negative: bool, unscaled: &str, scale: u32) -> Decimal {
        let scale = scale as usize;
        if unscaled.len() > scale {
            let (i, f) = unscaled.split_at(unscaled.len() - scale);
            Decimal::from_parts(negative, i, f)
        } else {
            Decimal::from_parts(negative, "", &format!("{}{unscaled}", "0".repeat(scale - unscaled.len())))
        }
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The canonical text, shared.
    pub fn text(&self) -> &Text {
        &self.0
    }

    /// Finite, NaN or an infinity.
    pub fn kind(&self) -> DecimalKind {
        match self.as_str() {
            "NaN" => DecimalKind::NaN,
            "Infinity" => DecimalKind::Infinity,
            "-Infinity" => DecimalKind::NegInfinity,
            _ => DecimalKind::Finite,
        }
    }

    /// Whether the number is below zero (−∞ included).
    pub fn is_negative(&self) -> bool {
        self.as_str().starts_with('-')
    }

    /// Integer digits (at least `0`) and fraction digits of a finite decimal.
    pub fn digits(&self) -> (&str, &str) {
        let s = self.as_str().trim_start_matches('-');
        s.split_once('.').unwrap_or((s, ""))
    }

    /// Digits after the point.
    pub fn scale(&self) -> u32 {
        self.digits().1.len() as u32
    }
}

fn is_canonical(b: &[u8]) -> bool {
    if matches!(b, b"NaN" | b"Infinity" | b"-Infinity") {
        return true;
    }
    let body = b.strip_prefix(b"-").unwrap_or(b);
    let (int, frac) = match body.iter().position(|&c| c == b'.') {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let int_ok = !int.is_empty() && int.iter().all(u8::is_ascii_digit) && (int == b"0" || int[0] != b'0');
    let frac_ok = frac.is_none_or(|f| !f.is_empty() && f.iter().all(u8::is_ascii_digit));
    let negative_zero = body.len() < b.len() && int == b"0" && frac.is_none_or(|f| f.iter().all(|&c| c == b'0'));
    int_ok && frac_ok && !negative_zero && int.len() <= DECIMAL_MAX_INT_DIGITS
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Decimal({})", self.as_str())
    }
}

impl Serialize for Decimal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Decimal::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Days between 0000-03-01 and 1970-01-01 in the proleptic Gregorian calendar.
const UNIX_EPOCH_DAYS_FROM_0000_03_01: i64 = 719_468;

/// Days since 1970-01-01 of a proleptic Gregorian date (astronomical years: 0 is 1 BC).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - UNIX_EPOCH_DAYS_FROM_0000_03_01
}

/// The proleptic Gregorian date (astronomical year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + UNIX_EPOCH_DAYS_FROM_0000_03_01;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn fmt_year(f: &mut fmt::Formatter<'_>, y: i64) -> fmt::Result {
    if (0..=9999).contains(&y) {
        write!(f, "{y:04}")
    } else {
        // ISO 8601 expanded years carry a sign.
        write!(f, "{}{:04}", if y < 0 { '-' } else { '+' }, y.unsigned_abs())
    }
}

fn fmt_fraction(f: &mut fmt::Formatter<'_>, nanos: u32) -> fmt::Result {
    if nanos == 0 {
        return Ok(());
    }
    let s = format!("{nanos:09}");
    write!(f, ".{}", s.trim_end_matches('0'))
}

/// A calendar date: days since 1970-01-01 (proleptic Gregorian), or ±infinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Date(pub i32);

impl Date {
    /// +∞ (after every date).
    pub const INFINITY: Date = Date(i32::MAX);
    /// −∞ (before every date).
    pub const NEG_INFINITY: Date = Date(i32::MIN);

    /// The date of astronomical `year` (0 is 1 BC), `month`, `day`; `None` if invalid.
    pub fn from_ymd(year: i64, month: u32, day: u32) -> Option<Date> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        let d = days_from_civil(year, month, day);
        (d > i32::MIN as i64 && d < i32::MAX as i64).then_some(Date(d as i32))
    }

    /// Whether this is ±infinity.
    pub fn is_infinite(self) -> bool {
        self == Date::INFINITY || self == Date::NEG_INFINITY
    }

    /// (astronomical year, month, day) of a finite date.
    pub fn ymd(self) -> (i64, u32, u32) {
        civil_from_days(self.0 as i64)
    }
}

/// Days in `month` of astronomical `year`.
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Date::INFINITY => f.write_str("infinity"),
            Date::NEG_INFINITY => f.write_str("-infinity"),
            d => {
                let (y, m, day) = d.ymd();
                fmt_year(f, y)?;
                write!(f, "-{m:02}-{day:02}")
            }
        }
    }
}

/// Microseconds in a day.
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// A time of day: microseconds since midnight, `0..=86_400_000_000` (PostgreSQL allows
/// `24:00:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Time(pub i64);

impl Time {
    /// Hours, minutes, seconds and microseconds.
    pub fn hmsu(self) -> (i64, i64, i64, i64) {
        let u = self.0;
        (u / 3_600_000_000, u / 60_000_000 % 60, u / 1_000_000 % 60, u % 1_000_000)
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, m, s, u) = self.hmsu();
        write!(f, "{h:02}:{m:02}:{s:02}")?;
        fmt_fraction(f, (u * 1000) as u32)
    }
}

/// A time of day with a zone offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TimeTz {
    /// Local time of day
    pub time: Time,
    /// Offset from UTC in seconds, positive east of Greenwich (ISO 8601 sign)
    pub offset_secs: i32,
}

fn fmt_offset(f: &mut fmt::Formatter<'_>, offset: i32) -> fmt::Result {
    let sign = if offset < 0 { '-' } else { '+' };
    let o = offset.unsigned_abs();
    write!(f, "{sign}{:02}:{:02}", o / 3600, o / 60 % 60)?;
    if !o.is_multiple_of(60) {
        write!(f, ":{:02}", o % 60)?;
    }
    Ok(())
}

impl fmt::Display for TimeTz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.time)?;
        fmt_offset(f, self.offset_secs)
    }
}

/// A point in time: seconds and nanoseconds since 1970-01-01 00:00:00, or ±infinity.
///
/// For a timestamp without time zone the point is read as wall-clock time in UTC. The range
/// covers every source's (PostgreSQL's reaches year 294276, past what `i64` microseconds since
/// 1970 can hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp {
    secs: i64,
    nanos: u32,
}

impl Timestamp {
    /// +∞.
    pub const INFINITY: Timestamp = Timestamp { secs: i64::MAX, nanos: 0 };
    /// −∞.
    pub const NEG_INFINITY: Timestamp = Timestamp { secs: i64::MIN, nanos: 0 };

    /// From seconds and nanoseconds (`nanos` is carried into seconds when ≥ 10⁹).
    pub fn new(secs: i64, nanos: u32) -> Timestamp {
        let secs = secs.saturating_add((nanos / 1_000_000_000) as i64);
        let t = Timestamp { secs, nanos: nanos % 1_000_000_000 };
        // The infinities are reserved.
        if t.secs == i64::MAX {
            Timestamp { secs: i64::MAX - 1, nanos: t.nanos }
        } else if t.secs == i64::MIN {
            Timestamp { secs: i64::MIN + 1, nanos: t.nanos }
        } else {
            t
        }
    }

    /// From `n` units of `1 / per_second` seconds since 1970 (1_000 for milliseconds,
    /// 1_000_000_000 for nanoseconds; `per_second` divides a billion).
    pub fn from_units(n: i64, per_second: i64) -> Timestamp {
        Timestamp::new(n.div_euclid(per_second), (n.rem_euclid(per_second) * (1_000_000_000 / per_second)) as u32)
    }

    /// From microseconds since 1970.
    pub fn from_micros(micros: i64) -> Timestamp {
        Timestamp::new(micros.div_euclid(1_000_000), (micros.rem_euclid(1_000_000) * 1000) as u32)
    }

    /// From days since 1970 and microseconds into that day.
    pub fn from_date_time(days: i64, micros: i64) -> Timestamp {
        let total = micros.div_euclid(1_000_000);
        Timestamp::new(days * 86_400 + total, (micros.rem_euclid(1_000_000) * 1000) as u32)
    }

    /// Whether this is ±infinity.
    pub fn is_infinite(self) -> bool {
        self == Timestamp::INFINITY || self == Timestamp::NEG_INFINITY
    }

    /// Whole seconds since 1970 (rounded down).
    pub fn secs(self) -> i64 {
        self.secs
    }

    /// Nanoseconds past `secs`.
    pub fn subsec_nanos(self) -> u32 {
        self.nanos
    }

    /// Microseconds since 1970, if finite and representable; sub-microsecond digits are
    /// truncated.
    pub fn micros(self) -> Option<i64> {
        if self.is_infinite() {
            return None;
        }
        self.secs.checked_mul(1_000_000)?.checked_add((self.nanos / 1000) as i64)
    }

    /// Days since 1970 and the microseconds into that day.
    pub fn date_time(self) -> (i64, i64) {
        (self.secs.div_euclid(86_400), self.secs.rem_euclid(86_400) * 1_000_000 + (self.nanos / 1000) as i64)
    }
}

impl Timestamp {
    fn fmt_iso(&self, f: &mut fmt::Formatter<'_>, zone: bool) -> fmt::Result {
        match *self {
            Timestamp::INFINITY => return f.write_str("infinity"),
            Timestamp::NEG_INFINITY => return f.write_str("-infinity"),
            _ => {}
        }
        let (days, _) = self.date_time();
        let (y, m, d) = civil_from_days(days);
        let sod = self.secs.rem_euclid(86_400);
        fmt_year(f, y)?;
        write!(f, "-{m:02}-{d:02}T{:02}:{:02}:{:02}", sod / 3600, sod / 60 % 60, sod % 60)?;
        fmt_fraction(f, self.nanos)?;
        if zone {
            f.write_str("Z")?;
        }
        Ok(())
    }
}

/// ISO 8601 display of a timestamp with time zone (`…Z`); [`Timestamp`]'s own `Display` has no
/// zone.
pub struct Utc(pub Timestamp);

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt_iso(f, true)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_iso(f, false)
    }
}

/// A span of time in PostgreSQL's three fields, which do not convert into each other (a month
/// has no fixed number of days, a day no fixed number of seconds across DST).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Interval {
    /// Months
    pub months: i32,
    /// Days
    pub days: i32,
    /// Microseconds
    pub micros: i64,
}

impl fmt::Display for Interval {
    /// ISO 8601 duration, each field with its own sign: `P1Y2M-3DT4H5M6.000007S`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("P")?;
        let (y, mo) = (self.months / 12, self.months % 12);
        if y != 0 {
            write!(f, "{y}Y")?;
        }
        if mo != 0 {
            write!(f, "{mo}M")?;
        }
        if self.days != 0 {
            write!(f, "{}D", self.days)?;
        }
        if self.micros != 0 || (self.months == 0 && self.days == 0) {
            f.write_str("T")?;
            let neg = self.micros < 0;
            let u = self.micros.unsigned_abs();
            let (h, m, s, frac) = (u / 3_600_000_000, u / 60_000_000 % 60, u / 1_000_000 % 60, u % 1_000_000);
            let sign = if neg { "-" } else { "" };
            if h != 0 {
                write!(f, "{sign}{h}H")?;
            }
            if m != 0 {
                write!(f, "{sign}{m}M")?;
            }
            if s != 0 || frac != 0 || (h == 0 && m == 0) {
                write!(f, "{sign}{s}")?;
                fmt_fraction(f, (frac * 1000) as u32)?;
                f.write_str("S")?;
            }
        }
        Ok(())
    }
}

/// A UUID's 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// Parses the hyphenated (or plain, or braced) hexadecimal form.
    pub fn parse(s: &str) -> Result<Uuid, ValueError> {
        let hex: Vec<u8> = s.bytes().filter(|b| !matches!(b, b'-' | b'{' | b'}')).collect();
        if hex.len() != 32 {
            return Err(bad(format!("{s:?} is not a UUID")));
        }
        let mut out = [0u8; 16];
        for (i, pair) in hex.chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16).ok_or_else(|| bad(format!("{s:?} is not a UUID")))?;
            let lo = (pair[1] as char).to_digit(16).ok_or_else(|| bad(format!("{s:?} is not a UUID")))?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Ok(Uuid(out))
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// One value of a row. The column's [`crate::DataType`] says which variant to expect; NULL and
/// [`Value::Unchanged`] may appear in any column, and [`Value::Other`] in any column whose value
/// a source could not decode into its logical type (it then carries the source's text form).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Value {
    /// SQL NULL
    Null,
    /// The source did not send this value because it did not change (an unchanged TOASTed
    /// column in PostgreSQL). A sink must keep the value it already holds.
    Unchanged,
    /// Boolean
    Bool(bool),
    /// Signed integer of any width (the column's type gives the width)
    Int(i64),
    /// Unsigned integer of any width
    UInt(u64),
    /// IEEE single precision
    Float32(f32),
    /// IEEE double precision
    Float64(f64),
    /// Exact decimal
    Decimal(Decimal),
    /// Character data
    Text(Text),
    /// Raw bytes, never checked for UTF-8
    #[serde(with = "bytes_as_base64")]
    Bytes(Bytes),
    /// Calendar date
    Date(Date),
    /// Time of day
    Time(Time),
    /// Time of day with zone offset
    TimeTz(TimeTz),
    /// Date and time without zone (wall clock)
    Timestamp(Timestamp),
    /// An instant
    TimestampTz(Timestamp),
    /// Interval
    Interval(Interval),
    /// UUID
    Uuid(Uuid),
    /// A JSON document, as written
    Json(Text),
    /// An enum label
    Enum(Text),
    /// A list (an array; nested for multi-dimensional arrays)
    List(Vec<Value>),
    /// A value Sluice does not interpret, in its source's text form
    Other(Text),
}

mod bytes_as_base64 {
    use base64::Engine;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(s).map(Bytes::from).map_err(serde::de::Error::custom)
    }
}

impl Value {
    /// About how many bytes the value holds in memory: what a sink's buffer limit counts.
    pub fn approx_bytes(&self) -> usize {
        16 + match self {
            Value::Text(t) | Value::Json(t) | Value::Enum(t) | Value::Other(t) => t.as_str().len(),
            Value::Bytes(b) => b.len(),
            Value::Decimal(d) => d.as_str().len(),
            Value::List(l) => l.iter().map(Value::approx_bytes).sum(),
            _ => 0,
        }
    }

    /// Whether the value is NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The text of text-like values (text, JSON, enum labels, opaque values).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Text(t) | Value::Json(t) | Value::Enum(t) | Value::Other(t) => Some(t.as_str()),
            Value::Decimal(d) => Some(d.as_str()),
            _ => None,
        }
    }

    fn discriminant(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Unchanged => 1,
            Value::Bool(_) => 2,
            Value::Int(_) => 3,
            Value::UInt(_) => 4,
            Value::Float32(_) => 5,
            Value::Float64(_) => 6,
            Value::Decimal(_) => 7,
            Value::Text(_) => 8,
            Value::Bytes(_) => 9,
            Value::Date(_) => 10,
            Value::Time(_) => 11,
            Value::TimeTz(_) => 12,
            Value::Timestamp(_) => 13,
            Value::TimestampTz(_) => 14,
            Value::Interval(_) => 15,
            Value::Uuid(_) => 16,
            Value::Json(_) => 17,
            Value::Enum(_) => 18,
            Value::List(_) => 19,
            Value::Other(_) => 20,
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        use Value::*;
        match (self, other) {
            (Null, Null) | (Unchanged, Unchanged) => true,
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (UInt(a), UInt(b)) => a == b,
            (Float32(a), Float32(b)) => a.to_bits() == b.to_bits(),
            (Float64(a), Float64(b)) => a.to_bits() == b.to_bits(),
            (Decimal(a), Decimal(b)) => a == b,
            (Text(a), Text(b)) | (Json(a), Json(b)) | (Enum(a), Enum(b)) | (Other(a), Other(b)) => a == b,
            (Bytes(a), Bytes(b)) => a == b,
            (Date(a), Date(b)) => a == b,
            (Time(a), Time(b)) => a == b,
            (TimeTz(a), TimeTz(b)) => a == b,
            (Timestamp(a), Timestamp(b)) | (TimestampTz(a), TimestampTz(b)) => a == b,
            (Interval(a), Interval(b)) => a == b,
            (Uuid(a), Uuid(b)) => a == b,
            (List(a), List(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, h: &mut H) {
        use Value::*;
        h.write_u8(self.discriminant());
        match self {
            Null | Unchanged => {}
            Bool(b) => b.hash(h),
            Int(i) => i.hash(h),
            UInt(u) => u.hash(h),
            Float32(f) => f.to_bits().hash(h),
            Float64(f) => f.to_bits().hash(h),
            Decimal(d) => d.hash(h),
            Text(t) | Json(t) | Enum(t) | Other(t) => t.hash(h),
            Bytes(b) => b.hash(h),
            Date(d) => d.hash(h),
            Time(t) => t.hash(h),
            TimeTz(t) => t.hash(h),
            Timestamp(t) | TimestampTz(t) => t.hash(h),
            Interval(i) => i.hash(h),
            Uuid(u) => u.hash(h),
            List(l) => l.hash(h),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Text(Text::from(s))
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_keep_scale_and_normalise_the_rest() {
        let p = |s: &str| Decimal::parse(s).unwrap().as_str().to_string();
        assert_eq!(p("2.50"), "2.50");
        assert_eq!(p("+007.5"), "7.5");
        assert_eq!(p(".5"), "0.5");
        assert_eq!(p("-0.00"), "0.00");
        assert_eq!(p("1e3"), "1000");
        assert_eq!(p("1.5E-3"), "0.0015");
        assert_eq!(p("nan"), "NaN");
        assert_eq!(p("-inf"), "-Infinity");
        assert_eq!(p("-99999999999999999999.99999999999999999999"), "-99999999999999999999.99999999999999999999");
        assert_eq!(p("1e400").len(), 401);
        assert!(Decimal::parse("1.2.3").is_err());
        assert!(Decimal::parse("").is_err());
        assert!(Decimal::parse("1e999999999").is_err());
        let d = Decimal::parse("-123.4500").unwrap();
        assert_eq!((d.digits(), d.scale(), d.is_negative()), (("123", "4500"), 4, true));
        assert_eq!(Decimal::from_unscaled(true, "5", 3).as_str(), "-0.005");
        assert_eq!(Decimal::from_unscaled(false, "12345", 2).as_str(), "123.45");
        // Canonical text is kept as is, sharing its buffer.
        let t = Text::from("12.30");
        let d = Decimal::from_text(t.clone()).unwrap();
        assert_eq!(d.text().bytes().as_ptr(), t.bytes().as_ptr());
    }

    #[test]
    fn dates_convert_both_ways_across_the_whole_range() {
        for (y, m, d) in [(1970, 1, 1), (2000, 2, 29), (-4712, 1, 1), (5874897, 12, 31), (0, 3, 1), (1, 1, 1)] {
            let date = Date::from_ymd(y, m, d).unwrap();
            assert_eq!(date.ymd(), (y, m, d));
        }
        assert_eq!(Date::from_ymd(1970, 1, 1), Some(Date(0)));
        assert_eq!(Date::from_ymd(2000, 1, 1), Some(Date(10957)));
        assert!(Date::from_ymd(2001, 2, 29).is_none());
        assert_eq!(Date::from_ymd(-4712, 1, 1).unwrap().to_string(), "-4712-01-01");
        assert_eq!(Date::from_ymd(294276, 12, 31).unwrap().to_string(), "+294276-12-31");
        assert_eq!(Date::INFINITY.to_string(), "infinity");
    }

    #[test]
    fn timestamps_reach_past_i64_microseconds_since_1970() {
        let days = days_from_civil(294276, 12, 31);
        let t = Timestamp::from_date_time(days, MICROS_PER_DAY - 1);
        assert_eq!(t.to_string(), "+294276-12-31T23:59:59.999999");
        assert_eq!(t.micros(), None, "past i64 microseconds since 1970");
        assert_eq!(t.date_time(), (days, MICROS_PER_DAY - 1));
        let before = Timestamp::from_micros(-1);
        assert_eq!(Utc(before).to_string(), "1969-12-31T23:59:59.999999Z");
        assert_eq!(before.micros(), Some(-1));
        assert!(Timestamp::NEG_INFINITY < before && before < Timestamp::INFINITY);
    }

    #[test]
    fn times_intervals_and_uuids_display_in_iso_form() {
        assert_eq!(Time(MICROS_PER_DAY).to_string(), "24:00:00");
        assert_eq!(Time(1).to_string(), "00:00:00.000001");
        let tz = TimeTz { time: Time(0), offset_secs: -(15 * 3600 + 59 * 60) };
        assert_eq!(tz.to_string(), "00:00:00-15:59");
        assert_eq!(Interval { months: 14, days: -3, micros: 3_723_000_007 }.to_string(), "P1Y2M-3DT1H2M3.000007S");
        assert_eq!(Interval::default().to_string(), "PT0S");
        assert_eq!(Interval { months: 0, days: 0, micros: -5_000_000 }.to_string(), "PT-5S");
        let u = Uuid::parse("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap();
        assert_eq!(u.to_string(), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
        assert!(Uuid::parse("xyz").is_err());
    }

    #[test]
    fn equality_is_by_value_bits_so_nan_matches_itself() {
        assert_eq!(Value::Float64(f64::NAN), Value::Float64(f64::NAN));
        assert_ne!(Value::Float64(0.0), Value::Float64(-0.0));
        assert_ne!(Value::Text("1".into()), Value::Int(1));
        let mut set = std::collections::HashSet::new();
        set.insert(vec![Value::Int(1), Value::Text("a".into())]);
        assert!(set.contains(&vec![Value::Int(1), Value::Text("a".into())]));
    }

    #[test]
    fn values_round_trip_through_serde() {
        let row = vec![
            Value::Null,
            Value::Bytes(Bytes::from_static(b"\x00\xff")),
            Value::Decimal(Decimal::parse("1.50").unwrap()),
            Value::Timestamp(Timestamp::INFINITY),
            Value::List(vec![Value::Int(1), Value::Null]),
        ];
        let j = serde_json::to_string(&row).unwrap();
        assert_eq!(serde_json::from_str::<Vec<Value>>(&j).unwrap(), row);
        assert!(Text::from_utf8(Bytes::from_static(b"\xff")).is_err());
    }
}
