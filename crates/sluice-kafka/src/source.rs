//! The Kafka source: a consumer in a group; each record becomes one source transaction whose
//! position is its partition's next offset.
//!
//! ```text
//!  subscribe ─▶ rebalance: partitions handed to this process are claimed (Event::Claim):
//!               every sink makes what it accepted durable and reads what its target holds
//!               now (another process of the pipeline may have applied the partition since);
//!               then each partition is assigned at the meet of the sinks' offsets, or at
//!               `start` when no sink holds one; never at the group's committed offset, which
//!               may trail what the sinks made durable
//!  record    ─▶ decode (format) ─▶ Begin ─ Change... ─ Commit { topic: { partition: offset + 1 } }
//!               a record that says nothing (a tombstone after a delete) ─▶ Heartbeat
//!               a record that cannot be decoded ─▶ dead-letter topic, then Heartbeat;
//!               without one, the pipeline stops naming topic, partition and offset
//!  confirmed ─▶ commit the group's offsets (for lag monitoring and other tools)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use sluice_core::{
    Claimed, ColumnSchema, ConnectorError, ErrorClass, Event, KafkaOffsets, Op, Position, Resume, SchemaRef, Source,
    SourceContext, TableId, TableSchema, TxnMeta, Value,
};
use tokio::sync::{mpsc, watch, Notify};
use tracing::{debug, info, warn};

use crate::decode::{self, Change, Decoded, Kind};
use crate::format::Format;
use crate::source_config::KafkaSourceConfig;

/// How long a broker call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The partitions of this process, shared with the rebalance callback.
#[derive(Default)]
struct Starts {
    /// Partitions the group handed to this process that are not claimed and assigned yet
    handed: Vec<(String, i32)>,
    /// Partitions assigned now, by topic (looked up by `&str` for every record)
    assigned: HashMap<String, BTreeMap<i32, Part>>,
}

/// An assigned partition.
#[derive(Debug, Clone, Copy)]
struct Part {
    /// The offset it started at (`None`: at `start`)
    start: Option<i64>,
    /// The next offset expected (records below it are dropped)
    expected: Option<i64>,
}

impl Starts {
    fn part(&self, topic: &str, partition: i32) -> Option<&Part> {
        self.assigned.get(topic).and_then(|p| p.get(&partition))
    }

    fn revoke(&mut self, topic: &str, partition: i32) {
        if let Some(parts) = self.assigned.get_mut(topic) {
            parts.remove(&partition);
        }
    }

    fn parts(&self) -> impl Iterator<Item = (&String, i32, &Part)> {
        self.assigned.iter().flat_map(|(t, ps)| ps.iter().map(move |(p, part)| (t, *p, part)))
    }
}

struct Rebalancing {
    starts: Arc<Mutex<Starts>>,
    /// Woken when partitions are handed over, so they are claimed without waiting for a record
    handed: Arc<Notify>,
}

impl ClientContext for Rebalancing {}

impl ConsumerContext for Rebalancing {
    /// Partitions handed over are not assigned here: the source claims them first (which
    /// needs the sinks, asynchronously) and assigns them at the offsets the sinks hold. The
    /// group waits meanwhile (librdkafka keeps heart-beating until the assign call).
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let Ok(mut s) = self.starts.lock() else { return };
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                for e in tpl.elements() {
                    info!(topic = %e.topic(), partition = e.partition(), "partition handed to this process");
                    s.handed.push((e.topic().to_string(), e.partition()));
                }
                self.handed.notify_one();
            }
            _ => {
                for e in tpl.elements() {
                    let k = (e.topic().to_string(), e.partition());
                    info!(topic = %k.0, partition = k.1, "partition revoked");
                    s.handed.retain(|h| *h != k);
                    s.revoke(&k.0, k.1);
                }
                let done = match consumer.rebalance_protocol() {
                    RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
                    _ => consumer.unassign(),
                };
                if let Err(e) = done {
                    warn!(error = %e, "cannot give up the revoked partitions");
                }
            }
        }
    }
}

/// How a claim ended.
enum ClaimEnd {
    /// The partitions are assigned at the offsets the sinks hold.
    Assigned,
    /// The pipeline is stopping; the partitions stay unassigned.
    Stopping,
}

/// The source.
pub struct KafkaSource {
    cfg: KafkaSourceConfig,
    pipeline: String,
}

impl KafkaSource {
    pub fn new(cfg: KafkaSourceConfig, pipeline: &str) -> KafkaSource {
        KafkaSource { cfg, pipeline: pipeline.to_string() }
    }
}

fn kafka_err(what: &str) -> impl Fn(KafkaError) -> ConnectorError + '_ {
    move |e| ConnectorError::msg(ErrorClass::Transient, format!("kafka: {what}: {e}"))
}

/// The shapes of the tables seen, and how a record's columns map onto them.
#[derive(Default)]
struct Shapes {
    tables: HashMap<TableId, SchemaRef>,
    /// Per table, the last record shape seen and where its columns go in the table's shape
    /// then: records of one writer schema skip the work below.
    last: HashMap<TableId, (Arc<Vec<ColumnSchema>>, SchemaRef, Arc<[Option<usize>]>)>,
}

impl Shapes {
    /// The table's shape covering `columns` (a new version when they add or change a column),
    /// and for each of the table's columns the index in `columns` it comes from.
    fn shape(&mut self, id: &TableId, columns: &Arc<Vec<ColumnSchema>>) -> (SchemaRef, Arc<[Option<usize>]>) {
        if let (Some((cols, schema, map)), Some(current)) = (self.last.get(id), self.tables.get(id)) {
            if Arc::ptr_eq(schema, current) && (Arc::ptr_eq(cols, columns) || cols == columns) {
                return (schema.clone(), map.clone());
            }
        }
        let (schema, map) = self.merge(id, columns);
        let map: Arc<[Option<usize>]> = map.into();
        self.last.insert(id.clone(), (columns.clone(), schema.clone(), map.clone()));
        (schema, map)
    }

    fn merge(&mut self, id: &TableId, columns: &[ColumnSchema]) -> (SchemaRef, Vec<Option<usize>>) {
        let has_key = columns.iter().any(|c| c.key);
        let (merged, changed) = match self.tables.get(id) {
            None => (columns.to_vec(), true),
            Some(old) => {
                let mut merged = old.columns.clone();
                let mut changed = false;
                for c in columns {
                    match merged.iter_mut().find(|m| m.name == c.name) {
                        Some(m) if m.same_type(c) && (m.key == c.key || !has_key) => {}
                        // Types guessed from plain JSON stay as first guessed; values are
                        // converted to them (see `coerce`).
                        Some(m) if m.native_type == decode::INFERRED && c.native_type == decode::INFERRED => {}
                        Some(m) => {
                            let key = if has_key { c.key } else { m.key };
                            *m = c.clone();
                            m.key = key;
                            if key {
                                m.nullable = false;
                            }
                            changed = true;
                        }
                        None => {
                            merged.push(c.clone());
                            changed = true;
                        }
                    }
                }
                (merged, changed)
            }
        };
        if changed {
            let names: Vec<&str> = merged.iter().map(|c| c.name.as_str()).collect();
            info!(table = %id, columns = ?names, "table shape from the records");
            let schema = Arc::new(TableSchema {
                id: id.clone(),
                columns: merged,
                version: sluice_core::next_version(),
                dialect: "kafka".into(),
            });
            self.tables.insert(id.clone(), schema);
        }
        let schema = self.tables[id].clone();
        let map = schema.columns.iter().map(|c| columns.iter().position(|x| x.name == c.name)).collect();
        (schema, map)
    }
}

fn aligned(row: Option<Vec<Value>>, map: &[Option<usize>], schema: &TableSchema) -> Option<Vec<Value>> {
    row.map(|mut r| {
        map.iter()
            .zip(&schema.columns)
            .map(|(m, c)| m.map_or(Value::Null, |i| coerce(std::mem::replace(&mut r[i], Value::Null), c)))
            .collect()
    })
}

/// A value of a column whose type was guessed from plain JSON, in that type: a number in a
/// column first seen holding text becomes text, an integer in a float column a float.
fn coerce(v: Value, c: &ColumnSchema) -> Value {
    if c.native_type != decode::INFERRED {
        return v;
    }
    match (&c.data_type, v) {
        (_, Value::Null) => Value::Null,
        (sluice_core::DataType::Text, Value::Text(t)) => Value::Text(t),
        (sluice_core::DataType::Text, v) => {
            let j = sluice_core::json::value_json(&v);
            Value::Text(sluice_core::Text::from(
                j.as_str().map(str::to_string).unwrap_or_else(|| j.to_string()).as_str(),
            ))
        }
        (sluice_core::DataType::Float64, Value::Int(i)) => Value::Float64(i as f64),
        (sluice_core::DataType::Json, v @ Value::Json(_)) => v,
        (sluice_core::DataType::Json, v) => {
            Value::Json(sluice_core::Text::from(sluice_core::json::value_json(&v).to_string().as_str()))
        }
        (_, v) => v,
    }
}

/// Avro records: writer schemas fetched from the registry by id, once; only record schemas
/// are kept (a key or value of another type is refused when first seen). What a pair of writer
/// schemas says about the row (its columns, the table its names give) is worked out once per
/// pair, not per record.
struct AvroRecords {
    registry: sluice_registry::RegistryClient,
    records: HashMap<u32, Arc<sluice_avro::decode::Record>>,
    shapes: HashMap<(Option<u32>, Option<u32>), Arc<AvroShape>>,
}

/// What a (key schema, value schema) pair says about the rows of its records.
struct AvroShape {
    columns: Arc<Vec<ColumnSchema>>,
    /// The table the record's name gives (flat rows and deletes; an envelope names it in its
    /// `source` block instead)
    schema: Option<String>,
    table: Option<String>,
    /// The value is a Debezium envelope (`before`, `after`, `op`)
    envelope: bool,
}

impl AvroShape {
    /// The shape of records written with `key` (a record schema, if any) and `value` (`None`:
    /// deletes carrying only a key).
    fn new(key: Option<&sluice_avro::decode::Record>, value: Option<&sluice_avro::decode::Record>) -> AvroShape {
        let key_names: Vec<&str> =
            key.map(|r| r.fields.iter().map(|f| f.column.as_str()).collect()).unwrap_or_default();
        let mark = |mut c: ColumnSchema| {
            if key_names.contains(&c.name.as_str()) {
                c = c.key();
            }
            c
        };
        let Some(rec) = value else {
            let columns =
                key.map(|k| k.fields.iter().map(|f| f.node.column(&f.column).key()).collect()).unwrap_or_default();
            // A key record named as Debezium and Sluice name them (`<prefix>.<schema>.<table>.Key`)
            // says the table; any other key name (`shop.OrderKey`) says nothing, and the topic does.
            let (schema, table) =
                key.filter(|k| k.name.ends_with(".Key")).map(|k| table_of(&k.name)).unwrap_or((None, None));
            return AvroShape { columns: Arc::new(columns), schema, table, envelope: false };
        };
        let envelope = rec.field("op").is_some() && (rec.field("after").is_some() || rec.field("before").is_some());
        if envelope {
            let inner = rec.fields.iter().filter(|f| f.name == "after" || f.name == "before").find_map(|f| {
                match f.node.non_null().0 {
                    sluice_avro::Node::Record(r) => Some(r),
                    _ => None,
                }
            });
            let columns =
                inner.map(|r| r.fields.iter().map(|x| mark(x.node.column(&x.column))).collect()).unwrap_or_default();
            return AvroShape { columns: Arc::new(columns), schema: None, table: None, envelope };
        }
        let columns =
            rec.fields.iter().filter(|f| !is_flat_meta(&f.name)).map(|f| mark(f.node.column(&f.column))).collect();
        let (schema, table) = table_of(&rec.name);
        AvroShape { columns: Arc::new(columns), schema, table, envelope }
    }
}

/// Fields of flat Avro rows that carry metadata, not columns.
fn is_flat_meta(name: &str) -> bool {
    matches!(name, "__op" | "_tidb_op" | "__deleted" | "__source_ts_ms" | "_tidb_commit_physical_time")
        || name.starts_with("_tidb_")
        || decode::FLAT_META.contains(&name)
}

impl AvroRecords {
    /// The writer's record schema of a framed record, its id and its Avro body.
    async fn record<'b>(
        &mut self,
        framed: &'b [u8],
    ) -> Result<(u32, Arc<sluice_avro::decode::Record>, &'b [u8]), String> {
        let (id, body) = sluice_avro::unframe(framed)?;
        if let Some(r) = self.records.get(&id) {
            return Ok((id, r.clone(), body));
        }
        let text = self.registry.schema(id).await.map_err(|e| format!("schema {id} from the registry: {e}"))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("schema {id}: {e}"))?;
        let sluice_avro::Node::Record(rec) =
            sluice_avro::Node::parse(&json).map_err(|e| format!("schema {id}: {e}"))?
        else {
            return Err(format!("schema {id} is not a record"));
        };
        let rec = Arc::new(rec);
        self.records.insert(id, rec.clone());
        Ok((id, rec, body))
    }

    fn shape(
        &mut self,
        key: Option<(u32, &sluice_avro::decode::Record)>,
        value: Option<(u32, &sluice_avro::decode::Record)>,
    ) -> Arc<AvroShape> {
        self.shapes
            .entry((key.map(|k| k.0), value.map(|v| v.0)))
            .or_insert_with(|| Arc::new(AvroShape::new(key.map(|k| k.1), value.map(|v| v.1))))
            .clone()
    }

    async fn decode(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Option<Decoded>, String> {
        let key_rec = match key {
            Some(k) if !k.is_empty() => {
                let (id, rec, body) = self.record(k).await?;
                let row = sluice_avro::Reader::new(body).row(&rec).map_err(|e| e.0)?;
                Some((id, rec, row))
            }
            _ => None,
        };
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            // No value: a delete of the key (Debezium's unwrap, TiCDC, Sluice's avro format).
            let Some((id, rec, row)) = key_rec else { return Ok(None) };
            let shape = self.shape(Some((id, &rec)), None);
            return Ok(Some(Decoded {
                schema: shape.schema.clone(),
                table: shape.table.clone(),
                columns: shape.columns.clone(),
                changes: vec![Change { kind: Kind::Delete, before: Some(row), after: None }],
                ts_ms: None,
            }));
        };
        let (vid, rec, body) = self.record(value).await?;
        let shape = self.shape(key_rec.as_ref().map(|(id, r, _)| (*id, &**r)), Some((vid, &rec)));
        let mut r = sluice_avro::Reader::new(body);
        if shape.envelope {
            let (mut before, mut after, mut op, mut source, mut ts) = (None, None, String::new(), None, None);
            for f in &rec.fields {
                match f.name.as_str() {
                    "before" | "after" => {
                        let row = match &f.node {
                            sluice_avro::Node::Union(branches) => match r.branch(branches).map_err(|e| e.0)? {
                                sluice_avro::Node::Record(rr) => Some(r.row(rr).map_err(|e| e.0)?),
                                other => {
                                    r.skip(other).map_err(|e| e.0)?;
                                    None
                                }
                            },
                            sluice_avro::Node::Record(rr) => Some(r.row(rr).map_err(|e| e.0)?),
                            other => {
                                r.skip(other).map_err(|e| e.0)?;
                                None
                            }
                        };
                        if f.name == "before" {
                            before = row;
                        } else {
                            after = row;
                        }
                    }
                    "op" => op = r.str().map_err(|e| e.0)?.to_string(),
                    "source" => source = Some(r.json(&f.node).map_err(|e| e.0)?),
                    "ts_ms" => {
                        ts = match r.value(&f.node).map_err(|e| e.0)? {
                            Value::Int(n) => Some(n),
                            _ => None,
                        }
                    }
                    _ => r.skip(&f.node).map_err(|e| e.0)?,
                }
            }
            let kind = decode::flat_kind(Some(op.as_str()), false)?;
            let s = |k: &str| source.as_ref().and_then(|s| s.get(k)).and_then(|v| v.as_str()).map(str::to_string);
            let src_ts = source.as_ref().and_then(|s| s.get("ts_ms")).and_then(|v| v.as_i64());
            return Ok(Some(Decoded {
                schema: s("schema").or_else(|| s("db")),
                table: s("table"),
                columns: shape.columns.clone(),
                changes: vec![Change { kind, before, after }],
                ts_ms: src_ts.or(ts),
            }));
        }
        // A flat row (Sluice's avro, Debezium's unwrap, TiCDC's avro).
        let row = r.row(&rec).map_err(|e| e.0)?;
        let mut values = Vec::with_capacity(shape.columns.len());
        let (mut op, mut deleted, mut ts) = (None, false, None);
        for (f, v) in rec.fields.iter().zip(row) {
            match f.name.as_str() {
                "__op" | "_tidb_op" => op = v.as_str().map(str::to_string),
                "__deleted" => deleted = matches!(&v, Value::Bool(true)) || v.as_str() == Some("true"),
                "__source_ts_ms" | "_tidb_commit_physical_time" => {
                    if let Value::Int(n) = v {
                        ts = Some(n)
                    }
                }
                n if is_flat_meta(n) => {}
                _ => values.push(v),
            }
        }
        let kind = decode::flat_kind(op.as_deref(), deleted)?;
        let change = match kind {
            Kind::Delete => Change { kind, before: Some(values), after: None },
            Kind::Truncate => Change { kind, before: None, after: None },
            _ => Change { kind, before: None, after: Some(values) },
        };
        Ok(Some(Decoded {
            schema: shape.schema.clone(),
            table: shape.table.clone(),
            columns: shape.columns.clone(),
            changes: vec![change],
            ts_ms: ts,
        }))
    }
}

/// The schema and table an Avro record's full name gives: `<prefix>.<schema>.<table>.Value`
/// (or `.Key`, `.Envelope`: Debezium, Sluice), or `<schema>.<table>`, or just `<table>`.
fn table_of(record: &str) -> (Option<String>, Option<String>) {
    let parts: Vec<&str> = record.split('.').collect();
    let parts = match parts.last() {
        Some(&"Value") | Some(&"Key") | Some(&"Envelope") => &parts[..parts.len() - 1],
        _ => &parts[..],
    };
    match parts {
        [.., s, t] => (Some(s.to_string()), Some(t.to_string())),
        [t] => (None, Some(t.to_string())),
        [] => (None, None),
    }
}

/// Kafka Connect's dead-letter headers.
fn dead_letter_headers(pipeline: &str, topic: &str, partition: i32, offset: i64, error: &str) -> OwnedHeaders {
    let (p, o) = (partition.to_string(), offset.to_string());
    OwnedHeaders::new()
        .insert(Header { key: "__connect.errors.topic", value: Some(topic) })
        .insert(Header { key: "__connect.errors.partition", value: Some(&p) })
        .insert(Header { key: "__connect.errors.offset", value: Some(&o) })
        .insert(Header { key: "__connect.errors.connector.name", value: Some(pipeline) })
        .insert(Header { key: "__connect.errors.exception.class.name", value: Some("sluice.DecodeError") })
        .insert(Header { key: "__connect.errors.exception.message", value: Some(error) })
}

/// Where the running sinks stand together: per partition, the lowest next offset among them.
/// A running sink that holds nothing has read nothing, so then no partition has a held offset
/// and each starts where `start` says (the meet of the others would skip what it never got).
fn held_offsets(resume: &Resume) -> Result<KafkaOffsets, ConnectorError> {
    if resume.sinks.iter().flatten().any(|c| c.position.is_none()) {
        return Ok(KafkaOffsets::default());
    }
    match resume.position() {
        Some(Position::Kafka(o)) => Ok(o),
        Some(other) => Err(ConnectorError::msg(
            ErrorClass::Fatal,
            format!(
                "the sinks hold a {other} position, not Kafka offsets: this pipeline's source changed; give the \
                 pipeline a new name (or reset its sinks) to consume from Kafka"
            ),
        )),
        None => Ok(KafkaOffsets::default()),
    }
}

/// Most records taken from the consumer's queue at once, between looks at everything else.
const BURST: usize = 256;

/// Turns records into events: decoding, table names, shapes, dead letters.
struct Records<'a> {
    cfg: &'a KafkaSourceConfig,
    pipeline: &'a str,
    avro: Option<AvroRecords>,
    dead_letters: Option<FutureProducer>,
    shapes: Shapes,
    /// The table of the last record, by the names that gave it (consecutive records mostly go
    /// to one table).
    last_table: Option<(String, Option<String>, Option<String>, TableId)>,
}

impl Records<'_> {
    /// Appends the events of record `m` to `out`: a transaction of its changes, or a heartbeat
    /// for a record that says nothing (or went to the dead-letter topic); nothing for a record
    /// of a partition no longer assigned or before where the sinks stand.
    async fn events(
        &mut self,
        m: &rdkafka::message::BorrowedMessage<'_>,
        starts: &Mutex<Starts>,
        out: &mut Vec<Event>,
    ) -> Result<(), ConnectorError> {
        let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
        {
            let mut s = starts.lock().map_err(|_| poisoned())?;
            let Some(part) = s.assigned.get_mut(topic).and_then(|p| p.get_mut(&partition)) else {
                return Ok(()); // revoked since it was fetched
            };
            match part.expected {
                Some(e) if offset < e => return Ok(()), // before where the sinks stand
                _ => part.expected = Some(offset + 1),
            }
        }
        let (key, payload) = (m.key().map(decode::json_body), m.payload().map(decode::json_body));
        let decoded = match (&mut self.avro, self.cfg.format()) {
            (Some(a), _) => a.decode(m.key(), m.payload()).await,
            (None, Format::DebeziumJson) => decode::debezium(key, payload),
            (None, Format::CanalJson) => decode::canal(payload),
            (None, _) => decode::flat(key, payload),
        };
        let mut next = KafkaOffsets::default();
        next.set(topic, partition, offset + 1);
        let d = match decoded {
            Ok(Some(d)) => d,
            Ok(None) => {
                out.push(Event::Heartbeat { position: Position::Kafka(next) });
                return Ok(());
            }
            Err(e) => {
                let what = format!(
                    "the record at {topic} partition {partition} offset {offset} cannot be decoded as {}: {e}",
                    self.cfg.format
                );
                let (Some(p), Some(dlq)) = (&self.dead_letters, &self.cfg.dead_letter_topic) else {
                    return Err(ConnectorError::msg(
                        ErrorClass::Fatal,
                        format!("{what}. Fix the producer, or set dead_letter_topic to park such records and go on"),
                    ));
                };
                let headers = dead_letter_headers(self.pipeline, topic, partition, offset, &what);
                let mut rec = FutureRecord::<[u8], [u8]>::to(dlq).headers(headers);
                if let Some(k) = m.key() {
                    rec = rec.key(k);
                }
                if let Some(v) = m.payload() {
                    rec = rec.payload(v);
                }
                p.send(rec, CALL_TIMEOUT).await.map_err(|(e, _)| kafka_err("write to the dead-letter topic")(e))?;
                warn!(topic = %topic, partition, offset, error = %e, dead_letter_topic = %dlq, "record sent to the dead-letter topic");
                out.push(Event::Heartbeat { position: Position::Kafka(next) });
                return Ok(());
            }
        };
        let hit = matches!(&self.last_table, Some((t, s, n, _)) if t == topic && *s == d.schema && *n == d.table);
        if !hit {
            let id = self.cfg.table_for(topic, d.schema.as_deref(), d.table.as_deref());
            self.last_table = Some((topic.to_string(), d.schema.clone(), d.table.clone(), id));
        }
        let Some((.., id)) = &self.last_table else { unreachable!("set above") };
        let ts = d.ts_ms.or_else(|| m.timestamp().to_millis()).unwrap_or(0);
        let txn = |position| TxnMeta { xid: offset as u64, commit_ts_micros: decode::ms_to_micros(ts), position };
        let mut at = KafkaOffsets::default();
        at.set(topic, partition, offset);
        let (schema, map) = self.shapes.shape(id, &d.columns);
        out.push(Event::Begin(txn(Position::Kafka(at.clone()))));
        for ch in d.changes {
            let before = aligned(ch.before, &map, &schema);
            let after = aligned(ch.after, &map, &schema);
            let op = match (ch.kind, before, after) {
                (Kind::Truncate, ..) => Op::Truncate,
                (Kind::Delete, Some(before), _) | (Kind::Delete, None, Some(before)) => Op::Delete { before },
                (Kind::Insert, _, Some(after)) => Op::Insert { after },
                (Kind::Update, before, Some(after)) => Op::Update { before, after },
                (_, Some(before), None) => Op::Delete { before },
                _ => continue,
            };
            out.push(Event::Change(sluice_core::Change { table: schema.clone(), op }));
        }
        out.push(Event::Commit { meta: txn(Position::Kafka(at)), position: Position::Kafka(next) });
        Ok(())
    }
}

impl KafkaSource {
    /// Claims the partitions handed to this process and assigns them at the offsets the sinks
    /// hold once they have adopted what their targets hold (see [`Event::Claim`]).
    #[allow(clippy::too_many_arguments)]
    async fn claim(
        &self,
        consumer: &StreamConsumer<Rebalancing>,
        starts: &Mutex<Starts>,
        events: &mpsc::Sender<Event>,
        claims: &mut mpsc::UnboundedReceiver<Claimed>,
        stop: &mut watch::Receiver<bool>,
        last_id: &mut u64,
    ) -> Result<ClaimEnd, ConnectorError> {
        let handed = std::mem::take(&mut starts.lock().map_err(|_| poisoned())?.handed);
        if handed.is_empty() {
            return Ok(ClaimEnd::Assigned);
        }
        *last_id += 1;
        let id = *last_id;
        let mut scope = KafkaOffsets::default();
        for (t, p) in &handed {
            scope.set(t, *p, 0);
        }
        if events.send(Event::Claim { id, scope: Position::Kafka(scope) }).await.is_err() {
            return Err(ConnectorError::msg(
                ErrorClass::Transient,
                "the pipeline stopped while the source was sending",
            ));
        }
        let answer = loop {
            tokio::select! {
                a = claims.recv() => match a {
                    Some(a) if a.id == id => break a,
                    Some(_) => continue,
                    None => return Err(ConnectorError::msg(ErrorClass::Transient, "the pipeline stopped during a claim")),
                },
                changed = stop.changed() => if changed.is_err() || *stop.borrow() {
                    return Ok(ClaimEnd::Stopping);
                },
            }
        };
        let held = held_offsets(&answer.sinks)?;
        let mut s = starts.lock().map_err(|_| poisoned())?;
        // Partitions revoked while the sinks answered are not assigned.
        let still: Vec<(String, i32)> = handed
            .into_iter()
            .filter(|(t, p)| s.part(t, *p).is_none() && !s.handed.contains(&(t.clone(), *p)))
            .collect();
        let mut tpl = TopicPartitionList::new();
        for (topic, p) in still {
            let at = held.get(&topic, p);
            let start = match at {
                Some(o) => Offset::Offset(o),
                None if self.cfg.start == "earliest" => Offset::Beginning,
                None => Offset::End,
            };
            tpl.add_partition_offset(&topic, p, start).map_err(kafka_err("list the claimed partitions"))?;
            info!(topic = %topic, partition = p, start = ?start, "partition assigned");
            s.assigned.entry(topic).or_default().insert(p, Part { start: at, expected: at });
        }
        // With the eager protocol an assignment is always whole: this one replaces nothing,
        // since every revocation unassigned everything.
        let done = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(&tpl),
            _ => {
                let mut whole = TopicPartitionList::new();
                for (topic, p, part) in s.parts() {
                    let start = match part.expected.or(part.start) {
                        Some(o) => Offset::Offset(o),
                        None if self.cfg.start == "earliest" => Offset::Beginning,
                        None => Offset::End,
                    };
                    whole.add_partition_offset(topic, p, start).map_err(kafka_err("list the assigned partitions"))?;
                }
                consumer.assign(&whole)
            }
        };
        done.map_err(kafka_err("take the claimed partitions"))?;
        Ok(ClaimEnd::Assigned)
    }
}

fn poisoned() -> ConnectorError {
    ConnectorError::msg(ErrorClass::Fatal, "the Kafka source's partition state was poisoned by a panic")
}

#[async_trait]
impl Source for KafkaSource {
    async fn run(&mut self, resume: Resume, ctx: SourceContext) -> Result<(), ConnectorError> {
        let SourceContext { events, mut confirmed, mut stop, mut claims, .. } = ctx;
        // Where the sinks stand is asked again as partitions are handed over (claims); here
        // only that they hold Kafka offsets at all.
        held_offsets(&resume)?;
        let starts = Arc::new(Mutex::new(Starts::default()));
        let handed = Arc::new(Notify::new());
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &self.cfg.brokers)
            .set("group.id", self.cfg.group(&self.pipeline))
            .set("client.id", format!("sluice-{}", self.pipeline))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", if self.cfg.start == "earliest" { "earliest" } else { "latest" })
            .set("enable.partition.eof", "false")
            // Topics subscribed before they exist are noticed within seconds, not minutes.
            .set("topic.metadata.refresh.interval.ms", "5000")
            // A process that died leaves the group after 10 s (librdkafka's default is 45 s), so
            // its restart, or another member, takes its partitions over soon.
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "3000");
        // Static membership (KIP-345): a restarted process takes its predecessor's place in the
        // group at once, instead of waiting for the group to give up on it.
        if let Some(id) = self.cfg.instance() {
            cc.set("group.instance.id", id);
        }
        for (k, v) in &self.cfg.properties {
            cc.set(k, v.expose());
        }
        let consumer: StreamConsumer<Rebalancing> = cc
            .create_with_context(Rebalancing { starts: starts.clone(), handed: handed.clone() })
            .map_err(kafka_err("create the consumer"))?;
        let topics: Vec<&str> = self.cfg.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(kafka_err("subscribe"))?;
        info!(topics = ?self.cfg.topics, group = %self.cfg.group(&self.pipeline), "kafka source subscribed");
        let dead_letters: Option<FutureProducer> = match &self.cfg.dead_letter_topic {
            Some(_) => {
                let mut pc = crate::client::producer_config(&self.cfg.brokers);
                for (k, v) in &self.cfg.properties {
                    pc.set(k, v.expose());
                }
                Some(pc.create().map_err(kafka_err("create the dead-letter producer"))?)
            }
            None => None,
        };
        let avro = match (self.cfg.format(), &self.cfg.schema_registry) {
            (Format::Avro, Some(url)) => Some(AvroRecords {
                registry: sluice_registry::RegistryClient::new(url.expose())
                    .map_err(|e| ConnectorError::msg(ErrorClass::Fatal, e.to_string()))?,
                records: HashMap::new(),
                shapes: HashMap::new(),
            }),
            _ => None,
        };
        let mut records = Records {
            cfg: &self.cfg,
            pipeline: &self.pipeline,
            avro,
            dead_letters,
            shapes: Shapes::default(),
            last_table: None,
        };
        let mut committed_group = KafkaOffsets::default();
        let mut events = Some(events);
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        let mut claim_id = 0u64;
        let mut out: Vec<Event> = Vec::with_capacity(3 * BURST);
        loop {
            let Some(tx) = events.as_ref() else { break };
            if let ClaimEnd::Stopping =
                self.claim(&consumer, &starts, tx, &mut claims, &mut stop, &mut claim_id).await?
            {
                events = None;
                continue;
            }
            tokio::select! {
                biased;
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        events = None;
                    }
                }
                // Partitions were handed over: claimed at the top of the loop.
                _ = handed.notified() => {}
                c = confirmed.changed() => {
                    if c.is_err() {
                        break;
                    }
                    commit_group(&consumer, &starts, &confirmed.borrow().clone(), &mut committed_group);
                }
                _ = ticker.tick() => commit_group(&consumer, &starts, &confirmed.borrow().clone(), &mut committed_group),
                m = consumer.recv() => {
                    // This record, then those already fetched (up to BURST), without going
                    // through the select for each.
                    let mut next = Some(m);
                    let mut n = 0;
                    while let Some(m) = next.take() {
                        match m {
                            Ok(m) => records.events(&m, &starts, &mut out).await?,
                            // A subscribed topic that does not exist yet: picked up once created.
                            Err(KafkaError::MessageConsumption(rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                                debug!("a subscribed topic does not exist yet");
                            }
                            Err(e) => return Err(kafka_err("receive")(e)),
                        }
                        n += 1;
                        if n < BURST {
                            next = consumer.recv().now_or_never();
                        }
                    }
                    if !out.is_empty() {
                        let permits = tx.reserve_many(out.len()).await.map_err(|_| {
                            ConnectorError::msg(ErrorClass::Transient, "the pipeline stopped while the source was sending")
                        })?;
                        for (permit, ev) in permits.zip(out.drain(..)) {
                            permit.send(ev);
                        }
                    }
                }
            }
        }
        // Stopped: keep confirming until the runtime is done, then commit what it confirmed.
        drop(events);
        while confirmed.changed().await.is_ok() {
            commit_group(&consumer, &starts, &confirmed.borrow().clone(), &mut committed_group);
        }
        let last = confirmed.borrow().clone();
        commit_group(&consumer, &starts, &last, &mut committed_group);
        debug!("kafka source stopped");
        Ok(())
    }
}

/// Commits the group's offsets of the assigned partitions up to what every sink holds.
fn commit_group(
    consumer: &StreamConsumer<Rebalancing>,
    starts: &Mutex<Starts>,
    confirmed: &Option<Position>,
    done: &mut KafkaOffsets,
) {
    let Some(Position::Kafka(at)) = confirmed else { return };
    let Ok(s) = starts.lock() else { return };
    let mut tpl = TopicPartitionList::new();
    for (topic, p, part) in s.parts() {
        // Only offsets at or past where this process took the partition: what the sinks held
        // before may be older than what another process committed for the group.
        if let Some(o) = at.get(topic, p).filter(|o| part.start.is_none_or(|s| *o >= s)) {
            if done.get(topic, p) != Some(o) {
                let _ = tpl.add_partition_offset(topic, p, Offset::Offset(o));
                done.set(topic, p, o);
            }
        }
    }
    drop(s);
    if tpl.count() > 0 {
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            debug!(error = %e, "group offset commit failed; the next one covers it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::Checkpoint;

    fn offsets(at: &[(i32, i64)]) -> KafkaOffsets {
        let mut k = KafkaOffsets::default();
        for (p, o) in at {
            k.set("t", *p, *o);
        }
        k
    }

    fn at(o: &[(i32, i64)]) -> Checkpoint {
        Checkpoint { position: Some(Position::Kafka(offsets(o))), ..Default::default() }
    }

    #[test]
    fn avro_record_names_give_the_table() {
        let t = |s: &str, t: &str| (Some(s.to_string()), Some(t.to_string()));
        assert_eq!(table_of("kprod.public.orders.Key"), t("public", "orders"));
        assert_eq!(table_of("dbserver1.inventory.customers.Envelope"), t("inventory", "customers"));
        assert_eq!(table_of("shop.items"), t("shop", "items"));
        assert_eq!(table_of("items"), (None, Some("items".into())));
    }

    #[test]
    fn a_running_sink_that_holds_nothing_reads_every_partition_from_the_start() {
        let resume = Resume { sinks: vec![Some(Checkpoint::default()), Some(at(&[(2, 30)]))] };
        assert_eq!(held_offsets(&resume).unwrap(), KafkaOffsets::default());
        // A sink that is down does not count; the running ones meet per partition.
        let resume = Resume { sinks: vec![None, Some(at(&[(0, 5), (1, 9)])), Some(at(&[(0, 7)]))] };
        assert_eq!(held_offsets(&resume).unwrap(), offsets(&[(0, 5)]));
    }
}
