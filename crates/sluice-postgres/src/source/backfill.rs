//! Copying live tables while the stream runs: chunks made consistent with the stream by
//! watermarks in the WAL (the algorithm of Netflix's DBLog, also behind Debezium's incremental
//! snapshots).
//!
//! ```text
//!  copy client:  emit low ─▶ SELECT chunk (key > last, ORDER BY key LIMIT n) ─▶ emit high
//!  stream:       … low … changes to the table (keys noted) … high ─▶ chunk minus noted keys
//! ```
//!
//! A watermark is a transactional logical decoding message (`pg_logical_emit_message`) carrying
//! the slot name and chunk number, so it appears in this slot's stream at its commit. The SELECT
//! runs after the low watermark committed and before the high one, so a change committed before
//! the low mark is in the chunk and a change committed after the high mark is not. A change in
//! between may or may not be: for its key the streamed change wins and the chunk's row is dropped
//! (the streamed change carries the whole row). An update that did not resend unchanged TOASTed
//! values cannot replace the row, so instead its values are applied onto the chunk's row, which
//! is correct whichever of the two came first. The remaining rows go to the sinks right after
//! the high mark, as a copy step between transactions.
//!
//! Progress: after each chunk the last key is sent as [`CopyStep::Progress`]; a sink that made it
//! durable resumes after it. A truncate of the table restarts its copy from the first row.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use rustc_hash::FxHashMap;
use sluice_core::{Copy, CopyStep, Event, Key, Op, Row, SinkSet, TableId, Value};
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

/// One table to copy into some sinks.
#[derive(Debug, Clone)]
pub(crate) struct CopyJob {
    pub table: TableId,
    pub oid: u32,
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

struct Window {
    id: u64,
    table: TableId,
    /// The low watermark has been seen in the stream.
    open: bool,
    high_seen: bool,
    /// The table was truncated inside the window: the chunk is void.
    void: bool,
    touched: FxHashMap<Key, Touch>,
    chunk: Option<Result<Chunk, PgError>>,
}

/// Rows read for one chunk, in the shape they were read with.
pub(crate) struct Chunk {
    table: PgTable,
    rows: Vec<Row>,
    /// Fewer rows than asked for: the table has no more.
    exhausted: bool,
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
        }
    }

    /// Queues a copy.
    pub fn push(&mut self, job: CopyJob) {
        info!(table = %job.table, sinks = ?job.to, "table will be copied while streaming");
        self.jobs.push_back(job);
    }

    /// Forgets copies of tables no longer selected.
    pub fn retain(&mut self, selected: &[TableId]) {
        self.jobs.retain(|j| selected.contains(&j.table));
        if self.window.as_ref().is_some_and(|w| !selected.contains(&w.table)) {
            self.window = None;
        }
    }

    /// Whether some copy of `table` is queued or running.
    pub fn copying(&self, table: &TableId) -> bool {
        self.jobs.iter().any(|j| j.table == *table)
    }

    /// The table the next chunk should be read from, when no chunk is in progress.
    pub fn next_table(&self) -> Option<(&TableId, u32)> {
        if self.window.is_some() {
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
    pub async fn start(&mut self, table: PgTable) -> Result<(), PgError> {
        let Some(job) = self.jobs.front().cloned() else { return Ok(()) };
        self.next_id += 1;
        let id = self.next_id;
        let client = self.client().await?;
        let query = ChunkQuery::new(&client, &job, &table, self.chunk_rows).await?;
        self.window = Some(Window {
            id,
            table: job.table.clone(),
            open: false,
            high_seen: false,
            void: false,
            touched: FxHashMap::default(),
            chunk: None,
        });
        let tx = self.results_tx.clone();
        let tag = format!("{}:{id}", self.slot);
        tokio::spawn(async move {
            let r = read_chunk(&client, &tag, query, table).await;
            let _ = tx.send((id, r));
        });
        debug!(chunk = id, "copy chunk started");
        Ok(())
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
        let Some(w) = self.window.as_mut() else { return };
        let text = String::from_utf8_lossy(content);
        let Some(rest) = text.strip_prefix(&format!("{}:{}:", self.slot, w.id)) else { return };
        match rest {
            "low" => w.open = true,
            "high" if w.open => w.high_seen = true,
            _ => {}
        }
    }

    /// A streamed change of `table` with key columns `key_of`.
    pub fn on_change(&mut self, table: &TableId, op: &Op, key_of: impl Fn(&Row) -> Key) {
        if let Some(w) = self.window.as_mut().filter(|w| w.open && !w.high_seen && w.table == *table) {
            match op {
                Op::Insert { after } => {
                    w.touched.insert(key_of(after), Touch::Replaced);
                }
                Op::Delete { before } => {
                    w.touched.insert(key_of(before), Touch::Replaced);
                }
                Op::Update { before, after } => {
                    let key = key_of(after);
                    if let Some(old) = before.as_ref().map(&key_of).filter(|k| *k != key) {
                        w.touched.insert(old, Touch::Replaced);
                    }
                    if after.contains(&Value::Unchanged) {
                        match w.touched.entry(key).or_insert_with(|| Touch::Patched(Vec::new())) {
                            Touch::Patched(p) => p.push(after.clone()),
                            Touch::Replaced => {}
                        }
                    } else {
                        w.touched.insert(key, Touch::Replaced);
                    }
                }
                Op::Truncate => w.void = true,
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
    /// steps (begin, rows, progress, end).
    pub async fn at_boundary(&mut self) -> Result<Vec<Event>, PgError> {
        if !self.window.as_ref().is_some_and(|w| w.high_seen) {
            return Ok(Vec::new());
        }
        let Some(mut w) = self.window.take() else { return Ok(Vec::new()) };
        let chunk = match w.chunk.take() {
            Some(c) => c,
            // The task sends its result before it writes the high mark, so it is queued.
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
        let Some(job) = self.jobs.front_mut() else { return Ok(Vec::new()) };
        if w.void {
            debug!(table = %job.table, "table truncated during a copy chunk; reading it again");
            return Ok(Vec::new());
        }
        let schema = chunk.table.schema.clone();
        let copy = |step| Event::Copy(Copy::new(job.to, schema.clone(), step));
        let mut out = Vec::new();
        if !job.started {
            job.started = true;
            out.push(copy(CopyStep::Begin { reset: false, estimated_rows: job.estimated_rows }));
        }
        let last = chunk.rows.last().map(|r| schema.key_of(r));
        let mut rows = Vec::with_capacity(chunk.rows.len());
        for mut row in chunk.rows {
            match w.touched.remove(&schema.key_of(&row)) {
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
        }
        sluice_core::crash_point("backfill.after_chunk");
        Ok(out)
    }

    /// The current row with key `key`, read now (for an update that moved a row not yet copied
    /// without resending some of its values).
    pub async fn fetch(&mut self, table: &PgTable, key: &Key) -> Result<Option<Row>, PgError> {
        let client = self.client().await?;
        let job = CopyJob {
            table: table.schema.id.clone(),
            oid: 0,
            to: SinkSet::empty(),
            after: None,
            estimated_rows: None,
            started: false,
            failures: 0,
            rows: 0,
        };
        let q = ChunkQuery::by_key(&client, &job, table, key).await?;
        let rows = q.run(&client, table).await?;
        Ok(rows.into_iter().next())
    }
}

/// A chunk's SELECT with its bound key values.
struct ChunkQuery {
    sql: String,
    params: Vec<Option<String>>,
    limit: usize,
}

impl ChunkQuery {
    async fn new(client: &Client, job: &CopyJob, table: &PgTable, limit: usize) -> Result<ChunkQuery, PgError> {
        Self::build(client, job, table, job.after.as_ref(), ">", Some(limit)).await
    }

    async fn by_key(client: &Client, job: &CopyJob, table: &PgTable, key: &Key) -> Result<ChunkQuery, PgError> {
        Self::build(client, job, table, Some(key), "=", None).await
    }

    async fn build(
        client: &Client,
        job: &CopyJob,
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
        let mut sql = format!("SELECT {select} FROM ONLY {}", qualified(&job.table));
        let mut params = Vec::new();
        if let Some(key) = key {
            // Bound as text and cast to each key column's own type, so the comparison is the
            // server's, in the same order as ORDER BY.
            let mut casts = Vec::with_capacity(keys.len());
            for (i, (name, v)) in keys.iter().zip(key).enumerate() {
                let t: String = client
                    .query_one(
                        "SELECT format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2",
                        &[&qualified(&job.table), name],
                    )
                    .await
                    .ctx(format!("read the type of key column {name} of {}", job.table))?
                    .get(0);
                casts.push(format!("${}::text::{t}", i + 1));
                let ty = schema.column_index(name).and_then(|j| table.types.get(j)).unwrap_or(&PgType::Other);
                params.push(match v {
                    Value::Null => None,
                    v => {
                        let mut buf = bytes::BytesMut::new();
                        codec::encode_text(ty, v, &mut buf)
                            .map_err(|e| PgError::Protocol(format!("key of {}: {e}", job.table)))?;
                        Some(String::from_utf8_lossy(&buf).into_owned())
                    }
                });
            }
            sql.push_str(&format!(" WHERE ({key_list}) {cmp} ({})", casts.join(", ")));
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

async fn read_chunk(client: &Client, tag: &str, q: ChunkQuery, table: PgTable) -> Result<Chunk, PgError> {
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
    let rows = q.run(client, &table).await?;
    emit("high").await?;
    let exhausted = rows.len() < q.limit;
    Ok(Chunk { table, rows, exhausted })
}
