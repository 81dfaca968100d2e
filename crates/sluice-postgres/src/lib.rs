//! PostgreSQL for Sluice: a logical-replication source (pgoutput) and a replica/changelog
//! sink. They live together because they share type mapping (`codec`, `catalog`) and
//! identifier quoting.

mod catalog;
pub mod check;
pub mod codec;
pub mod config;
mod connector;
pub mod copy;
mod error;
mod ident;
pub mod pgoutput;
mod replication;
mod sink;
mod source;
pub mod tls;

pub use connector::{describe_url, parse_sink, parse_source, PgSinkConnector, PgSourceConnector, TYPE};
pub use error::PgError;
pub use sink::apply::{columns as text_columns, Column};
pub use sink::{PgSink, CHECKPOINT_TABLE, DEAD_LETTER_TABLE};
pub use source::PgSource;
