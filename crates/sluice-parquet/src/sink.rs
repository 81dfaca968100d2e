//! The Parquet sink: every change, and every copied row, as a row of a Parquet file, on local
//! disk or S3 (object_store), in Hive-style partitions.
//!
//! ```text
//!  <url>/table=<schema.table>/date=<YYYY-MM-DD>/part-<pipeline>-<sink>-<start>-<n>.parquet
//!        columns: the table's (typed), _op (c u d t r), _position, _commit_ts, _unchanged
//!  <url>/_sluice/<pipeline>-<sink>/checkpoint.json    the position the files reach
//!  <url>/_sluice/<pipeline>-<sink>/pending.json       the files of a commit under way
//! ```
//!
//! A commit writes `pending.json` (the files it is about to write, and the position it starts
//! from), then each file (visible only when complete: a local rename, an S3 single PUT or a
//! completed multipart upload), then `checkpoint.json`, then removes `pending.json`. Files are
//! named by the position their commit starts from, so a replay after a crash writes the same
//! names; and opening removes the files of a commit that did not reach its checkpoint (what
//! `pending.json` lists, when it starts where the checkpoint stands), so a replay that cuts its
//! batches differently leaves no duplicates either.
//!
//! Memory stays bounded for any transaction: when the buffer reaches its row or byte limit
//! before the runtime can commit (inside a transaction, or a long copy), the rows go to files
//! under `_sluice/<pipeline>-<sink>/spill/`, which the commit moves to their place (and opening
//! removes, after a crash).
//!
//! `_position` sorts in change order as plain text (a source position, then the change's place
//! in its transaction): the current state of a table is, per key, the row with the greatest
//! `_position`, unless it is a delete, counting only rows after the last truncate
//! (docs/parquet.md has the query). Values the source did not resend (PostgreSQL's unchanged
//! TOAST values) are NULL and named in `_unchanged`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_schema::{DataType as A, Field, TimeUnit};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::file::properties::WriterProperties;
use sluice_arrow::Rows;
use sluice_core::{
    Ack, BatchPolicy, Checkpoint, ConnectorError, CopyMode, CopyStep, ErrorClass, Event, Op, Position, Row, SchemaRef,
    Sink, SinkContext, SinkStats, TableId, Timestamp, TxnMeta, Value,
};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::config::ParquetSinkConfig;

/// A failure of the sink.
#[derive(Debug, thiserror::Error)]
pub enum ParquetError {
    /// The store failed (retried from the checkpoint).
    #[error("{what}: {source}")]
    Store {
        what: String,
        #[source]
        source: object_store::Error,
    },
    /// A value the file's type cannot hold, or the store's configuration.
    #[error("{0}")]
    Fatal(String),
}

impl From<ParquetError> for ConnectorError {
    fn from(e: ParquetError) -> ConnectorError {
        let class = match &e {
            ParquetError::Store { .. } => ErrorClass::Transient,
            ParquetError::Fatal(_) => ErrorClass::Fatal,
        };
        ConnectorError::new(class, e.to_string(), e)
    }
}

pub(crate) fn store_err(what: impl Into<String>) -> impl FnOnce(object_store::Error) -> ParquetError {
    let what = what.into();
    move |source| ParquetError::Store { what, source }
}

/// How often a position reached only by heartbeats is stored.
const POSITION_STORE_EVERY: Duration = Duration::from_secs(10);

/// The rows of one file being built: its table's shape and the Arrow columns so far (rows go
/// into columns as they arrive; nothing is kept twice).
struct Part {
    schema: SchemaRef,
    rows: Rows,
}

/// The rows buffered, by table, shape version and date.
type Buffered = BTreeMap<(TableId, u64, String), Part>;

/// A spill under way: where each file went, and where the commit moves it.
type Spill = JoinHandle<Result<Vec<(Path, Path)>, ParquetError>>;

/// Files named but not yet encoded: each path and its columns (encoded off the sink's task).
type Unencoded = Vec<(Path, SchemaRef, Rows)>;

/// What a change row carries besides the row: `_op`, `_position`, `_commit_ts`, `_unchanged`.
struct Meta {
    op: &'static str,
    position: String,
    commit: Option<Timestamp>,
    unchanged: Vec<Value>,
}

/// The Arrow schema of `schema`'s change files. Every table column is nullable: a delete may
/// carry only the key, and a truncate marker carries no columns at all. Intervals are text
/// (docs/types.md).
fn file_schema(schema: &SchemaRef) -> Arc<arrow_schema::Schema> {
    let field = |c| {
        let f = sluice_arrow::field(c);
        let t = sluice_arrow::intervals_as_text(f.data_type());
        f.with_data_type(t).with_nullable(true)
    };
    let mut fields: Vec<Field> = schema.columns.iter().map(field).collect();
    fields.extend([
        Field::new("_op", A::Utf8, false),
        Field::new("_position", A::Utf8, false),
        Field::new("_commit_ts", A::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
        Field::new("_unchanged", A::List(Arc::new(Field::new("item", A::Utf8, true))), false),
    ]);
    Arc::new(arrow_schema::Schema::new(fields))
}

/// One Parquet file of `rows`.
fn encode(props: &WriterProperties, table: &TableId, mut rows: Rows) -> Result<Bytes, ParquetError> {
    let fatal = |e: &dyn std::fmt::Display| ParquetError::Fatal(format!("{table}: {e}"));
    let batch = rows.finish().map_err(|e| fatal(&e))?;
    let mut buf = Vec::new();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), Some(props.clone())).map_err(|e| fatal(&e))?;
    w.write(&batch).map_err(|e| fatal(&e))?;
    w.close().map_err(|e| fatal(&e))?;
    Ok(Bytes::from(buf))
}

/// Encodes `parts` on a blocking thread (Parquet encoding and compression are CPU work).
async fn encode_all(props: WriterProperties, parts: Unencoded) -> Result<Vec<(Path, Bytes)>, ParquetError> {
    tokio::task::spawn_blocking(move || {
        parts.into_iter().map(|(path, schema, rows)| Ok((path, encode(&props, &schema.id, rows)?))).collect()
    })
    .await
    .map_err(|e| ParquetError::Fatal(format!("the encoding task stopped: {e}")))?
}

/// The sink.
pub struct ParquetSink {
    name: String,
    cfg: ParquetSinkConfig,
    pipeline: String,
    index: usize,
    store: Option<Arc<dyn ObjectStore>>,
    /// The prefix files go under
    root: Path,
    rows: Buffered,
    txn: Option<TxnMeta>,
    seq: u64,
    /// Files of the unit of work so far, per table and date (numbers the next one)
    counts: BTreeMap<(TableId, String), usize>,
    /// Files written ahead of the commit: where each is, and where the commit moves it
    spilled: Vec<(Path, Path)>,
    /// The position of the last transaction seen: where a copy of a live table stands.
    last_position: Option<Position>,
    /// What names the next commit's files: [`start_of`] the last stored checkpoint.
    base: String,
    inflight: Option<JoinHandle<Result<(), ParquetError>>>,
    /// Spill files being encoded and written: where each is, and where the commit moves it
    spilling: Option<Spill>,
    /// `base_of` the open transaction's position
    txn_base: String,
    /// The last day computed: days since 1970 and its `date=` text
    day: (i64, String),
    /// Rows no file could hold, as JSON lines, written with the next commit
    dead: Vec<u8>,
    buffered: usize,
    bytes: usize,
    stats: Arc<SinkStats>,
    stored: Option<Checkpoint>,
    stored_at: std::time::Instant,
}

/// The text that names files from a position (and orders `_position`).
fn base_of(p: Option<&Position>) -> String {
    p.map_or_else(|| "0".to_string(), Position::sortable)
}

/// What names the files of the commit after `c`: where the source position stands, and a
/// digest of the whole checkpoint, since commits of a snapshot or of a live table's copy share
/// a position (their tables' progress differs). The same checkpoint gives the same names, so a
/// commit replayed after a crash writes the files it would have.
fn start_of(c: Option<&Checkpoint>) -> String {
    match c {
        None => "0".to_string(),
        Some(c) => format!("{}-{:016x}", file_stem(&base_of(c.position.as_ref())), fnv(&c.to_json())),
    }
}

/// `base` as part of a file name: as it is when short and plain (a PostgreSQL LSN, a binlog
/// coordinate), else a digest of it (Kafka offsets of many partitions hold `/` and `,`).
fn file_stem(base: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '_';
    if base.len() <= 48 && base.chars().all(|c| plain(c) || c == ':') {
        return base.replace(':', "_");
    }
    format!("h{:016x}", fnv(base))
}

/// FNV-1a, 64 bits: a digest stable across builds and machines (names must repeat after a
/// restart).
pub(crate) fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

impl ParquetSink {
    pub fn new(cfg: ParquetSinkConfig, pipeline: &str, index: usize) -> ParquetSink {
        ParquetSink {
            name: format!("sink[{index}] parquet"),
            cfg,
            pipeline: pipeline.to_string(),
            index,
            store: None,
            root: Path::default(),
            rows: BTreeMap::new(),
            txn: None,
            seq: 0,
            counts: BTreeMap::new(),
            spilled: Vec::new(),
            last_position: None,
            base: "0".into(),
            inflight: None,
            spilling: None,
            txn_base: String::new(),
            day: (i64::MIN, String::new()),
            dead: Vec::new(),
            buffered: 0,
            bytes: 0,
            stats: Arc::default(),
            stored: None,
            stored_at: std::time::Instant::now(),
        }
    }

    fn state_dir(&self) -> Path {
        self.root.clone().join("_sluice").join(format!("{}-{}", self.pipeline, self.index))
    }

    fn spill_dir(&self) -> Path {
        self.state_dir().join("spill")
    }

    /// Writes what is buffered to spill files when it reached a limit of `buffer` (the runtime
    /// commits only between transactions). Encoding and writing run in the background while
    /// rows keep coming; one spill at a time, so at most twice the buffer is held.
    async fn spill_if_full(&mut self) -> Result<(), ParquetError> {
        if !self.cfg.buffer.reached(self.buffered, self.bytes) {
            return Ok(());
        }
        self.finish_spill().await?;
        let store = self.store()?;
        let parts = self.take_parts();
        let (spill, props) = (self.spill_dir(), self.props());
        self.spilling = Some(tokio::spawn(async move {
            let mut moved = Vec::new();
            for (path, bytes) in encode_all(props, parts).await? {
                let at = spill.clone().join(path.as_ref().replace('/', "~"));
                put(&store, &at, bytes).await?;
                moved.push((at, path));
            }
            Ok(moved)
        }));
        Ok(())
    }

    /// Waits for the spill under way.
    async fn finish_spill(&mut self) -> Result<(), ParquetError> {
        if let Some(job) = self.spilling.take() {
            let moved = job.await.map_err(|e| ParquetError::Fatal(format!("the spill task stopped: {e}")))??;
            debug!(sink = %self.name, files = moved.len(), "spilled the buffer ahead of the commit");
            self.spilled.extend(moved);
        }
        Ok(())
    }

    fn store(&self) -> Result<Arc<dyn ObjectStore>, ParquetError> {
        self.store.clone().ok_or_else(|| ParquetError::Fatal("the parquet sink was used before open".into()))
    }

    async fn settle(&mut self) -> Result<(), ParquetError> {
        if let Some(job) = self.inflight.take() {
            job.await.map_err(|e| ParquetError::Fatal(format!("the commit task stopped: {e}")))??;
        }
        Ok(())
    }

    /// `date=` of a commit instant (UTC), or of now; the last day is kept.
    fn date(&mut self, t: Option<Timestamp>) -> String {
        let secs = t.map(|t| t.secs()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
        });
        let days = secs.div_euclid(86_400);
        if self.day.0 != days {
            let (y, m, d) = sluice_core::civil_from_days(days);
            self.day = (days, format!("{y:04}-{m:02}-{d:02}"));
        }
        self.day.1.clone()
    }

    /// Adds a row (`values` in the table's column order) and its metadata to its file.
    fn push(&mut self, table: &SchemaRef, date: String, values: &[Value], meta: Meta) -> Result<(), ParquetError> {
        self.bytes += values.iter().map(Value::approx_bytes).sum::<usize>() + meta.position.len() + 48;
        self.buffered += 1;
        let part = self
            .rows
            .entry((table.id.clone(), table.version, date))
            .or_insert_with(|| Part { schema: table.clone(), rows: Rows::new(file_schema(table)) });
        let (op, position, commit) = (meta.op, meta.position.clone(), meta.commit);
        let meta = [
            Value::Text(meta.op.into()),
            Value::Text(meta.position.into()),
            meta.commit.map_or(Value::Null, Value::TimestampTz),
            Value::List(meta.unchanged),
        ];
        let Err(refused) = part.rows.push(values.iter().chain(meta.iter())) else { return Ok(()) };
        // A value no Parquet column of its type holds (a decimal NaN, say): the row goes to the
        // dead-letter file of this commit (nothing was added to the columns) and the rest goes on.
        let line = serde_json::json!({
            "table": table.id.to_string(),
            "op": op,
            "position": position,
            "commit_ts": commit.map(|t| t.to_string()),
            "error": format!("{refused} (a Parquet file cannot hold it)"),
            "row": sluice_core::json::row_json(table, &values.to_vec()),
        });
        serde_json::to_writer(&mut self.dead, &line).map_err(|e| ParquetError::Fatal(format!("{}: {e}", table.id)))?;
        self.dead.push(b'\n');
        self.stats.dead_letters.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        warn!(sink = %self.name, table = %table.id, column = %refused.column, position = %position, "a row went to the dead-letter file: {refused}");
        Ok(())
    }

    fn change(&mut self, table: &SchemaRef, op: &Op) -> Result<(), ParquetError> {
        let (op, image) = match op {
            Op::Insert { after } => ("c", Some(after)),
            Op::Update { before: Some(before), after } if table.key_moved(before, after) => {
                // A new key: the old row is gone and a new one is there (as Debezium logs it), so
                // that the current state per key needs nothing but the rows of that key.
                self.log_row(table, "d", Some(before))?;
                ("c", Some(after))
            }
            Op::Update { after, .. } => ("u", Some(after)),
            Op::Delete { before } => ("d", Some(before)),
            Op::Truncate => ("t", None),
        };
        self.log_row(table, op, image)
    }

    fn log_row(&mut self, table: &SchemaRef, op: &'static str, image: Option<&Row>) -> Result<(), ParquetError> {
        let position = format!("{}-{:010}", self.txn_base, self.seq);
        self.seq += 1;
        let commit = self.txn.as_ref().map(|t| Timestamp::from_micros(t.commit_ts_micros));
        let date = self.date(commit);
        let nulls;
        let substituted;
        let mut unchanged = Vec::new();
        let values: &[Value] = match image {
            Some(r) if r.contains(&Value::Unchanged) => {
                substituted = r
                    .iter()
                    .zip(&table.columns)
                    .map(|(v, c)| {
                        if *v == Value::Unchanged {
                            unchanged.push(Value::Text(c.name.as_str().into()));
                            Value::Null
                        } else {
                            v.clone()
                        }
                    })
                    .collect::<Vec<_>>();
                &substituted
            }
            Some(r) => &r[..],
            None => {
                nulls = vec![Value::Null; table.columns.len()];
                &nulls
            }
        };
        self.push(table, date, values, Meta { op, position, commit, unchanged })
    }

    fn copy(&mut self, c: &sluice_core::Copy) -> Result<(), ParquetError> {
        match &c.step {
            CopyStep::Begin { mode, .. } => {
                if *mode == CopyMode::Replace {
                    // What the files held of the table before is void from here on.
                    let position = format!("{}-b", base_of(self.last_position.as_ref()));
                    let values = vec![Value::Null; c.table.columns.len()];
                    let date = self.date(None);
                    let meta = Meta { op: "t", position, commit: None, unchanged: Vec::new() };
                    self.push(&c.table, date, &values, meta)?;
                }
            }
            CopyStep::Rows(rows) => {
                // A snapshot's rows come before every change; a live copy's at its place in
                // the stream, after the transaction before it.
                let base = match self.last_position.as_ref() {
                    None => "0-r-".to_string(),
                    Some(p) => format!("{}-c", p.sortable()),
                };
                let date = self.date(None);
                for row in rows {
                    let mut position = String::with_capacity(base.len() + 10);
                    position.push_str(&base);
                    {
                        use std::fmt::Write;
                        let _ = write!(position, "{:010}", self.seq);
                    }
                    self.seq += 1;
                    let meta = Meta { op: "r", position, commit: None, unchanged: Vec::new() };
                    self.push(&c.table, date.clone(), row, meta)?;
                }
            }
            CopyStep::Bulk(_) | CopyStep::Progress { .. } | CopyStep::End => {}
        }
        Ok(())
    }

    /// Names the files of what is buffered and takes their columns, in a deterministic order.
    fn take_parts(&mut self) -> Unencoded {
        let mut out = Vec::new();
        for ((id, _, date), part) in std::mem::take(&mut self.rows) {
            let k = self.counts.entry((id.clone(), date.clone())).or_default();
            let name = format!("part-{}-{}-{}-{}.parquet", self.pipeline, self.index, self.base, k);
            *k += 1;
            let path = self
                .root
                .clone()
                .join(format!("table={}.{}", id.schema, id.name))
                .join(format!("date={date}"))
                .join(name);
            out.push((path, part.schema, part.rows));
        }
        self.buffered = 0;
        self.bytes = 0;
        out
    }

    fn props(&self) -> WriterProperties {
        let compression = match self.cfg.compression.as_str() {
            "zstd" => parquet::basic::Compression::ZSTD(Default::default()),
            "none" => parquet::basic::Compression::UNCOMPRESSED,
            _ => parquet::basic::Compression::SNAPPY,
        };
        WriterProperties::builder().set_compression(compression).build()
    }
}

/// Writes one object, visible only when complete (multipart above 10 MB).
pub(crate) async fn put(store: &Arc<dyn ObjectStore>, path: &Path, bytes: Bytes) -> Result<(), ParquetError> {
    use tokio::io::AsyncWriteExt;
    if bytes.len() < 10 * 1024 * 1024 {
        store.put(path, PutPayload::from(bytes)).await.map_err(store_err(format!("write {path}")))?;
        return Ok(());
    }
    let mut w = object_store::buffered::BufWriter::new(store.clone(), path.clone());
    let io = |e: std::io::Error| ParquetError::Fatal(format!("write {path}: {e}"));
    w.write_all(&bytes).await.map_err(io)?;
    w.shutdown().await.map_err(io)
}

/// What `pending.json` holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct Pending {
    /// The position the commit starts from (as in the files' names)
    start: String,
    files: Vec<String>,
}

#[async_trait]
impl Sink for ParquetSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn batch_policy(&self) -> BatchPolicy {
        self.cfg.buffer.batch_policy()
    }

    fn wants_commit(&self) -> bool {
        self.cfg.buffer.is_full(self.bytes)
    }

    async fn open(&mut self, ctx: SinkContext) -> Result<Option<Checkpoint>, ConnectorError> {
        // Work of an earlier opening: a commit ends as it would have (its ack is answered);
        // a spill is void (opening removes spill files).
        if let Some(job) = self.spilling.take() {
            job.abort();
            let _ = job.await;
        }
        let _ = self.settle().await;
        self.stats = ctx.stats;
        let (store, root) = crate::store::open(&self.cfg)?;
        self.store = Some(store.clone());
        self.root = root;
        let dir = self.state_dir();
        let checkpoint = match store.get(&dir.clone().join("checkpoint.json")).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(store_err("read the checkpoint")).map_err(ConnectorError::from)?;
                let text = String::from_utf8_lossy(&bytes).into_owned();
                Some(Checkpoint::from_json(&text).map_err(|e| {
                    ConnectorError::msg(
                        ErrorClass::Fatal,
                        format!("the checkpoint in {dir}/checkpoint.json cannot be read: {e}"),
                    )
                })?)
            }
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(store_err("read the checkpoint")(e).into()),
        };
        self.base = start_of(checkpoint.as_ref());
        // A commit that did not reach its checkpoint: its files are not part of the output.
        let pending = dir.clone().join("pending.json");
        match store.get(&pending).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(store_err("read pending.json")).map_err(ConnectorError::from)?;
                if let Ok(p) = serde_json::from_slice::<Pending>(&bytes) {
                    if p.start == self.base {
                        for f in &p.files {
                            match store.delete(&Path::from(f.as_str())).await {
                                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                                Err(e) => return Err(store_err(format!("remove {f}"))(e).into()),
                            }
                        }
                        info!(sink = %self.name, files = p.files.len(), "removed the files of a commit that did not complete");
                    }
                }
                match store.delete(&pending).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(store_err("remove pending.json")(e).into()),
                }
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(store_err("read pending.json")(e).into()),
        }
        crate::compact::recover(&store, &dir).await?;
        // Spill files of a unit of work that did not commit.
        let spill = self.spill_dir();
        let stale: Vec<Path> = store
            .list(Some(&spill))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(store_err("list the spill files"))
            .map_err(ConnectorError::from)?;
        for p in stale {
            match store.delete(&p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_err(format!("remove {p}"))(e).into()),
            }
        }
        self.rows.clear();
        self.dead.clear();
        self.counts.clear();
        self.spilled.clear();
        self.buffered = 0;
        self.bytes = 0;
        self.last_position = checkpoint.as_ref().and_then(|c| c.position.clone());
        self.stored = checkpoint.clone();
        self.stored_at = std::time::Instant::now();
        info!(sink = %self.name, url = %self.cfg.url, position = ?checkpoint.as_ref().and_then(|c| c.position.as_ref()).map(|p| p.to_string()), "sink opened");
        Ok(checkpoint)
    }

    async fn write(&mut self, event: &Event) -> Result<(), ConnectorError> {
        match event {
            Event::Begin(meta) => {
                self.txn_base = base_of(Some(&meta.position));
                self.txn = Some(meta.clone());
                self.seq = 0;
            }
            Event::Change(c) => self.change(&c.table, &c.op)?,
            Event::Commit { meta, .. } => {
                self.last_position = Some(meta.position.clone());
                self.txn = None;
            }
            Event::Copy(c) => self.copy(c)?,
            _ => {}
        }
        Ok(self.spill_if_full().await?)
    }

    async fn commit(&mut self, checkpoint: Checkpoint, ack: Ack) -> Result<(), ConnectorError> {
        if let Err(e) = self.settle().await {
            ack.fail(ConnectorError::msg(ErrorClass::Transient, e.to_string()));
            return Err(e.into());
        }
        if let Err(e) = self.finish_spill().await {
            let class = if matches!(e, ParquetError::Store { .. }) { ErrorClass::Transient } else { ErrorClass::Fatal };
            ack.fail(ConnectorError::msg(class, e.to_string()));
            return Err(e.into());
        }
        let only_position = self.rows.is_empty()
            && self.spilled.is_empty()
            && self.dead.is_empty()
            && self.stored_at.elapsed() < POSITION_STORE_EVERY
            && self.stored.as_ref().is_some_and(|s| s.same_but_position(&checkpoint));
        if only_position {
            ack.durable();
            return Ok(());
        }
        let unencoded = self.take_parts();
        let dead = (!self.dead.is_empty()).then(|| {
            let path = self.state_dir().join("dead_letters").join(format!("{}.jsonl", self.base));
            (path, Bytes::from(std::mem::take(&mut self.dead)))
        });
        let props = self.props();
        let store = self.store()?;
        let dir = self.state_dir();
        let spilled = std::mem::take(&mut self.spilled);
        self.counts.clear();
        let pending = Pending {
            start: self.base.clone(),
            files: spilled
                .iter()
                .map(|(_, p)| p.to_string())
                .chain(unencoded.iter().map(|(p, _, _)| p.to_string()))
                .chain(dead.iter().map(|(p, _)| p.to_string()))
                .collect(),
        };
        let pending_json = serde_json::to_vec(&pending).unwrap_or_default();
        let state = checkpoint.to_json();
        self.base = start_of(Some(&checkpoint));
        self.stored = Some(checkpoint);
        self.stored_at = std::time::Instant::now();
        let name = self.name.clone();
        let compaction = self.cfg.compaction.map(|c| {
            let mut parts: Vec<Path> =
                pending.files.iter().filter_map(|f| f.rsplit_once('/').map(|(dir, _)| Path::from(dir))).collect();
            parts.sort();
            parts.dedup();
            (c, parts, self.props(), format!("{}-{}", self.pipeline, self.index))
        });
        self.inflight = Some(tokio::spawn(async move {
            let r = async {
                let (pending_path, checkpoint_path) =
                    (dir.clone().join("pending.json"), dir.clone().join("checkpoint.json"));
                let mut files = encode_all(props, unencoded).await?;
                files.extend(dead);
                let n = spilled.len() + files.len();
                if n > 0 {
                    put(&store, &pending_path, Bytes::from(pending_json)).await?;
                }
                for (from, to) in spilled {
                    store.rename(&from, &to).await.map_err(store_err(format!("move {from} to {to}")))?;
                }
                for (path, bytes) in files {
                    put(&store, &path, bytes).await?;
                    sluice_core::crash_point("sink.mid_files");
                }
                sluice_core::crash_point("sink.before_commit");
                put(&store, &checkpoint_path, Bytes::from(state)).await?;
                sluice_core::crash_point("sink.after_commit");
                if n > 0 {
                    match store.delete(&pending_path).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(store_err("remove pending.json")(e)),
                    }
                }
                debug!(sink = %name, files = n, "committed");
                Ok(())
            }
            .await;
            match &r {
                Ok(()) => ack.durable(),
                Err(e) => {
                    let class =
                        if matches!(e, ParquetError::Store { .. }) { ErrorClass::Transient } else { ErrorClass::Fatal };
                    ack.fail(ConnectorError::msg(class, e.to_string()))
                }
            }
            r?;
            // After the acknowledgement: merging never holds the source back. A failure leaves
            // the small files as they were (and compact.json for the next open).
            if let Some((cfg, parts, props, owner)) = compaction {
                for part in parts {
                    if let Err(e) = crate::compact::partition(&store, &dir, &part, &owner, &cfg, &props).await {
                        warn!(sink = %name, partition = %part, error = %e, "compaction failed; the small files stay");
                    }
                }
            }
            Ok(())
        }));
        Ok(())
    }

    async fn close(&mut self) -> Result<(), ConnectorError> {
        Ok(self.settle().await?)
    }
}
