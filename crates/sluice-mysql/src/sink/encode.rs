//! Logical types → MySQL column types, and values → bound parameters.

use mysql_async::Value as M;
use sluice_core::{ColumnSchema, DataType, Timestamp, Value};

use crate::catalog::DIALECT;

/// Longest text a non-key column gets as `varchar(n)`; longer or open lengths are `longtext`.
const VARCHAR_MAX: u32 = 1024;
/// Longest indexable utf8mb4 text (3072-byte key limit / 4 bytes).
const KEY_CHARS: u32 = 768;

/// The MySQL type of a target column.
pub fn column_type(c: &ColumnSchema, source_dialect: &str) -> String {
    if source_dialect == DIALECT && !c.native_type.is_empty() {
        return c.native_type.clone();
    }
    let text = |n: Option<u32>| match (n, c.key) {
        (Some(n), true) if n <= KEY_CHARS => format!("varchar({n})"),
        (_, true) => format!("varchar({KEY_CHARS})"),
        (Some(n), false) if n <= VARCHAR_MAX => format!("varchar({n})"),
        _ => "longtext".into(),
    };
    let frac = |p: Option<u32>| p.unwrap_or(6).min(6);
    match &c.data_type {
        DataType::Bool => "tinyint(1)".into(),
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "int".into(),
        DataType::Int64 => "bigint".into(),
        DataType::UInt8 => "tinyint unsigned".into(),
        DataType::UInt16 => "smallint unsigned".into(),
        DataType::UInt32 => "int unsigned".into(),
        DataType::UInt64 => "bigint unsigned".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Decimal => match (c.precision, c.scale) {
            (Some(p), Some(s)) if p <= 65 && s <= 30 => format!("decimal({p},{s})"),
            // An open numeric: the widest exact type MySQL has.
            _ => "decimal(65,30)".into(),
        },
        DataType::Text => text(c.length),
        DataType::Bytes if c.key => "varbinary(3072)".into(),
        DataType::Bytes => "longblob".into(),
        DataType::Date => "date".into(),
        DataType::Time => format!("time({})", frac(c.precision)),
        DataType::Timestamp => format!("datetime({})", frac(c.precision)),
        // TIMESTAMP stops in 2038: instants are kept in UTC in a DATETIME.
        DataType::TimestampTz => format!("datetime({})", frac(c.precision)),
        DataType::TimeTz | DataType::Interval => "varchar(64)".into(),
        DataType::Uuid => "char(36)".into(),
        DataType::Json | DataType::List(_) => "json".into(),
        DataType::Enum { labels } if !labels.is_empty() => format!(
            "enum({})",
            labels
                .iter()
                .map(|l| format!("'{}'", l.replace('\\', "\\\\").replace('\'', "''")))
                .collect::<Vec<_>>()
                .join(",")
        ),
        DataType::Enum { .. } => text(Some(255)),
        DataType::Other => text(c.length),
    }
}

/// The parameter for a value of column `c`, or why it cannot be written.
pub fn param(v: &Value, c: &ColumnSchema) -> Result<M, String> {
    Ok(match v {
        Value::Null => M::NULL,
        Value::Unchanged => return Err("an unchanged value reached a statement (a sink bug)".into()),
        Value::Bool(b) => M::Int(*b as i64),
        Value::Int(i) => M::Int(*i),
        Value::UInt(u) => M::UInt(*u),
        Value::Float32(f) if !f.is_finite() => return Err(format!("{f} cannot be stored in MySQL")),
        Value::Float64(d) if !d.is_finite() => return Err(format!("{d} cannot be stored in MySQL")),
        Value::Float32(f) => M::Float(*f),
        Value::Float64(d) => M::Double(*d),
        Value::Decimal(d) => {
            if !matches!(d.kind(), sluice_core::DecimalKind::Finite) {
                return Err(format!("{} cannot be stored in a MySQL decimal", d.as_str()));
            }
            M::Bytes(d.as_str().as_bytes().to_vec())
        }
        Value::Text(t) | Value::Enum(t) | Value::Other(t) | Value::Json(t) => M::Bytes(t.as_bytes().to_vec()),
        Value::Bytes(b) if is_geometry(&c.native_type) => {
            // MySQL's internal form: SRID 0, then the WKB.
            let mut v = vec![0u8; 4];
            v.extend_from_slice(b);
            M::Bytes(v)
        }
        Value::Bytes(b) => M::Bytes(b.to_vec()),
        Value::Date(d) => {
            if d.is_infinite() {
                return Err("infinite dates cannot be stored in MySQL".into());
            }
            let (y, m, day) = d.ymd();
            if !(0..=9999).contains(&y) {
                return Err(format!("date {d} is outside MySQL's years 0 to 9999"));
            }
            M::Date(y as u16, m as u8, day as u8, 0, 0, 0, 0)
        }
        Value::Timestamp(t) | Value::TimestampTz(t) => datetime(*t)?,
        Value::Time(t) => {
            let (h, m, s, u) = t.hmsu();
            M::Time(false, (h / 24) as u32, (h % 24) as u8, m as u8, s as u8, u as u32)
        }
        Value::Interval(i) if c.native_type.starts_with("time") && i.months == 0 && i.days == 0 => {
            let neg = i.micros < 0;
            let u = i.micros.unsigned_abs();
            let h = u / 3_600_000_000;
            M::Time(
                neg,
                (h / 24) as u32,
                (h % 24) as u8,
                (u / 60_000_000 % 60) as u8,
                (u / 1_000_000 % 60) as u8,
                (u % 1_000_000) as u32,
            )
        }
        Value::Interval(i) => M::Bytes(i.to_string().into_bytes()),
        Value::TimeTz(t) => M::Bytes(t.to_string().into_bytes()),
        Value::Uuid(u) => M::Bytes(u.to_string().into_bytes()),
        Value::List(_) => M::Bytes(sluice_core::json::value_json(v).to_string().into_bytes()),
    })
}

fn is_geometry(native: &str) -> bool {
    let n = native.to_ascii_lowercase();
    [
        "geometry",
        "point",
        "linestring",
        "polygon",
        "multipoint",
        "multilinestring",
        "multipolygon",
        "geomcollection",
        "geometrycollection",
    ]
    .iter()
    .any(|g| n == *g)
}

fn datetime(t: Timestamp) -> Result<M, String> {
    if t.is_infinite() {
        return Err("infinite timestamps cannot be stored in MySQL".into());
    }
    let secs = t.secs();
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = sluice_core::Date(days as i32).ymd();
    if !(0..=9999).contains(&y) {
        return Err(format!("timestamp {t} is outside MySQL's years 0 to 9999"));
    }
    Ok(M::Date(
        y as u16,
        m as u8,
        d as u8,
        (rem / 3600) as u8,
        (rem / 60 % 60) as u8,
        (rem % 60) as u8,
        t.subsec_nanos() / 1000,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_from_other_sources() {
        let c = |t: DataType| ColumnSchema::new("c", t, "x");
        assert_eq!(column_type(&c(DataType::UInt64), "postgres"), "bigint unsigned");
        let mut d = c(DataType::Decimal);
        d.precision = Some(12);
        d.scale = Some(2);
        assert_eq!(column_type(&d, "postgres"), "decimal(12,2)");
        assert_eq!(column_type(&c(DataType::Decimal), "postgres"), "decimal(65,30)");
        assert_eq!(column_type(&c(DataType::Text).key(), "postgres"), "varchar(768)");
        assert_eq!(column_type(&c(DataType::Text), "postgres"), "longtext");
        let mut v = c(DataType::Text);
        v.length = Some(20);
        assert_eq!(column_type(&v, "postgres"), "varchar(20)");
        let e = c(DataType::Enum { labels: vec!["a".into(), "it's".into()] });
        assert_eq!(column_type(&e, "postgres"), "enum('a','it''s')");
        let mut n = c(DataType::Int32);
        n.native_type = "mediumint unsigned".into();
        assert_eq!(column_type(&n, "mysql"), "mediumint unsigned");
    }

    #[test]
    fn timestamps_become_utc_datetimes() {
        let t = Timestamp::from_micros(951_782_400_000_001); // 2000-02-29 00:00:00.000001
        assert_eq!(datetime(t).unwrap(), M::Date(2000, 2, 29, 0, 0, 0, 1));
        assert!(datetime(Timestamp::INFINITY).is_err());
    }
}
