//! Snowflake for Sluice: the client REST protocol (`client`: password or key-pair login,
//! statements with bound values, JSON and Arrow answers; `jwt`: the key-pair token), on which
//! the sink is built (issue 12: the change log shaped as the Kafka connector's, and a live
//! replica applied with one transaction per flush).

pub mod client;
pub mod jwt;
mod result;

pub use client::{Auth, Bind, BindValue, Login, QueryResult, Session, SnowflakeError};
pub use jwt::KeyPair;
