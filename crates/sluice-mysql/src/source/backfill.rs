//! Copying live tables while the binlog streams: a table renamed into the selection, a sink
//! added to a running pipeline, a snapshot cut short by a crash. Chunks are read in primary-key
//! order, each in a consistent snapshot whose binlog position is known, and sent at the point
//! of the stream where they belong (the watermark idea of Netflix's DBLog, without writes to the
//! source; Debezium's read-only incremental snapshot for MySQL works the same way).
//!
//! ```text
//!  copy conn:  START TRANSACTION WITH CONSISTENT SNAPSHOT ─▶ position P of the snapshot
//!              SELECT chunk (key > last ORDER BY key LIMIT n); COMMIT
//!  stream:     … changes to the table, keys noted while the chunk is open … P … S (a boundary)
//!              ─▶ at S ≥ P: the chunk minus the keys changed at or after P, then Progress
//! ```
//!
//! The position P: MariaDB reports the exact binlog coordinate of a consistent snapshot
//! (`binlog_snapshot_file`/`binlog_snapshot_position`), so the snapshot holds exactly the
//! transactions before P. MySQL has no such coordinate; P is `SHOW MASTER STATUS` read just
//! before the snapshot starts, so every transaction at or after P counts as possibly unseen and
//! the stream's version of those rows wins. (A transaction already in MySQL's binlog before P
//! but not yet visible to the snapshot, as happens while a semi-synchronous commit waits for
//! its replica, is not covered on MySQL.)
//!
//! Why that is exact: the chunk holds each row as of P. A key the stream changed at or after P
//! is dropped from the chunk; the sink already has (or is about to get, in stream order) the
//! whole row image from the binlog, which is newer. Every other key of the chunk did not change
//! between P and S, so the chunk's row is the row at S, and later changes follow it in order.
//!
//! A copy's `Begin` goes out when its first chunk starts, before any change streamed after that
//! point, so a `Replace` copy empties only rows from before. DDL on the table while a chunk is
//! open voids it (read again in the new shape); a TRUNCATE restarts the copy from the first row.

use std::cmp::Ordering;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use sluice_core::{Copy, CopyMode, CopyStep, Event, Key, Op, Row, SchemaRef, SinkSet, TableId, TableSchema, Value};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::snapshot::{master_status, row_from_protocol, start_mariadb, start_txn};
use crate::catalog::{self, qualified, quote, InfoColumn};
use crate::error::{Ctx, MyError};
use crate::rows::ZeroDates;

/// How often a chunk that failed is tried again before the source gives up.
const CHUNK_ATTEMPTS: u32 = 5;
/// How long to wait before reading a chunk again that could not be used.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How often in a row a chunk is read again because the stream changed the table in a way the
/// copy cannot merge (a table without a key, partial row images) before the source gives up.
const REREAD_LIMIT: u32 = 300;

/// One table to copy into some sinks.
#[derive(Debug, Clone)]
pub(crate) struct CopyJob {
    pub table: TableId,
    pub to: SinkSet,
    /// Last key copied (`None`: from the first row)
    pub after: Option<Key>,
    estimated_rows: Option<u64>,
    started: bool,
    /// The table has no key: each attempt copies it whole and starts by emptying the sinks' copy
    keyless: bool,
    /// `after` as the server sent it, when read in this run
    after_raw: Option<Vec<mysql_async::Value>>,
    /// Names of the key columns the copy pages by, in column order
    key: Option<Vec<String>>,
    /// Resumed from a checkpoint: DDL the stream replays up to where the binlog stood at start
    /// may have changed the key the checkpoint's `after` belongs to.
    resumed: bool,
    failures: u32,
    /// Chunks read again in a row because the stream changed the table while they were open
    rereads: u32,
    rows: u64,
}

impl CopyJob {
    pub fn new(table: TableId, to: SinkSet, after: Option<Key>, estimated_rows: Option<u64>) -> CopyJob {
        CopyJob {
            table,
            to,
            resumed: after.is_some(),
            after,
            estimated_rows,
            started: false,
            keyless: false,
            after_raw: None,
            key: None,
            failures: 0,
            rereads: 0,
            rows: 0,
        }
    }

    /// Starts the copy again from the first row, with a new `Replace` begin.
    fn restart(&mut self, why: &str) {
        info!(table = %self.table, sinks = ?self.to, why, "copy of live table starts again from the first row");
        self.after = None;
        self.after_raw = None;
        self.started = false;
        self.key = None;
        self.resumed = false;
        self.rows = 0;
    }

    /// Counts a chunk read again; an error once that happened too often in a row.
    fn reread(&mut self, why: &str) -> Result<(), MyError> {
        self.rereads += 1;
        if self.rereads >= REREAD_LIMIT {
            return Err(MyError::Setup(format!(
                "the copy of {} was read {REREAD_LIMIT} times in a row and each time the stream changed the table \
                 in a way the copy cannot merge ({why}); pause writes to the table for a moment, give it a primary \
                 key, or make sure binlog_row_image=FULL in every session",
                self.table
            )));
        }
        Ok(())
    }
}

/// A binlog coordinate: file name and offset.
type At = (String, u64);

/// Orders binlog coordinates: files by their numeric extension (`mysql-bin.000010` after
/// `mysql-bin.000009`), then offsets.
pub(crate) fn binlog_cmp(a: (&str, u64), b: (&str, u64)) -> Ordering {
    let seq = |f: &str| f.rsplit_once('.').and_then(|(_, n)| n.parse::<u64>().ok());
    let files = match (seq(a.0), seq(b.0)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => a.0.cmp(b.0),
    };
    files.then(a.1.cmp(&b.1))
}

/// A key of the table being copied that a streamed transaction starting at `at` changed.
struct Noted {
    at: At,
    key: Key,
}

struct Window {
    id: u64,
    table: TableId,
    /// The stream's position when the chunk started: changes are noted from here on
    opened_at: At,
    /// DDL or a truncate of the table came while the chunk was open: read it again.
    void: bool,
    /// The stream changed a row of the table with a partial row image while the chunk was
    /// open: the chunk's row cannot be dropped in favour of the stream's.
    partial: bool,
    chunk: Option<Chunk>,
}

/// Rows read for one chunk, as of binlog position `at`.
pub(crate) struct Chunk {
    schema: SchemaRef,
    rows: Vec<Row>,
    /// Fewer rows than asked for: the table has no more.
    exhausted: bool,
    /// The last row's key as the server sent it
    last_raw: Option<Vec<mysql_async::Value>>,
    at: At,
    /// The table is gone, or changed shape while it was read: read again.
    unusable: Option<&'static str>,
}

type ChunkResult = (u64, Result<Chunk, MyError>, Option<Conn>);

/// The copy jobs of a source and the chunk in progress.
pub(crate) struct Backfill {
    url: String,
    mariadb: bool,
    chunk_rows: usize,
    zero: ZeroDates,
    jobs: VecDeque<CopyJob>,
    /// The copy connection while no chunk is being read
    conn: Option<Conn>,
    window: Option<Window>,
    next_id: u64,
    results_tx: mpsc::UnboundedSender<ChunkResult>,
    results: mpsc::UnboundedReceiver<ChunkResult>,
    paused_until: Option<Instant>,
    /// Keys of the window's table changed by the stream while the window is open.
    log: Vec<Noted>,
    /// Where the binlog ended when the source started: a resumed copy waits for the stream to
    /// get there, so that DDL replayed on the way is seen before it pages on.
    gate: Option<At>,
}

impl Backfill {
    pub fn new(
        url: &str,
        mariadb: bool,
        chunk_rows: usize,
        zero: ZeroDates,
        jobs: Vec<CopyJob>,
        gate: Option<At>,
    ) -> Backfill {
        let (results_tx, results) = mpsc::unbounded_channel();
        for j in &jobs {
            info!(table = %j.table, sinks = ?j.to, after = ?j.after, "table will be copied while streaming");
        }
        Backfill {
            url: url.to_string(),
            mariadb,
            chunk_rows: chunk_rows.max(1),
            zero,
            jobs: jobs.into(),
            conn: None,
            window: None,
            next_id: 0,
            results_tx,
            results,
            paused_until: None,
            log: Vec::new(),
            gate,
        }
    }

    /// Queues a copy.
    pub fn push(&mut self, job: CopyJob) {
        info!(table = %job.table, sinks = ?job.to, "table will be copied while streaming");
        self.jobs.retain(|j| !(j.table == job.table && j.to == job.to));
        if self.window.as_ref().is_some_and(|w| w.table == job.table) {
            self.window = None;
            self.log.clear();
        }
        self.jobs.push_back(job);
    }

    /// Forgets copies of tables no longer selected.
    pub fn retain(&mut self, selected: &[TableId]) {
        self.jobs.retain(|j| selected.contains(&j.table));
        if self.window.as_ref().is_some_and(|w| !selected.contains(&w.table)) {
            self.window = None;
            self.log.clear();
        }
    }

    /// Whether a chunk of `table` is open (its streamed changes must be noted).
    pub fn watching(&self, table: &TableId) -> bool {
        self.window.as_ref().is_some_and(|w| w.table == *table)
    }

    /// A streamed change of `table` by the transaction starting at `at` (file, offset).
    pub fn on_change(&mut self, table: &TableId, at: (&str, u64), op: &Op, key_of: impl Fn(&Row) -> Key) {
        if !self.watching(table) {
            return;
        }
        if let Op::Update { after, .. } = op {
            if after.iter().any(|v| matches!(v, Value::Unchanged)) {
                if let Some(w) = self.window.as_mut() {
                    w.partial = true;
                }
            }
        }
        let mut note = |key: Key| self.log.push(Noted { at: (at.0.to_string(), at.1), key });
        match op {
            Op::Insert { after } => note(key_of(after)),
            Op::Delete { before } => note(key_of(before)),
            Op::Update { before, after } => {
                let key = key_of(after);
                if let Some(old) = before.as_ref().map(&key_of).filter(|k| *k != key) {
                    note(old);
                }
                note(key);
            }
            Op::Truncate => {}
        }
    }

    /// DDL on `table`: an open chunk may be in the old shape; it is read again.
    pub fn on_ddl(&mut self, table: &TableId) {
        if let Some(w) = self.window.as_mut().filter(|w| w.table == *table) {
            w.void = true;
        }
        // A copy resumed from a checkpoint pages on from a key read before this DDL, which may
        // have changed the key: start over (its first chunk waits for this replay to end).
        for j in self.jobs.iter_mut().filter(|j| j.table == *table && j.resumed) {
            j.restart("DDL on the table since the copy's checkpoint");
        }
    }

    /// `table` was truncated: rows copied before are gone on the sinks too, so its copies
    /// start again from the first row.
    pub fn on_truncate(&mut self, table: &TableId) {
        self.on_ddl(table);
        for j in self.jobs.iter_mut().filter(|j| j.table == *table) {
            j.after = None;
            j.after_raw = None;
        }
    }

    /// Receives the result of the chunk task; cancel-safe. Pending forever when no chunk runs.
    pub async fn result(&mut self) -> Option<ChunkResult> {
        self.results.recv().await
    }

    /// Records a chunk's rows (or failure).
    pub fn on_result(&mut self, r: ChunkResult) -> Result<(), MyError> {
        let (id, chunk, conn) = r;
        if conn.is_some() {
            self.conn = conn;
        }
        let Some(w) = self.window.as_mut().filter(|w| w.id == id) else { return Ok(()) };
        match chunk {
            Ok(c) => w.chunk = Some(c),
            Err(e) => {
                self.window = None;
                self.log.clear();
                let Some(job) = self.jobs.front_mut() else { return Err(e) };
                job.failures += 1;
                if job.failures >= CHUNK_ATTEMPTS {
                    return Err(e);
                }
                warn!(table = %job.table, error = %e, attempt = job.failures, "copy chunk failed; trying again");
                self.paused_until = Some(Instant::now() + RETRY_PAUSE);
            }
        }
        Ok(())
    }

    /// Called between transactions, with the stream at `pos`: once the stream has reached the
    /// open chunk's position, the chunk's copy steps (rows, progress, end).
    pub fn at_boundary(&mut self, pos: (&str, u64)) -> Result<Vec<Event>, MyError> {
        let Some(w) = &self.window else { return Ok(Vec::new()) };
        let Some(chunk) = &w.chunk else { return Ok(Vec::new()) };
        if !w.void && chunk.unusable.is_none() && binlog_cmp(pos, (&chunk.at.0, chunk.at.1)) == Ordering::Less {
            // The stream has not reached the chunk's snapshot yet.
            return Ok(Vec::new());
        }
        let Some(Window { void, partial, chunk: Some(chunk), opened_at, .. }) = self.window.take() else {
            return Ok(Vec::new());
        };
        let chunk_at = (chunk.at.0.as_str(), chunk.at.1);
        // A snapshot behind the point where noting began (a transaction the stream delivered
        // before its commit was visible to InnoDB): its changes were not noted, read again.
        let behind = binlog_cmp(chunk_at, (&opened_at.0, opened_at.1)) == Ordering::Less;
        let log = std::mem::take(&mut self.log);
        let Some(job) = self.jobs.front_mut() else { return Ok(Vec::new()) };
        if void || behind || chunk.unusable.is_some() {
            debug!(table = %job.table, why = chunk.unusable.unwrap_or("DDL on the table"), "reading a copy chunk again");
            self.paused_until = Some(Instant::now() + RETRY_PAUSE);
            return Ok(Vec::new());
        }
        let schema = chunk.schema;
        let key: Vec<String> = schema.key_indexes().iter().map(|&i| schema.columns[i].name.clone()).collect();
        if job.key.as_ref().is_some_and(|k| *k != key) {
            // The table's key changed since the copy began: the keys copied so far page by
            // another order, and a table that lost its key must be copied whole.
            job.restart("the table's key changed");
            return Ok(Vec::new());
        }
        let keyless = key.is_empty();
        // Changes the chunk does not hold: those the stream made at or after its snapshot.
        let unseen: Vec<Noted> =
            log.into_iter().filter(|n| binlog_cmp((&n.at.0, n.at.1), chunk_at) != Ordering::Less).collect();
        if keyless && !unseen.is_empty() || partial {
            // Rows without a key cannot be told apart from what the stream changed after the
            // snapshot, and a partial row image cannot stand in for the chunk's row: read again
            // until the stream leaves the rows alone while the chunk is read.
            let why = if partial { "updates with partial row images" } else { "a table without a key changed" };
            debug!(table = %job.table, why, "reading a copy chunk again");
            job.reread(why)?;
            self.paused_until = Some(Instant::now() + RETRY_PAUSE);
            return Ok(Vec::new());
        }
        let touched: HashSet<Key> = unseen.into_iter().map(|n| n.key).collect();
        let last = chunk.rows.last().map(|r| schema.key_of(r)).filter(|_| !keyless);
        let rows: Vec<Row> = chunk.rows.into_iter().filter(|r| !touched.contains(&schema.key_of(r))).collect();
        job.rows += rows.len() as u64;
        job.failures = 0;
        job.rereads = 0;
        let copy = |step| Event::Copy(Copy::new(job.to, schema.clone(), step));
        let mut out = Vec::new();
        if keyless {
            // Sent with its rows: whatever the stream wrote into the sinks' copy before this
            // point is in the chunk, or (at or after its snapshot) there was none.
            let step = CopyStep::Begin { mode: CopyMode::Replace, source_id: None, estimated_rows: job.estimated_rows };
            out.push(copy(step));
        }
        if !rows.is_empty() {
            out.push(copy(CopyStep::Rows(rows)));
        }
        if let Some(last) = last {
            out.push(copy(CopyStep::Progress { after: last.clone() }));
            job.after = Some(last);
            job.after_raw = chunk.last_raw;
        }
        if chunk.exhausted {
            out.push(copy(CopyStep::End));
            info!(table = %job.table, rows = job.rows, sinks = ?job.to, "copy of live table finished");
            self.jobs.pop_front();
        }
        sluice_core::crash_point("backfill.after_chunk");
        Ok(out)
    }

    /// Starts reading the next chunk when none is open. Returns the copy's `Begin` when this is
    /// its first chunk: it must reach the sinks before any change streamed after this point.
    pub async fn start(&mut self, pos: (&str, u64)) -> Result<Option<Event>, MyError> {
        if self.window.is_some() || self.jobs.is_empty() || self.paused_until.is_some_and(|t| Instant::now() < t) {
            return Ok(None);
        }
        self.paused_until = None;
        if let Some(gate) = &self.gate {
            if binlog_cmp(pos, (&gate.0, gate.1)) == Ordering::Less {
                if self.jobs.front().is_some_and(|j| j.resumed) {
                    return Ok(None);
                }
            } else {
                self.gate = None;
                self.jobs.iter_mut().for_each(|j| j.resumed = false);
            }
        }
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => catalog::connect(&self.url, "source (table copies)").await?,
        };
        let Some(job) = self.jobs.front_mut() else { return Ok(None) };
        let mut begin = None;
        if !job.started {
            let cols = catalog::table_columns(&mut conn, &job.table).await?;
            if cols.is_empty() {
                info!(table = %job.table, "table to copy is gone");
                self.jobs.pop_front();
                self.conn = Some(conn);
                return Ok(None);
            }
            let (schema, _) = catalog::schema_from_info(&job.table, &cols, self.zero == ZeroDates::Null);
            if job.after_raw.is_none() && job.after.as_ref().is_some_and(|k| ambiguous(&schema, k, self.zero)) {
                // A zero date in the checkpoint's key reads as NULL or the sentinel: where it
                // sorts among the keys is lost.
                job.restart("the checkpoint's key holds a zero date");
            }
            job.started = true;
            let indexes = schema.key_indexes();
            job.key = Some(indexes.iter().map(|&i| schema.columns[i].name.clone()).collect());
            job.keyless = indexes.is_empty();
            // A table without a key gets its begin with its rows (`at_boundary`).
            if !job.keyless {
                let mode = if job.after.is_none() { CopyMode::Replace } else { CopyMode::Resume };
                let step = CopyStep::Begin { mode, source_id: None, estimated_rows: job.estimated_rows };
                begin = Some(Event::Copy(Copy::new(job.to, Arc::new(schema), step)));
            }
        }
        self.next_id += 1;
        let id = self.next_id;
        let opened_at = (pos.0.to_string(), pos.1);
        self.window =
            Some(Window { id, table: job.table.clone(), opened_at, void: false, partial: false, chunk: None });
        let read = ChunkRead {
            table: job.table.clone(),
            after: job.after.clone(),
            after_raw: job.after_raw.clone(),
            limit: self.chunk_rows,
            mariadb: self.mariadb,
            zero: self.zero,
        };
        let tx = self.results_tx.clone();
        tokio::spawn(async move {
            let (r, conn) = read.run(conn).await;
            let _ = tx.send((id, r, conn));
        });
        debug!(chunk = id, "copy chunk started");
        Ok(begin)
    }
}

/// What one chunk task reads.
struct ChunkRead {
    table: TableId,
    after: Option<Key>,
    after_raw: Option<Vec<mysql_async::Value>>,
    limit: usize,
    mariadb: bool,
    zero: ZeroDates,
}

impl ChunkRead {
    /// Reads the chunk; returns the connection when it is still usable.
    async fn run(self, mut conn: Conn) -> (Result<Chunk, MyError>, Option<Conn>) {
        match self.read(&mut conn).await {
            Ok(c) => (Ok(c), Some(conn)),
            Err(e) => {
                let _ = conn.query_drop("ROLLBACK").await;
                (Err(e), None)
            }
        }
    }

    async fn read(&self, conn: &mut Conn) -> Result<Chunk, MyError> {
        let id = &self.table;
        let at = if self.mariadb {
            start_mariadb(conn).await?
        } else {
            let (file, pos, _) = master_status(conn).await?;
            start_txn(conn).await?;
            (file, pos)
        };
        sluice_core::crash_point("backfill.mid_chunk");
        let cols = catalog::table_columns(conn, id).await?;
        let unusable = |why| Chunk {
            schema: Arc::new(TableSchema {
                id: id.clone(),
                columns: Vec::new(),
                version: 0,
                dialect: catalog::DIALECT.into(),
            }),
            rows: Vec::new(),
            exhausted: false,
            last_raw: None,
            at: at.clone(),
            unusable: Some(why),
        };
        if cols.is_empty() {
            conn.query_drop("COMMIT").await.ctx(format!("end the copy of {id}"))?;
            return Ok(unusable("the table is gone"));
        }
        let (schema, plans) = catalog::schema_from_info(id, &cols, self.zero == ZeroDates::Null);
        let (sql, params) = chunk_query(&schema, &cols, self.after.as_ref(), self.after_raw.as_deref(), self.limit)?;
        let what = format!("copy of {id}");
        let mut rows = Vec::new();
        let key = schema.key_indexes();
        let mut last_raw = None;
        let mut result = conn.exec_iter(sql, params).await.ctx(what.clone())?;
        while let Some(row) = result.next().await.ctx(what.clone())? {
            last_raw = Some(key.iter().map(|&i| row.as_ref(i).cloned().unwrap_or(mysql_async::Value::NULL)).collect());
            rows.push(row_from_protocol(row, &schema, &plans, self.zero)?);
        }
        drop(result);
        // The SELECT holds the table's metadata lock until COMMIT: the columns now are the
        // ones it read, unless DDL came between the first look and the SELECT.
        let now = catalog::table_columns(conn, id).await?;
        conn.query_drop("COMMIT").await.ctx(format!("end the copy of {id}"))?;
        if now != cols {
            return Ok(unusable("the table changed shape while it was read"));
        }
        let exhausted = rows.len() < self.limit || schema.key_indexes().is_empty();
        Ok(Chunk { schema: Arc::new(schema), rows, exhausted, last_raw, at, unusable: None })
    }
}

/// Whether a key read from a checkpoint may hold a zero date (read as NULL or the sentinel).
fn ambiguous(schema: &TableSchema, key: &Key, zero: ZeroDates) -> bool {
    let dated = schema.key_indexes().into_iter().map(|i| &schema.columns[i]).zip(key).filter(|(c, _)| {
        matches!(
            c.data_type,
            sluice_core::DataType::Date | sluice_core::DataType::Timestamp | sluice_core::DataType::TimestampTz
        )
    });
    let mut dated = dated.map(|(_, v)| v);
    dated.any(|v| match (v, zero) {
        (Value::Null, _) => true,
        (Value::Date(d), ZeroDates::Sentinel(s)) => *d == s,
        (Value::Timestamp(t) | Value::TimestampTz(t), ZeroDates::Sentinel(s)) => {
            *t == sluice_core::Timestamp::from_date_time(s.0 as i64, 0)
        }
        _ => false,
    })
}

/// The chunk's SELECT: keys after `after` (values in column order, as [`TableSchema::key_of`]
/// gives them; `raw`, when known, the same key as the server sent it) in primary-key order, at
/// most `limit` rows. The comparison is spelled out per column so the server's range optimiser
/// uses the key's index.
fn chunk_query(
    schema: &TableSchema,
    cols: &[InfoColumn],
    after: Option<&Key>,
    raw: Option<&[mysql_async::Value]>,
    limit: usize,
) -> Result<(String, Vec<mysql_async::Value>), MyError> {
    let list = schema.columns.iter().map(|c| quote(&c.name)).collect::<Vec<_>>().join(", ");
    // Key columns in key order, each with its place in `after`.
    let mut key: Vec<(usize, usize)> = Vec::new();
    let indexes = schema.key_indexes();
    for (slot, &i) in indexes.iter().enumerate() {
        key.push((cols.get(i).and_then(|c| c.key_pos).map_or(i, |p| p as usize), slot));
    }
    key.sort();
    let order = key.iter().map(|&(_, slot)| quote(&schema.columns[indexes[slot]].name)).collect::<Vec<_>>().join(", ");
    let mut sql = format!("SELECT {list} FROM {}", qualified(&schema.id));
    if key.is_empty() {
        // No key to page by: the whole table is one chunk.
        return Ok((sql, Vec::new()));
    }
    let mut params = Vec::new();
    if let Some(after) = after {
        if after.len() != key.len() {
            return Err(MyError::Setup(format!(
                "the copy of {} resumes after a key of {} columns, but the table's key has {} now; delete this \
                 pipeline's checkpoint rows for the table in the sink to copy it from the start",
                schema.id,
                after.len(),
                key.len()
            )));
        }
        let mut ors = Vec::new();
        for n in 0..key.len() {
            let mut ands = Vec::new();
            for (j, &(_, slot)) in key.iter().enumerate().take(n + 1) {
                let i = indexes[slot];
                let c = &schema.columns[i];
                let op = if j == n { ">" } else { "=" };
                let (placeholder, v) = key_param(c, cols.get(i), &after[slot], raw.and_then(|r| r.get(slot)))
                    .map_err(|e| MyError::Protocol(format!("key column {} of {}: {e}", c.name, schema.id)))?;
                ands.push(format!("{} {op} {placeholder}", quote(&c.name)));
                params.push(v);
            }
            ors.push(format!("({})", ands.join(" AND ")));
        }
        sql.push_str(&format!(" WHERE {}", ors.join(" OR ")));
    }
    sql.push_str(&format!(" ORDER BY {order} LIMIT {limit}"));
    Ok((sql, params))
}

/// A key value bound so that the server compares it in the order `ORDER BY` sorts the column:
/// ENUM by its index and SET by its bit mask (a label would compare as text), BIT as a number,
/// DECIMAL as a decimal of the column's precision (a string would compare as a double), and
/// dates as the server sent them (a zero date reads as NULL or the sentinel, which sort
/// elsewhere).
fn key_param(
    c: &sluice_core::ColumnSchema,
    info: Option<&InfoColumn>,
    v: &Value,
    raw: Option<&mysql_async::Value>,
) -> Result<(String, mysql_async::Value), String> {
    use mysql_async::Value as M;
    let kind = info.map_or("", |i| i.data_type.as_str());
    let index_of = |label: &str| {
        let labels = info.map(|i| catalog::labels(&i.column_type)).unwrap_or_default();
        labels.iter().position(|l| l == label).map(|p| p as u64 + 1)
    };
    let bound = match (kind, v) {
        ("enum", Value::Enum(t) | Value::Text(t)) if t.is_empty() => M::UInt(0),
        ("enum", Value::Enum(t) | Value::Text(t)) => {
            M::UInt(index_of(t).ok_or_else(|| format!("'{t}' is not one of the column's labels"))?)
        }
        ("set", Value::Text(t) | Value::Enum(t)) => {
            let mut mask = 0u64;
            for member in t.split(',').filter(|m| !m.is_empty()) {
                let i = index_of(member).ok_or_else(|| format!("'{member}' is not one of the column's members"))?;
                mask |= 1 << (i - 1);
            }
            M::UInt(mask)
        }
        ("bit", Value::Bool(b)) => M::UInt(*b as u64),
        ("bit", Value::Bytes(b)) if b.len() <= 8 => M::UInt(b.iter().fold(0u64, |acc, x| acc << 8 | *x as u64)),
        ("decimal", Value::Decimal(_)) => {
            let (p, s) = info.map_or((65, 30), |i| (i.num_precision.unwrap_or(65), i.num_scale.unwrap_or(0)));
            return Ok((format!("CAST(? AS DECIMAL({p},{s}))"), crate::sink::encode::param(v, c)?));
        }
        ("date" | "datetime" | "timestamp", _) if raw.is_some() => raw.cloned().unwrap_or(M::NULL),
        ("date" | "datetime" | "timestamp", Value::Null) => {
            return Err("a zero date, read as NULL, cannot be paged from".into());
        }
        _ => crate::sink::encode::param(v, c)?,
    };
    Ok(("?".into(), bound))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::{ColumnSchema, DataType};

    #[test]
    fn binlog_positions_order_by_file_number_then_offset() {
        assert_eq!(binlog_cmp(("mysql-bin.000009", 900), ("mysql-bin.000010", 4)), Ordering::Less);
        assert_eq!(binlog_cmp(("mysql-bin.000010", 4), ("mysql-bin.000010", 4)), Ordering::Equal);
        assert_eq!(binlog_cmp(("mysql-bin.999999", 4), ("mysql-bin.1000000", 4)), Ordering::Less);
        assert_eq!(binlog_cmp(("b.000001", 500), ("b.000001", 120)), Ordering::Greater);
    }

    fn schema() -> TableSchema {
        let col = |name: &str, key: bool| ColumnSchema {
            name: name.into(),
            data_type: DataType::Int64,
            nullable: !key,
            key,
            precision: None,
            scale: None,
            length: None,
            native_type: "bigint".into(),
            missing_value: None,
        };
        TableSchema {
            id: TableId::new("app", "t"),
            columns: vec![col("a", true), col("v", false), col("b", true)],
            version: 1,
            dialect: "mysql".into(),
        }
    }

    fn info(name: &str, key_pos: Option<u32>) -> InfoColumn {
        InfoColumn {
            name: name.into(),
            data_type: "bigint".into(),
            column_type: "bigint(20)".into(),
            nullable: key_pos.is_none(),
            charset: None,
            char_len: None,
            octet_len: None,
            num_precision: None,
            num_scale: None,
            dt_precision: None,
            json_text: false,
            key_pos,
        }
    }

    #[test]
    fn chunks_page_by_the_key_in_its_own_order() {
        let s = schema();
        // PRIMARY KEY (b, a): b first, though a comes first among the columns.
        let cols = [info("a", Some(2)), info("v", None), info("b", Some(1))];
        let (sql, params) = chunk_query(&s, &cols, None, None, 100).unwrap();
        assert_eq!(sql, "SELECT `a`, `v`, `b` FROM `app`.`t` ORDER BY `b`, `a` LIMIT 100");
        assert!(params.is_empty());
        let after = vec![Value::Int(7), Value::Int(3)]; // a = 7, b = 3
        let (sql, params) = chunk_query(&s, &cols, Some(&after), None, 10).unwrap();
        assert_eq!(
            sql,
            "SELECT `a`, `v`, `b` FROM `app`.`t` WHERE (`b` > ?) OR (`b` = ? AND `a` > ?) ORDER BY `b`, `a` LIMIT 10"
        );
        let ints: Vec<mysql_async::Value> = [3, 3, 7].into_iter().map(mysql_async::Value::Int).collect();
        assert_eq!(params, ints);
        assert!(chunk_query(&s, &cols, Some(&vec![Value::Int(1)]), None, 10).is_err());
    }
}
