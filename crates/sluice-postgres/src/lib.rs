//! PostgreSQL for Sluice: a logical-replication source (pgoutput) and a replica/changelog
//! sink. They live together because they share type mapping and identifier quoting.

mod catalog;
pub mod check;
mod error;
mod ident;
pub mod pgoutput;
mod replication;
mod sink;
mod snapshot_copy;
mod source;

pub use error::PgError;
pub use sink::{row_json, text_columns, PgSink, CHECKPOINT_TABLE, DEAD_LETTER_TABLE};
pub use source::PgSource;
