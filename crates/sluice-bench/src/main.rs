//! `sluice-bench`: end-to-end benchmarks that run Sluice and its baseline on the same machine
//! in the same run, and print a final `key=value` summary line.
//!
//! Every benchmark starts its own PostgreSQL servers with the test kit and runs the release
//! `sluice` binary as a child process (so its memory can be measured). Run them through the
//! scripts in `bench/`, which build that binary first.

mod common;
mod drain;
mod duckdb;
mod kafka;
mod latency;
mod mysql;
mod snapshot;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sluice-bench", about = "Sluice end-to-end benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Streaming drain of a backlog: Sluice vs native logical replication vs pg_recvlogical
    Drain(drain::Args),
    /// Initial snapshot: Sluice vs a binary COPY pipe
    Snapshot(snapshot::Args),
    /// Commit-to-visible latency under a steady workload
    Latency(latency::Args),
    /// Peak memory of one huge transaction
    BigTxn(drain::BigTxnArgs),
    /// MariaDB binlog drain: Sluice (MariaDB -> MariaDB) vs MariaDB's own replication
    MysqlDrain(mysql::DrainArgs),
    /// MariaDB initial copy: Sluice vs mariadb-dump | mariadb
    MysqlSnapshot(mysql::SnapshotArgs),
    /// PostgreSQL -> Kafka (Avro, exactly once) drain vs a raw rdkafka producer loop
    KafkaProduce(kafka::ProduceArgs),
    /// Kafka -> PostgreSQL replica drain (Avro, through the registry) next to PostgreSQL -> PostgreSQL
    KafkaConsume(kafka::ConsumeArgs),
    /// PostgreSQL -> DuckDB load of one table: Sluice vs dlt (connectorx)
    DuckdbLoad(duckdb::LoadArgs),
    /// PostgreSQL -> Parquet files (local directory) load of one table: Sluice vs dlt's filesystem destination
    ParquetLoad(duckdb::LoadArgs),
    /// A backlog of updates drained into a DuckDB replica, next to a PostgreSQL replica
    DuckdbDrain(duckdb::DrainArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Drain(a) => drain::run(a).await,
        Cmd::Snapshot(a) => snapshot::run(a).await,
        Cmd::Latency(a) => latency::run(a).await,
        Cmd::BigTxn(a) => drain::big_txn(a).await,
        Cmd::MysqlDrain(a) => mysql::drain(a).await,
        Cmd::MysqlSnapshot(a) => mysql::snapshot(a).await,
        Cmd::KafkaProduce(a) => kafka::produce(a).await,
        Cmd::KafkaConsume(a) => kafka::consume(a).await,
        Cmd::DuckdbLoad(a) => duckdb::load(a, duckdb::Target::DuckDb).await,
        Cmd::ParquetLoad(a) => duckdb::load(a, duckdb::Target::Parquet).await,
        Cmd::DuckdbDrain(a) => duckdb::drain(a).await,
    }
}
