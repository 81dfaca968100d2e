//! The Kafka sink: every change and copied row becomes a record (formats in `format.rs`), routed
//! to a topic and partition by the dispatch rules; the sink's position goes to a compacted
//! offsets topic.
//!
//! ```text
//!  exactly_once:  init_transactions (fences an older process with the same transactional.id)
//!                 begin ─ records ... ─ checkpoint record to the offsets topic ─ commit ─ ack
//!  at_least_once: records ... ─ checkpoint record ─ flush ─ ack (an unacknowledged tail may
//!                 be sent again after a crash; keyed records make that idempotent for upserts)
//!  open:          read the offsets topic (read_committed) to its end; the last record with
//!                 this pipeline's and sink's key is the checkpoint
//! ```
//! This is the arrangement of Kafka Connect's exactly-once source support (KIP-618): data and
//! the source offsets it reached commit in one producer transaction, so a `read_committed`
//! consumer sees each change once after any crash.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use sluice_core::{
    Ack, BatchPolicy, Checkpoint, ConnectorError, CopyStep, ErrorClass, Event, Op, Sink, SinkContext, TableId, TxnMeta,
};
use tracing::{debug, info};

use crate::config::{KafkaSinkConfig, Partitioner};
use crate::format::{self, Format, Record, SourceInfo};

/// How long a broker call may take before the sink gives up (and is reopened).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Remembers the first failed delivery (at-least-once; transactions report it at commit).
#[derive(Default)]
struct Deliveries {
    failed: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            if let Ok(mut f) = self.failed.lock() {
                f.get_or_insert_with(|| format!("a record to {} was not delivered: {e}", m.topic()));
            }
        }
    }
}

fn retryable(what: &str) -> impl Fn(KafkaError) -> ConnectorError + '_ {
    move |e| ConnectorError::msg(ErrorClass::Transient, format!("kafka: {what}: {e}"))
}

/// The sink.
pub struct KafkaSink {
    name: String,
    cfg: KafkaSinkConfig,
    pipeline: String,
    index: usize,
    producer: Option<ThreadedProducer<Deliveries>>,
    admin: Option<AdminClient<DefaultClientContext>>,
    /// Partition counts of the topics seen
    partitions: HashMap<String, i32>,
    /// Topic and partitioner per table
    routes: HashMap<TableId, (String, Partitioner)>,
    in_txn: bool,
    txn: Option<TxnMeta>,
    /// The `avro` format's schema ids
    avro: Option<crate::avro::AvroFormat>,
    /// Counters for the pipeline's status
    stats: std::sync::Arc<sluice_core::SinkStats>,
}

impl KafkaSink {
    pub fn new(cfg: KafkaSinkConfig, pipeline: &str, index: usize) -> KafkaSink {
        KafkaSink {
            name: format!("sink[{index}] kafka {}", cfg.format),
            cfg,
            pipeline: pipeline.to_string(),
            index,
            producer: None,
            admin: None,
            partitions: HashMap::new(),
            routes: HashMap::new(),
            in_txn: false,
            txn: None,
            avro: None,
            stats: Default::default(),
        }
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.cfg.brokers);
        for (k, v) in &self.cfg.properties {
            c.set(k, v.expose());
        }
        c
    }

    fn key(&self) -> String {
        format!("{}/{}", self.pipeline, self.index)
    }

    fn producer(&self) -> Result<&ThreadedProducer<Deliveries>, ConnectorError> {
        self.producer.as_ref().ok_or_else(|| ConnectorError::msg(ErrorClass::Fatal, "kafka sink used before open"))
    }

    /// Creates `topic` unless it exists; returns its partition count.
    async fn topic(&mut self, topic: &str, compacted: bool) -> Result<i32, ConnectorError> {
        if let Some(n) = self.partitions.get(topic) {
            return Ok(*n);
        }
        let admin =
            self.admin.as_ref().ok_or_else(|| ConnectorError::msg(ErrorClass::Fatal, "kafka sink used before open"))?;
        let (parts, repl) = if compacted {
            (1, self.cfg.replication_factor)
        } else {
            (self.cfg.topic_partitions, self.cfg.replication_factor)
        };
        let mut new = NewTopic::new(topic, parts, TopicReplication::Fixed(repl));
        if compacted {
            new = new.set("cleanup.policy", "compact");
        }
        let created = admin.create_topics([&new], &AdminOptions::new()).await.map_err(retryable("create a topic"))?;
        for r in created {
            match r {
                Ok(_) => info!(sink = %self.name, topic, partitions = parts, "topic created"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => {
                    return Err(ConnectorError::msg(
                        ErrorClass::Transient,
                        format!(
                        "kafka: cannot create topic {t}: {code}; create it yourself or give the sink's user the right"
                    ),
                    ))
                }
            }
        }
        let producer = self.producer()?;
        let md = tokio::task::block_in_place(|| producer.client().fetch_metadata(Some(topic), CALL_TIMEOUT))
            .map_err(retryable("read a topic's partitions"))?;
        let n = md.topics().first().map_or(0, |t| t.partitions().len() as i32).max(1);
        self.partitions.insert(topic.to_string(), n);
        Ok(n)
    }

    /// Sends one record, waiting while librdkafka's queue is full.
    async fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(), ConnectorError> {
        let producer = self.producer()?;
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => return Err(retryable("send a record")(e)),
            }
        }
    }

    /// Waits until every record sent is acknowledged by the brokers (or failed), without
    /// blocking a runtime thread. rdkafka's own `flush` (which `commit_transaction` also calls)
    /// polls in slices of 100 ms that it always sleeps out, so every commit with records in flight
    /// took at least 100 ms (measured); the producer's polling thread serves the delivery
    /// reports, so watching the count is enough, and the commit's own flush then finds nothing.
    async fn delivered(&self) -> Result<(), ConnectorError> {
        let producer = self.producer()?;
        let deadline = std::time::Instant::now() + CALL_TIMEOUT;
        while producer.in_flight_count() > 0 {
            if std::time::Instant::now() > deadline {
                return Err(ConnectorError::msg(
                    ErrorClass::Transient,
                    format!("kafka: records not acknowledged within {CALL_TIMEOUT:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    fn begin(&mut self) -> Result<(), ConnectorError> {
        if self.cfg.exactly_once() && !self.in_txn {
            self.producer()?.begin_transaction().map_err(retryable("begin a transaction"))?;
            self.in_txn = true;
        }
        Ok(())
    }

    async fn publish(&mut self, r: Record<'_>) -> Result<(), ConnectorError> {
        let id = r.table.id.clone();
        if !self.routes.contains_key(&id) {
            let route = self.cfg.route(&self.pipeline, &id);
            self.routes.insert(id.clone(), route);
        }
        let (topic, partitioner) = self.routes[&id].clone();
        let partitions = self.topic(&topic, false).await?;
        self.begin()?;
        let format = self.cfg.format();
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let (key, value) = match self.avro.as_mut() {
            Some(avro) if format == Format::Avro => match avro.encode(&self.pipeline, &topic, &r).await {
                Ok(Some(kv)) => kv,
                Ok(None) => return Ok(()),
                Err(e) if e.class() == ErrorClass::Definite && self.cfg.dead_letter_topic.is_some() => {
                    return self.dead_letter(&r, &topic, &e.to_string(), now_ms).await;
                }
                Err(e) => {
                    let fix = if e.class() == ErrorClass::Definite {
                        ". Set dead_letter_topic to park such changes and go on"
                    } else {
                        ""
                    };
                    return Err(ConnectorError::msg(ErrorClass::Fatal, format!("{e}{fix}")));
                }
            },
            _ => {
                let info = SourceInfo { pipeline: &self.pipeline, schemas: self.cfg.schemas };
                (format::key(&r, format, self.cfg.schemas), Some(format::value_bytes(&r, format, &info, now_ms)))
            }
        };
        let partition = match &partitioner {
            Partitioner::IndexValue => None,
            Partitioner::Table => Some(hash(format!("{}.{}", id.schema, id.name).as_bytes()) % partitions as u32),
            Partitioner::Ts => {
                Some((r.txn.map_or(now_ms * 1000, |t| t.commit_ts_micros) as u64 % partitions as u64) as u32)
            }
            Partitioner::Columns(cols) => {
                let row = r.after.or(r.before);
                let mut buf = Vec::new();
                for c in cols {
                    if let (Some(i), Some(row)) = (r.table.column_index(c), row) {
                        buf.extend_from_slice(sluice_core::json::value_json(&row[i]).to_string().as_bytes());
                    }
                    buf.push(0);
                }
                Some(hash(&buf) % partitions as u32)
            }
        }
        .map(|p| p as i32);
        self.send(&topic, partition, key.as_deref(), value.as_deref()).await?;
        // (An Avro delete is itself the key with no value.)
        if r.op == "d" && self.cfg.tombstones && key.is_some() && value.is_some() {
            self.send(&topic, partition, key.as_deref(), None).await?;
        }
        Ok(())
    }

    /// Sends a change the format cannot carry to the dead-letter topic, as Debezium JSON (which
    /// carries any value), with Kafka Connect's error headers and the topic it was meant for;
    /// inside the open transaction, so it is parked exactly once.
    async fn dead_letter(
        &mut self,
        r: &Record<'_>,
        topic: &str,
        error: &str,
        now_ms: i64,
    ) -> Result<(), ConnectorError> {
        let Some(dlq) = self.cfg.dead_letter_topic.clone() else { return Ok(()) };
        self.topic(&dlq, false).await?;
        let info = SourceInfo { pipeline: &self.pipeline, schemas: false };
        let key = format::key(r, Format::DebeziumJson, false);
        let value = format::value_bytes(r, Format::DebeziumJson, &info, now_ms);
        let table = r.table.id.to_string();
        let headers = rdkafka::message::OwnedHeaders::new()
            .insert(rdkafka::message::Header { key: "__connect.errors.topic", value: Some(topic) })
            .insert(rdkafka::message::Header { key: "__sluice.errors.table", value: Some(&table) })
            .insert(rdkafka::message::Header { key: "__connect.errors.connector.name", value: Some(&self.pipeline) })
            .insert(rdkafka::message::Header {
                key: "__connect.errors.exception.class.name",
                value: Some("sluice.EncodeError"),
            })
            .insert(rdkafka::message::Header { key: "__connect.errors.exception.message", value: Some(error) });
        let producer = self.producer()?;
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&dlq).payload(value.as_slice()).headers(headers);
        if let Some(k) = key.as_deref() {
            record = record.key(k);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => return Err(retryable("send to the dead-letter topic")(e)),
            }
        }
        self.stats.dead_letters.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(sink = %self.name, table = %r.table.id, dead_letter_topic = %dlq, error, "change sent to the dead-letter topic");
        Ok(())
    }

    /// The checkpoint stored in the offsets topic: its last record with this sink's key.
    fn read_checkpoint(&self) -> Result<Option<Checkpoint>, ConnectorError> {
        let mut c = self.client_config();
        c.set("group.id", format!("sluice-offsets-reader-{}", self.key()))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            // The end of the partition is what it waits for: the broker need not hold a fetch
            // back for more data (librdkafka's 500 ms default made every open take a second).
            .set("fetch.wait.max.ms", "10")
            .set("auto.offset.reset", "earliest");
        let consumer: BaseConsumer = c.create().map_err(retryable("create the offsets reader"))?;
        // With the partition's leader known before the assignment, the start offset is asked at
        // once; otherwise librdkafka retries it on a 500 ms timer (measured: 515 ms vs 70 ms).
        consumer
            .fetch_metadata(Some(&self.cfg.offsets_topic), CALL_TIMEOUT)
            .map_err(retryable("read the offsets topic's metadata"))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.cfg.offsets_topic, 0, Offset::Beginning).map_err(retryable("assign"))?;
        consumer.assign(&tpl).map_err(retryable("read the offsets topic"))?;
        let key = self.key();
        let mut last = None;
        let deadline = std::time::Instant::now() + CALL_TIMEOUT;
        loop {
            if std::time::Instant::now() > deadline {
                return Err(ConnectorError::msg(
                    ErrorClass::Transient,
                    format!(
                        "kafka: the offsets topic {} was not read to its end within {CALL_TIMEOUT:?}",
                        self.cfg.offsets_topic
                    ),
                ));
            }
            match consumer.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(retryable("read the offsets topic")(e)),
                Some(Ok(m)) => {
                    if m.key() == Some(key.as_bytes()) {
                        last = m.payload().map(|p| String::from_utf8_lossy(p).into_owned());
                    }
                }
            }
        }
        match last {
            Some(s) => Checkpoint::from_json(&s).map(Some).map_err(|e| {
                ConnectorError::msg(
                    ErrorClass::Fatal,
                    format!("the checkpoint in {} for {key}: {e}", self.cfg.offsets_topic),
                )
            }),
            None => Ok(None),
        }
    }
}

/// FNV-1a: a stable hash for the table, ts and columns partitioners (the same partition across
/// restarts and processes).
fn hash(b: &[u8]) -> u32 {
    b.iter().fold(0x811c_9dc5u32, |h, x| (h ^ *x as u32).wrapping_mul(0x0100_0193))
}

#[async_trait]
impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn batch_policy(&self) -> BatchPolicy {
        BatchPolicy {
            max_rows: self.cfg.batch.max_rows,
            max_delay: Duration::from_millis(self.cfg.batch.max_delay_ms),
            commit_when_idle: false,
        }
    }

    async fn open(&mut self, ctx: SinkContext) -> Result<Option<Checkpoint>, ConnectorError> {
        self.stats = ctx.stats;
        let mut c = self.client_config();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", &self.cfg.compression)
            .set("partitioner", "murmur2_random");
        if self.cfg.exactly_once() {
            c.set("transactional.id", format!("sluice-{}", self.key()));
        }
        let producer: ThreadedProducer<Deliveries> =
            c.create_with_context(Deliveries::default()).map_err(retryable("create the producer"))?;
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().map_err(retryable("create the admin client"))?;
        self.admin = Some(admin);
        self.producer = Some(producer);
        if let Some(url) = &self.cfg.schema_registry {
            let client = sluice_registry::RegistryClient::new(url.expose())
                .map_err(|e| ConnectorError::msg(ErrorClass::Fatal, e.to_string()))?;
            self.avro = Some(crate::avro::AvroFormat::new(client, &self.cfg.subject_name_strategy));
        }
        self.partitions.clear();
        self.in_txn = false;
        let offsets = self.cfg.offsets_topic.clone();
        self.topic(&offsets, true).await?;
        let started = std::time::Instant::now();
        if self.cfg.exactly_once() {
            // Fences an older process with the same transactional.id and aborts what it left open.
            let p = self.producer()?;
            tokio::task::block_in_place(|| p.init_transactions(CALL_TIMEOUT))
                .map_err(retryable("initialise transactions"))?;
        }
        let initialised = started.elapsed();
        let cp = tokio::task::block_in_place(|| self.read_checkpoint())?;
        debug!(
            sink = %self.name,
            init_transactions_ms = initialised.as_millis() as u64,
            read_offsets_ms = (started.elapsed() - initialised).as_millis() as u64,
            "opened"
        );
        info!(sink = %self.name, brokers = %self.cfg.brokers, position = ?cp.as_ref().and_then(|c| c.position.as_ref()).map(|p| p.to_string()), "sink opened");
        Ok(cp)
    }

    async fn write(&mut self, event: &Event) -> Result<(), ConnectorError> {
        match event {
            Event::Begin(meta) => self.txn = Some(meta.clone()),
            Event::Commit { .. } => self.txn = None,
            Event::Change(c) => {
                let txn = self.txn.clone();
                match &c.op {
                    // A key that changed: the old key's row is deleted (with its tombstone) and
                    // the new one created, as Debezium emits it, so keyed consumers and
                    // compaction never keep the old key.
                    Op::Update { before: Some(before), after } if c.table.key_of(before) != c.table.key_of(after) => {
                        let gone = Op::Delete { before: before.clone() };
                        self.publish(Record::change(&c.table, &gone, txn.as_ref())).await?;
                        let born = Op::Insert { after: after.clone() };
                        self.publish(Record::change(&c.table, &born, txn.as_ref())).await?;
                    }
                    op => self.publish(Record::change(&c.table, op, txn.as_ref())).await?,
                }
            }
            Event::Copy(copy) => match &copy.step {
                CopyStep::Rows(rows) => {
                    for r in rows {
                        self.publish(Record::copied(&copy.table, r)).await?;
                    }
                }
                CopyStep::Bulk(bulk) => {
                    let rows =
                        bulk.decode(&copy.table).map_err(|e| ConnectorError::msg(ErrorClass::Fatal, e.to_string()))?;
                    for r in &rows {
                        self.publish(Record::copied(&copy.table, r)).await?;
                    }
                }
                // A topic keeps what it has: a copy adds its rows as `r` records.
                CopyStep::Begin { .. } | CopyStep::Progress { .. } | CopyStep::End => {}
            },
            _ => {}
        }
        Ok(())
    }

    async fn commit(&mut self, checkpoint: Checkpoint, ack: Ack) -> Result<(), ConnectorError> {
        let started = std::time::Instant::now();
        let result = async {
            self.begin()?;
            let key = self.key();
            let offsets = self.cfg.offsets_topic.clone();
            self.send(&offsets, Some(0), Some(key.as_bytes()), Some(checkpoint.to_json().as_bytes())).await?;
            self.delivered().await?;
            let p = self.producer()?;
            if self.cfg.exactly_once() {
                tokio::task::block_in_place(|| p.commit_transaction(CALL_TIMEOUT)).map_err(retryable("commit"))?;
                self.in_txn = false;
            } else {
                tokio::task::block_in_place(|| p.flush(CALL_TIMEOUT)).map_err(retryable("flush"))?;
                if let Some(e) = p.context().failed.lock().ok().and_then(|mut f| f.take()) {
                    return Err(ConnectorError::msg(ErrorClass::Transient, format!("kafka: {e}")));
                }
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => {
                debug!(sink = %self.name, ms = started.elapsed().as_secs_f64() * 1e3, "committed");
                ack.durable();
                Ok(())
            }
            Err(e) => {
                ack.fail(ConnectorError::msg(e.class(), e.to_string()));
                Err(e)
            }
        }
    }

    async fn close(&mut self) -> Result<(), ConnectorError> {
        if let Some(p) = self.producer.take() {
            if self.in_txn {
                let _ = tokio::task::block_in_place(|| p.abort_transaction(CALL_TIMEOUT));
            }
            let _ = tokio::task::block_in_place(|| p.flush(CALL_TIMEOUT));
        }
        self.in_txn = false;
        Ok(())
    }
}
