//! Kafka records back into changes: the JSON formats here, Avro in `avro_decode.rs`.
//!
//! - `debezium-json`: the envelope (`before`, `after`, `op`, `source`, `ts_ms`), bare or inside
//!   Kafka Connect's `{"schema": ..., "payload": ...}`. With the schema block, columns are typed
//!   by it (`int32`, `io.debezium.time.Date`, `org.apache.kafka.connect.data.Decimal`, ...);
//!   without it, by what the JSON holds. A tombstone (no value) after a delete is skipped.
//! - `json`: a flat row, with `_op` (or Debezium unwrap's `__op`, `__deleted`) when present; a
//!   record without a value deletes its key.
//! - `canal-json`: Canal's message as TiCDC and Canal write it, every row in `data`, typed by
//!   `mysqlType`; `TRUNCATE` DDL truncates.
//!
//! Keys are JSON objects of the key columns (optionally with a schema block); they name the
//! table's key.

use serde::Deserialize;
use serde_json::Value as J;
use sluice_core::{ColumnSchema, DataType, Decimal, Text, Time, Timestamp, Value};

use crate::text;

/// What a record changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Insert,
    Update,
    Delete,
    Truncate,
}

/// One change of a record (canal messages carry several).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub kind: Kind,
    /// Values aligned with [`Decoded::columns`]
    pub before: Option<Vec<Value>>,
    pub after: Option<Vec<Value>>,
}

/// A decoded record.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Schema and table, when the record names them
    pub schema: Option<String>,
    pub table: Option<String>,
    /// The row's shape as this record has it (key columns marked); shared by the records of
    /// one writer schema where the decoder can tell
    pub columns: std::sync::Arc<Vec<ColumnSchema>>,
    pub changes: Vec<Change>,
    /// Source commit time, milliseconds since the epoch
    pub ts_ms: Option<i64>,
}

/// The JSON of a record: without the Confluent framing (magic byte 0 and a 4-byte schema id)
/// that confluent-kafka's `JSONSerializer` puts before it (JSON text never starts with 0).
pub fn json_body(b: &[u8]) -> &[u8] {
    match b {
        [0, _, _, _, _, rest @ ..] => rest,
        _ => b,
    }
}

/// A JSON object with its keys in the order written.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Ordered(pub Vec<(String, J)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, J>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Ordered {
    fn get(&self, k: &str) -> Option<&J> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v)
    }
}

/// A Kafka Connect schema (the JSON converter's schema block).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ConnectSchema {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub optional: bool,
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub parameters: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    pub fields: Vec<ConnectSchema>,
    #[serde(default)]
    pub items: Option<Box<ConnectSchema>>,
}

impl ConnectSchema {
    fn field(&self, name: &str) -> Option<&ConnectSchema> {
        self.fields.iter().find(|f| f.field.as_deref() == Some(name))
    }

    fn param(&self, k: &str) -> Option<u32> {
        self.parameters.as_ref().and_then(|p| p.get(k)).and_then(|v| v.parse().ok())
    }

    /// The column this field becomes.
    pub fn column(&self) -> ColumnSchema {
        let name = self.field.clone().unwrap_or_default();
        let mut c = ColumnSchema::new(name, self.data_type(), self.name.clone().unwrap_or_else(|| self.kind.clone()));
        c.nullable = self.optional;
        if c.data_type == DataType::Decimal {
            c.scale = self.param("scale").or_else(|| self.param("__debezium.source.column.scale"));
            c.precision =
                self.param("connect.decimal.precision").or_else(|| self.param("__debezium.source.column.length"));
        }
        c
    }

    fn data_type(&self) -> DataType {
        match (self.name.as_deref().unwrap_or(""), self.kind.as_str()) {
            ("io.debezium.time.Date" | "org.apache.kafka.connect.data.Date", _) => DataType::Date,
            (
                "io.debezium.time.Time"
                | "io.debezium.time.MicroTime"
                | "io.debezium.time.NanoTime"
                | "org.apache.kafka.connect.data.Time",
                _,
            ) => DataType::Time,
            (
                "io.debezium.time.Timestamp" | "io.debezium.time.MicroTimestamp" | "io.debezium.time.NanoTimestamp",
                _,
            ) => DataType::Timestamp,
            ("io.debezium.time.ZonedTimestamp" | "org.apache.kafka.connect.data.Timestamp", _) => DataType::TimestampTz,
            ("org.apache.kafka.connect.data.Decimal", _) => DataType::Decimal,
            ("io.debezium.data.Json", _) => DataType::Json,
            ("io.debezium.data.Uuid", _) => DataType::Uuid,
            (_, "boolean") => DataType::Bool,
            (_, "int8") => DataType::Int8,
            (_, "int16") => DataType::Int16,
            (_, "int32") => DataType::Int32,
            (_, "int64") => DataType::Int64,
            (_, "float" | "float32") => DataType::Float32,
            (_, "double" | "float64") => DataType::Float64,
            (_, "bytes") => DataType::Bytes,
            // decimal.handling.mode=string, with column.propagate.source.type
            (_, "string")
                if self.parameters.as_ref().and_then(|p| p.get("__debezium.source.column.type")).is_some_and(|t| {
                    let t = t.to_ascii_uppercase();
                    t == "DECIMAL" || t == "NUMERIC"
                }) =>
            {
                DataType::Decimal
            }
            (_, "array") => {
                DataType::List(Box::new(self.items.as_ref().map(|i| i.data_type()).unwrap_or(DataType::Text)))
            }
            (_, "map" | "struct") => DataType::Json,
            _ => DataType::Text,
        }
    }

    /// A value of this field from the JSON converter's form.
    pub fn value(&self, v: &J) -> Result<Value, String> {
        if v.is_null() {
            return Ok(Value::Null);
        }
        let int = || v.as_i64().ok_or_else(|| format!("{v} is not an integer"));
        Ok(match self.name.as_deref().unwrap_or("") {
            "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date" => {
                Value::Date(sluice_core::Date(int()? as i32))
            }
            "io.debezium.time.Time" | "org.apache.kafka.connect.data.Time" => Value::Time(Time(int()? * 1_000)),
            "io.debezium.time.MicroTime" => Value::Time(Time(int()?)),
            "io.debezium.time.NanoTime" => Value::Time(Time(int()? / 1_000)),
            "io.debezium.time.Timestamp" => Value::Timestamp(Timestamp::from_units(int()?, 1_000)),
            "io.debezium.time.MicroTimestamp" => Value::Timestamp(Timestamp::from_units(int()?, 1_000_000)),
            "io.debezium.time.NanoTimestamp" => Value::Timestamp(Timestamp::from_units(int()?, 1_000_000_000)),
            "org.apache.kafka.connect.data.Timestamp" => Value::TimestampTz(Timestamp::from_units(int()?, 1_000)),
            "io.debezium.time.ZonedTimestamp" => Value::TimestampTz(text::instant(v.as_str().unwrap_or_default())?),
            "org.apache.kafka.connect.data.Decimal" => match v {
                // base64 of the unscaled two's complement (Debezium's decimal.handling.mode=precise)
                J::String(s) if !s.contains('.') && Decimal::parse(s).is_err() => {
                    use base64::Engine;
                    let b = base64::engine::general_purpose::STANDARD
                        .decode(s)
                        .map_err(|e| format!("decimal bytes: {e}"))?;
                    Value::Decimal(sluice_avro::decode::decimal_from_twos(&b, self.param("scale").unwrap_or(0)))
                }
                J::String(s) => Value::Decimal(Decimal::parse(s).map_err(|e| e.0)?),
                other => Value::Decimal(Decimal::parse(&other.to_string()).map_err(|e| e.0)?),
            },
            "io.debezium.data.Json" => Value::Json(Text::from(v.as_str().unwrap_or_default())),
            _ => match (self.kind.as_str(), v) {
                ("array", J::Array(items)) => {
                    let inner = self.items.as_deref().cloned().unwrap_or_default();
                    Value::List(items.iter().map(|i| inner.value(i)).collect::<Result<_, _>>()?)
                }
                (_, v) => text::from_json(&self.data_type(), v)?,
            },
        })
    }
}

#[derive(Deserialize)]
struct Wrapped<T> {
    schema: ConnectSchema,
    payload: T,
}

/// `{"schema": ..., "payload": ...}` (Kafka Connect's JSON converter with schemas) or the bare
/// payload, read with objects in written order.
fn unwrap_schema<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<(Option<ConnectSchema>, T), String> {
    if let Ok(w) = serde_json::from_slice::<Wrapped<T>>(bytes) {
        return Ok((Some(w.schema), w.payload));
    }
    serde_json::from_slice::<T>(bytes).map(|t| (None, t)).map_err(|e| format!("not the expected JSON: {e}"))
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    before: Option<Ordered>,
    #[serde(default)]
    after: Option<Ordered>,
    #[serde(default)]
    op: Option<String>,
    #[serde(default)]
    source: Option<J>,
    #[serde(default)]
    ts_ms: Option<i64>,
}

/// The key's column names (a JSON object of the key columns); none for another kind of key.
pub fn key_names(key: Option<&[u8]>) -> Result<Vec<String>, String> {
    let Some(key) = key else { return Ok(Vec::new()) };
    Ok(match unwrap_schema::<Ordered>(key) {
        Ok((_, o)) => o.0.into_iter().map(|(k, _)| k).collect(),
        Err(_) => Vec::new(),
    })
}

/// The native type of a column typed by what plain JSON held (no schema said).
pub const INFERRED: &str = "json";

/// Builds columns from the rows' fields (in first-seen order), typed by `schema` when given,
/// else by the values; then the rows aligned to them.
struct Shape {
    columns: Vec<ColumnSchema>,
    schema: Option<ConnectSchema>,
}

impl Shape {
    fn new(schema: Option<ConnectSchema>) -> Shape {
        let columns = schema.as_ref().map(|s| s.fields.iter().map(ConnectSchema::column).collect()).unwrap_or_default();
        Shape { columns, schema }
    }

    fn learn(&mut self, row: &Ordered, skip: &[&str]) {
        for (k, v) in &row.0 {
            if skip.contains(&k.as_str()) || self.columns.iter().any(|c| &c.name == k) {
                continue;
            }
            self.columns.push(ColumnSchema::new(k.clone(), text::inferred(v), INFERRED));
        }
        for c in self.columns.iter_mut() {
            // A column first seen as null is typed by a later record's value.
            if c.native_type == INFERRED && c.data_type == DataType::Text {
                if let Some(v) = row.get(&c.name).filter(|v| !v.is_null()) {
                    c.data_type = text::inferred(v);
                }
            }
        }
    }

    fn row(&self, row: &Ordered) -> Result<Vec<Value>, String> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let Some(v) = row.get(&c.name) else { return Ok(Value::Null) };
                let r = match self.schema.as_ref().and_then(|s| s.fields.get(i)) {
                    Some(f) => f.value(v),
                    None => text::from_json(&c.data_type, v),
                };
                r.map_err(|e| format!("column {}: {e}", c.name))
            })
            .collect()
    }

    fn mark_key(&mut self, names: &[String]) {
        for c in self.columns.iter_mut() {
            if names.contains(&c.name) {
                c.key = true;
                c.nullable = false;
            }
        }
    }
}

/// A `debezium-json` record; `None` for a tombstone.
pub fn debezium(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Option<Decoded>, String> {
    let Some(value) = value else { return Ok(None) };
    let (schema, p) = unwrap_schema::<Envelope>(value)?;
    let Some(op) = p.op.as_deref() else {
        return Err("no \"op\": not a Debezium change event (a flat row? use format = \"json\")".into());
    };
    let row_schema = schema.as_ref().and_then(|s| s.field("after").or_else(|| s.field("before"))).cloned();
    let mut shape = Shape::new(row_schema);
    let (before, after) = (p.before, p.after);
    for r in before.iter().chain(after.iter()) {
        shape.learn(r, &[]);
    }
    shape.mark_key(&key_names(key)?);
    let source = p.source.as_ref();
    let s = |k: &str| source.and_then(|s| s.get(k)).and_then(J::as_str).map(str::to_string);
    let kind = match op {
        "c" | "r" => Kind::Insert,
        "u" => Kind::Update,
        "d" => Kind::Delete,
        "t" => Kind::Truncate,
        other => return Err(format!("unknown op {other:?}")),
    };
    let change = Change {
        kind,
        before: before.as_ref().map(|r| shape.row(r)).transpose()?,
        after: after.as_ref().map(|r| shape.row(r)).transpose()?,
    };
    Ok(Some(Decoded {
        schema: s("schema").or_else(|| s("db")),
        table: s("table"),
        columns: std::sync::Arc::new(shape.columns),
        changes: vec![change],
        ts_ms: source.and_then(|s| s.get("ts_ms")).and_then(J::as_i64).or(p.ts_ms),
    }))
}

/// Fields of the flat formats that carry metadata, not columns.
pub const FLAT_META: &[&str] =
    &["_op", "__op", "__deleted", "__source_ts_ms", "__ts_ms", "__table", "__db", "__schema"];

/// The op a flat row carries (`_op`/`__op`, or `__deleted = "true"`), insert when none.
pub fn flat_kind(op: Option<&str>, deleted: bool) -> Result<Kind, String> {
    Ok(match op {
        _ if deleted => Kind::Delete,
        None | Some("c" | "r") => Kind::Insert,
        Some("u") => Kind::Update,
        Some("d") => Kind::Delete,
        Some("t") => Kind::Truncate,
        Some(other) => return Err(format!("unknown op {other:?}")),
    })
}

/// A `json` record: a flat row; no value deletes the key.
pub fn flat(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Option<Decoded>, String> {
    let names = key_names(key)?;
    let Some(value) = value else {
        // A tombstone: delete by key.
        let Some(key) = key else { return Ok(None) };
        let (schema, row) = unwrap_schema::<Ordered>(key).map_err(|e| format!("the key: {e}"))?;
        let mut shape = Shape::new(schema);
        shape.learn(&row, &[]);
        shape.mark_key(&names);
        let before = shape.row(&row)?;
        return Ok(Some(Decoded {
            schema: None,
            table: None,
            columns: std::sync::Arc::new(shape.columns),
            changes: vec![Change { kind: Kind::Delete, before: Some(before), after: None }],
            ts_ms: None,
        }));
    };
    let (mut schema, row) = unwrap_schema::<Ordered>(value)?;
    if let Some(s) = schema.as_mut() {
        s.fields.retain(|f| !FLAT_META.contains(&f.field.as_deref().unwrap_or("")));
    }
    let mut shape = Shape::new(schema);
    shape.learn(&row, FLAT_META);
    shape.mark_key(&names);
    let op = row.get("_op").or_else(|| row.get("__op")).and_then(J::as_str);
    let deleted = row.get("__deleted").is_some_and(|d| d == "true" || d == &J::Bool(true));
    let kind = flat_kind(op, deleted)?;
    let values = shape.row(&row)?;
    let change = match kind {
        Kind::Delete => Change { kind, before: Some(values), after: None },
        Kind::Truncate => Change { kind, before: None, after: None },
        _ => Change { kind, before: None, after: Some(values) },
    };
    let meta = |k: &str| row.get(k).and_then(J::as_str).map(str::to_string);
    Ok(Some(Decoded {
        schema: meta("__schema").or_else(|| meta("__db")),
        table: meta("__table"),
        columns: std::sync::Arc::new(shape.columns),
        changes: vec![change],
        ts_ms: row.get("__source_ts_ms").and_then(J::as_i64),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Canal {
    #[serde(default)]
    database: Option<String>,
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    pk_names: Option<Vec<String>>,
    #[serde(default)]
    is_ddl: bool,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    es: Option<i64>,
    #[serde(default)]
    mysql_type: Option<Ordered>,
    #[serde(default)]
    data: Option<Vec<Ordered>>,
    #[serde(default)]
    old: Option<Vec<Ordered>>,
}

/// The type a `mysqlType` names (`int unsigned`, `decimal(14,2)`, `varchar(255)`, ...).
pub fn mysql_type(name: &str) -> ColumnSchema {
    let lower = name.to_ascii_lowercase();
    let unsigned = lower.contains("unsigned");
    let base = lower.split(['(', ' ']).next().unwrap_or("");
    let args: Vec<u32> = lower
        .split_once('(')
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(a, _)| a.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_default();
    let t = match (base, unsigned) {
        ("bit", _) if args.first().is_none_or(|n| *n == 1) => DataType::Bool,
        ("bool" | "boolean", _) => DataType::Bool,
        ("tinyint", false) => DataType::Int8,
        ("tinyint", true) => DataType::UInt8,
        ("smallint" | "year", false) => DataType::Int16,
        ("smallint", true) => DataType::UInt16,
        ("mediumint" | "int" | "integer", false) => DataType::Int32,
        ("mediumint" | "int" | "integer", true) => DataType::UInt32,
        ("bigint", false) => DataType::Int64,
        ("bigint", true) => DataType::UInt64,
        ("float", _) => DataType::Float32,
        ("double" | "real", _) => DataType::Float64,
        ("decimal" | "numeric", _) => DataType::Decimal,
        ("date", _) => DataType::Date,
        ("time", _) => DataType::Time,
        ("datetime", _) => DataType::Timestamp,
        ("timestamp", _) => DataType::TimestampTz,
        ("json", _) => DataType::Json,
        ("blob" | "tinyblob" | "mediumblob" | "longblob" | "binary" | "varbinary" | "bit", _) => DataType::Bytes,
        _ => DataType::Text,
    };
    let mut c = ColumnSchema::new("", t, name);
    if c.data_type == DataType::Decimal {
        c.precision = args.first().copied();
        c.scale = Some(args.get(1).copied().unwrap_or(0));
    }
    c
}

/// A `canal-json` message.
pub fn canal(value: Option<&[u8]>) -> Result<Option<Decoded>, String> {
    let Some(value) = value else { return Ok(None) };
    let m: Canal = serde_json::from_slice(value).map_err(|e| format!("not a Canal JSON message: {e}"))?;
    let kind = match (m.is_ddl, m.kind.as_str()) {
        (true, "TRUNCATE") => Kind::Truncate,
        (true, _) => return Ok(None), // other DDL: the next rows carry the new shape
        (false, "INSERT") => Kind::Insert,
        (false, "UPDATE") => Kind::Update,
        (false, "DELETE") => Kind::Delete,
        (false, other) => return Err(format!("unknown message type {other:?}")),
    };
    let keys = m.pk_names.unwrap_or_default();
    let mut columns: Vec<ColumnSchema> = Vec::new();
    if let Some(types) = &m.mysql_type {
        for (name, t) in &types.0 {
            let mut c = mysql_type(t.as_str().unwrap_or("text"));
            c.name = name.clone();
            columns.push(c);
        }
    }
    for row in m.data.iter().flatten() {
        for (k, _) in &row.0 {
            if !columns.iter().any(|c| &c.name == k) {
                columns.push(ColumnSchema::new(k.clone(), DataType::Text, "text"));
            }
        }
    }
    for c in columns.iter_mut() {
        if keys.contains(&c.name) {
            c.key = true;
            c.nullable = false;
        }
    }
    let typed = |row: &Ordered, base: Option<&[Value]>| -> Result<Vec<Value>, String> {
        columns
            .iter()
            .enumerate()
            .map(|(i, c)| match row.get(&c.name) {
                None => Ok(base.map(|b| b[i].clone()).unwrap_or(Value::Null)),
                Some(J::Null) => Ok(Value::Null),
                Some(J::String(s)) => text::from_text(&c.data_type, s).map_err(|e| format!("column {}: {e}", c.name)),
                Some(other) => text::from_json(&c.data_type, other).map_err(|e| format!("column {}: {e}", c.name)),
            })
            .collect()
    };
    let mut changes = Vec::new();
    if kind == Kind::Truncate {
        changes.push(Change { kind, before: None, after: None });
    }
    for (i, row) in m.data.iter().flatten().enumerate() {
        let values = typed(row, None)?;
        changes.push(match kind {
            Kind::Insert => Change { kind: Kind::Insert, before: None, after: Some(values) },
            Kind::Delete => Change { kind: Kind::Delete, before: Some(values), after: None },
            _ => {
                // `old` holds the changed columns' old values; the rest are as after.
                let before = match m.old.as_ref().and_then(|o| o.get(i)) {
                    Some(old) => Some(typed(old, Some(&values))?),
                    None => None,
                };
                Change { kind: Kind::Update, before, after: Some(values) }
            }
        });
    }
    Ok(Some(Decoded {
        schema: m.database,
        table: m.table,
        columns: std::sync::Arc::new(columns),
        changes,
        ts_ms: m.es,
    }))
}

/// A timestamp in milliseconds as Sluice's commit time (microseconds).
pub fn ms_to_micros(ms: i64) -> i64 {
    ms.saturating_mul(1_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn debezium_events_with_a_schema_block_are_typed_by_it() {
        let schema = json!({"type": "struct", "fields": [
            {"type": "struct", "optional": true, "field": "before", "fields": [
                {"type": "int32", "optional": false, "field": "id"},
                {"type": "int32", "optional": true, "name": "io.debezium.time.Date", "field": "born"},
                {"type": "bytes", "optional": true, "name": "org.apache.kafka.connect.data.Decimal",
                 "parameters": {"scale": "2", "connect.decimal.precision": "8"}, "field": "price"},
                {"type": "string", "optional": true, "name": "io.debezium.time.ZonedTimestamp", "field": "seen"}
            ]},
            {"type": "struct", "optional": true, "field": "after", "fields": [
                {"type": "int32", "optional": false, "field": "id"},
                {"type": "int32", "optional": true, "name": "io.debezium.time.Date", "field": "born"},
                {"type": "bytes", "optional": true, "name": "org.apache.kafka.connect.data.Decimal",
                 "parameters": {"scale": "2", "connect.decimal.precision": "8"}, "field": "price"},
                {"type": "string", "optional": true, "name": "io.debezium.time.ZonedTimestamp", "field": "seen"}
            ]},
            {"type": "string", "optional": false, "field": "op"}
        ]});
        let value = json!({"schema": schema, "payload": {
            "before": null,
            "after": {"id": 7, "born": 2, "price": "/4U=", "seen": "2024-02-29T10:00:00Z"},
            "op": "c", "ts_ms": 5,
            "source": {"db": "inventory", "table": "customers", "ts_ms": 4}
        }});
        let key =
            json!({"schema": {"type": "struct", "fields": [{"type": "int32", "field": "id"}]}, "payload": {"id": 7}});
        let d = debezium(Some(key.to_string().as_bytes()), Some(value.to_string().as_bytes())).unwrap().unwrap();
        assert_eq!((d.schema.as_deref(), d.table.as_deref(), d.ts_ms), (Some("inventory"), Some("customers"), Some(4)));
        let types: Vec<_> = d.columns.iter().map(|c| (c.name.as_str(), c.data_type.clone(), c.key)).collect();
        assert_eq!(
            types,
            vec![
                ("id", DataType::Int32, true),
                ("born", DataType::Date, false),
                ("price", DataType::Decimal, false),
                ("seen", DataType::TimestampTz, false)
            ]
        );
        assert_eq!(d.columns[2].scale, Some(2));
        let after = d.changes[0].after.as_ref().unwrap();
        assert_eq!(after[1], Value::Date(sluice_core::Date(2)));
        assert_eq!(after[2], Value::Decimal(Decimal::parse("-1.23").unwrap()), "base64 0xff85 = -123 at scale 2");
        assert_eq!(debezium(None, None).unwrap(), None, "tombstones are skipped");
        assert!(debezium(None, Some(br#"{"id": 1}"#)).unwrap_err().contains("format = \"json\""));
    }

    /// What the sink writes with `schemas = true` decodes to the same columns and values.
    #[test]
    fn sluice_debezium_json_with_schemas_round_trips() {
        use crate::format::{key, value_bytes, Format, Record, SourceInfo};
        use sluice_core::{Date, Op, TableId, TableSchema, Timestamp, Uuid};
        let mut amount = ColumnSchema::new("amount", DataType::Decimal, "numeric");
        amount.precision = Some(10);
        amount.scale = Some(2);
        let t = TableSchema {
            id: TableId::new("public", "orders"),
            columns: vec![
                ColumnSchema::new("id", DataType::Int32, "int4").key(),
                ColumnSchema::new("item", DataType::Text, "text"),
                amount,
                ColumnSchema::new("day", DataType::Date, "date"),
                ColumnSchema::new("at", DataType::TimestampTz, "timestamptz"),
                ColumnSchema::new("local", DataType::Timestamp, "timestamp"),
                ColumnSchema::new("u", DataType::Uuid, "uuid"),
                ColumnSchema::new("flag", DataType::Bool, "bool"),
            ],
            version: 1,
            dialect: "postgres".into(),
        };
        let row = vec![
            Value::Int(7),
            Value::Text(Text::from("x")),
            Value::Decimal(Decimal::parse("12.50").unwrap()),
            Value::Date(Date::from_ymd(2024, 2, 29).unwrap()),
            Value::TimestampTz(Timestamp::from_micros(1_700_000_000_123_456)),
            Value::Timestamp(Timestamp::from_micros(-1)),
            Value::Uuid(Uuid::parse("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap()),
            Value::Null,
        ];
        let op = Op::Insert { after: row.clone() };
        let r = Record::change(&t, &op, None);
        let info = SourceInfo { pipeline: "shop", schemas: true };
        let v = value_bytes(&r, Format::DebeziumJson, &info, 0);
        let k = key(&r, Format::DebeziumJson, true).unwrap();
        let d = debezium(Some(&k), Some(&v)).unwrap().unwrap();
        for (got, want) in d.columns.iter().zip(&t.columns) {
            assert_eq!(
                (&got.name, &got.data_type, got.key, got.precision, got.scale),
                (&want.name, &want.data_type, want.key, want.precision, want.scale)
            );
        }
        assert_eq!(d.changes[0].after.as_ref().unwrap(), &row);
        let f = flat(Some(&k), Some(&value_bytes(&r, Format::Json, &info, 0))).unwrap().unwrap();
        assert_eq!(f.columns.len(), t.columns.len(), "_op is not a column");
        assert_eq!(f.columns[3].data_type, DataType::Date);
    }

    #[test]
    fn confluent_framed_json_is_read_past_its_frame() {
        let framed = [&[0u8, 0, 0, 0, 7][..], br#"{"id": 1, "v": "x"}"#].concat();
        let d = flat(Some(json_body(br#"{"id": 1}"#)), Some(json_body(&framed))).unwrap().unwrap();
        assert_eq!(d.changes[0].after.as_ref().unwrap(), &vec![Value::Int(1), Value::Text(Text::from("x"))]);
    }

    #[test]
    fn schemaless_debezium_and_flat_rows_keep_column_order() {
        let d = debezium(
            Some(br#"{"z": 1}"#),
            Some(br#"{"before": null, "after": {"z": 1, "a": "x", "m": null}, "op": "r"}"#),
        )
        .unwrap()
        .unwrap();
        let names: Vec<_> = d.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["z", "a", "m"]);
        assert_eq!(d.changes[0].kind, Kind::Insert);
        let f = flat(Some(br#"{"id": 3}"#), Some(br#"{"id": 3, "v": 1.5, "_op": "u"}"#)).unwrap().unwrap();
        assert_eq!(f.columns.len(), 2, "_op is not a column");
        assert_eq!(f.changes[0].kind, Kind::Update);
        let del = flat(Some(br#"{"id": 3}"#), None).unwrap().unwrap();
        assert_eq!(del.changes[0], Change { kind: Kind::Delete, before: Some(vec![Value::Int(3)]), after: None });
    }

    #[test]
    fn canal_messages_are_typed_by_mysql_type() {
        // Raw text: the order of mysqlType's keys is the column order.
        let m = r#"{"id": 0, "database": "app", "table": "orders", "pkNames": ["id"], "isDdl": false, "type": "UPDATE",
            "es": 1639633094670, "ts": 1, "sql": "", "sqlType": {"id": -5, "amount": 3, "at": 93},
            "mysqlType": {"id": "bigint", "amount": "decimal(14,2)", "at": "datetime"},
            "data": [{"id": "1", "amount": "12.50", "at": "2024-02-29 10:00:00"}],
            "old": [{"amount": "10.00"}]}"#;
        let d = canal(Some(m.as_bytes())).unwrap().unwrap();
        assert_eq!(d.columns[1].scale, Some(2));
        assert!(d.columns[0].key);
        let c = &d.changes[0];
        assert_eq!(c.after.as_ref().unwrap()[1], Value::Decimal(Decimal::parse("12.50").unwrap()));
        assert_eq!(c.before.as_ref().unwrap()[1], Value::Decimal(Decimal::parse("10.00").unwrap()));
        assert_eq!(c.before.as_ref().unwrap()[0], Value::Int(1), "unchanged columns are as after");
        assert_eq!(mysql_type("int unsigned").data_type, DataType::UInt32);
        let t = json!({"database": "app", "table": "orders", "isDdl": true, "type": "TRUNCATE", "data": null});
        assert_eq!(canal(Some(t.to_string().as_bytes())).unwrap().unwrap().changes[0].kind, Kind::Truncate);
    }
}
