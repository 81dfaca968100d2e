//! The Sluice data model and the contracts between sources, the runtime and sinks.
//!
//! ```text
//!   Source ──Event──▶ runtime ──Arc<Event>──▶ Sink task (one per sink)
//!     ▲                  │                        │
//!     └── confirm(pos) ◀─┴── min over sinks ◀── Ack(Checkpoint) after durable commit
//! ```
//!
//! A source emits [`Event`]s in source commit order. Every sink receives every event.
//! A sink *accepts* events (they may sit in a buffer or an open target transaction) and
//! later makes them *durable* in [`Sink::commit`], which reports the [`Checkpoint`] it made
//! durable. The runtime alone computes the position that is durable in every sink and only
//! then confirms it to the source, which may then release what lies before it (for
//! PostgreSQL: advance the replication slot so the server can recycle WAL).
#![deny(missing_docs)]

pub mod copytext;
mod error;
mod event;
mod model;
mod position;
mod traits;

pub use copytext::RowBlock;
pub use error::{ConnectorError, ErrorClass};
pub use event::{Change, Event, Op, TxnMeta};
pub use model::SchemaRef;
pub use model::{ColumnSchema, DataType, Row, TableId, TableSchema, Text, Value};
pub use position::{Checkpoint, Lsn, Position};
pub use traits::{BatchPolicy, Sink, Source, SourceContext};
