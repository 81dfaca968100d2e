//! Record keys and values in the JSON formats.
//!
//! - `json`: the flat row and `_op` (`c`, `u`, `d`, `r` for copied rows), like Debezium's
//!   "new record state" (`ExtractNewRecordState` with the op added); a delete carries the row as
//!   it was (or its key) with `_op: "d"`.
//! - `debezium-json`: Debezium's change event envelope: `before`, `after`, `source` (connector
//!   `sluice`, pipeline name, schema, table, transaction id, commit time, position), `op`
//!   (`c`, `u`, `d`, `r`, `t`), `ts_ms`, `transaction: null`. Values as Debezium's default
//!   converters write them: dates as days since the epoch, times and timestamps as epoch
//!   microseconds (`MicroTime`, `MicroTimestamp`), instants as ISO-8601 UTC strings
//!   (`ZonedTimestamp`), bytes as base64; decimals as strings (Debezium's
//!   `decimal.handling.mode=string`: its default, base64 of the unscaled bytes, is unreadable
//!   without the schema block).
//!
//! - `canal-json`: the Canal JSON message as TiCDC writes it: `database`, `table`, `pkNames`,
//!   `isDdl`, `type` (`INSERT`, `UPDATE`, `DELETE`; a truncate is a DDL message of type
//!   `TRUNCATE`), `es` (commit time, ms) and `ts` (now, ms), `sqlType` (java.sql.Types codes) and
//!   `mysqlType` per column, `data` (the row, every value as a string or null; bytes as
//!   ISO-8859-1 characters, as Canal does) and `old` (for an update, the old values of the
//!   columns that changed; null when the source sent no old row, e.g. PostgreSQL without
//!   REPLICA IDENTITY FULL). Copied rows are `INSERT`s.
//!
//! Keys are JSON objects of the key columns (Debezium's key), `null` for a table without a key.

use serde_json::{json, Map, Value as J};
use sluice_core::json::value_json;
use sluice_core::{ColumnSchema, DataType, Op, Row, TableSchema, TxnMeta, Value};

/// The Kafka formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    DebeziumJson,
    CanalJson,
    /// Confluent-framed Avro (`avro.rs`); keys and values are not built here
    Avro,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "json" => Some(Format::Json),
            "debezium-json" => Some(Format::DebeziumJson),
            "canal-json" => Some(Format::CanalJson),
            "avro" => Some(Format::Avro),
            _ => None,
        }
    }
}

/// One change to publish: what happened, to which table, in which transaction.
pub struct Record<'a> {
    pub table: &'a TableSchema,
    /// `c`, `u`, `d`, `r` (a copied row) or `t`
    pub op: &'static str,
    pub before: Option<&'a Row>,
    pub after: Option<&'a Row>,
    pub txn: Option<&'a TxnMeta>,
}

impl<'a> Record<'a> {
    /// The record for a change.
    pub fn change(table: &'a TableSchema, op: &'a Op, txn: Option<&'a TxnMeta>) -> Record<'a> {
        let (op, before, after) = match op {
            Op::Insert { after } => ("c", None, Some(after)),
            Op::Update { before, after } => ("u", before.as_ref(), Some(after)),
            Op::Delete { before } => ("d", Some(before), None),
            Op::Truncate => ("t", None, None),
        };
        Record { table, op, before, after, txn }
    }

    /// The record for a copied row.
    pub fn copied(table: &'a TableSchema, row: &'a Row) -> Record<'a> {
        Record { table, op: "r", before: None, after: Some(row), txn: None }
    }

    /// The row whose key the record carries.
    fn keyed_row(&self) -> Option<&'a Row> {
        self.after.or(self.before)
    }
}

/// The record key: the key columns as a JSON object (inside Kafka Connect's schema envelope
/// with `schemas`), `None` without a key (or for a truncate).
pub fn key(r: &Record<'_>, format: Format, schemas: bool) -> Option<Vec<u8>> {
    let keys = r.table.key_indexes();
    let row = r.keyed_row()?;
    if keys.is_empty() {
        return None;
    }
    let values = if schemas && format == Format::Json { Format::DebeziumJson } else { format };
    let mut m = Map::new();
    for &i in &keys {
        let c = &r.table.columns[i];
        m.insert(c.name.clone(), value(values, c, &row[i]));
    }
    let payload = J::Object(m);
    let out = if schemas && format != Format::CanalJson {
        let name = format!("{}.{}.Key", r.table.id.schema, r.table.id.name);
        json!({ "schema": connect_struct(r.table, &keys, &name, false), "payload": payload })
    } else {
        payload
    };
    Some(out.to_string().into_bytes())
}

/// A column's Kafka Connect schema, as Debezium declares the values this module writes.
fn connect_field(c: &ColumnSchema, t: &DataType) -> J {
    let (kind, name) = match t {
        DataType::Bool => ("boolean", None),
        DataType::Int8 => ("int8", None),
        DataType::Int16 | DataType::UInt8 => ("int16", None),
        DataType::Int32 | DataType::UInt16 => ("int32", None),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => ("int64", None),
        DataType::Float32 => ("float", None),
        DataType::Float64 => ("double", None),
        DataType::Bytes => ("bytes", None),
        DataType::Date => ("int32", Some("io.debezium.time.Date")),
        DataType::Time => ("int64", Some("io.debezium.time.MicroTime")),
        DataType::Timestamp => ("int64", Some("io.debezium.time.MicroTimestamp")),
        DataType::TimestampTz => ("string", Some("io.debezium.time.ZonedTimestamp")),
        DataType::Uuid => ("string", Some("io.debezium.data.Uuid")),
        DataType::Json => ("string", Some("io.debezium.data.Json")),
        DataType::List(inner) => {
            return json!({ "type": "array", "optional": c.nullable, "items": connect_field(&ColumnSchema { nullable: true, ..c.clone() }, inner) })
        }
        _ => ("string", None),
    };
    let mut f = json!({ "type": kind, "optional": c.nullable });
    if let Some(n) = name {
        f["name"] = J::from(n);
        f["version"] = J::from(1);
    }
    if *t == DataType::Decimal {
        // Debezium's decimal.handling.mode=string with column.propagate.source.type
        let mut p = Map::new();
        p.insert("__debezium.source.column.type".into(), J::from("DECIMAL"));
        if let Some(n) = c.precision {
            p.insert("__debezium.source.column.length".into(), J::from(n.to_string()));
        }
        if let Some(n) = c.scale {
            p.insert("__debezium.source.column.scale".into(), J::from(n.to_string()));
        }
        f["parameters"] = J::Object(p);
    }
    f
}

/// The Kafka Connect `struct` of `columns`, named `name`.
fn connect_struct(table: &TableSchema, columns: &[usize], name: &str, optional: bool) -> J {
    let fields: Vec<J> = columns
        .iter()
        .map(|&i| {
            let c = &table.columns[i];
            let mut f = connect_field(c, &c.data_type);
            f["field"] = J::from(c.name.clone());
            f
        })
        .collect();
    json!({ "type": "struct", "fields": fields, "optional": optional, "name": name })
}

/// The schema block of a value in `format` (Kafka Connect's JSON converter, schemas enabled).
fn value_schema(table: &TableSchema, format: Format, pipeline: &str) -> J {
    let all: Vec<usize> = (0..table.columns.len()).collect();
    let base = format!("{pipeline}.{}.{}", table.id.schema, table.id.name);
    match format {
        Format::DebeziumJson => {
            let row = |field: &str| {
                let mut s = connect_struct(table, &all, &format!("{base}.Value"), true);
                s["field"] = J::from(field);
                s
            };
            let f =
                |kind: &str, field: &str, optional: bool| json!({ "type": kind, "optional": optional, "field": field });
            let source = json!({ "type": "struct", "optional": false, "field": "source", "name": "io.debezium.connector.sluice.Source",
                "fields": [f("string", "version", false), f("string", "connector", false), f("string", "name", false),
                           f("int64", "ts_ms", false), f("string", "snapshot", true), f("string", "db", false),
                           f("string", "schema", false), f("string", "table", false), f("int64", "txId", true),
                           f("string", "position", true)] });
            let transaction = json!({ "type": "struct", "optional": true, "field": "transaction", "name": "event.block",
                "fields": [f("string", "id", false), f("int64", "total_order", false), f("int64", "data_collection_order", false)] });
            json!({ "type": "struct", "optional": false, "name": format!("{base}.Envelope"), "version": 1,
                "fields": [row("before"), row("after"), source, f("string", "op", false), f("int64", "ts_ms", true), transaction] })
        }
        _ => {
            let mut s = connect_struct(table, &all, &format!("{base}.Value"), false);
            if let Some(J::Array(fields)) = s.get_mut("fields") {
                fields.push(json!({ "type": "string", "optional": false, "field": "_op" }));
            }
            s
        }
    }
}

fn value(format: Format, c: &ColumnSchema, v: &Value) -> J {
    match format {
        Format::Json | Format::Avro => value_json(v),
        Format::DebeziumJson => debezium_value(c, v),
        Format::CanalJson => canal_value(v),
    }
}

/// A value as Canal writes it: its text, or null.
fn canal_value(v: &Value) -> J {
    match v {
        Value::Null | Value::Unchanged => J::Null,
        Value::Bool(b) => J::from(if *b { "1" } else { "0" }),
        Value::Bytes(b) => J::String(b.iter().map(|&x| x as char).collect()),
        Value::Timestamp(t) => J::String(t.to_string().replacen('T', " ", 1)),
        Value::TimestampTz(_) => match value_json(v) {
            J::String(s) => J::String(s.trim_end_matches('Z').replacen('T', " ", 1)),
            other => other,
        },
        Value::List(_) => J::String(value_json(v).to_string()),
        _ => match value_json(v) {
            J::String(s) => J::String(s),
            J::Null => J::Null,
            other => J::String(other.to_string()),
        },
    }
}

/// The java.sql.Types code and MySQL type name Canal gives a column.
fn canal_types(c: &ColumnSchema, dialect: &str) -> (i32, String) {
    let (code, name) = match &c.data_type {
        DataType::Bool => (-7, "bit"),
        DataType::Int8 | DataType::UInt8 => (-6, "tinyint"),
        DataType::Int16 | DataType::UInt16 => (5, "smallint"),
        DataType::Int32 | DataType::UInt32 => (4, "int"),
        DataType::Int64 | DataType::UInt64 => (-5, "bigint"),
        DataType::Float32 => (7, "float"),
        DataType::Float64 => (8, "double"),
        DataType::Decimal => (3, "decimal"),
        DataType::Bytes => (2004, "blob"),
        DataType::Date => (91, "date"),
        DataType::Time => (92, "time"),
        DataType::Timestamp => (93, "datetime"),
        DataType::TimestampTz => (93, "timestamp"),
        DataType::Json => (12, "json"),
        DataType::Enum { .. } => (4, "enum"),
        DataType::Text => (12, "varchar"),
        _ => (12, "text"),
    };
    let name = if dialect == "mysql" && !c.native_type.is_empty() {
        c.native_type.clone()
    } else if c.data_type.is_unsigned() {
        format!("{name} unsigned")
    } else {
        name.to_string()
    };
    (code, name)
}

/// A value as Debezium's JSON converter writes it (see the module documentation).
fn debezium_value(c: &ColumnSchema, v: &Value) -> J {
    match (v, &c.data_type) {
        (Value::Date(d), _) if !d.is_infinite() => J::from(d.0),
        (Value::Time(t), _) => J::from(t.0),
        (Value::Timestamp(t), _) => t.micros().map(J::from).unwrap_or_else(|| value_json(v)),
        (Value::List(items), DataType::List(inner)) => {
            let inner = ColumnSchema { data_type: (**inner).clone(), ..c.clone() };
            J::Array(items.iter().map(|i| debezium_value(&inner, i)).collect())
        }
        (Value::Json(t), _) => J::String(t.to_string()),
        _ => value_json(v),
    }
}

fn row_object(format: Format, table: &TableSchema, row: &Row) -> J {
    let mut m = Map::with_capacity(row.len());
    for (c, v) in table.columns.iter().zip(row) {
        if *v != Value::Unchanged {
            m.insert(c.name.clone(), value(format, c, v));
        }
    }
    J::Object(m)
}

/// Context for the `source` block.
pub struct SourceInfo<'a> {
    pub pipeline: &'a str,
    /// Wrap values in Kafka Connect's `{"schema": ..., "payload": ...}` (debezium-json, json)
    pub schemas: bool,
}

/// The record value; `None` only where the format has none (never for these formats).
pub fn value_bytes(r: &Record<'_>, format: Format, info: &SourceInfo<'_>, now_ms: i64) -> Vec<u8> {
    let obj = |row: Option<&Row>| row.map_or(J::Null, |row| row_object(format, r.table, row));
    let v = match format {
        Format::Json | Format::Avro => {
            // With a schema block, values take the forms it declares (Debezium's).
            let values = if info.schemas { Format::DebeziumJson } else { format };
            let mut m = match r.keyed_row().map_or(J::Null, |row| row_object(values, r.table, row)) {
                J::Object(m) => m,
                _ => Map::new(),
            };
            m.insert("_op".into(), J::from(r.op));
            J::Object(m)
        }
        Format::CanalJson => {
            let t = r.table;
            let keys: Vec<&str> = t.key_indexes().into_iter().map(|i| t.columns[i].name.as_str()).collect();
            let (mut sql_type, mut mysql_type) = (Map::new(), Map::new());
            for c in &t.columns {
                let (code, name) = canal_types(c, &t.dialect);
                sql_type.insert(c.name.clone(), J::from(code));
                mysql_type.insert(c.name.clone(), J::from(name));
            }
            let es = r.txn.map(|x| x.commit_ts_micros.div_euclid(1000)).unwrap_or(now_ms);
            let kind = match r.op {
                "c" | "r" => "INSERT",
                "u" => "UPDATE",
                "d" => "DELETE",
                _ => "TRUNCATE",
            };
            let data = match r.keyed_row() {
                Some(row) if r.op != "t" => J::Array(vec![row_object(format, t, row)]),
                _ => J::Null,
            };
            // The old values of the columns that changed, when the source sent the old row.
            let old = match (r.op, r.before, r.after) {
                ("u", Some(before), Some(after)) => {
                    let mut m = Map::new();
                    for ((c, b), a) in t.columns.iter().zip(before).zip(after) {
                        if *b != Value::Unchanged && *a != Value::Unchanged && b != a {
                            m.insert(c.name.clone(), canal_value(b));
                        }
                    }
                    J::Array(vec![J::Object(m)])
                }
                _ => J::Null,
            };
            let ddl = r.op == "t";
            json!({
                "id": 0,
                "database": t.id.schema,
                "table": t.id.name,
                "pkNames": if keys.is_empty() { J::Null } else { json!(keys) },
                "isDdl": ddl,
                "type": kind,
                "es": es,
                "ts": now_ms,
                "sql": if ddl { format!("TRUNCATE TABLE {}", t.id) } else { String::new() },
                "sqlType": if ddl { J::Null } else { J::Object(sql_type) },
                "mysqlType": if ddl { J::Null } else { J::Object(mysql_type) },
                "data": data,
                "old": old,
            })
        }
        Format::DebeziumJson => {
            let ts_ms = r.txn.map(|t| t.commit_ts_micros.div_euclid(1000)).unwrap_or(now_ms);
            json!({
                "before": obj(r.before),
                "after": obj(r.after),
                "source": {
                    "version": env!("CARGO_PKG_VERSION"),
                    "connector": "sluice",
                    "name": info.pipeline,
                    "ts_ms": ts_ms,
                    "snapshot": if r.op == "r" { "true" } else { "false" },
                    "db": r.table.id.schema,
                    "schema": r.table.id.schema,
                    "table": r.table.id.name,
                    "txId": r.txn.map(|t| t.xid),
                    "position": r.txn.map(|t| t.position.to_string()),
                },
                "op": r.op,
                "ts_ms": now_ms,
                "transaction": null,
            })
        }
    };
    if info.schemas && matches!(format, Format::DebeziumJson | Format::Json) {
        return json!({ "schema": value_schema(r.table, format, info.pipeline), "payload": v })
            .to_string()
            .into_bytes();
    }
    v.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::{Date, Lsn, Position, TableId, Text, Timestamp};

    fn table() -> TableSchema {
        TableSchema {
            id: TableId::new("public", "orders"),
            columns: vec![
                ColumnSchema::new("id", DataType::Int64, "bigint").key(),
                ColumnSchema::new("item", DataType::Text, "text"),
                ColumnSchema::new("day", DataType::Date, "date"),
                ColumnSchema::new("at", DataType::Timestamp, "timestamp"),
            ],
            version: 1,
            dialect: "postgres".into(),
        }
    }

    fn row(id: i64, item: &str) -> Row {
        vec![
            Value::Int(id),
            Value::Text(Text::from(item)),
            Value::Date(Date::from_ymd(2024, 2, 29).unwrap()),
            Value::Timestamp(Timestamp::from_micros(1_000_001)),
        ]
    }

    #[test]
    fn debezium_envelopes_carry_before_after_op_and_source() {
        let t = table();
        let txn = TxnMeta { xid: 42, commit_ts_micros: 1_700_000_000_123_000, position: Position::Pg(Lsn(0x16B3748)) };
        let op = Op::Update { before: Some(row(1, "old")), after: row(1, "new") };
        let r = Record::change(&t, &op, Some(&txn));
        let info = SourceInfo { pipeline: "shop", schemas: false };
        let v: J = serde_json::from_slice(&value_bytes(&r, Format::DebeziumJson, &info, 5)).unwrap();
        assert_eq!(v["op"], "u");
        assert_eq!(v["before"]["item"], "old");
        assert_eq!(v["after"]["item"], "new");
        assert_eq!(v["after"]["day"], 19_782, "io.debezium.time.Date: days");
        assert_eq!(v["after"]["at"], 1_000_001, "io.debezium.time.MicroTimestamp");
        assert_eq!(v["source"]["table"], "orders");
        assert_eq!(v["source"]["txId"], 42);
        assert_eq!(v["source"]["ts_ms"], 1_700_000_000_123i64);
        assert_eq!(v["ts_ms"], 5);
        assert_eq!(key(&r, Format::DebeziumJson, false).unwrap(), br#"{"id":1}"#);
    }

    #[test]
    fn canal_messages_are_as_ticdc_writes_them() {
        let t = table();
        let txn = TxnMeta { xid: 1, commit_ts_micros: 1_639_633_094_670_000, position: Position::Pg(Lsn(1)) };
        let op = Op::Update { before: Some(row(1, "old")), after: row(1, "new") };
        let r = Record::change(&t, &op, Some(&txn));
        let info = SourceInfo { pipeline: "shop", schemas: false };
        let v: J = serde_json::from_slice(&value_bytes(&r, Format::CanalJson, &info, 9)).unwrap();
        assert_eq!(v["type"], "UPDATE");
        assert_eq!(v["database"], "public");
        assert_eq!(v["pkNames"], json!(["id"]));
        assert_eq!(v["isDdl"], false);
        assert_eq!(v["es"], 1_639_633_094_670i64);
        assert_eq!(
            v["data"],
            json!([{"id": "1", "item": "new", "day": "2024-02-29", "at": "1970-01-01 00:00:01.000001"}])
        );
        assert_eq!(v["old"], json!([{"item": "old"}]), "only the columns that changed");
        assert_eq!(v["sqlType"]["id"], -5);
        assert_eq!(v["mysqlType"]["day"], "date");
        let trunc = Op::Truncate;
        let v: J = serde_json::from_slice(&value_bytes(&Record::change(&t, &trunc, None), Format::CanalJson, &info, 0))
            .unwrap();
        assert_eq!((v["isDdl"].as_bool(), v["type"].as_str()), (Some(true), Some("TRUNCATE")));
    }

    #[test]
    fn flat_json_has_the_row_and_op() {
        let t = table();
        let op = Op::Delete { before: row(7, "gone") };
        let r = Record::change(&t, &op, None);
        let info = SourceInfo { pipeline: "shop", schemas: false };
        let v: J = serde_json::from_slice(&value_bytes(&r, Format::Json, &info, 0)).unwrap();
        assert_eq!(v["_op"], "d");
        assert_eq!(v["id"], 7);
        assert_eq!(v["day"], "2024-02-29");
        let copied = row(8, "x");
        let r = Record::copied(&t, &copied);
        assert_eq!(serde_json::from_slice::<J>(&value_bytes(&r, Format::Json, &info, 0)).unwrap()["_op"], "r");
        let trunc = Op::Truncate;
        assert_eq!(key(&Record::change(&t, &trunc, None), Format::Json, false), None);
    }
}
