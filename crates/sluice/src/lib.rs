//! The `sluice` binary's library half: the registry of connectors this build knows, turning a
//! config into a running pipeline, the terminal's progress display and the playground.
//! `main.rs` is only the command line; recovery and retries live in `sluice-runtime`.

pub mod import;
pub mod playground;
pub mod progress;

use std::path::Path;
use std::sync::Arc;

use sluice_config::{ConfigError, PipelineConfig, Registry};
use sluice_core::{Identity, Transform};
use sluice_runtime::{Pipeline, PipelineError, RetryPolicy, Running};
use tokio::sync::watch;

pub use sluice_runtime::chain;

/// Every connector type this build knows. Adding a connector is one line here (behind its
/// cargo feature) and its own crate.
pub fn registry() -> Registry {
    let r = Registry::new();
    #[cfg(feature = "postgres")]
    let r = r
        .source(sluice_postgres::TYPE, sluice_postgres::parse_source)
        .sink(sluice_postgres::TYPE, sluice_postgres::parse_sink);
    #[cfg(feature = "mysql")]
    let r = r.source(sluice_mysql::TYPE, sluice_mysql::parse_source).sink(sluice_mysql::TYPE, sluice_mysql::parse_sink);
    #[cfg(feature = "kafka")]
    let r = r.sink(sluice_kafka::TYPE, sluice_kafka::parse_sink).source(sluice_kafka::TYPE, sluice_kafka::parse_source);
    #[cfg(feature = "duckdb")]
    let r = r.sink(sluice_duckdb::TYPE, sluice_duckdb::parse_sink);
    #[cfg(feature = "parquet")]
    let r = r.sink(sluice_parquet::TYPE, sluice_parquet::parse_sink);
    #[cfg(feature = "snowflake")]
    let r = r.sink(sluice_snowflake::TYPE, sluice_snowflake::parse_sink);
    r
}

/// Reads and validates a pipeline file.
pub fn load(path: &Path) -> Result<PipelineConfig, ConfigError> {
    PipelineConfig::load(path, &registry())
}

/// Parses and validates pipeline TOML, resolving `${NAME}` through `env`.
pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<PipelineConfig, ConfigError> {
    PipelineConfig::parse(text, env, &registry())
}

/// The runtime's view of a configured pipeline.
pub fn pipeline(cfg: &PipelineConfig) -> Pipeline {
    Pipeline {
        name: cfg.name.clone(),
        source: cfg.source.clone(),
        sinks: cfg.sinks.clone(),
        transform: Arc::new(|| Box::new(Identity) as Box<dyn Transform>),
        retry: RetryPolicy::default(),
    }
}

/// Starts the pipeline in the background; it runs until `stop` becomes true or an error that
/// retrying cannot fix ends it.
pub fn start(cfg: &PipelineConfig, stop: watch::Receiver<bool>) -> Running {
    sluice_runtime::spawn(pipeline(cfg), stop)
}

/// Runs the pipeline until `stop` becomes true; returns the error that ended it, if any.
pub async fn run(cfg: &PipelineConfig, stop: watch::Receiver<bool>) -> Result<(), PipelineError> {
    sluice_runtime::run(pipeline(cfg), stop).await
}
