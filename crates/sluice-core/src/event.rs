use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::copytext::RowBlock;
use crate::model::{Row, TableSchema};
use crate::position::Position;

/// Transaction metadata from the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnMeta {
    /// Source transaction id
    pub xid: u64,
    /// Commit time, microseconds since the Unix epoch
    pub commit_ts_micros: i64,
    /// Position of the commit record itself; every change of this transaction is covered by
    /// any checkpoint strictly greater than it.
    pub commit_position: Position,
}

/// What happened to one row.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// A row read by the initial snapshot.
    Read {
        /// The row
        after: Row,
    },
    /// Rows read by the initial snapshot, many at once, in COPY text form.
    ReadRows {
        /// The rows
        rows: RowBlock,
    },
    /// A new row.
    Insert {
        /// The row
        after: Row,
    },
    /// A changed row. `before` holds the old key (replica identity default, when the key
    /// changed) or the whole old row (replica identity full); it is `None` when the key did
    /// not change and identity is default.
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
    pub table: Arc<TableSchema>,
    /// The change
    pub op: Op,
}

/// What a source emits, in source commit order.
///
/// The stream is a sequence of: an optional snapshot (`SnapshotBegin`, `Change`s with
/// [`Op::Read`] or [`Op::ReadRows`], `SnapshotEnd`), then transactions (`Begin`, `Change`s, `Commit`) with
/// `Heartbeat`s between them.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An initial snapshot of these tables starts; sinks reset whatever an earlier,
    /// interrupted snapshot left behind.
    SnapshotBegin {
        /// Tables about to be copied
        tables: Vec<Arc<TableSchema>>,
    },
    /// The snapshot is complete and consistent with the stream that follows at `position`.
    SnapshotEnd {
        /// Where streaming continues
        position: Position,
    },
    /// A source transaction starts.
    Begin(TxnMeta),
    /// A row change inside a transaction or snapshot.
    Change(Change),
    /// The transaction started by the last `Begin` committed; `position` is its end.
    Commit {
        /// Transaction metadata, as at `Begin`
        meta: TxnMeta,
        /// End position of the transaction: the resume point after it
        position: Position,
    },
    /// No transaction is open and nothing before `position` remains to be delivered: a sink
    /// that has made everything before durable may report `position` as durable too. This is
    /// what lets the source release WAL when the selected tables are idle.
    Heartbeat {
        /// Position reached by the source
        position: Position,
    },
}

impl Event {
    /// The position a sink reaches once it has made this event durable, for events that end a
    /// unit of work.
    pub fn boundary_position(&self) -> Option<Position> {
        match self {
            Event::SnapshotEnd { position } | Event::Commit { position, .. } | Event::Heartbeat { position } => {
                Some(*position)
            }
            _ => None,
        }
    }
}
