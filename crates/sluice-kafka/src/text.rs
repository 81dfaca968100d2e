//! Values from their text and JSON forms, for the JSON formats: Canal's strings typed by
//! `mysqlType`, Kafka Connect's JSON typed by a schema block, and plain JSON typed by what it
//! holds.

use serde_json::Value as J;
use sluice_core::{DataType, Date, Decimal, Text, Time, Timestamp, Uuid, Value};

/// `YYYY-MM-DD`.
pub fn date(s: &str) -> Result<Date, String> {
    let bad = || format!("{s:?} is not a date (YYYY-MM-DD)");
    let mut p = s.trim().splitn(3, '-');
    let (y, m, d) = (p.next().ok_or_else(bad)?, p.next().ok_or_else(bad)?, p.next().ok_or_else(bad)?);
    let (y, m, d): (i64, u32, u32) =
        (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?);
    Date::from_ymd(y, m, d).ok_or_else(bad)
}

/// `[-]HH:MM[:SS[.ffffff]]` as microseconds (MySQL's TIME may be negative or past 24 hours).
pub fn clock_micros(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?} is not a time (HH:MM:SS[.ffffff])");
    let s = s.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let mut p = hms.split(':');
    let h: i64 = p.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let m: i64 = p.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let sec: i64 = p.next().unwrap_or("0").parse().map_err(|_| bad())?;
    if p.next().is_some() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let micros: i64 =
        if frac.is_empty() { 0 } else { format!("{:0<6}", &frac[..frac.len().min(6)]).parse().map_err(|_| bad())? };
    let v = (h * 3600 + m * 60 + sec) * 1_000_000 + micros;
    Ok(if neg { -v } else { v })
}

/// `YYYY-MM-DD[ T]HH:MM:SS[.f]`, wall clock.
pub fn datetime(s: &str) -> Result<Timestamp, String> {
    let s = s.trim().trim_end_matches('Z');
    let (d, t) = s.split_once([' ', 'T']).unwrap_or((s, "00:00:00"));
    let d = date(d)?;
    let micros = clock_micros(t)?;
    Ok(Timestamp::from_date_time(d.0 as i64, micros))
}

/// An instant: with an offset (`...Z`, `...+02:00`), or UTC when it has none.
pub fn instant(s: &str) -> Result<Timestamp, String> {
    let t = s.trim();
    // An offset can only follow the time of day (the date has its own '-').
    let clock = t.split_once(['T', ' ']).map_or("", |(_, c)| c);
    if clock.contains(['Z', 'z', '+', '-']) {
        sluice_avro::decode::parse_instant(&t.replacen(' ', "T", 1)).map_err(|e| e.0)
    } else {
        datetime(t)
    }
}

/// A value of `ty` from its text form.
pub fn from_text(ty: &DataType, s: &str) -> Result<Value, String> {
    let num = |what: &str| format!("{s:?} is not {what}");
    Ok(match ty {
        DataType::Bool => Value::Bool(match s.trim() {
            "1" | "true" | "t" | "TRUE" | "True" => true,
            "0" | "false" | "f" | "FALSE" | "False" => false,
            _ => return Err(num("a boolean")),
        }),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            Value::Int(s.trim().parse().map_err(|_| num("an integer"))?)
        }
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            Value::UInt(s.trim().parse().map_err(|_| num("an unsigned integer"))?)
        }
        DataType::Float32 => Value::Float32(s.trim().parse().map_err(|_| num("a number"))?),
        DataType::Float64 => Value::Float64(s.trim().parse().map_err(|_| num("a number"))?),
        DataType::Decimal => Value::Decimal(Decimal::parse(s.trim()).map_err(|e| e.0)?),
        DataType::Date => Value::Date(date(s)?),
        DataType::Time => Value::Time(Time(clock_micros(s)?)),
        DataType::Timestamp => Value::Timestamp(datetime(s)?),
        DataType::TimestampTz => Value::TimestampTz(instant(s)?),
        DataType::Uuid => Value::Uuid(Uuid::parse(s.trim()).map_err(|e| e.0)?),
        DataType::Json => Value::Json(Text::from(s)),
        DataType::Enum { .. } => Value::Enum(Text::from(s)),
        DataType::Bytes => Value::Bytes(s.chars().map(|c| c as u32 as u8).collect::<Vec<u8>>().into()),
        _ => Value::Text(Text::from(s)),
    })
}

/// The type plain JSON suggests: numbers without a fraction are integers.
pub fn inferred(v: &J) -> DataType {
    match v {
        J::Bool(_) => DataType::Bool,
        J::Number(n) if n.is_i64() || n.is_u64() => DataType::Int64,
        J::Number(_) => DataType::Float64,
        J::Object(_) | J::Array(_) => DataType::Json,
        J::String(_) | J::Null => DataType::Text,
    }
}

/// A value of `ty` from plain JSON (a column whose type was inferred or declared).
pub fn from_json(ty: &DataType, v: &J) -> Result<Value, String> {
    Ok(match (ty, v) {
        (_, J::Null) => Value::Null,
        (DataType::Bool, J::Bool(b)) => Value::Bool(*b),
        (DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64, J::Number(n)) => {
            Value::Int(n.as_i64().ok_or_else(|| format!("{n} is not an integer"))?)
        }
        (DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64, J::Number(n)) => {
            Value::UInt(n.as_u64().ok_or_else(|| format!("{n} is not an unsigned integer"))?)
        }
        (DataType::Float32, J::Number(n)) => Value::Float32(n.as_f64().unwrap_or(f64::NAN) as f32),
        (DataType::Float64, J::Number(n)) => Value::Float64(n.as_f64().unwrap_or(f64::NAN)),
        (DataType::Decimal, J::Number(n)) => Value::Decimal(Decimal::parse(&n.to_string()).map_err(|e| e.0)?),
        (DataType::Json, v) => Value::Json(Text::from(v.to_string().as_str())),
        (DataType::Text | DataType::Other, J::String(s)) => Value::Text(Text::from(s.as_str())),
        (DataType::Text | DataType::Other, v) => Value::Text(Text::from(v.to_string().as_str())),
        (DataType::List(inner), J::Array(items)) => {
            Value::List(items.iter().map(|i| from_json(inner, i)).collect::<Result<_, _>>()?)
        }
        (DataType::Bytes, J::String(s)) => {
            use base64::Engine;
            Value::Bytes(
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|e| format!("bytes not in base64: {e}"))?
                    .into(),
            )
        }
        (DataType::Date, J::Number(n)) => Value::Date(Date(n.as_i64().unwrap_or(0) as i32)),
        (t, J::String(s)) => from_text(t, s)?,
        (t, v) => return Err(format!("{v} is not a {t:?} value")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canal_text_forms_parse() {
        assert_eq!(
            from_text(&DataType::Date, "2024-02-29").unwrap(),
            Value::Date(Date::from_ymd(2024, 2, 29).unwrap())
        );
        assert_eq!(from_text(&DataType::Time, "-838:59:59").unwrap(), Value::Time(Time(-3_020_399_000_000)));
        assert_eq!(
            from_text(&DataType::Timestamp, "1970-01-01 00:00:01.000001").unwrap(),
            Value::Timestamp(Timestamp::from_micros(1_000_001))
        );
        assert_eq!(
            from_text(&DataType::TimestampTz, "1970-01-01 00:00:02").unwrap(),
            Value::TimestampTz(Timestamp::from_micros(2_000_000)),
            "no offset: UTC, as Sluice writes canal timestamps"
        );
        assert_eq!(
            from_text(&DataType::TimestampTz, "1970-01-01T01:00:02+01:00").unwrap(),
            Value::TimestampTz(Timestamp::from_micros(2_000_000))
        );
        assert_eq!(from_text(&DataType::Bool, "1").unwrap(), Value::Bool(true));
        assert_eq!(from_text(&DataType::Bytes, "\u{0}\u{ff}").unwrap(), Value::Bytes(vec![0u8, 255].into()));
        assert!(from_text(&DataType::Int32, "x").unwrap_err().contains("\"x\""));
    }

    #[test]
    fn plain_json_is_typed_by_what_it_holds() {
        assert_eq!(inferred(&serde_json::json!(1)), DataType::Int64);
        assert_eq!(inferred(&serde_json::json!(1.5)), DataType::Float64);
        assert_eq!(inferred(&serde_json::json!({"a": 1})), DataType::Json);
        assert_eq!(from_json(&DataType::Text, &serde_json::json!(12)).unwrap(), Value::Text(Text::from("12")));
        assert_eq!(from_json(&DataType::Json, &serde_json::json!([1])).unwrap(), Value::Json(Text::from("[1]")));
    }
}
