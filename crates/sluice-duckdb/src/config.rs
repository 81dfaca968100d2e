//! `[[sink]]` with `type = "duckdb"`.

use serde::{Deserialize, Serialize};
use sluice_config::{invalid, typed, BufferConfig, ConfigError, ParseContext, SchemaChanges};

/// Default of `checkpoint_schema`.
pub const DEFAULT_CHECKPOINT_SCHEMA: &str = "sluice";

/// How a change log holds each change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangelogFormat {
    /// `RECORD_METADATA` and `RECORD_CONTENT` JSON columns, as the Snowflake Kafka connector
    /// lands records.
    #[default]
    Snowflake,
    /// The table's own typed columns, then `_op`, `_position` and `_commit_ts`.
    Typed,
}

/// `[[sink]]` with `type = "duckdb"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DuckDbSinkConfig {
    /// The database file (created when missing)
    pub path: String,
    /// `replica` (the current state of each table) or `changelog` (one row per change)
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Changelog mode: `snowflake` or `typed`
    #[serde(default)]
    pub changelog_format: ChangelogFormat,
    /// When buffered changes are written
    #[serde(default)]
    pub buffer: BufferConfig,
    /// Replica mode: how tables follow the source's schema changes
    #[serde(default)]
    pub schema_changes: SchemaChanges,
    /// Where the checkpoint and quarantine tables live
    #[serde(default = "default_checkpoint_schema")]
    pub checkpoint_schema: String,
    /// DuckDB's `memory_limit` (e.g. `"2GB"`)
    #[serde(default = "default_memory_limit")]
    pub memory_limit: Option<String>,
    /// DuckDB's worker threads; DuckDB's default (the cores) when unset
    #[serde(default)]
    pub threads: Option<u32>,
}

/// Default of `memory_limit`: DuckDB's own default (80% of the machine's memory, kept as a
/// cache) suits a database, not a sink inside a replication process; loads ran as fast with 256 MB
/// (BENCHMARKS.md).
pub const DEFAULT_MEMORY_LIMIT: &str = "512MB";

fn default_memory_limit() -> Option<String> {
    Some(DEFAULT_MEMORY_LIMIT.into())
}

fn default_mode() -> String {
    "replica".into()
}
fn default_checkpoint_schema() -> String {
    DEFAULT_CHECKPOINT_SCHEMA.into()
}

impl DuckDbSinkConfig {
    /// Parses and validates a `[[sink]]`.
    pub fn parse(body: toml::Value, ctx: &ParseContext<'_>) -> Result<DuckDbSinkConfig, ConfigError> {
        let c: DuckDbSinkConfig = typed(body, ctx.at)?;
        let at = ctx.at;
        if c.path.trim().is_empty() {
            return Err(invalid(format!("{at}.path"), "must name the DuckDB file, e.g. \"warehouse.duckdb\""));
        }
        if c.mode != "replica" && c.mode != "changelog" {
            return Err(invalid(format!("{at}.mode"), format!("{:?}: expected \"replica\" or \"changelog\"", c.mode)));
        }
        c.buffer.validate(at)?;
        if c.checkpoint_schema.is_empty() {
            return Err(invalid(format!("{at}.checkpoint_schema"), "must not be empty"));
        }
        if c.threads == Some(0) {
            return Err(invalid(format!("{at}.threads"), "must be > 0"));
        }
        Ok(c)
    }

    /// Whether this sink keeps a change log.
    pub fn changelog(&self) -> bool {
        self.mode == "changelog"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<DuckDbSinkConfig, ConfigError> {
        DuckDbSinkConfig::parse(toml::from_str(s).unwrap(), &ParseContext { at: "sink[0]", pipeline: "p" })
    }

    #[test]
    fn keys_have_defaults_and_bad_values_name_their_key() {
        let c = parse("path = \"w.duckdb\"").unwrap();
        assert_eq!(
            (c.mode.as_str(), c.buffer, c.changelog_format),
            ("replica", BufferConfig::default(), ChangelogFormat::Snowflake)
        );
        let c = parse(
            "path = \"w.duckdb\"\nmode = \"changelog\"\nchangelog_format = \"typed\"\nbuffer = { flush_time_s = 0.2 }",
        )
        .unwrap();
        assert!(c.changelog() && c.changelog_format == ChangelogFormat::Typed && c.buffer.flush_time_s == 0.2);
        for (bad, key) in [
            ("path = \"\"", "sink[0].path"),
            ("path = \"w\"\nmode = \"mirror\"", "sink[0].mode"),
            ("path = \"w\"\nbuffer = { count_records = 0 }", "sink[0].buffer.count_records"),
            ("path = \"w\"\nbuffer = { flush_time_s = -1.0 }", "sink[0].buffer.flush_time_s"),
            ("path = \"w\"\nchangelog_format = \"avro\"", "sink[0].changelog_format"),
            ("path = \"w\"\nbatch = { max_rows = 5 }", "sink[0]"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.starts_with(key), "{bad}: {e}");
        }
    }
}
