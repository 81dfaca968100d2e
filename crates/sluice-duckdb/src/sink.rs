//! The DuckDB sink: a live replica (the current state of every table) or a change log, in one
//! DuckDB file.
//!
//! ```text
//!  changes ─▶ replica: collapsed per key (KeyedBatch) │ changelog: one row per change
//!  copies  ─▶ a snapshot copy's rows are inserted; a live copy's rows merged by key
//!  buffer full inside a transaction or copy ─▶ written out into the open DuckDB transaction
//!  commit  ─▶ Arrow batches staged and applied (MERGE / INSERT / UPDATE) with the checkpoint
//!             in one DuckDB transaction, in the background; then the file is released
//! ```
//!
//! Progress: the checkpoint row (`<checkpoint_schema>.checkpoints`) commits with the data, so a
//! replay after a crash starts exactly after what the file holds (exactly once). The file is
//! held only while a unit of work runs; between commits other processes can open it (DuckDB
//! lets one process write a file, and none read it meanwhile).
//!
//! Errors: a value DuckDB's types cannot hold (a decimal NaN, a timestamp past Arrow's range) fails the sink
//! naming the table and column; a table whose shape change the replica cannot follow goes to
//! quarantine (`<checkpoint_schema>.quarantine`) and the rest keeps running; DuckDB failures
//! are transient (the sink reopens and replays from the checkpoint).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::{DataType as A, Field};
use async_trait::async_trait;
use sluice_arrow::Rows;
use sluice_core::collapse::{Added, KeyedBatch, NetOp};
use sluice_core::{
    Ack, BatchPolicy, Checkpoint, ColumnSchema, ConnectorError, CopyMode, CopyStep, ErrorClass, Event, Op, Row,
    SchemaRef, Sink, SinkContext, SinkStats, TableId, TableSchema, TxnMeta, Value,
};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::{ChangelogFormat, DuckDbSinkConfig};
use crate::db::{Db, DbError, Job, Step};
use crate::types::{qualified, quote};

/// A failure of the sink, classified.
#[derive(Debug, thiserror::Error)]
pub enum DuckDbError {
    /// DuckDB failed (retried from the checkpoint).
    #[error(transparent)]
    Db(#[from] DbError),
    /// A value the target cannot hold.
    #[error("{table}: {reason}")]
    Value { table: TableId, reason: String },
    /// The blocking task died.
    #[error("the DuckDB worker stopped: {0}")]
    Worker(String),
    /// The stored state cannot be read.
    #[error("{0}")]
    Setup(String),
}

impl From<DuckDbError> for ConnectorError {
    fn from(e: DuckDbError) -> ConnectorError {
        let class = match &e {
            DuckDbError::Db(d) if Db::transient(d) => ErrorClass::Transient,
            DuckDbError::Db(_) => ErrorClass::Fatal,
            DuckDbError::Worker(_) => ErrorClass::Transient,
            DuckDbError::Value { .. } | DuckDbError::Setup(_) => ErrorClass::Fatal,
        };
        ConnectorError::new(class, e.to_string(), e)
    }
}

/// Where one source table goes.
struct Target {
    /// The shape the table was last reconciled with
    schema: SchemaRef,
    /// `"schema"."table"`
    name: String,
    /// Replica: changes collapsed per key
    batch: Option<KeyedBatch>,
    /// Rows to insert as they are (a snapshot copy into an emptied table; change-log rows)
    rows: Vec<Row>,
    /// A snapshot copy is loading the table (its rows are inserted, not merged)
    loading: bool,
}

/// The sink.
pub struct DuckDbSink {
    name: String,
    cfg: DuckDbSinkConfig,
    pipeline: String,
    index: String,
    db: Option<Db>,
    /// A job running in the background, and the file back when it ends.
    inflight: Option<JoinHandle<(Db, Result<(), DbError>)>>,
    targets: HashMap<TableId, Target>,
    /// Steps written out early into the open transaction wait here for their turn.
    steps: Vec<Step>,
    /// Whether a DuckDB transaction is open (written out early, not committed).
    in_tx: bool,
    txn: Option<TxnMeta>,
    /// Changes seen in the current source transaction (change-log order within it).
    seq: u32,
    /// Rows and approximate bytes buffered.
    buffered: usize,
    bytes: usize,
    quarantine: HashMap<TableId, String>,
    /// Tables put in quarantine since the last commit (recorded with it).
    quarantined: Vec<(TableId, String)>,
    stats: Arc<SinkStats>,
    /// The DuckDB catalog of the file (named after it)
    catalog: String,
    /// The checkpoint last stored, and when.
    stored: Option<Checkpoint>,
    stored_at: std::time::Instant,
}

/// How often a position reached only by heartbeats is stored (a binlog source resumes from the
/// sink's checkpoint alone, so it must not fall far behind while the tables are idle; storing
/// it every second would write and hold the file for nothing).
const POSITION_STORE_EVERY: Duration = Duration::from_secs(10);

impl DuckDbSink {
    pub fn new(cfg: DuckDbSinkConfig, pipeline: &str, index: usize) -> DuckDbSink {
        DuckDbSink {
            name: format!("sink[{index}] duckdb {}", cfg.mode),
            pipeline: pipeline.to_string(),
            index: index.to_string(),
            db: None,
            inflight: None,
            targets: HashMap::new(),
            steps: Vec::new(),
            in_tx: false,
            txn: None,
            seq: 0,
            buffered: 0,
            bytes: 0,
            quarantine: HashMap::new(),
            quarantined: Vec::new(),
            stats: Arc::default(),
            catalog: String::new(),
            stored: None,
            stored_at: std::time::Instant::now(),
            cfg,
        }
    }

    fn checkpoint_table(&self) -> String {
        qualified(&self.catalog, &self.cfg.checkpoint_schema, "checkpoints")
    }

    fn quarantine_table(&self) -> String {
        qualified(&self.catalog, &self.cfg.checkpoint_schema, "quarantine")
    }

    /// Waits for a background job and takes the file back.
    async fn settle(&mut self) -> Result<(), DuckDbError> {
        if let Some(job) = self.inflight.take() {
            let (db, r) = job.await.map_err(|e| DuckDbError::Worker(e.to_string()))?;
            self.db = Some(db);
            r?;
        }
        Ok(())
    }

    /// Runs `f` on the file in a blocking task, after any background job.
    async fn blocking<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Db) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, DuckDbError> {
        self.settle().await?;
        let mut db = self.db.take().ok_or_else(|| DuckDbError::Worker("the sink was used before open".into()))?;
        let (db, r) = tokio::task::spawn_blocking(move || {
            let r = f(&mut db);
            (db, r)
        })
        .await
        .map_err(|e| DuckDbError::Worker(e.to_string()))?;
        self.db = Some(db);
        Ok(r?)
    }

    /// The target of `schema`'s table, created or brought to `schema`'s shape first. `None`
    /// when the table is (or just went) in quarantine.
    async fn target(&mut self, schema: &SchemaRef) -> Result<Option<&mut Target>, DuckDbError> {
        if self.quarantine.contains_key(&schema.id) {
            return Ok(None);
        }
        let current = self.targets.get(&schema.id).map(|t| t.schema.version == schema.version).unwrap_or(false);
        if !current {
            // What is buffered of the old shape goes out first, in the open transaction.
            self.write_out().await?;
            let seen = self.targets.get(&schema.id).map(|t| t.schema.clone());
            match self.reconcile(schema, seen).await? {
                Some(reason) => {
                    warn!(sink = %self.name, table = %schema.id, reason = %reason, "table put in quarantine; its changes are skipped");
                    self.quarantine.insert(schema.id.clone(), reason.clone());
                    self.quarantined.push((schema.id.clone(), reason));
                    self.targets.remove(&schema.id);
                    return Ok(None);
                }
                None => {
                    let name = qualified(&self.catalog, &schema.id.schema, &schema.id.name);
                    let replica = !self.cfg.changelog();
                    let t = self.targets.entry(schema.id.clone()).or_insert_with(|| Target {
                        schema: schema.clone(),
                        name: name.clone(),
                        batch: None,
                        rows: Vec::new(),
                        loading: false,
                    });
                    t.schema = schema.clone();
                    t.batch = replica.then(|| KeyedBatch::new(schema.clone()));
                }
            }
        }
        Ok(self.targets.get_mut(&schema.id))
    }

    /// Creates the table or changes its shape to `schema`'s; `Some(reason)` when it cannot be
    /// done under the `schema_changes` policy (the table then goes to quarantine).
    async fn reconcile(&mut self, schema: &SchemaRef, seen: Option<SchemaRef>) -> Result<Option<String>, DuckDbError> {
        let cfg = self.cfg.clone();
        let schema = schema.clone();
        let in_tx = self.in_tx;
        self.blocking(move |db| crate::shape::reconcile(db, &cfg, &schema, seen.as_deref(), in_tx)).await
    }

    /// Moves what is buffered into steps (in order: each table's rows, then its merge).
    fn drain_buffers(&mut self) -> Result<(), DuckDbError> {
        let mut ids: Vec<TableId> = self.targets.keys().cloned().collect();
        ids.sort();
        for id in ids {
            self.drain_table(&id)?;
        }
        self.buffered = 0;
        self.bytes = 0;
        Ok(())
    }

    /// Moves one table's buffers into steps.
    fn drain_table(&mut self, id: &TableId) -> Result<(), DuckDbError> {
        let changelog = self.cfg.changelog();
        let format = self.cfg.changelog_format;
        let catalog = self.catalog.clone();
        let Some(t) = self.targets.get_mut(id) else { return Ok(()) };
        if !t.rows.is_empty() {
            let rows = std::mem::take(&mut t.rows);
            let columns = if changelog { log_columns(&t.schema, format) } else { t.schema.columns.clone() };
            let batch = batch_of(&t.schema.id, &columns, &[], rows.iter().map(|r| (r, None)))?;
            // A snapshot's table was made by the sink with exactly these columns: the batch goes
            // in as it is when every Arrow type is the column's own.
            let direct = t.loading
                && batch
                    .schema()
                    .fields()
                    .iter()
                    .zip(&columns)
                    .all(|(f, c)| crate::types::staging_type(f.data_type()) == crate::types::column_type(c));
            if direct {
                self.steps.push(Step::Append {
                    catalog,
                    schema: t.schema.id.schema.clone(),
                    table: t.schema.id.name.clone(),
                    batch,
                });
            } else {
                self.steps.push(Step::Insert { table: t.name.clone(), columns, batch });
            }
        }
        if let Some(b) = t.batch.as_mut().filter(|b| !b.is_empty()) {
            let schema = b.schema().clone();
            let ops = std::mem::replace(b, KeyedBatch::new(schema.clone())).into_ops();
            push_ops(&mut self.steps, &t.name, &schema, ops)?;
        }
        Ok(())
    }

    /// Writes what is buffered into the open DuckDB transaction (a source transaction or a
    /// snapshot copy too large to hold in memory); nothing commits.
    async fn write_out(&mut self) -> Result<(), DuckDbError> {
        // Only the rows of consistent snapshots pending, outside any transaction: those commit
        // at once. DuckDB keeps an open transaction's rows in memory (350 MB for a million of
        // these rows, measured), and a snapshot cut short is loaded again from an emptied
        // table anyway, while the checkpoint still says the copy is not done.
        let snapshot_only = self.txn.is_none()
            && !self.in_tx
            && self.steps.iter().all(|s| matches!(s, Step::Insert { .. } | Step::Append { .. } | Step::Sql(_)))
            && self
                .targets
                .values()
                .all(|t| (t.rows.is_empty() || t.loading) && t.batch.as_ref().is_none_or(KeyedBatch::is_empty));
        self.drain_buffers()?;
        if self.steps.is_empty() {
            return Ok(());
        }
        let steps = std::mem::take(&mut self.steps);
        if snapshot_only {
            // In the background, so the next rows are decoded while DuckDB stores these; the
            // next use of the file waits for it.
            self.settle().await?;
            let mut db = self.db.take().ok_or_else(|| DuckDbError::Worker("the sink was used before open".into()))?;
            self.inflight = Some(tokio::task::spawn_blocking(move || {
                let r = db.run(Job { steps, checkpoint: None });
                (db, r)
            }));
            return Ok(());
        }
        let begin = !self.in_tx;
        self.blocking(move |db| {
            if begin {
                db.execute("BEGIN TRANSACTION")?;
            }
            db.apply_open(steps)
        })
        .await?;
        self.in_tx = true;
        Ok(())
    }

    /// Buffers one row's bytes and writes out when the buffer is full inside a unit of work
    /// that cannot commit yet.
    async fn after_row(&mut self, row_bytes: usize, must_hold: bool) -> Result<(), DuckDbError> {
        self.buffered += 1;
        self.bytes += row_bytes;
        if must_hold && self.cfg.buffer.reached(self.buffered, self.bytes) {
            self.write_out().await?;
        }
        Ok(())
    }

    async fn change(&mut self, table: &SchemaRef, op: Cow<'_, Op>) -> Result<(), DuckDbError> {
        let changelog = self.cfg.changelog();
        let format = self.cfg.changelog_format;
        let txn = self.txn.clone();
        let seq = self.seq;
        self.seq += 1;
        let Some(t) = self.target(table).await? else { return Ok(()) };
        let bytes = row_bytes(&op);
        if changelog {
            let row = log_row(&t.schema, &op, txn.as_ref(), seq, format);
            t.rows.push(row);
            return self.after_row(bytes, true).await;
        }
        let name = t.name.clone();
        let batch = t.batch.as_mut().expect("a replica target has a batch");
        match batch.add(op) {
            Added::Buffered { .. } => {}
            Added::Truncate => {
                // What the batch held before is void; the table is emptied in order.
                let id = table.id.clone();
                self.drain_table(&id)?;
                self.steps.push(Step::Sql(format!("DELETE FROM {name}")));
            }
            Added::MoveRow { old_key, row } => {
                let id = table.id.clone();
                self.drain_table(&id)?;
                self.steps.push(move_step(&name, table, &old_key, &row)?);
            }
        }
        self.after_row(bytes, true).await
    }

    async fn copy(&mut self, c: &sluice_core::Copy) -> Result<(), DuckDbError> {
        let changelog = self.cfg.changelog();
        let format = self.cfg.changelog_format;
        match &c.step {
            CopyStep::Begin { mode, .. } => {
                let Some(t) = self.target(&c.table).await? else { return Ok(()) };
                if !changelog && mode.empties() {
                    // Rows of the table the replica held before are void.
                    t.batch = Some(KeyedBatch::new(c.table.clone()));
                    t.rows.clear();
                    t.loading = *mode == CopyMode::Snapshot;
                    let name = t.name.clone();
                    if t.loading {
                        // A consistent snapshot fills an empty table before anything streams:
                        // the table is made again without its key, which is added once the rows
                        // are in (maintaining the index row by row doubled the load's time).
                        let cols = t
                            .schema
                            .columns
                            .iter()
                            .map(|c| format!("{} {}", quote(&c.name), crate::types::column_type(c)))
                            .collect::<Vec<_>>()
                            .join(", ");
                        self.steps.push(Step::Sql(format!("CREATE OR REPLACE TABLE {name} ({cols})")));
                    } else {
                        self.steps.push(Step::Sql(format!("DELETE FROM {name}")));
                    }
                }
            }
            CopyStep::Rows(rows) => {
                for row in rows {
                    let bytes = row.iter().map(Value::approx_bytes).sum();
                    let Some(t) = self.target(&c.table).await? else { return Ok(()) };
                    if changelog {
                        let op = Op::Insert { after: row.clone() };
                        t.rows.push(
                            log_row(&t.schema, &op, None, 0, format)
                                .into_iter()
                                .map(|v| retag_copy(v, format))
                                .collect(),
                        );
                    } else if t.loading {
                        t.rows.push(row.clone());
                    } else if let Some(b) = t.batch.as_mut() {
                        b.add_copied(row.clone());
                    }
                    self.after_row(bytes, true).await?;
                }
            }
            CopyStep::Bulk(_) => {
                return Err(DuckDbError::Setup(
                    "the duckdb sink was sent rows in a bulk format it does not accept".into(),
                ))
            }
            CopyStep::Progress { .. } => {}
            CopyStep::End => {
                if let Some(t) = self.targets.get_mut(&c.table.id) {
                    let id = t.schema.id.clone();
                    self.drain_table(&id)?;
                    if let Some(t) = self.targets.get_mut(&c.table.id) {
                        if std::mem::take(&mut t.loading) {
                            let keys: Vec<String> =
                                t.schema.columns.iter().filter(|c| c.key).map(|c| quote(&c.name)).collect();
                            let name = t.name.clone();
                            let not_null: String = t
                                .schema
                                .columns
                                .iter()
                                .filter(|c| c.key)
                                .map(|c| format!("ALTER TABLE {name} ALTER COLUMN {} SET NOT NULL; ", quote(&c.name)))
                                .collect();
                            self.steps.push(Step::Sql(format!(
                                "{not_null}ALTER TABLE {name} ADD PRIMARY KEY ({})",
                                keys.join(", ")
                            )));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn write_one(&mut self, event: &Event) -> Result<(), DuckDbError> {
        match event {
            Event::Begin(meta) => {
                self.txn = Some(meta.clone());
                self.seq = 0;
            }
            Event::Change(c) => self.change(&c.table, Cow::Borrowed(&c.op)).await?,
            Event::Commit { .. } => self.txn = None,
            Event::Copy(c) => self.copy(c).await?,
            _ => {}
        }
        Ok(())
    }

    /// The job of a commit: everything buffered, the quarantine records, the checkpoint.
    fn commit_job(&mut self, checkpoint: &Checkpoint) -> Result<Job, DuckDbError> {
        self.drain_buffers()?;
        let mut steps = std::mem::take(&mut self.steps);
        let position = checkpoint.position.as_ref().and_then(|p| serde_json::to_string(p).ok());
        for (t, reason) in std::mem::take(&mut self.quarantined) {
            steps.push(Step::Sql(format!(
                "DELETE FROM {q} WHERE pipeline = {p} AND sink = {s} AND source_schema = {ts} AND source_table = {tt}; \
                 INSERT INTO {q} VALUES ({p}, {s}, {ts}, {tt}, {r}, {pos}, now())",
                q = self.quarantine_table(),
                p = literal(&self.pipeline),
                s = literal(&self.index),
                ts = literal(&t.schema),
                tt = literal(&t.name),
                r = literal(&reason),
                pos = position.as_deref().map(literal).unwrap_or_else(|| "NULL".into()),
            )));
        }
        Ok(Job {
            steps,
            checkpoint: Some((
                self.checkpoint_table(),
                self.pipeline.clone(),
                self.index.clone(),
                checkpoint.to_json(),
                position,
            )),
        })
    }
}

/// A string as a SQL literal (for the few statements DuckDB cannot bind: values in DDL and
/// multi-statement batches); quotes doubled, so nothing escapes it.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Approximate bytes a change buffers.
fn row_bytes(op: &Op) -> usize {
    let row = match op {
        Op::Insert { after } | Op::Update { after, .. } => after,
        Op::Delete { before } => before,
        Op::Truncate => return 0,
    };
    row.iter().map(Value::approx_bytes).sum()
}

/// The columns of a change-log table.
pub(crate) fn log_columns(t: &TableSchema, format: ChangelogFormat) -> Vec<ColumnSchema> {
    use sluice_core::DataType;
    match format {
        ChangelogFormat::Snowflake => vec![
            ColumnSchema::new("RECORD_METADATA", DataType::Json, "JSON"),
            ColumnSchema::new("RECORD_CONTENT", DataType::Json, "JSON"),
        ],
        ChangelogFormat::Typed => {
            let mut cols: Vec<ColumnSchema> = t
                .columns
                .iter()
                .map(|c| {
                    let mut c = c.clone();
                    c.key = false;
                    c.nullable = true;
                    c
                })
                .collect();
            cols.push(ColumnSchema::new("_op", DataType::Text, "VARCHAR"));
            cols.push(ColumnSchema::new("_position", DataType::Text, "VARCHAR"));
            cols.push(ColumnSchema::new("_commit_ts", DataType::TimestampTz, "TIMESTAMPTZ"));
            cols
        }
    }
}

/// One change-log row for `op`.
fn log_row(t: &TableSchema, op: &Op, txn: Option<&TxnMeta>, seq: u32, format: ChangelogFormat) -> Row {
    let (code, before, after) = match op {
        Op::Insert { after } => ("c", None, Some(after)),
        Op::Update { before, after } => ("u", before.as_ref(), Some(after)),
        Op::Delete { before } => ("d", Some(before), None),
        Op::Truncate => ("t", None, None),
    };
    let position = txn.map(|m| format!("{}-{seq:08}", m.position.sortable()));
    let commit = txn.map(|m| sluice_core::Timestamp::from_micros(m.commit_ts_micros));
    match format {
        ChangelogFormat::Snowflake => {
            let (meta, content) = sluice_core::json::connector_record(t, op, txn, position);
            let content = content.map_or(Value::Null, |c| Value::Json(c.to_string().as_str().into()));
            vec![Value::Json(meta.to_string().as_str().into()), content]
        }
        ChangelogFormat::Typed => {
            let image = after.or(before);
            let mut row: Row = match image {
                Some(r) => r.iter().map(|v| if *v == Value::Unchanged { Value::Null } else { v.clone() }).collect(),
                None => vec![Value::Null; t.columns.len()],
            };
            row.push(Value::Text(code.into()));
            row.push(position.map_or(Value::Null, |p| Value::Text(p.as_str().into())));
            row.push(commit.map_or(Value::Null, Value::TimestampTz));
            row
        }
    }
}

/// A copied row logs as `r` (Debezium's read), not `c`.
fn retag_copy(v: Value, format: ChangelogFormat) -> Value {
    match (format, v) {
        (ChangelogFormat::Typed, Value::Text(t)) if t.as_str() == "c" => Value::Text("r".into()),
        (ChangelogFormat::Snowflake, Value::Json(j)) if j.as_str().contains("\"operation\":\"c\"") => {
            Value::Json(j.as_str().replacen("\"operation\":\"c\"", "\"operation\":\"r\"", 1).as_str().into())
        }
        (_, v) => v,
    }
}

/// An Arrow batch of `rows` with `columns`, each row followed by its `extra` value.
fn batch_of<'r>(
    table: &TableId,
    columns: &[ColumnSchema],
    extra: &[Field],
    rows: impl Iterator<Item = (&'r Row, Option<Value>)>,
) -> Result<RecordBatch, DuckDbError> {
    let mut fields: Vec<Field> = columns.iter().map(staging_field).collect();
    fields.extend(extra.iter().cloned());
    let mut b = Rows::new(Arc::new(arrow_schema::Schema::new(fields)));
    for (row, x) in rows {
        b.push(row.iter().chain(x.as_ref()))
            .map_err(|e| DuckDbError::Value { table: table.clone(), reason: e.to_string() })?;
    }
    b.finish().map_err(|e| DuckDbError::Setup(format!("{table}: {e}")))
}

/// The Arrow field a column is staged as: its own, except intervals, which travel as text
/// (`N months N days N microseconds`, cast back on insert). duckdb-rs 1.10506 rebuilds interval
/// arrays without their null bitmap, so a NULL interval would arrive as a zero one.
fn staging_field(c: &ColumnSchema) -> Field {
    let f = sluice_arrow::field(c);
    let t = sluice_arrow::intervals_as_text(f.data_type());
    f.with_data_type(t)
}

/// Steps applying a table's net operations: one MERGE of the whole rows and deletes, and an
/// UPDATE per set of columns for rows that did not resend every value.
fn push_ops(steps: &mut Vec<Step>, name: &str, schema: &SchemaRef, ops: Vec<NetOp>) -> Result<(), DuckDbError> {
    let keys: Vec<usize> = schema.key_indexes();
    let mut whole: Vec<(Row, bool)> = Vec::new();
    let mut partial: HashMap<Vec<usize>, Vec<Row>> = HashMap::new();
    for op in ops {
        match op {
            NetOp::Delete(key) => {
                let mut row = vec![Value::Null; schema.columns.len()];
                for (i, v) in keys.iter().zip(key) {
                    row[*i] = v;
                }
                whole.push((row, true));
            }
            NetOp::Insert(row) | NetOp::Update(row) | NetOp::Upsert(row) => {
                if row.contains(&Value::Unchanged) {
                    let sent: Vec<usize> = (0..row.len()).filter(|i| row[*i] != Value::Unchanged).collect();
                    partial.entry(sent).or_default().push(row);
                } else {
                    whole.push((row, false));
                }
            }
        }
    }
    if !whole.is_empty() {
        let flag = Field::new("_sluice_delete", A::Boolean, false);
        let batch =
            batch_of(&schema.id, &schema.columns, &[flag], whole.iter().map(|(r, d)| (r, Some(Value::Bool(*d)))))?;
        steps.push(Step::Merge { table: name.to_string(), columns: schema.columns.clone(), batch });
    }
    for (sent, rows) in partial {
        let key_cols: Vec<ColumnSchema> = keys.iter().map(|i| schema.columns[*i].clone()).collect();
        let set: Vec<ColumnSchema> =
            sent.iter().filter(|i| !keys.contains(i)).map(|i| schema.columns[*i].clone()).collect();
        if set.is_empty() {
            continue;
        }
        let mut cols = key_cols.clone();
        cols.extend(set.iter().cloned());
        let picked: Vec<Row> = rows
            .iter()
            .map(|r| keys.iter().chain(sent.iter().filter(|i| !keys.contains(i))).map(|i| r[*i].clone()).collect())
            .collect();
        let batch = batch_of(&schema.id, &cols, &[], picked.iter().map(|r| (r, None)))?;
        steps.push(Step::Update { table: name.to_string(), keys: key_cols, set, batch });
    }
    Ok(())
}

/// A row moved to a new key without resending some values.
fn move_step(name: &str, schema: &SchemaRef, old_key: &[Value], row: &Row) -> Result<Step, DuckDbError> {
    let keys = schema.key_indexes();
    let mut cols: Vec<ColumnSchema> = keys
        .iter()
        .map(|i| {
            let mut c = schema.columns[*i].clone();
            c.name = format!("_sluice_old_{}", c.name);
            c
        })
        .collect();
    let sent: Vec<usize> = (0..row.len()).filter(|i| row[*i] != Value::Unchanged).collect();
    let set: Vec<ColumnSchema> = sent.iter().map(|i| schema.columns[*i].clone()).collect();
    cols.extend(set.iter().cloned());
    let values: Row = old_key.iter().cloned().chain(sent.iter().map(|i| row[*i].clone())).collect();
    let batch = batch_of(&schema.id, &cols, &[], std::iter::once((&values, None)))?;
    let key_cols = keys.iter().map(|i| schema.columns[*i].clone()).collect();
    Ok(Step::Move { table: name.to_string(), keys: key_cols, set, batch })
}

#[async_trait]
impl Sink for DuckDbSink {
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
        self.stats = ctx.stats;
        if let Some(dir) = std::path::Path::new(&self.cfg.path).parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                ConnectorError::new(ErrorClass::Fatal, format!("create the directory of {}", self.cfg.path), e)
            })?;
        }
        self.db = Some(Db::new(&self.cfg.path, self.cfg.memory_limit.clone(), self.cfg.threads));
        self.catalog = self.blocking(|db| db.catalog()).await?;
        let schema = self.cfg.checkpoint_schema.clone();
        let (table, qtable) = (self.checkpoint_table(), self.quarantine_table());
        let (pipeline, index) = (self.pipeline.clone(), self.index.clone());
        let catalog = quote(&self.catalog);
        let (state, quarantined) = self
            .blocking(move |db| {
                db.execute(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {catalog}.{s}; \
                     CREATE TABLE IF NOT EXISTS {table} (pipeline VARCHAR NOT NULL, sink VARCHAR NOT NULL, \
                       position JSON, state JSON NOT NULL, updated_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (pipeline, sink)); \
                     CREATE TABLE IF NOT EXISTS {qtable} (pipeline VARCHAR NOT NULL, sink VARCHAR NOT NULL, \
                       source_schema VARCHAR NOT NULL, source_table VARCHAR NOT NULL, reason VARCHAR NOT NULL, \
                       position JSON, since TIMESTAMPTZ NOT NULL)",
                    s = quote(&schema)
                ))?;
                let conn = db.conn()?;
                let state: Option<String> = conn
                    .query_row(
                        &format!("SELECT CAST(state AS VARCHAR) FROM {table} WHERE pipeline = ? AND sink = ?"),
                        duckdb::params![pipeline, index],
                        |r| r.get(0),
                    )
                    .map(Some)
                    .or_else(|e| match e {
                        duckdb::Error::QueryReturnedNoRows => Ok(None),
                        e => Err(e),
                    })
                    .map_err(|source| DbError { what: "read the checkpoint".into(), source })?;
                let mut stmt = conn
                    .prepare(&format!(
                        "SELECT source_schema, source_table, reason FROM {qtable} WHERE pipeline = ? AND sink = ?"
                    ))
                    .map_err(|source| DbError { what: "read the quarantine".into(), source })?;
                let quarantined: Vec<(String, String, String)> = stmt
                    .query_map(duckdb::params![pipeline, index], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .and_then(|rows| rows.collect())
                    .map_err(|source| DbError { what: "read the quarantine".into(), source })?;
                drop(stmt);
                db.release();
                Ok((state, quarantined))
            })
            .await?;
        self.quarantine = quarantined.into_iter().map(|(s, t, r)| (TableId::new(s, t), r)).collect();
        for (t, reason) in &self.quarantine {
            warn!(sink = %self.name, table = %t, reason = %reason, "table is in quarantine; its changes are skipped");
        }
        self.targets.clear();
        self.steps.clear();
        self.in_tx = false;
        let cp = match state {
            Some(s) => Some(Checkpoint::from_json(&s).map_err(|e| {
                ConnectorError::msg(
                    ErrorClass::Fatal,
                    format!("the checkpoint in {} cannot be read: {e}", self.cfg.path),
                )
            })?),
            None => None,
        };
        self.stored = cp.clone();
        self.stored_at = std::time::Instant::now();
        info!(sink = %self.name, path = %self.cfg.path, position = ?cp.as_ref().and_then(|c| c.position.as_ref()).map(|p| p.to_string()), "sink opened");
        Ok(cp)
    }

    async fn write(&mut self, event: &Event) -> Result<(), ConnectorError> {
        Ok(self.write_one(event).await?)
    }

    async fn write_batch(&mut self, events: Vec<Arc<Event>>) -> Result<(), ConnectorError> {
        for ev in events {
            match Arc::try_unwrap(ev) {
                Ok(Event::Change(c)) => self.change(&c.table, Cow::Owned(c.op)).await?,
                Ok(other) => self.write_one(&other).await?,
                Err(shared) => self.write_one(&shared).await?,
            }
        }
        Ok(())
    }

    async fn commit(&mut self, checkpoint: Checkpoint, ack: Ack) -> Result<(), ConnectorError> {
        if let Err(e) = self.settle().await {
            ack.fail(ConnectorError::msg(ErrorClass::Transient, e.to_string()));
            return Err(e.into());
        }
        // Only heartbeats since the last commit: nothing the file must hold changed.
        let only_position = !self.in_tx
            && self.steps.is_empty()
            && self.quarantined.is_empty()
            && self.buffered == 0
            && self.stored_at.elapsed() < POSITION_STORE_EVERY
            && self.stored.as_ref().is_some_and(|s| s.same_but_position(&checkpoint))
            && self.targets.values().all(|t| t.rows.is_empty() && t.batch.as_ref().is_none_or(KeyedBatch::is_empty));
        if only_position {
            ack.durable();
            return Ok(());
        }
        self.stored = Some(checkpoint.clone());
        self.stored_at = std::time::Instant::now();
        let job = match self.commit_job(&checkpoint) {
            Ok(job) => job,
            Err(e) => {
                ack.fail(ConnectorError::msg(ErrorClass::Fatal, e.to_string()));
                return Err(e.into());
            }
        };
        let mut db =
            self.db.take().ok_or_else(|| ConnectorError::msg(ErrorClass::Fatal, "duckdb sink used before open"))?;
        let in_tx = std::mem::replace(&mut self.in_tx, false);
        self.inflight = Some(tokio::task::spawn_blocking(move || {
            let r = if in_tx { db.commit_open(job) } else { db.run(job) };
            match &r {
                Ok(()) => ack.durable(),
                Err(e) => {
                    let class = if Db::transient(e) { ErrorClass::Transient } else { ErrorClass::Fatal };
                    ack.fail(ConnectorError::msg(class, e.to_string()))
                }
            }
            db.release();
            (db, r)
        }));
        Ok(())
    }

    async fn close(&mut self) -> Result<(), ConnectorError> {
        let settled = self.settle().await;
        if let Some(mut db) = self.db.take() {
            let in_tx = self.in_tx;
            let _ = tokio::task::spawn_blocking(move || {
                if in_tx {
                    let _ = db.execute("ROLLBACK");
                }
                db.release();
            })
            .await;
        }
        self.in_tx = false;
        Ok(settled?)
    }
}

/// For `sluice tables`: what the sink's checkpoint and quarantine say.
pub fn tables(
    cfg: &DuckDbSinkConfig,
    pipeline: &str,
    index: usize,
) -> Result<Vec<sluice_core::SinkTable>, DuckDbError> {
    let mut db = Db::new(&cfg.path, cfg.memory_limit.clone(), cfg.threads);
    let catalog = db.catalog()?;
    let conn = db.conn()?;
    let table = qualified(&catalog, &cfg.checkpoint_schema, "checkpoints");
    let qtable = qualified(&catalog, &cfg.checkpoint_schema, "quarantine");
    let index = index.to_string();
    let state: Option<String> = conn
        .query_row(
            &format!("SELECT CAST(state AS VARCHAR) FROM {table} WHERE pipeline = ? AND sink = ?"),
            duckdb::params![pipeline, index],
            |r| r.get(0),
        )
        .ok();
    let cp = state.and_then(|s| Checkpoint::from_json(&s).ok());
    let quarantined: Vec<(TableId, String, String, Option<String>)> = conn
        .prepare(&format!(
            "SELECT source_schema, source_table, reason, CAST(since AS VARCHAR), CAST(position AS VARCHAR) FROM {qtable} \
             WHERE pipeline = ? AND sink = ?"
        ))
        .and_then(|mut s| {
            s.query_map(duckdb::params![pipeline, index], |r| {
                Ok((TableId::new(r.get::<_, String>(0)?, r.get::<_, String>(1)?), r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect()
        })
        .unwrap_or_default();
    Ok(sluice_core::SinkTable::list(cp.as_ref(), quarantined))
}

/// For `sluice tables --release`: takes a table out of quarantine and forgets its copy, so the
/// next run copies it again.
pub fn release(cfg: &DuckDbSinkConfig, pipeline: &str, index: usize, t: &TableId) -> Result<bool, DuckDbError> {
    let mut db = Db::new(&cfg.path, cfg.memory_limit.clone(), cfg.threads);
    let catalog = db.catalog()?;
    let qtable = qualified(&catalog, &cfg.checkpoint_schema, "quarantine");
    let table = qualified(&catalog, &cfg.checkpoint_schema, "checkpoints");
    let index = index.to_string();
    let conn = db.conn()?;
    let n = conn
        .execute(
            &format!("DELETE FROM {qtable} WHERE pipeline = ? AND sink = ? AND source_schema = ? AND source_table = ?"),
            duckdb::params![pipeline, index, t.schema, t.name],
        )
        .map_err(|source| DbError { what: "release the table".into(), source })?;
    let state: Option<String> = conn
        .query_row(
            &format!("SELECT CAST(state AS VARCHAR) FROM {table} WHERE pipeline = ? AND sink = ?"),
            duckdb::params![pipeline, index],
            |r| r.get(0),
        )
        .ok();
    if let Some(mut cp) = state.and_then(|s| Checkpoint::from_json(&s).ok()) {
        cp.tables.remove(t);
        cp.table_ids.remove(t);
        conn.execute(
            &format!("UPDATE {table} SET state = ? WHERE pipeline = ? AND sink = ?"),
            duckdb::params![cp.to_json(), pipeline, index],
        )
        .map_err(|source| DbError { what: "forget the table's copy".into(), source })?;
    }
    Ok(n > 0)
}
