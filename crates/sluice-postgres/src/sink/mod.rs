//! PostgreSQL sink: a live replica, or a change log.
//!
//! ```text
//!  write(change) ──▶ per-table KeyedBatch (key ─▶ net op)              replica
//!                ──▶ per-table list of log rows                        changelog
//!  write(copy)   ──▶ consistent copy: COPY FROM STDIN on N connections (snapshot_copy.rs)
//!                ──▶ copy of a live table: merged into the batch as upserts
//!        │  past 2 × batch.max_rows buffered: written out inside the open target transaction
//!        ▼
//!  commit(checkpoint, ack) ──▶ statements + checkpoint row + COMMIT ──▶ ack.durable()
//!                              (in a background task while the next batch gathers)
//! ```
//!
//! Exactly once: the checkpoint row (see `checkpoint.rs`) is written in the same target
//! transaction as the rows it covers, and the runtime commits only between source transactions.
//! After a crash the target holds whole source transactions up to the stored position and
//! nothing after it; the runtime replays from there and skips anything at or before it.
//!
//! Ordering: a batch commits in a background task; every other use of the connection waits for
//! it first (`settle`), so the target sees statements in source order, and acknowledgements are
//! sent in commit order.
//!
//! Errors: connection failures are transient (the transaction rolls back, the runtime replays).
//! A change the target refuses is found by applying the batch change by change and stored in the
//! dead-letter table, in the same transaction. A target whose shape cannot be made to match is
//! fatal with the table named.

pub(crate) mod apply;
mod changelog;
pub(crate) mod checkpoint;
mod snapshot_copy;
mod target;
mod write;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rustc_hash::FxHashMap;
use sluice_core::collapse::{Added, KeyedBatch, NetOp};
use sluice_core::{
    Ack, BatchPolicy, BulkFormat, Checkpoint, ConnectorError, Copy, CopyMode, CopyStep, ErrorClass, Event, Op,
    Position, Row, SchemaRef, Sink, SinkContext, SinkStats, SinkTable, TableId, TableSchema, TxnMeta,
};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Statement};
use tracing::{debug, info, warn};

use crate::catalog::{self, TypeCache};
use crate::config::{PgSinkConfig, SinkMode};
use crate::copy::{COPY_BINARY, COPY_TEXT};
use crate::error::{Ctx, PgError};
use apply::{Planner, Sorted, Step};
use changelog::LogRow;
use checkpoint::{CheckpointStore, CheckpointWrite};
use snapshot_copy::SnapshotCopy;
use target::Target;
use write::{DeadLetters, Writer};

pub use checkpoint::{CHECKPOINT_TABLE, DEAD_LETTER_TABLE};

/// Buffered keys, as a multiple of `batch.max_rows`, at which a transaction still open is
/// written out early.
const EARLY_WRITE_FACTOR: usize = 2;

/// How long one opening attempt waits for an earlier incarnation of the sink, or another
/// process running this pipeline, to let go of the target (below the runtime's open timeout).
const FENCE_WAIT: Duration = Duration::from_secs(50);

/// How often a position reached only by heartbeats is stored.
const POSITION_STORE_EVERY: Duration = Duration::from_secs(10);

/// The PostgreSQL sink.
pub struct PgSink {
    name: String,
    cfg: PgSinkConfig,
    store: CheckpointStore,
    client: Option<Arc<Client>>,
    stats: Arc<SinkStats>,
    /// A target transaction is open on the main connection.
    in_tx: bool,
    types: TypeCache,
    targets: FxHashMap<TableId, Target>,
    batches: FxHashMap<TableId, KeyedBatch>,
    logs: FxHashMap<TableId, (SchemaRef, Vec<LogRow>)>,
    /// Keys (replica) or rows (changelog) buffered in memory.
    buffered: usize,
    /// Something was written since the last commit.
    dirty: bool,
    /// The last checkpoint stored.
    stored: Option<Checkpoint>,
    /// When the stored checkpoint was last written
    stored_at: std::time::Instant,
    /// A batch committing in the background.
    inflight: Inflight,
    txn: Option<TxnMeta>,
    statements: HashMap<String, Statement>,
    /// Replica mode, during a consistent copy: the connections loading the table, and the table.
    snapshot: Option<SnapshotCopy>,
    loading: Option<SchemaRef>,
    /// The last schema whose target table was checked (exists, current shape, has its key).
    ready: Option<SchemaRef>,
    /// Tables in quarantine (and why): their changes and copies are skipped.
    quarantine: FxHashMap<TableId, String>,
    /// Other processes of the pipeline write this target too (`SinkContext::shared`).
    shared: bool,
    /// A shared sink's own position before the next commit: what it opened with or last
    /// stored, with the offsets of partitions it adopted since ([`Sink::adopt`]). A partition
    /// whose stored offset is past this one was applied by another process.
    known: Option<Position>,
}

/// The batch committing in the background, if any.
#[derive(Default)]
pub(crate) struct Inflight(Option<JoinHandle<JobDone>>);

impl Inflight {
    /// A batch is committing and has not ended yet.
    fn busy(&self) -> bool {
        self.0.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// Waits for it to end; its failure is returned here.
    pub(crate) async fn settle(&mut self) -> Result<(), PgError> {
        let Some(handle) = self.0.take() else { return Ok(()) };
        match handle.await.map_err(|e| PgError::Protocol(format!("sink commit task failed: {e}")))? {
            JobDone::Committed => Ok(()),
            JobDone::Failed(msg) => Err(PgError::Protocol(msg)),
        }
    }
}

/// How a background commit ended.
enum JobDone {
    /// Committed and acknowledged.
    Committed,
    /// Failed; the ack was failed with the error, which this repeats.
    Failed(String),
}

fn store_of(cfg: &PgSinkConfig, pipeline: &str, index: usize) -> CheckpointStore {
    CheckpointStore::new(&cfg.checkpoint_schema, pipeline, &format!("sink{index}"))
}

/// Every table the `index`-th sink of `pipeline` holds, with its state (`sluice tables`).
pub async fn tables(cfg: &PgSinkConfig, pipeline: &str, index: usize) -> Result<Vec<SinkTable>, ConnectorError> {
    let store = store_of(cfg, pipeline, index);
    let client = catalog::connect(cfg.url.expose(), &format!("sink[{index}]")).await?;
    if !store.exists(&client).await? {
        return Ok(Vec::new());
    }
    let cp = store.read(&client).await?;
    let quarantined = store.quarantined(&client).await?.into_iter().map(|q| (q.table, q.reason, q.since, q.position));
    Ok(SinkTable::list(cp.as_ref(), quarantined))
}

/// Releases `table` from quarantine in the `index`-th sink of `pipeline`; refuses while the
/// pipeline runs against the sink (it holds the sink's lock).
pub async fn release(
    cfg: &PgSinkConfig,
    pipeline: &str,
    index: usize,
    table: &TableId,
) -> Result<bool, ConnectorError> {
    let store = store_of(cfg, pipeline, index);
    let client = catalog::connect(cfg.url.expose(), &format!("sink[{index}]")).await?;
    if !store.exists(&client).await? {
        return Ok(false);
    }
    if store.fence(&client, Duration::ZERO).await.is_err() {
        return Err(ConnectorError::msg(
            ErrorClass::Fatal,
            format!(
                "pipeline {pipeline:?} is running against sink[{index}]; stop it, release the table, start it again"
            ),
        ));
    }
    store.release(&client, table).await
}

impl PgSink {
    /// The `index`-th sink of pipeline `pipeline`.
    pub fn new(cfg: PgSinkConfig, pipeline: &str, index: usize) -> Self {
        PgSink {
            name: format!("sink[{index}] postgres {}", cfg.mode),
            store: store_of(&cfg, pipeline, index),
            cfg,
            client: None,
            stats: Arc::default(),
            in_tx: false,
            types: TypeCache::default(),
            targets: FxHashMap::default(),
            batches: FxHashMap::default(),
            logs: FxHashMap::default(),
            buffered: 0,
            dirty: false,
            stored: None,
            stored_at: std::time::Instant::now(),
            inflight: Inflight::default(),
            txn: None,
            statements: HashMap::new(),
            snapshot: None,
            loading: None,
            ready: None,
            quarantine: FxHashMap::default(),
            shared: false,
            known: None,
        }
    }

    /// The statement storing `checkpoint`; for a shared sink, merged into the stored one.
    fn checkpoint_write(&self, checkpoint: &Checkpoint) -> CheckpointWrite {
        let write = self.store.write(checkpoint);
        match self.shared {
            true => write.shared(checkpoint, self.known.clone()),
            false => write,
        }
    }

    fn client(&self) -> Result<Arc<Client>, PgError> {
        self.client.clone().ok_or_else(|| PgError::Protocol("sink used before open".into()))
    }

    fn label(&self) -> String {
        format!("{} ({})", self.name, self.cfg.url.redacted())
    }

    /// Waits for the batch committing in the background, if any.
    async fn settle(&mut self) -> Result<(), PgError> {
        self.inflight.settle().await
    }

    fn dead_letters(&self) -> DeadLetters {
        DeadLetters {
            table: self.store.dead_letters(),
            pipeline: self.store.pipeline().to_string(),
            sink: self.store.sink().to_string(),
            stats: self.stats.clone(),
        }
    }

    async fn begin(&mut self) -> Result<(), PgError> {
        self.settle().await?;
        if !self.in_tx {
            self.client()?.batch_execute("BEGIN").await.ctx("begin target transaction")?;
            self.in_tx = true;
        }
        Ok(())
    }

    fn target_name(&self, id: &TableId) -> TableId {
        match self.cfg.mode {
            SinkMode::Replica => id.clone(),
            SinkMode::Changelog => TableId::new(id.schema.clone(), format!("{}{}", id.name, self.cfg.changelog_suffix)),
        }
    }

    /// Creates or widens the target table for `schema` (inside the open target transaction).
    /// With `defer_key`, a replica table created here has no primary key until the bulk load
    /// that follows ends.
    async fn ensure_target(&mut self, schema: &TableSchema, defer_key: bool) -> Result<(), PgError> {
        if self.targets.get(&schema.id).is_some_and(|t| t.version == schema.version) {
            return Ok(());
        }
        self.ready = None;
        self.begin().await?;
        let client = self.client()?;
        let tid = self.target_name(&schema.id);
        let previous = self.targets.get(&schema.id).map(|t| t.source_columns.clone()).unwrap_or_default();
        let t = target::reconcile(
            &client,
            self.cfg.url.expose(),
            &mut self.types,
            &tid,
            schema,
            self.cfg.mode,
            self.cfg.schema_changes,
            &previous,
            defer_key,
        )
        .await?;
        self.targets.insert(schema.id.clone(), t);
        Ok(())
    }

    /// Makes sure the target table has its primary key before keyed statements use it.
    async fn ensure_key(&mut self, schema: &TableSchema) -> Result<(), PgError> {
        if self.targets.get(&schema.id).is_some_and(|t| t.has_key) {
            return Ok(());
        }
        self.begin().await?;
        let client = self.client()?;
        let t = self
            .targets
            .get_mut(&schema.id)
            .ok_or_else(|| PgError::Protocol(format!("no target for {}", schema.id)))?;
        target::add_key(&client, t, schema).await
    }

    fn target(&self, id: &TableId) -> Result<&Target, PgError> {
        self.targets.get(id).ok_or_else(|| PgError::Protocol(format!("no target for {id}")))
    }

    /// Whether changes to `table` are skipped because it is in quarantine.
    fn quarantined(&self, table: &TableId) -> bool {
        !self.quarantine.is_empty() && self.quarantine.contains_key(table)
    }

    /// Puts `table` in quarantine for `reason`: recorded in the open target transaction (so it
    /// is durable with the checkpoint that skips its changes), its buffered changes dropped.
    async fn quarantine(&mut self, table: &TableId, reason: String) -> Result<(), PgError> {
        if let Some(b) = self.batches.remove(table) {
            self.buffered = self.buffered.saturating_sub(b.len());
        }
        if let Some((_, rows)) = self.logs.remove(table) {
            self.buffered = self.buffered.saturating_sub(rows.len());
        }
        self.ready = None;
        self.begin().await?;
        let position = self.txn.as_ref().map(|m| m.position.to_string());
        let client = self.client()?;
        self.store.quarantine(&client, table, &reason, position.as_deref()).await?;
        self.dirty = true;
        warn!(sink = %self.name, table = %table, reason = %reason, "table quarantined; the other tables keep running");
        self.quarantine.insert(table.clone(), reason);
        Ok(())
    }

    async fn accept_change(&mut self, schema: &SchemaRef, op: Cow<'_, Op>) -> Result<(), PgError> {
        if self.quarantined(&schema.id) {
            return Ok(());
        }
        match self.apply_change(schema, op).await {
            Err(PgError::Incompatible(reason)) => self.quarantine(&schema.id, reason).await,
            r => r,
        }
    }

    async fn apply_change(&mut self, schema: &SchemaRef, op: Cow<'_, Op>) -> Result<(), PgError> {
        // Consecutive changes usually share one schema: check the target once for it.
        if !self.ready.as_ref().is_some_and(|r| Arc::ptr_eq(r, schema)) {
            self.write_stale(schema).await?;
            self.ensure_target(schema, false).await?;
            if self.cfg.mode == SinkMode::Replica {
                self.ensure_key(schema).await?;
            }
            self.ready = Some(schema.clone());
        }
        self.dirty = true;
        if self.cfg.mode == SinkMode::Changelog {
            let row = LogRow::change(schema, &op, self.txn.as_ref());
            self.logs.entry(schema.id.clone()).or_insert_with(|| (schema.clone(), Vec::new())).1.push(row);
            self.buffered += 1;
            return self.maybe_write_out().await;
        }
        if matches!(*op, Op::Truncate) {
            if let Some(b) = self.batches.remove(&schema.id) {
                self.buffered = self.buffered.saturating_sub(b.len());
            }
            self.begin().await?;
            let name = self.target(&schema.id)?.name.clone();
            self.client()?.batch_execute(&format!("TRUNCATE {name}")).await.ctx(format!("truncate {name}"))?;
            return Ok(());
        }
        if schema.key_indexes().is_empty() {
            // No key (REPLICA IDENTITY FULL): applied one by one, in order with what came before.
            self.write_all().await?;
            self.begin().await?;
            let target = self.target(&schema.id)?.clone();
            let client = self.client()?;
            let mut planner = Planner::new(&client, &mut self.statements, self.cfg.encoding);
            if let Some(step) = planner.unkeyed(schema, &target, &op).await? {
                step.execute(&client).await?;
            }
            return Ok(());
        }
        let batch = self.batch_for(schema);
        match batch.add(op) {
            Added::Buffered { new_keys } => self.buffered += new_keys,
            Added::Truncate => {}
            Added::MoveRow { old_key, row } => {
                // Values we were not sent live only in the old row: move it in place.
                self.write_table(&schema.id).await?;
                self.begin().await?;
                let target = self.target(&schema.id)?.clone();
                let client = self.client()?;
                let mut planner = Planner::new(&client, &mut self.statements, self.cfg.encoding);
                if let Some(step) = planner.update(schema, &target, vec![(old_key, row)], true).await? {
                    step.execute(&client).await?;
                }
            }
        }
        self.maybe_write_out().await
    }

    /// Writes out what is buffered for `schema`'s table in an older shape, so rows of two
    /// shapes never share a buffer.
    async fn write_stale(&mut self, schema: &TableSchema) -> Result<(), PgError> {
        let stale = self.batches.get(&schema.id).is_some_and(|b| b.schema().version != schema.version)
            || self.logs.get(&schema.id).is_some_and(|(s, _)| s.version != schema.version);
        if stale {
            self.write_table(&schema.id).await?;
        }
        Ok(())
    }

    fn batch_for(&mut self, schema: &SchemaRef) -> &mut KeyedBatch {
        // Look up before inserting: the entry API would clone the table id on every change.
        if !self.batches.contains_key(&schema.id) {
            self.batches.insert(schema.id.clone(), KeyedBatch::new(schema.clone()));
        }
        self.batches.get_mut(&schema.id).expect("inserted above")
    }

    /// The runtime commits at `max_rows`, at the next transaction boundary. Only a source
    /// transaction (or copy chunk) bigger than that gets this far: write its rows out inside the
    /// open target transaction to keep memory bounded.
    async fn maybe_write_out(&mut self) -> Result<(), PgError> {
        if self.buffered >= self.cfg.batch.max_rows.saturating_mul(EARLY_WRITE_FACTOR) {
            self.write_all().await?;
        }
        Ok(())
    }

    async fn write_all(&mut self) -> Result<(), PgError> {
        let ids: Vec<TableId> = self.batches.keys().chain(self.logs.keys()).cloned().collect();
        for id in ids {
            self.write_table(&id).await?;
        }
        self.buffered = 0;
        Ok(())
    }

    /// Writes out one table's buffered changes inside the open target transaction.
    async fn write_table(&mut self, id: &TableId) -> Result<(), PgError> {
        self.settle().await?;
        if let Some((schema, rows)) = self.logs.remove(id) {
            self.begin().await?;
            self.buffered = self.buffered.saturating_sub(rows.len());
            let name = self.target(id)?.name.clone();
            let client = self.client()?;
            return changelog::append(&client, &mut self.statements, &name, &schema, rows).await;
        }
        let Some(batch) = self.batches.remove(id) else { return Ok(()) };
        self.begin().await?;
        self.buffered = self.buffered.saturating_sub(batch.len());
        let schema = batch.schema().clone();
        self.write_ops(&schema, batch.into_ops()).await
    }

    /// Applies one table's net operations inside the open target transaction, isolating changes
    /// the target refuses.
    async fn write_ops(&mut self, schema: &TableSchema, ops: Vec<NetOp>) -> Result<(), PgError> {
        let target = self.target(&schema.id)?.clone();
        let client = self.client()?;
        let dead = self.dead_letters();
        let position = self.txn.as_ref().map(|m| m.position.to_string());
        let encoding = self.cfg.encoding;
        Writer { client: &client, statements: &mut self.statements, dead: &dead, position, encoding }
            .write_ops(schema, &target, ops)
            .await
    }

    /// One step of copying a table (skipped for a table in quarantine).
    async fn copy(&mut self, c: &Copy) -> Result<(), PgError> {
        if self.quarantined(&c.table.id) {
            return Ok(());
        }
        match self.copy_step(c).await {
            Err(PgError::Incompatible(reason)) => {
                if self.loading_into(&c.table) {
                    self.snapshot_writers()?.finish_table().await?;
                    self.loading = None;
                }
                self.quarantine(&c.table.id, reason).await
            }
            r => r,
        }
    }

    async fn copy_step(&mut self, c: &Copy) -> Result<(), PgError> {
        let schema = &c.table;
        let replica = self.cfg.mode == SinkMode::Replica;
        match &c.step {
            CopyStep::Begin { mode: CopyMode::Snapshot, .. } if replica => self.begin_load(schema).await?,
            CopyStep::Begin { mode, .. } => {
                self.write_stale(schema).await?;
                self.ensure_target(schema, false).await?;
                if replica {
                    self.ensure_key(schema).await?;
                }
                if *mode == CopyMode::Replace {
                    // Rows held from before the copy are void: a live table copied from its
                    // first row replaces them (in the transaction the copy's rows join).
                    self.accept_change(schema, Cow::Owned(Op::Truncate)).await?;
                }
            }
            CopyStep::Rows(rows) => self.copied_rows(schema, rows).await?,
            CopyStep::Bulk(bulk)
                if self.loading_into(schema)
                    && (bulk.format() == COPY_TEXT || bulk.format() == COPY_BINARY)
                    && self.snapshot.as_ref().is_some_and(|w| w.takes(bulk.format() == COPY_BINARY)) =>
            {
                self.dirty = true;
                self.snapshot_writers()?.send(bulk.data().clone()).await?;
            }
            CopyStep::Bulk(bulk) => {
                let rows = bulk.decode(schema).map_err(|e| PgError::Protocol(e.to_string()))?;
                self.copied_rows(schema, &rows).await?;
            }
            CopyStep::Progress { .. } => {}
            CopyStep::End => {
                if self.loading_into(schema) {
                    self.end_load(schema).await?;
                }
            }
        }
        Ok(())
    }

    fn loading_into(&self, schema: &TableSchema) -> bool {
        self.loading.as_ref().is_some_and(|l| l.id == schema.id)
    }

    fn snapshot_writers(&mut self) -> Result<&mut SnapshotCopy, PgError> {
        self.snapshot.as_mut().ok_or_else(|| PgError::Protocol("copied rows outside a bulk load".into()))
    }

    async fn copied_rows(&mut self, schema: &SchemaRef, rows: &[Row]) -> Result<(), PgError> {
        self.dirty = true;
        if self.loading_into(schema) {
            let codecs = self.target(&schema.id)?.codecs(schema);
            let writers = self.snapshot_writers()?;
            for r in rows {
                writers.push_row(&codecs, r).await?;
            }
            return Ok(());
        }
        self.write_stale(schema).await?;
        self.ensure_target(schema, false).await?;
        if self.cfg.mode == SinkMode::Changelog {
            let entry = self.logs.entry(schema.id.clone()).or_insert_with(|| (schema.clone(), Vec::new()));
            entry.1.extend(rows.iter().map(|r| LogRow::copied(schema, r)));
            self.buffered += rows.len();
            return self.maybe_write_out().await;
        }
        self.ensure_key(schema).await?;
        if schema.key_indexes().is_empty() {
            // No key (REPLICA IDENTITY FULL): the copy replaced the table, so its rows are new.
            self.write_all().await?;
            self.begin().await?;
            let target = self.target(&schema.id)?.clone();
            let client = self.client()?;
            let planner = Planner::new(&client, &mut self.statements, self.cfg.encoding);
            planner.copy(schema, &target, rows)?.execute(&client).await?;
            return Ok(());
        }
        let batch = self.batch_for(schema);
        let mut new_keys = 0;
        for r in rows {
            new_keys += usize::from(batch.add_copied(r.clone()));
        }
        self.buffered += new_keys;
        self.maybe_write_out().await
    }

    /// A consistent copy of `schema` starts: the table is emptied and committed, then loaded over
    /// several connections.
    async fn begin_load(&mut self, schema: &SchemaRef) -> Result<(), PgError> {
        // A table created for the load gets its primary key once filled: one sorted index build
        // costs a fraction of maintaining the index row by row.
        self.ready = None;
        self.ensure_target(schema, true).await?;
        self.begin().await?;
        let name = self.target(&schema.id)?.name.clone();
        let client = self.client()?;
        client.batch_execute(&format!("TRUNCATE {name}")).await.ctx(format!("truncate {name}"))?;
        // The loading connections cannot write to the table until this is committed. The
        // checkpoint says the table is not copied until the load ends, so a crash in between
        // copies it again.
        client.batch_execute("COMMIT").await.ctx("commit the emptied table")?;
        self.in_tx = false;
        if self.snapshot.is_none() {
            self.snapshot =
                Some(SnapshotCopy::open(self.cfg.url.expose(), &self.label(), self.cfg.snapshot_connections).await?);
        }
        let cols = schema.columns.iter().map(|c| crate::ident::quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
        let binary = self.binary_load(schema)?;
        let sql = format!("COPY {name} ({cols}) FROM STDIN{}", if binary { " (FORMAT binary)" } else { "" });
        let codecs = self.target(&schema.id)?.codecs(schema);
        self.snapshot_writers()?.begin_table(schema.id.clone(), sql, binary.then_some(codecs)).await?;
        self.loading = Some(schema.clone());
        Ok(())
    }

    /// Whether a consistent copy of `schema` is loaded in binary COPY: the source is PostgreSQL
    /// and every target column has the source column's type, with a binary form (the source
    /// then sends its binary tuples, passed through untouched; typed rows are encoded in binary).
    fn binary_load(&self, schema: &TableSchema) -> Result<bool, PgError> {
        if self.cfg.encoding != crate::config::Encoding::Binary
            || !self.cfg.bulk_passthrough
            || schema.dialect != catalog::DIALECT
        {
            return Ok(false);
        }
        let t = self.target(&schema.id)?;
        Ok(schema
            .columns
            .iter()
            .all(|c| t.columns.get(&c.name).is_some_and(|tc| tc.cast == c.native_type && tc.codec.binary_ok())))
    }

    /// The consistent copy of `schema` ended: the loading connections commit, and the primary
    /// key is added in the transaction that will mark the table copied.
    async fn end_load(&mut self, schema: &SchemaRef) -> Result<(), PgError> {
        self.snapshot_writers()?.finish_table().await?;
        self.loading = None;
        self.ensure_key(schema).await
    }

    async fn write_one(&mut self, event: &Event) -> Result<(), PgError> {
        match event {
            Event::Begin(meta) => self.txn = Some(meta.clone()),
            Event::Change(c) => self.accept_change(&c.table, Cow::Borrowed(&c.op)).await?,
            Event::Commit { .. } => self.txn = None,
            Event::Copy(c) => self.copy(c).await?,
            Event::Tables { .. } | Event::StreamStart { .. } | Event::Heartbeat { .. } | Event::Claim { .. } => {}
        }
        Ok(())
    }

    /// Commits synchronously: what this target transaction already holds, the buffers, the
    /// checkpoint.
    async fn commit_now(&mut self, checkpoint: &Checkpoint) -> Result<(), PgError> {
        self.write_all().await?;
        self.begin().await?;
        let client = self.client()?;
        let write = self.checkpoint_write(checkpoint);
        write.check(&client).await?;
        sluice_core::crash_point("sink.before_commit");
        let committed = write.store_and_commit(&client).await;
        // Committed, or ended by the COMMIT after a refused store: either way no longer open.
        self.in_tx = false;
        committed?;
        sluice_core::crash_point("sink.after_commit");
        Ok(())
    }

    /// Hands the buffered batch to a background task that applies it in its own target
    /// transaction with the checkpoint, so the next batch is gathered meanwhile. The batch is
    /// planned and its parameters encoded while the previous one may still be committing:
    /// the target then waits only for the round trips between the two, not for Sluice's work.
    async fn commit_in_background(&mut self, checkpoint: &Checkpoint, ack: Ack) -> Result<(), PgError> {
        let client = self.client()?;
        let started = std::time::Instant::now();
        let rows = self.buffered;
        let mut steps = Vec::new();
        let mut tables = Vec::new();
        for (id, batch) in std::mem::take(&mut self.batches) {
            let schema = batch.schema().clone();
            let target = self.target(&id)?.clone();
            let planned = Planner::new(&client, &mut self.statements, self.cfg.encoding)
                .ahead_of(&mut self.inflight)
                .plan(&schema, &target, batch.into_ops())
                .await;
            let (planned, sorted) = match planned {
                Ok(p) => p,
                Err(e) => {
                    // The previous batch's outcome first: if it failed, that is what to report
                    // (a transient failure reopens the sink, this error might stop it).
                    self.settle().await?;
                    return Err(e);
                }
            };
            steps.extend(planned);
            tables.push((schema, target, sorted));
        }
        steps.iter_mut().for_each(Step::encode_ahead);
        self.buffered = 0;
        let planned = started.elapsed();
        // Whether the target was still applying the previous batch when this one was ready
        // (the target then bounds the stream) or had to wait for it: a debug line per batch.
        let target_busy = self.inflight.busy();
        self.settle().await?;
        debug!(
            rows,
            planned_us = planned.as_micros() as u64,
            waited_us = (started.elapsed() - planned).as_micros() as u64,
            target_busy,
            "batch ready"
        );
        let job = Job {
            client,
            steps,
            checkpoint: self.checkpoint_write(checkpoint),
            tables,
            dead: self.dead_letters(),
            encoding: self.cfg.encoding,
        };
        self.inflight = Inflight(Some(tokio::spawn(job.run(ack))));
        Ok(())
    }
}

/// One batch and its checkpoint, applied in a target transaction of its own.
struct Job {
    client: Arc<Client>,
    steps: Vec<Step>,
    checkpoint: CheckpointWrite,
    tables: Vec<(SchemaRef, Target, Sorted)>,
    dead: DeadLetters,
    encoding: crate::config::Encoding,
}

impl Job {
    /// Applies the batch, commits, and acknowledges; reports failures through the ack too.
    async fn run(self, ack: Ack) -> JobDone {
        match self.apply().await {
            Ok(()) => {
                ack.durable();
                JobDone::Committed
            }
            Err(e) => {
                let msg = e.describe();
                ack.fail(ConnectorError::from(e));
                JobDone::Failed(msg)
            }
        }
    }

    async fn apply(self) -> Result<(), PgError> {
        let client = &self.client;
        // The checkpoint row is locked and checked first, sent with BEGIN: one round trip.
        let (begun, checked) = tokio::join!(biased; client.batch_execute("BEGIN"), self.checkpoint.check(client));
        begun.ctx("begin target transaction")?;
        checked?;
        let mut refused = None;
        for step in &self.steps {
            if let Err(e) = step.execute(client).await {
                if e.class() != ErrorClass::Definite {
                    return Err(e);
                }
                refused = Some(e);
                break;
            }
        }
        // The statements' encoded parameters are not needed any more (a replay encodes anew).
        drop(self.steps);
        if let Some(e) = refused {
            // The target refused a change: apply the batch again change by change, parking
            // what it refuses in the dead-letter table.
            warn!(error = %ConnectorError::from(e), "batch refused by the target; applying it change by change");
            client.batch_execute("ROLLBACK; BEGIN").await.ctx("roll back refused batch")?;
            self.checkpoint.check(client).await?;
            let mut statements = HashMap::new();
            for (schema, target, sorted) in self.tables {
                let mut w = Writer {
                    client,
                    statements: &mut statements,
                    dead: &self.dead,
                    position: None,
                    encoding: self.encoding,
                };
                client.batch_execute("SAVEPOINT sluice_write").await.ctx("savepoint")?;
                w.refused(&schema, &target, &sorted).await?;
                client.batch_execute("RELEASE SAVEPOINT sluice_write").await.ctx("release savepoint")?;
            }
        }
        sluice_core::crash_point("sink.before_commit");
        self.checkpoint.store_and_commit(client).await?;
        sluice_core::crash_point("sink.after_commit");
        Ok(())
    }
}

#[async_trait]
impl Sink for PgSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn batch_policy(&self) -> BatchPolicy {
        BatchPolicy {
            max_rows: self.cfg.batch.max_rows,
            max_delay: Duration::from_millis(self.cfg.batch.max_delay_ms),
            commit_when_idle: true,
        }
    }

    fn accepted_formats(&self) -> Vec<BulkFormat> {
        match (self.cfg.mode, self.cfg.bulk_passthrough, self.cfg.encoding) {
            (SinkMode::Replica, true, crate::config::Encoding::Binary) => vec![COPY_BINARY, COPY_TEXT],
            (SinkMode::Replica, true, _) => vec![COPY_TEXT],
            _ => Vec::new(),
        }
    }

    async fn open(&mut self, ctx: SinkContext) -> Result<Option<Checkpoint>, ConnectorError> {
        self.stats = ctx.stats;
        let client = catalog::connect(self.cfg.url.expose(), &self.label()).await?;
        // Every join this session runs matches a batch of keys against a primary key. With a
        // large batch the planner would otherwise hash the whole target table (measured: a
        // 20,000-key DELETE turned into a sequential scan of a million rows).
        client
            .batch_execute("SET enable_hashjoin = off; SET enable_mergejoin = off")
            .await
            .ctx("configure sink session")
            .map_err(ConnectorError::from)?;
        // A shared sink's processes write side by side; each commit is fenced per partition.
        self.shared = ctx.shared;
        if !self.shared {
            self.store.fence(&client, FENCE_WAIT).await?;
        }
        self.store.prepare(&client).await?;
        let cp = self.store.read(&client).await?;
        self.quarantine = self.store.quarantined(&client).await?.into_iter().map(|q| (q.table, q.reason)).collect();
        for (table, reason) in &self.quarantine {
            warn!(sink = %self.name, table = %table, reason = %reason, "table is in quarantine; its changes are skipped");
        }
        self.client = Some(Arc::new(client));
        self.stored = cp.clone();
        self.known = cp.as_ref().and_then(|c| c.position.clone());
        info!(sink = %self.name, position = ?cp.as_ref().and_then(|c| c.position.as_ref()), "sink opened");
        Ok(cp)
    }

    async fn write(&mut self, event: &Event) -> Result<(), ConnectorError> {
        Ok(self.write_one(event).await?)
    }

    async fn write_batch(&mut self, events: Vec<Arc<Event>>) -> Result<(), ConnectorError> {
        for ev in events {
            // An event no other sink shares gives up its rows instead of being copied.
            match Arc::try_unwrap(ev) {
                Ok(Event::Change(c)) => self.accept_change(&c.table, Cow::Owned(c.op)).await?,
                Ok(other) => self.write_one(&other).await?,
                Err(shared) => self.write_one(&shared).await?,
            }
        }
        Ok(())
    }

    async fn commit(&mut self, checkpoint: Checkpoint, ack: Ack) -> Result<(), ConnectorError> {
        // Batches that share their target transaction with work already done in it (a huge
        // source transaction written out early, DDL, a truncate, the end of a bulk load) or
        // that append change logs commit here; the common case commits in the background.
        let background = !self.in_tx && self.cfg.mode != SinkMode::Changelog && self.logs.is_empty();
        if !(background && self.dirty) {
            // (A dirty background batch is planned first and waits for its predecessor after.)
            self.settle().await?;
        }
        let only_position = !self.dirty
            && !self.in_tx
            && self.stored_at.elapsed() < POSITION_STORE_EVERY
            && self.stored.as_ref().is_some_and(|s| s.same_but_position(&checkpoint));
        if only_position {
            // Only heartbeats since the last commit: nothing the target must hold changed. A
            // restart from the older stored position skips nothing that concerns this sink. The
            // position is still stored now and then: a source without server-side progress (a
            // binlog) resumes from it, and must not need logs older than that.
            ack.durable();
            return Ok(());
        }
        if !background {
            self.commit_now(&checkpoint).await?;
            ack.durable();
        } else {
            self.commit_in_background(&checkpoint, ack).await?;
        }
        self.known = checkpoint.position.clone();
        self.stored = Some(checkpoint);
        self.stored_at = std::time::Instant::now();
        self.dirty = false;
        Ok(())
    }

    async fn adopt(&mut self, scope: &Position) -> Result<Option<Position>, ConnectorError> {
        if !self.shared {
            return Ok(None);
        }
        self.settle().await?;
        let client = self.client()?;
        let Some(stored) = self.store.read(&client).await?.and_then(|c| c.position) else { return Ok(None) };
        Position::advance_into(&mut self.known, &stored.within(scope));
        Ok(Some(stored))
    }

    async fn close(&mut self) -> Result<(), ConnectorError> {
        let settled = self.settle().await;
        self.snapshot = None;
        self.loading = None;
        if let Some(c) = self.client.take() {
            if self.in_tx {
                let _ = c.batch_execute("ROLLBACK").await;
            }
            // Let the next incarnation in at once (ending the session would too, a moment later).
            let _ = c.batch_execute("SELECT pg_advisory_unlock_all()").await;
        }
        self.in_tx = false;
        Ok(settled?)
    }
}
