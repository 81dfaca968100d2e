//! Parquet for Sluice: the `parquet` sink (issue 11), a change log as Parquet files on local
//! disk or S3, partitioned by table and date.

pub mod compact;
pub mod config;
pub mod connector;
pub mod sink;
pub mod store;

pub use connector::{parse_sink, TYPE};
