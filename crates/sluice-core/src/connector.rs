//! How connectors plug in: a configured source or sink builds its runtime object and runs its
//! preflight checks. Each connector crate implements these for its config types and offers a
//! registry entry (its `type` tag and parser, see `sluice_config::Registry`).

use std::fmt;

use async_trait::async_trait;

use crate::traits::{Sink, Source};

/// The outcome of one preflight check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// What was checked, e.g. `source: wal_level = logical`
    pub name: String,
    /// Passed
    pub ok: bool,
    /// What was found, and on failure how to fix it
    pub detail: String,
}

impl CheckResult {
    /// A check that passed.
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> CheckResult {
        CheckResult { name: name.into(), ok: true, detail: detail.into() }
    }

    /// A check that failed; `detail` says how to fix it.
    pub fn fail(name: impl Into<String>, detail: impl Into<String>) -> CheckResult {
        CheckResult { name: name.into(), ok: false, detail: detail.into() }
    }
}

/// A configured source: `[source]` after parsing and validation.
#[async_trait]
pub trait SourceConnector: Send + Sync + fmt::Debug {
    /// The `type` tag, e.g. `postgres`.
    fn kind(&self) -> &'static str;

    /// A new source for one run of pipeline `pipeline` (names of slots and the like derive
    /// from it).
    fn build(&self, pipeline: &str) -> Box<dyn Source>;

    /// Preflight checks against the server, each with a fix on failure.
    async fn check(&self, pipeline: &str) -> Vec<CheckResult>;

    /// Where it connects, safe to print: host, port, database and user, never a secret.
    fn describe(&self) -> String;

    /// The config as JSON with every secret redacted (for status output and the API).
    fn to_json(&self) -> serde_json::Value;
}

/// A configured sink: one `[[sink]]` after parsing and validation.
#[async_trait]
pub trait SinkConnector: Send + Sync + fmt::Debug {
    /// The `type` tag, e.g. `postgres`.
    fn kind(&self) -> &'static str;

    /// A new sink, the `index`-th of pipeline `pipeline` (its checkpoint is stored under both).
    fn build(&self, pipeline: &str, index: usize) -> Box<dyn Sink>;

    /// Preflight checks against the target; `at` names the sink in messages (`sink[0]`).
    async fn check(&self, at: &str) -> Vec<CheckResult>;

    /// Where it writes, safe to print.
    fn describe(&self) -> String;

    /// The config as JSON with every secret redacted.
    fn to_json(&self) -> serde_json::Value;
}
