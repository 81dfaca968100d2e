//! The contracts between sources, the runtime, transforms and sinks.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};

use crate::checkpoint::{Checkpoint, TableProgress};
use crate::error::{ConnectorError, ErrorClass};
use crate::event::BulkFormat;
use crate::event::{Event, SinkSet};
use crate::position::Position;
use crate::schema::{Key, TableId};

/// What every sink holds, handed to a source when it starts.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// Per sink, in pipeline order: what a running sink holds (durably, or accepted when it kept
    /// running through a restart of the source), or `None` for a sink that is down. A down sink
    /// receives nothing in this run and may hold anything.
    pub sinks: Vec<Option<Checkpoint>>,
}

impl Resume {
    /// The running sinks.
    pub fn live(&self) -> SinkSet {
        let mut set = SinkSet::empty();
        for (i, c) in self.sinks.iter().enumerate() {
            if c.is_some() {
                set.insert(i);
            }
        }
        set
    }

    /// Where to stream from: the meet of the positions of the running sinks that have one.
    /// `None` when none has a position (or they belong to different source families).
    pub fn position(&self) -> Option<Position> {
        Position::meet_all(self.sinks.iter().flatten().filter_map(|c| c.position.as_ref()))
    }

    /// Whether every sink is running and holds nothing: the source may start from scratch (for
    /// PostgreSQL: drop its slot and take a new consistent snapshot).
    pub fn is_fresh(&self) -> bool {
        self.sinks.iter().all(|c| c.as_ref().is_some_and(Checkpoint::is_empty))
    }

    /// The copies `table` still needs: groups of running sinks that continue from the same key
    /// (`None`: from the first row). Sinks that hold the whole table are in no group. `identity`
    /// is the source's identity of the table now (see [`Checkpoint::table_ids`]); a sink that
    /// copied another table of that name needs a copy from the first row.
    pub fn copies_needed(&self, table: &TableId, identity: Option<&str>) -> Vec<(SinkSet, Option<Key>)> {
        let mut groups: Vec<(SinkSet, Option<Key>)> = Vec::new();
        for (i, cp) in self.sinks.iter().enumerate() {
            let Some(cp) = cp else { continue };
            let other = cp.is_other_table(table, identity);
            if cp.is_copied(table) && !other {
                continue;
            }
            let after = match cp.tables.get(table) {
                Some(TableProgress::Copying { after }) if !other => after.clone(),
                _ => None,
            };
            match groups.iter_mut().find(|(_, a)| *a == after) {
                Some((set, _)) => set.insert(i),
                None => groups.push((SinkSet::one(i), after)),
            }
        }
        groups
    }
}

/// Channels through which a running source talks to the runtime.
pub struct SourceContext {
    /// Where the source sends its events, in order. Bounded: a full channel is backpressure,
    /// and the source must keep its server connection alive while it waits.
    pub events: mpsc::Sender<Event>,
    /// The position durable in every sink. The source may release everything before it. When
    /// the runtime drops the sender, the source confirms the last value it saw and returns.
    pub confirmed: watch::Receiver<Option<Position>>,
    /// Becomes `true` when the source should stop: stop reading new changes, but keep
    /// confirming until `confirmed` closes.
    pub stop: watch::Receiver<bool>,
    /// Bulk formats at least one sink accepts; the source may send copied rows in one of them.
    pub accepted: Vec<BulkFormat>,
    /// Answers to the source's [`Event::Claim`]s, in the order they were sent.
    pub claims: mpsc::UnboundedReceiver<Claimed>,
}

/// The runtime's answer to an [`Event::Claim`].
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The claim's id
    pub id: u64,
    /// Per sink, as in [`Resume`]: a running sink's checkpoint after it adopted what its target
    /// holds for the claimed scope (its position is what matters), or `None` for a sink that
    /// is down or failed meanwhile. The source reads the scope from their meet.
    pub sinks: Resume,
}

/// A change source (PostgreSQL logical replication, MySQL binlog, a Kafka topic, ...).
#[async_trait]
pub trait Source: Send {
    /// Streams events, starting from what the sinks hold, until told to stop.
    ///
    /// The source starts at `resume.position()` (the meet over sinks) and may repeat
    /// transactions that some sink already holds: the runtime skips them per sink. It copies
    /// every selected table that some sink has not fully copied, addressing the copy to those
    /// sinks only, from the key each stopped at. When no sink holds anything it may instead take
    /// a snapshot consistent with the start of its stream.
    ///
    /// Returns `Ok(())` after `stop` became true and `confirmed` closed, having confirmed the
    /// final position to its server. Returns `Err` when the stream fails; the runtime may call
    /// `run` again (on a new source from the same config), so nothing may depend on state left
    /// by a failed call.
    async fn run(&mut self, resume: Resume, ctx: SourceContext) -> Result<(), ConnectorError>;
}

/// How often the runtime asks a sink to commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Commit once this many rows have been accepted since the last commit (at the next
    /// transaction boundary).
    pub max_rows: usize,
    /// Commit once the oldest uncommitted row has waited this long (at the next boundary).
    pub max_delay: Duration,
    /// Also commit as soon as the input is idle (nothing more queued for the sink, no commit of
    /// it in flight) at a boundary, instead of waiting for `max_delay`: a quiet stream's
    /// transactions become visible at once, and under load changes gather while the previous
    /// commit runs (group commit), so throughput is kept. For targets whose commits are cheap.
    pub commit_when_idle: bool,
}

/// Counters a sink keeps for the pipeline's status.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Changes the target refused, stored in the sink's dead-letter place
    pub dead_letters: AtomicU64,
}

/// What the runtime hands a sink when it opens.
#[derive(Debug, Clone, Default)]
pub struct SinkContext {
    /// Counters the sink updates
    pub stats: Arc<SinkStats>,
    /// Other processes of this pipeline may write this sink's target at the same time, each
    /// owning some of the source's partitions (a Kafka consumer group; see
    /// [`crate::SourceConnector::shares_partitions`]). A sink that supports it then takes no
    /// exclusive lock, and each commit merges its position into the stored one with
    /// [`Checkpoint::merge_shared`] under a row lock. A sink that does not keeps one writer at a
    /// time.
    pub shared: bool,
}

/// What becomes of a commit: reported through the [`Ack`] it was given.
#[derive(Debug)]
pub enum AckReport {
    /// Commit number `seq` is durable.
    Durable(u64),
    /// Commit number `seq` failed; nothing not reported durable before is durable.
    Failed(u64, ConnectorError),
    /// The acknowledgement of commit `seq` was dropped without a report: a bug in the sink,
    /// treated as a failure.
    Dropped(u64),
}

/// The obligation to report one commit's outcome. A sink sends it with [`Ack::durable`] once
/// the commit is durable, or [`Ack::fail`]s it; dropping it unsent reports
/// [`AckReport::Dropped`], which the runtime treats as the sink failing. It may travel into a
/// background task that completes the commit.
#[must_use = "an Ack must be sent once its commit is durable; dropping it fails the sink"]
pub struct Ack {
    seq: u64,
    tx: Option<mpsc::UnboundedSender<AckReport>>,
}

impl Ack {
    /// The commit's number, increasing by one per commit of a sink.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Reports the commit durable.
    pub fn durable(mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(AckReport::Durable(self.seq));
        }
    }

    /// Reports the commit failed.
    pub fn fail(mut self, error: ConnectorError) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(AckReport::Failed(self.seq, error));
        }
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(AckReport::Dropped(self.seq));
        }
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ack({})", self.seq)
    }
}

/// Issues numbered [`Ack`]s for one sink; their reports arrive on the receiver.
#[derive(Debug)]
pub struct AckIssuer {
    next: u64,
    tx: mpsc::UnboundedSender<AckReport>,
}

impl AckIssuer {
    /// An issuer and the receiver of its reports.
    pub fn new() -> (AckIssuer, mpsc::UnboundedReceiver<AckReport>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (AckIssuer { next: 0, tx }, rx)
    }

    /// The next acknowledgement.
    pub fn issue(&mut self) -> Ack {
        self.next += 1;
        Ack { seq: self.next, tx: Some(self.tx.clone()) }
    }
}

/// A change sink.
///
/// The runtime calls `open` once, then `write` for every event addressed to it in source order
/// (`Begin`, `Change`, `Commit` and the `Copy` steps for it; never `Tables`, `StreamStart` or
/// `Heartbeat`), interleaved with `commit` calls made only between transactions, and `close`
/// before it drops the sink. After any `Err` the sink is dropped; a new one is built from the
/// config and opened, and resumes from what its checkpoint says.
#[async_trait]
pub trait Sink: Send {
    /// A short name for logs and metrics, e.g. `sink[0] postgres replica`.
    fn name(&self) -> &str;

    /// When the runtime should commit.
    fn batch_policy(&self) -> BatchPolicy;

    /// Whether the sink asks to commit at the next boundary before [`Sink::batch_policy`] says
    /// so: its buffers hold more bytes than it wants to keep (the analytical sinks' size limit).
    fn wants_commit(&self) -> bool {
        false
    }

    /// The bulk formats the sink takes copied rows in as they are. It is only ever sent
    /// [`crate::CopyStep::Bulk`] rows in these formats; the runtime decodes the others.
    fn accepted_formats(&self) -> Vec<BulkFormat> {
        Vec::new()
    }

    /// Connects and returns the checkpoint stored with the data, or `None` if this sink has
    /// never committed.
    async fn open(&mut self, ctx: SinkContext) -> Result<Option<Checkpoint>, ConnectorError>;

    /// Accepts one event. `Ok` means accepted, not durable: the change may sit in memory or in
    /// an uncommitted target transaction. A sink keeps its memory bounded by writing buffered
    /// rows out early, never by committing part of a source transaction.
    async fn write(&mut self, event: &Event) -> Result<(), ConnectorError>;

    /// Accepts several events in order, exactly as calling [`Sink::write`] on each would. The
    /// runtime hands over runs of a transaction's events this way; a sink overrides it to avoid
    /// a call per event, and may take the rows out of an event no other sink shares
    /// (`Arc::try_unwrap`) instead of copying them.
    async fn write_batch(&mut self, events: Vec<Arc<Event>>) -> Result<(), ConnectorError> {
        for ev in events {
            self.write(&ev).await?;
        }
        Ok(())
    }

    /// Makes every event written so far durable together with `checkpoint` (stored where
    /// [`Sink::open`] reads it), then sends `ack`. The commit may complete in the background
    /// after this returns; the sink then keeps later writes from overtaking it. `Err` (or a
    /// failed ack) means nothing not yet acknowledged may be assumed durable.
    async fn commit(&mut self, checkpoint: Checkpoint, ack: Ack) -> Result<(), ConnectorError>;

    /// For a sink whose target other processes of the pipeline write too
    /// ([`SinkContext::shared`]), at an [`Event::Claim`]: reads the position stored in the
    /// target and, for the parts of the stream `scope` names, takes the stored position as this
    /// process's own from then on (another process may have delivered them since this one last
    /// did). Called only at a boundary with every commit acknowledged. Returns the stored
    /// position, or `None` when nobody else writes the target (what the sink accepted is then
    /// what it holds). `Err` fails the sink like a failed commit.
    async fn adopt(&mut self, scope: &Position) -> Result<Option<Position>, ConnectorError> {
        let _ = scope;
        Ok(None)
    }

    /// Completes background work; every [`Ack`] it was given has been sent when this returns.
    /// Uncommitted events are discarded (they will be replayed).
    async fn close(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// A stage between the source and the sinks that rewrites the stream (the SQL transforms plug
/// in here). It sees every event in order and may drop, change or add events. Its state at a
/// position is stored with the sinks' checkpoints and handed back after a restart.
pub trait Transform: Send {
    /// A short name for logs.
    fn name(&self) -> &str;

    /// Restores the state stored with the checkpoint the stream resumes from (`None`: none).
    fn restore(&mut self, state: Option<&serde_json::Value>) -> Result<(), ConnectorError>;

    /// Processes one event into `out`. A transaction's `Begin` and `Commit` must be passed on.
    fn apply(&mut self, event: Event, out: &mut Vec<Event>) -> Result<(), ConnectorError>;

    /// The state to store at the current position (after the last event applied), if any.
    fn state(&self) -> Option<serde_json::Value>;
}

/// The transform that changes nothing.
#[derive(Debug, Default)]
pub struct Identity;

impl Transform for Identity {
    fn name(&self) -> &str {
        "identity"
    }

    fn restore(&mut self, state: Option<&serde_json::Value>) -> Result<(), ConnectorError> {
        match state {
            None => Ok(()),
            Some(_) => Err(ConnectorError::msg(
                ErrorClass::Fatal,
                "the sinks hold state of a transform that this pipeline no longer has; restore the transform",
            )),
        }
    }

    fn apply(&mut self, event: Event, out: &mut Vec<Event>) -> Result<(), ConnectorError> {
        out.push(event);
        Ok(())
    }

    fn state(&self) -> Option<serde_json::Value> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    #[test]
    fn an_ack_dropped_unsent_reports_itself() {
        let (mut issuer, mut rx) = AckIssuer::new();
        let a = issuer.issue();
        let b = issuer.issue();
        let c = issuer.issue();
        a.durable();
        drop(b);
        c.fail(ConnectorError::msg(ErrorClass::Transient, "x"));
        assert!(matches!(rx.try_recv(), Ok(AckReport::Durable(1))));
        assert!(matches!(rx.try_recv(), Ok(AckReport::Dropped(2))));
        assert!(matches!(rx.try_recv(), Ok(AckReport::Failed(3, _))));
    }

    #[test]
    fn resume_groups_sinks_by_where_their_copy_stopped() {
        let t = TableId::new("public", "t");
        let lsn = |s: &str| Some(Position::Pg(s.parse().unwrap()));
        let mut a = Checkpoint { position: lsn("0/300"), ..Default::default() };
        a.tables.insert(t.clone(), TableProgress::Copied);
        let mut b = Checkpoint { position: lsn("0/200"), ..Default::default() };
        b.tables.insert(t.clone(), TableProgress::Copying { after: Some(vec![Value::Int(5)]) });
        let r =
            Resume { sinks: vec![Some(a), Some(b), Some(Checkpoint::default()), Some(Checkpoint::default()), None] };
        assert_eq!(r.position(), lsn("0/200"), "sinks without a position, or down, do not hold the stream back");
        assert!(!r.is_fresh());
        assert_eq!(r.live().iter().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        let needs = r.copies_needed(&t, None);
        assert_eq!(needs.len(), 2);
        assert_eq!((needs[0].0.iter().collect::<Vec<_>>(), needs[0].1.clone()), (vec![1], Some(vec![Value::Int(5)])));
        assert_eq!((needs[1].0.iter().collect::<Vec<_>>(), needs[1].1.clone()), (vec![2, 3], None));
        // The table was dropped and created again: sinks that copied the old one start over.
        let mut r = r;
        for cp in r.sinks.iter_mut().flatten().take(2) {
            cp.table_ids.insert(t.clone(), "16384".into());
        }
        assert_eq!(r.copies_needed(&t, Some("16384")).len(), 2, "same table: as before");
        let needs = r.copies_needed(&t, Some("17000"));
        assert_eq!(needs.len(), 1);
        assert_eq!((needs[0].0.iter().collect::<Vec<_>>(), needs[0].1.clone()), (vec![0, 1, 2, 3], None));
        assert!(Resume { sinks: vec![Some(Checkpoint::default())] }.is_fresh());
        assert!(!Resume { sinks: vec![Some(Checkpoint::default()), None] }.is_fresh(), "a down sink may hold anything");
    }
}
