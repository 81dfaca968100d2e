//! Row images of rows events → typed values, straight from the binlog's binary form.
//!
//! Each column is read by its real type and table-map metadata (see `binlog::TableMap`); the
//! mapping to logical types is the table in `docs/types.md`. Nothing goes through text except
//! what is text: character columns (converted from latin1 where needed) and decimals, whose
//! packed digits become the core's decimal text.

use std::sync::Arc;

use bytes::Bytes;
use sluice_core::{DataType, Date, Decimal, Interval, Text, Timestamp, Value};

use crate::binlog::{bit, ty, MapColumn, Reader};

/// How a character column's bytes become a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charset {
    /// UTF-8 (utf8mb4, utf8mb3, ascii): checked, kept as is
    Utf8,
    /// latin1: MySQL's is Windows-1252
    Latin1,
    /// binary: bytes, never text
    Binary,
    /// Another character set Sluice does not convert (named)
    Other(String),
}

impl Charset {
    /// The charset of a character set name as `information_schema` spells it.
    pub fn from_name(name: &str) -> Charset {
        match name {
            "utf8mb4" | "utf8mb3" | "utf8" | "ascii" => Charset::Utf8,
            "latin1" => Charset::Latin1,
            "binary" => Charset::Binary,
            other => Charset::Other(other.to_string()),
        }
    }
}

/// What a zero or partial date (`0000-00-00`, `2024-00-10`) becomes: MySQL accepts them
/// under a permissive `sql_mode`, no other system has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZeroDates {
    /// NULL (date and time columns are then nullable in targets)
    #[default]
    Null,
    /// This date (at midnight for datetime and timestamp columns)
    Sentinel(Date),
}

/// Everything needed to read and type one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnPlan {
    /// Real type code
    pub ty: u8,
    /// Table-map metadata
    pub meta: u16,
    /// Unsigned integer or decimal
    pub unsigned: bool,
    /// Character columns: how bytes become text
    pub charset: Charset,
    /// ENUM and SET labels, in definition order
    pub labels: Option<Arc<Vec<Text>>>,
    /// A MariaDB `JSON` column (LONGTEXT with a JSON check): text that is a JSON document
    pub json_text: bool,
    /// `BINARY(n)`: its length in bytes (MariaDB strips trailing zero bytes in the binlog)
    pub fixed_binary: Option<usize>,
}

impl ColumnPlan {
    /// The plan from a table map's column; `charset` resolves its collation id.
    pub fn from_map(c: &MapColumn, charset: Charset) -> ColumnPlan {
        let labels = c.labels.as_ref().map(|l| Arc::new(l.iter().map(|s| Text::from(s.as_str())).collect()));
        let fixed_binary = (c.ty == ty::STRING && charset == Charset::Binary).then_some(c.meta as usize);
        ColumnPlan { ty: c.ty, meta: c.meta, unsigned: c.unsigned, charset, labels, json_text: false, fixed_binary }
    }

    /// The logical type of the column.
    pub fn data_type(&self) -> DataType {
        let u = self.unsigned;
        match self.ty {
            ty::TINY if u => DataType::UInt8,
            ty::TINY => DataType::Int8,
            ty::SHORT if u => DataType::UInt16,
            ty::SHORT => DataType::Int16,
            ty::INT24 | ty::LONG if u => DataType::UInt32,
            ty::INT24 | ty::LONG => DataType::Int32,
            ty::LONGLONG if u => DataType::UInt64,
            ty::LONGLONG => DataType::Int64,
            ty::YEAR => DataType::Int16,
            ty::FLOAT => DataType::Float32,
            ty::DOUBLE => DataType::Float64,
            ty::NEWDECIMAL | ty::DECIMAL => DataType::Decimal,
            ty::DATE | ty::NEWDATE => DataType::Date,
            ty::DATETIME | ty::DATETIME2 => DataType::Timestamp,
            ty::TIMESTAMP | ty::TIMESTAMP2 => DataType::TimestampTz,
            ty::TIME | ty::TIME2 => DataType::Interval,
            ty::BIT if self.meta == 1 => DataType::Bool,
            ty::BIT => DataType::Bytes,
            ty::ENUM => DataType::Enum {
                labels: self.labels.as_ref().map(|l| l.iter().map(|t| t.to_string()).collect()).unwrap_or_default(),
            },
            ty::SET => DataType::Text,
            ty::JSON => DataType::Json,
            ty::GEOMETRY => DataType::Bytes,
            ty::STRING | ty::VARCHAR | ty::VAR_STRING | ty::BLOB | ty::TINY_BLOB | ty::MEDIUM_BLOB | ty::LONG_BLOB => {
                match &self.charset {
                    Charset::Binary => DataType::Bytes,
                    _ if self.json_text => DataType::Json,
                    _ => DataType::Text,
                }
            }
            _ => DataType::Other,
        }
    }

    /// Decimals: (precision, scale); temporal types: (fractional digits, none).
    pub fn precision_scale(&self) -> (Option<u32>, Option<u32>) {
        match self.ty {
            ty::NEWDECIMAL => (Some((self.meta >> 8) as u32), Some((self.meta & 0xff) as u32)),
            ty::DATETIME2 | ty::TIMESTAMP2 | ty::TIME2 => (Some(self.meta as u32), None),
            ty::DATETIME | ty::TIMESTAMP | ty::TIME => (Some(0), None),
            _ => (None, None),
        }
    }

    /// Whether zero dates can appear in the column.
    pub fn is_date_like(&self) -> bool {
        matches!(self.ty, ty::DATE | ty::NEWDATE | ty::DATETIME | ty::DATETIME2 | ty::TIMESTAMP | ty::TIMESTAMP2)
    }
}

/// Reads one row image: the null bitmap over the `present` columns, then their values. Columns
/// not in the image (a `binlog_row_image` other than FULL) are `absent`.
pub fn read_image(
    r: &mut Reader<'_>,
    plans: &[ColumnPlan],
    present: &[u8],
    absent: &Value,
    zero: ZeroDates,
) -> Result<Vec<Value>, String> {
    let n_present = (0..plans.len()).filter(|&i| bit(present, i)).count();
    let nulls = r.take(n_present.div_ceil(8), "row null bitmap").map_err(|e| e.0)?;
    let mut row = Vec::with_capacity(plans.len());
    let mut k = 0;
    for (i, p) in plans.iter().enumerate() {
        if !bit(present, i) {
            row.push(absent.clone());
            continue;
        }
        let is_null = bit(nulls, k);
        k += 1;
        if is_null {
            row.push(Value::Null);
            continue;
        }
        row.push(read_value(r, p, zero)?);
    }
    Ok(row)
}

fn take<'a>(r: &mut Reader<'a>, n: usize) -> Result<&'a [u8], String> {
    r.take(n, "a column value").map_err(|e| e.0)
}

fn uint(r: &mut Reader<'_>, n: usize) -> Result<u64, String> {
    Ok(crate::binlog::le(take(r, n)?))
}

fn sign_extend(v: u64, bytes: usize) -> i64 {
    let shift = 64 - 8 * bytes as u32;
    ((v << shift) as i64) >> shift
}

/// Reads one non-NULL value.
pub fn read_value(r: &mut Reader<'_>, p: &ColumnPlan, zero: ZeroDates) -> Result<Value, String> {
    let int = |r: &mut Reader<'_>, n: usize| -> Result<Value, String> {
        let v = uint(r, n)?;
        Ok(if p.unsigned { Value::UInt(v) } else { Value::Int(sign_extend(v, n)) })
    };
    Ok(match p.ty {
        ty::TINY => int(r, 1)?,
        ty::SHORT => int(r, 2)?,
        ty::INT24 => int(r, 3)?,
        ty::LONG => int(r, 4)?,
        ty::LONGLONG => int(r, 8)?,
        ty::YEAR => match uint(r, 1)? {
            0 => Value::Int(0),
            y => Value::Int(1900 + y as i64),
        },
        ty::FLOAT => Value::Float32(f32::from_bits(uint(r, 4)? as u32)),
        ty::DOUBLE => Value::Float64(f64::from_bits(uint(r, 8)?)),
        ty::NEWDECIMAL => {
            let (precision, scale) = ((p.meta >> 8) as usize, (p.meta & 0xff) as usize);
            let (d, used) = decimal_binary(r.rest(), precision, scale)?;
            take(r, used)?;
            Value::Decimal(d)
        }
        ty::DATE | ty::NEWDATE => {
            let v = uint(r, 3)?;
            date_value((v >> 9) as i64, ((v >> 5) & 15) as u32, (v & 31) as u32, zero, DATE_ONLY)
        }
        ty::DATETIME2 => {
            let int = be_uint(take(r, 5)?) as i64 - 0x80_0000_0000;
            let frac = fraction(r, p.meta)?;
            let ymd = int >> 17;
            let ym = ymd >> 5;
            let hms = int % (1 << 17);
            let micros = ((hms >> 12) * 3600 + ((hms >> 6) % 64) * 60 + hms % 64) * 1_000_000 + frac;
            date_value(ym / 13, (ym % 13) as u32, (ymd % 32) as u32, zero, micros).map_ts()
        }
        ty::DATETIME => {
            let v = uint(r, 8)?;
            let (d, t) = (v / 1_000_000, v % 1_000_000);
            let micros = ((t / 10_000) * 3600 + (t / 100 % 100) * 60 + t % 100) as i64 * 1_000_000;
            date_value((d / 10_000) as i64, (d / 100 % 100) as u32, (d % 100) as u32, zero, micros).map_ts()
        }
        ty::TIMESTAMP2 => {
            let secs = be_uint(take(r, 4)?) as i64;
            let frac = fraction(r, p.meta)?;
            timestamp_value(secs, frac, zero)
        }
        ty::TIMESTAMP => timestamp_value(uint(r, 4)? as i64, 0, zero),
        ty::TIME2 => Value::Interval(Interval { months: 0, days: 0, micros: time2(r, p.meta)? }),
        ty::TIME => {
            let v = sign_extend(uint(r, 3)?, 3);
            let a = v.unsigned_abs() as i64;
            let micros = ((a / 10_000) * 3600 + (a / 100 % 100) * 60 + a % 100) * 1_000_000;
            Value::Interval(Interval { months: 0, days: 0, micros: if v < 0 { -micros } else { micros } })
        }
        ty::BIT => {
            let bytes = (p.meta >> 8) as usize + usize::from(p.meta & 0xff != 0);
            let b = take(r, bytes)?;
            if p.meta == 1 {
                Value::Bool(b[0] & 1 != 0)
            } else {
                Value::Bytes(Bytes::copy_from_slice(b))
            }
        }
        ty::ENUM => {
            let i = uint(r, p.meta as usize)? as usize;
            label(p, i)?
        }
        ty::SET => {
            let bits = uint(r, p.meta as usize)?;
            let labels = p.labels.as_ref().ok_or("a SET column without its labels (binlog_row_metadata=FULL)")?;
            let mut s = String::new();
            for (i, l) in labels.iter().enumerate() {
                if bits & (1 << i) != 0 {
                    if !s.is_empty() {
                        s.push(',');
                    }
                    s.push_str(l);
                }
            }
            Value::Text(Text::from(s))
        }
        ty::VARCHAR | ty::VAR_STRING | ty::STRING => {
            let n = uint(r, if p.meta < 256 { 1 } else { 2 })? as usize;
            chars(r.take_bytes(n, "a column value").map_err(|e| e.0)?, p)?
        }
        ty::BLOB | ty::TINY_BLOB | ty::MEDIUM_BLOB | ty::LONG_BLOB => {
            let n = uint(r, p.meta as usize)? as usize;
            chars(r.take_bytes(n, "a column value").map_err(|e| e.0)?, p)?
        }
        ty::JSON => {
            let n = uint(r, p.meta as usize)? as usize;
            Value::Json(Text::from(crate::jsonb::to_text(take(r, n)?)?))
        }
        ty::GEOMETRY => {
            // MySQL's internal form: a 4-byte SRID, then WKB.
            let n = uint(r, p.meta as usize)? as usize;
            let b = take(r, n)?;
            Value::Bytes(Bytes::copy_from_slice(b.get(4..).ok_or("geometry value shorter than its SRID")?))
        }
        t => return Err(format!("column type {t} is not supported")),
    })
}

trait MapTs {
    fn map_ts(self) -> Value;
}

impl MapTs for Value {
    /// A date value read for a datetime column becomes a timestamp (sentinels included).
    fn map_ts(self) -> Value {
        match self {
            Value::TimestampTz(t) => Value::Timestamp(t),
            v => v,
        }
    }
}

/// `micros` for a date column's value.
const DATE_ONLY: i64 = i64::MIN;

/// A date (with `micros` into the day): a datetime or date value, or the zero-date policy's.
/// Dates come back as `Value::Date` when `micros` is [`DATE_ONLY`]; datetime callers turn the `TimestampTz` this returns into a `Timestamp`.
fn date_value(year: i64, month: u32, day: u32, zero: ZeroDates, micros: i64) -> Value {
    let date = Date::from_ymd(year, month, day);
    let date = match (date, zero) {
        (Some(d), _) => d,
        (None, ZeroDates::Null) => return Value::Null,
        (None, ZeroDates::Sentinel(d)) => {
            return if micros == DATE_ONLY {
                Value::Date(d)
            } else {
                Value::TimestampTz(Timestamp::from_date_time(d.0 as i64, 0))
            }
        }
    };
    if micros == DATE_ONLY {
        Value::Date(date)
    } else {
        Value::TimestampTz(Timestamp::from_date_time(date.0 as i64, micros))
    }
}

fn timestamp_value(secs: i64, frac: i64, zero: ZeroDates) -> Value {
    if secs == 0 && frac == 0 {
        // '0000-00-00 00:00:00', the zero TIMESTAMP
        return match zero {
            ZeroDates::Null => Value::Null,
            ZeroDates::Sentinel(d) => Value::TimestampTz(Timestamp::from_date_time(d.0 as i64, 0)),
        };
    }
    Value::TimestampTz(Timestamp::from_micros(secs * 1_000_000 + frac))
}

fn be_uint(b: &[u8]) -> u64 {
    crate::binlog::be(b)
}

/// The fractional seconds of a temporal2 value, in microseconds.
fn fraction(r: &mut Reader<'_>, fsp: u16) -> Result<i64, String> {
    Ok(match fsp {
        1 | 2 => be_uint(take(r, 1)?) as i64 * 10_000,
        3 | 4 => be_uint(take(r, 2)?) as i64 * 100,
        5 | 6 => be_uint(take(r, 3)?) as i64,
        _ => 0,
    })
}

/// TIME2: signed, may pass 24 h (−838:59:59 to 838:59:59), in microseconds.
fn time2(r: &mut Reader<'_>, fsp: u16) -> Result<i64, String> {
    let packed: i64 = match fsp {
        1 | 2 => {
            let mut int = be_uint(take(r, 3)?) as i64 - 0x80_0000;
            let mut frac = be_uint(take(r, 1)?) as i64;
            if int < 0 && frac != 0 {
                int += 1;
                frac -= 0x100;
            }
            (int << 24) + frac * 10_000
        }
        3 | 4 => {
            let mut int = be_uint(take(r, 3)?) as i64 - 0x80_0000;
            let mut frac = be_uint(take(r, 2)?) as i64;
            if int < 0 && frac != 0 {
                int += 1;
                frac -= 0x10000;
            }
            (int << 24) + frac * 100
        }
        5 | 6 => be_uint(take(r, 6)?) as i64 - 0x8000_0000_0000,
        _ => (be_uint(take(r, 3)?) as i64 - 0x80_0000) << 24,
    };
    Ok(time_from_packed(packed))
}

/// A packed time (`(hh<<12 | mm<<6 | ss) << 24 | microseconds`, negated when negative) in
/// microseconds.
pub fn time_from_packed(packed: i64) -> i64 {
    let neg = packed < 0;
    let p = packed.unsigned_abs() as i64;
    let hms = p >> 24;
    let micros = ((hms >> 12) % (1 << 10) * 3600 + ((hms >> 6) % 64) * 60 + hms % 64) * 1_000_000 + p % (1 << 24);
    if neg {
        -micros
    } else {
        micros
    }
}

fn label(p: &ColumnPlan, i: usize) -> Result<Value, String> {
    if i == 0 {
        // The "invalid value" MySQL stores for a bad ENUM under a permissive sql_mode.
        return Ok(Value::Enum(Text::from_static("")));
    }
    let labels = p.labels.as_ref().ok_or("an ENUM column without its labels (binlog_row_metadata=FULL)")?;
    labels
        .get(i - 1)
        .map(|l| Value::Enum(l.clone()))
        .ok_or_else(|| format!("ENUM index {i} beyond its {} labels", labels.len()))
}

fn chars(b: Bytes, p: &ColumnPlan) -> Result<Value, String> {
    let text = |t: Text| if p.json_text { Value::Json(t) } else { Value::Text(t) };
    Ok(match &p.charset {
        Charset::Binary => match p.fixed_binary {
            Some(n) if b.len() < n => {
                let mut v = b.to_vec();
                v.resize(n, 0);
                Value::Bytes(Bytes::from(v))
            }
            _ => Value::Bytes(b),
        },
        Charset::Utf8 => text(Text::from_utf8(b).map_err(|e| e.0)?),
        Charset::Latin1 => text(Text::from(cp1252(&b))),
        Charset::Other(name) => {
            return Err(format!(
                "character set {name} is not supported; convert the column to utf8mb4 (ALTER TABLE .. CONVERT TO CHARACTER SET utf8mb4)"
            ))
        }
    })
}

/// MySQL's latin1 is Windows-1252, with the five code points 1252 leaves undefined mapped to
/// the C1 controls of the same number.
pub fn cp1252(b: &[u8]) -> String {
    const HIGH: [char; 32] = [
        '\u{20AC}', '\u{0081}', '\u{201A}', '\u{0192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}', '\u{02C6}',
        '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\u{008D}', '\u{017D}', '\u{008F}', '\u{0090}', '\u{2018}',
        '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}', '\u{02DC}', '\u{2122}', '\u{0161}',
        '\u{203A}', '\u{0153}', '\u{009D}', '\u{017E}', '\u{0178}',
    ];
    b.iter()
        .map(|&c| match c {
            0x80..=0x9f => HIGH[(c - 0x80) as usize],
            c => c as char,
        })
        .collect()
}

/// MySQL's packed binary decimal of `precision` digits, `scale` after the point: the value and
/// the bytes it took.
pub fn decimal_binary(b: &[u8], precision: usize, scale: usize) -> Result<(Decimal, usize), String> {
    const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
    if scale > precision || precision > 81 {
        return Err(format!("invalid decimal precision {precision} and scale {scale}"));
    }
    let intg = precision - scale;
    let (intg0, intg0x, frac0, frac0x) = (intg / 9, intg % 9, scale / 9, scale % 9);
    let size = intg0 * 4 + DIG2BYTES[intg0x] + frac0 * 4 + DIG2BYTES[frac0x];
    let raw = b.get(..size).ok_or("decimal value truncated")?;
    if raw.is_empty() {
        return Ok((Decimal::from_parts(false, "0", ""), 0));
    }
    let negative = raw[0] & 0x80 == 0;
    let mask = if negative { 0xff } else { 0 };
    let mut buf: Vec<u8> = raw.iter().map(|x| x ^ mask).collect();
    buf[0] ^= 0x80;
    let mut at = 0;
    let mut group = |n: usize, digits: usize, out: &mut String| {
        let v = be_uint(&buf[at..at + n]);
        at += n;
        out.push_str(&format!("{v:0digits$}"));
    };
    let mut int = String::with_capacity(intg + 1);
    if intg0x > 0 {
        group(DIG2BYTES[intg0x], intg0x, &mut int);
    }
    for _ in 0..intg0 {
        group(4, 9, &mut int);
    }
    let mut frac = String::with_capacity(scale);
    for _ in 0..frac0 {
        group(4, 9, &mut frac);
    }
    if frac0x > 0 {
        group(DIG2BYTES[frac0x], frac0x, &mut frac);
    }
    if int.len() > intg || frac.len() > scale {
        return Err(format!("decimal value does not fit decimal({precision},{scale})"));
    }
    Ok((Decimal::from_parts(negative, &int, &frac), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(t: u8, meta: u16) -> ColumnPlan {
        ColumnPlan {
            ty: t,
            meta,
            unsigned: false,
            charset: Charset::Utf8,
            labels: None,
            json_text: false,
            fixed_binary: None,
        }
    }

    fn read(p: &ColumnPlan, b: &[u8]) -> Value {
        let mut r = Reader::new(b);
        let v = read_value(&mut r, p, ZeroDates::Null).unwrap();
        assert!(r.rest().is_empty(), "{p:?} left {:?}", r.rest());
        v
    }

    #[test]
    fn decimals_from_the_documented_example() {
        // MySQL's decimal.c example: 1234567890.1234 as decimal(14,4) is 81 0D FB 38 D2 04 D2
        let (d, n) = decimal_binary(&[0x81, 0x0D, 0xFB, 0x38, 0xD2, 0x04, 0xD2], 14, 4).unwrap();
        assert_eq!((d.as_str(), n), ("1234567890.1234", 7));
        // The same negative: every byte inverted.
        let neg: Vec<u8> = [0x81u8, 0x0D, 0xFB, 0x38, 0xD2, 0x04, 0xD2].iter().map(|b| !b).collect();
        assert_eq!(decimal_binary(&neg, 14, 4).unwrap().0.as_str(), "-1234567890.1234");
        // 65 digits, all nines, scale 30
        let p = 65;
        let s = 30;
        let digits = format!("{}.{}", "9".repeat(35), "9".repeat(30));
        let bytes = encode_decimal(&digits, p, s);
        assert_eq!(decimal_binary(&bytes, p, s).unwrap().0.as_str(), digits);
        assert_eq!(decimal_binary(&encode_decimal("0.00", 5, 2), 5, 2).unwrap().0.as_str(), "0.00");
        assert!(decimal_binary(&[0x80], 14, 4).is_err());
    }

    /// The inverse of `decimal_binary`, for tests (non-negative values only).
    fn encode_decimal(text: &str, precision: usize, scale: usize) -> Vec<u8> {
        const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
        let (i, f) = text.split_once('.').unwrap_or((text, ""));
        let intg = precision - scale;
        let i = format!("{i:0>intg$}");
        let f = format!("{f:0<scale$}");
        let mut out = Vec::new();
        let mut push = |digits: &str| {
            let n = DIG2BYTES[digits.len().min(9)];
            let v: u64 = digits.parse().unwrap();
            out.extend_from_slice(&v.to_be_bytes()[8 - n..]);
        };
        let head = intg % 9;
        if head > 0 {
            push(&i[..head]);
        }
        for c in i.as_bytes()[head..].chunks(9) {
            push(std::str::from_utf8(c).unwrap());
        }
        for c in f.as_bytes().chunks(9) {
            push(std::str::from_utf8(c).unwrap());
        }
        out[0] ^= 0x80;
        out
    }

    #[test]
    fn integers_signed_and_unsigned_at_their_limits() {
        assert_eq!(read(&plan(ty::TINY, 0), &[0x80]), Value::Int(-128));
        assert_eq!(read(&plan(ty::INT24, 0), &[0xff, 0xff, 0x7f]), Value::Int(8_388_607));
        assert_eq!(read(&plan(ty::INT24, 0), &[0x00, 0x00, 0x80]), Value::Int(-8_388_608));
        assert_eq!(read(&plan(ty::LONGLONG, 0), &i64::MIN.to_le_bytes()), Value::Int(i64::MIN));
        let mut u = plan(ty::LONGLONG, 0);
        u.unsigned = true;
        assert_eq!(read(&u, &u64::MAX.to_le_bytes()), Value::UInt(u64::MAX));
        assert_eq!(u.data_type(), DataType::UInt64);
        assert_eq!(read(&plan(ty::YEAR, 0), &[155]), Value::Int(2055));
    }

    #[test]
    fn temporal_values() {
        // DATETIME2(6) 2024-02-29 13:14:15.123456: int part per the documented bit layout
        let ym = 2024 * 13 + 2;
        let int: u64 = (((ym << 5) | 29) << 17) | (13 << 12) | (14 << 6) | 15;
        let mut b = (int + 0x80_0000_0000).to_be_bytes()[3..].to_vec();
        b.extend_from_slice(&123_456u32.to_be_bytes()[1..]);
        let v = read(&plan(ty::DATETIME2, 6), &b);
        assert_eq!(v.to_string_for_test(), "2024-02-29T13:14:15.123456");
        // DATE 0000-00-00 and 2024-00-10 under both policies
        let zero = [0u8, 0, 0];
        assert_eq!(read(&plan(ty::DATE, 0), &zero), Value::Null);
        let d = (2024u32 << 9) | 10;
        let d = d.to_le_bytes();
        let mut r = Reader::new(&d[..3]);
        let sentinel = Date::from_ymd(1970, 1, 1).unwrap();
        let v = read_value(&mut r, &plan(ty::DATE, 0), ZeroDates::Sentinel(sentinel)).unwrap();
        assert_eq!(v, Value::Date(sentinel));
        // TIMESTAMP2(3) 1.5 s after the epoch
        let mut b = 1u32.to_be_bytes().to_vec();
        b.extend_from_slice(&5000u16.to_be_bytes()); // stored in units of 100 µs
        assert_eq!(read(&plan(ty::TIMESTAMP2, 3), &b), Value::TimestampTz(Timestamp::from_micros(1_500_000)));
        assert_eq!(read(&plan(ty::TIMESTAMP2, 0), &[0, 0, 0, 0]), Value::Null);
    }

    #[test]
    fn times_negative_and_past_a_day() {
        let enc = |neg: bool, h: i64, m: i64, s: i64, us: i64| -> Vec<u8> {
            // TIME2(6): the 6-byte packed form plus the offset
            let packed = (((h << 12) | (m << 6) | s) << 24) + us;
            let packed = if neg { -packed } else { packed };
            ((packed + 0x8000_0000_0000) as u64).to_be_bytes()[2..].to_vec()
        };
        let micros = |v: Value| match v {
            Value::Interval(i) => i.micros,
            v => panic!("{v:?}"),
        };
        assert_eq!(micros(read(&plan(ty::TIME2, 6), &enc(false, 838, 59, 59, 0))), 3_020_399_000_000);
        assert_eq!(micros(read(&plan(ty::TIME2, 6), &enc(true, 838, 59, 59, 0))), -3_020_399_000_000);
        assert_eq!(micros(read(&plan(ty::TIME2, 6), &enc(true, 0, 0, 1, 500_000))), -1_500_000);
        // TIME2(0): 3 bytes; -00:00:01
        let v = ((-(1i64 << 24) >> 24) + 0x80_0000) as u32;
        assert_eq!(micros(read(&plan(ty::TIME2, 0), &v.to_be_bytes()[1..])), -1_000_000);
        // TIME2(2) -00:00:00.01: int -1 with fraction 0xff (MySQL's borrow form)
        let int = (-1i64 + 0x80_0000) as u32;
        let mut b = int.to_be_bytes()[1..].to_vec();
        b.push(0xff);
        assert_eq!(micros(read(&plan(ty::TIME2, 2), &b)), -10_000);
    }

    #[test]
    fn strings_bits_enums_and_sets() {
        let mut latin = plan(ty::VARCHAR, 20);
        latin.charset = Charset::Latin1;
        assert_eq!(read(&latin, &[3, b'a', 0x80, 0xe9]), Value::Text(Text::from("a€é")));
        let mut bin = plan(ty::STRING, 4);
        bin.charset = Charset::Binary;
        bin.fixed_binary = Some(4);
        assert_eq!(read(&bin, &[1, 7]), Value::Bytes(Bytes::from_static(&[7, 0, 0, 0])));
        assert_eq!(read(&plan(ty::BIT, 1), &[1]), Value::Bool(true));
        // BIT(64): 8 bytes, big-endian as stored
        assert_eq!(read(&plan(ty::BIT, 8 << 8), &[0xff; 8]), Value::Bytes(Bytes::from_static(&[0xff; 8])));
        let mut e = plan(ty::ENUM, 1);
        e.labels = Some(Arc::new(vec![Text::from("small"), Text::from("large")]));
        assert_eq!(read(&e, &[2]), Value::Enum(Text::from("large")));
        assert_eq!(read(&e, &[0]), Value::Enum(Text::from("")));
        let mut s = plan(ty::SET, 1);
        s.labels = Some(Arc::new(vec![Text::from("a"), Text::from("b"), Text::from("c")]));
        assert_eq!(read(&s, &[0b101]), Value::Text(Text::from("a,c")));
        let bad = plan(ty::VARCHAR, 20);
        assert!(read_value(&mut Reader::new(&[2, 0xff, 0xfe]), &bad, ZeroDates::Null).is_err());
    }

    #[test]
    fn images_with_nulls_and_absent_columns() {
        let plans = vec![plan(ty::LONG, 0), plan(ty::VARCHAR, 10), plan(ty::TINY, 0)];
        // columns 0 and 1 present; column 1 NULL
        let b = [0b10, 5, 0, 0, 0];
        let mut r = Reader::new(&b);
        let row = read_image(&mut r, &plans, &[0b011], &Value::Unchanged, ZeroDates::Null).unwrap();
        assert_eq!(row, vec![Value::Int(5), Value::Null, Value::Unchanged]);
        assert!(r.rest().is_empty());
    }

    trait ForTest {
        fn to_string_for_test(&self) -> String;
    }
    impl ForTest for Value {
        fn to_string_for_test(&self) -> String {
            match self {
                Value::Timestamp(t) | Value::TimestampTz(t) => t.to_string(),
                v => format!("{v:?}"),
            }
        }
    }
}
