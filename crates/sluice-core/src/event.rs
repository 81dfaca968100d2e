//! What flows from a source through the runtime to sinks.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::ConnectorError;
use crate::position::Position;
use crate::schema::{Key, Row, SchemaRef, TableId, TableSchema};

/// Transaction metadata from the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMeta {
    /// Source transaction id (0 when the source has none)
    pub xid: u64,
    /// Commit time, microseconds since the Unix epoch
    pub commit_ts_micros: i64,
    /// Where the transaction starts; a sink whose position [covers](Position::covers) it
    /// already holds the transaction.
    pub position: Position,
}

/// What happened to one row, inside a source transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// A new row.
    Insert {
        /// The row
        after: Row,
    },
    /// A changed row. `before` holds the old key (when the key changed) or the whole old row
    /// (when the source logs whole rows); it is `None` when the key did not change and only
    /// keys are logged.
    Update {
        /// Old key or old row, where the source sent one
        before: Option<Row>,
        /// New row; may contain [`crate::Value::Unchanged`]
        after: Row,
    },
    /// A removed row: the old key columns (others NULL) or the whole old row.
    Delete {
        /// Old key or old row
        before: Row,
    },
    /// Every row of the table was removed.
    Truncate,
}

/// One row change, with the schema it was captured under.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Table shape at the time of the change
    pub table: SchemaRef,
    /// The change
    pub op: Op,
}

/// A set of sinks, by their index in the pipeline (at most [`SinkSet::MAX`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SinkSet(u64);

impl SinkSet {
    /// Most sinks a pipeline may have.
    pub const MAX: usize = 64;

    /// No sink.
    pub const fn empty() -> SinkSet {
        SinkSet(0)
    }

    /// Sinks `0..n`.
    pub fn first(n: usize) -> SinkSet {
        SinkSet(if n >= 64 { u64::MAX } else { (1u64 << n) - 1 })
    }

    /// Just sink `i`.
    pub fn one(i: usize) -> SinkSet {
        SinkSet(1u64 << i)
    }

    /// Adds sink `i`.
    pub fn insert(&mut self, i: usize) {
        self.0 |= 1u64 << i;
    }

    /// Takes sink `i` out.
    pub fn remove(&mut self, i: usize) {
        if i < 64 {
            self.0 &= !(1u64 << i);
        }
    }

    /// Whether sink `i` is in the set.
    pub fn contains(self, i: usize) -> bool {
        i < 64 && self.0 & (1u64 << i) != 0
    }

    /// The sinks in both sets.
    pub fn intersect(self, other: SinkSet) -> SinkSet {
        SinkSet(self.0 & other.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The sinks in the set, in index order.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(i)
        })
    }
}

impl fmt::Debug for SinkSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// A bulk row format, named `system/format`, e.g. `postgres/copy-text`. A source may offer
/// rows in a format some sink accepts as is (see [`crate::Sink::accepted_formats`]); the runtime decodes
/// them into typed rows for every sink that does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BulkFormat(pub &'static str);

impl fmt::Display for BulkFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Turns bulk rows back into typed rows; supplied by the source that wrote them.
pub trait BulkDecoder: Send + Sync {
    /// The rows of `data`, in the column order of `table`.
    fn decode(&self, table: &TableSchema, data: &Bytes) -> Result<Vec<Row>, ConnectorError>;
}

/// Rows in a source's own bulk format, passed on without decoding to sinks that accept it.
#[derive(Clone)]
pub struct BulkRows {
    format: BulkFormat,
    data: Bytes,
    rows: usize,
    decoder: Arc<dyn BulkDecoder>,
}

impl BulkRows {
    /// `rows` rows in `format`, decodable by `decoder`.
    pub fn new(format: BulkFormat, data: Bytes, rows: usize, decoder: Arc<dyn BulkDecoder>) -> BulkRows {
        BulkRows { format, data, rows, decoder }
    }

    /// The format.
    pub fn format(&self) -> BulkFormat {
        self.format
    }

    /// The encoded rows.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether the block holds no rows.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The rows, typed.
    pub fn decode(&self, table: &TableSchema) -> Result<Vec<Row>, ConnectorError> {
        self.decoder.decode(table, &self.data)
    }
}

impl fmt::Debug for BulkRows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkRows")
            .field("format", &self.format.0)
            .field("rows", &self.rows)
            .field("bytes", &self.data.len())
            .finish()
    }
}

impl PartialEq for BulkRows {
    fn eq(&self, other: &Self) -> bool {
        self.format == other.format && self.data == other.data
    }
}

/// How a copy treats what the sink already holds of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMode {
    /// The rows come from one snapshot consistent with the stream's start, before any
    /// transaction: the sink empties the table first and commits nothing of it until
    /// [`CopyStep::End`] (a copy cut short starts over).
    Snapshot,
    /// A live table is copied from its first row in chunks, between transactions: the sink
    /// empties the table first (rows it holds from before, say of a table dropped and created
    /// again, are void), then merges the rows in. Chunks commit as they come.
    Replace,
    /// A live table's copy resumes after a key: rows are merged in (inserted, or replacing the
    /// row with the same key); nothing is emptied.
    Resume,
}

impl CopyMode {
    /// Whether the sink empties the table when the copy begins.
    pub fn empties(self) -> bool {
        matches!(self, CopyMode::Snapshot | CopyMode::Replace)
    }
}

/// One step of copying a table's existing rows into some sinks.
#[derive(Debug, Clone, PartialEq)]
pub enum CopyStep {
    /// The copy starts.
    Begin {
        /// What happens to the rows the sink holds
        mode: CopyMode,
        /// The source's identity of the table (see [`crate::Checkpoint::table_ids`])
        source_id: Option<String>,
        /// The source's estimate of the row count, for progress display
        estimated_rows: Option<u64>,
    },
    /// Rows, typed.
    Rows(Vec<Row>),
    /// Rows in a bulk format the receiving sinks accept.
    Bulk(BulkRows),
    /// A copy of a live table reached `after`: every row with a key up to it has been sent. A sink that
    /// makes this durable resumes after it.
    Progress {
        /// Last key sent
        after: Key,
    },
    /// Every row has been sent.
    End,
}

/// A step of copying `table` into the sinks `to`.
#[derive(Debug, Clone, PartialEq)]
pub struct Copy {
    /// The sinks the rows are for; other sinks never see this event
    pub to: SinkSet,
    /// The table, in the shape the rows have
    pub table: SchemaRef,
    /// What happens
    pub step: CopyStep,
    /// A share of the source's memory budget, given back when the last sink has written the
    /// rows (the event is dropped)
    pub hold: Hold,
}

impl Copy {
    /// A copy step that holds no memory budget.
    pub fn new(to: SinkSet, table: SchemaRef, step: CopyStep) -> Copy {
        Copy { to, table, step, hold: Hold::default() }
    }
}

/// Something kept alive as long as the event carrying it: typically a semaphore permit that
/// bounds how much copied data is in flight.
#[derive(Clone, Default)]
pub struct Hold(pub Option<Arc<dyn Send + Sync>>);

impl fmt::Debug for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Hold(held)" } else { "Hold(none)" })
    }
}

impl PartialEq for Hold {
    /// A hold says nothing about the data: every two are equal.
    fn eq(&self, _: &Hold) -> bool {
        true
    }
}

/// What a source emits, in source commit order.
///
/// A stream is: `Tables`, `StreamStart`, then transactions (`Begin`, `Change`s, `Commit`) with
/// `Heartbeat`s between them. `Copy` events come between transactions: all of them before the
/// first transaction for a consistent snapshot, or in chunks while streaming for a copy of a live
/// table (a backfill). `Tables` is repeated whenever the selection changes.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The tables the source now selects. A sink's copy state of any other table is forgotten,
    /// so a table selected again later is copied again.
    Tables {
        /// Selected tables
        selected: Vec<TableId>,
    },
    /// The stream starts at `position`; snapshot copies that follow hold exactly what lies
    /// before it. A sink with no position takes this one.
    StreamStart {
        /// Where the stream continues
        position: Position,
    },
    /// A source transaction starts.
    Begin(TxnMeta),
    /// A row change inside a transaction.
    Change(Change),
    /// The transaction started by the last `Begin` committed.
    Commit {
        /// Transaction metadata, as at `Begin`
        meta: TxnMeta,
        /// The resume point after the transaction
        position: Position,
    },
    /// No transaction is open and nothing before `position` remains to be delivered. This is
    /// what lets the source release its log while the selected tables are idle.
    Heartbeat {
        /// Position reached by the source
        position: Position,
    },
    /// Copying a table's existing rows.
    Copy(Copy),
    /// The source takes over the parts of its stream that `scope` names (for Kafka, the
    /// partitions a rebalance just assigned, offsets ignored), which another process of the
    /// pipeline may have delivered into the same targets meanwhile. It comes between
    /// transactions. Each running sink first makes everything it accepted durable, then adopts
    /// what its target now holds for `scope` ([`crate::Sink::adopt`]); the runtime answers the
    /// source with every running sink's position on [`crate::SourceContext::claims`], under the
    /// same `id`, and the source reads the scope from their meet. Transforms never see it.
    Claim {
        /// Names the answer
        id: u64,
        /// The parts of the stream taken over
        scope: Position,
    },
}

impl Event {
    /// The table an event concerns, if one.
    pub fn table(&self) -> Option<&TableId> {
        match self {
            Event::Change(c) => Some(&c.table.id),
            Event::Copy(c) => Some(&c.table.id),
            _ => None,
        }
    }
}
