//! The pipeline driver: it owns recovery.
//!
//! ```text
//!              events (bounded)    ┌───────────┐  Arc<Event>, per-sink queues (bounded)
//!  source ───────────────────────▶ │  router + │ ─────────────────────────▶ sink task 0 ──┐
//!    ▲                             │ transform │ ─────────────────────────▶ sink task 1 ──┤
//!    │ confirmed = meet(durable)   └───────────┘ ◀──── Durable(checkpoint) / Failed ─────┘
//!    └───────────────────────────────────┘
//! ```
//!
//! **Epochs.** The source runs in epochs: one call of [`Source::run`], from the position every
//! running sink holds. A source that fails transiently is rebuilt after a backoff and the next
//! epoch starts from what the sinks hold.
//!
//! **Per-sink recovery.** A sink that fails transiently is dropped alone: the others keep
//! receiving the stream. It is rebuilt from its config and reopened after a backoff; once open,
//! the epoch ends and the next one starts from the meet of all positions, so the reopened sink
//! gets everything after its own checkpoint while the others skip what they already accepted
//! (see `sink_task`). Sinks that are mid-transaction when an epoch ends are reopened too, since
//! their half-written transaction would be replayed. Nothing is confirmed to the source beyond
//! what every sink, running or not, holds durably, so the source can always replay for the one
//! that fell behind.
//!
//! **Copies.** The source copies a table into exactly the sinks whose checkpoints say they lack
//! it ([`Resume::copies_needed`]), so a sink added later, or a table selected later, is
//! backfilled without touching anything else.
//!
//! **Errors.** Transient errors retry with exponential backoff per component. Definite and
//! fatal errors stop the pipeline: the other sinks commit what ends at a boundary, the final
//! position is confirmed, and the error is returned naming the component.
//!
//! **Shutdown.** On `stop`, the source stops reading, the router forwards what it already
//! emitted, every sink commits what ends at a boundary (an unfinished transaction is rolled back
//! and replayed next time), the meet is confirmed, and the source exits.

mod sink_task;
mod status;

use std::sync::Arc;
use std::time::Duration;

use sluice_core::{
    BulkFormat, Checkpoint, Claimed, ConnectorError, ErrorClass, Event, Position, Resume, Sink, SinkConnector,
    SinkContext, SinkSet, SinkStats, SourceConnector, SourceContext, Transform,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use sink_task::{FromSink, Routed, SinkSync, SinkTask, ToSink};
use status::StatusBoard;
pub use status::{
    CopyState, ErrorEntry, PipelineHandle, PipelineStatus, RunState, SinkState, SinkStatus, SourceStatus, TableStatus,
};

/// Capacity of the source's event queue.
pub const QUEUE_CAPACITY: usize = 4096;
/// Most events the router takes from the source's queue at once and hands each sink as one batch.
pub const ROUTE_BATCH: usize = 256;
/// Capacity of each sink's queue, in batches (so at most `SINK_QUEUE_BATCHES * ROUTE_BATCH`
/// events wait for one sink).
pub const SINK_QUEUE_BATCHES: usize = 16;
/// How long opening a sink may take before the attempt counts as failed.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping source may take to exit.
pub const SOURCE_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a sink task may take to answer between epochs, or to finish once its queue is
/// closed, before it is taken for hung and aborted (its uncommitted work is replayed).
pub const SINK_RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);

/// Builds the transform of each epoch.
pub type TransformFactory = Arc<dyn Fn() -> Box<dyn Transform> + Send + Sync>;

/// When to retry after a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First delay; doubles per consecutive failure
    pub initial: Duration,
    /// Longest delay
    pub max: Duration,
    /// A component that ran this long without failing starts again from `initial`
    pub reset_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone)]
struct Backoff {
    policy: RetryPolicy,
    next: Duration,
}

impl Backoff {
    fn new(policy: RetryPolicy) -> Backoff {
        Backoff { policy, next: policy.initial }
    }

    /// The delay before the next attempt, given how long the failed one ran.
    fn after_failure(&mut self, ran: Duration) -> Duration {
        if ran >= self.policy.reset_after {
            self.next = self.policy.initial;
        }
        let d = self.next;
        self.next = (self.next * 2).min(self.policy.max);
        d
    }
}

/// Everything a pipeline is made of.
pub struct Pipeline {
    /// Pipeline name (checkpoints and source-side names derive from it)
    pub name: String,
    /// The configured source
    pub source: Arc<dyn SourceConnector>,
    /// The configured sinks, in order; a sink's index names its checkpoint
    pub sinks: Vec<Arc<dyn SinkConnector>>,
    /// The transform stage
    pub transform: TransformFactory,
    /// Retries
    pub retry: RetryPolicy,
}

/// A pipeline failure, naming the component that failed.
#[derive(Debug, thiserror::Error)]
#[error("{component}: {error}")]
pub struct PipelineError {
    /// `source`, `transform` or the sink's name
    pub component: String,
    /// The cause
    #[source]
    pub error: ConnectorError,
}

impl PipelineError {
    /// Whether a retry may help.
    pub fn class(&self) -> ErrorClass {
        self.error.class()
    }
}

/// A pipeline running in the background.
pub struct Running {
    /// Its published status
    pub handle: PipelineHandle,
    /// Its outcome
    pub task: JoinHandle<Result<(), PipelineError>>,
}

/// Starts `pipeline` on the current tokio runtime; it runs until `stop` becomes true or a
/// definite or fatal error ends it.
pub fn spawn(pipeline: Pipeline, stop: watch::Receiver<bool>) -> Running {
    let sinks = pipeline
        .sinks
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("sink[{i}] {}", s.kind()), s.describe(), Arc::new(SinkStats::default())))
        .collect::<Vec<_>>();
    let stats: Vec<Arc<SinkStats>> = sinks.iter().map(|s| s.2.clone()).collect();
    let (board, handle) = StatusBoard::new(&pipeline.name, pipeline.source.describe(), sinks);
    let task = tokio::spawn(Supervisor::new(pipeline, stop, board, stats).run());
    Running { handle, task }
}

/// Runs `pipeline` until `stop` becomes true (then drains and returns `Ok`) or a definite or
/// fatal error ends it.
pub async fn run(pipeline: Pipeline, stop: watch::Receiver<bool>) -> Result<(), PipelineError> {
    let running = spawn(pipeline, stop);
    running.task.await.map_err(|e| PipelineError {
        component: "runtime".into(),
        error: ConnectorError::new(ErrorClass::Fatal, "the pipeline task panicked", e),
    })?
}

enum Life {
    /// Never opened, or being reopened by a background task.
    Opening { generation: u64 },
    /// Opened, waiting for the next epoch to start its task.
    Ready { sink: Box<dyn Sink>, checkpoint: Checkpoint, generation: u64 },
    /// Receiving the stream.
    Live { tx: mpsc::Sender<ToSink>, generation: u64, since: Instant, task: AbortHandle },
    /// Closed for good (shutdown).
    Closed,
}

struct Slot {
    connector: Arc<dyn SinkConnector>,
    name: String,
    stats: Arc<SinkStats>,
    life: Life,
    /// What the sink holds durably; `None` until it was opened once in this run. While any
    /// slot is `None`, nothing is confirmed to the source.
    durable: Option<Checkpoint>,
    /// What a live sink has accepted (its resume point when the source restarts).
    accepted: Checkpoint,
    formats: Vec<BulkFormat>,
    backoff: Backoff,
}

struct Opened {
    sink: usize,
    generation: u64,
    result: Result<(Box<dyn Sink>, Option<Checkpoint>), ConnectorError>,
}

/// How an epoch ended.
enum EpochEnd {
    /// Stop requested: shut down cleanly.
    Stop,
    /// A definite or fatal error: shut down, then report it.
    Fatal(PipelineError),
    /// Start another epoch after the delay.
    Restart(Duration),
}

/// A claim of the source's ([`Event::Claim`]) that some sink has not answered yet.
struct PendingClaim {
    id: u64,
    /// The sinks it was sent to that have not answered (a sink that fails is taken out)
    waiting: SinkSet,
    /// The answers so far, per sink
    sinks: Vec<Option<Checkpoint>>,
}

/// The source of an epoch that has stopped emitting but may still be confirming.
struct Winding {
    task: JoinHandle<Result<(), ConnectorError>>,
    confirm: watch::Sender<Option<Position>>,
}

struct Supervisor {
    p: Pipeline,
    slots: Vec<Slot>,
    stop: watch::Receiver<bool>,
    board: StatusBoard,
    from_sinks_tx: mpsc::UnboundedSender<FromSink>,
    from_sinks: mpsc::UnboundedReceiver<FromSink>,
    opened_tx: mpsc::UnboundedSender<Opened>,
    opened: mpsc::UnboundedReceiver<Opened>,
    next_generation: u64,
    source_backoff: Backoff,
    /// Events routed since the status last counted them.
    routed: u64,
    /// The running epoch's claims that wait for answers, and where its source reads them.
    claims: Vec<PendingClaim>,
    claims_tx: Option<mpsc::UnboundedSender<Claimed>>,
}

fn fail(component: &str, error: ConnectorError) -> PipelineError {
    PipelineError { component: component.to_string(), error }
}

impl Supervisor {
    fn new(p: Pipeline, stop: watch::Receiver<bool>, board: StatusBoard, stats: Vec<Arc<SinkStats>>) -> Supervisor {
        let slots = p
            .sinks
            .iter()
            .zip(stats)
            .enumerate()
            .map(|(i, (c, stats))| Slot {
                connector: c.clone(),
                name: format!("sink[{i}] {}", c.kind()),
                stats,
                life: Life::Opening { generation: 0 },
                durable: None,
                accepted: Checkpoint::default(),
                formats: Vec::new(),
                backoff: Backoff::new(p.retry),
            })
            .collect();
        let (from_sinks_tx, from_sinks) = mpsc::unbounded_channel();
        let (opened_tx, opened) = mpsc::unbounded_channel();
        let source_backoff = Backoff::new(p.retry);
        Supervisor {
            p,
            slots,
            stop,
            board,
            from_sinks_tx,
            from_sinks,
            opened_tx,
            opened,
            next_generation: 0,
            source_backoff,
            routed: 0,
            claims: Vec::new(),
            claims_tx: None,
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    async fn run(mut self) -> Result<(), PipelineError> {
        info!(pipeline = %self.p.name, sinks = self.slots.len(), "pipeline starting");
        for i in 0..self.slots.len() {
            self.start_open(i, Duration::ZERO);
        }
        // The first epoch waits for every sink's first attempt, so the source starts once with
        // all the sinks that could open; one that could not is retried in the background.
        let mut answered = vec![false; self.slots.len()];
        while !answered.iter().all(|a| *a) {
            tokio::select! {
                Some(o) = self.opened.recv() => {
                    let i = o.sink;
                    if let Err(e) = self.on_opened(o) {
                        return self.shutdown(None, Some(e)).await;
                    }
                    answered[i] = true;
                }
                _ = self.stop.changed() => if self.stopping() { return self.shutdown(None, None).await },
            }
        }
        loop {
            if self.stopping() {
                return self.shutdown(None, None).await;
            }
            self.activate_ready();
            if !self.slots.iter().any(|s| matches!(s.life, Life::Live { .. })) {
                self.board.set_state(RunState::Recovering);
                tokio::select! {
                    Some(o) = self.opened.recv() => {
                        if let Err(e) = self.on_opened(o) {
                            return self.shutdown(None, Some(e)).await;
                        }
                    }
                    _ = self.stop.changed() => {}
                }
                continue;
            }
            self.board.set_state(RunState::Running);
            let (end, winding) = self.epoch().await;
            match end {
                EpochEnd::Stop => return self.shutdown(Some(winding), None).await,
                EpochEnd::Fatal(e) => return self.shutdown(Some(winding), Some(e)).await,
                EpochEnd::Restart(delay) => {
                    self.wind_down(winding).await;
                    if let Err(e) = self.sync_sinks().await {
                        return self.shutdown(None, Some(e)).await;
                    }
                    if !delay.is_zero() {
                        self.board.set_state(RunState::Recovering);
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = self.stop.changed() => {}
                        }
                    }
                    self.board.source_restarted();
                }
            }
        }
    }

    /// Builds and opens sink `i` in the background after `delay`.
    fn start_open(&mut self, i: usize, delay: Duration) {
        self.next_generation += 1;
        let generation = self.next_generation;
        let slot = &mut self.slots[i];
        slot.life = Life::Opening { generation };
        let connector = slot.connector.clone();
        let name = self.p.name.clone();
        let ctx = SinkContext { stats: slot.stats.clone(), shared: self.p.source.shares_partitions() };
        let tx = self.opened_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let attempt = tokio::spawn(async move {
                let mut sink = connector.build(&name, i);
                match tokio::time::timeout(OPEN_TIMEOUT, sink.open(ctx)).await {
                    Ok(Ok(cp)) => Ok((sink, cp)),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(ConnectorError::msg(
                        ErrorClass::Transient,
                        format!("opening took longer than {OPEN_TIMEOUT:?}"),
                    )),
                }
            });
            let result = attempt.await.unwrap_or_else(|e| Err(panicked("opening", e)));
            let _ = tx.send(Opened { sink: i, generation, result });
        });
    }

    /// Records an open attempt's result; `Err` for errors that end the pipeline.
    fn on_opened(&mut self, o: Opened) -> Result<(), PipelineError> {
        let slot = &mut self.slots[o.sink];
        if !matches!(slot.life, Life::Opening { generation } if generation == o.generation) {
            return Ok(());
        }
        match o.result {
            Ok((sink, cp)) => {
                let checkpoint = cp.unwrap_or_default();
                info!(sink = %slot.name, position = ?checkpoint.position, tables = checkpoint.tables.len(), "sink opened");
                slot.durable = Some(checkpoint.clone());
                slot.life = Life::Ready { sink, checkpoint, generation: o.generation };
                Ok(())
            }
            Err(e) if e.class() == ErrorClass::Transient => {
                let delay = slot.backoff.after_failure(Duration::ZERO);
                warn!(sink = %slot.name, error = %chain(&e), retry_in_ms = delay.as_millis() as u64, "cannot open sink; retrying");
                self.board.error(&slot.name.clone(), e.class(), chain(&e), Some(o.sink));
                self.board.sink_state(o.sink, SinkState::Down);
                self.start_open(o.sink, delay);
                Ok(())
            }
            Err(e) => {
                let name = slot.name.clone();
                self.board.error(&name, e.class(), chain(&e), Some(o.sink));
                Err(fail(&name, e))
            }
        }
    }

    /// Starts a task for every sink that is open and waiting.
    fn activate_ready(&mut self) {
        for i in 0..self.slots.len() {
            if !matches!(self.slots[i].life, Life::Ready { .. }) {
                continue;
            }
            let Life::Ready { sink, checkpoint, generation } = std::mem::replace(&mut self.slots[i].life, Life::Closed)
            else {
                continue;
            };
            let (tx, rx) = mpsc::channel(SINK_QUEUE_BATCHES);
            let slot = &mut self.slots[i];
            slot.formats = sink.accepted_formats();
            slot.accepted = checkpoint.clone();
            let task = SinkTask {
                index: i,
                generation,
                sink,
                accepted: checkpoint,
                out: self.from_sinks_tx.clone(),
                counters: self.board.counters(i),
            };
            let handle = tokio::spawn(task.run(rx));
            let abort = handle.abort_handle();
            // A task that panics or is aborted reports like one that failed.
            let out = self.from_sinks_tx.clone();
            tokio::spawn(async move {
                if let Err(e) = handle.await {
                    let error = if e.is_panic() {
                        panicked("the sink task", e)
                    } else {
                        ConnectorError::msg(ErrorClass::Transient, "the sink did not respond and was aborted")
                    };
                    let _ = out.send(FromSink::Failed { sink: i, generation, error });
                }
            });
            slot.life = Life::Live { tx, generation, since: Instant::now(), task: abort };
            self.board.sink_state(i, SinkState::Running);
        }
    }

    fn live(&self) -> SinkSet {
        let mut set = SinkSet::empty();
        for (i, s) in self.slots.iter().enumerate() {
            if matches!(s.life, Life::Live { .. }) {
                set.insert(i);
            }
        }
        set
    }

    /// The position every sink holds durably, once every sink's is known.
    fn meet_durable(&self) -> Option<Position> {
        let mut positions = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            positions.push(s.durable.as_ref()?.position.as_ref()?);
        }
        Position::meet_all(positions.into_iter())
    }

    fn confirm(&self, tx: &watch::Sender<Option<Position>>) {
        let Some(meet) = self.meet_durable() else { return };
        let changed = tx.send_if_modified(|cur| {
            let forward = match cur {
                None => true,
                Some(c) => *c != meet && meet.includes(c),
            };
            if forward {
                *cur = Some(meet.clone());
            }
            forward
        });
        if changed {
            self.board.confirmed(meet.to_string());
        }
    }

    /// One run of the source, until it fails, a sink comes back, or the pipeline stops.
    async fn epoch(&mut self) -> (EpochEnd, Winding) {
        let live = self.live();
        let resume = Resume {
            sinks: self.slots.iter().enumerate().map(|(i, s)| live.contains(i).then(|| s.accepted.clone())).collect(),
        };
        let mut accepted: Vec<BulkFormat> = Vec::new();
        for s in self.slots.iter().filter(|s| matches!(s.life, Life::Live { .. })) {
            for f in &s.formats {
                if !accepted.contains(f) {
                    accepted.push(*f);
                }
            }
        }
        let (events_tx, mut events_rx) = mpsc::channel::<Event>(QUEUE_CAPACITY);
        let (confirm_tx, confirm_rx) = watch::channel(None);
        self.confirm(&confirm_tx);
        let (source_stop_tx, source_stop_rx) = watch::channel(false);
        let (claims_tx, claims) = mpsc::unbounded_channel();
        self.claims.clear();
        self.claims_tx = Some(claims_tx);
        let ctx = SourceContext { events: events_tx, confirmed: confirm_rx, stop: source_stop_rx, accepted, claims };
        info!(position = ?resume.position(), live = ?live, "source starting");
        let mut transform = (self.p.transform)();
        let meet = resume.position();
        let state = resume.sinks.iter().flatten().find(|c| c.position == meet).and_then(|c| c.transform.clone());
        if let Err(e) = transform.restore(state.as_ref()) {
            let task = tokio::spawn(async { Ok(()) });
            return (EpochEnd::Fatal(fail("transform", e)), Winding { task, confirm: confirm_tx });
        }
        let mut source = self.p.source.build(&self.p.name);
        let task = tokio::spawn(async move { source.run(resume, ctx).await });
        let started = Instant::now();
        let mut end: Option<EpochEnd> = None;
        let mut incoming: Vec<Event> = Vec::with_capacity(ROUTE_BATCH);
        loop {
            tokio::select! {
                biased;
                Some(msg) = self.from_sinks.recv() => {
                    if let Some(e) = self.on_sink_msg(msg, Some(&confirm_tx)) {
                        if end.is_none() {
                            end = Some(EpochEnd::Fatal(e));
                            let _ = source_stop_tx.send(true);
                        }
                    } else if end.is_none() && self.live().is_empty() {
                        // Nobody to stream to: wait for a sink to come back.
                        end = Some(EpochEnd::Restart(Duration::ZERO));
                        let _ = source_stop_tx.send(true);
                    }
                }
                Some(o) = self.opened.recv(), if end.is_none() => {
                    match self.on_opened(o) {
                        Ok(()) => {
                            if self.slots.iter().any(|s| matches!(s.life, Life::Ready { .. })) {
                                info!("a sink is back; restarting the source from the position every sink holds");
                                end = Some(EpochEnd::Restart(Duration::ZERO));
                                let _ = source_stop_tx.send(true);
                            }
                        }
                        Err(e) => {
                            end = Some(EpochEnd::Fatal(e));
                            let _ = source_stop_tx.send(true);
                        }
                    }
                }
                _ = self.stop.changed(), if end.is_none() => {
                    if self.stopping() {
                        info!("stopping: draining sinks");
                        self.board.set_state(RunState::Stopping);
                        end = Some(EpochEnd::Stop);
                        let _ = source_stop_tx.send(true);
                    }
                }
                n = events_rx.recv_many(&mut incoming, ROUTE_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    if let Err(e) = self.route(&mut incoming, transform.as_mut(), &source_stop_tx).await {
                        if end.is_none() {
                            end = Some(EpochEnd::Fatal(fail("transform", e)));
                            let _ = source_stop_tx.send(true);
                        }
                    }
                    // A stop requested while routing (whether or not route waited on a full
                    // queue and saw it): the source must be told here too, or it streams on and
                    // the pipeline never ends.
                    if end.is_none() && self.stopping() {
                        info!("stopping: draining sinks");
                        self.board.set_state(RunState::Stopping);
                        end = Some(EpochEnd::Stop);
                        let _ = source_stop_tx.send(true);
                    }
                }
            }
        }
        // The source's stream has ended: on request, or because it failed.
        debug!(requested = end.is_some(), "the source's stream ended");
        let winding = Winding { task, confirm: confirm_tx };
        if let Some(end) = end {
            return (end, winding);
        }
        let Winding { task, confirm } = winding;
        let result = match tokio::time::timeout(SOURCE_STOP_TIMEOUT, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) if e.is_panic() => Err(panicked("the source", e)),
            Ok(Err(e)) => Err(ConnectorError::new(ErrorClass::Transient, "the source task was cancelled", e)),
            Err(_) => Err(ConnectorError::msg(ErrorClass::Transient, "the source stopped emitting but did not exit")),
        };
        let error = match result {
            Ok(()) => ConnectorError::msg(ErrorClass::Transient, "the source stream ended"),
            Err(e) => e,
        };
        let done = Winding { task: tokio::spawn(async { Ok(()) }), confirm };
        self.board.error("source", error.class(), chain(&error), None);
        if error.class() != ErrorClass::Transient {
            return (EpochEnd::Fatal(fail("source", error)), done);
        }
        let delay = self.source_backoff.after_failure(started.elapsed());
        warn!(error = %chain(&error), retry_in_ms = delay.as_millis() as u64, "source interrupted; resuming from what the sinks hold");
        (EpochEnd::Restart(delay), done)
    }

    /// Handles a sink task's report; returns an error that ends the pipeline.
    fn on_sink_msg(
        &mut self,
        msg: FromSink,
        confirm: Option<&watch::Sender<Option<Position>>>,
    ) -> Option<PipelineError> {
        let (i, generation) = match &msg {
            FromSink::Durable { sink, generation, .. }
            | FromSink::Failed { sink, generation, .. }
            | FromSink::Finished { sink, generation }
            | FromSink::Claimed { sink, generation, .. } => (*sink, *generation),
        };
        let current = match self.slots[i].life {
            Life::Live { generation: g, .. } => g == generation,
            _ => false,
        };
        match msg {
            FromSink::Durable { checkpoint, commit_ts, .. } => {
                // A commit of an earlier incarnation may still land; it is durable all the same.
                self.board.durable(i, checkpoint.position.as_ref(), commit_ts);
                self.slots[i].durable = Some(checkpoint);
                if let Some(c) = confirm {
                    self.confirm(c);
                }
                None
            }
            FromSink::Claimed { id, checkpoint, .. } if current => {
                if let Some(c) = self.claims.iter_mut().find(|c| c.id == id) {
                    c.waiting.remove(i);
                    c.sinks[i] = Some(checkpoint);
                }
                self.answer_claims();
                None
            }
            FromSink::Failed { error, .. } if current => {
                // The claims it was asked are answered without it: it replays from its own
                // checkpoint when it is back.
                for c in &mut self.claims {
                    c.waiting.remove(i);
                }
                self.answer_claims();
                let name = self.slots[i].name.clone();
                self.board.error(&name, error.class(), chain(&error), Some(i));
                if error.class() != ErrorClass::Transient {
                    error!(sink = %name, error = %chain(&error), "sink failed; stopping the pipeline");
                    self.slots[i].life = Life::Closed;
                    return Some(fail(&name, error));
                }
                let ran = match self.slots[i].life {
                    Life::Live { since, .. } => since.elapsed(),
                    _ => Duration::ZERO,
                };
                let delay = self.slots[i].backoff.after_failure(ran);
                warn!(sink = %name, error = %chain(&error), retry_in_ms = delay.as_millis() as u64, "sink failed; the others continue, it reopens after a pause");
                self.board.sink_state(i, SinkState::Down);
                self.start_open(i, delay);
                None
            }
            FromSink::Finished { .. } if current => {
                // Only a closed queue ends a task without error, and the router closes queues
                // only when it retires the sink.
                self.slots[i].life = Life::Closed;
                None
            }
            _ => None,
        }
    }

    /// Passes source events through the transform and on to the sinks they concern, as one
    /// batch per sink (one queue operation per sink for up to [`ROUTE_BATCH`] events).
    async fn route(
        &mut self,
        incoming: &mut Vec<Event>,
        transform: &mut dyn Transform,
        source_stop: &watch::Sender<bool>,
    ) -> Result<(), ConnectorError> {
        let mut out: Vec<Event> = Vec::with_capacity(incoming.len());
        for ev in incoming.drain(..) {
            match ev {
                // The runtime's business, between transactions: not the transform's.
                Event::Claim { .. } => out.push(ev),
                ev => transform.apply(ev, &mut out)?,
            }
        }
        let live = self.live();
        let mut batches: Vec<Vec<Routed>> = self.slots.iter().map(|_| Vec::new()).collect();
        for ev in out {
            let mut to = live;
            let mut boundary = false;
            match &ev {
                Event::Tables { selected } => self.board.tables(selected),
                Event::Claim { id, .. } => self.claims.push(PendingClaim {
                    id: *id,
                    waiting: live,
                    sinks: self.slots.iter().map(|_| None).collect(),
                }),
                Event::Commit { position, .. } | Event::Heartbeat { position } => {
                    boundary = true;
                    self.board.events(self.routed + 1, position);
                    self.routed = 0;
                }
                Event::Copy(c) => {
                    to = to.intersect(c.to);
                    match &c.step {
                        sluice_core::CopyStep::Begin { estimated_rows, .. } => {
                            self.board.copy_begin(&c.table.id, *estimated_rows)
                        }
                        sluice_core::CopyStep::Rows(r) => self.board.copy_rows(&c.table.id, r.len() as u64),
                        sluice_core::CopyStep::Bulk(b) => self.board.copy_rows(&c.table.id, b.len() as u64),
                        sluice_core::CopyStep::End => self.board.copy_end(&c.table.id),
                        sluice_core::CopyStep::Progress { .. } => {}
                    }
                }
                _ => {}
            }
            if !boundary {
                self.routed += 1;
            }
            let state = if boundary { transform.state().map(Arc::new) } else { None };
            let ev = Arc::new(ev);
            for i in to.iter() {
                batches[i].push((ev.clone(), state.clone()));
            }
        }
        // A claim while no sink runs has nobody to wait for.
        self.answer_claims();
        for (i, batch) in batches.into_iter().enumerate() {
            if batch.is_empty() {
                continue;
            }
            let Life::Live { tx, task, .. } = &self.slots[i].life else { continue };
            let batch = match tx.try_send(ToSink::Events(batch)) {
                Ok(()) => continue,
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    debug!(sink = %self.slots[i].name, "sink queue closed; its report says why");
                    continue;
                }
                Err(mpsc::error::TrySendError::Full(batch)) => batch,
            };
            // The sink is behind: wait for room.
            let (tx, task) = (tx.clone(), task.clone());
            let send = tx.send(batch);
            tokio::pin!(send);
            let deadline = tokio::time::sleep(SINK_RESPONSE_TIMEOUT);
            tokio::pin!(deadline);
            let mut watching = !self.stopping();
            loop {
                tokio::select! {
                    r = &mut send => {
                        if r.is_err() {
                            debug!(sink = %self.slots[i].name, "sink queue closed; its report says why");
                        }
                        break;
                    }
                    // A stop while the sink is slow: tell the source now (it finishes the
                    // transaction it is in), keep delivering in order.
                    changed = self.stop.changed(), if watching => {
                        if changed.is_err() || self.stopping() {
                            watching = false;
                        }
                        if self.stopping() {
                            self.board.set_state(RunState::Stopping);
                            let _ = source_stop.send(true);
                        }
                    }
                    _ = &mut deadline => {
                        // Its queue stayed full: it is stuck (a lock wait on the target, a hung
                        // connection). Abort it; it is reopened like a sink that failed.
                        warn!(sink = %self.slots[i].name, "sink took no events for {SINK_RESPONSE_TIMEOUT:?}; aborting it");
                        task.abort();
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Answers the claims every sink asked has answered.
    fn answer_claims(&mut self) {
        while let Some(pos) = self.claims.iter().position(|c| c.waiting.is_empty()) {
            let c = self.claims.remove(pos);
            if let Some(tx) = &self.claims_tx {
                let _ = tx.send(Claimed { id: c.id, sinks: Resume { sinks: c.sinks } });
            }
        }
    }

    /// Lets a stopped source finish: no more confirmations for it.
    async fn wind_down(&mut self, winding: Winding) {
        drop(winding.confirm);
        if tokio::time::timeout(SOURCE_STOP_TIMEOUT, winding.task).await.is_err() {
            warn!("source did not exit within {SOURCE_STOP_TIMEOUT:?}");
        }
    }

    /// Between epochs: learns what every live sink has accepted; reopens those caught in the
    /// middle of a transaction or copy chunk, whose partial work will be replayed.
    async fn sync_sinks(&mut self) -> Result<(), PipelineError> {
        for i in 0..self.slots.len() {
            let Life::Live { tx, generation, .. } = &self.slots[i].life else { continue };
            let generation = *generation;
            let (reply_tx, reply_rx) = oneshot::channel();
            let tx = tx.clone();
            let asked = async move {
                tx.send(ToSink::Sync(reply_tx)).await.ok()?;
                reply_rx.await.ok()
            };
            let reply = match tokio::time::timeout(SINK_RESPONSE_TIMEOUT, asked).await {
                Ok(r) => r,
                Err(_) => {
                    warn!(sink = %self.slots[i].name, "sink did not answer within {SINK_RESPONSE_TIMEOUT:?}; reopening it");
                    Some(SinkSync { at_boundary: false, accepted: Checkpoint::default() })
                }
            };
            match reply {
                Some(SinkSync { at_boundary: true, accepted }) => self.slots[i].accepted = accepted,
                Some(SinkSync { at_boundary: false, .. }) => {
                    info!(sink = %self.slots[i].name, "sink stopped inside a transaction; reopening it");
                    self.retire(i, generation).await?;
                    self.start_open(i, Duration::ZERO);
                }
                // The task ended; its report is queued and handled below.
                None => {}
            }
        }
        // Reports of tasks that ended meanwhile.
        while let Ok(msg) = self.from_sinks.try_recv() {
            if let Some(e) = self.on_sink_msg(msg, None) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Closes sink `i`'s queue and waits until its task has ended (aborting it if it does not
    /// end in time).
    async fn retire(&mut self, i: usize, generation: u64) -> Result<(), PipelineError> {
        let abort = match std::mem::replace(&mut self.slots[i].life, Life::Closed) {
            Life::Live { task, .. } => Some(task),
            _ => None,
        };
        let deadline = Instant::now() + SINK_RESPONSE_TIMEOUT;
        let mut others = Vec::new();
        loop {
            let msg = tokio::select! {
                msg = self.from_sinks.recv() => msg,
                _ = tokio::time::sleep_until(deadline), if abort.is_some() => {
                    warn!(sink = %self.slots[i].name, "sink did not finish within {SINK_RESPONSE_TIMEOUT:?}; aborting it");
                    if let Some(a) = &abort {
                        a.abort();
                    }
                    // Its watcher reports the abort.
                    self.from_sinks.recv().await
                }
            };
            let Some(msg) = msg else { break };
            let ended = matches!(&msg, FromSink::Finished { sink, generation: g } | FromSink::Failed { sink, generation: g, .. } if *sink == i && *g == generation);
            if ended {
                break;
            }
            others.push(msg);
        }
        for msg in others {
            if let Some(e) = self.on_sink_msg(msg, None) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Ends the pipeline: sinks commit what ends at a boundary and close, the final position
    /// is confirmed, the source exits.
    async fn shutdown(&mut self, winding: Option<Winding>, error: Option<PipelineError>) -> Result<(), PipelineError> {
        self.board.set_state(RunState::Stopping);
        let mut error = error;
        let mut waiting: Vec<(usize, u64)> = Vec::new();
        let mut tasks: Vec<AbortHandle> = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            if let Life::Live { generation, task, .. } = std::mem::replace(&mut s.life, Life::Closed) {
                waiting.push((i, generation));
                tasks.push(task);
            }
        }
        let (confirm, task) = match winding {
            Some(w) => (Some(w.confirm), Some(w.task)),
            None => (None, None),
        };
        let deadline = Instant::now() + SINK_RESPONSE_TIMEOUT;
        let mut aborted = false;
        debug!(sinks = waiting.len(), "waiting for the sinks to commit and finish");
        while !waiting.is_empty() {
            let msg = tokio::select! {
                msg = self.from_sinks.recv() => msg,
                _ = tokio::time::sleep_until(deadline), if !aborted => {
                    for (i, _) in &waiting {
                        warn!(sink = %self.slots[*i].name, "sink did not finish within {SINK_RESPONSE_TIMEOUT:?}; aborting it (what it did not commit is replayed next time)");
                    }
                    tasks.iter().for_each(AbortHandle::abort);
                    aborted = true;
                    continue;
                }
            };
            let Some(msg) = msg else { break };
            match msg {
                FromSink::Durable { sink, checkpoint, commit_ts, .. } => {
                    self.board.durable(sink, checkpoint.position.as_ref(), commit_ts);
                    self.slots[sink].durable = Some(checkpoint);
                    if let Some(c) = &confirm {
                        self.confirm(c);
                    }
                }
                FromSink::Failed { sink, generation, error: e } => {
                    waiting.retain(|w| *w != (sink, generation));
                    let name = self.slots[sink].name.clone();
                    self.board.error(&name, e.class(), chain(&e), Some(sink));
                    error!(sink = %name, error = %chain(&e), "sink failed while stopping");
                    error.get_or_insert(fail(&name, e));
                }
                FromSink::Finished { sink, generation } => waiting.retain(|w| *w != (sink, generation)),
                FromSink::Claimed { .. } => {}
            }
        }
        for i in 0..self.slots.len() {
            self.board.sink_state(i, SinkState::Closed);
        }
        if let Some(c) = &confirm {
            self.confirm(c);
        }
        drop(confirm);
        debug!("sinks finished; waiting for the source to confirm and exit");
        if let Some(task) = task {
            match tokio::time::timeout(SOURCE_STOP_TIMEOUT, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    self.board.error("source", e.class(), chain(&e), None);
                    if error.is_none() && e.class() != ErrorClass::Transient {
                        error = Some(fail("source", e));
                    }
                }
                Ok(Err(e)) => warn!(error = %e, "source task panicked while stopping"),
                Err(_) => warn!("source did not exit within {SOURCE_STOP_TIMEOUT:?}"),
            }
        }
        self.board.set_state(if error.is_some() { RunState::Failed } else { RunState::Stopped });
        match error {
            Some(e) => Err(e),
            None => {
                info!(pipeline = %self.p.name, "pipeline stopped");
                Ok(())
            }
        }
    }
}

/// The error for a task that panicked (a bug in the component: retrying would repeat it).
fn panicked(what: &str, e: tokio::task::JoinError) -> ConnectorError {
    let msg = match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into()),
        Err(e) => e.to_string(),
    };
    ConnectorError::msg(ErrorClass::Fatal, format!("{what} panicked (a bug; please report it): {msg}"))
}

/// An error with its whole cause chain on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests;
