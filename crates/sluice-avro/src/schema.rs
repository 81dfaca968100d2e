//! Avro record schemas for tables (the mapping is in the crate's documentation).

use serde_json::{json, Value as J};
use sluice_core::{ColumnSchema, DataType, TableSchema};

/// Name and namespace of a record schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordNames {
    pub name: String,
    pub namespace: String,
}

/// `s` as an Avro name: characters other than `[A-Za-z0-9_]` become `_`, and a leading digit
/// gets a `_` before it.
pub fn avro_name(s: &str) -> String {
    let mut out: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The Avro type of one column's non-null values.
fn value_type(c: &ColumnSchema, t: &DataType) -> J {
    match t {
        DataType::Bool => json!("boolean"),
        // Kafka Connect's marks, so readers (Sluice's too) get the width back
        DataType::Int8 => json!({ "type": "int", "connect.type": "int8" }),
        DataType::Int16 => json!({ "type": "int", "connect.type": "int16" }),
        DataType::Int32 | DataType::UInt8 | DataType::UInt16 => json!("int"),
        DataType::Int64 | DataType::UInt32 => json!("long"),
        DataType::UInt64 => json!({ "type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 0 }),
        DataType::Float32 => json!("float"),
        DataType::Float64 => json!("double"),
        DataType::Decimal => match decimal_of(c) {
            Some((p, s)) => json!({ "type": "bytes", "logicalType": "decimal", "precision": p, "scale": s }),
            None => json!("string"),
        },
        DataType::Bytes => json!("bytes"),
        DataType::Date => json!({ "type": "int", "logicalType": "date" }),
        DataType::Time => json!({ "type": "long", "logicalType": "time-micros" }),
        DataType::Timestamp => json!({ "type": "long", "logicalType": "local-timestamp-micros" }),
        DataType::TimestampTz => json!({ "type": "long", "logicalType": "timestamp-micros" }),
        DataType::Uuid => json!({ "type": "string", "logicalType": "uuid" }),
        DataType::List(inner) => json!({ "type": "array", "items": ["null", value_type(c, inner)] }),
        DataType::Text
        | DataType::Enum { .. }
        | DataType::Json
        | DataType::Interval
        | DataType::TimeTz
        | DataType::Other => json!("string"),
    }
}

/// Precision and scale of a decimal column that fixes both (an Avro decimal needs them).
pub(crate) fn decimal_of(c: &ColumnSchema) -> Option<(u32, u32)> {
    match (c.precision, c.scale) {
        (Some(p), Some(s)) if p > 0 && s <= p => Some((p, s)),
        _ => None,
    }
}

/// The record schema of `columns` (all of a table's, or its key's) named `names`.
pub fn record_schema(table: &TableSchema, columns: &[usize], names: &RecordNames) -> J {
    let fields: Vec<J> = columns
        .iter()
        .map(|&i| {
            let c = &table.columns[i];
            let t = value_type(c, &c.data_type);
            let mut f = if c.nullable {
                json!({ "name": avro_name(&c.name), "type": ["null", t], "default": null })
            } else {
                json!({ "name": avro_name(&c.name), "type": t })
            };
            if avro_name(&c.name) != c.name {
                f["sluice.name"] = J::String(c.name.clone());
            }
            f
        })
        .collect();
    let namespace: Vec<String> = names.namespace.split('.').filter(|p| !p.is_empty()).map(avro_name).collect();
    json!({ "type": "record", "name": avro_name(&names.name), "namespace": namespace.join("."), "fields": fields })
}
