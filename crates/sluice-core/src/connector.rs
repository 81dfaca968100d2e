//! How connectors plug in: a configured source or sink builds its runtime object and runs its
//! preflight checks. Each connector crate implements these for its config types and offers a
//! registry entry (its `type` tag and parser, see `sluice_config::Registry`).

use std::fmt;

use async_trait::async_trait;

use crate::error::{ConnectorError, ErrorClass};
use crate::schema::TableId;
use crate::traits::{Sink, Source};

/// Where a sink stands with one table (`sluice tables`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkTable {
    /// The source table
    pub table: TableId,
    /// Its state
    pub state: SinkTableState,
}

impl SinkTable {
    /// Every table a sink holds: those of its checkpoint (copied or being copied), then the
    /// quarantined ones `(table, reason, since, position)` over them, sorted by name.
    pub fn list(
        checkpoint: Option<&crate::Checkpoint>,
        quarantined: impl IntoIterator<Item = (TableId, String, String, Option<String>)>,
    ) -> Vec<SinkTable> {
        let mut out: Vec<SinkTable> = checkpoint
            .into_iter()
            .flat_map(|cp| cp.tables.iter())
            .map(|(table, progress)| SinkTable {
                table: table.clone(),
                state: match progress {
                    crate::TableProgress::Copied => SinkTableState::Copied,
                    crate::TableProgress::Copying { .. } => SinkTableState::Copying,
                },
            })
            .collect();
        for (table, reason, since, position) in quarantined {
            let state = SinkTableState::Quarantined { reason, since, position };
            match out.iter_mut().find(|t| t.table == table) {
                Some(t) => t.state = state,
                None => out.push(SinkTable { table, state }),
            }
        }
        out.sort_by(|a, b| a.table.cmp(&b.table));
        out
    }
}

/// The state of one table in one sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkTableState {
    /// Copied; streamed changes are applied.
    Copied,
    /// Being copied (rows up to some key are in the sink).
    Copying,
    /// In quarantine: its changes are skipped until it is released.
    Quarantined {
        /// Why
        reason: String,
        /// Since when (RFC 3339)
        since: String,
        /// The source position of the change that put it there, if known
        position: Option<String>,
    },
}

impl fmt::Display for SinkTableState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkTableState::Copied => f.write_str("copied"),
            SinkTableState::Copying => f.write_str("copying"),
            SinkTableState::Quarantined { reason, since, position: Some(p) } => {
                write!(f, "quarantined since {since} (source position {p}): {reason}")
            }
            SinkTableState::Quarantined { reason, since, position: None } => {
                write!(f, "quarantined since {since}: {reason}")
            }
        }
    }
}

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

    /// Whether several processes of one pipeline may run this source side by side, each
    /// reading some of its partitions (a Kafka consumer group). Their sinks then write one
    /// target together ([`crate::SinkContext::shared`]).
    fn shares_partitions(&self) -> bool {
        false
    }

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

    /// Every table the `index`-th sink of `pipeline` holds, with its state, read from the
    /// target. A sink that keeps no per-table state lists none.
    async fn tables(&self, _pipeline: &str, _index: usize) -> Result<Vec<SinkTable>, ConnectorError> {
        Ok(Vec::new())
    }

    /// Runs `sql` against what the sink wrote and returns the result as a text table, without
    /// disturbing a running pipeline (`sluice query`). Sinks whose target has no reader of its
    /// own to point at say so.
    async fn query(&self, _sql: &str) -> Result<String, ConnectorError> {
        Err(ConnectorError::msg(
            ErrorClass::Fatal,
            format!("{} sinks cannot be queried through sluice; use the target's own client", self.kind()),
        ))
    }

    /// Takes `table` out of quarantine in the `index`-th sink of `pipeline`, so the next start
    /// copies it again from scratch. Refuses while the pipeline runs against the sink. Returns
    /// whether the table was in quarantine.
    async fn release(&self, _pipeline: &str, _index: usize, _table: &TableId) -> Result<bool, ConnectorError> {
        Err(ConnectorError::msg(ErrorClass::Fatal, format!("{} sinks have no quarantine", self.kind())))
    }
}
