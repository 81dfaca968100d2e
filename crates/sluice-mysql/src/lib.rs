//! MySQL and MariaDB for Sluice: a row-binlog source with a consistent snapshot, and a replica
//! sink for MySQL, MariaDB and TiDB.
//!
//! The binlog connection, authentication and event framing come from `mysql_async` /
//! `mysql_common`; event bodies and row images are decoded here (`binlog`, `rows`, `jsonb`) so
//! that values go straight from the binlog's binary form into Sluice's typed values, and so
//! MariaDB's own events (GTID, annotate, GTID list) are read as well as MySQL's.

pub mod binlog;
mod catalog;
pub mod check;
pub mod config;
mod connector;
mod error;
pub mod jsonb;
pub mod rows;
pub mod sink;
mod source;

pub use connector::{describe_url, parse_sink, parse_source, MySqlSinkConnector, MySqlSourceConnector, TYPE};
pub use error::MyError;
pub use source::MySqlSource;
