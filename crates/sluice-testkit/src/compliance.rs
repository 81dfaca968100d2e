//! The compliance suite every sink must pass, generic over [`Sink`].
//!
//! Each check drives a sink the way the runtime does (events in order, commits between
//! transactions with a checkpoint and an [`sluice_core::Ack`]) and reads what landed in the
//! target through the harness, which uses the target's own client, never the sink's code:
//!
//! - an empty batch commits and its checkpoint reads back;
//! - an acknowledgement arrives only once the data is visible to another reader;
//! - a crash between write and commit leaves nothing of the uncommitted batch, and the stored
//!   checkpoint is the last acknowledged one;
//! - replaying from that checkpoint gives the exact result (and, for sinks that apply state,
//!   replaying a transaction twice changes nothing);
//! - `close` drains: every commit handed over is acknowledged and durable when it returns;
//! - a schema change in the middle of a batch (a column added between two transactions) lands
//!   with both shapes' rows correct.
//!
//! A sink crate runs it with its own harness: `run_all(&harness).await` from a test.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sluice_core::{
    AckIssuer, AckReport, Change, Checkpoint, ColumnSchema, DataType, Event, Lsn, Op, Position, Row, SchemaRef, Sink,
    SinkContext, TableId, TableProgress, TableSchema, TxnMeta, Value,
};
use tokio::sync::mpsc;

/// How long an acknowledgement may take.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// What kind of result a sink produces from a stream of changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The target holds the current state of each row (replica).
    State,
    /// The target holds one entry per change (change log).
    Log,
}

/// What the suite needs to know about a sink and its target.
#[async_trait]
pub trait SinkHarness: Send + Sync {
    /// A new sink instance writing to the harness's target, always as the same pipeline and
    /// sink, so a new instance reads the checkpoint an earlier one stored.
    fn sink(&self) -> Box<dyn Sink>;

    /// State or log.
    fn kind(&self) -> Kind;

    /// What the target holds for `table`, read with the target's own client:
    /// - [`Kind::State`]: every row, columns in order, as text (`None` for NULL), ordered by the
    ///   first column;
    /// - [`Kind::Log`]: one entry per change in arrival order: `[op, id]` where `op` is `c`, `u`,
    ///   `d`, `r` or `t` and `id` the row's first column as text.
    async fn rows(&self, table: &TableId) -> Vec<Vec<Option<String>>>;
}

/// Runs every check; each uses its own table, so they may share a target.
pub async fn run_all(h: &dyn SinkHarness) {
    empty_batch_commits_and_its_checkpoint_reads_back(h).await;
    acknowledgement_comes_only_after_the_data_is_durable(h).await;
    crash_between_write_and_commit_then_replay(h).await;
    close_drains_background_commits(h).await;
    schema_change_in_the_middle_of_a_batch(h).await;
}

fn schema(table: &str, extra: bool, version: u64) -> SchemaRef {
    let mut columns = vec![
        ColumnSchema::new("id", DataType::Int64, "bigint").key(),
        ColumnSchema::new("v", DataType::Text, "text"),
        ColumnSchema::new("n", DataType::Int32, "integer"),
    ];
    if extra {
        columns.push(ColumnSchema::new("extra", DataType::Text, "text"));
    }
    Arc::new(TableSchema { id: TableId::new("compliance", table), columns, version, dialect: "postgres".into() })
}

fn row(id: i64, v: &str, n: i32) -> Row {
    vec![Value::Int(id), Value::Text(v.into()), Value::Int(n as i64)]
}

/// A source transaction: `Begin`, the changes, `Commit`; it ends at LSN `100 * seq + 10`.
fn txn(seq: u64, table: &SchemaRef, ops: Vec<Op>) -> Vec<Event> {
    let meta = TxnMeta { xid: seq, commit_ts_micros: 1_700_000_000_000_000, position: Position::Pg(Lsn(100 * seq)) };
    let mut out = vec![Event::Begin(meta.clone())];
    out.extend(ops.into_iter().map(|op| Event::Change(Change { table: table.clone(), op })));
    out.push(Event::Commit { meta, position: Position::Pg(Lsn(100 * seq + 10)) });
    out
}

/// A base for the positions of one suite test: later tests of a harness get higher ones, as a
/// real source's would be, since a sink refuses to move its checkpoint backwards.
fn next_base() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1000, std::sync::atomic::Ordering::SeqCst)
}

fn checkpoint(seq: u64, table: &SchemaRef) -> Checkpoint {
    let mut cp = Checkpoint { position: Some(Position::Pg(Lsn(100 * seq + 10))), ..Default::default() };
    cp.tables.insert(table.id.clone(), TableProgress::Copied);
    cp
}

struct Driven {
    sink: Box<dyn Sink>,
    acks: AckIssuer,
    reports: mpsc::UnboundedReceiver<AckReport>,
    stored: Option<Checkpoint>,
}

async fn open(h: &dyn SinkHarness) -> Driven {
    let mut sink = h.sink();
    let stored = sink.open(SinkContext::default()).await.unwrap_or_else(|e| panic!("open {}: {e}", sink.name()));
    let (acks, reports) = AckIssuer::new();
    Driven { sink, acks, reports, stored }
}

impl Driven {
    async fn write_all(&mut self, events: &[Event]) {
        for ev in events {
            self.sink.write(ev).await.unwrap_or_else(|e| panic!("write {ev:?}: {e}"));
        }
    }

    /// Hands over a commit; returns its ack number.
    async fn commit(&mut self, cp: Checkpoint) -> u64 {
        let ack = self.acks.issue();
        let seq = ack.seq();
        self.sink.commit(cp, ack).await.unwrap_or_else(|e| panic!("commit: {e}"));
        seq
    }

    /// Waits for the report of commit `seq`, which must say durable.
    async fn durable(&mut self, seq: u64) {
        match tokio::time::timeout(ACK_TIMEOUT, self.reports.recv()).await {
            Ok(Some(AckReport::Durable(s))) if s == seq => {}
            Ok(Some(AckReport::Failed(s, e))) => panic!("commit {s} failed: {e}"),
            Ok(other) => panic!("expected commit {seq} durable, got {other:?}"),
            Err(_) => panic!("commit {seq} not acknowledged within {ACK_TIMEOUT:?}"),
        }
    }
}

fn expect_state(rows: &[(i64, &str, i32)]) -> Vec<Vec<Option<String>>> {
    rows.iter().map(|(i, v, n)| vec![Some(i.to_string()), Some(v.to_string()), Some(n.to_string())]).collect()
}

fn expect_log(entries: &[(&str, i64)]) -> Vec<Vec<Option<String>>> {
    entries.iter().map(|(op, id)| vec![Some(op.to_string()), Some(id.to_string())]).collect()
}

/// An empty batch commits; the checkpoint it carried reads back from a new instance.
pub async fn empty_batch_commits_and_its_checkpoint_reads_back(h: &dyn SinkHarness) {
    let base = next_base();
    let t = schema("empty_batch", false, 1);
    let mut d = open(h).await;
    let cp = checkpoint(base + 1, &t);
    let seq = d.commit(cp.clone()).await;
    d.durable(seq).await;
    d.sink.close().await.expect("close");
    let again = open(h).await;
    let stored = again.stored.expect("a checkpoint was stored by the empty commit");
    assert_eq!(stored.tables, cp.tables, "empty batch: stored table states");
    assert!(
        stored
            .position
            .as_ref()
            .is_some_and(|p| p.includes(&Position::Pg(Lsn(0))) && cp.position.as_ref().is_some_and(|c| c.includes(p))),
        "empty batch: stored position {:?} is not at or before {:?}",
        stored.position,
        cp.position
    );
}

/// The ack of a commit arrives only when another reader sees the data.
pub async fn acknowledgement_comes_only_after_the_data_is_durable(h: &dyn SinkHarness) {
    let base = next_base();
    let t = schema("ack_durable", false, 1);
    let mut d = open(h).await;
    d.write_all(&txn(1, &t, vec![Op::Insert { after: row(1, "a", 1) }, Op::Insert { after: row(2, "b", 2) }])).await;
    assert!(d.reports.try_recv().is_err(), "an acknowledgement arrived before any commit");
    let seq = d.commit(checkpoint(base + 1, &t)).await;
    d.durable(seq).await;
    let seen = h.rows(&t.id).await;
    let expected = match h.kind() {
        Kind::State => expect_state(&[(1, "a", 1), (2, "b", 2)]),
        Kind::Log => expect_log(&[("c", 1), ("c", 2)]),
    };
    assert_eq!(seen, expected, "acknowledged data must be visible to another reader");
    d.sink.close().await.expect("close");
}

/// A crash between write and commit loses the uncommitted batch (and only it); replaying from
/// the stored checkpoint gives the exact result; for a state sink, replaying twice changes nothing.
pub async fn crash_between_write_and_commit_then_replay(h: &dyn SinkHarness) {
    let base = next_base();
    let t = schema("crash_replay", false, 1);
    let txn1 = txn(1, &t, vec![Op::Insert { after: row(1, "a", 1) }, Op::Insert { after: row(2, "b", 2) }]);
    let txn2 = txn(
        2,
        &t,
        vec![
            Op::Update { before: None, after: row(1, "a2", 10) },
            Op::Delete { before: vec![Value::Int(2), Value::Null, Value::Null] },
            Op::Insert { after: row(3, "c", 3) },
        ],
    );
    let mut d = open(h).await;
    d.write_all(&txn1).await;
    let seq = d.commit(checkpoint(base + 1, &t)).await;
    d.durable(seq).await;
    d.write_all(&txn2).await;
    // The crash: the sink is dropped with txn2 written but not committed.
    drop(d);
    let mut d = open(h).await;
    let stored = d.stored.clone().expect("checkpoint after crash");
    assert_eq!(
        stored.position,
        checkpoint(base + 1, &t).position,
        "after a crash the stored checkpoint is the last acknowledged one"
    );
    let after_crash = h.rows(&t.id).await;
    let (after1, after2) = match h.kind() {
        Kind::State => (expect_state(&[(1, "a", 1), (2, "b", 2)]), expect_state(&[(1, "a2", 10), (3, "c", 3)])),
        Kind::Log => {
            (expect_log(&[("c", 1), ("c", 2)]), expect_log(&[("c", 1), ("c", 2), ("u", 1), ("d", 2), ("c", 3)]))
        }
    };
    assert_eq!(after_crash, after1, "nothing of the uncommitted transaction may be visible after a crash");
    // The runtime replays from the checkpoint: txn2 again.
    d.write_all(&txn2).await;
    let seq = d.commit(checkpoint(base + 2, &t)).await;
    d.durable(seq).await;
    assert_eq!(h.rows(&t.id).await, after2, "replay after a crash");
    if h.kind() == Kind::State {
        d.write_all(&txn2).await;
        let seq = d.commit(checkpoint(base + 2, &t)).await;
        d.durable(seq).await;
        assert_eq!(h.rows(&t.id).await, after2, "replaying a transaction twice must not change the state");
    }
    d.sink.close().await.expect("close");
}

/// `close` waits for background commits: every commit handed over is acknowledged and its data
/// visible when it returns.
pub async fn close_drains_background_commits(h: &dyn SinkHarness) {
    let base = next_base();
    let t = schema("drain", false, 1);
    let mut d = open(h).await;
    let mut seqs = Vec::new();
    for i in 1..=3u64 {
        d.write_all(&txn(i, &t, vec![Op::Insert { after: row(i as i64, "x", i as i32) }])).await;
        seqs.push(d.commit(checkpoint(base + i, &t)).await);
    }
    d.sink.close().await.expect("close");
    for s in seqs {
        match d.reports.try_recv() {
            Ok(AckReport::Durable(got)) => assert_eq!(got, s, "acknowledgements in commit order"),
            other => panic!("commit {s} not acknowledged when close returned: {other:?}"),
        }
    }
    let expected = match h.kind() {
        Kind::State => expect_state(&[(1, "x", 1), (2, "x", 2), (3, "x", 3)]),
        Kind::Log => expect_log(&[("c", 1), ("c", 2), ("c", 3)]),
    };
    assert_eq!(h.rows(&t.id).await, expected, "data of drained commits");
}

/// A column added between two transactions of one batch.
pub async fn schema_change_in_the_middle_of_a_batch(h: &dyn SinkHarness) {
    let base = next_base();
    let v1 = schema("schema_change", false, 1);
    let v2 = schema("schema_change", true, 2);
    let mut d = open(h).await;
    d.write_all(&txn(1, &v1, vec![Op::Insert { after: row(1, "a", 1) }])).await;
    let mut r2 = row(2, "b", 2);
    r2.push(Value::Text("e".into()));
    let mut r1 = row(1, "a", 1);
    r1.push(Value::Text("e1".into()));
    d.write_all(&txn(2, &v2, vec![Op::Insert { after: r2 }, Op::Update { before: None, after: r1 }])).await;
    let seq = d.commit(checkpoint(base + 2, &v2)).await;
    d.durable(seq).await;
    let seen = h.rows(&v1.id).await;
    match h.kind() {
        Kind::State => assert_eq!(
            seen,
            vec![
                vec![Some("1".into()), Some("a".into()), Some("1".into()), Some("e1".into())],
                vec![Some("2".into()), Some("b".into()), Some("2".into()), Some("e".into())],
            ],
            "rows after a column was added mid-batch"
        ),
        Kind::Log => {
            assert_eq!(seen, expect_log(&[("c", 1), ("c", 2), ("u", 1)]), "log after a column was added mid-batch")
        }
    }
    d.sink.close().await.expect("close");
}
