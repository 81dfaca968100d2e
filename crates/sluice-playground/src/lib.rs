//! Local databases on demand, like `tiup playground`: real servers started from the binaries
//! installed on this machine, on free 127.0.0.1 ports in temporary directories, stopped and
//! deleted when dropped. `sluice playground` runs a pipeline between two of them under a sample
//! workload; the test kit and the benchmarks build on the same servers.
//!
//! [`PgServer::start`] runs `initdb` and `postgres` in a fresh temporary directory, listening
//! with `wal_level=logical`. PostgreSQL refuses to run as root, so when we are root the server
//! runs as the unprivileged `postgres` system user (or `nobody`). Errors say what is missing and
//! how to install it. [`MariaDbServer::start`] does the same for MariaDB (`mariadb-install-db`,
//! then `mariadbd` with a row binlog).

mod kafka;
mod mariadb;
pub mod mysql_scenario;
mod s3;
pub mod scenario;
mod server;
mod snowflake;

pub use kafka::{wait_ready, KafkaBroker, KafkaKind};
pub use mariadb::{MariaDbOptions, MariaDbServer};
pub use s3::{S3Server, S3_ACCESS_KEY, S3_SECRET_KEY};
pub use server::{free_port, pg_bindir, PgOptions, PgServer};
pub use snowflake::{fakesnow_python, SnowflakeServer};
