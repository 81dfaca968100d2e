//! Kafka for Sluice, through librdkafka (the `rdkafka` crate): the sink and source of issue 10.
//! This crate is its own so that librdkafka's C build stays out of builds that do not need it.

pub mod avro;
pub mod client;
pub mod config;
pub mod connector;
pub mod decode;
pub mod format;
pub mod sink;
pub mod source;
pub mod source_config;
pub mod text;

pub use connector::{parse_sink, parse_source, TYPE};
