//! MySQL's binary JSON (the storage and binlog form of a `JSON` column) to JSON text.
//!
//! Layout (MySQL `json_binary.h`): a type byte, then the value. Objects and arrays come in a
//! small form (2-byte counts and offsets) and a large one (4-byte); they hold an element count,
//! their byte size, key entries (offset, length), value entries (type and an offset, or the
//! value itself when it fits), then the keys and the values. Offsets count from the byte after
//! the type byte. Scalars: literals, integers, doubles, strings (variable-length size prefix)
//! and "opaque" values of another SQL type (decimals, dates and times stored in JSON).

use std::fmt::Write;

use crate::rows::{decimal_binary, time_from_packed};

const SMALL_OBJECT: u8 = 0x00;
const LARGE_OBJECT: u8 = 0x01;
const SMALL_ARRAY: u8 = 0x02;
const LARGE_ARRAY: u8 = 0x03;
const LITERAL: u8 = 0x04;
const INT16: u8 = 0x05;
const UINT16: u8 = 0x06;
const INT32: u8 = 0x07;
const UINT32: u8 = 0x08;
const INT64: u8 = 0x09;
const UINT64: u8 = 0x0a;
const DOUBLE: u8 = 0x0b;
const STRING: u8 = 0x0c;
const OPAQUE: u8 = 0x0f;

/// Deepest nesting accepted (MySQL itself allows 100).
const MAX_DEPTH: usize = 150;

/// The JSON text of a binary JSON document. An empty document is JSON `null` (MySQL writes
/// that for a JSON column set to `'null'` in some versions).
pub fn to_text(doc: &[u8]) -> Result<String, String> {
    let mut out = String::with_capacity(doc.len() + 16);
    if doc.is_empty() {
        out.push_str("null");
        return Ok(out);
    }
    value(doc[0], &doc[1..], &mut out, 0)?;
    Ok(out)
}

fn get(b: &[u8], at: usize, n: usize) -> Result<&[u8], String> {
    at.checked_add(n).and_then(|end| b.get(at..end)).ok_or_else(|| "binary JSON value truncated".to_string())
}

fn uint(b: &[u8], at: usize, n: usize) -> Result<u64, String> {
    Ok(crate::binlog::le(get(b, at, n)?))
}

/// A variable-length size: 7 bits per byte, least significant first.
fn var_len(b: &[u8], at: usize) -> Result<(usize, usize), String> {
    let mut len = 0usize;
    for i in 0..5 {
        let byte = *b.get(at + i).ok_or("binary JSON length truncated")?;
        len |= ((byte & 0x7f) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((len, i + 1));
        }
    }
    Err("binary JSON length too long".into())
}

fn value(t: u8, b: &[u8], out: &mut String, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err("binary JSON nested too deeply".into());
    }
    match t {
        SMALL_OBJECT | LARGE_OBJECT => container(b, t == LARGE_OBJECT, true, out, depth),
        SMALL_ARRAY | LARGE_ARRAY => container(b, t == LARGE_ARRAY, false, out, depth),
        LITERAL => literal(*b.first().ok_or("binary JSON literal truncated")?, out),
        INT16 => {
            let _ = write!(out, "{}", uint(b, 0, 2)? as u16 as i16);
            Ok(())
        }
        UINT16 => {
            let _ = write!(out, "{}", uint(b, 0, 2)?);
            Ok(())
        }
        INT32 => {
            let _ = write!(out, "{}", uint(b, 0, 4)? as u32 as i32);
            Ok(())
        }
        UINT32 => {
            let _ = write!(out, "{}", uint(b, 0, 4)?);
            Ok(())
        }
        INT64 => {
            let _ = write!(out, "{}", uint(b, 0, 8)? as i64);
            Ok(())
        }
        UINT64 => {
            let _ = write!(out, "{}", uint(b, 0, 8)?);
            Ok(())
        }
        DOUBLE => {
            let d = f64::from_bits(uint(b, 0, 8)?);
            let n = serde_json::Number::from_f64(d).ok_or("binary JSON holds a non-finite double")?;
            out.push_str(&n.to_string());
            Ok(())
        }
        STRING => {
            let (len, n) = var_len(b, 0)?;
            let s = std::str::from_utf8(get(b, n, len)?).map_err(|_| "binary JSON string is not UTF-8")?;
            string(s, out);
            Ok(())
        }
        OPAQUE => opaque(b, out),
        t => Err(format!("unknown binary JSON type {t:#04x}")),
    }
}

fn literal(l: u8, out: &mut String) -> Result<(), String> {
    out.push_str(match l {
        0 => "null",
        1 => "true",
        2 => "false",
        l => return Err(format!("unknown binary JSON literal {l}")),
    });
    Ok(())
}

fn string(s: &str, out: &mut String) {
    // serde_json's escaping of a &str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

fn container(b: &[u8], large: bool, object: bool, out: &mut String, depth: usize) -> Result<(), String> {
    let w = if large { 4 } else { 2 };
    let count = uint(b, 0, w)? as usize;
    let size = uint(b, w, w)? as usize;
    let b = get(b, 0, size)?;
    let key_entry = if object { w + 2 } else { 0 };
    let value_entry = 1 + w;
    let keys_at = 2 * w;
    let values_at = keys_at + count.checked_mul(key_entry).ok_or("binary JSON too large")?;
    get(b, values_at, count.checked_mul(value_entry).ok_or("binary JSON too large")?)?;
    out.push(if object { '{' } else { '[' });
    for i in 0..count {
        if i > 0 {
            out.push(',');
        }
        if object {
            let k = keys_at + i * key_entry;
            let off = uint(b, k, w)? as usize;
            let len = uint(b, k + w, 2)? as usize;
            let key = std::str::from_utf8(get(b, off, len)?).map_err(|_| "binary JSON key is not UTF-8")?;
            string(key, out);
            out.push(':');
        }
        let e = values_at + i * value_entry;
        let t = b[e];
        let inline = matches!(t, LITERAL | INT16 | UINT16) || (large && matches!(t, INT32 | UINT32));
        if inline {
            value(t, get(b, e + 1, w)?, out, depth + 1)?;
        } else {
            let off = uint(b, e + 1, w)? as usize;
            value(t, b.get(off..).ok_or("binary JSON offset out of range")?, out, depth + 1)?;
        }
    }
    out.push(if object { '}' } else { ']' });
    Ok(())
}

/// An SQL value inside JSON: MySQL prints decimals as numbers and temporal values as quoted
/// strings; anything else as `"base64:typeNN:..."`, as `JSON_UNQUOTE` of it does.
fn opaque(b: &[u8], out: &mut String) -> Result<(), String> {
    let sql_type = *b.first().ok_or("binary JSON opaque value truncated")?;
    let (len, n) = var_len(b, 1)?;
    let data = get(b, 1 + n, len)?;
    use crate::binlog::ty;
    match sql_type {
        ty::NEWDECIMAL => {
            let p = *data.first().ok_or("opaque decimal truncated")?;
            let s = *data.get(1).ok_or("opaque decimal truncated")?;
            let (d, _) = decimal_binary(&data[2..], p as usize, s as usize)?;
            out.push_str(d.as_str());
        }
        ty::DATE | ty::DATETIME | ty::TIMESTAMP => {
            let packed = uint(data, 0, 8)? as i64;
            out.push('"');
            out.push_str(&datetime_from_packed(packed, sql_type == ty::DATE));
            out.push('"');
        }
        ty::TIME => {
            let packed = uint(data, 0, 8)? as i64;
            let micros = time_from_packed(packed);
            let sign = if micros < 0 { "-" } else { "" };
            let u = micros.unsigned_abs();
            let _ =
                write!(out, "\"{sign}{:02}:{:02}:{:02}", u / 3_600_000_000, u / 60_000_000 % 60, u / 1_000_000 % 60);
            if !u.is_multiple_of(1_000_000) {
                let _ = write!(out, ".{:06}", u % 1_000_000);
            }
            out.push('"');
        }
        t => {
            use base64::Engine;
            let _ = write!(out, "\"base64:type{t}:{}\"", base64::engine::general_purpose::STANDARD.encode(data));
        }
    }
    Ok(())
}

/// A packed datetime (MySQL's `longlong` datetime form) as `YYYY-MM-DD[ hh:mm:ss[.ffffff]]`.
fn datetime_from_packed(packed: i64, date_only: bool) -> String {
    let p = packed.unsigned_abs();
    let frac = p % (1 << 24);
    let ymdhms = p >> 24;
    let ymd = ymdhms >> 17;
    let ym = ymd >> 5;
    let hms = ymdhms % (1 << 17);
    let (y, m, d) = (ym / 13, ym % 13, ymd % 32);
    if date_only {
        return format!("{y:04}-{m:02}-{d:02}");
    }
    let (h, mi, s) = (hms >> 12, (hms >> 6) % 64, hms % 64);
    let mut t = format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}");
    if frac != 0 {
        t.push_str(&format!(".{frac:06}"));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{"a": 1, "b": [true, "x"]}` in the small layout, built from json_binary.h's description.
    fn sample() -> Vec<u8> {
        // array [true, "x"]: count 2, size, two value entries (3 bytes each), then "x"
        let arr_entries = [LITERAL, 1, 0, STRING, 10, 0];
        let mut arr = vec![2, 0, 0, 0];
        arr.extend_from_slice(&arr_entries);
        arr.extend_from_slice(&[1, b'x']);
        let arr_size = arr.len() as u16;
        arr[2..4].copy_from_slice(&arr_size.to_le_bytes());
        // object: count 2, size, key entries (4 bytes each), value entries (3 each), keys, array
        let keys_at = 4 + 2 * 4 + 2 * 3;
        let mut obj = vec![2, 0, 0, 0];
        obj.extend_from_slice(&(keys_at as u16).to_le_bytes());
        obj.extend_from_slice(&[1, 0]);
        obj.extend_from_slice(&((keys_at + 1) as u16).to_le_bytes());
        obj.extend_from_slice(&[1, 0]);
        obj.extend_from_slice(&[INT16, 1, 0]);
        obj.push(SMALL_ARRAY);
        obj.extend_from_slice(&((keys_at + 2) as u16).to_le_bytes());
        obj.extend_from_slice(b"ab");
        obj.extend_from_slice(&arr);
        let size = obj.len() as u16;
        obj[2..4].copy_from_slice(&size.to_le_bytes());
        let mut doc = vec![SMALL_OBJECT];
        doc.extend_from_slice(&obj);
        doc
    }

    #[test]
    fn object_with_nested_array() {
        assert_eq!(to_text(&sample()).unwrap(), r#"{"a":1,"b":[true,"x"]}"#);
        let full = sample();
        for n in 1..full.len() {
            let _ = to_text(&full[..n]);
        }
    }

    #[test]
    fn scalars() {
        assert_eq!(to_text(&[]).unwrap(), "null");
        assert_eq!(to_text(&[LITERAL, 2]).unwrap(), "false");
        assert_eq!(to_text(&[INT16, 0xff, 0xff]).unwrap(), "-1");
        let mut d = vec![DOUBLE];
        d.extend_from_slice(&1.5f64.to_bits().to_le_bytes());
        assert_eq!(to_text(&d).unwrap(), "1.5");
        let mut u = vec![UINT64];
        u.extend_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(to_text(&u).unwrap(), "18446744073709551615");
        assert_eq!(to_text(&[STRING, 3, b'a', b'"', b'b']).unwrap(), r#""a\"b""#);
        assert!(to_text(&[0x42]).is_err());
    }

    #[test]
    fn opaque_date_and_base64() {
        // DATE 2024-02-29 packed: ((2024*13+2) << 5 | 29) << 17 << 24
        let ymd = ((2024u64 * 13 + 2) << 5) | 29;
        let packed = (ymd << 17) << 24;
        let mut b = vec![OPAQUE, crate::binlog::ty::DATE, 8];
        b.extend_from_slice(&packed.to_le_bytes());
        assert_eq!(to_text(&b).unwrap(), "\"2024-02-29\"");
        let b = [OPAQUE, 252, 2, 1, 2];
        assert_eq!(to_text(&b).unwrap(), "\"base64:type252:AQI=\"");
    }
}
