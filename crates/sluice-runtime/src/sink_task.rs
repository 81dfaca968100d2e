//! One task per sink: replay skipping, copy bookkeeping, the commit policy and acknowledgements.
//!
//! ```text
//!  router ──ToSink::Event──▶ skip? ──▶ sink.write ──▶ boundary? ──▶ sink.commit(checkpoint, Ack)
//!                                                                          │
//!  router ◀──FromSink::Durable(checkpoint)── in commit order ◀── Ack::durable┘
//! ```
//!
//! The task keeps the checkpoint of everything the sink has *accepted*: the stream position,
//! the copy state of every table, the transform's state. A commit hands a copy of it to the sink;
//! when the commit's [`Ack`] reports durable, that copy is what the sink holds.
//!
//! Replays: a transaction whose start the accepted position already covers was delivered before
//! (the source restarted from an older position for another sink); it is dropped whole.
//!
//! Boundaries: the sink commits only between transactions and outside a consistent copy, so the
//! stored checkpoint always describes whole transactions and whole tables or copy chunks.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sluice_core::{
    Ack, AckIssuer, AckReport, BatchPolicy, BulkFormat, Checkpoint, ConnectorError, Copy, CopyMode, CopyStep,
    ErrorClass, Event, Sink, TableId, TableProgress,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::status::SinkCounters;

/// How long a failed sink may take to finish its background work.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a sink whose queue closed may take to commit and close (less than the runtime's
/// `SINK_RESPONSE_TIMEOUT`, after which it aborts the task).
const FINISH_TIMEOUT: Duration = Duration::from_secs(90);

/// An event, with the transform's state after it when the transform keeps state.
pub(crate) type Routed = (Arc<Event>, Option<Arc<serde_json::Value>>);

/// What the router sends a sink task.
pub(crate) enum ToSink {
    /// Events, in order.
    Events(Vec<Routed>),
    /// Report whether the sink is between units of work, and what it has accepted.
    Sync(oneshot::Sender<SinkSync>),
}

/// A sink task's answer to [`ToSink::Sync`].
pub(crate) struct SinkSync {
    pub at_boundary: bool,
    pub accepted: Checkpoint,
}

/// What a sink task reports to the router.
pub(crate) enum FromSink {
    /// A commit became durable.
    Durable { sink: usize, generation: u64, checkpoint: Checkpoint, commit_ts: Option<i64> },
    /// The sink failed; the task has ended.
    Failed { sink: usize, generation: u64, error: ConnectorError },
    /// The task ended after its queue closed, having committed what it could.
    Finished { sink: usize, generation: u64 },
    /// The sink answered an [`Event::Claim`]: everything before it is durable and `checkpoint`
    /// holds what the target holds for the claimed scope.
    Claimed { sink: usize, generation: u64, id: u64, checkpoint: Checkpoint },
}

pub(crate) struct SinkTask {
    pub index: usize,
    pub generation: u64,
    pub sink: Box<dyn Sink>,
    pub accepted: Checkpoint,
    pub out: mpsc::UnboundedSender<FromSink>,
    pub counters: Arc<SinkCounters>,
}

struct Driver {
    index: usize,
    generation: u64,
    sink: Box<dyn Sink>,
    policy: BatchPolicy,
    formats: Vec<BulkFormat>,
    accepted: Checkpoint,
    /// Dropping the events of a transaction the sink already holds.
    skipping: bool,
    in_txn: bool,
    /// A snapshot copy is in progress: no commit until it ends.
    reset_copy: Option<TableId>,
    /// Rows of a merge copy were written since its last progress mark.
    chunk_open: bool,
    /// Something was accepted since the last commit.
    dirty: bool,
    /// Rows accepted since the last commit.
    uncommitted: usize,
    /// The position moved since the last commit (heartbeats only).
    moved: bool,
    oldest: Option<Instant>,
    acks: AckIssuer,
    ack_rx: mpsc::UnboundedReceiver<AckReport>,
    /// Commits sent but not yet durable: (ack number, checkpoint, newest commit time).
    pending: VecDeque<(u64, Checkpoint, Option<i64>)>,
    last_commit_ts: Option<i64>,
    out: mpsc::UnboundedSender<FromSink>,
    counters: Arc<SinkCounters>,
}

impl SinkTask {
    /// Drives the sink until its queue closes or it fails; always reports how it ended.
    pub async fn run(self, mut rx: mpsc::Receiver<ToSink>) {
        let (acks, ack_rx) = AckIssuer::new();
        let policy = self.sink.batch_policy();
        let formats = self.sink.accepted_formats();
        let mut d = Driver {
            formats,
            index: self.index,
            generation: self.generation,
            sink: self.sink,
            policy,
            accepted: self.accepted,
            skipping: false,
            in_txn: false,
            reset_copy: None,
            chunk_open: false,
            dirty: false,
            uncommitted: 0,
            moved: false,
            oldest: None,
            acks,
            ack_rx,
            pending: VecDeque::new(),
            last_commit_ts: None,
            out: self.out,
            counters: self.counters,
        };
        let outcome = d.drive(&mut rx).await;
        let (sink, generation) = (d.index, d.generation);
        match outcome {
            Ok(()) => {
                let _ = d.out.send(FromSink::Finished { sink, generation });
            }
            Err(error) => {
                // Let commits already running finish (or fail) before a new sink opens. A sink
                // that cannot stop in time must fence itself (the PostgreSQL sink holds a lock
                // on the target that its next incarnation waits for).
                if tokio::time::timeout(CLOSE_TIMEOUT, d.sink.close()).await.is_err() {
                    warn!(sink = %d.sink.name(), "sink did not close within {CLOSE_TIMEOUT:?} after failing");
                }
                let _ = d.out.send(FromSink::Failed { sink, generation, error });
            }
        }
    }
}

impl Driver {
    fn at_boundary(&self) -> bool {
        !self.in_txn && self.reset_copy.is_none() && !self.chunk_open
    }

    async fn drive(&mut self, rx: &mut mpsc::Receiver<ToSink>) -> Result<(), ConnectorError> {
        loop {
            let due = self.oldest.map(|t| t + self.policy.max_delay);
            tokio::select! {
                biased;
                report = self.ack_rx.recv() => {
                    if let Some(r) = report {
                        self.on_ack(r)?;
                        if self.idle_commit_due(rx) {
                            self.commit().await?;
                        }
                    }
                }
                cmd = rx.recv() => match cmd {
                    Some(ToSink::Events(batch)) => {
                        self.on_batch(batch).await?;
                        if self.idle_commit_due(rx) {
                            self.commit().await?;
                        }
                    }
                    Some(ToSink::Sync(reply)) => {
                        // The epoch is ending: a transaction being skipped will not continue.
                        self.skipping = false;
                        let _ = reply.send(SinkSync { at_boundary: self.at_boundary(), accepted: self.accepted.clone() });
                    }
                    None => return self.finish().await,
                },
                _ = sleep_until_opt(due), if due.is_some() && self.at_boundary() => {
                    self.commit().await?;
                }
            }
        }
    }

    fn on_ack(&mut self, report: AckReport) -> Result<(), ConnectorError> {
        let name = self.sink.name().to_string();
        match report {
            AckReport::Durable(seq) => {
                let Some((expected, checkpoint, commit_ts)) = self.pending.pop_front() else {
                    return Err(ConnectorError::msg(
                        ErrorClass::Fatal,
                        format!("{name} acknowledged commit {seq}, which it was never given (a sink bug)"),
                    ));
                };
                if expected != seq {
                    return Err(ConnectorError::msg(
                        ErrorClass::Fatal,
                        format!("{name} acknowledged commit {seq} before commit {expected} (a sink bug)"),
                    ));
                }
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                debug!(sink = %name, position = ?checkpoint.position, "durable");
                let _ = self.out.send(FromSink::Durable { sink: self.index, generation: self.generation, checkpoint, commit_ts });
                Ok(())
            }
            AckReport::Failed(seq, e) => {
                debug!(sink = %name, seq, "commit failed");
                Err(e)
            }
            AckReport::Dropped(seq) => Err(ConnectorError::msg(
                ErrorClass::Transient,
                format!("{name} dropped the acknowledgement of commit {seq} without reporting it (a sink bug); reopening it"),
            )),
        }
    }

    /// Handles a batch: the events of transactions go to the sink in runs, one call per run;
    /// everything else (and every commit decision) is handled in order in between.
    async fn on_batch(&mut self, batch: Vec<Routed>) -> Result<(), ConnectorError> {
        let mut run: Vec<Arc<Event>> = Vec::with_capacity(batch.len());
        for (ev, state) in batch {
            match &*ev {
                Event::Begin(meta) => {
                    // Decided afresh at every Begin: a skipped transaction cut short by a
                    // source restart must not make the sink skip the next one.
                    self.skipping = self.accepted.position.as_ref().is_some_and(|p| p.covers(&meta.position));
                    if self.skipping {
                        continue;
                    }
                    self.in_txn = true;
                    run.push(ev);
                }
                Event::Change(_) => {
                    if self.skipping {
                        continue;
                    }
                    self.uncommitted += 1;
                    self.dirty = true;
                    if self.oldest.is_none() {
                        self.oldest = Some(Instant::now());
                    }
                    run.push(ev);
                }
                Event::Commit { meta, position } => {
                    if self.skipping {
                        self.skipping = false;
                        continue;
                    }
                    self.in_txn = false;
                    self.last_commit_ts = Some(meta.commit_ts_micros);
                    self.advance(position, state);
                    self.dirty = true;
                    run.push(ev);
                    if self.commit_due() {
                        self.flush_run(&mut run).await?;
                        self.commit().await?;
                    }
                }
                _ => {
                    self.flush_run(&mut run).await?;
                    self.on_event(&ev, state).await?;
                }
            }
        }
        self.flush_run(&mut run).await
    }

    /// Hands the sink the events gathered so far.
    async fn flush_run(&mut self, run: &mut Vec<Arc<Event>>) -> Result<(), ConnectorError> {
        if run.is_empty() {
            return Ok(());
        }
        let rows = run.iter().filter(|e| matches!(***e, Event::Change(_))).count();
        self.sink.write_batch(std::mem::take(run)).await?;
        self.counters.rows.fetch_add(rows as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Whether to commit now because the input is idle (see `BatchPolicy::commit_when_idle`):
    /// nothing queued, no commit in flight, changes uncommitted, at a boundary.
    fn idle_commit_due(&self, rx: &mpsc::Receiver<ToSink>) -> bool {
        self.policy.commit_when_idle
            && self.uncommitted > 0
            && self.pending.is_empty()
            && rx.is_empty()
            && self.at_boundary()
    }

    /// Whether the batch is full or old enough to commit (at a boundary).
    fn commit_due(&self) -> bool {
        self.at_boundary()
            && (self.uncommitted >= self.policy.max_rows
                || self.oldest.is_some_and(|t| t.elapsed() >= self.policy.max_delay)
                || (self.uncommitted > 0 && self.sink.wants_commit()))
    }

    async fn on_event(&mut self, ev: &Event, state: Option<Arc<serde_json::Value>>) -> Result<(), ConnectorError> {
        match ev {
            Event::Tables { selected } => {
                let before = self.accepted.tables.len();
                self.accepted.tables.retain(|t, _| selected.contains(t));
                self.accepted.table_ids.retain(|t, _| selected.contains(t));
                if self.accepted.all_tables_copied {
                    // A first-release checkpoint: it had copied every table selected then.
                    for t in selected {
                        self.accepted.tables.insert(t.clone(), TableProgress::Copied);
                    }
                    self.accepted.all_tables_copied = false;
                    self.dirty = true;
                }
                if self.accepted.tables.len() != before {
                    self.dirty = true;
                }
            }
            Event::StreamStart { position } => {
                if self.accepted.position.is_none() {
                    self.accepted.position = Some(position.clone());
                    self.dirty = true;
                }
            }
            Event::Heartbeat { position } => {
                if self.in_txn {
                    return Ok(());
                }
                self.advance(position, state);
                self.moved = true;
                if self.uncommitted == 0 {
                    // Nothing buffered: make the new position durable, so the source can
                    // release its log while the selected tables are idle.
                    self.commit().await?;
                } else {
                    self.maybe_commit().await?;
                }
            }
            // A transaction's events go to the sink in runs (`on_batch`).
            Event::Begin(_) | Event::Change(_) | Event::Commit { .. } => {}
            Event::Claim { id, scope } => self.claim(*id, scope).await?,
            Event::Copy(c) => self.on_copy(ev, c).await?,
        }
        Ok(())
    }

    /// Answers a claim: commits what was accepted and waits until it is durable, so the target
    /// holds no work of this process that is not in its stored position; then adopts what the
    /// target holds for `scope` (another process may have delivered it meanwhile) as accepted,
    /// so replays of it are skipped, and reports the result.
    async fn claim(&mut self, id: u64, scope: &sluice_core::Position) -> Result<(), ConnectorError> {
        if !self.at_boundary() {
            return Err(ConnectorError::msg(
                ErrorClass::Fatal,
                format!("{} was sent a claim inside a transaction or copy (a source bug)", self.sink.name()),
            ));
        }
        self.commit().await?;
        while !self.pending.is_empty() {
            match self.ack_rx.recv().await {
                Some(r) => self.on_ack(r)?,
                None => break,
            }
        }
        if let Some(stored) = self.sink.adopt(scope).await? {
            sluice_core::Position::advance_into(&mut self.accepted.position, &stored.within(scope));
        }
        debug!(sink = %self.sink.name(), id, position = ?self.accepted.position, "claim answered");
        let _ = self.out.send(FromSink::Claimed {
            sink: self.index,
            generation: self.generation,
            id,
            checkpoint: self.accepted.clone(),
        });
        Ok(())
    }

    fn advance(&mut self, position: &sluice_core::Position, state: Option<Arc<serde_json::Value>>) {
        sluice_core::Position::advance_into(&mut self.accepted.position, position);
        if let Some(s) = state {
            self.accepted.transform = Some((*s).clone());
        }
    }

    async fn on_copy(&mut self, ev: &Event, c: &Copy) -> Result<(), ConnectorError> {
        let table = &c.table.id;
        match &c.step {
            CopyStep::Begin { mode, source_id, .. } => {
                // A resumed copy keeps the point it resumes from until its next progress mark.
                let resumed = *mode == CopyMode::Resume
                    && matches!(self.accepted.tables.get(table), Some(TableProgress::Copying { .. }));
                if !resumed {
                    self.accepted.tables.insert(table.clone(), TableProgress::Copying { after: None });
                }
                match source_id {
                    Some(id) => self.accepted.table_ids.insert(table.clone(), id.clone()),
                    None => self.accepted.table_ids.remove(table),
                };
                if *mode == CopyMode::Snapshot {
                    self.reset_copy = Some(table.clone());
                }
                self.dirty = true;
                self.sink.write(ev).await?;
            }
            CopyStep::Rows(rows) => {
                self.chunk_open = self.reset_copy.is_none();
                self.write_counted(ev, rows.len()).await?;
            }
            CopyStep::Bulk(bulk) if !self.formats.contains(&bulk.format()) => {
                let rows = bulk.decode(&c.table)?;
                let n = rows.len();
                self.chunk_open = self.reset_copy.is_none();
                let decoded = Event::Copy(Copy::new(c.to, c.table.clone(), CopyStep::Rows(rows)));
                self.write_counted(&decoded, n).await?;
            }
            CopyStep::Bulk(bulk) => {
                self.chunk_open = self.reset_copy.is_none();
                self.write_counted(ev, bulk.len()).await?;
            }
            CopyStep::Progress { after } => {
                self.sink.write(ev).await?;
                self.accepted.tables.insert(table.clone(), TableProgress::Copying { after: Some(after.clone()) });
                self.chunk_open = false;
                self.dirty = true;
                self.maybe_commit().await?;
            }
            CopyStep::End => {
                self.sink.write(ev).await?;
                self.accepted.tables.insert(table.clone(), TableProgress::Copied);
                self.reset_copy = None;
                self.chunk_open = false;
                self.dirty = true;
                // A finished table becomes durable at once, so a crash never copies it again.
                self.commit().await?;
            }
        }
        Ok(())
    }

    async fn write_counted(&mut self, ev: &Event, rows: usize) -> Result<(), ConnectorError> {
        self.sink.write(ev).await?;
        self.counters.rows.fetch_add(rows as u64, Ordering::Relaxed);
        self.uncommitted += rows;
        self.dirty = true;
        if self.oldest.is_none() {
            self.oldest = Some(Instant::now());
        }
        Ok(())
    }

    /// Commits at a boundary when the batch is full or old enough.
    async fn maybe_commit(&mut self) -> Result<(), ConnectorError> {
        if self.commit_due() {
            self.commit().await?;
        }
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), ConnectorError> {
        if !self.dirty && !self.moved {
            self.oldest = None;
            return Ok(());
        }
        let ack: Ack = self.acks.issue();
        let checkpoint = self.accepted.clone();
        self.pending.push_back((ack.seq(), checkpoint.clone(), self.last_commit_ts));
        self.sink.commit(checkpoint, ack).await?;
        self.dirty = false;
        self.moved = false;
        self.oldest = None;
        self.uncommitted = 0;
        Ok(())
    }

    /// The queue closed: commit what ends at a boundary, complete background work, report.
    async fn finish(&mut self) -> Result<(), ConnectorError> {
        if self.at_boundary() {
            self.commit().await?;
        } else {
            info!(sink = %self.sink.name(), "rolling back an unfinished transaction or copy; it will be replayed");
        }
        match tokio::time::timeout(FINISH_TIMEOUT, self.sink.close()).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(ConnectorError::msg(
                    ErrorClass::Transient,
                    format!("{} did not close within {FINISH_TIMEOUT:?}", self.sink.name()),
                ))
            }
        }
        while !self.pending.is_empty() {
            match self.ack_rx.try_recv() {
                Ok(r) => self.on_ack(r)?,
                Err(_) => {
                    return Err(ConnectorError::msg(
                        ErrorClass::Fatal,
                        format!("{} closed with commits it never acknowledged (a sink bug)", self.sink.name()),
                    ))
                }
            }
        }
        Ok(())
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
