//! Copying live tables while the stream runs: chunks made consistent with the stream by
//! watermarks in the WAL (the algorithm of Netflix's DBLog, also behind Debezium's incremental
//! snapshots).
//!
//! ```text
//!  copy client:  emit low ─▶ writers waiting for a standby; BEGIN REPEATABLE READ; snapshot;
//!                SELECT chunk (key > last, ORDER BY key LIMIT n); COMMIT ─▶ emit high
//!  stream:       … changes to the table (xid, key noted) … low … high
//!                ─▶ chunk minus the keys of changes it may not contain
//! ```
//!
//! A watermark is a transactional logical decoding message (`pg_logical_emit_message`) carrying
//! the slot name, a number drawn per run and the chunk number, so it appears in this slot's
//! stream at its commit and a mark left in the WAL by an earlier run is never mistaken for one
//! of this run. The SELECT runs after the low watermark committed and before the high one.
//!
//! Which streamed changes the chunk may lack: a transaction whose commit reaches the WAL before
//! the high mark is in the chunk only if the SELECT's snapshot sees it. Those that commit between
//! the marks may or may not be; one that commits before the low mark normally is, except while
//! its commit is in the WAL but not yet visible (a commit waiting for a synchronous standby). So
//! while copies run, every streamed change to a table being copied is kept in a log with its
//! transaction id until a chunk's snapshot sees that transaction (then every later chunk sees it
//! too). At the high mark a key counts as touched when a change to it came between the marks, or
//! is in the log from a transaction the snapshot does not see. A transaction committed in the
//! WAL but not yet visible still holds its write lock on the table and waits for the standby
//! (`SyncRep`), so right after the low mark, before taking its snapshot, the chunk task lists
//! such writers; one the snapshot does not see whose commit the stream has not delivered since
//! copies began (it came earlier, or the table was not yet published) may hold changes nobody
//! noted: the chunk is read again until it becomes visible. (The microseconds between a commit
//! record and its visibility outside such a wait are not covered.)
//!
//! For a touched key the streamed change wins and the chunk's row is dropped (the streamed
//! change carries the whole row). An update that did not resend unchanged TOASTed values cannot
//! replace the row, so instead its values are applied onto the chunk's row, which is correct
//! whichever of the two came first. The remaining rows go to the sinks right after the high
//! mark, as a copy step between transactions.
//!
//! Shapes: a chunk is read in the table's shape when it started; if the stream announces
//! another shape before the chunk is sent, the chunk is read again in the new one.
//!
//! Begin and progress: a copy's [`CopyStep::Begin`] goes out when its first chunk starts, before
//! any change streamed after that point, so a `Replace` copy empties only rows from before (a row
//! moved to a key the copy has passed must survive). After each chunk the last key is sent as
//! [`CopyStep::Progress`]; a sink that made it durable resumes after it. A truncate of the table
//! restarts its copy from the first row.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use rustc_hash::{FxHashMap, FxHashSet};
use sluice_core::{Copy, CopyMode, CopyStep, Event, Key, Op, Row, SinkSet, TableId, Value};
use tokio::sync::mpsc;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::Client;
use tracing::{debug, info, warn};

use super::MESSAGE_PREFIX;
use crate::catalog::{self, PgTable, SourceTable};
use crate::codec::{self, PgType};
use crate::error::{Ctx, PgError};
use crate::ident::{qualified, quote_ident};

/// How often a chunk that failed transiently is tried again before the source gives up.
const CHUNK_ATTEMPTS: u32 = 5;
/// How long to wait before reading a chunk again because a commit it needs is not visible yet.
const UNSEEN_COMMIT_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// One table to copy into some sinks.
#[derive(Debug, Clone)]
pub(crate) struct CopyJob {
    pub table: TableId,
    pub oid: u32,
    /// [`SourceTable::identity`] when the job was made
    pub identity: String,
    pub to: SinkSet,
    /// Last key copied (`None`: from the first row)
    pub after: Option<Key>,
    estimated_rows: Option<u64>,
    started: bool,
    failures: u32,
    rows: u64,
}

impl CopyJob {
    pub fn new(t: &SourceTable, to: SinkSet, after: Option<Key>) -> CopyJob {
        CopyJob {
            table: t.id.clone(),
            oid: t.oid,
            identity: t.identity(),
            to,
            after,
            estimated_rows: u64::try_from(t.estimated_rows).ok().filter(|n| *n > 0),
            started: false,
            failures: 0,
            rows: 0,
        }
    }
}

/// What a streamed change did to a key inside a window.
enum Touch {
    /// A whole row (or its deletion) was streamed: the chunk's row is dropped.
    Replaced,
    /// Updates that did not resend some values: applied onto the chunk's row, in order.
    Patched(Vec<Row>),
}

/// A streamed change to a table being copied.
struct Noted {
    xid: u32,
    table: TableId,
    /// Id of the window whose low mark it came after (0: none)
    after_low_of: u64,
    key: Key,
    touch: Touch,
}

struct Window {
    id: u64,
    table: TableId,
    identity: String,
    /// The low watermark has been seen in the stream.
    open: bool,
    high_seen: bool,
    /// The table was truncated inside the window: the chunk is void.
    void: bool,
    chunk: Option<Result<Chunk, PgError>>,
}

/// Rows read for one chunk, in the shape they were read with.
pub(crate) struct Chunk {
    table: PgTable,
    rows: Vec<Row>,
    /// Fewer rows than asked for: the table has no more.
    exhausted: bool,
    snapshot: Snapshot,
    /// Writers of the table the snapshot does not see that had committed (in the WAL) when it
    /// was taken.
    committed_unseen: Vec<u32>,
}

/// The transactions a snapshot sees (`pg_current_snapshot()`), by 32-bit transaction id as
/// pgoutput reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    xmax: u32,
    in_progress: FxHashSet<u32>,
}

impl Snapshot {
    /// Parses `xmin:xmax:xip,...` (64-bit ids; the low 32 bits are the transaction id).
    fn parse(text: &str) -> Result<Snapshot, PgError> {
        let bad = || PgError::Protocol(format!("unexpected snapshot {text:?}"));
        let mut parts = text.split(':');
        let _xmin = parts.next().ok_or_else(bad)?;
        let xmax: u64 = parts.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
        let mut in_progress = FxHashSet::default();
        for x in parts.next().unwrap_or("").split(',').filter(|x| !x.is_empty()) {
            in_progress.insert(x.parse::<u64>().map_err(|_| bad())? as u32);
        }
        Ok(Snapshot { xmax: xmax as u32, in_progress })
    }

    /// Whether the snapshot sees transaction `xid` (which has committed by now): not if it was
    /// in progress when the snapshot was taken or started later. Ids compare modulo 2^32, as
    /// the server compares them.
    fn sees(&self, xid: u32) -> bool {
        (xid.wrapping_sub(self.xmax) as i32) < 0 && !self.in_progress.contains(&xid)
    }
}

/// The copy jobs of a source and the chunk in progress.
pub(crate) struct Backfill {
    url: String,
    slot: String,
    chunk_rows: usize,
    jobs: VecDeque<CopyJob>,
    client: Option<Arc<Client>>,
    window: Option<Window>,
    next_id: u64,
    results_tx: mpsc::UnboundedSender<(u64, Result<Chunk, PgError>)>,
    results: mpsc::UnboundedReceiver<(u64, Result<Chunk, PgError>)>,
    /// Drawn per run: part of every watermark, so marks of earlier runs are told apart.
    nonce: u64,
    /// No chunk starts before then (waiting for a commit to become visible).
    paused_until: Option<std::time::Instant>,
    /// Changes to tables being copied, by transactions no chunk's snapshot has seen yet.
    log: Vec<Noted>,
    /// Transactions whose commit the stream delivered while copies ran, until a chunk's
    /// snapshot sees them.
    delivered: FxHashSet<u32>,
}

impl Backfill {
    pub fn new(url: &str, slot: &str, chunk_rows: usize, jobs: Vec<CopyJob>) -> Backfill {
        let (results_tx, results) = mpsc::unbounded_channel();
        Backfill {
            url: url.to_string(),
            slot: slot.to_string(),
            chunk_rows,
            jobs: jobs.into(),
            client: None,
            window: None,
            next_id: 0,
            results_tx,
            results,
            nonce: std::collections::hash_map::RandomState::new().build_hasher().finish(),
            log: Vec::new(),
            delivered: FxHashSet::default(),
            paused_until: None,
        }
    }

    fn tag(&self, id: u64) -> String {
        format!("{}:{:016x}:{id}", self.slot, self.nonce)
    }

    /// Queues a copy.
    pub fn push(&mut self, job: CopyJob) {
        info!(table = %job.table, sinks = ?job.to, "table will be copied while streaming");
        self.jobs.push_back(job);
    }

    /// Forgets copies of tables no longer selected (or dropped and created again).
    pub fn retain(&mut self, selected: &[SourceTable]) {
        let kept = |id: &TableId, identity: &str| selected.iter().any(|t| t.id == *id && t.identity() == identity);
        self.jobs.retain(|j| kept(&j.table, &j.identity));
        if self.window.as_ref().is_some_and(|w| !kept(&w.table, &w.identity)) {
            self.window = None;
        }
    }

    /// Whether some copy of `table` is queued or running.
    pub fn copying(&self, table: &TableId) -> bool {
        self.jobs.iter().any(|j| j.table == *table)
    }

    /// The table the next chunk should be read from, when no chunk is in progress.
    pub fn next_table(&self) -> Option<(&TableId, u32)> {
        if self.window.is_some() || self.paused_until.is_some_and(|t| std::time::Instant::now() < t) {
            return None;
        }
        self.jobs.front().map(|j| (&j.table, j.oid))
    }

    async fn client(&mut self) -> Result<Arc<Client>, PgError> {
        if let Some(c) = &self.client {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let c = Arc::new(catalog::connect(&self.url, "source (table copies)").await?);
        self.client = Some(c.clone());
        Ok(c)
    }

    /// Starts reading the next chunk of the first job, with `table` its current shape.
    /// Returns the copy's `Begin` when this is its first chunk: it goes to the sinks before any
    /// change streamed after this point, so rows a `Replace` copy empties are only those from
    /// before.
    pub async fn start(&mut self, table: PgTable) -> Result<Option<Event>, PgError> {
        let Some(job) = self.jobs.front_mut() else { return Ok(None) };
        let begin = (!job.started).then(|| {
            job.started = true;
            let mode = if job.after.is_none() { CopyMode::Replace } else { CopyMode::Resume };
            let step =
                CopyStep::Begin { mode, source_id: Some(job.identity.clone()), estimated_rows: job.estimated_rows };
            Event::Copy(Copy::new(job.to, table.schema.clone(), step))
        });
        let job = job.clone();
        self.next_id += 1;
        let id = self.next_id;
        let client = self.client().await?;
        let query = ChunkQuery::new(&client, &job, &table, self.chunk_rows).await?;
        self.window = Some(Window {
            id,
            table: job.table.clone(),
            identity: job.identity.clone(),
            open: false,
            high_seen: false,
            void: false,
            chunk: None,
        });
        let tx = self.results_tx.clone();
        let tag = self.tag(id);
        let oid = job.oid;
        tokio::spawn(async move {
            let r = read_chunk(&client, &tag, oid, query, table).await;
            let _ = tx.send((id, r));
        });
        debug!(chunk = id, "copy chunk started");
        Ok(begin)
    }

    /// Receives the result of the chunk task; cancel-safe.
    pub async fn result(&mut self) -> Option<(u64, Result<Chunk, PgError>)> {
        self.results.recv().await
    }

    /// Records a chunk's rows (or failure). A failure abandons the window at once: its high
    /// watermark will never come.
    pub fn on_result(&mut self, id: u64, r: Result<Chunk, PgError>) -> Result<(), PgError> {
        let Some(w) = self.window.as_mut().filter(|w| w.id == id) else { return Ok(()) };
        match r {
            Ok(chunk) => w.chunk = Some(Ok(chunk)),
            Err(e) => {
                self.window = None;
                self.failed(e)?;
            }
        }
        Ok(())
    }

    fn failed(&mut self, e: PgError) -> Result<(), PgError> {
        let Some(job) = self.jobs.front_mut() else { return Err(e) };
        job.failures += 1;
        if job.failures >= CHUNK_ATTEMPTS {
            return Err(e);
        }
        warn!(table = %job.table, error = %e.describe(), attempt = job.failures, "copy chunk failed; trying again");
        Ok(())
    }

    /// A logical decoding message from the stream.
    pub fn on_message(&mut self, prefix: &str, content: &[u8]) {
        if prefix != MESSAGE_PREFIX {
            return;
        }
        let Some(id) = self.window.as_ref().map(|w| w.id) else { return };
        let tag = self.tag(id);
        let Some(w) = self.window.as_mut() else { return };
        let text = String::from_utf8_lossy(content);
        let Some(rest) = text.strip_prefix(&tag).and_then(|r| r.strip_prefix(':')) else { return };
        match rest {
            "low" => w.open = true,
            "high" if w.open => w.high_seen = true,
            _ => {}
        }
    }

    /// The commit of transaction `xid` in the stream.
    pub fn on_commit(&mut self, xid: u32) {
        if !self.jobs.is_empty() {
            self.delivered.insert(xid);
        }
    }

    /// A streamed change of `table`, by transaction `xid`, with key columns `key_of`.
    pub fn on_change(&mut self, xid: u32, table: &TableId, op: &Op, key_of: impl Fn(&Row) -> Key) {
        if self.jobs.iter().any(|j| j.table == *table) {
            let after_low_of =
                self.window.as_ref().filter(|w| w.open && !w.high_seen && w.table == *table).map_or(0, |w| w.id);
            let mut note =
                |key: Key, touch: Touch| self.log.push(Noted { xid, table: table.clone(), after_low_of, key, touch });
            match op {
                Op::Insert { after } => note(key_of(after), Touch::Replaced),
                Op::Delete { before } => note(key_of(before), Touch::Replaced),
                Op::Update { before, after } => {
                    let key = key_of(after);
                    if let Some(old) = before.as_ref().map(&key_of).filter(|k| *k != key) {
                        note(old, Touch::Replaced);
                    }
                    if after.contains(&Value::Unchanged) {
                        note(key, Touch::Patched(vec![after.clone()]));
                    } else {
                        note(key, Touch::Replaced);
                    }
                }
                Op::Truncate => {}
            }
        }
        if let Some(w) = self.window.as_mut().filter(|w| !w.high_seen && w.table == *table) {
            if matches!(op, Op::Truncate) {
                // Rows the chunk read may have been removed on the sinks by the truncate.
                w.void = true;
            }
        }
        if matches!(op, Op::Truncate) {
            // Rows copied before are gone on the sinks too: copy the table again from the start.
            for j in self.jobs.iter_mut().filter(|j| j.table == *table) {
                j.after = None;
            }
        }
    }

    /// Called between transactions: once the high watermark has been seen, the chunk's copy
    /// steps (begin, rows, progress, end). `shapes` holds the current shape of each table.
    pub async fn at_boundary(&mut self, shapes: &HashMap<TableId, PgTable>) -> Result<Vec<Event>, PgError> {
        if !self.window.as_ref().is_some_and(|w| w.high_seen) {
            return Ok(Vec::new());
        }
        let Some(mut w) = self.window.take() else { return Ok(Vec::new()) };
        let chunk = match w.chunk.take() {
            Some(c) => c,
            // The task sends its result right after the high mark committed: wait for it.
            None => loop {
                match self.results.recv().await {
                    Some((id, r)) if id == w.id => break r,
                    Some(_) => continue,
                    None => return Err(PgError::Protocol("copy chunk task vanished".into())),
                }
            },
        };
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                self.failed(e)?;
                return Ok(Vec::new());
            }
        };
        let Some(table) = self.jobs.front().map(|j| j.table.clone()) else { return Ok(Vec::new()) };
        if w.void {
            debug!(%table, "table truncated during a copy chunk; reading it again");
            return Ok(Vec::new());
        }
        let mut touched = self.touched(w.id, &table, &chunk.snapshot);
        let keyless = chunk.table.schema.key_indexes().is_empty();
        if keyless && !touched.is_empty() {
            // Rows without a key cannot be told apart from what the stream changed: the whole
            // table is read again, until a window passes without a change to it.
            debug!(%table, "a table without a key changed while it was read; reading it again");
            self.paused_until = Some(std::time::Instant::now() + UNSEEN_COMMIT_PAUSE);
            return Ok(Vec::new());
        }
        if let Some(x) = chunk.committed_unseen.iter().find(|x| !self.delivered.contains(x)) {
            debug!(%table, xid = x, "a committed transaction the chunk did not see is not in the stream yet; reading the chunk again");
            self.paused_until = Some(std::time::Instant::now() + UNSEEN_COMMIT_PAUSE);
            return Ok(Vec::new());
        }
        // The rows go out in the table's current shape, which must be the one they were read in.
        let schema = match shapes.get(&table) {
            Some(t) if t.schema.columns == chunk.table.schema.columns && t.types == chunk.table.types => {
                t.schema.clone()
            }
            _ => {
                debug!(%table, "the table changed shape during a copy chunk; reading it again");
                return Ok(Vec::new());
            }
        };
        let Some(job) = self.jobs.front_mut() else { return Ok(Vec::new()) };
        let copy = |step| Event::Copy(Copy::new(job.to, schema.clone(), step));
        let mut out = Vec::new();
        let last = chunk.rows.last().map(|r| schema.key_of(r)).filter(|_| !keyless);
        let mut rows = Vec::with_capacity(chunk.rows.len());
        for mut row in chunk.rows {
            match touched.remove(&schema.key_of(&row)) {
                None => rows.push(row),
                Some(Touch::Replaced) => {}
                Some(Touch::Patched(patches)) => {
                    for p in patches {
                        for (v, new) in row.iter_mut().zip(p) {
                            if new != Value::Unchanged {
                                *v = new;
                            }
                        }
                    }
                    rows.push(row);
                }
            }
        }
        job.rows += rows.len() as u64;
        job.failures = 0;
        if !rows.is_empty() {
            out.push(copy(CopyStep::Rows(rows)));
        }
        if let Some(last) = last {
            out.push(copy(CopyStep::Progress { after: last.clone() }));
            job.after = Some(last);
        }
        if chunk.exhausted {
            out.push(copy(CopyStep::End));
            info!(table = %job.table, rows = job.rows, sinks = ?job.to, "copy of live table finished");
            self.jobs.pop_front();
            if self.jobs.is_empty() {
                self.log.clear();
                self.delivered.clear();
            }
        }
        sluice_core::crash_point("backfill.after_chunk");
        Ok(out)
    }

    /// The keys of `table` a chunk read in `snapshot` may not hold the last word on: changed
    /// after window `id`'s low mark, or by a transaction the snapshot does not see. Forgets
    /// what the snapshot sees (every later snapshot sees it too).
    fn touched(&mut self, id: u64, table: &TableId, snapshot: &Snapshot) -> FxHashMap<Key, Touch> {
        let mut touched: FxHashMap<Key, Touch> = FxHashMap::default();
        for n in &self.log {
            if n.table != *table || (n.after_low_of != id && snapshot.sees(n.xid)) {
                continue;
            }
            let t = touched.entry(n.key.clone()).or_insert(Touch::Patched(Vec::new()));
            match (t, &n.touch) {
                (t, Touch::Replaced) => *t = Touch::Replaced,
                (Touch::Patched(p), Touch::Patched(more)) => p.extend(more.iter().cloned()),
                (Touch::Replaced, Touch::Patched(_)) => {}
            }
        }
        self.log.retain(|n| !snapshot.sees(n.xid));
        self.delivered.retain(|x| !snapshot.sees(*x));
        touched
    }
}

/// The current row of `table` with key `key`, read now on `client` (for an update that moved a
/// row not yet copied without resending some of its values).
pub(crate) async fn fetch(client: &Client, table: &PgTable, key: &Key) -> Result<Option<Row>, PgError> {
    let q = ChunkQuery::build(client, &table.schema.id, table, Some(key), "=", None).await?;
    let rows = q.run(client, table).await?;
    Ok(rows.into_iter().next())
}

/// A chunk's SELECT with its bound key values.
struct ChunkQuery {
    sql: String,
    params: Vec<Option<String>>,
    limit: usize,
}

impl ChunkQuery {
    async fn new(client: &Client, job: &CopyJob, table: &PgTable, limit: usize) -> Result<ChunkQuery, PgError> {
        Self::build(client, &job.table, table, job.after.as_ref(), ">", Some(limit)).await
    }

    async fn build(
        client: &Client,
        id: &TableId,
        table: &PgTable,
        key: Option<&Key>,
        cmp: &str,
        limit: Option<usize>,
    ) -> Result<ChunkQuery, PgError> {
        let schema = &table.schema;
        let select = schema
            .columns
            .iter()
            .zip(table.types.iter())
            .map(|(c, t)| if t.binary_ok() { quote_ident(&c.name) } else { format!("{}::text", quote_ident(&c.name)) })
            .collect::<Vec<_>>()
            .join(", ");
        let keys: Vec<&str> = schema.columns.iter().filter(|c| c.key).map(|c| c.name.as_str()).collect();
        let key_list = keys.iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ");
        let mut sql = format!("SELECT {select} FROM {}", catalog::from_rows(id, table.partitioned));
        let mut conds: Vec<String> = table.row_filter.iter().map(|f| format!("({f})")).collect();
        let mut params = Vec::new();
        if let Some(key) = key {
            // Bound as text and cast to each key column's own type, so the comparison is the
            // server's, in the same order as ORDER BY.
            let mut casts = Vec::with_capacity(keys.len());
            for (i, (name, v)) in keys.iter().zip(key).enumerate() {
                let t: String = client
                    .query_one(
                        "SELECT format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2",
                        &[&qualified(id), name],
                    )
                    .await
                    .ctx(format!("read the type of key column {name} of {}", id))?
                    .get(0);
                casts.push(format!("${}::text::{t}", i + 1));
                let ty = schema.column_index(name).and_then(|j| table.types.get(j)).unwrap_or(&PgType::Other);
                params.push(match v {
                    Value::Null => None,
                    v => {
                        let mut buf = bytes::BytesMut::new();
                        codec::encode_text(ty, v, &mut buf)
                            .map_err(|e| PgError::Protocol(format!("key of {}: {e}", id)))?;
                        Some(String::from_utf8_lossy(&buf).into_owned())
                    }
                });
            }
            conds.push(format!("({key_list}) {cmp} ({})", casts.join(", ")));
        }
        if !conds.is_empty() {
            sql.push_str(&format!(" WHERE {}", conds.join(" AND ")));
        }
        if keys.is_empty() {
            // No key to page by (REPLICA IDENTITY FULL): the whole table is one chunk.
            return Ok(ChunkQuery { sql, params, limit: usize::MAX });
        }
        sql.push_str(&format!(" ORDER BY {key_list}"));
        if let Some(n) = limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        Ok(ChunkQuery { sql, params, limit: limit.unwrap_or(usize::MAX) })
    }

    async fn run(&self, client: &Client, table: &PgTable) -> Result<Vec<Row>, PgError> {
        let types = vec![Type::TEXT; self.params.len()];
        let st =
            client.prepare_typed(&self.sql, &types).await.ctx(format!("prepare the copy of {}", table.schema.id))?;
        let stream = client
            .query_raw(&st, self.params.iter().map(|p| p.as_deref()))
            .await
            .ctx(format!("copy of {}", table.schema.id))?;
        let mut stream = std::pin::pin!(stream);
        let mut rows = Vec::new();
        while let Some(r) = stream.next().await {
            let r = r.ctx(format!("copy of {}", table.schema.id))?;
            let mut row = Vec::with_capacity(table.types.len());
            for (i, ty) in table.types.iter().enumerate() {
                let raw: Option<Raw> = r.try_get(i).ctx(format!("copy of {}", table.schema.id))?;
                let v = match raw {
                    None => Ok(Value::Null),
                    Some(Raw(b)) if ty.binary_ok() => codec::decode_binary(ty, Bytes::copy_from_slice(b)),
                    Some(Raw(b)) => codec::decode_text(&PgType::Other, Bytes::copy_from_slice(b)),
                }
                .map_err(|e| {
                    PgError::Protocol(format!("column {} of {}: {e}", table.schema.columns[i].name, table.schema.id))
                })?;
                row.push(v);
            }
            rows.push(row);
        }
        Ok(rows)
    }
}

/// A column value's bytes as the server sent them (binary, or text for `::text` columns).
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

async fn read_chunk(client: &Client, tag: &str, oid: u32, q: ChunkQuery, table: PgTable) -> Result<Chunk, PgError> {
    let emit = |mark: &'static str| {
        let content = format!("{tag}:{mark}");
        async move {
            client
                .execute("SELECT pg_logical_emit_message(true, $1, $2)", &[&MESSAGE_PREFIX, &content])
                .await
                .ctx(format!("write the {mark} watermark of a table copy (needs EXECUTE on pg_logical_emit_message)"))
        }
    };
    emit("low").await?;
    sluice_core::crash_point("backfill.mid_chunk");
    let id = &table.schema.id;
    let read = async {
        // In this order: the writers of the table whose commit waits for a synchronous standby
        // (committed in the WAL, holding their locks, not visible yet), then the snapshot the
        // chunk is read in.
        let waiting: Vec<u32> = client
            .query(
                "SELECT t.transactionid::text FROM pg_locks r JOIN pg_locks t ON t.pid = r.pid \
                 AND t.locktype = 'transactionid' AND t.mode = 'ExclusiveLock' \
                 JOIN pg_stat_activity a ON a.pid = r.pid \
                 WHERE r.locktype = 'relation' AND r.relation = $1 AND r.mode = 'RowExclusiveLock' \
                 AND r.granted AND a.wait_event = 'SyncRep'",
                &[&oid],
            )
            .await
            .ctx(format!("list the writers of {id} waiting for a standby"))?
            .iter()
            .filter_map(|r| r.get::<_, String>(0).parse().ok())
            .collect();
        let replies = client
            .simple_query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT pg_current_snapshot()::text")
            .await
            .ctx(format!("begin the copy of {id}"))?;
        let text = replies.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0),
            _ => None,
        });
        let snapshot = Snapshot::parse(text.unwrap_or_default())?;
        let committed_unseen = waiting.into_iter().filter(|x| !snapshot.sees(*x)).collect();
        let rows = q.run(client, &table).await?;
        client.batch_execute("COMMIT").await.ctx(format!("end the copy of {id}"))?;
        Ok::<_, PgError>((snapshot, committed_unseen, rows))
    };
    let (snapshot, committed_unseen, rows) = match read.await {
        Ok(r) => r,
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e);
        }
    };
    emit("high").await?;
    let exhausted = rows.len() < q.limit;
    Ok(Chunk { table, rows, exhausted, snapshot, committed_unseen })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::Value;

    fn job(t: &TableId) -> CopyJob {
        let st = SourceTable {
            oid: 1,
            id: t.clone(),
            replica_identity: 'd',
            estimated_rows: 0,
            partitions: Vec::new(),
            partitioned: false,
            row_filter: None,
            columns: None,
        };
        CopyJob::new(&st, SinkSet::empty(), None)
    }

    fn window(id: u64, t: &TableId, open: bool) -> Window {
        Window { id, table: t.clone(), identity: "1".into(), open, high_seen: false, void: false, chunk: None }
    }

    fn insert(k: i64) -> Op {
        Op::Insert { after: vec![Value::Int(k), Value::Text("x".into())] }
    }

    fn keys(touched: &FxHashMap<Key, Touch>) -> Vec<i64> {
        let mut k: Vec<i64> = touched
            .keys()
            .map(|k| match k[0] {
                Value::Int(i) => i,
                _ => unreachable!(),
            })
            .collect();
        k.sort();
        k
    }

    #[test]
    fn a_chunk_yields_to_changes_after_its_low_mark_and_to_those_its_snapshot_does_not_see() {
        let t = TableId::new("public", "t");
        let other = TableId::new("public", "other");
        let mut b = Backfill::new("postgres://x", "slot", 100, vec![job(&t)]);
        let key_of = |r: &Row| vec![r[0].clone()];
        // Before the chunk's low mark: transaction 10 (the snapshot will see it) and 11 (it will
        // not: committed in the WAL but not yet visible).
        b.window = Some(window(1, &t, false));
        b.on_change(10, &t, &insert(1), key_of);
        b.on_commit(10);
        b.on_change(11, &t, &insert(2), key_of);
        b.on_change(11, &other, &insert(9), key_of);
        b.on_commit(11);
        // After the low mark: transaction 12, seen or not, wins over the chunk.
        b.window = Some(window(1, &t, true));
        b.on_change(12, &t, &insert(3), key_of);
        b.on_commit(12);
        let snapshot = Snapshot::parse("5:13:11").unwrap();
        let touched = b.touched(1, &t, &snapshot);
        assert_eq!(keys(&touched), vec![2, 3]);
        assert!(b.delivered.contains(&11) && !b.delivered.contains(&10), "what the snapshot sees is forgotten");

        // The next chunk's snapshot still does not see 11: its change still wins.
        b.window = Some(window(2, &t, true));
        let touched = b.touched(2, &t, &Snapshot::parse("11:14:11").unwrap());
        assert_eq!(keys(&touched), vec![2]);
        // Once a snapshot sees it, it is forgotten.
        let touched = b.touched(2, &t, &Snapshot::parse("14:14:").unwrap());
        assert!(touched.is_empty());
        assert!(b.log.is_empty() && b.delivered.is_empty());
    }

    #[test]
    fn patches_of_unchanged_toast_values_apply_in_stream_order() {
        let t = TableId::new("public", "t");
        let mut b = Backfill::new("postgres://x", "slot", 100, vec![job(&t)]);
        let key_of = |r: &Row| vec![r[0].clone()];
        b.window = Some(window(1, &t, true));
        let update =
            |v: &str| Op::Update { before: None, after: vec![Value::Int(1), Value::Text(v.into()), Value::Unchanged] };
        b.on_change(20, &t, &update("a"), key_of);
        b.on_change(21, &t, &update("b"), key_of);
        let touched = b.touched(1, &t, &Snapshot::parse("30:30:").unwrap());
        match touched.get(&vec![Value::Int(1)]) {
            Some(Touch::Patched(p)) => {
                assert_eq!(p.len(), 2);
                assert_eq!(p[1][1], Value::Text("b".into()));
            }
            _ => panic!("expected patches"),
        }
        // A whole row after patches replaces them.
        b.on_change(22, &t, &insert(1), key_of);
        let touched = b.touched(1, &t, &Snapshot::parse("30:30:").unwrap());
        assert!(matches!(touched.get(&vec![Value::Int(1)]), Some(Touch::Replaced)));
    }

    #[test]
    fn a_snapshot_sees_what_committed_before_it_and_nothing_else() {
        let s = Snapshot::parse("4294967390:4294967400:4294967395,4294967398").unwrap();
        // 2^32 + n: the 32-bit ids are n.
        assert!(s.sees(94));
        assert!(s.sees(97));
        assert!(!s.sees(99), "in progress when taken");
        assert!(!s.sees(102), "in progress when taken");
        assert!(!s.sees(104), "xmax: started after");
        assert!(!s.sees(2000), "started after");
        let empty = Snapshot::parse("750:750:").unwrap();
        assert!(empty.sees(749));
        assert!(!empty.sees(750));
        assert!(Snapshot::parse("garbage").is_err());
    }

    #[test]
    fn transaction_ids_compare_across_wraparound() {
        // xmax just past the 32-bit wrap: ids just below 2^32 came before it.
        let s = Snapshot::parse("4294967290:4294967300:").unwrap();
        assert_eq!(s.xmax, 4);
        assert!(s.sees(u32::MAX - 3));
        assert!(s.sees(3));
        assert!(!s.sees(4));
        assert!(!s.sees(10));
    }
}
