//! The text format: what PostgreSQL's output functions print and its input functions read.
//!
//! Only the styles Sluice's sessions fix are parsed (`DateStyle=ISO`, `IntervalStyle=postgres`,
//! `TimeZone=UTC`, `extra_float_digits=1`). The encoder prints what PostgreSQL's output
//! function prints, so text read from the server is written back unchanged, with two
//! exceptions that still read back to the same value: the one interval PostgreSQL cannot read
//! in its own form (see [`put_interval`]), and floats whose exact value lies halfway between two
//! shortest decimal forms, where PostgreSQL picks the even last digit and Rust the upper one
//! (PostgreSQL prints `2.2107692e+06`, we print `2.2107693e+06`; both are the same `float4`).

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};
use sluice_core::{
    civil_from_days, days_from_civil, days_in_month, Date, Decimal, Interval, Text, Time, TimeTz, Timestamp, Uuid,
    Value, MICROS_PER_DAY,
};

use super::{
    array_dims, decimal_value, f32_value, f64_value, int_value, text_value, utf8, CodecError, Format, PgType, Problem,
    MAX_ARRAY_DIMS, MICROS_PER_HOUR, MICROS_PER_MINUTE, MICROS_PER_SEC, TZ_LIMIT_SECS,
};

/// PostgreSQL 17's infinite intervals (every field at its maximum or minimum).
const INTERVAL_INFINITY: Interval = Interval { months: i32::MAX, days: i32::MAX, micros: i64::MAX };
const INTERVAL_NEG_INFINITY: Interval = Interval { months: i32::MIN, days: i32::MIN, micros: i64::MIN };

/// float4 prints in fixed notation when its decimal exponent is below this (`%g` with 6
/// digits), float8 below the other (15 digits); both from `-4` up.
const FLOAT4_FIXED_BELOW: i32 = 6;
const FLOAT8_FIXED_BELOW: i32 = 15;

/// Decodes one value in PostgreSQL's text output form.
///
/// Text, JSON, enum labels, uninterpreted types and canonical numerics share `raw` instead of
/// copying it. Arrays whose lower bounds are not all 1 come back as [`Value::Other`] with the
/// literal unchanged, so nothing is lost.
pub fn decode_text(ty: &PgType, raw: Bytes) -> Result<Value, CodecError> {
    let result = match ty {
        PgType::Array { elem, .. } => return decode_array(ty, elem, raw),
        PgType::Text => utf8(raw.clone()).map(Value::Text),
        PgType::Json | PgType::Jsonb => utf8(raw.clone()).map(Value::Json),
        PgType::Enum => utf8(raw.clone()).map(Value::Enum),
        PgType::Other => utf8(raw.clone()).map(Value::Other),
        PgType::Numeric => utf8(raw.clone())
            .and_then(|t| Decimal::from_text(t).map_err(|e| Problem::value("not a number", e)))
            .map(Value::Decimal),
        PgType::Bool => parse_bool(&raw).map(Value::Bool),
        PgType::Int2 => parse_int(&raw, i16::MIN.into(), i16::MAX.into()).map(Value::Int),
        PgType::Int4 => parse_int(&raw, i32::MIN.into(), i32::MAX.into()).map(Value::Int),
        PgType::Int8 => parse_int(&raw, i64::MIN, i64::MAX).map(Value::Int),
        PgType::Float4 => parse_float::<f32>(&raw, f32::is_infinite).map(Value::Float32),
        PgType::Float8 => parse_float::<f64>(&raw, f64::is_infinite).map(Value::Float64),
        PgType::Bytea => parse_bytea(&raw).map(Value::Bytes),
        PgType::Date => parse_date(&raw).map(Value::Date),
        PgType::Time => parse_time(&raw).map(Value::Time),
        PgType::TimeTz => parse_timetz(&raw).map(Value::TimeTz),
        PgType::Timestamp => parse_timestamp(&raw, false).map(Value::Timestamp),
        PgType::TimestampTz => parse_timestamp(&raw, true).map(Value::TimestampTz),
        PgType::Interval => parse_interval(&raw).map(Value::Interval),
        PgType::Uuid => parse_uuid(&raw).map(Value::Uuid),
    };
    result.map_err(|p| CodecError::decode(ty, Format::Text, &raw, p))
}

/// Appends the text PostgreSQL's input function for `ty` accepts, in the form its output
/// function prints.
///
/// No quoting or escaping for an enclosing format (COPY) is added; arrays are rendered
/// completely, element quoting included. [`Value::Other`] is already in the type's text form
/// and is appended as it is.
pub fn encode_text(ty: &PgType, v: &Value, out: &mut BytesMut) -> Result<(), CodecError> {
    if let Value::Other(t) = v {
        out.put_slice(t.as_bytes());
        return Ok(());
    }
    match (ty, v) {
        (PgType::Bool, Value::Bool(b)) => out.put_u8(if *b { b't' } else { b'f' }),
        (PgType::Int2 | PgType::Int4 | PgType::Int8, _) => put_i64(out, int_value(ty, v)?),
        (PgType::Float4, _) => put_f32(out, f32_value(ty, v)?),
        (PgType::Float8, _) => put_f64(out, f64_value(ty, v)?),
        (PgType::Numeric, _) => out.put_slice(decimal_value(ty, v)?.as_str().as_bytes()),
        (PgType::Text | PgType::Json | PgType::Jsonb | PgType::Enum, _) => out.put_slice(text_value(ty, v)?.as_bytes()),
        (PgType::Other, Value::Text(t)) => out.put_slice(t.as_bytes()),
        (PgType::Bytea, Value::Bytes(b)) => put_bytea(out, b),
        (PgType::Date, Value::Date(d)) => put_date(out, *d),
        (PgType::Time, Value::Time(t)) => put_clock(out, check_time(ty, v, *t)?),
        (PgType::TimeTz, Value::TimeTz(t)) => {
            put_clock(out, check_time(ty, v, t.time)?);
            put_offset(out, check_offset(ty, v, t.offset_secs)?);
        }
        (PgType::Timestamp, Value::Timestamp(t)) => put_timestamp(out, *t, false),
        (PgType::TimestampTz, Value::TimestampTz(t)) => put_timestamp(out, *t, true),
        (PgType::Interval, Value::Interval(i)) => put_interval(out, *i),
        (PgType::Uuid, Value::Uuid(u)) => put_uuid(out, u),
        (PgType::Array { elem, .. }, Value::List(list)) => {
            let dims = array_dims(list).map_err(|p| CodecError::encode(ty, v, p))?;
            if dims.is_empty() {
                out.put_slice(b"{}");
            } else {
                put_list(elem, list, out, &mut BytesMut::new())?;
            }
        }
        _ => return Err(CodecError::mismatch(ty, v)),
    }
    Ok(())
}

/// A time of day PostgreSQL accepts (`00:00:00` to `24:00:00`), shared with the binary encoder.
pub(super) fn check_time(ty: &PgType, v: &Value, t: Time) -> Result<i64, CodecError> {
    if (0..=MICROS_PER_DAY).contains(&t.0) {
        Ok(t.0)
    } else {
        Err(CodecError::encode(ty, v, Problem::from("time of day outside 00:00:00 to 24:00:00")))
    }
}

/// A zone offset PostgreSQL accepts (closer to UTC than 16 hours), shared with the binary encoder.
pub(super) fn check_offset(ty: &PgType, v: &Value, offset: i32) -> Result<i32, CodecError> {
    if offset.unsigned_abs() < TZ_LIMIT_SECS.unsigned_abs() {
        Ok(offset)
    } else {
        Err(CodecError::encode(ty, v, Problem::from("zone offset beyond ±15:59:59")))
    }
}

// ---------------------------------------------------------------------------------------------
// Scalars: parsing

/// Text being parsed; each method consumes from the front.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// Skips one byte, if any.
    fn bump(&mut self) {
        self.0 = self.0.get(1..).unwrap_or_default();
    }

    fn eat(&mut self, b: u8) -> bool {
        match self.0.split_first() {
            Some((&first, rest)) if first == b => {
                self.0 = rest;
                true
            }
            _ => false,
        }
    }

    fn expect(&mut self, b: u8, what: &'static str) -> Result<(), Problem> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(Problem::from(what))
        }
    }

    /// An unsigned decimal number of 1 to `max_digits` (at most 18) digits, and how many digits
    /// it had.
    fn number(&mut self, max_digits: usize, what: &'static str) -> Result<(u64, usize), Problem> {
        let n = self.0.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 || n > max_digits {
            return Err(Problem::from(what));
        }
        let (digits, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok((digits.iter().fold(0, |acc, &b| acc * 10 + u64::from(b - b'0')), n))
    }

    fn skip_space(&mut self) {
        self.0 = self.0.trim_ascii_start();
    }

    fn end(&self, what: &'static str) -> Result<(), Problem> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Problem::from(what))
        }
    }
}

/// `true`, `yes`, `on`, `1` and their negations, any case, or a unique prefix of the words, as
/// PostgreSQL's `boolin` accepts; it prints `t` and `f`.
fn parse_bool(s: &[u8]) -> Result<bool, Problem> {
    let s = s.trim_ascii();
    let prefix_of = |word: &[u8]| !s.is_empty() && s.len() <= word.len() && word[..s.len()].eq_ignore_ascii_case(s);
    if prefix_of(b"true") || prefix_of(b"yes") || s.eq_ignore_ascii_case(b"on") || s == b"1" {
        Ok(true)
    } else if prefix_of(b"false") || prefix_of(b"no") || s.eq_ignore_ascii_case(b"off") || s == b"0" {
        Ok(false)
    } else {
        Err(Problem::from("not a boolean"))
    }
}

/// A decimal integer within `min..=max`, straight from the bytes.
fn parse_int(s: &[u8], min: i64, max: i64) -> Result<i64, Problem> {
    let s = s.trim_ascii();
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(Problem::from("not an integer"));
    }
    // Accumulating towards the sign reaches i64::MIN without overflow.
    let mut n: i64 = 0;
    for &b in digits {
        let d = i64::from(b - b'0');
        n = n
            .checked_mul(10)
            .and_then(|n| if negative { n.checked_sub(d) } else { n.checked_add(d) })
            .ok_or("integer out of range")?;
    }
    if n < min || n > max {
        return Err(Problem::from("integer out of range"));
    }
    Ok(n)
}

/// A float as PostgreSQL prints it: digits with an optional exponent, `NaN`, `Infinity`,
/// `-Infinity`. A finite literal too large for the type is an error, as in PostgreSQL, not
/// infinity.
fn parse_float<F: std::str::FromStr + Copy>(s: &[u8], is_infinite: fn(F) -> bool) -> Result<F, Problem> {
    let t = std::str::from_utf8(s.trim_ascii()).map_err(|_| "not a number")?;
    let v: F = t.parse().map_err(|_| "not a number")?;
    // Only the spelled-out infinities contain an `i`.
    if is_infinite(v) && !t.bytes().any(|b| b.eq_ignore_ascii_case(&b'i')) {
        return Err(Problem::from("number out of range"));
    }
    Ok(v)
}

/// `\x` followed by hex digit pairs (whitespace between pairs allowed), or the legacy escape
/// format where `\\` is a backslash and `\ooo` an octal byte.
fn parse_bytea(s: &[u8]) -> Result<Bytes, Problem> {
    if let Some(hex) = s.strip_prefix(b"\\x") {
        let mut out = Vec::with_capacity(hex.len() / 2);
        let mut digits = hex.iter().filter(|b| !b.is_ascii_whitespace());
        while let Some(&hi) = digits.next() {
            let lo = *digits.next().ok_or("odd number of hex digits")?;
            out.push(hex_value(hi)? << 4 | hex_value(lo)?);
        }
        return Ok(Bytes::from(out));
    }
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s;
    while let Some((&b, tail)) = rest.split_first() {
        if b != b'\\' {
            out.push(b);
            rest = tail;
        } else if let Some(tail) = tail.strip_prefix(b"\\") {
            out.push(b'\\');
            rest = tail;
        } else if let [a @ b'0'..=b'3', b @ b'0'..=b'7', c @ b'0'..=b'7', tail @ ..] = tail {
            out.push((a - b'0') << 6 | (b - b'0') << 3 | (c - b'0'));
            rest = tail;
        } else {
            return Err(Problem::from("a backslash not followed by a backslash or three octal digits"));
        }
    }
    Ok(Bytes::from(out))
}

fn hex_value(b: u8) -> Result<u8, Problem> {
    match b {
        b'0'..=b'9' => Ok(b - b'0'),
        b'a'..=b'f' => Ok(b - b'a' + 10),
        b'A'..=b'F' => Ok(b - b'A' + 10),
        _ => Err(Problem::from("not a hex digit")),
    }
}

/// `Some(true)` for `infinity`, `Some(false)` for `-infinity`.
fn infinity(s: &[u8]) -> Option<bool> {
    if s.eq_ignore_ascii_case(b"infinity") || s.eq_ignore_ascii_case(b"+infinity") {
        Some(true)
    } else if s.eq_ignore_ascii_case(b"-infinity") {
        Some(false)
    } else {
        None
    }
}

/// Splits off a trailing ` BC` or ` AD`, saying whether the year counts before Christ.
fn strip_era(s: &[u8]) -> (&[u8], bool) {
    let s = s.trim_ascii_end();
    if s.len() > 2 {
        let (head, era) = s.split_at(s.len() - 2);
        if head.ends_with(b" ") && (era.eq_ignore_ascii_case(b"BC") || era.eq_ignore_ascii_case(b"AD")) {
            return (head.trim_ascii_end(), era.eq_ignore_ascii_case(b"BC"));
        }
    }
    (s, false)
}

/// `YYYY-MM-DD` (the year may be longer), checked to be a real date of the era-adjusted
/// astronomical year. Returns (astronomical year, month, day).
fn parse_ymd(c: &mut Cursor<'_>, bc: bool) -> Result<(i64, u32, u32), Problem> {
    let (year, _) = c.number(9, "expected a year")?;
    c.expect(b'-', "expected '-' after the year")?;
    let (month, _) = c.number(2, "expected a month")?;
    c.expect(b'-', "expected '-' after the month")?;
    let (day, _) = c.number(2, "expected a day")?;
    if year == 0 {
        return Err(Problem::from("there is no year 0"));
    }
    // 1 BC is astronomical year 0.
    let year = if bc { 1 - year as i64 } else { year as i64 };
    let (month, day) = (month as u32, day as u32);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(Problem::from("no such day"));
    }
    Ok((year, month, day))
}

/// `HH:MM[:SS[.ffffff]]` as microseconds, at most `24:00:00`.
fn parse_clock(c: &mut Cursor<'_>) -> Result<i64, Problem> {
    let (h, _) = c.number(2, "expected hours")?;
    c.expect(b':', "expected ':' after the hours")?;
    let (m, _) = c.number(2, "expected minutes")?;
    let s = if c.eat(b':') { c.number(2, "expected seconds")?.0 } else { 0 };
    let frac = parse_fraction(c)?;
    if m >= 60 || s >= 60 {
        return Err(Problem::from("minutes or seconds out of range"));
    }
    let micros = h as i64 * MICROS_PER_HOUR + m as i64 * MICROS_PER_MINUTE + s as i64 * MICROS_PER_SEC + frac;
    if micros > MICROS_PER_DAY {
        return Err(Problem::from("time of day past 24:00:00"));
    }
    Ok(micros)
}

/// An optional `.` and 1 to 6 fraction digits, as microseconds.
fn parse_fraction(c: &mut Cursor<'_>) -> Result<i64, Problem> {
    if !c.eat(b'.') {
        return Ok(0);
    }
    let (f, n) = c.number(6, "expected 1 to 6 digits of fractional seconds")?;
    Ok(f as i64 * 10_i64.pow(6 - n as u32))
}

/// An optional zone offset `±HH[:MM[:SS]]`, `±HHMM` or `Z`, in seconds east of UTC.
fn parse_offset(c: &mut Cursor<'_>) -> Result<Option<i32>, Problem> {
    let sign = match c.peek() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        Some(b'Z' | b'z') => {
            c.bump();
            return Ok(Some(0));
        }
        _ => return Ok(None),
    };
    c.bump();
    let (hours, n) = c.number(4, "expected zone hours")?;
    let (h, m) = if n > 2 {
        (hours / 100, hours % 100)
    } else {
        (hours, if c.eat(b':') { c.number(2, "expected zone minutes")?.0 } else { 0 })
    };
    let s = if c.eat(b':') { c.number(2, "expected zone seconds")?.0 } else { 0 };
    if h > 15 || m >= 60 || s >= 60 {
        return Err(Problem::from("zone offset out of range"));
    }
    Ok(Some(sign * (h * 3600 + m * 60 + s) as i32))
}

/// `YYYY-MM-DD[ BC]`, `infinity`, `-infinity`.
fn parse_date(s: &[u8]) -> Result<Date, Problem> {
    let s = s.trim_ascii();
    if let Some(positive) = infinity(s) {
        return Ok(if positive { Date::INFINITY } else { Date::NEG_INFINITY });
    }
    let (body, bc) = strip_era(s);
    let mut c = Cursor(body);
    let (y, m, d) = parse_ymd(&mut c, bc)?;
    c.end("unexpected text after the date")?;
    Date::from_ymd(y, m, d).ok_or_else(|| Problem::from("date out of range"))
}

/// `HH:MM:SS[.ffffff]`.
fn parse_time(s: &[u8]) -> Result<Time, Problem> {
    let mut c = Cursor(s.trim_ascii());
    let micros = parse_clock(&mut c)?;
    c.end("unexpected text after the time")?;
    Ok(Time(micros))
}

/// `HH:MM:SS[.ffffff]±HH[:MM[:SS]]`.
fn parse_timetz(s: &[u8]) -> Result<TimeTz, Problem> {
    let mut c = Cursor(s.trim_ascii());
    let micros = parse_clock(&mut c)?;
    c.skip_space();
    let offset = parse_offset(&mut c)?.ok_or("expected a zone offset")?;
    c.end("unexpected text after the zone offset")?;
    Ok(TimeTz { time: Time(micros), offset_secs: offset })
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff][±zone][ BC]`, `infinity`, `-infinity`. A timestamptz without a
/// zone is in UTC (the session zone); a timestamp ignores a zone, as PostgreSQL does.
fn parse_timestamp(s: &[u8], with_zone: bool) -> Result<Timestamp, Problem> {
    match canonical_timestamp(s, with_zone) {
        Some(t) => Ok(t),
        None => parse_timestamp_any(s, with_zone),
    }
}

/// Every form PostgreSQL prints (and the offsets it accepts).
fn parse_timestamp_any(s: &[u8], with_zone: bool) -> Result<Timestamp, Problem> {
    let s = s.trim_ascii();
    if let Some(positive) = infinity(s) {
        return Ok(if positive { Timestamp::INFINITY } else { Timestamp::NEG_INFINITY });
    }
    let (body, bc) = strip_era(s);
    let mut c = Cursor(body);
    let (y, m, d) = parse_ymd(&mut c, bc)?;
    let micros = if c.eat(b' ') || c.eat(b'T') || c.eat(b't') { parse_clock(&mut c)? } else { 0 };
    c.skip_space();
    let offset = parse_offset(&mut c)?.unwrap_or(0);
    c.end("unexpected text after the timestamp")?;
    let offset = if with_zone { offset } else { 0 };
    Ok(Timestamp::from_date_time(days_from_civil(y, m, d), micros - i64::from(offset) * MICROS_PER_SEC))
}

/// The form PostgreSQL prints almost every timestamp in (`YYYY-MM-DD HH:MM:SS[.ffffff]`, with
/// `+00` for timestamptz under TimeZone=UTC), read at fixed positions; `None` sends anything
/// else (BC, wide years, infinities, other offsets) to the general parser.
fn canonical_timestamp(s: &[u8], with_zone: bool) -> Option<Timestamp> {
    if s.len() < 19 || s[4] != b'-' || s[7] != b'-' || s[10] != b' ' || s[13] != b':' || s[16] != b':' {
        return None;
    }
    let digit = |i: usize| -> Option<i64> {
        let d = s[i].wrapping_sub(b'0');
        (d < 10).then_some(i64::from(d))
    };
    let two = |i: usize| Some(digit(i)? * 10 + digit(i + 1)?);
    let year = digit(0)? * 1000 + digit(1)? * 100 + two(2)?;
    let (month, day, h, m, sec) = (two(5)?, two(8)?, two(11)?, two(14)?, two(17)?);
    let (month, day) = (u32::try_from(month).ok()?, u32::try_from(day).ok()?);
    if year == 0
        || !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || h > 23
        || m > 59
        || sec > 59
    {
        return None;
    }
    let mut i = 19;
    let mut frac = 0i64;
    if s.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < s.len() && s[i].is_ascii_digit() && i - start < 6 {
            frac = frac * 10 + i64::from(s[i] - b'0');
            i += 1;
        }
        if i == start || s.get(i).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        frac *= 10_i64.pow(6 - (i - start) as u32);
    }
    let rest = &s[i..];
    if !(rest.is_empty() || (with_zone && rest == b"+00")) {
        return None;
    }
    let micros = h * MICROS_PER_HOUR + m * MICROS_PER_MINUTE + sec * MICROS_PER_SEC + frac;
    Some(Timestamp::from_date_time(days_from_civil(year, month, day), micros))
}

/// One unit word of an interval.
#[derive(Clone, Copy)]
enum IntervalUnit {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Microsecond,
}

fn interval_unit(w: &[u8]) -> Option<IntervalUnit> {
    use IntervalUnit::*;
    const UNITS: &[(&[u8], IntervalUnit)] = &[
        (b"year", Year),
        (b"years", Year),
        (b"mon", Month),
        (b"mons", Month),
        (b"month", Month),
        (b"months", Month),
        (b"day", Day),
        (b"days", Day),
        (b"hour", Hour),
        (b"hours", Hour),
        (b"min", Minute),
        (b"mins", Minute),
        (b"minute", Minute),
        (b"minutes", Minute),
        (b"sec", Second),
        (b"secs", Second),
        (b"second", Second),
        (b"seconds", Second),
        (b"microsecond", Microsecond),
        (b"microseconds", Microsecond),
    ];
    UNITS.iter().find(|(name, _)| name.eq_ignore_ascii_case(w)).map(|&(_, u)| u)
}

/// IntervalStyle=postgres: `[N years] [N mons] [N days] [±H:MM:SS[.ffffff]]`, each part with its
/// own sign (`-1 days +02:03:04`), plus integer `hours`/`mins`/`secs`/`microseconds` parts (the
/// encoder needs the last for the one value the clock form cannot carry), `infinity`,
/// `-infinity`.
fn parse_interval(s: &[u8]) -> Result<Interval, Problem> {
    let s = s.trim_ascii();
    match infinity(s) {
        Some(true) => return Ok(INTERVAL_INFINITY),
        Some(false) => return Ok(INTERVAL_NEG_INFINITY),
        None => {}
    }
    // Sums in i128 so that no field overflows before its range is checked.
    let (mut months, mut days, mut micros) = (0i128, 0i128, 0i128);
    let mut words = s.split(u8::is_ascii_whitespace).filter(|w| !w.is_empty()).peekable();
    if words.peek().is_none() {
        return Err(Problem::from("empty interval"));
    }
    while let Some(word) = words.next() {
        if word.contains(&b':') {
            micros += parse_interval_clock(word)?;
            continue;
        }
        let n = i128::from(parse_int(word, i64::MIN, i64::MAX)?);
        let unit = words.next().ok_or("a number without a unit")?;
        match interval_unit(unit).ok_or("unknown interval unit")? {
            IntervalUnit::Year => months += n * 12,
            IntervalUnit::Month => months += n,
            IntervalUnit::Day => days += n,
            IntervalUnit::Hour => micros += n * i128::from(MICROS_PER_HOUR),
            IntervalUnit::Minute => micros += n * i128::from(MICROS_PER_MINUTE),
            IntervalUnit::Second => micros += n * i128::from(MICROS_PER_SEC),
            IntervalUnit::Microsecond => micros += n,
        }
    }
    Ok(Interval {
        months: i32::try_from(months).map_err(|_| "months out of range")?,
        days: i32::try_from(days).map_err(|_| "days out of range")?,
        micros: i64::try_from(micros).map_err(|_| "time out of range")?,
    })
}

/// The time part of an interval, `[±]H:MM:SS[.ffffff]`, where the hours may exceed 24.
fn parse_interval_clock(word: &[u8]) -> Result<i128, Problem> {
    let mut c = Cursor(word);
    let negative = c.eat(b'-');
    if !negative {
        c.eat(b'+');
    }
    let (h, _) = c.number(18, "expected hours")?;
    c.expect(b':', "expected ':' after the hours")?;
    let (m, _) = c.number(2, "expected minutes")?;
    let s = if c.eat(b':') { c.number(2, "expected seconds")?.0 } else { 0 };
    let frac = parse_fraction(&mut c)?;
    c.end("unexpected text in the time part")?;
    if m >= 60 || s >= 60 {
        return Err(Problem::from("minutes or seconds out of range"));
    }
    let micros = i128::from(h) * i128::from(MICROS_PER_HOUR)
        + i128::from(m) * i128::from(MICROS_PER_MINUTE)
        + i128::from(s) * i128::from(MICROS_PER_SEC)
        + i128::from(frac);
    Ok(if negative { -micros } else { micros })
}

/// 32 hex digits, optionally braced, with hyphens allowed between groups of four, as `uuid_in`
/// accepts.
fn parse_uuid(s: &[u8]) -> Result<Uuid, Problem> {
    let s = s.trim_ascii();
    let s = s.strip_prefix(b"{").and_then(|s| s.strip_suffix(b"}")).unwrap_or(s);
    let mut out = [0u8; 16];
    let mut nibbles = 0usize;
    let mut after_hyphen = false;
    for &b in s {
        if b == b'-' {
            if after_hyphen || nibbles == 0 || nibbles % 4 != 0 || nibbles == 32 {
                return Err(Problem::from("misplaced hyphen"));
            }
            after_hyphen = true;
            continue;
        }
        after_hyphen = false;
        let slot = out.get_mut(nibbles / 2).ok_or("more than 32 hex digits")?;
        *slot = *slot << 4 | hex_value(b)?;
        nibbles += 1;
    }
    if nibbles != 32 || after_hyphen {
        return Err(Problem::from("expected 32 hex digits"));
    }
    Ok(Uuid(out))
}

// ---------------------------------------------------------------------------------------------
// Scalars: printing

/// Digits of a non-negative number, left-padded with zeros to `width`.
fn put_padded(out: &mut BytesMut, mut n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut i = buf.len();
    while n > 0 {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    let start = i.min(buf.len() - width.clamp(1, buf.len()));
    out.put_slice(&buf[start..]);
}

fn put_i64(out: &mut BytesMut, n: i64) {
    if n < 0 {
        out.put_u8(b'-');
    }
    put_padded(out, n.unsigned_abs(), 1);
}

/// A fixed-size buffer for `{:e}`, so printing a float allocates nothing.
struct StackBuf {
    buf: [u8; 48],
    len: usize,
}

impl std::fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn put_f64(out: &mut BytesMut, v: f64) {
    if v.is_nan() {
        out.put_slice(b"NaN");
    } else if v.is_infinite() {
        out.put_slice(if v > 0.0 { b"Infinity" } else { b"-Infinity" });
    } else {
        let mut b = StackBuf { buf: [0; 48], len: 0 };
        match write!(b, "{v:e}") {
            Ok(()) => put_shortest(out, &b.buf[..b.len], FLOAT8_FIXED_BELOW),
            // Unreachable (a double needs at most 24 bytes); a longer form still reads back exactly.
            Err(_) => put_display(out, v),
        }
    }
}

fn put_f32(out: &mut BytesMut, v: f32) {
    if v.is_nan() {
        out.put_slice(b"NaN");
    } else if v.is_infinite() {
        out.put_slice(if v > 0.0 { b"Infinity" } else { b"-Infinity" });
    } else {
        let mut b = StackBuf { buf: [0; 48], len: 0 };
        match write!(b, "{v:e}") {
            Ok(()) => put_shortest(out, &b.buf[..b.len], FLOAT4_FIXED_BELOW),
            Err(_) => put_display(out, v),
        }
    }
}

/// Rust's shortest round-trip `Display` form, which PostgreSQL also reads exactly.
fn put_display(out: &mut BytesMut, v: impl std::fmt::Display) {
    out.put_slice(v.to_string().as_bytes());
}

/// Re-spells Rust's shortest round-trip `{:e}` output (`-1.5e-7`) the way PostgreSQL prints the
/// same shortest digits: fixed notation for decimal exponents from -4 up to `fixed_below`,
/// otherwise `d.ddde±XX` with at least two exponent digits (`1e+15`, `5e-324`).
fn put_shortest(out: &mut BytesMut, e_form: &[u8], fixed_below: i32) {
    let (negative, body) = match e_form.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, e_form),
    };
    let split = body.iter().position(|&b| b == b'e').unwrap_or(body.len());
    let (mantissa, exp) = body.split_at(split);
    let exp =
        std::str::from_utf8(exp.get(1..).unwrap_or_default()).ok().and_then(|e| e.parse::<i32>().ok()).unwrap_or(0);
    let (first, rest) = mantissa.split_at(mantissa.len().min(1));
    let rest = rest.strip_prefix(b".").unwrap_or(rest);
    if negative {
        out.put_u8(b'-');
    }
    if (-4..fixed_below).contains(&exp) {
        if exp < 0 {
            out.put_slice(b"0.");
            out.put_bytes(b'0', (-exp - 1) as usize);
            out.put_slice(first);
            out.put_slice(rest);
        } else {
            // `exp` integer digits: the first, then `exp` more from `rest` or zero padding.
            let int_more = exp as usize;
            out.put_slice(first);
            out.put_slice(&rest[..rest.len().min(int_more)]);
            if rest.len() > int_more {
                out.put_u8(b'.');
                out.put_slice(&rest[int_more..]);
            } else {
                out.put_bytes(b'0', int_more - rest.len());
            }
        }
    } else {
        out.put_slice(first);
        if !rest.is_empty() {
            out.put_u8(b'.');
            out.put_slice(rest);
        }
        out.put_slice(if exp < 0 { b"e-" } else { b"e+" });
        put_padded(out, u64::from(exp.unsigned_abs()), 2);
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The hex format, `\x` and two lowercase digits a byte.
fn put_bytea(out: &mut BytesMut, b: &[u8]) {
    out.reserve(2 + 2 * b.len());
    out.put_slice(b"\\x");
    for &byte in b {
        out.put_u8(HEX[usize::from(byte >> 4)]);
        out.put_u8(HEX[usize::from(byte & 0xf)]);
    }
}

/// `YYYY-MM-DD` of an astronomical year, with at least four year digits; years before 1 print
/// as their BC number (the caller appends ` BC`).
fn put_ymd(out: &mut BytesMut, (y, m, d): (i64, u32, u32)) {
    let year = if y <= 0 { 1 - y } else { y };
    put_padded(out, year.unsigned_abs(), 4);
    out.put_u8(b'-');
    put_padded(out, u64::from(m), 2);
    out.put_u8(b'-');
    put_padded(out, u64::from(d), 2);
}

fn put_date(out: &mut BytesMut, d: Date) {
    match d {
        Date::INFINITY => out.put_slice(b"infinity"),
        Date::NEG_INFINITY => out.put_slice(b"-infinity"),
        _ => {
            let ymd = d.ymd();
            put_ymd(out, ymd);
            if ymd.0 <= 0 {
                out.put_slice(b" BC");
            }
        }
    }
}

/// `HH:MM:SS` and, when not zero, the fraction without trailing zeros (`.5`, `.000001`).
fn put_clock(out: &mut BytesMut, micros: i64) {
    let u = micros.unsigned_abs();
    put_padded(out, u / MICROS_PER_HOUR as u64, 2);
    out.put_u8(b':');
    put_padded(out, u / MICROS_PER_MINUTE as u64 % 60, 2);
    out.put_u8(b':');
    put_padded(out, u / MICROS_PER_SEC as u64 % 60, 2);
    put_fraction(out, u % MICROS_PER_SEC as u64);
}

fn put_fraction(out: &mut BytesMut, mut micros: u64) {
    if micros == 0 {
        return;
    }
    let mut width = 6;
    while micros % 10 == 0 {
        micros /= 10;
        width -= 1;
    }
    out.put_u8(b'.');
    put_padded(out, micros, width);
}

/// `+HH`, `+HH:MM` or `+HH:MM:SS`, as PostgreSQL prints a zone (`+00` for UTC).
fn put_offset(out: &mut BytesMut, offset_secs: i32) {
    out.put_u8(if offset_secs < 0 { b'-' } else { b'+' });
    let o = offset_secs.unsigned_abs();
    put_padded(out, u64::from(o / 3600), 2);
    if o % 3600 != 0 {
        out.put_u8(b':');
        put_padded(out, u64::from(o / 60 % 60), 2);
        if o % 60 != 0 {
            out.put_u8(b':');
            put_padded(out, u64::from(o % 60), 2);
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff][+00][ BC]`; sub-microsecond digits are dropped.
fn put_timestamp(out: &mut BytesMut, t: Timestamp, with_zone: bool) {
    match t {
        Timestamp::INFINITY => return out.put_slice(b"infinity"),
        Timestamp::NEG_INFINITY => return out.put_slice(b"-infinity"),
        _ => {}
    }
    let (days, micros) = t.date_time();
    let ymd = civil_from_days(days);
    put_ymd(out, ymd);
    out.put_u8(b' ');
    put_clock(out, micros);
    if with_zone {
        out.put_slice(b"+00");
    }
    if ymd.0 <= 0 {
        out.put_slice(b" BC");
    }
}

/// IntervalStyle=postgres, as `EncodeInterval` prints it: nonzero years, mons and days, each
/// with its own sign (a positive one after a negative one gets a `+`), then a signed
/// `H:MM:SS[.ffffff]` when the time is nonzero or everything is zero.
///
/// One exception: PostgreSQL cannot read back its own clock form of −2⁶³ microseconds
/// (`-2562047788:00:54.775808` overflows while parsed), so that time prints as
/// `-9223372036854775808 microseconds`, which it reads exactly.
fn put_interval(out: &mut BytesMut, i: Interval) {
    match i {
        INTERVAL_INFINITY => return out.put_slice(b"infinity"),
        INTERVAL_NEG_INFINITY => return out.put_slice(b"-infinity"),
        _ => {}
    }
    let mut is_zero = true;
    let mut is_before = false;
    for (value, unit) in [(i.months / 12, "year"), (i.months % 12, "mon"), (i.days, "day")] {
        put_interval_part(out, i64::from(value), unit, &mut is_zero, &mut is_before);
    }
    if i.micros == i64::MIN {
        if !is_zero {
            out.put_u8(b' ');
        }
        out.put_slice(b"-9223372036854775808 microseconds");
    } else if is_zero || i.micros != 0 {
        if !is_zero {
            out.put_u8(b' ');
        }
        if i.micros < 0 {
            out.put_u8(b'-');
        } else if is_before {
            out.put_u8(b'+');
        }
        put_clock(out, i.micros);
    }
}

fn put_interval_part(out: &mut BytesMut, value: i64, unit: &str, is_zero: &mut bool, is_before: &mut bool) {
    if value == 0 {
        return;
    }
    if !*is_zero {
        out.put_u8(b' ');
    }
    if *is_before && value > 0 {
        out.put_u8(b'+');
    }
    put_i64(out, value);
    out.put_u8(b' ');
    out.put_slice(unit.as_bytes());
    if value != 1 {
        out.put_u8(b's');
    }
    // Only the part just printed decides whether the next positive one gets a `+`.
    *is_before = value < 0;
    *is_zero = false;
}

/// Lowercase, hyphenated `8-4-4-4-12`.
fn put_uuid(out: &mut BytesMut, u: &Uuid) {
    for (i, &byte) in u.0.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.put_u8(b'-');
        }
        out.put_u8(HEX[usize::from(byte >> 4)]);
        out.put_u8(HEX[usize::from(byte & 0xf)]);
    }
}

// ---------------------------------------------------------------------------------------------
// Arrays

/// The whitespace `array_in` skips around elements and `array_out` quotes.
fn is_array_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
}

/// Reads an array literal (`{1,NULL,"a\"b"}`, nested `{{1,2},{3,4}}`, with optional bounds
/// `[0:2]={…}`).
fn decode_array(ty: &PgType, elem: &PgType, raw: Bytes) -> Result<Value, CodecError> {
    let mut p = ArrayParser { ty, elem, raw: &raw, pos: 0 };
    p.skip_space();
    if p.peek() == Some(b'[') && !p.bounds_all_one()? {
        // The bounds are part of the value and a List cannot hold them: keep the literal.
        return utf8(raw.clone()).map(Value::Other).map_err(|e| p.fail(e));
    }
    let list = p.list(1)?;
    p.skip_space();
    if p.pos != raw.len() {
        return Err(p.fail("unexpected text after the array"));
    }
    Ok(Value::List(list))
}

struct ArrayParser<'a> {
    ty: &'a PgType,
    elem: &'a PgType,
    raw: &'a Bytes,
    pos: usize,
}

impl ArrayParser<'_> {
    fn fail(&self, p: impl Into<Problem>) -> CodecError {
        CodecError::decode(self.ty, Format::Text, self.raw, p.into())
    }

    fn peek(&self) -> Option<u8> {
        self.raw.get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(is_array_space) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, b: u8, what: &'static str) -> Result<(), CodecError> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.fail(what))
        }
    }

    /// A signed integer of a dimension decoration.
    fn bound(&mut self) -> Result<i64, CodecError> {
        let start = self.pos;
        if matches!(self.peek(), Some(b'-' | b'+')) {
            self.pos += 1;
        }
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        parse_int(&self.raw[start..self.pos], i32::MIN.into(), i32::MAX.into()).map_err(|e| self.fail(e))
    }

    /// Reads `[lb:ub]…=` (or `[ub]`, lower bound 1) and says whether every lower bound is 1.
    fn bounds_all_one(&mut self) -> Result<bool, CodecError> {
        let mut all_one = true;
        let mut dims = 0;
        while self.peek() == Some(b'[') {
            self.pos += 1;
            dims += 1;
            let first = self.bound()?;
            let lower = if self.peek() == Some(b':') {
                self.pos += 1;
                self.bound()?;
                first
            } else {
                1
            };
            self.expect(b']', "expected ']' in the array bounds")?;
            all_one &= lower == 1;
            if dims > MAX_ARRAY_DIMS {
                return Err(self.fail("too many array dimensions"));
            }
        }
        self.expect(b'=', "expected '=' after the array bounds")?;
        self.skip_space();
        Ok(all_one)
    }

    /// `{` elements or sub-arrays separated by `,` `}`.
    fn list(&mut self, depth: usize) -> Result<Vec<Value>, CodecError> {
        if depth > MAX_ARRAY_DIMS {
            return Err(self.fail("too many array dimensions"));
        }
        self.expect(b'{', "expected '{'")?;
        let mut items = Vec::new();
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(items);
        }
        loop {
            self.skip_space();
            let item = match self.peek() {
                Some(b'{') => Value::List(self.list(depth + 1)?),
                Some(b'"') => decode_text(self.elem, self.quoted()?)?,
                _ => match self.unquoted()? {
                    Some(b) => decode_text(self.elem, b)?,
                    None => Value::Null,
                },
            };
            items.push(item);
            self.skip_space();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(items);
                }
                _ => return Err(self.fail("expected ',' or '}' after an element")),
            }
        }
    }

    /// A double-quoted element; shares the input unless it has backslash escapes.
    fn quoted(&mut self) -> Result<Bytes, CodecError> {
        let start = self.pos + 1;
        let mut i = start;
        let mut escaped = false;
        loop {
            match self.raw.get(i) {
                None => return Err(self.fail("unterminated quoted element")),
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    i += 2;
                }
                Some(_) => i += 1,
            }
        }
        self.pos = i + 1;
        let body = self.raw.slice(start..i);
        Ok(if escaped { unescape(&body) } else { body })
    }

    /// An unquoted element up to the next `,` or `}`, without surrounding whitespace; `None` for
    /// `NULL`. Shares the input unless it has backslash escapes.
    fn unquoted(&mut self) -> Result<Option<Bytes>, CodecError> {
        let start = self.pos;
        let mut i = start;
        let mut end = start;
        let mut escaped = false;
        loop {
            match self.raw.get(i) {
                None => return Err(self.fail("unterminated array")),
                Some(b',' | b'}') => break,
                Some(b'{' | b'"') => return Err(self.fail("unexpected '{' or '\"' in an unquoted element")),
                Some(b'\\') => {
                    escaped = true;
                    i += 2;
                    // Escaped whitespace is part of the element.
                    end = i;
                }
                Some(&b) if is_array_space(b) => i += 1,
                Some(_) => {
                    i += 1;
                    end = i;
                }
            }
        }
        self.pos = i;
        let token = self.raw.slice(start..end);
        if token.is_empty() {
            return Err(self.fail("empty unquoted element"));
        }
        if escaped {
            return Ok(Some(unescape(&token)));
        }
        Ok((!token.eq_ignore_ascii_case(b"NULL")).then_some(token))
    }
}

/// Drops each backslash and keeps the byte after it.
fn unescape(s: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => out.extend(bytes.next()),
            _ => out.push(b),
        }
    }
    Bytes::from(out)
}

/// `{…}` of one (sub-)list, `NULL` for nulls, each element quoted when `array_in` would
/// otherwise misread it. `scratch` is reused for every element's text.
fn put_list(elem: &PgType, list: &[Value], out: &mut BytesMut, scratch: &mut BytesMut) -> Result<(), CodecError> {
    out.put_u8(b'{');
    for (i, v) in list.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        match v {
            Value::Null => out.put_slice(b"NULL"),
            Value::List(inner) => put_list(elem, inner, out, scratch)?,
            v => {
                scratch.clear();
                encode_text(elem, v, scratch)?;
                put_element(out, scratch);
            }
        }
    }
    out.put_u8(b'}');
    Ok(())
}

/// One element's text, double-quoted with `"` and `\` escaped when it is empty, reads as NULL,
/// or holds a character that delimits elements.
fn put_element(out: &mut BytesMut, s: &[u8]) {
    let needs_quotes = s.is_empty()
        || s.eq_ignore_ascii_case(b"NULL")
        || s.iter().any(|&b| matches!(b, b'{' | b'}' | b',' | b'"' | b'\\') || is_array_space(b));
    if !needs_quotes {
        out.put_slice(s);
        return;
    }
    out.put_u8(b'"');
    for &b in s {
        if b == b'"' || b == b'\\' {
            out.put_u8(b'\\');
        }
        out.put_u8(b);
    }
    out.put_u8(b'"');
}

/// PostgreSQL's text form of an array whose lower bounds are not all 1: `[lb:ub]…={…}`. The
/// binary decoder uses it to keep such arrays whole as [`Value::Other`].
pub(super) fn render_bounded_array(elem: &PgType, bounds: &[(i32, usize)], list: &[Value]) -> Result<Text, CodecError> {
    let mut out = BytesMut::new();
    for &(lower, len) in bounds {
        out.put_u8(b'[');
        put_i64(&mut out, i64::from(lower));
        out.put_u8(b':');
        put_i64(&mut out, i64::from(lower) + len as i64 - 1);
        out.put_u8(b']');
    }
    out.put_u8(b'=');
    put_list(elem, list, &mut out, &mut BytesMut::new())?;
    // Every piece written is UTF-8: digits, punctuation and elements' UTF-8 text.
    Text::from_utf8(out.freeze())
        .map_err(|e| CodecError::decode(elem, Format::Text, b"", Problem::value("array text is not UTF-8", e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(ty: &PgType, s: &str) -> Value {
        decode_text(ty, Bytes::copy_from_slice(s.as_bytes())).unwrap_or_else(|e| panic!("decoding {s:?}: {e}"))
    }

    fn enc(ty: &PgType, v: &Value) -> String {
        let mut out = BytesMut::new();
        encode_text(ty, v, &mut out).unwrap_or_else(|e| panic!("encoding {v:?}: {e}"));
        String::from_utf8(out.to_vec()).expect("encoder writes UTF-8")
    }

    /// Text PostgreSQL printed decodes and prints back unchanged.
    fn round_trip(ty: &PgType, cases: &[&str]) {
        for s in cases {
            let v = dec(ty, s);
            assert_eq!(&enc(ty, &v), s, "{ty} {s:?} decoded to {v:?}");
        }
    }

    fn bad(ty: &PgType, cases: &[&str]) {
        for s in cases {
            let r = decode_text(ty, Bytes::copy_from_slice(s.as_bytes()));
            assert!(r.is_err(), "{ty} {s:?} should not decode, got {r:?}");
        }
    }

    fn arr(elem: PgType, elem_oid: u32) -> PgType {
        PgType::Array { elem: Box::new(elem), elem_oid }
    }

    #[test]
    fn bools_and_integers_round_trip_at_their_limits() {
        round_trip(&PgType::Bool, &["t", "f"]);
        assert_eq!(dec(&PgType::Bool, " TRUE "), Value::Bool(true));
        assert_eq!(dec(&PgType::Bool, "off"), Value::Bool(false));
        assert_eq!(dec(&PgType::Bool, "y"), Value::Bool(true));
        round_trip(&PgType::Int2, &["-32768", "32767", "0"]);
        round_trip(&PgType::Int4, &["-2147483648", "2147483647"]);
        round_trip(&PgType::Int8, &["-9223372036854775808", "9223372036854775807"]);
        assert_eq!(dec(&PgType::Int4, " +42 "), Value::Int(42));
        bad(&PgType::Int2, &["32768", "-32769", "", "-", "1.5", "1e3", "12a"]);
        bad(&PgType::Int8, &["9223372036854775808", "-9223372036854775809"]);
        bad(&PgType::Bool, &["maybe", "", "o"]);
    }

    #[test]
    fn floats_print_as_postgres_does_and_keep_their_bits() {
        round_trip(
            &PgType::Float8,
            &[
                "0",
                "-0",
                "NaN",
                "Infinity",
                "-Infinity",
                "5e-324",
                "1.7976931348623157e+308",
                "2.2250738585072014e-308",
                "1e+15",
                "100000000000000",
                "123456789012345.6",
                "1.2345678901234568e+17",
                "0.0001",
                "1e-05",
                "0.1",
                "-1.5",
                "1e+22",
            ],
        );
        round_trip(
            &PgType::Float4,
            &[
                "3.4028235e+38",
                "1.1754944e-38",
                "1e-45",
                "1e+06",
                "100000",
                "123456",
                "1.234567e+06",
                "-0",
                "NaN",
                "-Infinity",
                "0.1",
            ],
        );
        assert_eq!(dec(&PgType::Float4, "1.17549435e-38"), Value::Float32(f32::MIN_POSITIVE));
        assert_eq!(dec(&PgType::Float8, "-0"), Value::Float64(-0.0));
        assert_eq!(dec(&PgType::Float8, "-inf"), Value::Float64(f64::NEG_INFINITY));
        // Every output reads back as the same bits.
        for v in [f64::MIN_POSITIVE, f64::MAX, f64::EPSILON, 1.0 / 3.0, -123.456e-7, 5e-324] {
            assert_eq!(dec(&PgType::Float8, &enc(&PgType::Float8, &Value::Float64(v))), Value::Float64(v));
        }
        // A tie between two shortest forms: PostgreSQL prints the even one, we the upper one;
        // both are the same float4.
        let tie = dec(&PgType::Float4, "2.2107692e+06");
        assert_eq!(enc(&PgType::Float4, &tie), "2.2107693e+06");
        assert_eq!(dec(&PgType::Float4, "2.2107693e+06"), tie);
        bad(&PgType::Float8, &["1e400", "abc", "", "1.5x"]);
        bad(&PgType::Float4, &["1e39"]);
    }

    #[test]
    fn numerics_share_the_buffer_and_keep_scale() {
        round_trip(
            &PgType::Numeric,
            &[
                "NaN",
                "Infinity",
                "-Infinity",
                "2.50",
                "0.00000000000000000001",
                "-99999999999999999999.99999999999999999999",
                "12345678901234567890123456789",
                "0",
                "0.000",
            ],
        );
        let raw = Bytes::from_static(b"123.4500");
        let Value::Decimal(d) = decode_text(&PgType::Numeric, raw.clone()).unwrap() else { panic!() };
        assert_eq!(d.text().bytes().as_ptr(), raw.as_ptr(), "canonical numeric text is not copied");
        assert_eq!(enc(&PgType::Numeric, &Value::Int(-7)), "-7");
        bad(&PgType::Numeric, &["1.2.3", "", "abc"]);
    }

    #[test]
    fn text_like_values_share_the_buffer() {
        for ty in [PgType::Text, PgType::Json, PgType::Jsonb, PgType::Enum, PgType::Other] {
            let raw = Bytes::from_static(b"{\"a\":1,  \"a\" : 2}");
            let v = decode_text(&ty, raw.clone()).unwrap();
            let t = v.as_str().unwrap();
            assert_eq!(t.as_ptr(), raw.as_ptr(), "{ty} copied its text");
            assert_eq!(enc(&ty, &v), "{\"a\":1,  \"a\" : 2}", "{ty} kept verbatim");
        }
        assert_eq!(dec(&PgType::Json, "[1, 2]"), Value::Json("[1, 2]".into()));
        assert_eq!(dec(&PgType::Enum, "happy"), Value::Enum("happy".into()));
        assert_eq!(dec(&PgType::Other, "(1,2)"), Value::Other("(1,2)".into()));
        assert_eq!(enc(&PgType::Other, &Value::Text("(1,2)".into())), "(1,2)");
        assert!(decode_text(&PgType::Text, Bytes::from_static(b"a\xffb")).is_err());
    }

    #[test]
    fn bytea_reads_hex_and_escape_formats() {
        round_trip(&PgType::Bytea, &["\\x", "\\x00ff10", "\\xdeadbeef"]);
        assert_eq!(dec(&PgType::Bytea, "\\x00 FF"), Value::Bytes(Bytes::from_static(b"\x00\xff")));
        assert_eq!(dec(&PgType::Bytea, "a\\\\b\\001\\377"), Value::Bytes(Bytes::from_static(b"a\\b\x01\xff")));
        assert_eq!(dec(&PgType::Bytea, "plain"), Value::Bytes(Bytes::from_static(b"plain")));
        bad(&PgType::Bytea, &["\\x0", "\\xzz", "a\\b", "\\4000", "\\"]);
    }

    #[test]
    fn dates_cover_postgres_range_and_bc_years() {
        round_trip(
            &PgType::Date,
            &[
                "2000-02-29",
                "1970-01-01",
                "4713-01-01 BC",
                "0001-01-01 BC",
                "0001-01-01",
                "5874897-12-31",
                "infinity",
                "-infinity",
            ],
        );
        assert_eq!(dec(&PgType::Date, "4713-01-01 BC"), Value::Date(Date::from_ymd(-4712, 1, 1).unwrap()));
        assert_eq!(dec(&PgType::Date, "2000-01-01"), Value::Date(Date(10957)));
        bad(&PgType::Date, &["2001-02-29", "2000-13-01", "0000-01-01", "2000-01-01x", "2000-1", "", "BC"]);
    }

    #[test]
    fn times_and_timetz_round_trip() {
        round_trip(&PgType::Time, &["00:00:00", "12:34:56.789012", "24:00:00", "00:00:00.000001", "12:00:00.5"]);
        assert_eq!(dec(&PgType::Time, "24:00:00"), Value::Time(Time(MICROS_PER_DAY)));
        bad(&PgType::Time, &["24:00:00.000001", "25:00:00", "12:60:00", "12:00:00.1234567", "12", ""]);
        round_trip(
            &PgType::TimeTz,
            &["00:00:00+15:59", "01:02:03-08", "23:59:59.999999-15:59", "01:02:03+05:30:15", "12:00:00+00"],
        );
        assert_eq!(
            dec(&PgType::TimeTz, "01:02:03-08"),
            Value::TimeTz(TimeTz { time: Time(3_723_000_000), offset_secs: -8 * 3600 })
        );
        bad(&PgType::TimeTz, &["01:02:03", "01:02:03+16", "01:02:03+05:60"]);
        let late = Value::Time(Time(MICROS_PER_DAY + 1));
        assert!(encode_text(&PgType::Time, &late, &mut BytesMut::new()).is_err());
    }

    #[test]
    fn timestamps_cover_both_ends_and_zones() {
        round_trip(
            &PgType::Timestamp,
            &[
                "2020-01-01 00:00:00",
                "2000-01-01 00:00:00.000001",
                "294276-12-31 23:59:59.999999",
                "4713-01-01 00:00:00 BC",
                "infinity",
                "-infinity",
            ],
        );
        round_trip(
            &PgType::TimestampTz,
            &["2020-01-01 00:00:00+00", "4713-01-01 00:00:00+00 BC", "1969-12-31 23:59:59.5+00", "-infinity"],
        );
        let max = Timestamp::from_date_time(days_from_civil(294276, 12, 31), MICROS_PER_DAY - 1);
        assert_eq!(dec(&PgType::Timestamp, "294276-12-31 23:59:59.999999"), Value::Timestamp(max));
        let utc = dec(&PgType::TimestampTz, "2019-12-31 18:30:00+00");
        assert_eq!(dec(&PgType::TimestampTz, "2020-01-01 00:00:00+05:30"), utc);
        assert_eq!(dec(&PgType::TimestampTz, "2020-01-01T00:00:00+0530"), utc);
        assert_eq!(dec(&PgType::TimestampTz, "2019-12-31 18:30:00Z"), utc);
        assert_eq!(dec(&PgType::TimestampTz, "2019-12-31 18:30:00"), utc, "no zone means the session's UTC");
        assert_eq!(
            dec(&PgType::Timestamp, "2020-01-01 00:00:00+05"),
            dec(&PgType::Timestamp, "2020-01-01 00:00:00"),
            "timestamp ignores a zone, as PostgreSQL does"
        );
        // Sub-microsecond digits are truncated when printing.
        let t = Value::Timestamp(Timestamp::new(0, 1_999));
        assert_eq!(enc(&PgType::Timestamp, &t), "1970-01-01 00:00:00.000001");
        bad(&PgType::Timestamp, &["2020-01-01 25:00:00", "2020-02-30 00:00:00", "2020-01-01 00:00:00 XY", "x"]);
    }

    #[test]
    fn intervals_print_in_postgres_style_with_mixed_signs() {
        round_trip(
            &PgType::Interval,
            &[
                "178000000 years",
                "-178000000 years",
                "-1 days +02:03:04.000005",
                "1 mon -1 days",
                "-1 mons +1 day",
                "1 day -02:00:00",
                "-178000000 years -3 mons",
                "1 year 2 mons 3 days 04:05:06",
                "-1 years",
                "-10 mons",
                "00:00:00",
                "-00:00:00.000001",
                "00:00:01.5",
                "2562047788:00:54.775807",
                "178956970 years 7 mons",
                "-178956970 years -8 mons",
                "-2147483648 days",
                "infinity",
                "-infinity",
            ],
        );
        assert_eq!(
            dec(&PgType::Interval, "-1 days +02:03:04.000005"),
            Value::Interval(Interval { months: 0, days: -1, micros: 7_384_000_005 })
        );
        // PostgreSQL 17 calls every field at its maximum infinity; earlier versions print it out.
        assert_eq!(
            dec(&PgType::Interval, "178956970 years 7 mons 2147483647 days 2562047788:00:54.775807"),
            Value::Interval(INTERVAL_INFINITY)
        );
        assert_eq!(
            dec(&PgType::Interval, "-178956970 years -8 mons"),
            Value::Interval(Interval { months: i32::MIN, days: 0, micros: 0 })
        );
        // PostgreSQL prints i64::MIN microseconds in a clock form it cannot read; we read it and
        // print a form it can.
        let min = Interval { months: 1, days: 0, micros: i64::MIN };
        assert_eq!(dec(&PgType::Interval, "1 mon -2562047788:00:54.775808"), Value::Interval(min));
        let printed = enc(&PgType::Interval, &Value::Interval(min));
        assert_eq!(printed, "1 mon -9223372036854775808 microseconds");
        assert_eq!(dec(&PgType::Interval, &printed), Value::Interval(min));
        assert_eq!(
            dec(&PgType::Interval, "1 hour 2 mins -3 secs"),
            Value::Interval(Interval { months: 0, days: 0, micros: 3_717_000_000 })
        );
        bad(
            &PgType::Interval,
            &["", "1", "1 fortnight", "178956971 years", "2562047788:00:54.775808", "1:60:00", "x:00:00", "1 day x"],
        );
    }

    #[test]
    fn uuids_print_lowercase_hyphenated() {
        round_trip(&PgType::Uuid, &["00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"]);
        let u = dec(&PgType::Uuid, "{A0EEBC99-9C0B4EF8-BB6D6BB9-BD380A11}");
        assert_eq!(enc(&PgType::Uuid, &u), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
        bad(
            &PgType::Uuid,
            &[
                "",
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
                "-a0eebc999c0b4ef8bb6d6bb9bd380a11",
                "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
                "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            ],
        );
    }

    #[test]
    fn arrays_quote_what_array_in_would_misread() {
        let text = arr(PgType::Text, 25);
        round_trip(&text, &[r#"{"a\"b","c,d",NULL,"","NULL","x y","a\\b","{}",plain}"#, "{}", r#"{"null"}"#]);
        assert_eq!(
            dec(&text, r#"{"a\"b","c,d",NULL,"","NULL"}"#),
            Value::List(vec![
                Value::Text("a\"b".into()),
                Value::Text("c,d".into()),
                Value::Null,
                Value::Text("".into()),
                Value::Text("NULL".into()),
            ])
        );
        assert_eq!(
            dec(&text, r#"{ "a" , b c , a\,b , \ x }"#),
            Value::List(vec![
                Value::Text("a".into()),
                Value::Text("b c".into()),
                Value::Text("a,b".into()),
                Value::Text(" x".into()),
            ])
        );
        let int4 = arr(PgType::Int4, 23);
        round_trip(&int4, &["{1,NULL,-3}", "{{1,2},{3,4}}", "{{{1},{2}}}", "{}"]);
        assert_eq!(
            dec(&int4, "{{1,2},{3,4}}"),
            Value::List(vec![
                Value::List(vec![Value::Int(1), Value::Int(2)]),
                Value::List(vec![Value::Int(3), Value::Int(4)])
            ])
        );
    }

    #[test]
    fn array_elements_decode_with_the_element_type() {
        round_trip(&arr(PgType::Float8, 701), &["{1.5,Infinity,NaN,-0}"]);
        round_trip(&arr(PgType::Numeric, 1700), &["{NaN,2.50,-Infinity}"]);
        round_trip(&arr(PgType::Bool, 16), &["{t,f,NULL}"]);
        round_trip(&arr(PgType::TimestampTz, 1184), &[r#"{"2020-01-01 00:00:00+00",infinity}"#]);
        round_trip(&arr(PgType::Enum, 90000), &["{happy,sad}"]);
        round_trip(&arr(PgType::Bytea, 17), &[r#"{"\\x00ff","\\x"}"#]);
        round_trip(&arr(PgType::Interval, 1186), &[r#"{"-1 days +02:00:00",00:00:00}"#]);
        round_trip(&arr(PgType::Json, 114), &[r#"{"{\"a\": 1}","[1, 2]"}"#]);
        round_trip(&arr(PgType::Uuid, 2950), &["{00000000-0000-0000-0000-000000000000}"]);
        assert_eq!(dec(&arr(PgType::Bool, 16), "{t,f}"), Value::List(vec![Value::Bool(true), Value::Bool(false)]));
    }

    #[test]
    fn arrays_with_other_bounds_are_kept_as_their_literal() {
        let int4 = arr(PgType::Int4, 23);
        for s in ["[0:2]={1,2,3}", "[0:1][1:2]={{1,2},{3,4}}", "[-5:-4]={NULL,1}"] {
            assert_eq!(dec(&int4, s), Value::Other(s.into()));
            assert_eq!(enc(&int4, &Value::Other(s.into())), s);
        }
        assert_eq!(dec(&int4, "[1:3]={1,2,3}"), dec(&int4, "{1,2,3}"), "bounds of 1 are the default");
    }

    #[test]
    fn malformed_arrays_are_errors() {
        let int4 = arr(PgType::Int4, 23);
        bad(
            &int4,
            &[
                "",
                "{",
                "}",
                "{1,",
                "{1,}",
                "{,1}",
                "{1 2}",
                "{1}x",
                "{\"1}",
                "{a}",
                "[0:2]",
                "[0:2]{1}",
                "[x:2]={1}",
                "{{{{{{{1}}}}}}}",
                "{1\\",
                "{1,{2}x}",
            ],
        );
        bad(&arr(PgType::Text, 25), &["{a\"b}", "{a{b}"]);
    }

    #[test]
    fn array_encoding_rejects_ragged_lists_and_renders_nested_ones() {
        let int4 = arr(PgType::Int4, 23);
        let ragged = Value::List(vec![Value::List(vec![Value::Int(1)]), Value::List(vec![])]);
        assert!(encode_text(&int4, &ragged, &mut BytesMut::new()).is_err());
        let bad_elem = Value::List(vec![Value::Int(1 << 40)]);
        assert!(encode_text(&int4, &bad_elem, &mut BytesMut::new()).is_err());
        let empty_inner = Value::List(vec![Value::List(vec![]), Value::List(vec![])]);
        assert_eq!(enc(&int4, &empty_inner), "{}");
        let other = Value::List(vec![Value::Other("a b".into()), Value::Other("c".into())]);
        assert_eq!(enc(&arr(PgType::Other, 600), &other), r#"{"a b",c}"#);
    }

    #[test]
    fn bounded_array_rendering_matches_postgres() {
        let list = [Value::Int(1), Value::Null, Value::Int(3)];
        let t = render_bounded_array(&PgType::Int4, &[(0, 3)], &list).unwrap();
        assert_eq!(t.as_str(), "[0:2]={1,NULL,3}");
        let rows = [Value::List(vec![Value::Text("a b".into())]), Value::List(vec![Value::Text("c".into())])];
        let t = render_bounded_array(&PgType::Text, &[(-1, 2), (5, 1)], &rows).unwrap();
        assert_eq!(t.as_str(), r#"[-1:0][5:5]={{"a b"},{c}}"#);
    }

    #[test]
    fn values_of_the_wrong_kind_are_errors_naming_both() {
        for (ty, v) in [
            (PgType::Bool, Value::Int(1)),
            (PgType::Date, Value::Timestamp(Timestamp::from_micros(0))),
            (PgType::Int4, Value::Null),
            (PgType::Bytea, Value::Text("x".into())),
            (arr(PgType::Int4, 23), Value::Int(1)),
        ] {
            let e = encode_text(&ty, &v, &mut BytesMut::new()).unwrap_err().to_string();
            assert!(e.contains(&ty.to_string()), "{e}");
        }
        let e = encode_text(
            &PgType::TimeTz,
            &Value::TimeTz(TimeTz { time: Time(0), offset_secs: 16 * 3600 }),
            &mut BytesMut::new(),
        );
        assert!(e.is_err());
    }

    #[test]
    fn other_values_are_written_verbatim_for_any_type() {
        for ty in [PgType::Int4, PgType::Timestamp, arr(PgType::Int4, 23), PgType::Other] {
            assert_eq!(enc(&ty, &Value::Other("whatever it was".into())), "whatever it was");
        }
    }

    #[test]
    fn bad_array_elements_report_the_element() {
        let e = decode_text(&arr(PgType::Date, 1082), Bytes::from_static(b"{2020-01-01,2020-02-30}")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("date") && msg.contains("2020-02-30"), "{msg}");
    }

    #[test]
    fn random_garbage_never_panics() {
        let types = [
            PgType::Bool,
            PgType::Int8,
            PgType::Float4,
            PgType::Numeric,
            PgType::Bytea,
            PgType::Date,
            PgType::TimeTz,
            PgType::TimestampTz,
            PgType::Interval,
            PgType::Uuid,
            arr(PgType::Text, 25),
            arr(arr(PgType::Interval, 1186), 1187),
        ];
        let alphabet = b"0123456789-+:. {}\",\\[]=NULLBCinfty:xaeZ";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 24) as usize;
            let s: Vec<u8> =
                (0..len).map(|i| alphabet[((seed >> (i % 8 * 8)) as usize + i) % alphabet.len()]).collect();
            for ty in &types {
                let _ = decode_text(ty, Bytes::from(s.clone()));
            }
        }
    }

    #[test]
    fn the_canonical_timestamp_fast_path_agrees_with_the_general_parser() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut checked = 0;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Years 1..9999, any microsecond, sometimes a whole second.
            let days = (seed % 3_652_059) as i64 - 719_162;
            let micros =
                if seed % 5 == 0 { (seed % 86_400) as i64 * 1_000_000 } else { (seed >> 20) as i64 % 86_400_000_000 };
            let t = Timestamp::from_date_time(days, micros);
            for (with_zone, v) in [(false, Value::Timestamp(t)), (true, Value::TimestampTz(t))] {
                let ty = if with_zone { PgType::TimestampTz } else { PgType::Timestamp };
                let mut out = BytesMut::new();
                encode_text(&ty, &v, &mut out).unwrap();
                let fast = canonical_timestamp(&out, with_zone);
                assert_eq!(fast, parse_timestamp_any(&out, with_zone).ok(), "{}", String::from_utf8_lossy(&out));
                checked += usize::from(fast.is_some());
            }
        }
        assert!(checked > 39_000, "the fast path should take nearly every canonical value, took {checked}");
        for odd in [&b"2020-01-01 00:00:00+05:30"[..], b"0001-01-01 00:00:00 BC", b"infinity", b"2020-13-01 00:00:00"] {
            assert_eq!(canonical_timestamp(odd, true), None, "{}", String::from_utf8_lossy(odd));
        }
    }
}
