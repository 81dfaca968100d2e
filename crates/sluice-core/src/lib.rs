//! The Sluice data model and the contracts between sources, the runtime, transforms and sinks.
//!
//! ```text
//!   Source ──Event──▶ runtime ──▶ Transform ──▶ per-sink queues ──▶ Sink (one task each)
//!     ▲                  │                                           │ commit(checkpoint, Ack)
//!     └── confirm(meet) ◀┴──────── durable checkpoints ◀── Ack::durable ┘
//! ```
//!
//! A source decodes its server's changes into typed [`Value`]s and emits [`Event`]s in commit
//! order. Every sink receives every transaction, plus the table copies addressed to it. A sink
//! *accepts* events and later makes them durable in [`Sink::commit`], storing the
//! [`Checkpoint`] the runtime gives it next to the data, and reports that through the commit's
//! [`Ack`]. The runtime alone computes the position durable in every sink (the
//! [`Position::meet`]) and only then confirms it to the source, which may then release what lies
//! before it (for PostgreSQL: advance the replication slot so the server can recycle WAL).
#![deny(missing_docs)]

mod checkpoint;
pub mod collapse;
mod connector;
mod error;
mod event;
pub mod failpoint;
pub mod json;
mod position;
mod schema;
mod traits;
mod value;

pub use checkpoint::{Checkpoint, CheckpointError, Overtaken, TableProgress, CHECKPOINT_VERSION};
pub use connector::{CheckResult, SinkConnector, SinkTable, SinkTableState, SourceConnector};
pub use error::{ConnectorError, ErrorClass};
pub use event::{
    BulkDecoder, BulkFormat, BulkRows, Change, Copy, CopyMode, CopyStep, Event, Hold, Op, SinkSet, TxnMeta,
};
pub use failpoint::crash_point;
pub use position::{BinlogPosition, Gtid, GtidSet, InvalidPosition, KafkaOffsets, Lsn, Position};
pub use schema::{next_version, ColumnSchema, DataType, Key, Row, SchemaRef, TableId, TableSchema};
pub use traits::{
    Ack, AckIssuer, AckReport, BatchPolicy, Claimed, Identity, Resume, Sink, SinkContext, SinkStats, Source,
    SourceContext, Transform,
};
pub use value::{
    civil_from_days, days_from_civil, days_in_month, Date, Decimal, DecimalKind, Interval, Text, Time, TimeTz,
    Timestamp, Utc, Uuid, Value, ValueError, MICROS_PER_DAY,
};
