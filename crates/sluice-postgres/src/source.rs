//! PostgreSQL source: logical replication with the pgoutput plugin.
//!
//! ```text
//!  catalog client ── publication, slot state, table/key/type lookups
//!  replication conn ── CREATE_REPLICATION_SLOT .. EXPORT_SNAPSHOT ──▶ snapshot name
//!  snapshot client ── BEGIN REPEATABLE READ; SET TRANSACTION SNAPSHOT; COPY .. TO STDOUT
//!                      ──▶ SnapshotBegin, Change(Read)*, SnapshotEnd(consistent point)
//!  replication conn ── START_REPLICATION SLOT .. LOGICAL <resume> ──▶ XLogData / keepalive
//!                      ──▶ Begin, Change*, Commit(end lsn), Heartbeat(wal end)
//!                      ◀── Standby status update (confirmed position from the runtime)
//! ```
//!
//! Progress: the runtime confirms a position only once every sink holds it durably; the
//! source reports it to the server as the slot's flush position, which lets the server
//! recycle WAL. Keepalives that arrive outside a transaction become heartbeats, so an idle
//! publication still advances the slot.
//!
//! Consistency: the snapshot is the one exported when the slot was created, so the copy
//! holds exactly the transactions committed before the slot's consistent point and the stream
//! holds exactly those after it. A snapshot interrupted by a crash is redone from a new slot.
//!
//! Errors: connection losses are transient (the runtime reconnects and resumes from the
//! durable checkpoint); a missing slot with a checkpoint, missing tables or privileges are
//! fatal with a fix in the message.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Buf, Bytes};
use futures_util::StreamExt;
use sluice_config::{PgSourceConfig, SnapshotMode};
use sluice_core::copytext::BlockBuilder;
use sluice_core::{
    Change, Checkpoint, ConnectorError, Event, Lsn, Op, Position, RowBlock, Source, SourceContext, TableId,
    TableSchema, TxnMeta, Value,
};
use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;
use tracing::{debug, info, warn};

use crate::catalog::{self, SourceTable, TypeCache};
use crate::error::{Ctx, PgError};
use crate::ident::{qualified, quote_ident, quote_literal};
use crate::pgoutput::{self, to_row, OldTuple, PgOutput, Relation, TupleValue};
use crate::replication::{ReplicationConn, PG_EPOCH_OFFSET_MICROS};

/// How long to wait for a slot to become free before giving up on this attempt.
const SLOT_WAIT_LIMIT: Duration = Duration::from_secs(60);
/// Size of the blocks of rows the snapshot emits.
const SNAPSHOT_BLOCK_BYTES: usize = 64 * 1024;
/// Bytes of snapshot rows that may be in the pipeline at once (queued or being written).
const SNAPSHOT_BUDGET_BYTES: usize = 16 * 1024 * 1024;
/// How often snapshot progress is logged when stderr is not a terminal.
const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(5);

/// The PostgreSQL source.
pub struct PgSource {
    cfg: PgSourceConfig,
    slot: String,
    publication: String,
}

impl PgSource {
    /// A source for the given config, slot and publication names.
    pub fn new(cfg: PgSourceConfig, slot: String, publication: String) -> Self {
        PgSource { cfg, slot, publication }
    }
}

#[async_trait]
impl Source for PgSource {
    async fn run(&mut self, resume: Checkpoint, ctx: SourceContext) -> Result<(), ConnectorError> {
        Ok(self.run_inner(resume, ctx).await?)
    }
}

struct SlotInfo {
    active_pid: Option<i32>,
    plugin: Option<String>,
}

impl PgSource {
    async fn run_inner(&mut self, resume: Checkpoint, ctx: SourceContext) -> Result<(), PgError> {
        let SourceContext { events, confirmed, stop } = ctx;
        let url = self.cfg.url.expose().clone();
        let catalog = catalog::connect(&url, "source").await?;
        let tables = catalog::selected_tables(&catalog, &self.cfg).await?;
        if tables.is_empty() {
            return Err(PgError::Setup(format!(
                "source.tables: no table matches {:?} (minus exclude {:?}); check the globs with `sluice check`",
                self.cfg.tables, self.cfg.exclude
            )));
        }
        for t in &tables {
            if catalog::key_columns(&catalog, t.oid).await?.is_empty() {
                return Err(PgError::Setup(format!(
                    "table {} has no primary key or replica identity index; add a primary key, or \
                     ALTER TABLE {} REPLICA IDENTITY USING INDEX <unique index>, or exclude it in source.exclude",
                    t.id,
                    qualified(&t.id)
                )));
            }
        }
        self.ensure_publication(&catalog, &tables).await?;

        let pg_cfg: tokio_postgres::Config =
            url.parse().map_err(|e| PgError::Setup(format!("source.url: invalid connection URL: {e}")))?;
        let mut repl = ReplicationConn::connect(&pg_cfg).await?;
        let slot = self.slot_info(&catalog).await?;
        let mut types = TypeCache::default();

        let start_lsn = if self.cfg.snapshot == SnapshotMode::Initial && !resume.snapshot_done {
            if slot.is_some() {
                info!(slot = %self.slot, "earlier snapshot did not finish; dropping the slot and starting over");
                self.wait_slot_free(&catalog).await?;
                repl.simple_query(&format!("DROP_REPLICATION_SLOT {} WAIT", quote_ident(&self.slot))).await?;
            }
            let (consistent, snapshot_name) = self.create_slot(&mut repl, true).await?;
            if !self.snapshot(&url, &mut types, &tables, &snapshot_name, &events, &stop).await? {
                info!("stopped during the snapshot; it starts over next time");
                drop(events);
                drain_confirmations(confirmed).await;
                return Ok(());
            }
            send(&events, Event::SnapshotEnd { position: Position::Pg(consistent) }).await?;
            consistent
        } else {
            match (slot, resume.position) {
                (Some(s), _) => {
                    if s.plugin.as_deref() != Some("pgoutput") {
                        return Err(PgError::Setup(format!(
                            "replication slot {} uses plugin {:?}, not pgoutput; drop it or set source.slot to another name",
                            self.slot, s.plugin
                        )));
                    }
                    if s.active_pid.is_some() {
                        self.wait_slot_free(&catalog).await?;
                    }
                    match resume.position {
                        Some(Position::Pg(l)) => l,
                        None => Lsn(0),
                    }
                }
                (None, None) => {
                    let (consistent, _) = self.create_slot(&mut repl, false).await?;
                    send(&events, Event::SnapshotEnd { position: Position::Pg(consistent) }).await?;
                    consistent
                }
                (None, Some(p)) => {
                    return Err(PgError::Setup(format!(
                        "replication slot {} is missing on the source, but the sinks hold position {p}: changes since \
                         then are lost. To copy everything again, delete this pipeline's row from the sinks' \
                         checkpoint tables and run again (snapshot = \"initial\")",
                        self.slot
                    )))
                }
            }
        };

        let mut stream = Streamer {
            cfg: &self.cfg,
            catalog: &catalog,
            types,
            relations: HashMap::new(),
            txn: None,
            last_position: start_lsn,
            confirmed: start_lsn,
            versions: HashMap::new(),
            events: Some(events),
            confirmed_rx: confirmed,
            stop,
        };
        // Everything before the start point is durable in every sink.
        stream.take_confirmed();
        repl.start_replication(&format!(
            "START_REPLICATION SLOT {} LOGICAL {} (proto_version '1', publication_names {})",
            quote_ident(&self.slot),
            start_lsn,
            quote_literal(&quote_ident(&self.publication))
        ))
        .await?;
        info!(slot = %self.slot, from = %start_lsn, "streaming changes");
        stream.run(&mut repl).await?;
        repl.terminate().await;
        Ok(())
    }

    async fn ensure_publication(&self, catalog: &Client, tables: &[SourceTable]) -> Result<(), PgError> {
        let list = tables.iter().map(|t| qualified(&t.id)).collect::<Vec<_>>().join(", ");
        let exists = catalog
            .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&self.publication])
            .await
            .ctx("look up publication")?
            .is_some();
        let verb = if exists { "ALTER" } else { "CREATE" };
        let sql = if exists {
            format!("ALTER PUBLICATION {} SET TABLE {list}", quote_ident(&self.publication))
        } else {
            format!("CREATE PUBLICATION {} FOR TABLE {list}", quote_ident(&self.publication))
        };
        catalog.batch_execute(&sql).await.ctx(format!("{verb} PUBLICATION {}", self.publication))?;
        debug!(publication = %self.publication, tables = tables.len(), "publication ready");
        Ok(())
    }

    async fn slot_info(&self, catalog: &Client) -> Result<Option<SlotInfo>, PgError> {
        Ok(catalog
            .query_opt(
                "SELECT active_pid, plugin::text FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
                &[&self.slot],
            )
            .await
            .ctx("look up replication slot")?
            .map(|r| SlotInfo { active_pid: r.get(0), plugin: r.get(1) }))
    }

    /// Waits until no connection holds the slot. A connection of a crashed earlier run may
    /// hold it until the server notices; after `slot_takeover_secs` it is terminated.
    async fn wait_slot_free(&self, catalog: &Client) -> Result<(), PgError> {
        let started = Instant::now();
        let takeover = Duration::from_secs(self.cfg.slot_takeover_secs);
        let mut terminated = false;
        loop {
            let pid = match self.slot_info(catalog).await? {
                Some(SlotInfo { active_pid: Some(pid), .. }) => pid,
                _ => return Ok(()),
            };
            if started.elapsed() >= takeover && !terminated {
                warn!(slot = %self.slot, pid, "slot still held by another connection; terminating it");
                catalog.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.ctx("terminate slot holder")?;
                terminated = true;
            }
            if started.elapsed() > SLOT_WAIT_LIMIT {
                return Err(PgError::Setup(format!(
                    "replication slot {} stays in use by process {pid}; is another sluice running this pipeline?",
                    self.slot
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn snapshot(
        &self,
        url: &str,
        types: &mut TypeCache,
        tables: &[SourceTable],
        snapshot_name: &str,
        events: &mpsc::Sender<Event>,
        stop: &watch::Receiver<bool>,
    ) -> Result<bool, PgError> {
        let client = catalog::connect(url, "source (snapshot)").await?;
        client
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
                quote_literal(snapshot_name)
            ))
            .await
            .ctx("import the slot's snapshot")?;
        let mut schemas = Vec::with_capacity(tables.len());
        for t in tables {
            let cols = catalog::table_columns(&client, t.oid).await?;
            let key = catalog::key_columns(&client, t.oid).await?;
            schemas.push(types.schema(&client, t.id.clone(), &cols, &key, 0, &[]).await?);
        }
        send(events, Event::SnapshotBegin { tables: schemas.clone() }).await?;
        let progress = Progress::new(tables);
        let budget = Arc::new(tokio::sync::Semaphore::new(SNAPSHOT_BUDGET_BYTES));
        for (i, (t, schema)) in tables.iter().zip(&schemas).enumerate() {
            let started = Instant::now();
            let cols = schema.columns.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
            let copy = client
                .copy_out(&format!("COPY (SELECT {cols} FROM ONLY {}) TO STDOUT", qualified(&t.id)))
                .await
                .ctx(format!("snapshot of {}", t.id))?;
            let mut copy = std::pin::pin!(copy);
            // Rows travel on as the server wrote them, in blocks of whole lines; the memory
            // they hold in the pipeline's queues is bounded by `budget`.
            let mut blocks = BlockBuilder::new(SNAPSHOT_BLOCK_BYTES);
            let mut rows: u64 = 0;
            loop {
                let chunk = copy.next().await.transpose().ctx(format!("snapshot of {}", t.id))?;
                let block = match &chunk {
                    Some(c) => blocks.push(c),
                    None => blocks.finish().map_err(|e| PgError::Protocol(format!("snapshot of {}: {e}", t.id)))?,
                };
                if let Some(block) = block {
                    let permits = block.len().clamp(1, SNAPSHOT_BUDGET_BYTES) as u32;
                    let share = budget
                        .clone()
                        .acquire_many_owned(permits)
                        .await
                        .map_err(|_| PgError::Protocol("snapshot memory budget closed".into()))?;
                    let block = RowBlock::new(block)
                        .map_err(|e| PgError::Protocol(format!("snapshot of {}: {e}", t.id)))?
                        .with_budget(Arc::new(share));
                    rows += block.len() as u64;
                    send(events, Event::Change(Change { table: schema.clone(), op: Op::ReadRows { rows: block } }))
                        .await?;
                    progress.update(i, rows);
                    if *stop.borrow() {
                        return Ok(false);
                    }
                }
                if chunk.is_none() {
                    break;
                }
            }
            progress.finish(i, rows);
            info!(table = %t.id, rows, secs = started.elapsed().as_secs_f64(), "snapshot of table finished");
        }
        client.batch_execute("COMMIT").await.ctx("finish snapshot")?;
        Ok(true)
    }
}

impl PgSource {
    /// Creates the slot; with `export`, also returns the name of the snapshot it exported,
    /// which stays importable until this connection runs its next command.
    async fn create_slot(&self, repl: &mut ReplicationConn, export: bool) -> Result<(Lsn, String), PgError> {
        let mode = if export { "EXPORT_SNAPSHOT" } else { "NOEXPORT_SNAPSHOT" };
        let rows = repl
            .simple_query(&format!("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {mode}", quote_ident(&self.slot)))
            .await?;
        let created = slot_created(&rows)?;
        info!(slot = %self.slot, lsn = %created.0, export, "created replication slot");
        Ok(created)
    }
}

fn slot_created(rows: &[Vec<Option<String>>]) -> Result<(Lsn, String), PgError> {
    let row = rows.first().ok_or_else(|| PgError::Protocol("CREATE_REPLICATION_SLOT returned no row".into()))?;
    let lsn = row
        .get(1)
        .and_then(|v| v.as_deref())
        .and_then(|s| s.parse::<Lsn>().ok())
        .ok_or_else(|| PgError::Protocol("CREATE_REPLICATION_SLOT returned no consistent point".into()))?;
    let snapshot = row.get(2).cloned().flatten().unwrap_or_default();
    Ok((lsn, snapshot))
}

/// Waits until the runtime closes the confirmation channel.
async fn drain_confirmations(mut confirmed: watch::Receiver<Option<Position>>) {
    while confirmed.changed().await.is_ok() {}
}

async fn send(events: &mpsc::Sender<Event>, ev: Event) -> Result<(), PgError> {
    events.send(ev).await.map_err(|_| PgError::Protocol("pipeline stopped while the source was sending".into()))
}

/// Per-table snapshot progress: bars on a terminal, periodic log lines otherwise.
struct Progress {
    bars: Option<(indicatif::MultiProgress, Vec<indicatif::ProgressBar>)>,
    names: Vec<String>,
    last_log: std::sync::Mutex<Instant>,
}

impl Progress {
    fn new(tables: &[SourceTable]) -> Self {
        let names = tables.iter().map(|t| t.id.to_string()).collect();
        if !std::io::stderr().is_terminal() {
            return Progress { bars: None, names, last_log: std::sync::Mutex::new(Instant::now()) };
        }
        let multi = indicatif::MultiProgress::new();
        let known = indicatif::ProgressStyle::with_template(
            "{prefix:>24} [{bar:30}] {human_pos}/{human_len} rows  {per_sec:0}  ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        // Never analyzed: no row estimate, so no bar or ETA, only the count and rate.
        let unknown = indicatif::ProgressStyle::with_template("{prefix:>24} {spinner} {human_pos} rows  {per_sec:0}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
        let bars = tables
            .iter()
            .map(|t| {
                let b = if t.estimated_rows > 0 {
                    let b = multi.add(indicatif::ProgressBar::new(t.estimated_rows as u64));
                    b.set_style(known.clone());
                    b
                } else {
                    let b = multi.add(indicatif::ProgressBar::new_spinner());
                    b.set_style(unknown.clone());
                    b
                };
                b.set_prefix(t.id.to_string());
                b
            })
            .collect();
        Progress { bars: Some((multi, bars)), names, last_log: std::sync::Mutex::new(Instant::now()) }
    }

    fn update(&self, i: usize, rows: u64) {
        match &self.bars {
            Some((_, bars)) => {
                if bars[i].length().is_some_and(|l| l > 0 && rows > l) {
                    bars[i].set_length(rows);
                }
                bars[i].set_position(rows);
            }
            None => {
                if let Ok(mut last) = self.last_log.lock() {
                    if last.elapsed() >= PROGRESS_LOG_EVERY {
                        *last = Instant::now();
                        info!(table = %self.names[i], rows, "snapshot in progress");
                    }
                }
            }
        }
    }

    fn finish(&self, i: usize, rows: u64) {
        if let Some((_, bars)) = &self.bars {
            if bars[i].length().is_some() {
                bars[i].set_length(rows);
            }
            bars[i].set_position(rows);
            bars[i].finish();
        }
    }
}

struct Streamer<'a> {
    cfg: &'a PgSourceConfig,
    catalog: &'a Client,
    types: TypeCache,
    relations: HashMap<u32, (Relation, Arc<TableSchema>)>,
    versions: HashMap<TableId, u64>,
    txn: Option<TxnMeta>,
    /// End of the last transaction or heartbeat emitted.
    last_position: Lsn,
    /// Durable in every sink; reported to the server.
    confirmed: Lsn,
    /// `None` once stopping: closing it tells the runtime the stream has ended.
    events: Option<mpsc::Sender<Event>>,
    confirmed_rx: watch::Receiver<Option<Position>>,
    stop: watch::Receiver<bool>,
}

/// The pipeline is stopping: the current event was not delivered.
struct Stopping;

impl Streamer<'_> {
    async fn run(&mut self, repl: &mut ReplicationConn) -> Result<(), PgError> {
        let interval = Duration::from_millis(self.cfg.status_interval_ms);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Phase 1: stream until asked to stop.
        while !*self.stop.borrow() {
            tokio::select! {
                biased;
                _ = self.stop.changed() => {}
                _ = ticker.tick() => {
                    self.take_confirmed();
                    repl.send_status(self.confirmed.0, false).await?;
                }
                msg = repl.recv() => {
                    let msg = msg?;
                    if self.handle(repl, msg.tag, msg.body, interval).await?.is_err() {
                        break;
                    }
                }
            }
        }
        // Phase 2: end the event stream, keep confirming until the runtime is done.
        self.events = None;
        loop {
            tokio::select! {
                changed = self.confirmed_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.take_confirmed();
                }
                _ = ticker.tick() => repl.send_status(self.confirmed.0, false).await?,
            }
        }
        self.take_confirmed();
        repl.send_status(self.confirmed.0, false).await?;
        info!(confirmed = %self.confirmed, "source stopped");
        Ok(())
    }

    fn take_confirmed(&mut self) {
        if let Some(Position::Pg(l)) = *self.confirmed_rx.borrow() {
            self.confirmed = self.confirmed.max(l);
        }
    }

    /// Sends an event while keeping the server connection alive if the pipeline is slow.
    async fn emit(
        &mut self,
        repl: &mut ReplicationConn,
        interval: Duration,
        ev: Event,
    ) -> Result<Result<(), Stopping>, PgError> {
        let Some(events) = self.events.as_ref() else { return Ok(Err(Stopping)) };
        // Fast path: room in the queue, no timer needed.
        let ev = match events.try_send(ev) {
            Ok(()) => return Ok(Ok(())),
            Err(mpsc::error::TrySendError::Full(ev)) => ev,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(PgError::Protocol("pipeline stopped while the source was sending".into()))
            }
        };
        let events = events.clone();
        loop {
            tokio::select! {
                permit = events.reserve() => {
                    permit.map_err(|_| PgError::Protocol("pipeline stopped while the source was sending".into()))?.send(ev);
                    return Ok(Ok(()));
                }
                _ = self.stop.changed() => {
                    if *self.stop.borrow() {
                        return Ok(Err(Stopping));
                    }
                }
                _ = tokio::time::sleep(interval) => {
                    self.take_confirmed();
                    repl.send_status(self.confirmed.0, false).await?;
                }
            }
        }
    }

    async fn handle(
        &mut self,
        repl: &mut ReplicationConn,
        tag: u8,
        body: Bytes,
        interval: Duration,
    ) -> Result<Result<(), Stopping>, PgError> {
        match tag {
            b'd' => {}
            b'c' => return Err(PgError::Protocol("server ended the replication stream".into())),
            b'E' => return Err(crate::replication::server_error("replication stream", &body)),
            _ => return Ok(Ok(())),
        }
        let mut b = body;
        if b.is_empty() {
            return Ok(Ok(()));
        }
        match b.get_u8() {
            b'w' => {
                if b.remaining() < 24 {
                    return Err(PgError::Protocol("short XLogData".into()));
                }
                b.advance(24);
                let msg = pgoutput::decode(b)?;
                self.apply(repl, msg, interval).await
            }
            b'k' => {
                if b.remaining() < 17 {
                    return Err(PgError::Protocol("short keepalive".into()));
                }
                let wal_end = Lsn(b.get_u64());
                let _clock = b.get_i64();
                let reply = b.get_u8() == 1;
                if reply {
                    self.take_confirmed();
                    repl.send_status(self.confirmed.0, false).await?;
                }
                if self.txn.is_none() && wal_end > self.last_position {
                    self.last_position = wal_end;
                    return self.emit(repl, interval, Event::Heartbeat { position: Position::Pg(wal_end) }).await;
                }
                Ok(Ok(()))
            }
            _ => Ok(Ok(())),
        }
    }

    async fn apply(
        &mut self,
        repl: &mut ReplicationConn,
        msg: PgOutput,
        interval: Duration,
    ) -> Result<Result<(), Stopping>, PgError> {
        let ev = match msg {
            PgOutput::Begin { final_lsn, commit_ts, xid } => {
                let meta = TxnMeta {
                    xid: xid as u64,
                    commit_ts_micros: commit_ts + PG_EPOCH_OFFSET_MICROS,
                    commit_position: Position::Pg(Lsn(final_lsn)),
                };
                self.txn = Some(meta.clone());
                Event::Begin(meta)
            }
            PgOutput::Commit { end_lsn, .. } => {
                let meta = self.txn.take().ok_or_else(|| PgError::Protocol("Commit without Begin".into()))?;
                self.last_position = self.last_position.max(Lsn(end_lsn));
                Event::Commit { meta, position: Position::Pg(Lsn(end_lsn)) }
            }
            PgOutput::Relation(rel) => {
                self.relation(rel).await?;
                return Ok(Ok(()));
            }
            PgOutput::Insert { rel, new } => {
                let table = self.table(rel)?;
                Event::Change(Change { op: Op::Insert { after: to_row(&new) }, table })
            }
            PgOutput::Update { rel, old, new } => {
                let table = self.table(rel)?;
                let mut after = to_row(&new);
                let before = old.map(|o| {
                    if let OldTuple::Full(vals) = &o {
                        // Identity FULL sends the whole old row: fill unchanged TOAST values from it.
                        for (a, b) in after.iter_mut().zip(vals) {
                            if *a == Value::Unchanged {
                                if let TupleValue::Text(t) = b {
                                    *a = Value::Text(sluice_core::Text::from_utf8_bytes(t.clone()));
                                }
                            }
                        }
                    }
                    to_row(o.values())
                });
                Event::Change(Change { op: Op::Update { before, after }, table })
            }
            PgOutput::Delete { rel, old } => {
                let table = self.table(rel)?;
                Event::Change(Change { op: Op::Delete { before: to_row(old.values()) }, table })
            }
            PgOutput::Truncate { rels } => {
                for rel in rels {
                    if let Ok(table) = self.table(rel) {
                        if self.emit(repl, interval, Event::Change(Change { table, op: Op::Truncate })).await?.is_err()
                        {
                            return Ok(Err(Stopping));
                        }
                    }
                }
                return Ok(Ok(()));
            }
            PgOutput::Type { .. } | PgOutput::Other(_) => return Ok(Ok(())),
        };
        self.emit(repl, interval, ev).await
    }

    fn table(&self, rel: u32) -> Result<Arc<TableSchema>, PgError> {
        self.relations
            .get(&rel)
            .map(|(_, s)| s.clone())
            .ok_or_else(|| PgError::Protocol(format!("change for relation {rel} before its Relation message")))
    }

    async fn relation(&mut self, rel: Relation) -> Result<(), PgError> {
        if self.relations.get(&rel.id).is_some_and(|(r, _)| *r == rel) {
            return Ok(());
        }
        let id = TableId::new(rel.namespace.clone(), rel.name.clone());
        let mut key = catalog::key_columns(self.catalog, rel.id).await?;
        if key.is_empty() {
            key = rel.columns.iter().filter(|c| c.key).map(|c| c.name.clone()).collect();
        }
        let cols: Vec<(String, u32, i32)> =
            rel.columns.iter().map(|c| (c.name.clone(), c.type_oid, c.typmod)).collect();
        let version = self.versions.entry(id.clone()).or_insert(0);
        *version += 1;
        let missing = catalog::missing_values(self.catalog, rel.id).await?;
        let schema = self.types.schema(self.catalog, id, &cols, &key, *version, &missing).await?;
        debug!(table = %schema.id, columns = schema.columns.len(), "relation");
        self.relations.insert(rel.id, (rel, schema));
        Ok(())
    }
}
