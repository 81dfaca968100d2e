//! Avro decoding against a writer schema: schemas parsed once into a [`Node`] tree (named types
//! resolved, logical types and Kafka Connect/Debezium semantic names read), then bodies decoded
//! straight into Sluice's values.
//!
//! Column types come from, in order: Avro logical types (`decimal`, `date`, `time-*`,
//! `timestamp-*`, `local-timestamp-*`, `uuid`), Kafka Connect and Debezium names in
//! `connect.name` (`io.debezium.time.*`, `org.apache.kafka.connect.data.*`,
//! `io.debezium.data.Json`, `Uuid`, `Enum`, ...), `connect.type` (`int8`, `int16`), then the
//! Avro type itself.

use serde_json::{Map, Value as J};
use sluice_core::{ColumnSchema, DataType, Date, Decimal, Interval, Text, Time, Timestamp, Uuid, Value};

/// A schema that cannot be decoded with, or a body that does not match its schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(msg.into()))
}

/// What an `int` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntKind {
    Int8,
    Int16,
    Int32,
    /// days since 1970-01-01
    Date,
    /// milliseconds since midnight
    TimeMillis,
}

/// What a `long` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongKind {
    Int64,
    /// an instant, in this many units per second
    Instant(i64),
    /// a wall-clock date and time, in this many units per second
    Local(i64),
    /// a time of day, in this many units per second
    TimeOfDay(i64),
    /// a duration in microseconds (`io.debezium.time.MicroDuration`)
    MicroDuration,
}

/// What a `string` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrKind {
    Text,
    Uuid,
    Json,
    /// ISO 8601 with offset (`io.debezium.time.ZonedTimestamp`)
    ZonedTimestamp,
    /// an enum label (`io.debezium.data.Enum`)
    Enum,
    /// a decimal as text (Debezium's `decimal.handling.mode=string`)
    Decimal,
}

/// A parsed writer schema.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Boolean,
    Int(IntKind),
    Long(LongKind),
    Float,
    Double,
    /// `bytes`; a decimal when `decimal` is `Some((precision, scale))`
    Bytes {
        decimal: Option<(Option<u32>, u32)>,
    },
    Fixed {
        size: usize,
        decimal: Option<(Option<u32>, u32)>,
    },
    String(StrKind),
    Enum(Vec<String>),
    Array(Box<Node>),
    Map(Box<Node>),
    Union(Vec<Node>),
    Record(Record),
}

/// A record schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The full name (`namespace.name`)
    pub name: String,
    pub fields: Vec<Field>,
}

/// A record field.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The Avro name
    pub name: String,
    /// The column's name: `sluice.name` (or `__debezium.name`) when the writer sanitized it
    pub column: String,
    pub node: Node,
}

impl Record {
    /// The field named `name`.
    pub fn field(&self, name: &str) -> Option<(usize, &Field)> {
        self.fields.iter().enumerate().find(|(_, f)| f.name == name)
    }
}

impl Node {
    /// Parses a schema (as JSON text or a parsed document).
    pub fn parse(schema: &J) -> Result<Node, DecodeError> {
        let mut named = Vec::new();
        parse(schema, "", &mut named)
    }

    /// The schema of non-null values of a `["null", T]` union (or the node itself), and
    /// whether null is allowed.
    pub fn non_null(&self) -> (&Node, bool) {
        match self {
            Node::Union(branches) => {
                let nullable = branches.iter().any(|b| *b == Node::Null);
                let others: Vec<&Node> = branches.iter().filter(|b| **b != Node::Null).collect();
                match others.as_slice() {
                    [one] => (one, nullable),
                    _ => (self, nullable),
                }
            }
            n => (n, false),
        }
    }

    /// The column a field of this type becomes.
    pub fn column(&self, name: &str) -> ColumnSchema {
        let (node, nullable) = self.non_null();
        let mut c = ColumnSchema::new(name, node.data_type(), node.native_name());
        c.nullable = nullable;
        if let Node::Bytes { decimal: Some((p, s)) } | Node::Fixed { decimal: Some((p, s)), .. } = node {
            c.precision = *p;
            c.scale = Some(*s);
        }
        c
    }

    fn native_name(&self) -> String {
        match self {
            Node::Null => "null",
            Node::Boolean => "boolean",
            Node::Int(_) => "int",
            Node::Long(_) => "long",
            Node::Float => "float",
            Node::Double => "double",
            Node::Bytes { .. } => "bytes",
            Node::Fixed { .. } => "fixed",
            Node::String(_) => "string",
            Node::Enum(_) => "enum",
            Node::Array(_) => "array",
            Node::Map(_) => "map",
            Node::Union(_) => "union",
            Node::Record(_) => "record",
        }
        .to_string()
    }

    /// The logical type of this node's values.
    pub fn data_type(&self) -> DataType {
        match self {
            Node::Null => DataType::Other,
            Node::Boolean => DataType::Bool,
            Node::Int(IntKind::Int8) => DataType::Int8,
            Node::Int(IntKind::Int16) => DataType::Int16,
            Node::Int(IntKind::Int32) => DataType::Int32,
            Node::Int(IntKind::Date) => DataType::Date,
            Node::Int(IntKind::TimeMillis) | Node::Long(LongKind::TimeOfDay(_)) => DataType::Time,
            Node::Long(LongKind::Int64) => DataType::Int64,
            Node::Long(LongKind::Instant(_)) | Node::String(StrKind::ZonedTimestamp) => DataType::TimestampTz,
            Node::Long(LongKind::Local(_)) => DataType::Timestamp,
            Node::Long(LongKind::MicroDuration) => DataType::Interval,
            Node::Float => DataType::Float32,
            Node::Double => DataType::Float64,
            Node::Bytes { decimal: Some(_) }
            | Node::Fixed { decimal: Some(_), .. }
            | Node::String(StrKind::Decimal) => DataType::Decimal,
            Node::Bytes { decimal: None } | Node::Fixed { decimal: None, .. } => DataType::Bytes,
            Node::String(StrKind::Text) => DataType::Text,
            Node::String(StrKind::Uuid) => DataType::Uuid,
            Node::String(StrKind::Json) | Node::Map(_) | Node::Record(_) => DataType::Json,
            Node::String(StrKind::Enum) => DataType::Text,
            Node::Enum(labels) => DataType::Enum { labels: labels.clone() },
            Node::Array(items) => DataType::List(Box::new(items.non_null().0.data_type())),
            Node::Union(_) => DataType::Json,
        }
    }
}

fn parse(s: &J, ns: &str, named: &mut Vec<(String, Node)>) -> Result<Node, DecodeError> {
    match s {
        J::String(t) => primitive(t, &Map::new(), ns, named),
        J::Array(branches) => Ok(Node::Union(branches.iter().map(|b| parse(b, ns, named)).collect::<Result<_, _>>()?)),
        J::Object(o) => {
            let t = o.get("type").ok_or_else(|| DecodeError("a schema object without \"type\"".into()))?;
            match t {
                J::String(t) => primitive(t, o, ns, named),
                // {"type": {...}} or {"type": [...]}: the attributes wrap another schema
                other => parse(other, ns, named),
            }
        }
        other => err(format!("{other} is not an Avro schema")),
    }
}

fn full_name(o: &Map<String, J>, ns: &str) -> (String, String) {
    let name = o.get("name").and_then(J::as_str).unwrap_or("");
    if name.contains('.') {
        let ns = name.rsplit_once('.').map(|(n, _)| n).unwrap_or("");
        return (name.to_string(), ns.to_string());
    }
    let ns = o.get("namespace").and_then(J::as_str).unwrap_or(ns);
    (if ns.is_empty() { name.to_string() } else { format!("{ns}.{name}") }, ns.to_string())
}

fn param(o: &Map<String, J>, key: &str) -> Option<u32> {
    let from = |v: &J| v.as_u64().map(|n| n as u32).or_else(|| v.as_str().and_then(|s| s.parse().ok()));
    o.get(key).and_then(from).or_else(|| o.get("connect.parameters").and_then(|p| p.get(key)).and_then(from))
}

fn decimal_params(o: &Map<String, J>) -> (Option<u32>, u32) {
    let precision = param(o, "precision").or_else(|| param(o, "connect.decimal.precision"));
    (precision, param(o, "scale").unwrap_or(0))
}

fn primitive(t: &str, o: &Map<String, J>, ns: &str, named: &mut Vec<(String, Node)>) -> Result<Node, DecodeError> {
    let logical = o.get("logicalType").and_then(J::as_str).unwrap_or("");
    let connect = o.get("connect.name").and_then(J::as_str).unwrap_or("");
    let connect_type = o.get("connect.type").and_then(J::as_str).unwrap_or("");
    Ok(match t {
        "null" => Node::Null,
        "boolean" => Node::Boolean,
        "int" => Node::Int(match (logical, connect, connect_type) {
            ("date", ..) | (_, "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date", _) => IntKind::Date,
            ("time-millis", ..) | (_, "io.debezium.time.Time" | "org.apache.kafka.connect.data.Time", _) => {
                IntKind::TimeMillis
            }
            (_, _, "int8") => IntKind::Int8,
            (_, _, "int16") => IntKind::Int16,
            _ => IntKind::Int32,
        }),
        "long" => Node::Long(match (logical, connect) {
            ("timestamp-millis", _) | (_, "org.apache.kafka.connect.data.Timestamp") => LongKind::Instant(1_000),
            ("timestamp-micros", _) => LongKind::Instant(1_000_000),
            ("timestamp-nanos", _) => LongKind::Instant(1_000_000_000),
            ("local-timestamp-millis", _) | (_, "io.debezium.time.Timestamp") => LongKind::Local(1_000),
            ("local-timestamp-micros", _) | (_, "io.debezium.time.MicroTimestamp") => LongKind::Local(1_000_000),
            ("local-timestamp-nanos", _) | (_, "io.debezium.time.NanoTimestamp") => LongKind::Local(1_000_000_000),
            ("time-micros", _) | (_, "io.debezium.time.MicroTime") => LongKind::TimeOfDay(1_000_000),
            (_, "io.debezium.time.NanoTime") => LongKind::TimeOfDay(1_000_000_000),
            (_, "io.debezium.time.MicroDuration") => LongKind::MicroDuration,
            _ => LongKind::Int64,
        }),
        "float" => Node::Float,
        "double" => Node::Double,
        "bytes" => Node::Bytes {
            decimal: (logical == "decimal" || connect == "org.apache.kafka.connect.data.Decimal")
                .then(|| decimal_params(o)),
        },
        "string" => Node::String(match (logical, connect) {
            ("uuid", _) | (_, "io.debezium.data.Uuid") => StrKind::Uuid,
            (_, "io.debezium.data.Json") => StrKind::Json,
            (_, "io.debezium.time.ZonedTimestamp") => StrKind::ZonedTimestamp,
            (_, "io.debezium.data.Enum") => StrKind::Enum,
            _ if o.get("connect.parameters").and_then(|p| p.get("__debezium.source.column.type")).is_some()
                && matches!(
                    o["connect.parameters"]["__debezium.source.column.type"].as_str(),
                    Some("NUMERIC" | "DECIMAL" | "numeric" | "decimal")
                ) =>
            {
                StrKind::Decimal
            }
            _ => StrKind::Text,
        }),
        "fixed" => {
            let (full, _) = full_name(o, ns);
            let size = o.get("size").and_then(J::as_u64).ok_or_else(|| DecodeError("fixed without a size".into()))?;
            let node = Node::Fixed { size: size as usize, decimal: (logical == "decimal").then(|| decimal_params(o)) };
            named.push((full, node.clone()));
            node
        }
        "enum" => {
            let (full, _) = full_name(o, ns);
            let labels: Vec<String> = o
                .get("symbols")
                .and_then(J::as_array)
                .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            let node = Node::Enum(labels);
            named.push((full, node.clone()));
            node
        }
        "array" => Node::Array(Box::new(parse(
            o.get("items").ok_or_else(|| DecodeError("array without items".into()))?,
            ns,
            named,
        )?)),
        "map" => Node::Map(Box::new(parse(
            o.get("values").ok_or_else(|| DecodeError("map without values".into()))?,
            ns,
            named,
        )?)),
        "record" | "error" => {
            let (full, inner_ns) = full_name(o, ns);
            let mut fields = Vec::new();
            for f in o
                .get("fields")
                .and_then(J::as_array)
                .ok_or_else(|| DecodeError(format!("record {full} without fields")))?
            {
                let name =
                    f.get("name").and_then(J::as_str).ok_or_else(|| DecodeError("a field without a name".into()))?;
                let ty = f.get("type").ok_or_else(|| DecodeError(format!("field {name} without a type")))?;
                let node = parse(ty, &inner_ns, named)?;
                let column = f
                    .get("sluice.name")
                    .or_else(|| f.get("__debezium.name"))
                    .and_then(J::as_str)
                    .unwrap_or(name)
                    .to_string();
                fields.push(Field { name: name.to_string(), column, node });
            }
            let node = Node::Record(Record { name: full.clone(), fields });
            named.push((full, node.clone()));
            node
        }
        other => {
            // A reference to a named type defined earlier.
            let full = if other.contains('.') || ns.is_empty() { other.to_string() } else { format!("{ns}.{other}") };
            match named.iter().rev().find(|(n, _)| *n == full || *n == other) {
                Some((_, node)) => node.clone(),
                None => return err(format!("unknown Avro type {other:?}")),
            }
        }
    })
}

/// Reads Avro binary data.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn long(&mut self) -> Result<i64, DecodeError> {
        let mut z: u64 = 0;
        let mut shift = 0;
        loop {
            let Some((&b, rest)) = self.buf.split_first() else { return err("the data ends inside a number") };
            self.buf = rest;
            if shift >= 64 {
                return err("a number longer than 10 bytes");
            }
            z |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        Ok((z >> 1) as i64 ^ -((z & 1) as i64))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return err(format!("the data ends {} bytes short", n - self.buf.len()));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.long()?;
        if n < 0 {
            return err(format!("a negative length {n}"));
        }
        self.take(n as usize)
    }

    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes()?).map_err(|e| DecodeError(format!("a string that is not UTF-8: {e}")))
    }

    /// The branch of a union.
    pub fn branch<'n>(&mut self, branches: &'n [Node]) -> Result<&'n Node, DecodeError> {
        let i = self.long()?;
        branches
            .get(i as usize)
            .filter(|_| i >= 0)
            .ok_or_else(|| DecodeError(format!("union branch {i} of {}", branches.len())))
    }

    /// Reads one value of `node` as a column value.
    pub fn value(&mut self, node: &Node) -> Result<Value, DecodeError> {
        Ok(match node {
            Node::Null => Value::Null,
            Node::Boolean => Value::Bool(self.take(1)?[0] != 0),
            Node::Int(k) => {
                let n = self.long()?;
                match k {
                    IntKind::Int8 | IntKind::Int16 | IntKind::Int32 => Value::Int(n),
                    IntKind::Date => Value::Date(Date(n as i32)),
                    IntKind::TimeMillis => Value::Time(Time(n * 1_000)),
                }
            }
            Node::Long(k) => {
                let n = self.long()?;
                match k {
                    LongKind::Int64 => Value::Int(n),
                    LongKind::Instant(per) => Value::TimestampTz(Timestamp::from_units(n, *per)),
                    LongKind::Local(per) => Value::Timestamp(Timestamp::from_units(n, *per)),
                    LongKind::TimeOfDay(per) => Value::Time(Time(n * 1_000_000 / per)),
                    LongKind::MicroDuration => Value::Interval(Interval { months: 0, days: 0, micros: n }),
                }
            }
            Node::Float => Value::Float32(f32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"))),
            Node::Double => Value::Float64(f64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"))),
            Node::Bytes { decimal } | Node::Fixed { decimal, .. } => {
                let b = match node {
                    Node::Fixed { size, .. } => self.take(*size)?,
                    _ => self.bytes()?,
                };
                match decimal {
                    Some((_, scale)) => Value::Decimal(decimal_from_twos(b, *scale)),
                    None => Value::Bytes(b.to_vec().into()),
                }
            }
            Node::String(k) => {
                let s = self.str()?;
                match k {
                    StrKind::Text => Value::Text(Text::from(s)),
                    StrKind::Enum => Value::Text(Text::from(s)),
                    StrKind::Json => Value::Json(Text::from(s)),
                    StrKind::Uuid => Value::Uuid(Uuid::parse(s).map_err(|e| DecodeError(e.0))?),
                    StrKind::ZonedTimestamp => Value::TimestampTz(parse_instant(s)?),
                    StrKind::Decimal => Value::Decimal(Decimal::parse(s).map_err(|e| DecodeError(e.0))?),
                }
            }
            Node::Enum(labels) => {
                let i = self.long()?;
                let label =
                    labels.get(i as usize).ok_or_else(|| DecodeError(format!("enum index {i} of {}", labels.len())))?;
                Value::Enum(Text::from(label.as_str()))
            }
            Node::Array(items) => {
                let mut out = Vec::new();
                self.blocks(|r| {
                    out.push(r.value(items)?);
                    Ok(())
                })?;
                Value::List(out)
            }
            Node::Union(branches) => {
                let b = self.branch(branches)?;
                self.value(b)?
            }
            Node::Map(_) | Node::Record(_) => Value::Json(Text::from(self.json(node)?.to_string().as_str())),
        })
    }

    /// Reads the items of an array or map, block by block.
    fn blocks(&mut self, mut item: impl FnMut(&mut Self) -> Result<(), DecodeError>) -> Result<(), DecodeError> {
        loop {
            let mut n = self.long()?;
            if n == 0 {
                return Ok(());
            }
            if n < 0 {
                n = -n;
                self.long()?; // the block's size in bytes
            }
            for _ in 0..n {
                item(self)?;
            }
        }
    }

    /// Reads one value of `node` as JSON (for nested records and maps).
    pub fn json(&mut self, node: &Node) -> Result<J, DecodeError> {
        Ok(match node {
            Node::Record(r) => {
                let mut m = Map::new();
                for f in &r.fields {
                    m.insert(f.column.clone(), self.json(&f.node)?);
                }
                J::Object(m)
            }
            Node::Map(values) => {
                let mut m = Map::new();
                self.blocks(|r| {
                    let k = r.str()?.to_string();
                    m.insert(k, r.json(values)?);
                    Ok(())
                })?;
                J::Object(m)
            }
            Node::Array(items) => {
                let mut a = Vec::new();
                self.blocks(|r| {
                    a.push(r.json(items)?);
                    Ok(())
                })?;
                J::Array(a)
            }
            Node::Union(branches) => {
                let b = self.branch(branches)?;
                self.json(b)?
            }
            other => sluice_core::json::value_json(&self.value(other)?),
        })
    }

    /// Skips one value of `node`.
    pub fn skip(&mut self, node: &Node) -> Result<(), DecodeError> {
        match node {
            Node::Null => {}
            Node::Boolean => {
                self.take(1)?;
            }
            Node::Int(_) | Node::Long(_) | Node::Enum(_) => {
                self.long()?;
            }
            Node::Float => {
                self.take(4)?;
            }
            Node::Double => {
                self.take(8)?;
            }
            Node::Bytes { .. } | Node::String(_) => {
                self.bytes()?;
            }
            Node::Fixed { size, .. } => {
                self.take(*size)?;
            }
            Node::Array(items) => self.blocks(|r| r.skip(items))?,
            Node::Map(values) => self.blocks(|r| {
                r.bytes()?;
                r.skip(values)
            })?,
            Node::Union(branches) => {
                let b = self.branch(branches)?;
                self.skip(b)?;
            }
            Node::Record(r) => {
                for f in &r.fields {
                    self.skip(&f.node)?;
                }
            }
        }
        Ok(())
    }

    /// Reads a record's fields as a row, in field order.
    pub fn row(&mut self, record: &Record) -> Result<Vec<Value>, DecodeError> {
        let mut row = Vec::with_capacity(record.fields.len());
        for f in &record.fields {
            row.push(self.value(&f.node).map_err(|e| DecodeError(format!("field {}: {}", f.name, e.0)))?);
        }
        Ok(row)
    }
}

/// An ISO 8601 instant with an offset (`2024-02-29T10:00:00.123456Z`, `...+02:00`).
pub fn parse_instant(s: &str) -> Result<Timestamp, DecodeError> {
    let bad = || DecodeError(format!("{s:?} is not an ISO 8601 timestamp with an offset"));
    let (date, rest) = s.split_once(['T', ' ']).ok_or_else(bad)?;
    let mut d = date.splitn(3, '-');
    let (y, m, dd) = (d.next(), d.next(), d.next());
    let (y, m, dd): (i64, u32, u32) = match (y, m, dd) {
        (Some(y), Some(m), Some(dd)) => {
            (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?, dd.parse().map_err(|_| bad())?)
        }
        _ => return Err(bad()),
    };
    let zone_at = rest.find(['Z', 'z', '+', '-']).ok_or_else(bad)?;
    let (clock, zone) = rest.split_at(zone_at);
    let offset_secs: i64 = match zone {
        "Z" | "z" => 0,
        z => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let digits: String = z[1..].chars().filter(|c| c.is_ascii_digit()).collect();
            let (h, mm) = match digits.len() {
                2 => (digits.parse::<i64>().map_err(|_| bad())?, 0),
                4 => (digits[..2].parse::<i64>().map_err(|_| bad())?, digits[2..].parse::<i64>().map_err(|_| bad())?),
                _ => return Err(bad()),
            };
            sign * (h * 3600 + mm * 60)
        }
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut parts = hms.splitn(3, ':');
    let mut num = || -> Result<i64, DecodeError> { parts.next().unwrap_or("0").parse::<i64>().map_err(|_| bad()) };
    let (h, mi, sec) = (num()?, num()?, num()?);
    if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
        return Err(bad());
    }
    let nanos: u32 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().map_err(|_| bad())? };
    let days = sluice_core::days_from_civil(y, m, dd);
    Ok(Timestamp::new(days * 86_400 + h * 3600 + mi * 60 + sec - offset_secs, nanos))
}

/// The decimal whose unscaled value is the big-endian two's complement `b`.
pub fn decimal_from_twos(b: &[u8], scale: u32) -> Decimal {
    let negative = b.first().is_some_and(|x| x & 0x80 != 0);
    let mut mag: Vec<u8> = if negative {
        // -(x): invert and add one
        let mut m: Vec<u8> = b.iter().map(|x| !x).collect();
        for x in m.iter_mut().rev() {
            let (s, carry) = x.overflowing_add(1);
            *x = s;
            if !carry {
                break;
            }
        }
        m
    } else {
        b.to_vec()
    };
    // Base 256 to base 10 by repeated division.
    let mut digits = Vec::new();
    while mag.iter().any(|x| *x != 0) {
        let mut rem = 0u32;
        for x in mag.iter_mut() {
            let cur = (rem << 8) | *x as u32;
            *x = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    if digits.is_empty() {
        digits.push(b'0');
    }
    digits.reverse();
    let unscaled = String::from_utf8(digits).expect("ASCII digits");
    Decimal::from_unscaled(negative, &unscaled, scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_core::{TableId, TableSchema};

    #[test]
    fn what_the_encoder_writes_decodes_to_the_same_values() {
        let mut cols = vec![
            ColumnSchema::new("id", DataType::Int64, "bigint").key(),
            ColumnSchema::new("small", DataType::Int16, "smallint"),
            ColumnSchema::new("amount", DataType::Decimal, "numeric"),
            ColumnSchema::new("day", DataType::Date, "date"),
            ColumnSchema::new("at", DataType::Timestamp, "timestamp"),
            ColumnSchema::new("tz", DataType::TimestampTz, "timestamptz"),
            ColumnSchema::new("t", DataType::Time, "time"),
            ColumnSchema::new("u", DataType::Uuid, "uuid"),
            ColumnSchema::new("tags", DataType::List(Box::new(DataType::Text)), "text[]"),
            ColumnSchema::new("odd name", DataType::Text, "text"),
            ColumnSchema::new("big", DataType::UInt64, "bigint unsigned"),
        ];
        cols[2].precision = Some(14);
        cols[2].scale = Some(2);
        let table = TableSchema { id: TableId::new("app", "t"), columns: cols, version: 1, dialect: "postgres".into() };
        let names = crate::RecordNames { name: "Value".into(), namespace: "p.app.t".into() };
        let all: Vec<usize> = (0..table.columns.len()).collect();
        let node = Node::parse(&crate::record_schema(&table, &all, &names)).unwrap();
        let Node::Record(rec) = &node else { panic!("{node:?}") };
        assert_eq!(rec.name, "p.app.t.Value");
        assert_eq!(rec.fields[9].column, "odd name", "the original name is kept");
        // uint64 travels as decimal(20, 0): it comes back a decimal.
        assert_eq!(rec.fields[10].node.column("big").data_type, DataType::Decimal);
        for (f, c) in rec.fields.iter().zip(&table.columns).take(10) {
            let d = f.node.column(&f.column);
            assert_eq!((d.data_type.clone(), d.nullable), (c.data_type.clone(), c.nullable), "{}", c.name);
        }
        assert_eq!(
            (rec.fields[2].node.column("a").precision, rec.fields[2].node.column("a").scale),
            (Some(14), Some(2))
        );
        let row = vec![
            Value::Int(-9),
            Value::Int(300),
            Value::Decimal(Decimal::parse("-1234.50").unwrap()),
            Value::Date(Date::from_ymd(2024, 2, 29).unwrap()),
            Value::Timestamp(Timestamp::from_micros(-1)),
            Value::TimestampTz(Timestamp::from_micros(1_700_000_000_123_456)),
            Value::Time(Time(45_296_000_001)),
            Value::Uuid(Uuid::parse("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap()),
            Value::List(vec![Value::Text(Text::from("a")), Value::Null]),
            Value::Null,
            Value::UInt(u64::MAX),
        ];
        let mut body = Vec::new();
        crate::encode_row(&table, &all, &row, &mut body).unwrap();
        let mut r = Reader::new(&body);
        let got = r.row(rec).unwrap();
        assert_eq!(r.remaining(), 0);
        let mut want = row.clone();
        want[10] = Value::Decimal(Decimal::parse("18446744073709551615").unwrap());
        assert_eq!(got, want);
    }

    #[test]
    fn debezium_avro_envelopes_parse_with_named_references_and_connect_types() {
        let schema = json!({
            "type": "record", "name": "Envelope", "namespace": "dbserver1.inventory.customers",
            "fields": [
                {"name": "before", "type": ["null", {"type": "record", "name": "Value", "fields": [
                    {"name": "id", "type": "int"},
                    {"name": "born", "type": ["null", {"type": "int", "connect.name": "io.debezium.time.Date"}], "default": null},
                    {"name": "seen", "type": ["null", {"type": "string", "connect.name": "io.debezium.time.ZonedTimestamp"}], "default": null},
                    {"name": "level", "type": {"type": "int", "connect.type": "int16"}},
                    {"name": "price", "type": {"type": "bytes", "scale": 2, "precision": 8, "connect.name": "org.apache.kafka.connect.data.Decimal", "logicalType": "decimal"}},
                    {"name": "at", "type": {"type": "long", "connect.name": "io.debezium.time.MicroTimestamp"}}
                ]}], "default": null},
                {"name": "after", "type": ["null", "Value"], "default": null},
                {"name": "op", "type": "string"},
                {"name": "ts_ms", "type": ["null", "long"], "default": null}
            ]
        });
        let node = Node::parse(&schema).unwrap();
        let Node::Record(env) = &node else { panic!() };
        let (_, after) = env.field("after").unwrap();
        let (value, nullable) = after.node.non_null();
        assert!(nullable);
        let Node::Record(v) = value else { panic!("{value:?}") };
        assert_eq!(v.name, "dbserver1.inventory.customers.Value");
        let types: Vec<DataType> = v.fields.iter().map(|f| f.node.column(&f.name).data_type).collect();
        assert_eq!(
            types,
            vec![
                DataType::Int32,
                DataType::Date,
                DataType::TimestampTz,
                DataType::Int16,
                DataType::Decimal,
                DataType::Timestamp
            ]
        );
        // after = {id 7, born 2 days, seen "2024-02-29T10:00:00.5+01:00", level 3, price -1.23, at 1s}
        let mut body = vec![0u8]; // before: null
        body.push(2); // after: branch 1
        body.push(14); // id 7
        body.extend([2, 4]); // born: 2
        body.push(2);
        let s = b"2024-02-29T10:00:00.5+01:00";
        body.push((s.len() * 2) as u8);
        body.extend_from_slice(s);
        body.push(6); // level 3
        body.extend([2, 0x85]); // price: 1 byte, 0x85 = -123
        body.extend([0x80, 0x89, 0x7a]); // at: 1_000_000 zigzag = 2_000_000
        body.extend([2, b'c']);
        body.push(0); // ts_ms null
        let mut r = Reader::new(&body);
        assert_eq!(r.value(&env.fields[0].node).unwrap(), Value::Null);
        let (b, _) = env.fields[1].node.non_null();
        let Node::Record(rec) = b else { panic!() };
        assert_eq!(r.long().unwrap(), 1, "after: the record branch");
        let row = r.row(rec).unwrap();
        assert_eq!(row[0], Value::Int(7));
        assert_eq!(row[1], Value::Date(Date(2)));
        assert_eq!(row[2], Value::TimestampTz(Timestamp::new(1_709_197_200, 500_000_000)));
        assert_eq!(row[3], Value::Int(3));
        assert_eq!(row[4], Value::Decimal(Decimal::parse("-1.23").unwrap()));
        assert_eq!(row[5], Value::Timestamp(Timestamp::from_micros(1_000_000)));
        assert_eq!(r.value(&env.fields[2].node).unwrap(), Value::Text(Text::from("c")));
        r.skip(&env.fields[3].node).unwrap();
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn truncated_or_wrong_bodies_are_errors() {
        let node =
            Node::parse(&json!({"type": "record", "name": "r", "fields": [{"name": "s", "type": "string"}]})).unwrap();
        let Node::Record(rec) = &node else { panic!() };
        let e = Reader::new(&[20, b'a']).row(rec).unwrap_err();
        assert!(e.0.contains("field s") && e.0.contains("short"), "{e}");
        assert!(
            Node::parse(&json!({"type": "record", "name": "r", "fields": [{"name": "x", "type": "Nope"}]})).is_err()
        );
        assert_eq!(decimal_from_twos(&[0x00, 0x80], 0), Decimal::parse("128").unwrap());
        assert_eq!(decimal_from_twos(&[0xff, 0x7f], 1), Decimal::parse("-12.9").unwrap());
    }
}
