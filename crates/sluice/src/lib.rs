//! The `sluice` binary's library half: assembling pipelines from config, running them with
//! retries, and the playground. `main.rs` is only the command line.

pub mod playground;

use std::time::{Duration, Instant};

use sluice_config::{PipelineConfig, SinkConfig, SourceConfig};
use sluice_core::{ErrorClass, Sink, Source};
use sluice_postgres::{PgSink, PgSource};
use sluice_runtime::{run_pipeline, PipelineError};
use tokio::sync::watch;
use tracing::{error, warn};

/// First delay before retrying after a transient failure; doubles up to [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// Longest delay between retries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Builds the source and sinks a config describes.
pub fn build(cfg: &PipelineConfig) -> (Box<dyn Source>, Vec<Box<dyn Sink>>) {
    let source: Box<dyn Source> = match &cfg.source {
        SourceConfig::Postgres(pg) => Box::new(PgSource::new(pg.clone(), cfg.slot_name(), cfg.publication_name())),
    };
    let sinks = cfg
        .sinks
        .iter()
        .enumerate()
        .map(|(i, s)| -> Box<dyn Sink> {
            match s {
                SinkConfig::Postgres(pg) => Box::new(PgSink::new(pg.clone(), &cfg.name, i)),
            }
        })
        .collect();
    (source, sinks)
}

/// An error with its whole cause chain on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Runs the pipeline until `stop` becomes true, reconnecting with backoff after transient
/// failures. Returns the fatal error that ended it, if any.
pub async fn run_with_retry(cfg: &PipelineConfig, mut stop: watch::Receiver<bool>) -> Result<(), PipelineError> {
    let mut backoff = INITIAL_BACKOFF;
    loop {
        let started = Instant::now();
        let (source, sinks) = build(cfg);
        match run_pipeline(source, sinks, stop.clone()).await {
            Ok(()) => return Ok(()),
            // Definite errors that reach this far concern a whole table, and retrying would
            // only loop; records the target refuses are dead-lettered inside the sink.
            Err(e) if matches!(e.class(), ErrorClass::Fatal | ErrorClass::Definite) => {
                error!(error = %chain(&e), "pipeline failed; not retrying");
                return Err(e);
            }
            Err(e) => {
                if *stop.borrow() {
                    return Ok(());
                }
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = INITIAL_BACKOFF;
                }
                warn!(error = %chain(&e), retry_in_ms = backoff.as_millis() as u64, "pipeline interrupted; resuming from the last checkpoint");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
