//! What a running pipeline publishes about itself: per-table copy progress, positions, lag,
//! throughput, errors and dead letters. The REST API, metrics and the terminal's progress bars
//! all read it from a [`PipelineHandle`]; no connector draws anything itself.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sluice_core::{ErrorClass, Position, SinkStats, TableId};
use tokio::sync::watch;

/// Errors kept in the status, newest last.
const ERRORS_KEPT: usize = 20;

/// Where the pipeline as a whole is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Opening sinks and starting the source
    Starting,
    /// Running
    Running,
    /// A component failed; it is being restarted
    Recovering,
    /// Draining after a stop request
    Stopping,
    /// Stopped cleanly
    Stopped,
    /// Stopped by an error that retrying cannot fix
    Failed,
}

/// The state of one sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkState {
    /// Not opened yet
    Opening,
    /// Receiving the stream
    Running,
    /// Failed; reopening after a backoff
    Down,
    /// Closed
    Closed,
}

/// How far a table's copy into the sinks has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyState {
    /// Selected, not being copied now
    Waiting,
    /// Rows are being copied
    Copying,
    /// The copy finished in this run
    Copied,
}

/// Copy progress of one table, across the sinks it is copied to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableStatus {
    /// `schema.table`
    pub table: String,
    /// State
    pub state: CopyState,
    /// Rows copied so far in this run
    pub copied_rows: u64,
    /// The source's estimate of the table's rows, when it has one
    pub estimated_rows: Option<u64>,
}

/// One sink's status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SinkStatus {
    /// e.g. `sink[0] postgres replica`
    pub name: String,
    /// Where it writes (never a secret)
    pub target: String,
    /// State
    pub state: SinkState,
    /// Position durable in the sink
    pub durable_position: Option<String>,
    /// Milliseconds between the commit of the newest source transaction durable in the sink and
    /// now; 0 when it holds everything the source sent
    pub lag_ms: Option<i64>,
    /// Rows written since start
    pub rows: u64,
    /// Rows per second over the last interval
    pub rows_per_sec: f64,
    /// Commits made durable since start
    pub commits: u64,
    /// Changes the target refused, parked in the sink's dead-letter place
    pub dead_letters: u64,
    /// Failures since start
    pub failures: u64,
    /// The last failure
    pub last_error: Option<String>,
}

/// The source's status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceStatus {
    /// Where it reads from (never a secret)
    pub source: String,
    /// Position of the newest event received
    pub position: Option<String>,
    /// Position confirmed to the source (durable in every sink)
    pub confirmed: Option<String>,
    /// Events received since start
    pub events: u64,
    /// Restarts of the source since start
    pub restarts: u64,
}

/// One error, as shown to people.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorEntry {
    /// Unix time in milliseconds
    pub at_ms: u64,
    /// `source`, a sink's name, or `transform`
    pub component: String,
    /// transient, definite or fatal
    pub class: &'static str,
    /// The message, with its causes
    pub message: String,
}

/// A pipeline's state, as published.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineStatus {
    /// Pipeline name
    pub name: String,
    /// Overall state
    pub state: RunState,
    /// The source
    pub source: SourceStatus,
    /// The sinks, in pipeline order
    pub sinks: Vec<SinkStatus>,
    /// Selected tables with their copy progress, by name
    pub tables: Vec<TableStatus>,
    /// Recent errors, newest last
    pub errors: Vec<ErrorEntry>,
}

/// Read side of a running pipeline's status.
#[derive(Debug, Clone)]
pub struct PipelineHandle {
    rx: watch::Receiver<Arc<PipelineStatus>>,
}

impl PipelineHandle {
    /// The latest status.
    pub fn status(&self) -> Arc<PipelineStatus> {
        self.rx.borrow().clone()
    }

    /// Waits for the next published status; `None` once the pipeline has ended and published
    /// its last one.
    pub async fn changed(&mut self) -> Option<Arc<PipelineStatus>> {
        self.rx.changed().await.ok()?;
        Some(self.rx.borrow_and_update().clone())
    }
}

/// Counters a sink task bumps on its hot path.
#[derive(Debug, Default)]
pub(crate) struct SinkCounters {
    pub rows: AtomicU64,
    pub commits: AtomicU64,
}

#[derive(Debug)]
struct SinkEntry {
    status: SinkStatus,
    counters: Arc<SinkCounters>,
    stats: Arc<SinkStats>,
    last_rows: u64,
    /// Commit time of the newest transaction durable in the sink, and whether the sink holds
    /// everything the source has sent.
    durable_commit_ts: Option<i64>,
    caught_up: bool,
}

#[derive(Debug)]
struct Board {
    status: PipelineStatus,
    /// The newest position the router passed on, formatted only when published.
    position: Option<Position>,
    sinks: Vec<SinkEntry>,
    tables: BTreeMap<TableId, TableStatus>,
    errors: VecDeque<ErrorEntry>,
    last_publish: Instant,
}

/// The write side: the runtime records what happens and publishes at most every
/// [`StatusBoard::PUBLISH_EVERY`], or at once for state changes.
#[derive(Debug, Clone)]
pub(crate) struct StatusBoard {
    board: Arc<Mutex<Board>>,
    tx: Arc<watch::Sender<Arc<PipelineStatus>>>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn class_name(c: ErrorClass) -> &'static str {
    match c {
        ErrorClass::Transient => "transient",
        ErrorClass::Definite => "definite",
        ErrorClass::Fatal => "fatal",
    }
}

impl StatusBoard {
    /// How often counters are published at most.
    pub const PUBLISH_EVERY: Duration = Duration::from_millis(250);

    pub fn new(
        name: &str,
        source: String,
        sinks: Vec<(String, String, Arc<SinkStats>)>,
    ) -> (StatusBoard, PipelineHandle) {
        let entries: Vec<SinkEntry> = sinks
            .into_iter()
            .map(|(name, target, stats)| SinkEntry {
                status: SinkStatus {
                    name,
                    target,
                    state: SinkState::Opening,
                    durable_position: None,
                    lag_ms: None,
                    rows: 0,
                    rows_per_sec: 0.0,
                    commits: 0,
                    dead_letters: 0,
                    failures: 0,
                    last_error: None,
                },
                counters: Arc::new(SinkCounters::default()),
                stats,
                last_rows: 0,
                durable_commit_ts: None,
                caught_up: true,
            })
            .collect();
        let status = PipelineStatus {
            name: name.to_string(),
            state: RunState::Starting,
            source: SourceStatus { source, position: None, confirmed: None, events: 0, restarts: 0 },
            sinks: entries.iter().map(|e| e.status.clone()).collect(),
            tables: Vec::new(),
            errors: Vec::new(),
        };
        let (tx, rx) = watch::channel(Arc::new(status.clone()));
        let board = Board {
            status,
            position: None,
            sinks: entries,
            tables: BTreeMap::new(),
            errors: VecDeque::new(),
            last_publish: Instant::now(),
        };
        (StatusBoard { board: Arc::new(Mutex::new(board)), tx: Arc::new(tx) }, PipelineHandle { rx })
    }

    fn with<R>(&self, f: impl FnOnce(&mut Board) -> R) -> R {
        let mut b = self.board.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut b)
    }

    pub fn counters(&self, sink: usize) -> Arc<SinkCounters> {
        self.with(|b| b.sinks[sink].counters.clone())
    }

    pub fn set_state(&self, state: RunState) {
        self.with(|b| b.status.state = state);
        self.publish(true);
    }

    pub fn sink_state(&self, sink: usize, state: SinkState) {
        self.with(|b| b.sinks[sink].status.state = state);
        self.publish(true);
    }

    pub fn error(&self, component: &str, class: ErrorClass, message: String, sink: Option<usize>) {
        self.with(|b| {
            if let Some(i) = sink {
                b.sinks[i].status.failures += 1;
                b.sinks[i].status.last_error = Some(message.clone());
            }
            b.errors.push_back(ErrorEntry {
                at_ms: now_ms(),
                component: component.to_string(),
                class: class_name(class),
                message,
            });
            while b.errors.len() > ERRORS_KEPT {
                b.errors.pop_front();
            }
        });
        self.publish(true);
    }

    pub fn source_restarted(&self) {
        self.with(|b| b.status.source.restarts += 1);
    }

    /// Events passed the router, the last of them reaching `position`.
    pub fn events(&self, n: u64, position: &Position) {
        self.with(|b| {
            b.status.source.events += n;
            b.position = Some(position.clone());
            for s in &mut b.sinks {
                s.caught_up = false;
            }
        });
        self.publish(false);
    }

    pub fn confirmed(&self, position: String) {
        self.with(|b| b.status.source.confirmed = Some(position));
    }

    pub fn durable(&self, sink: usize, position: Option<&Position>, commit_ts: Option<i64>) {
        self.with(|b| {
            let caught_up = position.is_some() && position == b.position.as_ref();
            let position = position.map(ToString::to_string);
            let s = &mut b.sinks[sink];
            s.status.durable_position = position;
            if commit_ts.is_some() {
                s.durable_commit_ts = commit_ts;
            }
            s.caught_up = caught_up;
        });
        self.publish(false);
    }

    pub fn tables(&self, selected: &[TableId]) {
        self.with(|b| {
            b.tables.retain(|t, _| selected.contains(t));
            for t in selected {
                b.tables.entry(t.clone()).or_insert_with(|| TableStatus {
                    table: t.to_string(),
                    state: CopyState::Waiting,
                    copied_rows: 0,
                    estimated_rows: None,
                });
            }
        });
        self.publish(true);
    }

    fn table<R>(&self, t: &TableId, f: impl FnOnce(&mut TableStatus) -> R) -> R {
        self.with(|b| {
            let e = b.tables.entry(t.clone()).or_insert_with(|| TableStatus {
                table: t.to_string(),
                state: CopyState::Waiting,
                copied_rows: 0,
                estimated_rows: None,
            });
            f(e)
        })
    }

    pub fn copy_begin(&self, t: &TableId, estimated_rows: Option<u64>) {
        self.table(t, |s| {
            s.state = CopyState::Copying;
            s.copied_rows = 0;
            s.estimated_rows = estimated_rows;
        });
        self.publish(true);
    }

    pub fn copy_rows(&self, t: &TableId, rows: u64) {
        self.table(t, |s| s.copied_rows += rows);
        self.publish(false);
    }

    pub fn copy_end(&self, t: &TableId) {
        self.table(t, |s| s.state = CopyState::Copied);
        self.publish(true);
    }

    /// Publishes the current status: at once when `now`, else only if the last publication is
    /// older than [`Self::PUBLISH_EVERY`].
    pub fn publish(&self, now: bool) {
        let snapshot = self.with(|b| {
            let elapsed = b.last_publish.elapsed();
            if !now && elapsed < Self::PUBLISH_EVERY {
                return None;
            }
            b.last_publish = Instant::now();
            b.status.source.position = b.position.as_ref().map(ToString::to_string);
            let now_micros = now_ms() as i64 * 1000;
            for s in &mut b.sinks {
                let rows = s.counters.rows.load(Ordering::Relaxed);
                if elapsed >= Self::PUBLISH_EVERY {
                    s.status.rows_per_sec = (rows - s.last_rows.min(rows)) as f64 / elapsed.as_secs_f64();
                    s.last_rows = rows;
                }
                s.status.rows = rows;
                s.status.commits = s.counters.commits.load(Ordering::Relaxed);
                s.status.dead_letters = s.stats.dead_letters.load(Ordering::Relaxed);
                s.status.lag_ms =
                    if s.caught_up { Some(0) } else { s.durable_commit_ts.map(|ts| ((now_micros - ts) / 1000).max(0)) };
            }
            b.status.sinks = b.sinks.iter().map(|s| s.status.clone()).collect();
            b.status.tables = b.tables.values().cloned().collect();
            b.status.errors = b.errors.iter().cloned().collect();
            Some(Arc::new(b.status.clone()))
        });
        if let Some(s) = snapshot {
            self.tx.send_replace(s);
        }
    }
}
