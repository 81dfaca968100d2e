//! Pipeline configuration: the TOML file, its defaults and its validation.
//!
//! One set of types serves the file, the docs (`docs/config.md`) and later the REST API.
//! Loading happens in three steps, each of which names the offending key on failure:
//! parse TOML, interpolate `${ENV_VAR}` in string values, deserialize strictly (unknown keys
//! and wrong types are errors), then [`PipelineConfig::validate`].

mod secret;

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use secret::Secret;

/// Default for `source.tables`.
pub const DEFAULT_TABLES: &str = "public.*";
/// Default for `sink[].batch.max_rows`.
pub const DEFAULT_BATCH_MAX_ROWS: usize = 10_000;
/// Default for `sink[].batch.max_delay_ms`.
pub const DEFAULT_BATCH_MAX_DELAY_MS: u64 = 50;
/// Default for `source.status_interval_ms`.
pub const DEFAULT_STATUS_INTERVAL_MS: u64 = 1_000;
/// Default for `source.slot_takeover_secs`.
pub const DEFAULT_SLOT_TAKEOVER_SECS: u64 = 5;
/// Default for `sink[].checkpoint_schema`.
pub const DEFAULT_CHECKPOINT_SCHEMA: &str = "sluice";
/// Default for `sink[].snapshot_connections`.
pub const DEFAULT_SNAPSHOT_CONNECTIONS: usize = 2;
/// Default for `sink[].changelog_suffix`.
pub const DEFAULT_CHANGELOG_SUFFIX: &str = "_changelog";

/// A whole pipeline: one source feeding one or more sinks.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineConfig {
    /// Pipeline name; slot, publication and checkpoint names derive from it.
    pub name: String,
    /// Where changes come from.
    pub source: SourceConfig,
    /// Where changes go, in `[[sink]]` tables.
    #[serde(rename = "sink")]
    pub sinks: Vec<SinkConfig>,
}

/// The source of a pipeline, chosen by `type`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    /// PostgreSQL logical replication (pgoutput).
    Postgres(PgSourceConfig),
}

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
    /// Whether to copy existing rows before streaming.
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
}

/// `source.snapshot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Copy existing rows first, consistently with the stream.
    #[default]
    Initial,
    /// Stream changes only, from the moment the slot is created.
    Never,
}

/// One `[[sink]]`, chosen by `type`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkConfig {
    /// A PostgreSQL database.
    Postgres(PgSinkConfig),
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
    /// Replica mode: connections that write the initial snapshot in parallel.
    #[serde(default = "default_snapshot_connections")]
    pub snapshot_connections: usize,
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

/// `sink[].batch`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Commit after this many rows (at the next source transaction boundary).
    #[serde(default = "default_batch_max_rows")]
    pub max_rows: usize,
    /// Commit once the oldest uncommitted change is this old, in milliseconds.
    #[serde(default = "default_batch_max_delay_ms")]
    pub max_delay_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { max_rows: DEFAULT_BATCH_MAX_ROWS, max_delay_ms: DEFAULT_BATCH_MAX_DELAY_MS }
    }
}

fn default_tables() -> Vec<String> {
    vec![DEFAULT_TABLES.to_string()]
}
fn default_batch_max_rows() -> usize {
    DEFAULT_BATCH_MAX_ROWS
}
fn default_batch_max_delay_ms() -> u64 {
    DEFAULT_BATCH_MAX_DELAY_MS
}
fn default_status_interval_ms() -> u64 {
    DEFAULT_STATUS_INTERVAL_MS
}
fn default_slot_takeover_secs() -> u64 {
    DEFAULT_SLOT_TAKEOVER_SECS
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

/// A configuration problem, naming the key and what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File path
        path: String,
        /// Cause
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML.
    #[error("config is not valid TOML: {0}")]
    Syntax(#[source] toml::de::Error),
    /// A key is unknown, of the wrong type, or has a value outside what is allowed.
    #[error("{key}: {message}")]
    Invalid {
        /// Dotted key, e.g. `sink[0].mode`
        key: String,
        /// What is wrong and what is allowed
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

impl PipelineConfig {
    /// Reads, interpolates, parses and validates a pipeline file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &|name| std::env::var(name).ok())
    }

    /// Parses and validates pipeline TOML, resolving `${NAME}` through `env`.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut value: toml::Value = toml::from_str(text).map_err(ConfigError::Syntax)?;
        interpolate(&mut value, &mut String::new(), env)?;
        let config = from_value(value)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the constraints that types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() || self.name.len() > 40 {
            return Err(invalid("name", "must be 1 to 40 characters long"));
        }
        if !self.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return Err(invalid(
                "name",
                format!(
                    "{:?} may only contain lowercase letters, digits and '_' (slot names derive from it)",
                    self.name
                ),
            ));
        }
        match &self.source {
            SourceConfig::Postgres(pg) => pg.validate("source")?,
        }
        if self.sinks.is_empty() {
            return Err(invalid("sink", "at least one [[sink]] is required"));
        }
        for (i, sink) in self.sinks.iter().enumerate() {
            match sink {
                SinkConfig::Postgres(s) => s.validate(&format!("sink[{i}]"))?,
            }
        }
        Ok(())
    }
}

impl PgSourceConfig {
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        validate_pg_url(self.url.expose(), &format!("{at}.url"))?;
        if self.tables.is_empty() {
            return Err(invalid(format!("{at}.tables"), "must list at least one glob like \"public.*\""));
        }
        for (key, globs) in [("tables", &self.tables), ("exclude", &self.exclude)] {
            for (i, g) in globs.iter().enumerate() {
                if g.matches('.').count() != 1 || g.starts_with('.') || g.ends_with('.') {
                    return Err(invalid(
                        format!("{at}.{key}[{i}]"),
                        format!("{g:?} must have the form \"schema.table\", each part a glob such as \"public.*\""),
                    ));
                }
            }
        }
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
        Ok(())
    }
}

impl PgSinkConfig {
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        validate_pg_url(self.url.expose(), &format!("{at}.url"))?;
        if self.batch.max_rows == 0 {
            return Err(invalid(format!("{at}.batch.max_rows"), "must be > 0"));
        }
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

fn validate_pg_url(url: &str, key: &str) -> Result<(), ConfigError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(invalid(
            key,
            format!(
                "{:?} is not a PostgreSQL URL; expected postgres://user@host:port/database",
                secret::redact_url(url)
            ),
        ));
    }
    Ok(())
}

/// Builds the config from parsed TOML. The `type` tags are dispatched here rather than by
/// serde's internally tagged enums, which buffer their content and so lose the key path that
/// every error must name.
fn from_value(value: toml::Value) -> Result<PipelineConfig, ConfigError> {
    let toml::Value::Table(mut top) = value else {
        return Err(invalid("(top level)", "expected a TOML table"));
    };
    for key in top.keys() {
        if !["name", "source", "sink"].contains(&key.as_str()) {
            return Err(invalid(key.as_str(), "unknown key; expected one of `name`, `source`, `sink`"));
        }
    }
    let name = match top.remove("name") {
        Some(toml::Value::String(s)) => s,
        Some(other) => return Err(invalid("name", format!("expected a string, found {}", other.type_str()))),
        None => return Err(invalid("name", "missing: every pipeline needs a name, e.g. name = \"orders\"")),
    };
    let source = match top.remove("source") {
        Some(v) => {
            // Only one source type exists yet; `tagged` has already rejected any other.
            let (_kind, body) = tagged(v, "source", &["postgres"])?;
            SourceConfig::Postgres(typed(body, "source")?)
        }
        None => return Err(invalid("source", "missing: add a [source] table with type = \"postgres\"")),
    };
    let sinks = match top.remove("sink") {
        Some(toml::Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let at = format!("sink[{i}]");
                let (_kind, body) = tagged(v, &at, &["postgres"])?;
                Ok(SinkConfig::Postgres(typed(body, &at)?))
            })
            .collect::<Result<Vec<_>, ConfigError>>()?,
        Some(other) => return Err(invalid("sink", format!("expected [[sink]] tables, found {}", other.type_str()))),
        None => Vec::new(),
    };
    Ok(PipelineConfig { name, source, sinks })
}

/// Splits a `{ type = "...", ... }` table into its type and the remaining keys.
fn tagged(v: toml::Value, at: &str, allowed: &[&str]) -> Result<(String, toml::Value), ConfigError> {
    let toml::Value::Table(mut t) = v else {
        return Err(invalid(at, format!("expected a table, found {}", v.type_str())));
    };
    let allowed_list = allowed.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
    match t.remove("type") {
        Some(toml::Value::String(kind)) if allowed.contains(&kind.as_str()) => Ok((kind, toml::Value::Table(t))),
        Some(toml::Value::String(kind)) => {
            Err(invalid(format!("{at}.type"), format!("unknown type \"{kind}\"; supported: {allowed_list}")))
        }
        Some(other) => Err(invalid(format!("{at}.type"), format!("expected a string, found {}", other.type_str()))),
        None => Err(invalid(format!("{at}.type"), format!("missing; supported: {allowed_list}"))),
    }
}

/// Deserializes one section strictly, naming the full key of any error.
fn typed<T: serde::de::DeserializeOwned>(body: toml::Value, at: &str) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let inner = e.path().to_string();
        let key = if inner.is_empty() || inner == "." { at.to_string() } else { format!("{at}.{inner}") };
        // toml appends "in `key`" lines of its own; the key is already in front.
        let message = e.inner().to_string();
        let message = message.split("\nin `").next().unwrap_or(&message).trim().to_string();
        invalid(key, message)
    })
}

fn interpolate(
    v: &mut toml::Value,
    path: &mut String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match v {
        toml::Value::String(s) if s.contains("${") => {
            *s = expand(s, env).map_err(|m| invalid(path.clone(), m))?;
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                interpolate(item, path, env)?;
                path.truncate(len);
            }
        }
        toml::Value::Table(t) => {
            for (k, item) in t.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                interpolate(item, path, env)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| "unterminated ${...}: add the closing '}'".to_string())?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("${{{name}}} is not a valid environment variable reference"));
        }
        let value = env(name)
            .ok_or_else(|| format!("environment variable {name} is not set; export it or remove ${{{name}}}"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Matches `text` against a glob where `*` is any run of characters and `?` one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

impl PgSourceConfig {
    /// Whether `schema.table` is selected by `tables` and not excluded by `exclude`.
    pub fn selects(&self, schema: &str, table: &str) -> bool {
        let name = format!("{schema}.{table}");
        self.tables.iter().any(|g| glob_match(g, &name)) && !self.exclude.iter().any(|g| glob_match(g, &name))
    }
}

impl PipelineConfig {
    /// The slot name: `source.slot`, or `sluice_<name>`.
    pub fn slot_name(&self) -> String {
        match &self.source {
            SourceConfig::Postgres(pg) => pg.slot.clone().unwrap_or_else(|| format!("sluice_{}", self.name)),
        }
    }
    /// The publication name: `source.publication`, or `sluice_<name>`.
    pub fn publication_name(&self) -> String {
        match &self.source {
            SourceConfig::Postgres(pg) => pg.publication.clone().unwrap_or_else(|| format!("sluice_{}", self.name)),
        }
    }
}

impl fmt::Display for SinkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SinkMode::Replica => "replica",
            SinkMode::Changelog => "changelog",
        })
    }
}

#[cfg(test)]
mod tests;
