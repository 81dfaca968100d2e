//! The pipeline driver.
//!
//! ```text
//!            events (bounded)            per-sink queues (bounded)
//!  source ───────────────────▶ router ──────────────────────────▶ sink task 0 ──┐
//!    ▲                           │    ──────────────────────────▶ sink task 1 ──┤
//!    │ confirmed = min(durable)  │◀────────── Ack(checkpoint) / Failed ─────────┘
//!    └───────────────────────────┘
//! ```
//!
//! Each sink task decides when to commit from its [`BatchPolicy`], always at a source
//! transaction boundary, and acknowledges the checkpoint it made durable. The router keeps the
//! latest durable position per sink and confirms the minimum to the source; nothing is
//! confirmed before every sink holds it. Bounded queues give backpressure end to end.
//!
//! Replays: after a restart the source may repeat transactions that a sink already holds;
//! the sink task drops every transaction whose commit position is below the sink's stored
//! checkpoint, so each sink sees each transaction once.
//!
//! Shutdown: the router asks the source to stop, forwards what the source already emitted,
//! lets every sink commit what ends at a boundary (an unfinished transaction is rolled back
//! and will be replayed), confirms the final position, then waits for the source to report it.

use std::sync::Arc;
use std::time::Duration;

use sluice_core::{BatchPolicy, Checkpoint, ConnectorError, ErrorClass, Event, Position, Sink, Source, SourceContext};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Capacity of the source's event queue and of each sink's queue.
pub const QUEUE_CAPACITY: usize = 4096;

/// A pipeline failure, naming the component that failed.
#[derive(Debug, thiserror::Error)]
#[error("{component}: {error}")]
pub struct PipelineError {
    /// `source` or the sink's name
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

enum SinkMsg {
    Ack(usize, Checkpoint),
    Failed(usize, ConnectorError),
}

/// Runs one pipeline until `stop` becomes true (then drains and returns `Ok`) or a component
/// fails (then returns its error; nothing unconfirmed is lost, as the source replays it).
pub async fn run_pipeline(
    mut source: Box<dyn Source>,
    mut sinks: Vec<Box<dyn Sink>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), PipelineError> {
    let mut checkpoints = Vec::with_capacity(sinks.len());
    for s in sinks.iter_mut() {
        let cp = s.open().await.map_err(|error| PipelineError { component: s.name().to_string(), error })?;
        checkpoints.push(cp);
    }
    let resume = Checkpoint {
        snapshot_done: checkpoints.iter().all(|c| c.snapshot_done),
        position: checkpoints.iter().map(|c| c.position).min().flatten(),
    };
    info!(position = ?resume.position, snapshot_done = resume.snapshot_done, sinks = sinks.len(), "pipeline starting");

    let (events_tx, mut events_rx) = mpsc::channel::<Event>(QUEUE_CAPACITY);
    let (confirm_tx, confirm_rx) = watch::channel::<Option<Position>>(resume.position.filter(|_| resume.snapshot_done));
    let (source_stop_tx, source_stop_rx) = watch::channel(false);
    let (acks_tx, mut acks_rx) = mpsc::unbounded_channel::<SinkMsg>();

    let mut sink_txs = Vec::with_capacity(sinks.len());
    let mut sink_tasks = Vec::with_capacity(sinks.len());
    let names: Vec<String> = sinks.iter().map(|s| s.name().to_string()).collect();
    for (i, (sink, cp)) in sinks.into_iter().zip(&checkpoints).enumerate() {
        let (tx, rx) = mpsc::channel::<Arc<Event>>(QUEUE_CAPACITY);
        sink_txs.push(tx);
        sink_tasks.push(tokio::spawn(sink_task(i, sink, *cp, rx, acks_tx.clone())));
    }
    drop(acks_tx);
    let mut source_task = tokio::spawn(async move {
        let ctx = SourceContext { events: events_tx, confirmed: confirm_rx, stop: source_stop_rx };
        source.run(resume, ctx).await
    });

    let mut durable: Vec<Option<Position>> =
        checkpoints.iter().map(|c| c.position.filter(|_| c.snapshot_done)).collect();
    let mut stopping = false;
    let mut failure: Option<PipelineError> = None;
    let fail = |component: &str, error: ConnectorError| PipelineError { component: component.to_string(), error };

    // Route events until the source's stream ends (on stop, or because it failed).
    loop {
        tokio::select! {
            biased;
            msg = acks_rx.recv() => match msg {
                Some(SinkMsg::Ack(i, cp)) => {
                    durable[i] = cp.position;
                    confirm(&confirm_tx, &durable);
                }
                Some(SinkMsg::Failed(i, e)) => { failure = Some(fail(&names[i], e)); break; }
                None => break,
            },
            _ = stop.changed(), if !stopping => {
                if *stop.borrow() {
                    info!("stopping: draining sinks");
                    stopping = true;
                    let _ = source_stop_tx.send(true);
                }
            }
            ev = events_rx.recv() => match ev {
                Some(ev) => {
                    let ev = Arc::new(ev);
                    for (i, tx) in sink_txs.iter().enumerate() {
                        if tx.send(ev.clone()).await.is_err() {
                            // The task ended; its Failed message says why.
                            debug!(sink = %names[i], "sink queue closed");
                        }
                    }
                }
                None => break,
            },
        }
    }

    if let Some(f) = failure {
        source_task.abort();
        for t in &sink_tasks {
            t.abort();
        }
        return Err(f);
    }
    if !stopping {
        // The source ended on its own: that is a failure (it only ends when asked).
        for t in &sink_tasks {
            t.abort();
        }
        return match source_task.await {
            Ok(Err(e)) => Err(fail("source", e)),
            Ok(Ok(())) => Err(fail("source", ConnectorError::msg(ErrorClass::Transient, "source stream ended"))),
            Err(e) => Err(fail("source", ConnectorError::new(ErrorClass::Transient, "source task failed", e))),
        };
    }

    // Drain: sinks commit what ends at a boundary and send their last acks.
    let mut failure: Option<PipelineError> = None;
    drop(sink_txs);
    while let Some(msg) = acks_rx.recv().await {
        match msg {
            SinkMsg::Ack(i, cp) => {
                durable[i] = cp.position;
                confirm(&confirm_tx, &durable);
            }
            SinkMsg::Failed(i, e) => failure = Some(fail(&names[i], e)),
        }
    }
    drop(confirm_tx);
    let source_result = tokio::select! {
        r = &mut source_task => r,
        _ = tokio::time::sleep(Duration::from_secs(30)) => {
            source_task.abort();
            warn!("source did not stop within 30s");
            Ok(Ok(()))
        }
    };
    if let Some(f) = failure {
        return Err(f);
    }
    match source_result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(fail("source", e)),
        Err(e) => Err(fail("source", ConnectorError::new(ErrorClass::Transient, "source task failed", e))),
    }
}

fn confirm(tx: &watch::Sender<Option<Position>>, durable: &[Option<Position>]) {
    if durable.iter().all(Option::is_some) {
        let min = durable.iter().flatten().min().copied();
        tx.send_if_modified(|cur| {
            if min > *cur {
                *cur = min;
                true
            } else {
                false
            }
        });
    }
}

async fn sink_task(
    idx: usize,
    mut sink: Box<dyn Sink>,
    stored: Checkpoint,
    mut rx: mpsc::Receiver<Arc<Event>>,
    acks: mpsc::UnboundedSender<SinkMsg>,
) {
    let policy = sink.batch_policy();
    if let Err(e) = drive_sink(idx, sink.as_mut(), stored, policy, &mut rx, &acks).await {
        let _ = acks.send(SinkMsg::Failed(idx, e));
    }
}

async fn drive_sink(
    idx: usize,
    sink: &mut dyn Sink,
    stored: Checkpoint,
    policy: BatchPolicy,
    rx: &mut mpsc::Receiver<Arc<Event>>,
    acks: &mpsc::UnboundedSender<SinkMsg>,
) -> Result<(), ConnectorError> {
    let mut at_boundary = true;
    let mut skipping = false;
    let mut oldest: Option<Instant> = None;
    loop {
        let due = oldest.map(|t| t + policy.max_delay);
        let inflight = sink.has_inflight();
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = sleep_until_opt(due), if at_boundary && due.is_some() => {
                commit(idx, sink, acks).await?;
                oldest = None;
                continue;
            }
            _ = sink.wait_inflight(), if inflight => {
                ack(idx, sink.flush().await?, acks);
                continue;
            }
        };
        let Some(ev) = ev else {
            if at_boundary {
                commit(idx, sink, acks).await?;
            } else {
                info!(sink = %sink.name(), "rolling back an unfinished source transaction; it will be replayed");
            }
            ack(idx, sink.flush().await?, acks);
            return Ok(());
        };
        match &*ev {
            Event::Begin(meta) => {
                if stored.snapshot_done && stored.position.is_some_and(|p| meta.commit_position < p) {
                    skipping = true;
                    continue;
                }
                at_boundary = false;
            }
            Event::Change(_) if skipping => continue,
            Event::Commit { .. } if skipping => {
                skipping = false;
                continue;
            }
            Event::SnapshotBegin { .. } => at_boundary = false,
            _ => {}
        }
        sink.write(&ev).await?;
        if oldest.is_none() && sink.pending_rows() > 0 {
            oldest = Some(Instant::now());
        }
        if let Some(_pos) = ev.boundary_position() {
            at_boundary = true;
            let full = sink.pending_rows() >= policy.max_rows;
            let late = oldest.is_some_and(|t| t.elapsed() >= policy.max_delay);
            let idle_marker = matches!(&*ev, Event::Heartbeat { .. }) && sink.pending_rows() == 0;
            let snapshot_done = matches!(&*ev, Event::SnapshotEnd { .. });
            if full || late || idle_marker || snapshot_done {
                commit(idx, sink, acks).await?;
                oldest = None;
            }
        }
    }
}

async fn commit(idx: usize, sink: &mut dyn Sink, acks: &mpsc::UnboundedSender<SinkMsg>) -> Result<(), ConnectorError> {
    let cp = sink.commit().await?;
    ack(idx, cp, acks);
    Ok(())
}

fn ack(idx: usize, cp: Option<Checkpoint>, acks: &mpsc::UnboundedSender<SinkMsg>) {
    if let Some(cp) = cp {
        debug!(sink = idx, position = ?cp.position, "durable");
        let _ = acks.send(SinkMsg::Ack(idx, cp));
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
