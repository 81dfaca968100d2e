//! The binary format: PostgreSQL's `typsend`/`typrecv` (binary COPY, binary parameters,
//! pgoutput's binary mode). Big-endian throughout; dates and timestamps count from
//! 2000-01-01, with the type's minimum and maximum reserved for ±infinity.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use sluice_core::{Date, Decimal, DecimalKind, Interval, Text, Time, TimeTz, Timestamp, Uuid, Value, MICROS_PER_DAY};

use super::text::{check_offset, check_time, render_bounded_array};
use super::{
    array_dims, decimal_value, f32_value, f64_value, int_value, nest, text_value, utf8, CodecError, Format, PgType,
    Problem, MAX_ARRAY_DIMS, PG_EPOCH_DAYS, TZ_LIMIT_SECS,
};

/// The sign word of a binary numeric.
const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;
/// Display scale is 14 bits (`NUMERIC_DSCALE_MASK`).
const NUMERIC_MAX_DSCALE: usize = 0x3FFF;
/// Numeric digits are base 10000: four decimal digits each.
const NBASE: u16 = 10_000;
const DEC_DIGITS: usize = 4;

/// The only jsonb binary format version there is.
const JSONB_VERSION: u8 = 1;

/// Decodes one value in its `typsend` form (without the 4-byte length prefix).
///
/// Bytea, text-like values and array elements share `raw` instead of copying it. Arrays whose
/// lower bounds are not all 1 come back as [`Value::Other`] holding PostgreSQL's text form with
/// the bounds, so nothing is lost.
pub fn decode_binary(ty: &PgType, raw: Bytes) -> Result<Value, CodecError> {
    let result = match ty {
        PgType::Bytea => return Ok(Value::Bytes(raw)),
        PgType::Array { elem, elem_oid } => return decode_array(ty, elem, *elem_oid, raw),
        PgType::Bool => fixed::<1>(&raw).map(|[b]| Value::Bool(b != 0)),
        PgType::Int2 => fixed(&raw).map(|b| Value::Int(i16::from_be_bytes(b).into())),
        PgType::Int4 => fixed(&raw).map(|b| Value::Int(i32::from_be_bytes(b).into())),
        PgType::Int8 => fixed(&raw).map(|b| Value::Int(i64::from_be_bytes(b))),
        PgType::Float4 => fixed(&raw).map(|b| Value::Float32(f32::from_be_bytes(b))),
        PgType::Float8 => fixed(&raw).map(|b| Value::Float64(f64::from_be_bytes(b))),
        PgType::Numeric => decode_numeric(&raw).map(Value::Decimal),
        PgType::Text => utf8(raw.clone()).map(Value::Text),
        PgType::Json => utf8(raw.clone()).map(Value::Json),
        PgType::Jsonb => decode_jsonb(&raw).map(Value::Json),
        PgType::Enum => utf8(raw.clone()).map(Value::Enum),
        PgType::Date => fixed(&raw).and_then(|b| decode_date(i32::from_be_bytes(b))).map(Value::Date),
        PgType::Time => fixed(&raw).and_then(|b| decode_time(i64::from_be_bytes(b))).map(Value::Time),
        PgType::TimeTz => fixed(&raw).and_then(decode_timetz).map(Value::TimeTz),
        PgType::Timestamp => fixed(&raw).map(|b| Value::Timestamp(decode_timestamp(i64::from_be_bytes(b)))),
        PgType::TimestampTz => fixed(&raw).map(|b| Value::TimestampTz(decode_timestamp(i64::from_be_bytes(b)))),
        PgType::Interval => fixed(&raw).map(|b| Value::Interval(decode_interval(b))),
        PgType::Uuid => fixed(&raw).map(|b| Value::Uuid(Uuid(b))),
        PgType::Other => Err(Problem::from("an uninterpreted type has no binary form; read it as text")),
    };
    result.map_err(|p| CodecError::decode(ty, Format::Binary, &raw, p))
}

/// Appends the binary (`typsend`) form of `v`, without the 4-byte length prefix.
///
/// [`Value::Other`] carries only a text form and is an error here; such values go through
/// [`super::encode_text`].
pub fn encode_binary(ty: &PgType, v: &Value, out: &mut BytesMut) -> Result<(), CodecError> {
    match (ty, v) {
        (_, Value::Other(_)) | (PgType::Other, _) => {
            return Err(CodecError::encode(ty, v, Problem::from("only a text form exists; encode it as text")))
        }
        (PgType::Bool, Value::Bool(b)) => out.put_u8(u8::from(*b)),
        (PgType::Int2, _) => out.put_i16(int_value(ty, v)? as i16),
        (PgType::Int4, _) => out.put_i32(int_value(ty, v)? as i32),
        (PgType::Int8, _) => out.put_i64(int_value(ty, v)?),
        (PgType::Float4, _) => out.put_f32(f32_value(ty, v)?),
        (PgType::Float8, _) => out.put_f64(f64_value(ty, v)?),
        (PgType::Numeric, _) => {
            encode_numeric(&*decimal_value(ty, v)?, out).map_err(|p| CodecError::encode(ty, v, p))?
        }
        (PgType::Text | PgType::Json | PgType::Enum, _) => out.put_slice(text_value(ty, v)?.as_bytes()),
        (PgType::Jsonb, _) => {
            let t = text_value(ty, v)?;
            out.put_u8(JSONB_VERSION);
            out.put_slice(t.as_bytes());
        }
        (PgType::Bytea, Value::Bytes(b)) => out.put_slice(b),
        (PgType::Date, Value::Date(d)) => out.put_i32(encode_date(*d).map_err(|p| CodecError::encode(ty, v, p))?),
        (PgType::Time, Value::Time(t)) => out.put_i64(check_time(ty, v, *t)?),
        (PgType::TimeTz, Value::TimeTz(t)) => {
            out.put_i64(check_time(ty, v, t.time)?);
            // The wire counts seconds west of UTC; the checked offset cannot overflow when negated.
            out.put_i32(-check_offset(ty, v, t.offset_secs)?);
        }
        (PgType::Timestamp, Value::Timestamp(t)) | (PgType::TimestampTz, Value::TimestampTz(t)) => {
            out.put_i64(encode_timestamp(*t).map_err(|p| CodecError::encode(ty, v, p))?)
        }
        (PgType::Interval, Value::Interval(i)) => {
            out.put_i64(i.micros);
            out.put_i32(i.days);
            out.put_i32(i.months);
        }
        (PgType::Uuid, Value::Uuid(u)) => out.put_slice(&u.0),
        (PgType::Array { elem, elem_oid }, Value::List(list)) => encode_array(ty, elem, *elem_oid, v, list, out)?,
        _ => return Err(CodecError::mismatch(ty, v)),
    }
    Ok(())
}

/// Exactly `N` bytes.
fn fixed<const N: usize>(raw: &[u8]) -> Result<[u8; N], Problem> {
    raw.try_into().map_err(|_| Problem::from(format!("expected {N} bytes, got {}", raw.len())))
}

fn decode_jsonb(raw: &Bytes) -> Result<Text, Problem> {
    match raw.first() {
        Some(&JSONB_VERSION) => utf8(raw.slice(1..)),
        Some(v) => Err(Problem::from(format!("unknown jsonb format version {v}"))),
        None => Err(Problem::from("empty jsonb (no version byte)")),
    }
}

/// Days since 2000-01-01 to days since 1970-01-01.
fn decode_date(pg_days: i32) -> Result<Date, Problem> {
    match pg_days {
        i32::MAX => Ok(Date::INFINITY),
        i32::MIN => Ok(Date::NEG_INFINITY),
        d => {
            let unix = i64::from(d) + PG_EPOCH_DAYS;
            // Past i32::MAX - 10957 the shifted day would reach the infinity marker or beyond.
            match i32::try_from(unix) {
                Ok(u) if u != i32::MAX => Ok(Date(u)),
                _ => Err(Problem::from("date out of range")),
            }
        }
    }
}

fn encode_date(d: Date) -> Result<i32, Problem> {
    match d {
        Date::INFINITY => Ok(i32::MAX),
        Date::NEG_INFINITY => Ok(i32::MIN),
        Date(unix) => match i32::try_from(i64::from(unix) - PG_EPOCH_DAYS) {
            Ok(pg) if pg != i32::MIN => Ok(pg),
            _ => Err(Problem::from("date out of PostgreSQL's range")),
        },
    }
}

fn decode_time(micros: i64) -> Result<Time, Problem> {
    if (0..=MICROS_PER_DAY).contains(&micros) {
        Ok(Time(micros))
    } else {
        Err(Problem::from("time of day outside 00:00:00 to 24:00:00"))
    }
}

/// 8 bytes of microseconds and 4 of zone, in seconds west of UTC.
fn decode_timetz(b: [u8; 12]) -> Result<TimeTz, Problem> {
    let (time, zone) = b.split_at(8);
    let time = decode_time(i64::from_be_bytes(fixed(time)?))?;
    let zone = i32::from_be_bytes(fixed(zone)?);
    if zone.unsigned_abs() >= TZ_LIMIT_SECS.unsigned_abs() {
        return Err(Problem::from("zone offset beyond ±15:59:59"));
    }
    Ok(TimeTz { time, offset_secs: -zone })
}

/// Microseconds since 2000-01-01, split into days and time of day so that PostgreSQL's whole
/// range fits (its latest timestamps are past `i64` microseconds since 1970).
fn decode_timestamp(pg_micros: i64) -> Timestamp {
    match pg_micros {
        i64::MAX => Timestamp::INFINITY,
        i64::MIN => Timestamp::NEG_INFINITY,
        us => Timestamp::from_date_time(us.div_euclid(MICROS_PER_DAY) + PG_EPOCH_DAYS, us.rem_euclid(MICROS_PER_DAY)),
    }
}

/// Microseconds since 2000-01-01; sub-microsecond digits are dropped.
fn encode_timestamp(t: Timestamp) -> Result<i64, Problem> {
    match t {
        Timestamp::INFINITY => return Ok(i64::MAX),
        Timestamp::NEG_INFINITY => return Ok(i64::MIN),
        _ => {}
    }
    let (days, micros) = t.date_time();
    (days - PG_EPOCH_DAYS)
        .checked_mul(MICROS_PER_DAY)
        .and_then(|us| us.checked_add(micros))
        .filter(|&us| us != i64::MIN && us != i64::MAX)
        .ok_or_else(|| Problem::from("timestamp out of PostgreSQL's range"))
}

/// 8 bytes of microseconds, 4 of days, 4 of months.
fn decode_interval(b: [u8; 16]) -> Interval {
    let mut b = &b[..];
    Interval { micros: b.get_i64(), days: b.get_i32(), months: b.get_i32() }
}

/// `ndigits, weight, sign, dscale` then `ndigits` base-10000 digits, the first worth
/// 10000^weight. Exactly `dscale` fraction digits are kept, so `2.50` stays `2.50`.
fn decode_numeric(raw: &[u8]) -> Result<Decimal, Problem> {
    let header: [u8; 8] =
        raw.get(..8).and_then(|h| h.try_into().ok()).ok_or("shorter than the 8-byte numeric header")?;
    let word = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    let (ndigits, weight, sign, dscale) = (word(0) as i16, i32::from(word(2) as i16), word(4), usize::from(word(6)));
    match sign {
        NUMERIC_NAN => return Ok(Decimal::NAN),
        NUMERIC_PINF => return Ok(Decimal::INFINITY),
        NUMERIC_NINF => return Ok(Decimal::NEG_INFINITY),
        NUMERIC_POS | NUMERIC_NEG => {}
        _ => return Err(Problem::from(format!("invalid numeric sign word {sign:#06x}"))),
    }
    if dscale > NUMERIC_MAX_DSCALE {
        return Err(Problem::from("numeric display scale above 16383"));
    }
    let body = &raw[8..];
    let ndigits = usize::try_from(ndigits).map_err(|_| "negative numeric digit count")?;
    if body.len() != 2 * ndigits {
        return Err(Problem::from(format!("{ndigits} numeric digits announced, {} bytes follow", body.len())));
    }
    if body.chunks_exact(2).any(|d| u16::from_be_bytes([d[0], d[1]]) >= NBASE) {
        return Err(Problem::from("numeric digit above 9999"));
    }
    // The digit worth 10000^(weight - i) sits at index i; missing ones are zero.
    let digit_at = |i: i32| {
        let at = usize::try_from(i).ok().filter(|&i| i < ndigits).map(|i| 2 * i);
        at.map_or(0, |at| u16::from_be_bytes([body[at], body[at + 1]]))
    };
    let int_groups = usize::try_from(weight + 1).unwrap_or(0);
    let frac_groups = dscale.div_ceil(DEC_DIGITS);
    let mut s = String::with_capacity(2 + DEC_DIGITS * (int_groups + frac_groups));
    if sign == NUMERIC_NEG {
        s.push('-');
    }
    if int_groups == 0 {
        s.push('0');
    }
    for i in 0..int_groups as i32 {
        let d = digit_at(i);
        push_group(&mut s, d);
        if i == 0 {
            // The leading group prints without its zero padding (but 0 stays "0").
            let group_at = s.len() - DEC_DIGITS;
            let pad = s[group_at..].bytes().take(DEC_DIGITS - 1).take_while(|&b| b == b'0').count();
            s.replace_range(group_at..group_at + pad, "");
        }
    }
    if dscale > 0 {
        s.push('.');
        let point = s.len();
        for k in 1..=frac_groups as i32 {
            push_group(&mut s, digit_at(weight + k));
        }
        s.truncate(point + dscale);
    }
    // Already canonical unless the sender left leading zeros or a negative zero; parsing fixes both.
    Decimal::from_text(Text::from(s)).map_err(|e| Problem::value("numeric digits do not form a number", e))
}

/// Four decimal digits, zero-padded.
fn push_group(s: &mut String, d: u16) {
    let bytes = [d / 1000, d / 100 % 10, d / 10 % 10, d % 10].map(|x| char::from(b'0' + x as u8));
    s.extend(bytes);
}

/// The base-10000 form of a decimal: integer digits grouped leftwards from the point, fraction
/// digits rightwards, leading and trailing zero groups dropped as PostgreSQL does, the scale
/// kept in `dscale`.
fn encode_numeric(d: &Decimal, out: &mut BytesMut) -> Result<(), Problem> {
    let sign = match d.kind() {
        DecimalKind::NaN => NUMERIC_NAN,
        DecimalKind::Infinity => NUMERIC_PINF,
        DecimalKind::NegInfinity => NUMERIC_NINF,
        DecimalKind::Finite if d.is_negative() => NUMERIC_NEG,
        DecimalKind::Finite => NUMERIC_POS,
    };
    if matches!(sign, NUMERIC_NAN | NUMERIC_PINF | NUMERIC_NINF) {
        out.put_slice(&[0, 0, 0, 0]);
        out.put_u16(sign);
        out.put_u16(0);
        return Ok(());
    }
    let (int, frac) = d.digits();
    let int = int.trim_start_matches('0').as_bytes();
    let frac = frac.as_bytes();
    if frac.len() > NUMERIC_MAX_DSCALE {
        return Err(Problem::from("more than 16383 digits after the point"));
    }
    let header_at = out.len();
    out.put_slice(&[0; 8]);
    let mut ndigits = 0usize;
    let mut trailing_zeros = 0usize;
    let mut weight = int.len().div_ceil(DEC_DIGITS) as i64 - 1;
    // The first integer group holds what is left over after whole groups of four.
    let lead = match int.len() % DEC_DIGITS {
        0 => DEC_DIGITS,
        n => n,
    };
    let int_groups =
        std::iter::once(&int[..lead.min(int.len())]).chain(int.get(lead..).unwrap_or_default().chunks(DEC_DIGITS));
    let frac_groups = frac.chunks(DEC_DIGITS);
    for (is_frac, group) in
        int_groups.filter(|g| !g.is_empty()).map(|g| (false, g)).chain(frac_groups.map(|g| (true, g)))
    {
        // A fraction's last group is padded on the right: `.5` is 5000 ten-thousandths.
        let pad = if is_frac { DEC_DIGITS - group.len() } else { 0 };
        let value = group.iter().fold(0u16, |acc, &b| acc * 10 + u16::from(b - b'0')) * 10u16.pow(pad as u32);
        if ndigits == 0 && value == 0 {
            // A leading zero group only moves the point.
            weight -= 1;
            continue;
        }
        out.put_u16(value);
        ndigits += 1;
        trailing_zeros = if value == 0 { trailing_zeros + 1 } else { 0 };
    }
    out.truncate(out.len() - 2 * trailing_zeros);
    ndigits -= trailing_zeros;
    if ndigits == 0 {
        weight = 0;
    }
    let ndigits = i16::try_from(ndigits).map_err(|_| "too many digits for a numeric")?;
    let weight = i16::try_from(weight).map_err(|_| "numeric exponent out of range")?;
    let header = &mut out[header_at..header_at + 8];
    header[0..2].copy_from_slice(&ndigits.to_be_bytes());
    header[2..4].copy_from_slice(&weight.to_be_bytes());
    header[4..6].copy_from_slice(&sign.to_be_bytes());
    header[6..8].copy_from_slice(&(frac.len() as u16).to_be_bytes());
    Ok(())
}

fn take_i32(b: &mut Bytes) -> Result<i32, Problem> {
    if b.len() < 4 {
        return Err(Problem::from("array ends inside a 4-byte field"));
    }
    Ok(b.get_i32())
}

/// `ndim, has_nulls, elem_oid`, `(length, lower bound)` per dimension, then each element as a
/// length (-1 for NULL) and its bytes, in row-major order.
fn decode_array(ty: &PgType, elem: &PgType, elem_oid: u32, raw: Bytes) -> Result<Value, CodecError> {
    let fail = |p: Problem| CodecError::decode(ty, Format::Binary, &raw, p);
    let mut b = raw.clone();
    let ndim = take_i32(&mut b).map_err(fail)?;
    let flags = take_i32(&mut b).map_err(fail)?;
    let oid = take_i32(&mut b).map_err(fail)? as u32;
    let ndim = usize::try_from(ndim)
        .ok()
        .filter(|&n| n <= MAX_ARRAY_DIMS)
        .ok_or_else(|| fail("bad dimension count".into()))?;
    if flags != 0 && flags != 1 {
        return Err(fail("bad has-nulls flag".into()));
    }
    if oid != elem_oid {
        return Err(fail(format!("element type OID {oid}, expected {elem_oid}").into()));
    }
    let mut bounds = Vec::with_capacity(ndim);
    for _ in 0..ndim {
        let len =
            usize::try_from(take_i32(&mut b).map_err(fail)?).map_err(|_| fail("negative dimension length".into()))?;
        let lower = take_i32(&mut b).map_err(fail)?;
        bounds.push((lower, len));
    }
    // Every element takes at least its 4-byte length, which bounds what a bad header can allocate.
    let total = match ndim {
        0 => 0,
        _ => bounds
            .iter()
            .try_fold(1usize, |n, &(_, len)| n.checked_mul(len))
            .filter(|&n| n <= b.len() / 4)
            .ok_or_else(|| fail("more elements announced than bytes follow".into()))?,
    };
    let mut items = Vec::with_capacity(total);
    for _ in 0..total {
        let len = take_i32(&mut b).map_err(fail)?;
        if len == -1 {
            items.push(Value::Null);
            continue;
        }
        let len = usize::try_from(len)
            .ok()
            .filter(|&n| n <= b.len())
            .ok_or_else(|| fail("element length past the end".into()))?;
        items.push(decode_binary(elem, b.split_to(len))?);
    }
    if !b.is_empty() {
        return Err(fail("bytes after the last element".into()));
    }
    if total == 0 {
        return Ok(Value::List(Vec::new()));
    }
    let dims: Vec<usize> = bounds.iter().map(|&(_, len)| len).collect();
    let list = nest(&mut items.into_iter(), &dims);
    if bounds.iter().all(|&(lower, _)| lower == 1) {
        return Ok(Value::List(list));
    }
    // The bounds are part of the value and a List cannot hold them: keep PostgreSQL's text form.
    render_bounded_array(elem, &bounds, &list).map(Value::Other)
}

/// Writes a rectangular nested list with lower bounds of 1; an empty one has no dimensions.
fn encode_array(
    ty: &PgType,
    elem: &PgType,
    elem_oid: u32,
    v: &Value,
    list: &[Value],
    out: &mut BytesMut,
) -> Result<(), CodecError> {
    let dims = array_dims(list).map_err(|p| CodecError::encode(ty, v, p))?;
    out.put_i32(dims.len() as i32);
    let flag_at = out.len();
    out.put_i32(0);
    out.put_u32(elem_oid);
    for &len in &dims {
        let len = i32::try_from(len).map_err(|_| CodecError::encode(ty, v, Problem::from("too many elements")))?;
        out.put_i32(len);
        out.put_i32(1);
    }
    if dims.is_empty() {
        return Ok(());
    }
    let mut has_nulls = false;
    put_elements(elem, list, out, &mut has_nulls)?;
    if has_nulls {
        out[flag_at..flag_at + 4].copy_from_slice(&1i32.to_be_bytes());
    }
    Ok(())
}

/// Each leaf as its length and bytes, row-major.
fn put_elements(elem: &PgType, list: &[Value], out: &mut BytesMut, has_nulls: &mut bool) -> Result<(), CodecError> {
    for v in list {
        match v {
            Value::List(inner) => put_elements(elem, inner, out, has_nulls)?,
            Value::Null => {
                *has_nulls = true;
                out.put_i32(-1);
            }
            v => {
                let len_at = out.len();
                out.put_i32(0);
                encode_binary(elem, v, out)?;
                let len = i32::try_from(out.len() - len_at - 4)
                    .map_err(|_| CodecError::encode(elem, v, Problem::from("element longer than 2 GiB")))?;
                out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_text, encode_text};
    use sluice_core::days_from_civil;

    fn arr(elem: PgType, elem_oid: u32) -> PgType {
        PgType::Array { elem: Box::new(elem), elem_oid }
    }

    fn hex(s: &str) -> Bytes {
        let s: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        Bytes::from(
            s.chunks(2)
                .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("ascii"), 16).expect("hex literal"))
                .collect::<Vec<u8>>(),
        )
    }

    fn dec(ty: &PgType, raw: Bytes) -> Value {
        decode_binary(ty, raw.clone()).unwrap_or_else(|e| panic!("decoding {raw:?}: {e}"))
    }

    fn enc(ty: &PgType, v: &Value) -> Bytes {
        let mut out = BytesMut::new();
        encode_binary(ty, v, &mut out).unwrap_or_else(|e| panic!("encoding {v:?}: {e}"));
        out.freeze()
    }

    fn text_value_of(ty: &PgType, s: &str) -> Value {
        decode_text(ty, Bytes::copy_from_slice(s.as_bytes())).unwrap_or_else(|e| panic!("decoding {s:?}: {e}"))
    }

    /// The binary form decodes to the same value as the text form, and encodes back to the same
    /// bytes; the value's text encoding is the text form.
    fn agree(ty: &PgType, text: &str, binary: Bytes) {
        let from_binary = dec(ty, binary.clone());
        let from_text = text_value_of(ty, text);
        assert_eq!(from_binary, from_text, "{ty}: binary {binary:?} and text {text:?} disagree");
        assert_eq!(enc(ty, &from_binary), binary, "{ty}: {text:?} does not encode back to the same bytes");
        let mut t = BytesMut::new();
        encode_text(ty, &from_binary, &mut t).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::str::from_utf8(&t).unwrap_or_default(), text, "{ty}: text encoding");
    }

    /// Every strict prefix of a valid binary value is an error, not a panic.
    fn truncations_fail(ty: &PgType, binary: &[u8]) {
        for n in 0..binary.len() {
            let r = decode_binary(ty, Bytes::copy_from_slice(&binary[..n]));
            assert!(r.is_err(), "{ty}: {n}-byte prefix of {binary:02x?} decoded to {r:?}");
        }
    }

    #[test]
    fn fixed_width_scalars_agree_with_text_at_their_limits() {
        agree(&PgType::Bool, "t", hex("01"));
        agree(&PgType::Bool, "f", hex("00"));
        agree(&PgType::Int2, "-32768", hex("8000"));
        agree(&PgType::Int2, "32767", hex("7fff"));
        agree(&PgType::Int4, "-2147483648", hex("80000000"));
        agree(&PgType::Int4, "2147483647", hex("7fffffff"));
        agree(&PgType::Int8, "-9223372036854775808", hex("8000000000000000"));
        agree(&PgType::Int8, "9223372036854775807", hex("7fffffffffffffff"));
        agree(&PgType::Float4, "NaN", hex("7fc00000"));
        agree(&PgType::Float4, "-Infinity", hex("ff800000"));
        agree(&PgType::Float4, "-0", hex("80000000"));
        agree(&PgType::Float4, "3.4028235e+38", hex("7f7fffff"));
        agree(&PgType::Float4, "1.1754944e-38", hex("00800000"));
        agree(&PgType::Float8, "NaN", hex("7ff8000000000000"));
        agree(&PgType::Float8, "Infinity", hex("7ff0000000000000"));
        agree(&PgType::Float8, "-0", hex("8000000000000000"));
        agree(&PgType::Float8, "5e-324", hex("0000000000000001"));
        agree(&PgType::Float8, "1.7976931348623157e+308", hex("7fefffffffffffff"));
        agree(&PgType::Uuid, "00000000-0000-0000-0000-000000000000", hex(&"00".repeat(16)));
        agree(&PgType::Uuid, "ffffffff-ffff-ffff-ffff-ffffffffffff", hex(&"ff".repeat(16)));
        for ty in [PgType::Bool, PgType::Int2, PgType::Int4, PgType::Int8, PgType::Float4, PgType::Float8, PgType::Uuid]
        {
            truncations_fail(
                &ty,
                &[0u8; 16][..match ty {
                    PgType::Bool => 1,
                    PgType::Int2 => 2,
                    PgType::Int4 | PgType::Float4 => 4,
                    PgType::Uuid => 16,
                    _ => 8,
                }],
            );
        }
        assert!(decode_binary(&PgType::Int4, hex("0000000000")).is_err(), "too long is wrong too");
    }

    #[test]
    fn numerics_keep_their_scale_in_base_10000() {
        // Byte strings as PostgreSQL 15's numeric_send prints them.
        agree(&PgType::Numeric, "2.50", hex("0002 0000 0000 0002 0002 1388"));
        agree(&PgType::Numeric, "0.00000000000000000001", hex("0001 fffb 0000 0014 0001"));
        agree(
            &PgType::Numeric,
            "-99999999999999999999.99999999999999999999",
            hex("000a 0004 4000 0014 270f 270f 270f 270f 270f 270f 270f 270f 270f 270f"),
        );
        agree(
            &PgType::Numeric,
            "12345678901234567890123456789",
            hex("0008 0007 0000 0000 0001 0929 1a85 007b 11d7 22c5 0929 1a85"),
        );
        agree(&PgType::Numeric, "0", hex("0000 0000 0000 0000"));
        agree(&PgType::Numeric, "0.000", hex("0000 0000 0000 0003"));
        agree(&PgType::Numeric, "10000", hex("0001 0001 0000 0000 0001"));
        agree(&PgType::Numeric, "0.00001", hex("0001 fffe 0000 0005 03e8"));
        agree(&PgType::Numeric, "NaN", hex("0000 0000 c000 0000"));
        agree(&PgType::Numeric, "Infinity", hex("0000 0000 d000 0000"));
        agree(&PgType::Numeric, "-Infinity", hex("0000 0000 f000 0000"));
        // PostgreSQL sends -Infinity with stray dscale bits; they mean nothing.
        assert_eq!(dec(&PgType::Numeric, hex("0000 0000 f000 0020")), Value::Decimal(Decimal::NEG_INFINITY));
        for s in ["1", "-1", "9999", "10000.0001", "123.45", "0.5", "-0.0001", "100000000", "1e-20", "31415.92653589"] {
            let v = text_value_of(&PgType::Numeric, s);
            assert_eq!(dec(&PgType::Numeric, enc(&PgType::Numeric, &v)), v, "{s}");
        }
        let big = format!("{}.{}", "9".repeat(1000), "1".repeat(1000));
        let v = text_value_of(&PgType::Numeric, &big);
        assert_eq!(dec(&PgType::Numeric, enc(&PgType::Numeric, &v)), v);
        assert_eq!(enc(&PgType::Numeric, &Value::Int(-20000)), hex("0001 0001 4000 0000 0002"));
        truncations_fail(&PgType::Numeric, &hex("0002 0000 0000 0002 0002 1388"));
        for bad in ["0001 0000 0000 0000 2710", "ffff 0000 0000 0000", "0000 0000 1234 0000", "0000 0000 0000 4000"] {
            assert!(decode_binary(&PgType::Numeric, hex(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn text_like_values_share_the_buffer() {
        let raw = Bytes::from_static(b"{\"a\":1,  \"a\" : 2}");
        for ty in [PgType::Text, PgType::Json, PgType::Enum] {
            let v = dec(&ty, raw.clone());
            assert_eq!(v.as_str().map(str::as_ptr), Some(raw.as_ptr()), "{ty} copied");
            assert_eq!(enc(&ty, &v), raw);
        }
        let jsonb = hex("017b2261223a20317d");
        let v = dec(&PgType::Jsonb, jsonb.clone());
        assert_eq!(v, text_value_of(&PgType::Jsonb, "{\"a\": 1}"));
        assert_eq!(enc(&PgType::Jsonb, &v), jsonb);
        assert!(decode_binary(&PgType::Jsonb, hex("02 7b7d")).is_err());
        assert!(decode_binary(&PgType::Jsonb, Bytes::new()).is_err());
        assert!(decode_binary(&PgType::Text, hex("61ff")).is_err());
        agree(&PgType::Bytea, "\\x00ff", hex("00ff"));
        agree(&PgType::Bytea, "\\x", Bytes::new());
        assert!(decode_binary(&PgType::Other, hex("00")).is_err());
        assert!(encode_binary(&PgType::Text, &Value::Other("x".into()), &mut BytesMut::new()).is_err());
        assert!(encode_binary(&PgType::Other, &Value::Text("x".into()), &mut BytesMut::new()).is_err());
    }

    #[test]
    fn dates_and_times_count_from_2000_with_infinities_reserved() {
        agree(&PgType::Date, "2000-01-01", hex("00000000"));
        agree(&PgType::Date, "2000-01-02", hex("00000001"));
        agree(&PgType::Date, "infinity", hex("7fffffff"));
        agree(&PgType::Date, "-infinity", hex("80000000"));
        let bc = (days_from_civil(-4712, 1, 1) - PG_EPOCH_DAYS) as i32;
        agree(&PgType::Date, "4713-01-01 BC", Bytes::copy_from_slice(&bc.to_be_bytes()));
        let max = (days_from_civil(5874897, 12, 31) - PG_EPOCH_DAYS) as i32;
        agree(&PgType::Date, "5874897-12-31", Bytes::copy_from_slice(&max.to_be_bytes()));
        assert!(decode_binary(&PgType::Date, Bytes::copy_from_slice(&(i32::MAX - 1).to_be_bytes())).is_err());
        assert!(encode_binary(&PgType::Date, &Value::Date(Date(i32::MIN + 1)), &mut BytesMut::new()).is_err());

        agree(&PgType::Time, "00:00:00", hex("0000000000000000"));
        agree(&PgType::Time, "00:00:00.000001", hex("0000000000000001"));
        agree(&PgType::Time, "24:00:00", Bytes::copy_from_slice(&MICROS_PER_DAY.to_be_bytes()));
        assert!(decode_binary(&PgType::Time, Bytes::copy_from_slice(&(MICROS_PER_DAY + 1).to_be_bytes())).is_err());
        assert!(decode_binary(&PgType::Time, hex("ffffffffffffffff")).is_err());

        // As timetz_send prints 01:02:03-08: zone 28800 seconds west.
        agree(&PgType::TimeTz, "01:02:03-08", hex("00000000dde878c0 00007080"));
        let west = -(15 * 3600 + 59 * 60);
        let mut b = BytesMut::new();
        b.put_i64(0);
        b.put_i32(west);
        agree(&PgType::TimeTz, "00:00:00+15:59", b.freeze());
        let mut b = BytesMut::new();
        b.put_i64(MICROS_PER_DAY - 1);
        b.put_i32(-west);
        agree(&PgType::TimeTz, "23:59:59.999999-15:59", b.freeze());
        assert!(decode_binary(&PgType::TimeTz, hex("0000000000000000 0000e100")).is_err(), "16 hours");
        assert!(decode_binary(&PgType::TimeTz, hex("0000000000000000 80000000")).is_err());
        truncations_fail(&PgType::TimeTz, &hex("00000000dde878c0 00007080"));
        truncations_fail(&PgType::Date, &hex("00000001"));
    }

    #[test]
    fn timestamps_reach_both_ends_of_postgres_range() {
        agree(&PgType::Timestamp, "2000-01-01 00:00:00", hex("0000000000000000"));
        agree(&PgType::Timestamp, "2000-01-01 00:00:00.000001", hex("0000000000000001"));
        agree(&PgType::Timestamp, "infinity", hex("7fffffffffffffff"));
        agree(&PgType::Timestamp, "-infinity", hex("8000000000000000"));
        agree(&PgType::TimestampTz, "-infinity", hex("8000000000000000"));
        let pg = |y, m, d, us: i64| (days_from_civil(y, m, d) - PG_EPOCH_DAYS) * MICROS_PER_DAY + us;
        let max = pg(294276, 12, 31, MICROS_PER_DAY - 1);
        agree(&PgType::Timestamp, "294276-12-31 23:59:59.999999", Bytes::copy_from_slice(&max.to_be_bytes()));
        let min = pg(-4712, 1, 1, 0);
        agree(&PgType::Timestamp, "4713-01-01 00:00:00 BC", Bytes::copy_from_slice(&min.to_be_bytes()));
        agree(&PgType::TimestampTz, "4713-01-01 00:00:00+00 BC", Bytes::copy_from_slice(&min.to_be_bytes()));
        let y2020 = pg(2020, 1, 1, 0);
        agree(&PgType::TimestampTz, "2020-01-01 00:00:00+00", Bytes::copy_from_slice(&y2020.to_be_bytes()));
        let before = pg(1969, 12, 31, MICROS_PER_DAY - 500_000);
        agree(&PgType::TimestampTz, "1969-12-31 23:59:59.5+00", Bytes::copy_from_slice(&before.to_be_bytes()));
        // Sub-microsecond digits are truncated.
        let t = Value::Timestamp(Timestamp::new(946_684_800, 1_999));
        assert_eq!(enc(&PgType::Timestamp, &t), hex("0000000000000001"));
        let far = Value::Timestamp(Timestamp::new(i64::MAX / 2, 0));
        assert!(encode_binary(&PgType::Timestamp, &far, &mut BytesMut::new()).is_err());
        truncations_fail(&PgType::Timestamp, &hex("0000000000000001"));
    }

    #[test]
    fn intervals_keep_three_independent_fields() {
        // As interval_send prints '1 mon -1 days +00:00:01'.
        agree(&PgType::Interval, "1 mon -1 days +00:00:01", hex("00000000000f4240 ffffffff 00000001"));
        let mk = |micros: i64, days: i32, months: i32| {
            let mut b = BytesMut::new();
            b.put_i64(micros);
            b.put_i32(days);
            b.put_i32(months);
            b.freeze()
        };
        agree(&PgType::Interval, "178000000 years", mk(0, 0, 178_000_000 * 12));
        agree(&PgType::Interval, "-178000000 years -3 mons", mk(0, 0, -178_000_000 * 12 - 3));
        agree(&PgType::Interval, "-1 days +02:03:04.000005", mk(7_384_000_005, -1, 0));
        agree(&PgType::Interval, "00:00:00", mk(0, 0, 0));
        agree(&PgType::Interval, "-00:00:00.000001", mk(-1, 0, 0));
        agree(&PgType::Interval, "2562047788:00:54.775807", mk(i64::MAX, 0, 0));
        agree(&PgType::Interval, "-178956970 years -8 mons", mk(0, 0, i32::MIN));
        agree(&PgType::Interval, "1 mon -9223372036854775808 microseconds", mk(i64::MIN, 0, 1));
        agree(&PgType::Interval, "infinity", mk(i64::MAX, i32::MAX, i32::MAX));
        truncations_fail(&PgType::Interval, &mk(1, 2, 3));
    }

    #[test]
    fn arrays_agree_with_text_including_nulls_quotes_and_nesting() {
        // As array_send prints '{{1,NULL},{3,4}}'::int[].
        let int4 = arr(PgType::Int4, 23);
        agree(
            &int4,
            "{{1,NULL},{3,4}}",
            hex("00000002 00000001 00000017 00000002 00000001 00000002 00000001
                 00000004 00000001 ffffffff 00000004 00000003 00000004 00000004"),
        );
        agree(&int4, "{}", hex("00000000 00000000 00000017"));
        let mut b = BytesMut::new();
        b.put_i32(1);
        b.put_i32(1);
        b.put_u32(25);
        b.put_i32(6);
        b.put_i32(1);
        for s in [Some("a\"b"), Some("c,d"), None, Some(""), Some("NULL"), Some("x y")] {
            match s {
                Some(s) => {
                    b.put_i32(s.len() as i32);
                    b.put_slice(s.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
        agree(&arr(PgType::Text, 25), r#"{"a\"b","c,d",NULL,"","NULL","x y"}"#, b.freeze());

        let mut b = BytesMut::new();
        b.put_i32(1);
        b.put_i32(0);
        b.put_u32(701);
        b.put_i32(3);
        b.put_i32(1);
        for f in [f64::INFINITY, f64::NAN, -0.0] {
            b.put_i32(8);
            b.put_f64(f);
        }
        agree(&arr(PgType::Float8, 701), "{Infinity,NaN,-0}", b.freeze());
    }

    #[test]
    fn arrays_with_other_lower_bounds_become_their_text_form() {
        // As array_send prints '[0:2]={1,2,3}'::int[].
        let int4 = arr(PgType::Int4, 23);
        let raw =
            hex("00000001 00000000 00000017 00000003 00000000 00000004 00000001 00000004 00000002 00000004 00000003");
        let v = dec(&int4, raw);
        assert_eq!(v, text_value_of(&int4, "[0:2]={1,2,3}"));
        assert_eq!(v, Value::Other("[0:2]={1,2,3}".into()));

        let mut b = BytesMut::new();
        b.put_i32(2);
        b.put_i32(1);
        b.put_u32(25);
        b.put_slice(&hex("00000002 ffffffff 00000001 00000005"));
        for s in [Some("a b"), None] {
            match s {
                Some(s) => {
                    b.put_i32(s.len() as i32);
                    b.put_slice(s.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
        assert_eq!(dec(&arr(PgType::Text, 25), b.freeze()), Value::Other(r#"[-1:0][5:5]={{"a b"},{NULL}}"#.into()));
    }

    #[test]
    fn malformed_arrays_are_errors() {
        let int4 = arr(PgType::Int4, 23);
        let good = hex("00000001 00000000 00000017 00000002 00000001 00000004 00000001 00000004 00000002");
        truncations_fail(&int4, &good);
        for bad in [
            "00000001 00000000 00000014 00000001 00000001 00000004 00000001", // int8 elements
            "00000007 00000000 00000017",                                     // 7 dimensions
            "ffffffff 00000000 00000017",                                     // negative ndim
            "00000001 00000002 00000017 00000001 00000001 00000004 00000001", // bad flag
            "00000001 00000000 00000017 ffffffff 00000001",                   // negative length
            "00000001 00000000 00000017 7fffffff 00000001 00000004 00000001", // too many elements
            "00000001 00000000 00000017 00000001 00000001 fffffffe",          // element length -2
            "00000001 00000000 00000017 00000001 00000001 00000003 000001",   // wrong element size
            "00000001 00000000 00000017 00000001 00000001 00000004 00000001 00", // trailing byte
            "00000003 00000000 00000017 00010000 00000001 00010000 00000001 00010000 00000001", // 2^48 elements
        ] {
            assert!(decode_binary(&int4, hex(bad)).is_err(), "{bad}");
        }
        let ragged = Value::List(vec![Value::List(vec![Value::Int(1)]), Value::List(vec![])]);
        assert!(encode_binary(&int4, &ragged, &mut BytesMut::new()).is_err());
        let other_elem = Value::List(vec![Value::Other("1".into())]);
        assert!(encode_binary(&int4, &other_elem, &mut BytesMut::new()).is_err());
    }

    #[test]
    fn every_type_round_trips_through_both_formats() {
        let cases: &[(PgType, &str)] = &[
            (PgType::Bool, "t"),
            (PgType::Int2, "-32768"),
            (PgType::Float4, "1.17549435e-38"),
            (PgType::Float8, "-1.5"),
            (PgType::Numeric, "-0.0001"),
            (PgType::Text, "héllo"),
            (PgType::Bytea, "\\xdeadbeef"),
            (PgType::Date, "0001-01-01 BC"),
            (PgType::Time, "12:34:56.789012"),
            (PgType::TimeTz, "01:02:03+05:30:15"),
            (PgType::Timestamp, "1999-12-31 23:59:59.999999"),
            (PgType::TimestampTz, "2020-01-01 00:00:00+05:30"),
            (PgType::Interval, "1 year 2 mons 3 days 04:05:06"),
            (PgType::Uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            (PgType::Json, "{\"a\":1, \"a\":2}"),
            (PgType::Jsonb, "{\"a\": 1}"),
            (PgType::Enum, "happy"),
            (arr(PgType::Enum, 90000), "{happy,NULL,\"so so\"}"),
            (arr(PgType::TimestampTz, 1184), "{\"2020-01-01 00:00:00+00\",infinity,NULL}"),
            (arr(PgType::Numeric, 1700), "{NaN,2.50,-Infinity}"),
            (arr(PgType::Bool, 16), "{{t,f},{NULL,t}}"),
            (arr(PgType::Interval, 1186), "{\"-1 days +02:00:00\"}"),
            (arr(PgType::Bytea, 17), "{\"\\\\x00\"}"),
            (arr(PgType::Jsonb, 3802), "{\"[1, 2]\"}"),
        ];
        for (ty, text) in cases {
            let v = text_value_of(ty, text);
            let binary = enc(ty, &v);
            assert_eq!(dec(ty, binary.clone()), v, "{ty} {text:?} through binary");
            let mut t = BytesMut::new();
            encode_text(ty, &v, &mut t).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(text_value_of(ty, std::str::from_utf8(&t).unwrap_or_default()), v, "{ty} {text:?} through text");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let types = [
            PgType::Numeric,
            PgType::Jsonb,
            PgType::TimeTz,
            PgType::Interval,
            arr(PgType::Int4, 23),
            arr(PgType::Numeric, 1700),
            arr(PgType::Text, 25),
        ];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 40) as usize;
            // Mostly small numbers, so headers look plausible often enough to get past them.
            let bytes: Vec<u8> = (0..len)
                .map(|i| if (seed >> (i % 64)) & 3 == 0 { (seed >> (i % 56)) as u8 } else { (i % 3) as u8 })
                .collect();
            for ty in &types {
                let _ = decode_binary(ty, Bytes::from(bytes.clone()));
            }
        }
    }
}
