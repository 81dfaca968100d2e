//! Logical types as Snowflake columns (replica mode), and values as the text a staging table
//! holds until one cast per column moves them in.
//!
//! Every value travels as text, bound, never spliced: the stage has a TEXT column per target
//! column and `INSERT .. SELECT` casts each to the column's type (`CAST(x AS NUMBER(12,2))`,
//! `TO_BINARY(x, 'BASE64')`, `PARSE_JSON(x)`). One bound type for every value keeps a batch to
//! one statement shape whatever its NULLs, and Snowflake parses the text exactly (decimals as
//! written, floats from their shortest round-trip text).

use base64::Engine;
use sluice_core::{ColumnSchema, DataType, Date, Timestamp, Value};

/// Snowflake's largest NUMBER precision.
const MAX_PRECISION: u32 = 38;

/// The Snowflake type of `c` in a replica table.
pub fn column_type(c: &ColumnSchema) -> String {
    match &c.data_type {
        DataType::Bool => "BOOLEAN".into(),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => "NUMBER(38,0)".into(),
        DataType::Float32 | DataType::Float64 => "FLOAT".into(),
        DataType::Decimal => match number(c) {
            Some((p, s)) => format!("NUMBER({p},{s})"),
            // An open numeric, or more digits than NUMBER holds: exact text.
            None => "TEXT".into(),
        },
        DataType::Bytes => "BINARY".into(),
        DataType::Date => "DATE".into(),
        DataType::Time => "TIME(9)".into(),
        DataType::Timestamp => "TIMESTAMP_NTZ(9)".into(),
        DataType::TimestampTz => "TIMESTAMP_TZ(9)".into(),
        DataType::Json | DataType::List(_) => "VARIANT".into(),
        DataType::Text
        | DataType::Enum { .. }
        | DataType::Other
        | DataType::TimeTz
        | DataType::Interval
        | DataType::Uuid => "TEXT".into(),
    }
}

/// The precision and scale of a decimal column Snowflake holds as `NUMBER(p,s)`; `None` for one
/// kept as exact text (open, or more digits than NUMBER holds) and for other types.
fn number(c: &ColumnSchema) -> Option<(u32, u32)> {
    match (&c.data_type, c.precision, c.scale) {
        (DataType::Decimal, Some(p), Some(s)) if (1..=MAX_PRECISION).contains(&p) && s <= p => Some((p, s)),
        _ => None,
    }
}

/// The expression that turns the stage's text `expr` into a value of `column_type(c)`.
pub fn cast(c: &ColumnSchema, expr: &str) -> String {
    let t = column_type(c);
    match t.as_str() {
        "TEXT" => expr.to_string(),
        "BINARY" => format!("TO_BINARY({expr}, 'BASE64')"),
        "VARIANT" => format!("PARSE_JSON({expr})"),
        _ => format!("CAST({expr} AS {t})"),
    }
}

/// The type name as `information_schema.columns` spells it (`NUMBER(12,2)`, `TIMESTAMP_NTZ`),
/// for comparing a table's column with the one wanted.
pub fn catalog_type(data_type: &str, precision: Option<u32>, scale: Option<u32>) -> String {
    let base = data_type.to_ascii_uppercase();
    match base.as_str() {
        "NUMBER" | "DECIMAL" | "NUMERIC" => format!("NUMBER({},{})", precision.unwrap_or(38), scale.unwrap_or(0)),
        "VARCHAR" | "STRING" | "CHAR" | "CHARACTER" => "TEXT".into(),
        "DOUBLE" | "REAL" | "FLOAT4" | "FLOAT8" => "FLOAT".into(),
        "ARRAY" | "OBJECT" => "VARIANT".into(),
        _ => base,
    }
}

/// `column_type` without a time type's precision, as the catalog names it.
pub fn wanted_catalog_type(c: &ColumnSchema) -> String {
    let t = column_type(c);
    if t.starts_with("NUMBER") {
        t
    } else {
        t.split('(').next().unwrap_or(&t).to_string()
    }
}

/// Whether a column of catalog type `from` can become `to` in place
/// (`ALTER COLUMN .. SET DATA TYPE`): Snowflake only widens a NUMBER's precision, scale kept.
pub fn widens(from: &str, to: &str) -> bool {
    let num = |s: &str| -> Option<(u32, u32)> {
        let (p, sc) = s.strip_prefix("NUMBER(")?.strip_suffix(')')?.split_once(',')?;
        Some((p.trim().parse().ok()?, sc.trim().parse().ok()?))
    };
    matches!((num(from), num(to)), (Some((p1, s1)), Some((p2, s2))) if s1 == s2 && p2 > p1)
}

/// The text a stage column holds for `v`; `None` for NULL. `Err` names what the column's type
/// cannot hold.
pub fn stage_text(c: &ColumnSchema, v: &Value) -> Result<Option<String>, String> {
    let numeric = number(c);
    Ok(Some(match v {
        Value::Null | Value::Unchanged => return Ok(None),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float32(f) => {
            float_text(f.is_nan(), f.is_infinite(), f.is_sign_negative()).unwrap_or_else(|| f.to_string())
        }
        Value::Float64(f) => {
            float_text(f.is_nan(), f.is_infinite(), f.is_sign_negative()).unwrap_or_else(|| f.to_string())
        }
        Value::Decimal(d) if numeric.is_some() && d.kind() != sluice_core::DecimalKind::Finite => {
            return Err(format!(
                "{d} cannot be stored in a Snowflake NUMBER; declare the source column as an unconstrained \
                 numeric (the replica then keeps it as exact TEXT)"
            ))
        }
        Value::Decimal(d) => {
            if let Some((p, s)) = numeric {
                let (int, frac) = d.digits();
                let int = int.trim_start_matches('0');
                if int.len() as u32 > p - s || frac.len() as u32 > s {
                    return Err(format!("{d} has more digits than NUMBER({p},{s}) holds"));
                }
            }
            d.to_string()
        }
        Value::Text(t) | Value::Enum(t) | Value::Other(t) | Value::Json(t) => t.to_string(),
        Value::Bytes(b) => base64::engine::general_purpose::STANDARD.encode(b),
        // Snowflake's dates and timestamps stop at year 9999: ±infinity become the first and
        // last instants Snowflake holds, as Debezium turns them into the largest longs.
        Value::Date(d) if *d == Date::INFINITY => "9999-12-31".into(),
        Value::Date(d) if *d == Date::NEG_INFINITY => "0001-01-01".into(),
        Value::Timestamp(t) | Value::TimestampTz(t) if *t == Timestamp::INFINITY => {
            format!("9999-12-31T23:59:59.999999{}", if matches!(v, Value::TimestampTz(_)) { "Z" } else { "" })
        }
        Value::Timestamp(t) | Value::TimestampTz(t) if *t == Timestamp::NEG_INFINITY => {
            format!("0001-01-01T00:00:00{}", if matches!(v, Value::TimestampTz(_)) { "Z" } else { "" })
        }
        Value::Date(d) if !(1..=9999).contains(&d.ymd().0) => {
            return Err(format!("{d}: Snowflake's dates run from year 1 to 9999"))
        }
        Value::Timestamp(t) | Value::TimestampTz(t)
            if !(1..=9999).contains(&sluice_core::civil_from_days(t.secs().div_euclid(86_400)).0) =>
        {
            return Err(format!("{}: Snowflake's timestamps run from year 1 to 9999", sluice_core::json::value_json(v)))
        }
        Value::List(_) => sluice_core::json::value_json(v).to_string(),
        other => match sluice_core::json::value_json(other) {
            serde_json::Value::String(s) => s,
            j => j.to_string(),
        },
    }))
}

/// Snowflake's words for the floats that are not numbers (`'NaN'`, `'inf'`, `'-inf'`).
fn float_text(nan: bool, infinite: bool, negative: bool) -> Option<String> {
    match (nan, infinite, negative) {
        (true, _, _) => Some("NaN".into()),
        (false, true, true) => Some("-inf".into()),
        (false, true, false) => Some("inf".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(t: DataType) -> ColumnSchema {
        ColumnSchema::new("c", t, "x")
    }

    #[test]
    fn types_casts_and_stage_text() {
        let mut dec = col(DataType::Decimal);
        assert_eq!(column_type(&dec), "TEXT", "an open numeric stays exact");
        dec.precision = Some(12);
        dec.scale = Some(2);
        assert_eq!(column_type(&dec), "NUMBER(12,2)");
        assert_eq!(cast(&dec, "\"X\""), "CAST(\"X\" AS NUMBER(12,2))");
        assert!(stage_text(&dec, &Value::Decimal(sluice_core::Decimal::NAN)).is_err());
        assert_eq!(cast(&col(DataType::Bytes), "x"), "TO_BINARY(x, 'BASE64')");
        assert_eq!(stage_text(&col(DataType::Float64), &Value::Float64(f64::NEG_INFINITY)).unwrap().unwrap(), "-inf");
        assert_eq!(stage_text(&col(DataType::Float32), &Value::Float32(0.1)).unwrap().unwrap(), "0.1");
        assert_eq!(stage_text(&col(DataType::Date), &Value::Date(Date::INFINITY)).unwrap().unwrap(), "9999-12-31");
        assert_eq!(stage_text(&col(DataType::Int64), &Value::Null).unwrap(), None);
        assert!(
            stage_text(&col(DataType::Date), &Value::Date(sluice_core::Date::from_ymd(10_000, 1, 1).unwrap())).is_err()
        );
        assert!(
            stage_text(&col(DataType::Date), &Value::Date(sluice_core::Date::from_ymd(0, 12, 31).unwrap())).is_err()
        );
        let big = sluice_core::Decimal::parse("12345678901.5").unwrap();
        assert!(stage_text(&dec, &Value::Decimal(big)).unwrap_err().contains("NUMBER(12,2)"));
        let fine = sluice_core::Decimal::parse("-0099.5").unwrap();
        assert!(stage_text(&dec, &Value::Decimal(fine)).is_ok());
        assert_eq!(catalog_type("NUMBER", Some(12), Some(2)), wanted_catalog_type(&dec));
        assert_eq!(catalog_type("TIMESTAMP_NTZ", None, None), wanted_catalog_type(&col(DataType::Timestamp)));
        assert!(widens("NUMBER(10,2)", "NUMBER(12,2)") && !widens("NUMBER(10,2)", "NUMBER(12,3)"));
        assert!(!widens("NUMBER(38,0)", "TEXT"));
    }
}
