//! DuckDB for Sluice: the `duckdb` sink (issue 11), a live replica or a change log in one DuckDB
//! file, and the reader behind `sluice query`. Its own crate so that DuckDB's native library
//! stays out of builds that do not need it.

pub mod config;
pub mod connector;
pub mod db;
pub mod query;
pub mod shape;
pub mod sink;
pub mod types;

pub use connector::{parse_sink, TYPE};
