//! Typed values as JSON, for change logs, dead letters and the API: numbers stay numbers
//! where JSON can hold them exactly, everything else is a string in ISO 8601 or the value's
//! canonical text.

use base64::Engine;
use serde_json::Value as J;

use crate::schema::{Row, TableSchema};
use crate::value::{Utc, Value};

/// One value as JSON. Floats that JSON cannot hold (NaN, ±infinity) and exact decimals become
/// strings; bytes become base64; JSON documents are embedded as parsed JSON.
pub fn value_json(v: &Value) -> J {
    match v {
        Value::Null | Value::Unchanged => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::UInt(u) => J::from(*u),
        Value::Float32(f) if f.is_finite() => {
            // Through the shortest text that reads back as the same f32, not the widened f64.
            f.to_string().parse::<f64>().map(J::from).unwrap_or(J::Null)
        }
        Value::Float64(f) if f.is_finite() => J::from(*f),
        Value::Float32(f) => J::String(float_word(f.is_nan(), f.is_sign_negative())),
        Value::Float64(f) => J::String(float_word(f.is_nan(), f.is_sign_negative())),
        Value::Decimal(d) => J::String(d.to_string()),
        Value::Text(t) | Value::Enum(t) | Value::Other(t) => J::String(t.to_string()),
        Value::Json(t) => serde_json::from_str(t.as_str()).unwrap_or_else(|_| J::String(t.to_string())),
        Value::Bytes(b) => J::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::Date(d) => J::String(d.to_string()),
        Value::Time(t) => J::String(t.to_string()),
        Value::TimeTz(t) => J::String(t.to_string()),
        Value::Timestamp(t) => J::String(t.to_string()),
        Value::TimestampTz(t) => J::String(Utc(*t).to_string()),
        Value::Interval(i) => J::String(i.to_string()),
        Value::Uuid(u) => J::String(u.to_string()),
        Value::List(items) => J::Array(items.iter().map(value_json).collect()),
    }
}

fn float_word(nan: bool, negative: bool) -> String {
    match (nan, negative) {
        (true, _) => "NaN",
        (false, true) => "-Infinity",
        (false, false) => "Infinity",
    }
    .to_string()
}

/// A row as a JSON object by column name; values the source did not resend are left out.
pub fn row_json(schema: &TableSchema, row: &Row) -> J {
    let mut m = serde_json::Map::with_capacity(row.len());
    for (c, v) in schema.columns.iter().zip(row) {
        if *v != Value::Unchanged {
            m.insert(c.name.clone(), value_json(v));
        }
    }
    J::Object(m)
}

/// A change in the Snowflake Kafka connector's shape: `RECORD_METADATA` (`table`, `operation`
/// `c`/`u`/`d`/`t`, `position`, `transaction_id`, `commit_time`, `key` as an object of the key
/// columns; for a record read from Kafka the connector's `topic`, `partition`, `offset`,
/// `CreateTime` (ms) and `key` in place of the transaction fields) and `RECORD_CONTENT` (the row
/// after the change; `None` for a delete or truncate).
pub fn connector_record(
    t: &TableSchema,
    op: &crate::Op,
    txn: Option<&crate::TxnMeta>,
    position: Option<String>,
) -> (J, Option<J>) {
    use crate::Op;
    let (code, before, after) = match op {
        Op::Insert { after } => ("c", None, Some(after)),
        Op::Update { before, after } => ("u", before.as_ref(), Some(after)),
        Op::Delete { before } => ("d", Some(before), None),
        Op::Truncate => ("t", None, None),
    };
    let key_of = |r: &Row| {
        let mut o = serde_json::Map::new();
        for (c, v) in t.columns.iter().zip(r) {
            if c.key {
                o.insert(c.name.clone(), value_json(v));
            }
        }
        J::Object(o)
    };
    let commit = txn.map(|m| crate::Timestamp::from_micros(m.commit_ts_micros));
    let key = after.or(before).map(key_of).unwrap_or(J::Null);
    // A record read from Kafka: the connector's own fields (its documented queries read
    // `RECORD_METADATA:topic`, `:partition`, `:offset`, `:CreateTime`, `:key`).
    if let Some(crate::TxnMeta { position: crate::Position::Kafka(at), commit_ts_micros, .. }) = txn {
        if let Some((topic, partition, offset)) = at.entries().next() {
            let meta = serde_json::json!({
                "topic": topic,
                "partition": partition,
                "offset": offset,
                "CreateTime": commit_ts_micros.div_euclid(1000),
                "key": key,
                "table": t.id.to_string(),
                "operation": code,
                "position": position,
            });
            return (meta, after.map(|r| row_json(t, r)));
        }
    }
    let meta = serde_json::json!({
        "table": t.id.to_string(),
        "operation": code,
        "position": position,
        "transaction_id": txn.map(|m| m.xid),
        "commit_time": commit.map(|c| crate::Utc(c).to_string()),
        "key": key,
    });
    (meta, after.map(|r| row_json(t, r)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{Decimal, Timestamp};

    #[test]
    fn values_become_exact_json() {
        assert_eq!(value_json(&Value::Float32(0.1)), serde_json::json!(0.1));
        assert_eq!(value_json(&Value::Float64(f64::NEG_INFINITY)), serde_json::json!("-Infinity"));
        assert_eq!(value_json(&Value::Decimal(Decimal::parse("1.50").unwrap())), serde_json::json!("1.50"));
        assert_eq!(value_json(&Value::Json(r#"{"a":[1]}"#.into())), serde_json::json!({"a": [1]}));
        assert_eq!(value_json(&Value::Bytes(bytes::Bytes::from_static(b"\x00\xff"))), serde_json::json!("AP8="));
        assert_eq!(
            value_json(&Value::TimestampTz(Timestamp::from_micros(1))),
            serde_json::json!("1970-01-01T00:00:00.000001Z")
        );
        assert_eq!(value_json(&Value::UInt(u64::MAX)), serde_json::json!(u64::MAX));
    }
}
