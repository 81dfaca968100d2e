//! The runtime's safety logic against an in-memory source and sinks: the meet over sinks,
//! replay skipping, per-sink restarts, copy bookkeeping, acknowledgements.
//!
//! The in-memory source holds a log of transactions on one table `public.t` (key → value) and
//! the table's current content; it streams from the resume position and copies the table into
//! the sinks that lack it, in chunks. An in-memory sink applies writes to a "committed" map
//! only when it commits, records which transactions each commit held, and can fail on cue.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sluice_core::*;
use tokio::sync::watch;

use super::*;

fn table_id() -> TableId {
    TableId::new("public", "t")
}

fn schema() -> SchemaRef {
    Arc::new(TableSchema {
        id: table_id(),
        columns: vec![
            ColumnSchema::new("id", DataType::Int64, "bigint").key(),
            ColumnSchema::new("v", DataType::Text, "text"),
        ],
        version: 1,
        dialect: "test".into(),
    })
}

fn row(k: i64, v: &str) -> Row {
    vec![Value::Int(k), Value::Text(v.into())]
}

fn lsn(n: u64) -> Position {
    Position::Pg(Lsn(n))
}

/// Transaction `n` (1-based) commits at LSN 100n and ends at 100n + 10; it sets key n % 7.
fn txn_value(n: u64) -> (i64, String) {
    ((n % 7) as i64, format!("v{n}"))
}

#[derive(Default)]
struct Target {
    committed: BTreeMap<i64, String>,
    checkpoint: Option<Checkpoint>,
    /// Commit LSNs of the transactions each commit held, in order.
    applied: Vec<u64>,
    copied_rows: usize,
    commits: usize,
    opens: usize,
}

#[derive(Default)]
struct World {
    txns: u64,
    /// Source rows as of the end of the log.
    table: BTreeMap<i64, String>,
    selected: Vec<TableId>,
    confirmed: Option<Position>,
    source_runs: usize,
    targets: Vec<Target>,
    /// (sink, incarnation, commit number) at which a commit fails transiently
    fail_commit: Option<(usize, usize, usize)>,
    /// (sink, incarnation, commit number) whose ack is dropped unsent
    drop_ack: Option<(usize, usize, usize)>,
    /// sink whose commits fail fatally
    fatal: Option<usize>,
    /// Acks of this sink are held back while true.
    hold: Option<usize>,
    /// This sink panics when it commits.
    panic: Option<usize>,
    /// This sink's writes never return.
    hang: Option<usize>,
    held: Vec<Ack>,
    /// The sinks' batch policy instead of the default (3 rows, 5 ms)
    policy: Option<BatchPolicy>,
}

type Shared = Arc<Mutex<World>>;

fn world(txns: u64, sinks: usize) -> Shared {
    let mut table = BTreeMap::new();
    for n in 1..=txns {
        let (k, v) = txn_value(n);
        table.insert(k, v);
    }
    Arc::new(Mutex::new(World {
        txns,
        table,
        selected: vec![table_id()],
        targets: (0..sinks).map(|_| Target::default()).collect(),
        ..Default::default()
    }))
}

#[derive(Debug)]
struct MemSourceConn(Shared);

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("World")
    }
}

struct MemSource(Shared);

#[async_trait]
impl SourceConnector for MemSourceConn {
    fn kind(&self) -> &'static str {
        "mem"
    }
    fn build(&self, _pipeline: &str) -> Box<dyn Source> {
        Box::new(MemSource(self.0.clone()))
    }
    async fn check(&self, _pipeline: &str) -> Vec<CheckResult> {
        Vec::new()
    }
    fn describe(&self) -> String {
        "memory".into()
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

#[async_trait]
impl Source for MemSource {
    async fn run(&mut self, resume: Resume, ctx: SourceContext) -> Result<(), ConnectorError> {
        let SourceContext { events, mut confirmed, stop, .. } = ctx;
        let send = |ev: Event| {
            let events = events.clone();
            async move { events.send(ev).await.map_err(|_| ConnectorError::msg(ErrorClass::Transient, "closed")) }
        };
        let (txns, table, selected) = {
            let mut w = self.0.lock().unwrap();
            w.source_runs += 1;
            (w.txns, w.table.clone(), w.selected.clone())
        };
        send(Event::Tables { selected: selected.clone() }).await?;
        let start = match resume.position() {
            Some(Position::Pg(l)) => l.0,
            _ => 0,
        };
        send(Event::StreamStart { position: lsn(start) }).await?;
        // Copies first (a real source interleaves them with the stream; order does not matter
        // to the bookkeeping under test).
        for (to, after) in resume.copies_needed(&table_id(), None) {
            let t = schema();
            let copy = |step| Event::Copy(Copy::new(to, t.clone(), step));
            send(copy(CopyStep::Begin {
                mode: sluice_core::CopyMode::Replace,
                source_id: None,
                estimated_rows: Some(table.len() as u64),
            }))
            .await?;
            let from = match after.as_deref() {
                Some([Value::Int(k)]) => *k,
                _ => i64::MIN,
            };
            let rows: Vec<(i64, String)> =
                table.iter().filter(|(k, _)| **k > from).map(|(k, v)| (*k, v.clone())).collect();
            for chunk in rows.chunks(2) {
                send(copy(CopyStep::Rows(chunk.iter().map(|(k, v)| row(*k, v)).collect()))).await?;
                let last = chunk.last().map(|(k, _)| *k).unwrap_or_default();
                send(copy(CopyStep::Progress { after: vec![Value::Int(last)] })).await?;
            }
            send(copy(CopyStep::End)).await?;
        }
        for n in 1..=txns {
            let commit = 100 * n;
            if commit < start {
                continue;
            }
            let meta = TxnMeta { xid: n, commit_ts_micros: 0, position: lsn(commit) };
            let (k, v) = txn_value(n);
            send(Event::Begin(meta.clone())).await?;
            send(Event::Change(Change { table: schema(), op: Op::Insert { after: row(k, &v) } })).await?;
            send(Event::Commit { meta, position: lsn(commit + 10) }).await?;
        }
        send(Event::Heartbeat { position: lsn(100 * txns + 50) }).await?;
        // Like a real source: keep the stream open until told to stop, recording
        // confirmations, then keep confirming until the runtime lets go.
        let mut stop = stop;
        loop {
            self.0.lock().unwrap().confirmed = confirmed.borrow().clone();
            tokio::select! {
                r = confirmed.changed() => if r.is_err() { break },
                _ = stop.changed() => if *stop.borrow() { break },
            }
        }
        drop(events);
        loop {
            self.0.lock().unwrap().confirmed = confirmed.borrow().clone();
            if confirmed.changed().await.is_err() {
                break;
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct MemSinkConn(usize, Shared);

#[async_trait]
impl SinkConnector for MemSinkConn {
    fn kind(&self) -> &'static str {
        "mem"
    }
    fn build(&self, _pipeline: &str, index: usize) -> Box<dyn Sink> {
        assert_eq!(index, self.0);
        Box::new(MemSink {
            i: self.0,
            w: self.1.clone(),
            pending: Vec::new(),
            txns: Vec::new(),
            incarnation: 0,
            commits: 0,
        })
    }
    async fn check(&self, _at: &str) -> Vec<CheckResult> {
        Vec::new()
    }
    fn describe(&self) -> String {
        format!("memory {}", self.0)
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

struct MemSink {
    i: usize,
    w: Shared,
    pending: Vec<(i64, String, bool)>,
    txns: Vec<u64>,
    incarnation: usize,
    commits: usize,
}

#[async_trait]
impl Sink for MemSink {
    fn name(&self) -> &str {
        "mem"
    }
    fn batch_policy(&self) -> BatchPolicy {
        let policy = self.w.lock().unwrap().policy;
        policy.unwrap_or(BatchPolicy { max_rows: 3, max_delay: Duration::from_millis(5), commit_when_idle: false })
    }
    async fn open(&mut self, _ctx: SinkContext) -> Result<Option<Checkpoint>, ConnectorError> {
        let mut w = self.w.lock().unwrap();
        let t = &mut w.targets[self.i];
        t.opens += 1;
        self.incarnation = t.opens;
        Ok(t.checkpoint.clone())
    }
    async fn write(&mut self, event: &Event) -> Result<(), ConnectorError> {
        let hang = self.w.lock().unwrap().hang == Some(self.i);
        if hang {
            std::future::pending::<()>().await;
        }
        match event {
            Event::Begin(m) => {
                if let Position::Pg(l) = m.position {
                    self.txns.push(l.0);
                }
            }
            Event::Change(Change { op: Op::Insert { after }, .. }) => {
                if let [Value::Int(k), Value::Text(v)] = after.as_slice() {
                    self.pending.push((*k, v.to_string(), false));
                }
            }
            Event::Copy(Copy { step: CopyStep::Rows(rows), .. }) => {
                for r in rows {
                    if let [Value::Int(k), Value::Text(v)] = r.as_slice() {
                        self.pending.push((*k, v.to_string(), true));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
    async fn commit(&mut self, checkpoint: Checkpoint, ack: Ack) -> Result<(), ConnectorError> {
        self.commits += 1;
        let mut w = self.w.lock().unwrap();
        let at = (self.i, self.incarnation, self.commits);
        if w.fail_commit == Some(at) {
            return Err(ConnectorError::msg(ErrorClass::Transient, "injected commit failure"));
        }
        if w.fatal == Some(self.i) {
            return Err(ConnectorError::msg(ErrorClass::Fatal, "injected fatal failure"));
        }
        if w.panic == Some(self.i) {
            drop(w);
            panic!("injected panic");
        }
        let t = &mut w.targets[self.i];
        for (k, v, copied) in self.pending.drain(..) {
            t.committed.insert(k, v);
            t.copied_rows += usize::from(copied);
        }
        t.applied.append(&mut self.txns);
        t.checkpoint = Some(checkpoint);
        t.commits += 1;
        if w.drop_ack == Some(at) {
            drop(ack);
        } else if w.hold == Some(self.i) {
            w.held.push(ack);
        } else {
            ack.durable();
        }
        Ok(())
    }
}

fn pipeline(w: &Shared, sinks: usize) -> Pipeline {
    Pipeline {
        name: "test".into(),
        source: Arc::new(MemSourceConn(w.clone())),
        sinks: (0..sinks).map(|i| Arc::new(MemSinkConn(i, w.clone())) as Arc<dyn SinkConnector>).collect(),
        transform: Arc::new(|| Box::new(Identity) as Box<dyn Transform>),
        retry: RetryPolicy {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            reset_after: Duration::from_secs(60),
        },
    }
}

/// Waits (with a deadline) until `cond` holds for the world.
async fn wait(w: &Shared, what: &str, cond: impl Fn(&World) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if cond(&w.lock().unwrap()) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn holds_everything(w: &World, i: usize) -> bool {
    w.targets[i].committed == w.table
        && w.targets[i].checkpoint.as_ref().and_then(|c| c.position.clone()) == Some(lsn(100 * w.txns + 50))
}

fn no_duplicates(applied: &[u64]) {
    let mut seen = std::collections::HashSet::new();
    for a in applied {
        assert!(seen.insert(a), "transaction at {a} applied twice: {applied:?}");
    }
}

fn seed(w: &Shared, i: usize, upto: u64, copied: bool) {
    let mut w = w.lock().unwrap();
    let mut rows = BTreeMap::new();
    for n in 1..=upto {
        let (k, v) = txn_value(n);
        rows.insert(k, v);
    }
    let mut cp = Checkpoint { position: Some(lsn(100 * upto + 10)), ..Default::default() };
    if copied {
        cp.tables.insert(table_id(), TableProgress::Copied);
    }
    w.targets[i].committed = rows;
    w.targets[i].checkpoint = Some(cp);
}

async fn stop(stop_tx: watch::Sender<bool>, running: Running) -> Result<(), PipelineError> {
    let _ = stop_tx.send(true);
    tokio::time::timeout(Duration::from_secs(10), running.task).await.expect("pipeline stops").expect("no panic")
}

#[tokio::test]
async fn the_source_is_confirmed_only_what_every_sink_holds_durably() {
    let w = world(20, 2);
    seed(&w, 0, 20, true);
    seed(&w, 1, 20, true);
    w.lock().unwrap().hold = Some(1);
    let (tx, rx) = watch::channel(false);
    let running = spawn(pipeline(&w, 2), rx);
    wait(&w, "sink 0 to hold the heartbeat", |w| holds_everything(w, 0)).await;
    wait(&w, "sink 1 to commit without acknowledging", |w| !w.held.is_empty()).await;
    // Sink 1 committed, but has not said so: nothing beyond what it holds durably is confirmed.
    assert_eq!(w.lock().unwrap().confirmed, Some(lsn(2010)));
    let held: Vec<Ack> = {
        let mut g = w.lock().unwrap();
        g.hold = None;
        std::mem::take(&mut g.held)
    };
    for a in held {
        a.durable();
    }
    wait(&w, "the heartbeat to be confirmed", |w| w.confirmed == Some(lsn(2050))).await;
    assert!(stop(tx, running).await.is_ok());
}

/// A sink that commits when the input is idle makes a quiet stream durable at once (within the
/// wait's 10 s), not after its batch delay (an hour here).
#[tokio::test]
async fn commit_when_idle_does_not_wait_for_the_batch_delay() {
    let w = world(20, 1);
    seed(&w, 0, 0, true);
    w.lock().unwrap().policy =
        Some(BatchPolicy { max_rows: 1000, max_delay: Duration::from_secs(3600), commit_when_idle: true });
    let (tx, rx) = watch::channel(false);
    let running = spawn(pipeline(&w, 1), rx);
    wait(&w, "every transaction to be durable", |w| holds_everything(w, 0)).await;
    assert!(stop(tx, running).await.is_ok());
    no_duplicates(&w.lock().unwrap().targets[0].applied);
}

#[tokio::test]
async fn a_restart_replays_from_the_oldest_sink_and_each_sink_skips_what_it_holds() {
    let w = world(12, 2);
    seed(&w, 0, 9, true);
    seed(&w, 1, 3, true);
    let (tx, rx) = watch::channel(false);
    let running = spawn(pipeline(&w, 2), rx);
    wait(&w, "both sinks to catch up", |w| holds_everything(w, 0) && holds_everything(w, 1)).await;
    assert!(stop(tx, running).await.is_ok());
    let w = w.lock().unwrap();
    assert_eq!(w.targets[0].applied, (10..=12).map(|n| 100 * n).collect::<Vec<_>>(), "sink 0 got only what it lacked");
    assert_eq!(w.targets[1].applied, (4..=12).map(|n| 100 * n).collect::<Vec<_>>());
    assert_eq!(w.source_runs, 1);
    assert_eq!(w.confirmed, Some(lsn(1250)));
}

#[tokio::test]
async fn a_failing_sink_is_reopened_alone_and_the_other_never_rewrites() {
    let w = world(30, 2);
    seed(&w, 0, 0, true);
    seed(&w, 1, 0, true);
    // Sink 1's second commit in its first life fails.
    w.lock().unwrap().fail_commit = Some((1, 1, 2));
    let (tx, rx) = watch::channel(false);
    let running = spawn(pipeline(&w, 2), rx);
    let mut handle = running.handle.clone();
    wait(&w, "both sinks to catch up", |w| holds_everything(w, 0) && holds_everything(w, 1)).await;
    assert!(stop(tx, running).await.is_ok());
    {
        let w = w.lock().unwrap();
        no_duplicates(&w.targets[0].applied);
        assert_eq!(w.targets[0].applied.len(), 30, "sink 0 applied every transaction exactly once");
        assert_eq!(w.targets[0].opens, 1, "sink 0 was never reopened");
        assert_eq!(w.targets[1].opens, 2, "sink 1 was reopened once");
        assert_eq!(w.source_runs, 2, "the source restarted once, for sink 1");
    }
    let status = handle.status();
    assert_eq!(status.sinks[1].failures, 1);
    assert!(status.sinks[1].last_error.as_deref().unwrap_or_default().contains("injected commit failure"));
    assert_eq!(status.state, RunState::Stopped);
    assert!(handle.changed().await.is_none() || handle.status().state == RunState::Stopped);
}

#[tokio::test]
async fn a_new_sink_is_backfilled_and_the_first_is_left_alone() {
    let w = world(10, 2);
    seed(&w, 0, 10, true);
    let (tx, rx) = watch::channel(false);
    let running = spawn(pipeline(&w, 2), rx);
    wait(&w, "the new sink to hold everything", |w| holds_everything(w, 1)).await;
    let status = running.handle.status();
    assert!(stop(tx, running).await.is_ok());
    let w = w.lock().unwrap();
    assert!(w.targets[0].applied.is_empty() && w.targets[0].copied_rows == 0, "sink 0 was not rewritten");
    assert_eq!(w.targets[1].copied_rows, w.table.len(), "sink 1 got a copy of the table");
    let cp = w.targets[1].checkpoint.clone().unwrap();
    assert_eq!(cp.tables.get(&table_id()), Some(&TableProgress::Copied));
    assert_eq!(status.tables.len(), 1);
    assert_eq!(status.tables[0].copied_rows, w.table.len() as u64);
}

#[tokio::test]
async fn an_interrupted_copy_continues_after_the_last_key_made_durable() {
    let w = world(10, 1);
    {
        let mut g = w.lock().unwrap();
        let mut cp = Checkpoint { position: Some(lsn(1010)), ..Default::default() };
        cp.tables.insert(table_id(), TableProgress::Copying { after: Some(vec![Value::Int(3)]) });
        g.targets[0].checkpoint = Some(cp);
    }
    let (tx, rx) = watch::channel(false);
    let running = spawn(pipeline(&w, 1), rx);
    wait(&w, "the copy to finish", |w| {
        w.targets[0].checkpoint.as_ref().is_some_and(|c| c.tables.get(&table_id()) == Some(&TableProgress::Copied))
    })
    .await;
    assert!(stop(tx, running).await.is_ok());
    let w = w.lock().unwrap();
    let expected = w.table.keys().filter(|k| **k > 3).count();
    assert_eq!(w.targets[0].copied_rows, expected, "only keys after 3 were copied again");
}

#[tokio::test]
async fn copy_state_of_tables_no_longer_selected_is_forgotten() {
    let w = world(5, 1);
    {
        let mut g = w.lock().unwrap();
        let mut cp = Checkpoint { position: Some(lsn(510)), ..Default::default() };
        cp.tables.insert(table_id(), TableProgress::Copied);
        cp.tables.insert(TableId::new("public", "gone"), TableProgress::Copied);
        g.targets[0].checkpoint = Some(cp);
    }
    let (tx, rx) = watch::channel(false);
    let running = spawn(pipeline(&w, 1), rx);
    wait(&w, "a checkpoint without the unselected table", |w| {
        w.targets[0].checkpoint.as_ref().is_some_and(|c| c.tables.len() == 1 && c.position == Some(lsn(550)))
    })
    .await;
    assert!(stop(tx, running).await.is_ok());
}

#[tokio::test]
async fn a_first_release_checkpoint_counts_every_selected_table_as_copied() {
    let w = world(5, 1);
    {
        let mut g = w.lock().unwrap();
        g.targets[0].checkpoint = Some(Checkpoint::from_v1(Some(r#"{"kind":"pg","at":"0/1FE"}"#), true).unwrap());
    }
    let (tx, rx) = watch::channel(false);
    let running = spawn(pipeline(&w, 1), rx);
    wait(&w, "the migrated checkpoint", |w| {
        w.targets[0].checkpoint.as_ref().is_some_and(|c| {
            !c.all_tables_copied
                && c.tables.get(&table_id()) == Some(&TableProgress::Copied)
                && c.position == Some(lsn(550))
        })
    })
    .await;
    assert!(stop(tx, running).await.is_ok());
    assert_eq!(w.lock().unwrap().targets[0].copied_rows, 0, "nothing was copied again");
}

#[tokio::test]
async fn a_dropped_acknowledgement_fails_the_sink_which_is_reopened() {
    let w = world(10, 1);
    seed(&w, 0, 0, true);
    w.lock().unwrap().drop_ack = Some((0, 1, 1));
    let (tx, rx) = watch::channel(false);
    let running = spawn(pipeline(&w, 1), rx);
    wait(&w, "the sink to catch up", |w| holds_everything(w, 0)).await;
    let status = running.handle.status();
    assert!(stop(tx, running).await.is_ok());
    assert_eq!(w.lock().unwrap().targets[0].opens, 2);
    assert!(status.errors.iter().any(|e| e.message.contains("dropped the acknowledgement")), "{:?}", status.errors);
}

#[tokio::test]
async fn a_fatal_sink_error_stops_the_pipeline_naming_the_sink() {
    let w = world(5, 2);
    w.lock().unwrap().fatal = Some(1);
    let (_tx, rx) = watch::channel(false);
    let running = spawn(pipeline(&w, 2), rx);
    let err = tokio::time::timeout(Duration::from_secs(10), running.task).await.unwrap().unwrap().unwrap_err();
    assert_eq!(err.component, "sink[1] mem");
    assert!(err.to_string().contains("injected fatal failure"), "{err}");
    assert_eq!(running.handle.status().state, RunState::Failed);
}

#[tokio::test]
async fn a_panicking_sink_stops_the_pipeline_naming_it_and_the_panic() {
    let w = world(5, 2);
    w.lock().unwrap().panic = Some(1);
    let (_tx, rx) = watch::channel(false);
    let running = spawn(pipeline(&w, 2), rx);
    let err = tokio::time::timeout(Duration::from_secs(10), running.task).await.unwrap().unwrap().unwrap_err();
    assert_eq!(err.component, "sink[1] mem");
    assert_eq!(err.class(), ErrorClass::Fatal);
    assert!(err.to_string().contains("panicked") && err.to_string().contains("injected panic"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_sink_that_stops_responding_is_aborted_and_the_others_finish() {
    let w = world(20, 2);
    seed(&w, 0, 0, true);
    seed(&w, 1, 0, true);
    w.lock().unwrap().hang = Some(1);
    let (tx, rx) = watch::channel(false);
    let running = spawn(pipeline(&w, 2), rx);
    wait(&w, "sink 0 to catch up", |w| holds_everything(w, 0)).await;
    // Stopping waits for the hung sink only so long (virtual time: this takes no real time).
    let _ = tx.send(true);
    let err = tokio::time::timeout(SINK_RESPONSE_TIMEOUT * 2, running.task)
        .await
        .expect("the pipeline stops despite the hung sink")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.component, "sink[1] mem");
    assert!(err.to_string().contains("did not respond"), "{err}");
    let w = w.lock().unwrap();
    assert!(holds_everything(&w, 0), "sink 0 committed everything");
    assert!(w.targets[1].committed.is_empty());
}

#[tokio::test]
async fn a_replayed_transaction_cut_short_does_not_make_the_sink_skip_the_next() {
    let w = world(0, 1);
    let (out, mut from) = mpsc::unbounded_channel();
    let sink = MemSinkConn(0, w.clone()).build("test", 0);
    let accepted = Checkpoint { position: Some(lsn(510)), ..Default::default() };
    let task = SinkTask { index: 0, generation: 1, sink, accepted, out, counters: Arc::default() };
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(task.run(rx));
    let ev = |e: Event| (Arc::new(e), None);
    let meta = |n: u64| TxnMeta { xid: n, commit_ts_micros: 0, position: lsn(100 * n) };
    let change = |k: i64| Event::Change(Change { table: schema(), op: Op::Insert { after: row(k, "x") } });
    // Transaction 5 is already held: skipped. The source restarts before its commit, and the
    // next epoch starts with transaction 6, which is new.
    tx.send(ToSink::Events(vec![ev(Event::Begin(meta(5))), ev(change(5))])).await.unwrap();
    tx.send(ToSink::Events(vec![
        ev(Event::Begin(meta(6))),
        ev(change(6)),
        ev(Event::Commit { meta: meta(6), position: lsn(610) }),
        ev(Event::Heartbeat { position: lsn(650) }),
    ]))
    .await
    .unwrap();
    drop(tx);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), from.recv()).await.expect("sink task reports") {
            Some(sink_task::FromSink::Finished { .. }) | None => break,
            Some(sink_task::FromSink::Failed { error, .. }) => panic!("sink failed: {error}"),
            Some(_) => {}
        }
    }
    let w = w.lock().unwrap();
    assert_eq!(w.targets[0].committed.get(&6).map(String::as_str), Some("x"), "transaction 6 was written");
    assert!(!w.targets[0].committed.contains_key(&5), "transaction 5 was skipped");
    assert_eq!(w.targets[0].applied, vec![600]);
}

#[test]
fn backoff_doubles_to_its_limit_and_resets_after_a_long_run() {
    let mut b = Backoff::new(RetryPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(350),
        reset_after: Duration::from_secs(5),
    });
    let d: Vec<u128> = (0..4).map(|_| b.after_failure(Duration::ZERO).as_millis()).collect();
    assert_eq!(d, [100, 200, 350, 350]);
    assert_eq!(b.after_failure(Duration::from_secs(6)).as_millis(), 100);
}

/// Requests the pipeline's stop from inside routing, the moment the first change passes.
struct StopWhileRouting(Arc<Mutex<Option<watch::Sender<bool>>>>);

impl Transform for StopWhileRouting {
    fn name(&self) -> &str {
        "stop-while-routing"
    }
    fn restore(&mut self, _: Option<&serde_json::Value>) -> Result<(), ConnectorError> {
        Ok(())
    }
    fn apply(&mut self, event: Event, out: &mut Vec<Event>) -> Result<(), ConnectorError> {
        if matches!(event, Event::Change(_)) {
            if let Some(tx) = self.0.lock().unwrap().take() {
                let _ = tx.send(true);
            }
        }
        out.push(event);
        Ok(())
    }
    fn state(&self) -> Option<serde_json::Value> {
        None
    }
}

/// A stop that arrives while the runtime is routing (not waiting on the stop signal) still
/// reaches the source: the pipeline ends instead of streaming on (seen as a crash-test hang).
#[tokio::test]
async fn a_stop_requested_while_routing_reaches_the_source() {
    let w = world(5, 1);
    let (tx, rx) = watch::channel(false);
    let slot = Arc::new(Mutex::new(Some(tx)));
    let mut p = pipeline(&w, 1);
    let s = slot.clone();
    p.transform = Arc::new(move || Box::new(StopWhileRouting(s.clone())) as Box<dyn Transform>);
    let running = spawn(p, rx);
    let ended = tokio::time::timeout(Duration::from_secs(10), running.task).await;
    assert!(slot.lock().unwrap().is_none(), "the transform requested the stop");
    assert!(matches!(ended, Ok(Ok(Ok(())))), "the pipeline did not end after a stop requested while routing");
}

/// Claims: a Kafka-like source on topic `t` that streams partition 0, claims partition 1, then
/// replays partition 1 from its start (as a source that assigned it too early would).
#[derive(Default)]
struct ClaimWorld {
    /// Per sink: offsets another process stored for partition 1 (what `adopt` finds)
    elsewhere: Vec<Option<i64>>,
    /// Per sink: the position its target held when `adopt` was called
    held_at_adopt: Vec<Option<Position>>,
    /// Per sink: the offsets of the records it committed, by partition
    applied: Vec<Vec<(i32, i64)>>,
    /// The runtime's answer to the claim
    answer: Option<Claimed>,
}

type ClaimShared = Arc<Mutex<ClaimWorld>>;

fn offsets(at: &[(i32, i64)]) -> Position {
    let mut k = KafkaOffsets::default();
    for (p, o) in at {
        k.set("t", *p, *o);
    }
    Position::Kafka(k)
}

#[derive(Debug)]
struct ClaimSourceConn(Arc<Mutex<ClaimWorld>>);

impl std::fmt::Debug for ClaimWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClaimWorld")
    }
}

#[async_trait]
impl SourceConnector for ClaimSourceConn {
    fn kind(&self) -> &'static str {
        "claims"
    }
    fn build(&self, _pipeline: &str) -> Box<dyn Source> {
        Box::new(ClaimSource(self.0.clone()))
    }
    async fn check(&self, _pipeline: &str) -> Vec<CheckResult> {
        Vec::new()
    }
    fn describe(&self) -> String {
        "claims".into()
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

struct ClaimSource(ClaimShared);

#[async_trait]
impl Source for ClaimSource {
    async fn run(&mut self, _resume: Resume, ctx: SourceContext) -> Result<(), ConnectorError> {
        let SourceContext { events, mut confirmed, mut stop, mut claims, .. } = ctx;
        let record = |p: i32, o: i64| {
            let meta = TxnMeta { xid: o as u64, commit_ts_micros: 0, position: offsets(&[(p, o)]) };
            vec![
                Event::Begin(meta.clone()),
                Event::Change(Change { table: schema(), op: Op::Insert { after: row(o, &format!("p{p}")) } }),
                Event::Commit { meta, position: offsets(&[(p, o + 1)]) },
            ]
        };
        let closed = |_| ConnectorError::msg(ErrorClass::Transient, "closed");
        for o in 0..5 {
            for ev in record(0, o) {
                events.send(ev).await.map_err(closed)?;
            }
        }
        events.send(Event::Claim { id: 1, scope: offsets(&[(1, 0)]) }).await.map_err(closed)?;
        let answer = claims.recv().await.expect("an answer");
        self.0.lock().unwrap().answer = Some(answer);
        for o in 0..10 {
            for ev in record(1, o) {
                events.send(ev).await.map_err(closed)?;
            }
        }
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
        drop(events);
        while confirmed.changed().await.is_ok() {}
        Ok(())
    }
}

#[derive(Debug)]
struct ClaimSinkConn(usize, ClaimShared);

#[async_trait]
impl SinkConnector for ClaimSinkConn {
    fn kind(&self) -> &'static str {
        "claims"
    }
    fn build(&self, _pipeline: &str, _index: usize) -> Box<dyn Sink> {
        Box::new(ClaimSink { i: self.0, w: self.1.clone(), pending: Vec::new(), stored: None })
    }
    async fn check(&self, _at: &str) -> Vec<CheckResult> {
        Vec::new()
    }
    fn describe(&self) -> String {
        format!("claims {}", self.0)
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// Sink 0 shares its target with another process (which stored partition 1 at
/// `elsewhere[0]`); sink 1 is its target's only writer (the default `adopt`).
struct ClaimSink {
    i: usize,
    w: ClaimShared,
    pending: Vec<(i32, i64)>,
    stored: Option<Position>,
}

#[async_trait]
impl Sink for ClaimSink {
    fn name(&self) -> &str {
        "claims"
    }
    fn batch_policy(&self) -> BatchPolicy {
        // Large batches: only the claim makes partition 0's records durable before it.
        BatchPolicy { max_rows: 1000, max_delay: Duration::from_secs(60), commit_when_idle: false }
    }
    async fn open(&mut self, _ctx: SinkContext) -> Result<Option<Checkpoint>, ConnectorError> {
        Ok(None)
    }
    async fn write(&mut self, event: &Event) -> Result<(), ConnectorError> {
        if let Event::Begin(m) = event {
            if let Position::Kafka(k) = &m.position {
                self.pending.extend(k.entries().map(|(_, p, o)| (p, o)));
            }
        }
        Ok(())
    }
    async fn commit(&mut self, checkpoint: Checkpoint, ack: Ack) -> Result<(), ConnectorError> {
        self.w.lock().unwrap().applied[self.i].append(&mut self.pending);
        self.stored = checkpoint.position;
        ack.durable();
        Ok(())
    }
    async fn adopt(&mut self, _scope: &Position) -> Result<Option<Position>, ConnectorError> {
        let mut w = self.w.lock().unwrap();
        w.held_at_adopt[self.i] = self.stored.clone();
        let Some(o) = w.elsewhere[self.i] else { return Ok(None) };
        let mut stored = self.stored.clone().unwrap_or_else(|| offsets(&[]));
        stored.advance(&offsets(&[(1, o)]));
        Ok(Some(stored))
    }
}

/// A claim reaches each sink after everything sent before it, which is durable before the sink
/// adopts what its target holds; the source is answered with each sink's position, including
/// the offsets another process stored for the claimed partition; a replay of what that process
/// applied is skipped.
#[tokio::test]
async fn a_claim_makes_earlier_work_durable_then_adopts_what_the_target_holds() {
    let w: ClaimShared = Arc::new(Mutex::new(ClaimWorld {
        elsewhere: vec![Some(7), None],
        held_at_adopt: vec![None, None],
        applied: vec![Vec::new(), Vec::new()],
        answer: None,
    }));
    let p = Pipeline {
        name: "claims".into(),
        source: Arc::new(ClaimSourceConn(w.clone())),
        sinks: (0..2).map(|i| Arc::new(ClaimSinkConn(i, w.clone())) as Arc<dyn SinkConnector>).collect(),
        transform: Arc::new(|| Box::new(Identity) as Box<dyn Transform>),
        retry: RetryPolicy::default(),
    };
    let (tx, rx) = watch::channel(false);
    let running = spawn(p, rx);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while w.lock().unwrap().answer.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "the claim was never answered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(stop(tx, running).await.is_ok());
    let w = w.lock().unwrap();
    for i in 0..2 {
        assert_eq!(w.held_at_adopt[i], Some(offsets(&[(0, 5)])), "sink {i}: partition 0 durable before adopting");
    }
    let answer = w.answer.as_ref().unwrap();
    assert_eq!(answer.id, 1);
    let positions: Vec<Option<Position>> =
        answer.sinks.sinks.iter().map(|c| c.as_ref().and_then(|c| c.position.clone())).collect();
    assert_eq!(positions, vec![Some(offsets(&[(0, 5), (1, 7)])), Some(offsets(&[(0, 5)]))]);
    let p1 = |i: usize| w.applied[i].iter().filter(|(p, _)| *p == 1).map(|(_, o)| *o).collect::<Vec<_>>();
    assert_eq!(p1(0), (7..10).collect::<Vec<_>>(), "sink 0 skipped what the other process applied");
    assert_eq!(p1(1), (0..10).collect::<Vec<_>>(), "sink 1 holds partition 1 only from this process");
}
