use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};

use crate::error::ConnectorError;
use crate::event::Event;
use crate::position::{Checkpoint, Position};

/// Channels through which a running source talks to the runtime.
pub struct SourceContext {
    /// Where the source sends its events, in order. Bounded: a full channel is backpressure,
    /// and the source must keep its server connection alive while it waits.
    pub events: mpsc::Sender<Event>,
    /// The position durable in every sink. The source may release everything before it. When
    /// the runtime drops the sender, the source confirms the last value it saw and returns.
    pub confirmed: watch::Receiver<Option<Position>>,
    /// Becomes `true` when the pipeline is shutting down: stop reading new changes, but keep
    /// confirming until `confirmed` closes.
    pub stop: watch::Receiver<bool>,
}

/// A change source (PostgreSQL logical replication, MySQL binlog, a Kafka topic, ...).
#[async_trait]
pub trait Source: Send {
    /// Streams events from `resume` until told to stop.
    ///
    /// `resume` is the oldest checkpoint among the sinks. When `resume.snapshot_done` is false
    /// (and the source is configured to snapshot) the source starts over with a fresh,
    /// consistent snapshot, preceded by [`Event::SnapshotBegin`]. Otherwise it emits only
    /// transactions that end after `resume.position`; it may repeat transactions at or before
    /// it, which sinks skip.
    ///
    /// Returns `Ok(())` after `stop` became true and `confirmed` closed, having confirmed the
    /// final position to its server. Returns `Err` when the stream fails; the runtime may call
    /// `run` again with the checkpoint current at that time, so `run` must not depend on state
    /// left by an earlier failed call.
    async fn run(&mut self, resume: Checkpoint, ctx: SourceContext) -> Result<(), ConnectorError>;
}

/// How often the runtime asks a sink to commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Commit once this many rows have been accepted since the last commit (at the next
    /// transaction boundary).
    pub max_rows: usize,
    /// Commit once the oldest uncommitted row has waited this long (at the next boundary).
    pub max_delay: Duration,
}

/// A change sink.
///
/// The runtime calls `open` once, then `write` for every event in source order, interleaved
/// with `commit` calls made only right after a boundary event ([`Event::boundary_position`]).
#[async_trait]
pub trait Sink: Send {
    /// A short name for logs and metrics, e.g. `sink[0] postgres replica`.
    fn name(&self) -> &str;

    /// When the runtime should commit.
    fn batch_policy(&self) -> BatchPolicy;

    /// Connects and returns what this sink has durably stored, read in the same place the data
    /// lives. A sink that has never run returns `Checkpoint::default()`. Called once per run;
    /// after an error the runtime builds a new sink.
    async fn open(&mut self) -> Result<Checkpoint, ConnectorError>;

    /// Accepts one event. `Ok` means accepted, not durable: the change may sit in memory or in
    /// an uncommitted target transaction. A sink keeps its memory bounded by writing buffered
    /// rows out early, never by committing part of a source transaction. Events of a
    /// transaction ending at or before the sink's stored checkpoint are skipped by the runtime
    /// before they reach `write`.
    async fn write(&mut self, event: &Event) -> Result<(), ConnectorError>;

    /// Commits every event written so far, atomically with the checkpoint they reach; the
    /// commit may complete in the background. Only called at a boundary. Returns the newest checkpoint that has become durable since
    /// the last one returned (`None` if none has): a sink that commits in the background may
    /// return an earlier commit's checkpoint here and this one from a later call or from
    /// [`Sink::flush`]. A checkpoint is returned only once it is durable. After `Err` nothing
    /// that was not yet reported durable may be assumed durable, and the sink must not be used
    /// again.
    async fn commit(&mut self) -> Result<Option<Checkpoint>, ConnectorError>;

    /// Whether a commit is still completing in the background.
    fn has_inflight(&self) -> bool {
        false
    }

    /// Waits until the background commit, if any, has completed. Cancel-safe: the runtime
    /// waits on this alongside new events.
    async fn wait_inflight(&mut self) {}

    /// Waits for every background commit and returns the newest durable checkpoint not yet
    /// returned.
    async fn flush(&mut self) -> Result<Option<Checkpoint>, ConnectorError> {
        Ok(None)
    }

    /// Rows accepted since the last commit.
    fn pending_rows(&self) -> usize;
}
