//! The binlog stream: events → `Begin`, `Change`s, `Commit`, `Heartbeat`.
//!
//! ```text
//!  binlog conn ── COM_REGISTER_SLAVE, COM_BINLOG_DUMP (file/pos, MariaDB @slave_connect_state,
//!                 or COM_BINLOG_DUMP_GTID) ──▶ events (checksums checked by mysql_common)
//!    ROTATE ──▶ file          GTID / BEGIN ──▶ a transaction starts (Begin sent lazily)
//!    TABLE_MAP ──▶ table id → schema (cached per shape; a new shape after DDL gets a new version)
//!    ROWS ──▶ Change per row    XID / COMMIT ──▶ Commit, or Heartbeat if nothing was selected
//!    QUERY (DDL) ──▶ selection updates (CREATE/DROP TABLE), heartbeat
//!    HEARTBEAT ──▶ Heartbeat at the server's position while idle
//! ```
//! Positions: file and the end offset of the last event of a transaction; with GTIDs, also the
//! executed set, which a resume prefers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest};
use sluice_core::{
    BinlogPosition, Change, Copy, CopyMode, CopyStep, Event, Gtid, GtidSet, Op, Position, SchemaRef, SinkSet, TableId,
    TxnMeta, Value,
};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info};

use super::backfill::{Backfill, CopyJob};
use super::{describe, send};
use crate::binlog::{kind, mysql_gtid, MariaGtid, Query, Reader, Rotate, Rows, RowsKind, TableMap};
use crate::catalog::{self, ServerInfo};
use crate::config::MySqlSourceConfig;
use crate::error::{Ctx, MyError};
use crate::rows::{read_image, ColumnPlan, ZeroDates};

/// Least time between heartbeats sent for transactions on unselected tables.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(200);

/// A table as the current table map describes it.
struct Mapped {
    map: TableMap,
    schema: SchemaRef,
    plans: Vec<ColumnPlan>,
}

struct Txn {
    meta: TxnMeta,
    begun: bool,
}

/// Reads the binlog from a position and sends its transactions.
pub(super) struct Streamer {
    cfg: MySqlSourceConfig,
    url: String,
    info: ServerInfo,
    server_id: u32,
    zero: ZeroDates,
    catalog: mysql_async::Conn,
    selected: Vec<TableId>,
    live: SinkSet,
    /// Copies of live tables
    backfill: Backfill,
    /// Current table id → table (None: not selected)
    ids: HashMap<u64, Option<Arc<Mapped>>>,
    /// Last shape per table, to keep the schema version while the shape is the same
    shapes: HashMap<TableId, Arc<Mapped>>,
    file: String,
    pos: u64,
    gtids: Option<GtidSet>,
    txn_start: Option<(u64, Option<Gtid>, u32)>,
    txn: Option<Txn>,
    standalone: bool,
    /// Whether the server checksums events (`binlog_checksum`), and whether a format
    /// description has told the client library so: events before it keep their checksum
    checksums: bool,
    seen_format: bool,
    last_heartbeat: Instant,
    /// The open binlog stream and the first event read from it
    stream: Option<BinlogStream>,
    first: Option<mysql_async::binlog::events::Event>,
    events: mpsc::Sender<Event>,
    confirmed: watch::Receiver<Option<Position>>,
    stop: watch::Receiver<bool>,
}

impl Streamer {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        cfg: MySqlSourceConfig,
        url: String,
        info: ServerInfo,
        server_id: u32,
        catalog: mysql_async::Conn,
        selected: Vec<TableId>,
        live: SinkSet,
        jobs: Vec<CopyJob>,
        gate: Option<(String, u64)>,
        start: BinlogPosition,
        events: mpsc::Sender<Event>,
        confirmed: watch::Receiver<Option<Position>>,
        stop: watch::Receiver<bool>,
    ) -> Streamer {
        let zero = cfg.zero_dates();
        let backfill = Backfill::new(&url, info.mariadb, cfg.chunk_rows, zero, jobs, gate);
        Streamer {
            backfill,
            cfg,
            url,
            info,
            server_id,
            zero,
            catalog,
            selected,
            live,
            ids: HashMap::new(),
            shapes: HashMap::new(),
            file: start.file,
            pos: start.pos,
            gtids: start.gtids,
            txn_start: None,
            txn: None,
            standalone: false,
            checksums: true,
            seen_format: false,
            last_heartbeat: Instant::now(),
            stream: None,
            first: None,
            events,
            confirmed,
            stop,
        }
    }

    fn position(&self) -> BinlogPosition {
        BinlogPosition { file: self.file.clone(), pos: self.pos, gtids: self.gtids.clone() }
    }

    /// Opens the binlog connection at the current position.
    async fn open(&mut self) -> Result<BinlogStream, MyError> {
        let mut conn = catalog::connect(&self.url, "source (binlog)").await?;
        let checksum: Option<String> = conn.query_first("SELECT @@GLOBAL.binlog_checksum").await.unwrap_or(None);
        self.checksums = checksum.is_none_or(|c| !c.eq_ignore_ascii_case("NONE"));
        self.seen_format = false;
        let period_ns = self.cfg.heartbeat_ms.saturating_mul(1_000_000);
        conn.query_drop(format!("SET @master_heartbeat_period = {period_ns}")).await.ctx("set the heartbeat period")?;
        let mut req = BinlogStreamRequest::new(self.server_id);
        let by_gtid = self.gtids.as_ref().filter(|g| !g.to_string().is_empty());
        let file = self.file.clone();
        let sids: Vec<mysql_async::Sid<'static>>;
        match (self.info.mariadb, by_gtid) {
            (true, by_gtid) => {
                // Capability 4: send MariaDB's own GTID events rather than rewriting them.
                conn.query_drop("SET @mariadb_slave_capability = 4").await.ctx("declare replica capabilities")?;
                if let Some(g) = by_gtid {
                    conn.exec_drop(
                        "SET @slave_connect_state = ?, @slave_gtid_strict_mode = 0, @slave_gtid_ignore_duplicates = 0",
                        (g.to_string(),),
                    )
                    .await
                    .ctx("set the GTID position to resume from")?;
                }
                req = req.with_filename(file.as_bytes()).with_pos(self.pos);
                let stream = conn.get_binlog_stream(req).await.ctx("start reading the binlog")?;
                return Ok(stream);
            }
            (false, Some(g)) => {
                sids = g
                    .to_string()
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse::<mysql_async::Sid<'static>>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| MyError::Protocol(format!("GTID set {g}: {e}")))?;
                req = req.with_gtid().with_gtid_set(sids.iter().cloned());
            }
            (false, None) => req = req.with_filename(file.as_bytes()).with_pos(self.pos),
        }
        conn.get_binlog_stream(req).await.ctx("start reading the binlog")
    }

    /// Opens the binlog at the start position and reads its first event, so a binlog that is
    /// gone shows as [`MyError::Purged`] before anything is sent.
    pub(super) async fn connect(&mut self) -> Result<(), MyError> {
        let mut stream = self.open().await.map_err(|e| purged(e, &self.position()))?;
        match stream.next().await {
            Some(Ok(ev)) => self.first = Some(ev),
            Some(Err(e)) => {
                return Err(purged(MyError::Client { what: "read the binlog".into(), source: e }, &self.position()))
            }
            None => return Err(MyError::Retry("the server ended the binlog stream at once".into())),
        }
        self.stream = Some(stream);
        info!(from = %describe(&self.position()), server_id = self.server_id, "streaming the binlog");
        Ok(())
    }

    /// The channels, for a source that gives up this streamer before running it.
    pub(super) fn into_channels(
        self,
    ) -> (mpsc::Sender<Event>, watch::Receiver<Option<Position>>, watch::Receiver<bool>, mysql_async::Conn) {
        (self.events, self.confirmed, self.stop, self.catalog)
    }

    /// Streams until told to stop (after [`Streamer::connect`]); then waits for the runtime
    /// to close the confirmations.
    pub(super) async fn run(mut self) -> Result<(), MyError> {
        let mut stream = match self.stream.take() {
            Some(s) => s,
            None => return Err(MyError::Protocol("the binlog stream was not opened".into())),
        };
        if let Some(ev) = self.first.take() {
            self.on_event(&ev).await?;
        }
        self.boundary().await?;
        let mut stop = self.stop.clone();
        loop {
            let next = tokio::select! {
                biased;
                _ = stop.changed() => None,
                Some(r) = self.backfill.result() => {
                    self.backfill.on_result(r)?;
                    self.boundary().await?;
                    continue;
                }
                ev = stream.next() => Some(ev),
            };
            if *self.stop.borrow() {
                break;
            }
            let Some(ev) = next else { continue };
            let ev = match ev {
                Some(Ok(ev)) => ev,
                Some(Err(e)) => {
                    return Err(purged(MyError::Client { what: "read the binlog".into(), source: e }, &self.position()))
                }
                None => return Err(MyError::Retry("the server ended the binlog stream".into())),
            };
            self.on_event(&ev).await?;
        }
        // The binlog needs no confirmation. Closing the event channel tells the runtime the
        // source sent its last event; it then drains the sinks and closes the confirmations.
        // Closing the connection (rather than dropping it) ends the server's dump thread now.
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.close()).await;
        let Streamer { events, mut confirmed, .. } = self;
        drop(events);
        while confirmed.changed().await.is_ok() {}
        Ok(())
    }

    async fn on_event(&mut self, ev: &mysql_async::binlog::events::Event) -> Result<(), MyError> {
        let h = ev.header();
        let t = h.event_type_raw();
        let data = ev.data();
        let end = h.log_pos() as u64;
        let proto = |e: crate::binlog::BinlogError| MyError::Protocol(format!("{}: {e}", describe(&self.position())));
        match t {
            kind::ROTATE => {
                // The first (fake) rotate comes before the format description, so its checksum
                // is still on it.
                let data = match self.checksums && !self.seen_format {
                    true => &data[..data.len().saturating_sub(4).max(8.min(data.len()))],
                    false => data,
                };
                let r = Rotate::parse(data).map_err(proto)?;
                self.file = r.file;
                self.pos = r.pos;
                // A new file: table ids are assigned afresh.
                self.ids.clear();
                return Ok(());
            }
            kind::FORMAT_DESCRIPTION
            | kind::PREVIOUS_GTIDS
            | kind::MARIADB_GTID_LIST
            | kind::MARIADB_BINLOG_CHECKPOINT
            | kind::MARIADB_ANNOTATE_ROWS
            | kind::STOP => {}
            kind::HEARTBEAT => {
                // The body names the current file, but the file only changes by a ROTATE event,
                // which always comes first; the header's offset is where the server is.
                debug!(end, file = %self.file, pos = self.pos, "heartbeat from the server");
                if self.txn_start.is_none() && self.txn.is_none() {
                    if end > 0 {
                        self.pos = self.pos.max(end);
                    }
                    self.heartbeat(true).await?;
                    self.boundary().await?;
                }
                return Ok(());
            }
            kind::GTID => {
                let g = mysql_gtid(data).map_err(proto)?;
                self.txn_start = Some((end.saturating_sub(h.event_size() as u64), Some(g), h.timestamp()));
            }
            kind::ANONYMOUS_GTID => {
                self.txn_start = Some((end.saturating_sub(h.event_size() as u64), None, h.timestamp()));
            }
            kind::MARIADB_GTID => {
                let g = MariaGtid::parse(data, h.server_id()).map_err(proto)?;
                self.standalone = g.standalone;
                self.txn_start = Some((end.saturating_sub(h.event_size() as u64), Some(g.gtid), h.timestamp()));
            }
            kind::QUERY => {
                let q = Query::parse(data).map_err(proto)?;
                let sql = q.sql.trim();
                if sql.eq_ignore_ascii_case("BEGIN") || sql.eq_ignore_ascii_case("XA START") {
                    if self.txn_start.is_none() {
                        self.txn_start = Some((end.saturating_sub(h.event_size() as u64), None, h.timestamp()));
                    }
                    self.standalone = false;
                } else if sql.eq_ignore_ascii_case("COMMIT") || sql.eq_ignore_ascii_case("ROLLBACK") {
                    self.pos = end;
                    self.finish().await?;
                    return Ok(());
                } else {
                    // DDL (and other statements logged as statements): a group of its own.
                    let ddl = self.on_ddl(&q).await?;
                    if ddl || self.txn.is_none() {
                        self.pos = end;
                        self.finish().await?;
                        return Ok(());
                    }
                }
            }
            kind::TABLE_MAP => {
                let map = TableMap::parse(data).map_err(proto)?;
                let mapped = self.mapped(map).await?;
                if let Some(m) = &mapped {
                    self.ids.insert(m.map.table_id, mapped.clone());
                }
                return Ok(());
            }
            kind::WRITE_ROWS_V1
            | kind::UPDATE_ROWS_V1
            | kind::DELETE_ROWS_V1
            | kind::WRITE_ROWS
            | kind::UPDATE_ROWS
            | kind::DELETE_ROWS => {
                let rows = Rows::parse(t, data).map_err(proto)?;
                if let Some(Some(m)) = self.ids.get(&rows.table_id).cloned() {
                    self.on_rows(&m, &rows).await?;
                }
            }
            kind::XID => {
                self.pos = end;
                self.finish().await?;
                return Ok(());
            }
            kind::PARTIAL_UPDATE_ROWS => {
                return Err(MyError::Setup(
                    "the source logs partial JSON updates; set binlog_row_value_options = '' on the server so row \
                     events carry whole values"
                        .into(),
                ))
            }
            t if (kind::MARIADB_COMPRESSED_FIRST + 1..=kind::MARIADB_COMPRESSED_LAST).contains(&t) => {
                return Err(MyError::Setup(
                    "the source writes compressed binlog events (log_bin_compress=ON), which Sluice does not read; \
                     set log_bin_compress = OFF"
                        .into(),
                ))
            }
            _ => {}
        }
        Ok(())
    }

    /// The schema for a table map of a selected table (cached while the shape is unchanged).
    async fn mapped(&mut self, map: TableMap) -> Result<Option<Arc<Mapped>>, MyError> {
        let id = TableId::new(&map.schema, &map.table);
        if !self.selected.contains(&id) {
            self.ids.insert(map.table_id, None);
            return Ok(None);
        }
        if let Some(m) = self.shapes.get(&id) {
            if m.map.columns == map.columns && m.map.primary_key == map.primary_key {
                if m.map.table_id == map.table_id {
                    return Ok(Some(m.clone()));
                }
                let m = Arc::new(Mapped { map, schema: m.schema.clone(), plans: m.plans.clone() });
                self.shapes.insert(id, m.clone());
                return Ok(Some(m));
            }
        }
        let info = catalog::table_columns(&mut self.catalog, &id).await?;
        let (schema, plans) =
            catalog::schema_from_map(&map, &info, &self.info.collations, self.zero == ZeroDates::Null)?;
        if self.shapes.contains_key(&id) {
            info!(table = %id, "table changed shape");
        }
        let m = Arc::new(Mapped { map, schema: Arc::new(schema), plans });
        self.shapes.insert(id, m.clone());
        Ok(Some(m))
    }

    async fn begin(&mut self) -> Result<(), MyError> {
        if self.txn.as_ref().is_some_and(|t| t.begun) {
            return Ok(());
        }
        let (start, gtid, ts) = self.txn_start.clone().unwrap_or((self.pos, None, 0));
        let gtids = match (&gtid, &self.gtids) {
            (Some(g), Some(_)) => {
                let mut set = match g {
                    Gtid::MySql { .. } => GtidSet::MySql(Default::default()),
                    Gtid::MariaDb { .. } => GtidSet::MariaDb(Default::default()),
                };
                set.insert(g);
                Some(set)
            }
            _ => None,
        };
        let xid = match &gtid {
            Some(Gtid::MySql { number, .. }) => *number,
            Some(Gtid::MariaDb { seq, .. }) => *seq,
            None => 0,
        };
        let meta = TxnMeta {
            xid,
            commit_ts_micros: ts as i64 * 1_000_000,
            position: Position::MySql(BinlogPosition { file: self.file.clone(), pos: start, gtids }),
        };
        send(&self.events, Event::Begin(meta.clone())).await?;
        self.txn = Some(Txn { meta, begun: true });
        Ok(())
    }

    async fn on_rows(&mut self, m: &Mapped, rows: &Rows<'_>) -> Result<(), MyError> {
        if rows.columns != m.plans.len() {
            return Err(MyError::Protocol(format!(
                "a rows event of {} has {} columns, its table map {}",
                m.schema.id,
                rows.columns,
                m.plans.len()
            )));
        }
        self.begin().await?;
        // One copy of the event's rows; text and bytes values then point into it.
        let data = bytes::Bytes::copy_from_slice(rows.data);
        let mut r = Reader::shared(&data);
        let decode =
            |e: String| MyError::Decode(format!("{} ({}): {e}", m.schema.id, describe_at(&self.file, self.pos)));
        while !r.rest().is_empty() {
            let op = match rows.kind {
                RowsKind::Write => Op::Insert {
                    after: read_image(&mut r, &m.plans, rows.present, &Value::Null, self.zero).map_err(decode)?,
                },
                RowsKind::Delete => Op::Delete {
                    before: read_image(&mut r, &m.plans, rows.present, &Value::Null, self.zero).map_err(decode)?,
                },
                RowsKind::Update => {
                    let before = read_image(&mut r, &m.plans, rows.present, &Value::Null, self.zero).map_err(decode)?;
                    let after = read_image(&mut r, &m.plans, rows.present_after, &Value::Unchanged, self.zero)
                        .map_err(decode)?;
                    Op::Update { before: Some(before), after }
                }
            };
            if self.backfill.watching(&m.schema.id) {
                let at = self.txn_start.as_ref().map_or(self.pos, |t| t.0);
                self.backfill.on_change(&m.schema.id, (&self.file, at), &op, |r| m.schema.key_of(r));
            }
            send(&self.events, Event::Change(Change { table: m.schema.clone(), op })).await?;
        }
        Ok(())
    }

    /// Between transactions: sends the open copy chunk once the stream has reached it, and
    /// starts the next.
    async fn boundary(&mut self) -> Result<(), MyError> {
        if self.txn_start.is_some() || self.txn.is_some() {
            return Ok(());
        }
        for ev in self.backfill.at_boundary((&self.file, self.pos))? {
            send(&self.events, ev).await?;
        }
        if let Some(begin) = self.backfill.start((&self.file, self.pos)).await? {
            send(&self.events, begin).await?;
        }
        Ok(())
    }

    /// The end of an event group: a commit if it had selected changes, else a heartbeat.
    async fn finish(&mut self) -> Result<(), MyError> {
        if let (Some((_, Some(g), _)), Some(set)) = (&self.txn_start, &mut self.gtids) {
            set.insert(g);
        }
        self.txn_start = None;
        self.standalone = false;
        match self.txn.take() {
            Some(t) if t.begun => {
                let position = Position::MySql(self.position());
                send(&self.events, Event::Commit { meta: t.meta, position }).await?;
                self.last_heartbeat = Instant::now();
            }
            _ => self.heartbeat(false).await?,
        }
        self.boundary().await
    }

    async fn heartbeat(&mut self, force: bool) -> Result<(), MyError> {
        if force || self.last_heartbeat.elapsed() >= HEARTBEAT_EVERY {
            send(&self.events, Event::Heartbeat { position: Position::MySql(self.position()) }).await?;
            self.last_heartbeat = Instant::now();
        }
        Ok(())
    }

    /// A statement logged as text; returns whether it was DDL on tables (a group of its own).
    /// A table created or dropped changes the selection: a new table is empty at this point of
    /// the stream, so its copy is empty and every row it gets arrives as a change after it. A
    /// table renamed into the selection is copied while streaming. Column changes need nothing
    /// here (the next table map carries the new shape) except voiding an open copy chunk. A
    /// TRUNCATE becomes a truncate change.
    async fn on_ddl(&mut self, q: &Query) -> Result<bool, MyError> {
        let Some((verb, names)) = ddl_tables(&q.sql, &q.schema) else { return Ok(false) };
        debug!(verb, tables = ?names, "ddl");
        let filter = self.cfg.filter();
        let mut changed = false;
        let mut created = Vec::new();
        let mut renamed = Vec::new();
        match verb {
            "create" => {
                for id in names {
                    if filter.selects(&id.schema, &id.name) && !self.selected.contains(&id) {
                        self.selected.push(id.clone());
                        created.push(id);
                        changed = true;
                    }
                }
            }
            "drop" => {
                for id in names {
                    if let Some(i) = self.selected.iter().position(|t| *t == id) {
                        self.selected.remove(i);
                        self.shapes.remove(&id);
                        changed = true;
                    }
                }
            }
            "rename" => {
                // (old, new) pairs
                for pair in names.chunks(2) {
                    if let [old, new] = pair {
                        if let Some(i) = self.selected.iter().position(|t| t == old) {
                            self.selected.remove(i);
                            self.shapes.remove(old);
                            changed = true;
                        }
                        self.shapes.remove(new);
                        if filter.selects(&new.schema, &new.name) {
                            if !self.selected.contains(new) {
                                self.selected.push(new.clone());
                            }
                            renamed.push(new.clone());
                            changed = true;
                        }
                    }
                }
            }
            "alter" => {
                for id in &names {
                    self.backfill.on_ddl(id);
                }
            }
            "truncate" => {
                for id in names.iter().filter(|id| self.selected.contains(id)).cloned().collect::<Vec<_>>().iter() {
                    self.backfill.on_truncate(id);
                    let schema = match self.shapes.get(id) {
                        Some(m) => m.schema.clone(),
                        None => {
                            let cols = catalog::table_columns(&mut self.catalog, id).await?;
                            Arc::new(catalog::schema_from_info(id, &cols, self.zero == ZeroDates::Null).0)
                        }
                    };
                    self.begin().await?;
                    send(&self.events, Event::Change(Change { table: schema, op: Op::Truncate })).await?;
                }
            }
            _ => {}
        }
        if changed {
            self.selected.sort();
            self.selected.dedup();
            self.backfill.retain(&self.selected);
            send(&self.events, Event::Tables { selected: self.selected.clone() }).await?;
            for id in created {
                let cols = catalog::table_columns(&mut self.catalog, &id).await?;
                if cols.is_empty() {
                    continue;
                }
                let (schema, _) = catalog::schema_from_info(&id, &cols, self.zero == ZeroDates::Null);
                info!(table = %id, "table created; streaming its changes");
                let schema = Arc::new(schema);
                let begin = CopyStep::Begin { mode: CopyMode::Replace, source_id: None, estimated_rows: Some(0) };
                send(&self.events, Event::Copy(Copy::new(self.live, schema.clone(), begin))).await?;
                send(&self.events, Event::Copy(Copy::new(self.live, schema, CopyStep::End))).await?;
            }
            for id in renamed {
                if self.cfg.snapshot == crate::config::SnapshotMode::Never {
                    info!(table = %id, "table renamed into the selection; its rows are not copied (snapshot = \"never\")");
                    continue;
                }
                // Its rows exist already: copied while streaming, from the first row.
                self.backfill.push(CopyJob::new(id, self.live, None, None));
            }
        }
        Ok(true)
    }
}

fn describe_at(file: &str, pos: u64) -> String {
    format!("binlog {file}:{pos}")
}

/// An error at the start of a stream that means the binlog it needs is gone.
fn purged(e: MyError, at: &BinlogPosition) -> MyError {
    if e.server_code() == Some(1236) {
        return MyError::Purged(format!(
            "the binlog the sinks need to resume ({}) is no longer on the source: it was purged \
             (binlog_expire_logs_seconds / expire_logs_days, or PURGE BINARY LOGS). Changes since then are lost. Set \
             source.snapshot = \"when_needed\" to copy every table again from a new snapshot, and keep binlogs longer. \
             Server said: {e}",
            describe(at)
        ));
    }
    e
}

/// The tables a DDL statement creates, drops or renames: `(verb, tables)`; renames list
/// (old, new) pairs. Recognises `CREATE [TEMPORARY] TABLE [IF NOT EXISTS] t`, `DROP TABLE [IF
/// EXISTS] a, b`, `RENAME TABLE a TO b, c TO d`, `ALTER TABLE a RENAME [TO] b`, any other
/// `ALTER TABLE a` (verb `alter`) and `TRUNCATE [TABLE] a`.
pub(crate) fn ddl_tables(sql: &str, default_schema: &str) -> Option<(&'static str, Vec<TableId>)> {
    let tokens = tokenize(sql);
    let up: Vec<String> = tokens.iter().map(|t| t.to_ascii_uppercase()).collect();
    let kw = |i: usize, w: &str| up.get(i).is_some_and(|t| t == w);
    let mut i;
    let name = |i: &mut usize| -> Option<TableId> {
        let first = unquote(tokens.get(*i)?);
        *i += 1;
        if tokens.get(*i).is_some_and(|t| t == ".") {
            let second = unquote(tokens.get(*i + 1)?);
            *i += 2;
            Some(TableId::new(first, second))
        } else {
            Some(TableId::new(default_schema, first))
        }
    };
    if kw(0, "CREATE") {
        i = 1;
        if kw(i, "OR") && kw(i + 1, "REPLACE") {
            i += 2;
        }
        if kw(i, "TEMPORARY") {
            return None;
        }
        if kw(i, "UNIQUE") || kw(i, "FULLTEXT") || kw(i, "SPATIAL") || kw(i, "INDEX") {
            // CREATE [UNIQUE] INDEX name ON t: a unique index may now stand in for the key.
            let on = up.iter().position(|t| t == "ON")?;
            i = on + 1;
            return Some(("alter", vec![name(&mut i)?]));
        }
        if !kw(i, "TABLE") {
            return None;
        }
        i += 1;
        if kw(i, "IF") && kw(i + 1, "NOT") && kw(i + 2, "EXISTS") {
            i += 3;
        }
        return Some(("create", vec![name(&mut i)?]));
    }
    if kw(0, "DROP") {
        i = 1;
        if kw(i, "TEMPORARY") {
            return None;
        }
        if kw(i, "INDEX") {
            let on = up.iter().position(|t| t == "ON")?;
            i = on + 1;
            return Some(("alter", vec![name(&mut i)?]));
        }
        if !kw(i, "TABLE") {
            return None;
        }
        i += 1;
        if kw(i, "IF") && kw(i + 1, "EXISTS") {
            i += 2;
        }
        let mut out = vec![name(&mut i)?];
        while tokens.get(i).is_some_and(|t| t == ",") {
            i += 1;
            out.push(name(&mut i)?);
        }
        return Some(("drop", out));
    }
    if kw(0, "RENAME") && kw(1, "TABLE") {
        i = 2;
        let mut out = Vec::new();
        loop {
            out.push(name(&mut i)?);
            if !kw(i, "TO") {
                return None;
            }
            i += 1;
            out.push(name(&mut i)?);
            if tokens.get(i).is_some_and(|t| t == ",") {
                i += 1;
            } else {
                break;
            }
        }
        return Some(("rename", out));
    }
    if kw(0, "ALTER") && (kw(1, "TABLE") || kw(1, "ONLINE") && kw(2, "TABLE") || kw(1, "IGNORE") && kw(2, "TABLE")) {
        i = if kw(1, "TABLE") { 2 } else { 3 };
        if kw(i, "IF") && kw(i + 1, "EXISTS") {
            i += 2;
        }
        let old = name(&mut i)?;
        if kw(i, "RENAME") && !kw(i + 1, "COLUMN") && !kw(i + 1, "INDEX") && !kw(i + 1, "KEY") {
            i += 1;
            if kw(i, "TO") || kw(i, "AS") {
                i += 1;
            }
            let new = name(&mut i)?;
            return Some(("rename", vec![old, new]));
        }
        return Some(("alter", vec![old]));
    }
    if kw(0, "TRUNCATE") {
        i = if kw(1, "TABLE") { 2 } else { 1 };
        return Some(("truncate", vec![name(&mut i)?]));
    }
    None
}

fn unquote(t: &str) -> String {
    if t.len() >= 2 && t.starts_with('`') && t.ends_with('`') {
        t[1..t.len() - 1].replace("``", "`")
    } else {
        t.to_string()
    }
}

/// Splits SQL into words, backquoted names and single punctuation, skipping comments.
fn tokenize(sql: &str) -> Vec<String> {
    let b: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() && out.len() < 64 {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && b.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == '*' && b[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '-' && b.get(i + 1) == Some(&'-') || c == '#' {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '`' {
            let start = i;
            i += 1;
            while i < b.len() {
                if b[i] == '`' && b.get(i + 1) == Some(&'`') {
                    i += 2;
                } else if b[i] == '`' {
                    i += 1;
                    break;
                } else {
                    i += 1;
                }
            }
            out.push(b[start..i.min(b.len())].iter().collect());
        } else if c.is_alphanumeric() || c == '_' || c == '$' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_' || b[i] == '$') {
                i += 1;
            }
            out.push(b[start..i].iter().collect());
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_statements_name_their_tables() {
        let t = |s: &str, n: &str| TableId::new(s, n);
        assert_eq!(
            ddl_tables("CREATE TABLE IF NOT EXISTS `a``b` (id int)", "app"),
            Some(("create", vec![t("app", "a`b")]))
        );
        assert_eq!(
            ddl_tables("/* x */ create table other.t2 like t1", "app"),
            Some(("create", vec![t("other", "t2")]))
        );
        assert_eq!(
            ddl_tables("DROP TABLE IF EXISTS `t1`,app2.t2 /* generated by server */", "app"),
            Some(("drop", vec![t("app", "t1"), t("app2", "t2")]))
        );
        assert_eq!(
            ddl_tables("RENAME TABLE a TO b, x.c TO x.d", "app"),
            Some(("rename", vec![t("app", "a"), t("app", "b"), t("x", "c"), t("x", "d")]))
        );
        assert_eq!(ddl_tables("ALTER TABLE a RENAME TO b", "s"), Some(("rename", vec![t("s", "a"), t("s", "b")])));
        assert_eq!(ddl_tables("ALTER TABLE a RENAME COLUMN x TO y", "s"), Some(("alter", vec![t("s", "a")])));
        assert_eq!(ddl_tables("CREATE UNIQUE INDEX u ON app.a (x)", "s"), Some(("alter", vec![t("app", "a")])));
        assert_eq!(ddl_tables("create index if not exists i on `a` (x)", "s"), Some(("alter", vec![t("s", "a")])));
        assert_eq!(ddl_tables("DROP INDEX `PRIMARY` ON a", "s"), Some(("alter", vec![t("s", "a")])));
        assert_eq!(ddl_tables("ALTER ONLINE TABLE x.a ADD COLUMN c int", "s"), Some(("alter", vec![t("x", "a")])));
        assert_eq!(ddl_tables("truncate `t`", "s"), Some(("truncate", vec![t("s", "t")])));
        assert_eq!(ddl_tables("TRUNCATE TABLE x.t", "s"), Some(("truncate", vec![t("x", "t")])));
        assert_eq!(ddl_tables("CREATE TEMPORARY TABLE t (x int)", "s"), None);
        assert_eq!(ddl_tables("", "s"), None);
    }
}
