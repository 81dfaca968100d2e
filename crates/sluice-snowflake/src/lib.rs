//! Snowflake for Sluice: the client REST protocol (`client`: password or key-pair login,
//! statements with bound values, JSON and Arrow answers; `jwt`: the key-pair token) and the sink
//! (`sink`: the change log shaped as the Snowflake Kafka connector's, or a typed live replica
//! (`types`), one transaction per flush with the checkpoint).

pub mod client;
pub mod config;
pub mod connector;
pub mod jwt;
mod result;
pub mod sink;
pub mod types;

pub use client::{Auth, Bind, BindValue, Login, QueryResult, Session, SnowflakeError};
pub use connector::{parse_sink, SnowflakeSinkConnector, TYPE};
pub use jwt::KeyPair;
