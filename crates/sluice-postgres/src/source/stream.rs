//! The replication stream: pgoutput messages into typed events, keepalives into heartbeats,
//! confirmations back to the server, table discovery and the copies of live tables.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use sluice_core::{Change, Event, Key, Lsn, Op, Position, Row, SinkSet, TableId, TxnMeta, Value};
use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;
use tracing::{debug, info, warn};

use super::backfill::{Backfill, CopyJob};
use super::no_key;
use super::spill::Spills;
use crate::catalog::{self, PgColumn, PgTable, SourceTable, TypeCache};
use crate::codec::{self, PgType};
use crate::config::PgSourceConfig;
use crate::error::{Ctx, PgError};
use crate::ident::{qualified, quote_ident};
use crate::pgoutput::{self, OldTuple, PgOutput, Relation, TupleValue};
use crate::replication::{ReplicationConn, PG_EPOCH_OFFSET_MICROS};

/// The pipeline is stopping: the current event was not delivered.
pub(super) struct Stopping;

/// Messages `run` handles from its read buffer in one go before it looks at its timers again.
const BURST: usize = 256;

/// Shortest time between two reports of a new durable position (besides the status interval).
const CONFIRM_EVERY: Duration = Duration::from_millis(50);

/// How long a stop request waits for the transaction being streamed to end, so the sinks can
/// commit it instead of replaying it next time.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub(super) struct Streamer<'a> {
    cfg: &'a PgSourceConfig,
    publication: &'a str,
    catalog: Client,
    types: TypeCache,
    /// Relation OID → the Relation message, the table built from it, and whether it has enum
    /// columns (whose labels may grow without a new Relation message).
    relations: HashMap<u32, (Relation, PgTable, bool)>,
    /// Latest known shape of each table, from the stream or the catalog.
    by_id: HashMap<TableId, PgTable>,
    selected: Vec<SourceTable>,
    /// Tables selected since the last `Tables` event, to announce between transactions.
    announce: bool,
    live: SinkSet,
    backfill: Backfill,
    /// The transaction being decoded, and whether its `Begin` was emitted (it is emitted with
    /// the first change, so transactions without changes to the selected tables become
    /// heartbeats).
    txn: Option<(TxnMeta, bool)>,
    /// End of the last transaction or heartbeat emitted.
    last_position: Lsn,
    /// Durable in every sink; reported to the server.
    confirmed: Lsn,
    /// The last position reported to the server.
    reported: Lsn,
    /// `None` once stopping: closing it tells the runtime the stream has ended.
    events: Option<mpsc::Sender<Event>>,
    confirmed_rx: watch::Receiver<Option<Position>>,
    stop: watch::Receiver<bool>,
    /// When a stop was requested, the moment it no longer waits for the current transaction.
    stop_deadline: Option<tokio::time::Instant>,
    /// When the last status update went to the server.
    status_at: tokio::time::Instant,
    last_discovery: Instant,
    /// The server sends values in binary (pgoutput's `binary` option).
    binary: bool,
    /// The server can write logical decoding messages (PostgreSQL 14+), which copies of live
    /// tables need.
    messages: bool,
    /// Transactions streamed while in progress (protocol 2), waiting for their commit.
    spills: Spills,
    /// Inside a stream block: the transaction it belongs to.
    stream_block: Option<u32>,
}

impl<'a> Streamer<'a> {
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        cfg: &'a PgSourceConfig,
        url: &str,
        slot: &str,
        publication: &'a str,
        catalog: Client,
        selected: Vec<SourceTable>,
        jobs: Vec<CopyJob>,
        live: SinkSet,
        start: Lsn,
        slot_confirmed: Lsn,
        events: mpsc::Sender<Event>,
        confirmed_rx: watch::Receiver<Option<Position>>,
        stop: watch::Receiver<bool>,
    ) -> Result<Streamer<'a>, PgError> {
        let mut s = Streamer {
            cfg,
            publication,
            catalog,
            types: TypeCache::default(),
            relations: HashMap::new(),
            by_id: HashMap::new(),
            selected,
            announce: false,
            live,
            backfill: Backfill::new(url, slot, cfg.backfill_chunk_rows, jobs),
            txn: None,
            last_position: start,
            confirmed: slot_confirmed,
            reported: slot_confirmed,
            events: Some(events),
            confirmed_rx,
            stop,
            stop_deadline: None,
            status_at: tokio::time::Instant::now(),
            last_discovery: Instant::now(),
            binary: false,
            messages: true,
            spills: Spills::default(),
            stream_block: None,
        };
        // Only what the slot already holds, or what the runtime confirms, is reported: the
        // start point is what the sinks that are up hold, and one that is down may hold less.
        s.take_confirmed();
        Ok(s)
    }

    pub fn catalog(&self) -> &Client {
        &self.catalog
    }

    /// Whether every column of every selected table has a binary form Sluice reads; only then
    /// can the server send binary values.
    pub async fn binary_ok(&mut self) -> Result<bool, PgError> {
        for t in self.selected.clone() {
            let table = self.shape(&t.id, t.oid).await?;
            if !table.types.iter().all(PgType::binary_ok) {
                debug!(table = %t.id, "a column has no binary form; streaming in text");
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Records how the stream was started: values in binary, logical decoding messages on.
    pub fn set_mode(&mut self, binary: bool, messages: bool) {
        self.binary = binary;
        self.messages = messages;
    }

    /// Whether to stop now: a stop was requested, and no transaction is being streamed or the
    /// grace period for finishing it has passed.
    fn must_stop(&mut self) -> bool {
        if !*self.stop.borrow() {
            return false;
        }
        let deadline = *self.stop_deadline.get_or_insert_with(|| tokio::time::Instant::now() + STOP_GRACE);
        self.txn.is_none() || tokio::time::Instant::now() >= deadline
    }

    pub async fn run(&mut self, repl: &mut ReplicationConn) -> Result<(), PgError> {
        let interval = Duration::from_millis(self.cfg.status_interval_ms);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A new durable position is reported soon (not only at the next status interval), so
        // the server releases WAL and monitoring sees the slot move as the sinks commit; at most
        // one report per CONFIRM_EVERY.
        let mut confirm_open = true;
        let mut report_at: Option<tokio::time::Instant> = None;
        let mut last_report = tokio::time::Instant::now();
        // Phase 1: stream until asked to stop (at the end of the transaction being streamed).
        while !self.must_stop() {
            if self.between_transactions(repl, interval).await?.is_err() {
                break;
            }
            tokio::select! {
                biased;
                _ = self.stop.changed(), if self.stop_deadline.is_none() => {}
                _ = sleep_until_opt(self.stop_deadline) => {}
                _ = ticker.tick() => {
                    self.report(repl).await?;
                    last_report = tokio::time::Instant::now();
                    report_at = None;
                    self.discover().await?;
                }
                changed = self.confirmed_rx.changed(), if confirm_open && report_at.is_none() => {
                    match changed {
                        Ok(()) => report_at = Some((last_report + CONFIRM_EVERY).max(tokio::time::Instant::now())),
                        Err(_) => confirm_open = false,
                    }
                }
                _ = sleep_until_opt(report_at) => {
                    self.report(repl).await?;
                    last_report = tokio::time::Instant::now();
                    report_at = None;
                }
                Some((id, r)) = self.backfill.result() => self.backfill.on_result(id, r)?,
                msg = repl.recv() => {
                    let msg = msg?;
                    if self.handle(repl, msg.tag, msg.body, interval).await?.is_err() {
                        break;
                    }
                    if self.burst(repl, interval).await?.is_err() {
                        break;
                    }
                }
            }
        }
        // Phase 2: end the event stream, keep confirming until the runtime is done. What the
        // server still sends is read and dropped (it is sent again next time, as nothing past
        // what the sinks hold is confirmed): a walsender whose socket is full reads no status
        // updates, and the last one would never get through.
        self.events = None;
        debug!("source stream ended; confirming until the sinks are done");
        loop {
            tokio::select! {
                changed = self.confirmed_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    self.take_confirmed();
                }
                _ = ticker.tick() => self.report(repl).await?,
                msg = repl.recv() => {
                    let msg = msg?;
                    if msg.tag == b'd' && msg.body.first() == Some(&b'k') && msg.body.last() == Some(&1) {
                        self.report(repl).await?;
                    }
                }
            }
        }
        self.report(repl).await?;
        info!(confirmed = %self.confirmed, "source stopped");
        Ok(())
    }

    fn take_confirmed(&mut self) {
        if let Some(Position::Pg(l)) = *self.confirmed_rx.borrow() {
            self.confirmed = self.confirmed.max(l);
        }
    }

    /// Reports the position durable in every sink to the server as the slot's flush position.
    async fn report(&mut self, repl: &mut ReplicationConn) -> Result<(), PgError> {
        self.take_confirmed();
        let advanced = self.confirmed > self.reported;
        if advanced {
            sluice_core::crash_point("source.before_confirm");
        }
        repl.send_status(self.confirmed.0, false).await?;
        self.status_at = tokio::time::Instant::now();
        if advanced {
            sluice_core::crash_point("source.after_confirm");
            self.reported = self.confirmed;
        }
        Ok(())
    }

    /// Handles up to [`BURST`] more messages that were already read from the socket, without
    /// waiting for others and without a turn of `run`'s select per message (polling its timers
    /// and watches cost more than decoding a small change). Stops where `run` would: at a
    /// requested stop, or when the stream is ending. While an event waits for room in the
    /// queue, `emit` keeps the status updates on time.
    async fn burst(&mut self, repl: &mut ReplicationConn, interval: Duration) -> Result<Result<(), Stopping>, PgError> {
        for _ in 0..BURST {
            if self.must_stop() {
                break;
            }
            if self.between_transactions(repl, interval).await?.is_err() {
                return Ok(Err(Stopping));
            }
            let Some(msg) = repl.try_recv() else { break };
            if self.handle(repl, msg.tag, msg.body, interval).await?.is_err() {
                return Ok(Err(Stopping));
            }
        }
        Ok(Ok(()))
    }

    /// Work done only between transactions: announcing tables, copy chunks.
    async fn between_transactions(
        &mut self,
        repl: &mut ReplicationConn,
        interval: Duration,
    ) -> Result<Result<(), Stopping>, PgError> {
        if self.txn.is_some() {
            return Ok(Ok(()));
        }
        if self.announce {
            self.announce = false;
            let selected = self.selected.iter().map(|t| t.id.clone()).collect();
            if self.emit(repl, interval, Event::Tables { selected }).await?.is_err() {
                return Ok(Err(Stopping));
            }
        }
        for ev in self.backfill.at_boundary(&self.by_id).await? {
            if self.emit(repl, interval, ev).await?.is_err() {
                return Ok(Err(Stopping));
            }
        }
        if let Some((id, oid)) = self.backfill.next_table() {
            let id = id.clone();
            let table = self.shape(&id, oid).await?;
            if let Some(begin) = self.backfill.start(table).await? {
                if self.emit(repl, interval, begin).await?.is_err() {
                    return Ok(Err(Stopping));
                }
            }
        }
        Ok(Ok(()))
    }

    /// The current shape of a table: the one the stream announced last, else the catalog's.
    async fn shape(&mut self, id: &TableId, oid: u32) -> Result<PgTable, PgError> {
        if let Some(t) = self.by_id.get(id) {
            return Ok(t.clone());
        }
        let published = self.selected.iter().find(|t| t.oid == oid).and_then(|t| t.columns.clone());
        let cols = catalog::table_columns(&self.catalog, oid, published.as_deref()).await?;
        let key = catalog::key_columns(&self.catalog, oid).await?;
        let version = catalog::next_version();
        let missing = catalog::missing_values(&self.catalog, oid).await?;
        let mut t = self.types.table(&self.catalog, id.clone(), &cols, &key, version, &missing).await?;
        t.partitioned = self.partitioned(oid);
        t.row_filter = self.row_filter(oid);
        self.by_id.insert(id.clone(), t.clone());
        Ok(t)
    }

    /// The publication's row filter of the selected table with this OID.
    fn row_filter(&self, oid: u32) -> Option<String> {
        self.selected.iter().find(|t| t.oid == oid).and_then(|t| t.row_filter.clone())
    }

    /// Whether the selected table with this OID is partitioned.
    fn partitioned(&self, oid: u32) -> bool {
        self.selected.iter().any(|t| t.oid == oid && t.partitioned)
    }

    /// Looks for tables that newly match the selection: adds them to the publication and copies
    /// them into every sink; forgets tables that went away.
    async fn discover(&mut self) -> Result<(), PgError> {
        let every = Duration::from_secs(self.cfg.discover_interval_secs);
        if every.is_zero() || self.last_discovery.elapsed() < every {
            return Ok(());
        }
        self.last_discovery = Instant::now();
        let mut now = catalog::selected_tables(&self.catalog, &self.cfg.filter()).await?;
        catalog::publication_filters(&self.catalog, self.publication, &mut now).await?;
        // A table dropped and created again under the same name is a new table (a new OID); a
        // partitioned table whose partitions changed is copied again too.
        let gone: Vec<TableId> = self
            .selected
            .iter()
            .filter(|t| !now.iter().any(|n| n.id == t.id && n.identity() == t.identity()))
            .map(|t| t.id.clone())
            .collect();
        let mut added = Vec::new();
        let mut repartitioned = Vec::new();
        let copy = self.cfg.snapshot == crate::config::SnapshotMode::Initial;
        for t in now.iter().filter(|n| !self.selected.iter().any(|s| s.id == n.id && s.identity() == n.identity())) {
            if self.selected.iter().any(|s| s.id == t.id && s.oid == t.oid) {
                // Same table, other partitions: rows came or went without changes in the WAL.
                if copy && self.messages {
                    info!(table = %t.id, "partitions were attached or detached; copying the table again");
                } else {
                    warn!(
                        table = %t.id,
                        "partitions were attached or detached; rows they brought or took are not copied \
                         (that needs source.snapshot = \"initial\" and PostgreSQL 14 or newer)"
                    );
                }
                repartitioned.push(t.id.clone());
                added.push(t.clone());
                continue;
            }
            if t.replica_identity != 'f' && catalog::key_columns(&self.catalog, t.oid).await?.is_empty() {
                warn!(error = %no_key(&t.id), "a new table matches source.tables but cannot be replicated yet");
                continue;
            }
            if copy && !self.messages {
                warn!(
                    table = %t.id,
                    "a new table matches source.tables, but copying it while streaming needs PostgreSQL 14 or newer; \
                     it is not replicated (set source.snapshot = \"never\" to stream only its new changes)"
                );
                continue;
            }
            self.catalog
                .batch_execute(&format!(
                    "ALTER PUBLICATION {} ADD TABLE {}",
                    quote_ident(self.publication),
                    qualified(&t.id)
                ))
                .await
                .ctx(format!("add {} to publication {}", t.id, self.publication))?;
            info!(table = %t.id, "new table matches source.tables; streaming and copying it");
            added.push(t.clone());
        }
        if gone.is_empty() && added.is_empty() {
            return Ok(());
        }
        for id in &gone {
            if repartitioned.contains(id) {
                // partitions changed (logged above)
            } else if added.iter().any(|a: &SourceTable| a.id == *id) {
                info!(table = %id, "table was dropped and created again; its rows on the sinks are replaced");
            } else {
                info!(table = %id, "table no longer exists or matches source.tables");
            }
            // Its shape is read again from whatever now has its name.
            self.by_id.remove(id);
        }
        self.selected.retain(|t| !gone.contains(&t.id));
        self.backfill.retain(&self.selected);
        for t in added {
            if copy && self.messages {
                self.backfill.push(CopyJob::new(&t, self.live, None));
            }
            self.selected.push(t);
        }
        self.selected.sort_by(|a, b| a.id.cmp(&b.id));
        self.announce = true;
        Ok(())
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
            // A status update an interval after the last one, however many events waited since.
            let status_due = self.status_at + interval;
            tokio::select! {
                permit = events.reserve() => {
                    permit.map_err(|_| PgError::Protocol("pipeline stopped while the source was sending".into()))?.send(ev);
                    return Ok(Ok(()));
                }
                _ = self.stop.changed(), if self.stop_deadline.is_none() => {
                    if self.must_stop() {
                        return Ok(Err(Stopping));
                    }
                }
                _ = sleep_until_opt(self.stop_deadline) => {
                    if self.must_stop() {
                        return Ok(Err(Stopping));
                    }
                }
                _ = tokio::time::sleep_until(status_due) => self.report(repl).await?,
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
                if let Some(top) = self.stream_block {
                    if b.first() == Some(&b'E') {
                        self.stream_block = None;
                    } else {
                        self.spills.append(top, &b).await?;
                    }
                    return Ok(Ok(()));
                }
                match pgoutput::decode(b)? {
                    PgOutput::StreamStart { xid, first } => {
                        self.spills.start(xid, first).await?;
                        self.stream_block = Some(xid);
                        Ok(Ok(()))
                    }
                    PgOutput::StreamAbort { xid, subxid } => {
                        self.spills.abort(xid, subxid);
                        Ok(Ok(()))
                    }
                    PgOutput::StreamCommit { xid, commit_lsn, end_lsn, commit_ts } => {
                        self.replay(repl, interval, xid, commit_lsn, end_lsn, commit_ts).await
                    }
                    msg => self.apply(repl, msg, interval).await,
                }
            }
            b'k' => {
                if b.remaining() < 17 {
                    return Err(PgError::Protocol("short keepalive".into()));
                }
                let wal_end = Lsn(b.get_u64());
                let _clock = b.get_i64();
                let reply = b.get_u8() == 1;
                if reply {
                    self.report(repl).await?;
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

    /// Applies a committed streamed transaction from its file, as one ordinary transaction.
    async fn replay(
        &mut self,
        repl: &mut ReplicationConn,
        interval: Duration,
        xid: u32,
        commit_lsn: u64,
        end_lsn: u64,
        commit_ts: i64,
    ) -> Result<Result<(), Stopping>, PgError> {
        let mut replay = self.spills.take(xid).await?;
        let begin = PgOutput::Begin { final_lsn: commit_lsn, commit_ts, xid };
        if self.apply(repl, begin, interval).await?.is_err() {
            return Ok(Err(Stopping));
        }
        if let Some(r) = replay.as_mut() {
            while let Some(raw) = r.next().await? {
                if self.apply(repl, pgoutput::decode_streamed(raw)?, interval).await?.is_err() {
                    return Ok(Err(Stopping));
                }
            }
        }
        self.apply(repl, PgOutput::Commit { commit_lsn, end_lsn, commit_ts }, interval).await
    }

    /// Emits the pending `Begin` of the current transaction, if not done yet.
    async fn begin(&mut self, repl: &mut ReplicationConn, interval: Duration) -> Result<Result<(), Stopping>, PgError> {
        match &mut self.txn {
            Some((meta, begun)) if !*begun => {
                *begun = true;
                let ev = Event::Begin(meta.clone());
                self.emit(repl, interval, ev).await
            }
            Some(_) => Ok(Ok(())),
            None => Err(PgError::Protocol("a change outside a transaction".into())),
        }
    }

    async fn change(
        &mut self,
        repl: &mut ReplicationConn,
        interval: Duration,
        table: PgTable,
        op: Op,
    ) -> Result<Result<(), Stopping>, PgError> {
        if self.begin(repl, interval).await?.is_err() {
            return Ok(Err(Stopping));
        }
        let schema = table.schema.clone();
        let xid = self.txn.as_ref().map_or(0, |(m, _)| m.xid as u32);
        self.backfill.on_change(xid, &schema.id, &op, |r| schema.key_of(r));
        self.emit(repl, interval, Event::Change(Change { table: schema, op })).await
    }

    async fn apply(
        &mut self,
        repl: &mut ReplicationConn,
        msg: PgOutput,
        interval: Duration,
    ) -> Result<Result<(), Stopping>, PgError> {
        match msg {
            PgOutput::Begin { final_lsn, commit_ts, xid } => {
                let meta = TxnMeta {
                    xid: xid as u64,
                    commit_ts_micros: commit_ts + PG_EPOCH_OFFSET_MICROS,
                    position: Position::Pg(Lsn(final_lsn)),
                };
                self.txn = Some((meta, false));
                Ok(Ok(()))
            }
            PgOutput::Commit { end_lsn, .. } => {
                let (meta, begun) = self.txn.take().ok_or_else(|| PgError::Protocol("Commit without Begin".into()))?;
                self.backfill.on_commit(meta.xid as u32);
                self.last_position = self.last_position.max(Lsn(end_lsn));
                let position = Position::Pg(Lsn(end_lsn));
                let ev = if begun { Event::Commit { meta, position } } else { Event::Heartbeat { position } };
                self.emit(repl, interval, ev).await
            }
            PgOutput::Relation(rel) => {
                self.relation(rel).await?;
                Ok(Ok(()))
            }
            PgOutput::Message { prefix, content, .. } => {
                self.backfill.on_message(&prefix, &content);
                Ok(Ok(()))
            }
            PgOutput::Insert { rel, new } => {
                let table = self.table(rel)?;
                let after = to_row(&table, &new)?;
                let table = self.known_labels(rel, table, [Some(&after), None]).await?;
                self.change(repl, interval, table, Op::Insert { after }).await
            }
            PgOutput::Update { rel, old, new } => {
                let table = self.table(rel)?;
                let mut after = to_row(&table, &new)?;
                let before = match &old {
                    Some(o) => {
                        let before = to_row(&table, o.values())?;
                        if let OldTuple::Full(_) = o {
                            // Identity FULL sends the whole old row: fill unchanged TOAST values from it.
                            for (a, b) in after.iter_mut().zip(&before) {
                                if *a == Value::Unchanged {
                                    *a = b.clone();
                                }
                            }
                        }
                        Some(before)
                    }
                    None => None,
                };
                let table = self.known_labels(rel, table, [Some(&after), before.as_ref()]).await?;
                if after.contains(&Value::Unchanged) && self.backfill.copying(&table.schema.id) {
                    self.fill_moved_row(&table, before.as_ref(), &mut after).await?;
                }
                self.change(repl, interval, table, Op::Update { before, after }).await
            }
            PgOutput::Delete { rel, old } => {
                let table = self.table(rel)?;
                let before = to_row(&table, old.values())?;
                self.change(repl, interval, table, Op::Delete { before }).await
            }
            PgOutput::Truncate { rels } => {
                for rel in rels {
                    if let Ok(table) = self.table(rel) {
                        if self.change(repl, interval, table, Op::Truncate).await?.is_err() {
                            return Ok(Err(Stopping));
                        }
                    }
                }
                Ok(Ok(()))
            }
            PgOutput::StreamStart { .. }
            | PgOutput::StreamStop
            | PgOutput::StreamCommit { .. }
            | PgOutput::StreamAbort { .. } => {
                Err(PgError::Protocol("stream control message inside a transaction".into()))
            }
            PgOutput::Type { .. } | PgOutput::Other(_) => Ok(Ok(())),
        }
    }

    /// An update that moved a row to a new key without resending some values, in a table being
    /// copied: the row may not be on the sinks yet, so its old copy cannot supply them. The
    /// values are read from the row as it is now; later changes to it follow in the stream.
    async fn fill_moved_row(&mut self, table: &PgTable, before: Option<&Row>, after: &mut Row) -> Result<(), PgError> {
        let schema = &table.schema;
        let new_key: Key = schema.key_of(after);
        let moved = before.map(|b| schema.key_of(b)).is_some_and(|old| old != new_key && !old.contains(&Value::Null));
        if !moved {
            return Ok(());
        }
        if let Some(current) = super::backfill::fetch(&self.catalog, table, &new_key).await? {
            for (a, c) in after.iter_mut().zip(current) {
                if *a == Value::Unchanged {
                    *a = c;
                }
            }
        }
        Ok(())
    }

    /// `table` if its enum columns know every label in `rows`, else the table built again from
    /// the catalog's labels (`ALTER TYPE .. ADD VALUE` sends no Relation message), as a new
    /// schema version so the sinks learn the label too.
    async fn known_labels(&mut self, rel: u32, table: PgTable, rows: [Option<&Row>; 2]) -> Result<PgTable, PgError> {
        let has_enums = self.relations.get(&rel).is_some_and(|(_, _, e)| *e);
        if !has_enums || !rows.iter().flatten().any(|r| unknown_label(&table.schema, r)) {
            return Ok(table);
        }
        let Some((relation, _, _)) = self.relations.remove(&rel) else { return Ok(table) };
        debug!(table = %table.schema.id, "an enum label is new; reading the type again");
        self.relation(relation).await?;
        self.table(rel)
    }

    fn table(&self, rel: u32) -> Result<PgTable, PgError> {
        self.relations
            .get(&rel)
            .map(|(_, t, _)| t.clone())
            .ok_or_else(|| PgError::Protocol(format!("change for relation {rel} before its Relation message")))
    }

    async fn relation(&mut self, rel: Relation) -> Result<(), PgError> {
        if self.relations.get(&rel.id).is_some_and(|(r, _, _)| *r == rel) {
            return Ok(());
        }
        let id = TableId::new(rel.namespace.clone(), rel.name.clone());
        let mut key = catalog::key_columns(&self.catalog, rel.id).await?;
        // The catalog no longer knows the table's key (it changed since): the stream's flags
        // say it. With REPLICA IDENTITY FULL every column is flagged, and there is no key.
        if key.is_empty() && rel.replica_identity != b'f' {
            key = rel.columns.iter().filter(|c| c.key).map(|c| c.name.clone()).collect();
        }
        let not_null = catalog::not_null_columns(&self.catalog, rel.id).await?;
        let cols: Vec<PgColumn> = rel
            .columns
            .iter()
            .map(|c| PgColumn {
                name: c.name.clone(),
                type_oid: c.type_oid,
                typmod: c.typmod,
                not_null: not_null.contains(&c.name),
            })
            .collect();
        let version = catalog::next_version();
        // A new shape may come with new enum labels.
        self.types.clear();
        let missing = catalog::missing_values(&self.catalog, rel.id).await?;
        let mut table = self.types.table(&self.catalog, id.clone(), &cols, &key, version, &missing).await?;
        table.partitioned = self.partitioned(rel.id);
        table.row_filter = self.row_filter(rel.id);
        if self.binary && !table.types.iter().all(PgType::binary_ok) {
            // Values of this type would arrive in a binary form Sluice does not read: start over
            // in text (the next start sees the column and streams in text).
            return Err(PgError::Retry(format!(
                "{id} now has a column whose type has no binary form Sluice reads; restarting the stream in text"
            )));
        }
        debug!(table = %id, columns = table.schema.columns.len(), "relation");
        self.by_id.insert(id, table.clone());
        let has_enums = table.schema.columns.iter().any(|c| enum_labels(&c.data_type).is_some());
        self.relations.insert(rel.id, (rel, table, has_enums));
        Ok(())
    }
}

/// The labels of an enum column, or of an array of enums.
fn enum_labels(dt: &sluice_core::DataType) -> Option<&[String]> {
    match dt {
        sluice_core::DataType::Enum { labels } => Some(labels),
        sluice_core::DataType::List(inner) => enum_labels(inner),
        _ => None,
    }
}

/// Whether `row` holds an enum label its schema does not list.
fn unknown_label(schema: &sluice_core::TableSchema, row: &Row) -> bool {
    fn unknown(v: &Value, labels: &[String]) -> bool {
        match v {
            Value::Enum(l) | Value::Text(l) => !labels.iter().any(|k| k.as_str() == l.as_str()),
            Value::List(items) => items.iter().any(|i| unknown(i, labels)),
            _ => false,
        }
    }
    schema.columns.iter().zip(row).any(|(c, v)| enum_labels(&c.data_type).is_some_and(|labels| unknown(v, labels)))
}

/// Decodes a pgoutput tuple into a typed row of `table`.
fn to_row(table: &PgTable, vals: &[TupleValue]) -> Result<Row, PgError> {
    let mut row = Vec::with_capacity(vals.len());
    for (i, v) in vals.iter().enumerate() {
        let ty = table.types.get(i).unwrap_or(&PgType::Other);
        let value = match v {
            TupleValue::Null => Ok(Value::Null),
            TupleValue::Unchanged => Ok(Value::Unchanged),
            TupleValue::Text(t) => codec::decode_text(ty, t.clone()),
            TupleValue::Binary(b) => codec::decode_binary(ty, b.clone()),
        }
        .map_err(|e| {
            let col = table.schema.columns.get(i).map_or("?", |c| c.name.as_str());
            PgError::Decode(format!("column {col} of {}: {e}", table.schema.id))
        })?;
        row.push(value);
    }
    Ok(row)
}

async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
