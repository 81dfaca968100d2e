//! `[source]` and `[[sink]]` with `type = "postgres"`: keys, defaults and validation. Every key
//! is documented in `docs/config.md`.

use serde::{Deserialize, Serialize};
use sluice_config::{invalid, redact_url, typed, BatchConfig, ConfigError, ParseContext, Secret, TableFilter};

/// Default for `source.status_interval_ms`.
pub const DEFAULT_STATUS_INTERVAL_MS: u64 = 1_000;
/// Default for `source.slot_takeover_secs`.
pub const DEFAULT_SLOT_TAKEOVER_SECS: u64 = 5;
/// Default for `source.discover_interval_secs`.
pub const DEFAULT_DISCOVER_INTERVAL_SECS: u64 = 10;
/// Default for `source.backfill_chunk_rows`.
pub const DEFAULT_BACKFILL_CHUNK_ROWS: usize = 4_096;
/// Default for `sink[].checkpoint_schema`.
pub const DEFAULT_CHECKPOINT_SCHEMA: &str = "sluice";
/// Default for `sink[].snapshot_connections`.
pub const DEFAULT_SNAPSHOT_CONNECTIONS: usize = 2;
/// Default for `sink[].changelog_suffix`.
pub const DEFAULT_CHANGELOG_SUFFIX: &str = "_changelog";

/// `[source]` with `type = "postgres"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgSourceConfig {
    /// Connection URL; the password may come from `${ENV_VAR}`.
    pub url: Secret<String>,
    /// Include globs over `schema.table` (`*` any run of characters, `?` one character).
    #[serde(default = "default_tables")]
    pub tables: Vec<String>,
    /// Exclude globs over `schema.table`, applied after `tables`.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Whether to copy existing rows.
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// Replication slot name; default `sluice_<name>`.
    #[serde(default)]
    pub slot: Option<String>,
    /// Publication name; default `sluice_<name>`.
    #[serde(default)]
    pub publication: Option<String>,
    /// How often to report the confirmed position to the server, in milliseconds.
    #[serde(default = "default_status_interval_ms")]
    pub status_interval_ms: u64,
    /// How long to wait for a slot still held by a dead connection before terminating it.
    #[serde(default = "default_slot_takeover_secs")]
    pub slot_takeover_secs: u64,
    /// How often to look for tables that newly match `tables`, in seconds (0: never).
    #[serde(default = "default_discover_interval_secs")]
    pub discover_interval_secs: u64,
    /// Rows per chunk when copying a live table (a table added later, or for a sink added later).
    #[serde(default = "default_backfill_chunk_rows")]
    pub backfill_chunk_rows: usize,
    /// How the server sends streamed values: `text` (the default: measured cheaper end to end,
    /// see BENCHMARKS.md) or `binary` (pgoutput's binary format, when every selected column has
    /// one; PostgreSQL 14+).
    #[serde(default = "default_source_encoding")]
    pub encoding: Encoding,
}

/// `source.snapshot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Copy existing rows: consistently with the stream at the first start, chunk by chunk for
    /// tables and sinks that join later.
    #[default]
    Initial,
    /// Stream changes only, from the moment the slot is created.
    Never,
}

/// `[[sink]]` with `type = "postgres"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgSinkConfig {
    /// Connection URL; the password may come from `${ENV_VAR}`.
    pub url: Secret<String>,
    /// `replica` keeps tables of the same shape; `changelog` appends one row per change.
    #[serde(default)]
    pub mode: SinkMode,
    /// When to commit.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Schema of the table holding this sink's checkpoints.
    #[serde(default = "default_checkpoint_schema")]
    pub checkpoint_schema: String,
    /// In changelog mode, appended to the source table name to name the changelog table.
    #[serde(default = "default_changelog_suffix")]
    pub changelog_suffix: String,
    /// Replica mode: connections that write a consistent snapshot in parallel.
    #[serde(default = "default_snapshot_connections")]
    pub snapshot_connections: usize,
    /// Take copied rows from a PostgreSQL source in its own COPY format, without decoding them.
    /// Off makes them travel as typed values like every other change (same result, more CPU).
    #[serde(default = "default_true")]
    pub bulk_passthrough: bool,
    /// How values travel to the target: `binary` (typed parameters and binary COPY wherever the
    /// column type allows, text elsewhere) or `text`.
    #[serde(default)]
    pub encoding: Encoding,
    /// Replica mode: how the target follows the source's schema changes.
    #[serde(default)]
    pub schema_changes: SchemaChanges,
}

pub use sluice_config::SchemaChanges;

/// `sink[].encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Binary where the column type and values allow.
    #[default]
    Binary,
    /// Always text.
    Text,
}

/// `sink[].mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkMode {
    /// Same table shape; upserts, deletes and truncates applied.
    #[default]
    Replica,
    /// One appended row per change with before/after images and source metadata.
    Changelog,
}

impl std::fmt::Display for SinkMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SinkMode::Replica => "replica",
            SinkMode::Changelog => "changelog",
        })
    }
}

fn default_tables() -> Vec<String> {
    TableFilter::default().tables
}
fn default_status_interval_ms() -> u64 {
    DEFAULT_STATUS_INTERVAL_MS
}
fn default_slot_takeover_secs() -> u64 {
    DEFAULT_SLOT_TAKEOVER_SECS
}
fn default_discover_interval_secs() -> u64 {
    DEFAULT_DISCOVER_INTERVAL_SECS
}
fn default_backfill_chunk_rows() -> usize {
    DEFAULT_BACKFILL_CHUNK_ROWS
}
fn default_checkpoint_schema() -> String {
    DEFAULT_CHECKPOINT_SCHEMA.to_string()
}
fn default_snapshot_connections() -> usize {
    DEFAULT_SNAPSHOT_CONNECTIONS
}
fn default_changelog_suffix() -> String {
    DEFAULT_CHANGELOG_SUFFIX.to_string()
}
fn default_source_encoding() -> Encoding {
    Encoding::Text
}
fn default_true() -> bool {
    true
}

fn validate_url(url: &str, key: &str) -> Result<(), ConfigError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(invalid(
            key,
            format!("{:?} is not a PostgreSQL URL; expected postgres://user@host:port/database", redact_url(url)),
        ));
    }
    crate::tls::validate(url)
        .map_err(|e| invalid(key, format!("{:?} is not a valid connection URL: {e}", redact_url(url))))?;
    Ok(())
}

impl PgSourceConfig {
    /// Parses and validates `[source]`.
    pub fn parse(body: toml::Value, ctx: &ParseContext<'_>) -> Result<PgSourceConfig, ConfigError> {
        let c: PgSourceConfig = typed(body, ctx.at)?;
        c.validate(ctx.at)?;
        Ok(c)
    }

    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        validate_url(self.url.expose(), &format!("{at}.url"))?;
        self.filter().validate(at)?;
        for (key, name) in [("slot", &self.slot), ("publication", &self.publication)] {
            if let Some(n) = name {
                if n.is_empty()
                    || n.len() > 63
                    || !n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                {
                    return Err(invalid(
                        format!("{at}.{key}"),
                        format!("{n:?} must be 1 to 63 lowercase letters, digits or '_'"),
                    ));
                }
            }
        }
        if self.status_interval_ms == 0 {
            return Err(invalid(format!("{at}.status_interval_ms"), "must be > 0"));
        }
        if self.backfill_chunk_rows == 0 {
            return Err(invalid(format!("{at}.backfill_chunk_rows"), "must be > 0"));
        }
        Ok(())
    }

    /// The table selection.
    pub fn filter(&self) -> TableFilter {
        TableFilter { tables: self.tables.clone(), exclude: self.exclude.clone() }
    }

    /// The slot name: `slot`, or `sluice_<pipeline>`.
    pub fn slot_name(&self, pipeline: &str) -> String {
        self.slot.clone().unwrap_or_else(|| format!("sluice_{pipeline}"))
    }

    /// The publication name: `publication`, or `sluice_<pipeline>`.
    pub fn publication_name(&self, pipeline: &str) -> String {
        self.publication.clone().unwrap_or_else(|| format!("sluice_{pipeline}"))
    }
}

impl PgSinkConfig {
    /// Parses and validates one `[[sink]]`.
    pub fn parse(body: toml::Value, ctx: &ParseContext<'_>) -> Result<PgSinkConfig, ConfigError> {
        let c: PgSinkConfig = typed(body, ctx.at)?;
        c.validate(ctx.at)?;
        Ok(c)
    }

    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        validate_url(self.url.expose(), &format!("{at}.url"))?;
        self.batch.validate(at)?;
        if self.checkpoint_schema.is_empty() {
            return Err(invalid(format!("{at}.checkpoint_schema"), "must not be empty"));
        }
        if !(1..=64).contains(&self.snapshot_connections) {
            return Err(invalid(format!("{at}.snapshot_connections"), "must be between 1 and 64"));
        }
        if self.mode == SinkMode::Changelog && self.changelog_suffix.is_empty() {
            return Err(invalid(
                format!("{at}.changelog_suffix"),
                "must not be empty in changelog mode, or changelog tables would replace the source-named tables",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(extra: &str) -> Result<PgSourceConfig, String> {
        let text = format!("url = \"postgres://app:s3cr3t@127.0.0.1:5432/app\"\n{extra}");
        PgSourceConfig::parse(toml::from_str(&text).unwrap(), &ParseContext { at: "source", pipeline: "orders" })
            .map_err(|e| e.to_string())
    }

    fn sink(extra: &str) -> Result<PgSinkConfig, String> {
        let text = format!("url = \"postgres://user@127.0.0.1:5433/replica\"\n{extra}");
        PgSinkConfig::parse(toml::from_str(&text).unwrap(), &ParseContext { at: "sink[0]", pipeline: "orders" })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_follow_the_documentation() {
        let s = source("").unwrap();
        assert_eq!(s.slot_name("orders"), "sluice_orders");
        assert_eq!(s.publication_name("orders"), "sluice_orders");
        assert_eq!(s.snapshot, SnapshotMode::Initial);
        assert_eq!(s.tables, ["public.*"]);
        assert_eq!(s.discover_interval_secs, DEFAULT_DISCOVER_INTERVAL_SECS);
        let k = sink("").unwrap();
        assert_eq!(k.mode, SinkMode::Replica);
        assert_eq!(k.batch.max_rows, sluice_config::DEFAULT_BATCH_MAX_ROWS);
        assert!(k.bulk_passthrough);
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = sink("mode = \"mirror\"").unwrap_err();
        assert!(e.starts_with("sink[0].mode: ") && e.contains("replica") && e.contains("changelog"), "{e}");
        let e = sink("modee = 1").unwrap_err();
        assert!(e.starts_with("sink[0]") && e.contains("modee"), "{e}");
        let e = source("slott = \"x\"").unwrap_err();
        assert!(e.starts_with("source") && e.contains("slott"), "{e}");
        let e = source("tables = \"public.*\"").unwrap_err();
        assert!(e.starts_with("source.tables: "), "{e}");
        let e = source("snapshot = \"sometimes\"").unwrap_err();
        assert!(e.starts_with("source.snapshot: ") && e.contains("initial"), "{e}");
        let e = sink("snapshot_connections = 0").unwrap_err();
        assert!(e.starts_with("sink[0].snapshot_connections: "), "{e}");
        let e = source("slot = \"Bad-Name\"").unwrap_err();
        assert!(e.starts_with("source.slot: "), "{e}");
    }

    #[test]
    fn a_url_that_is_not_postgres_is_refused_without_its_password() {
        let e = PgSinkConfig::parse(
            toml::from_str("url = \"http://user:hunter2@127.0.0.1:5433\"").unwrap(),
            &ParseContext { at: "sink[0]", pipeline: "p" },
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("sink[0].url: ") && !e.contains("hunter2") && e.contains("http://user@127.0.0.1:5433"),
            "{e}"
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_and_serialized_forms() {
        let s = source("").unwrap();
        assert!(!format!("{s:?}").contains("s3cr3t"));
        assert!(!serde_json::to_string(&s).unwrap().contains("s3cr3t"));
    }
}
