//! Pipeline configuration: the TOML file, its defaults and its validation.
//!
//! One set of types serves the file, the docs (`docs/config.md`) and the coming REST API.
//! Loading happens in steps, each of which names the offending key on failure: parse TOML,
//! interpolate `${ENV_VAR}` in string values, dispatch `[source]` and every `[[sink]]` on its
//! `type` through the [`Registry`] to the connector that owns that type, which deserializes its
//! section strictly (unknown keys and wrong types are errors) and validates it.
//!
//! Connector config types live in their connector's crate; this crate holds what every
//! connector shares: [`Secret`], [`BatchConfig`], [`TableFilter`], the error type and helpers.

mod secret;

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sluice_core::{SinkConnector, SinkSet, SourceConnector};

pub use secret::{percent_decode, redact_url, Secret};

/// Default for a source's `tables`.
pub const DEFAULT_TABLES: &str = "public.*";
/// Default for `sink[].batch.max_rows`.
pub const DEFAULT_BATCH_MAX_ROWS: usize = 10_000;
/// Default for `sink[].batch.max_delay_ms`.
pub const DEFAULT_BATCH_MAX_DELAY_MS: u64 = 50;

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

/// A [`ConfigError::Invalid`] for `key`.
pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

/// Where a section being parsed sits, for error messages and derived names.
#[derive(Debug, Clone, Copy)]
pub struct ParseContext<'a> {
    /// The section's key, e.g. `source` or `sink[1]`
    pub at: &'a str,
    /// The pipeline's name
    pub pipeline: &'a str,
}

/// Parses a `[source]` section (without its `type` key) into a configured source.
pub type SourceParser = fn(toml::Value, &ParseContext<'_>) -> Result<Arc<dyn SourceConnector>, ConfigError>;
/// Parses a `[[sink]]` section (without its `type` key) into a configured sink.
pub type SinkParser = fn(toml::Value, &ParseContext<'_>) -> Result<Arc<dyn SinkConnector>, ConfigError>;

/// The connector types a build of Sluice knows, by their `type` tag. Adding a connector is one
/// entry here (made in the binary) plus the connector's own crate.
#[derive(Default, Clone)]
pub struct Registry {
    sources: Vec<(&'static str, SourceParser)>,
    sinks: Vec<(&'static str, SinkParser)>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds a source type.
    pub fn source(mut self, tag: &'static str, parse: SourceParser) -> Registry {
        self.sources.push((tag, parse));
        self
    }

    /// Adds a sink type.
    pub fn sink(mut self, tag: &'static str, parse: SinkParser) -> Registry {
        self.sinks.push((tag, parse));
        self
    }

    /// The source type tags.
    pub fn source_tags(&self) -> Vec<&'static str> {
        self.sources.iter().map(|(t, _)| *t).collect()
    }

    /// The sink type tags.
    pub fn sink_tags(&self) -> Vec<&'static str> {
        self.sinks.iter().map(|(t, _)| *t).collect()
    }
}

/// A whole pipeline: one source feeding one or more sinks.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Pipeline name; checkpoint rows and source-side names (slots) derive from it.
    pub name: String,
    /// Where changes come from.
    pub source: Arc<dyn SourceConnector>,
    /// Where changes go, in `[[sink]]` order; a sink's position in the list names its
    /// checkpoint, so new sinks go at the end.
    pub sinks: Vec<Arc<dyn SinkConnector>>,
}

impl PipelineConfig {
    /// Reads, interpolates, parses and validates a pipeline file.
    pub fn load(path: &Path, registry: &Registry) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &|name| std::env::var(name).ok(), registry)
    }

    /// Parses and validates pipeline TOML, resolving `${NAME}` through `env`.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>, registry: &Registry) -> Result<Self, ConfigError> {
        let mut value: toml::Value = toml::from_str(text).map_err(ConfigError::Syntax)?;
        interpolate(&mut value, &mut String::new(), env)?;
        from_value(value, registry)
    }

    /// The config as JSON, every secret redacted (for status output and the API).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "source": self.source.to_json(),
            "sink": self.sinks.iter().map(|s| s.to_json()).collect::<Vec<_>>(),
        })
    }
}

fn validate_name(name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > 40 {
        return Err(invalid("name", "must be 1 to 40 characters long"));
    }
    if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(invalid(
            "name",
            format!("{name:?} may only contain lowercase letters, digits and '_' (slot names derive from it)"),
        ));
    }
    Ok(())
}

/// Builds the config from parsed TOML. The `type` tags are dispatched here rather than by
/// serde's internally tagged enums, which buffer their content and so lose the key path that
/// every error must name.
fn from_value(value: toml::Value, registry: &Registry) -> Result<PipelineConfig, ConfigError> {
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
    validate_name(&name)?;
    let source = match top.remove("source") {
        Some(v) => {
            let (kind, body) = tagged(v, "source", &registry.source_tags())?;
            let parse = registry.sources.iter().find(|(t, _)| *t == kind).map(|(_, p)| *p);
            let parse = parse.ok_or_else(|| invalid("source.type", "unknown type"))?;
            parse(body, &ParseContext { at: "source", pipeline: &name })?
        }
        None => {
            return Err(invalid(
                "source",
                format!("missing: add a [source] table with type = one of {}", quoted(&registry.source_tags())),
            ))
        }
    };
    let sinks = match top.remove("sink") {
        Some(toml::Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let at = format!("sink[{i}]");
                let (kind, body) = tagged(v, &at, &registry.sink_tags())?;
                let parse = registry.sinks.iter().find(|(t, _)| *t == kind).map(|(_, p)| *p);
                let parse = parse.ok_or_else(|| invalid(format!("{at}.type"), "unknown type"))?;
                parse(body, &ParseContext { at: &at, pipeline: &name })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?,
        Some(other) => return Err(invalid("sink", format!("expected [[sink]] tables, found {}", other.type_str()))),
        None => Vec::new(),
    };
    if sinks.is_empty() {
        return Err(invalid("sink", "at least one [[sink]] is required"));
    }
    if sinks.len() > SinkSet::MAX {
        return Err(invalid("sink", format!("at most {} sinks per pipeline", SinkSet::MAX)));
    }
    Ok(PipelineConfig { name, source, sinks })
}

fn quoted(tags: &[&str]) -> String {
    tags.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ")
}

/// Splits a `{ type = "...", ... }` table into its type and the remaining keys.
fn tagged(v: toml::Value, at: &str, allowed: &[&str]) -> Result<(String, toml::Value), ConfigError> {
    let toml::Value::Table(mut t) = v else {
        return Err(invalid(at, format!("expected a table, found {}", v.type_str())));
    };
    let allowed_list = quoted(allowed);
    match t.remove("type") {
        Some(toml::Value::String(kind)) if allowed.contains(&kind.as_str()) => Ok((kind, toml::Value::Table(t))),
        Some(toml::Value::String(kind)) => Err(invalid(
            format!("{at}.type"),
            format!("unknown type \"{kind}\"; this build of Sluice supports {allowed_list}"),
        )),
        Some(other) => Err(invalid(format!("{at}.type"), format!("expected a string, found {}", other.type_str()))),
        None => Err(invalid(format!("{at}.type"), format!("missing; supported: {allowed_list}"))),
    }
}

/// Deserializes one section strictly, naming the full key of any error.
pub fn typed<T: serde::de::DeserializeOwned>(body: toml::Value, at: &str) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let inner = e.path().to_string();
        let key = if inner.is_empty() || inner == "." { at.to_string() } else { format!("{at}.{inner}") };
        // toml appends "in `key`" lines of its own; the key is already in front.
        let message = e.inner().to_string();
        let message = message.split("\nin `").next().unwrap_or(&message).trim().to_string();
        invalid(key, message)
    })
}

/// When a sink commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

impl BatchConfig {
    /// Checks the limits; `at` is the sink's key.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.max_rows == 0 {
            return Err(invalid(format!("{at}.batch.max_rows"), "must be > 0"));
        }
        Ok(())
    }
}

fn default_batch_max_rows() -> usize {
    DEFAULT_BATCH_MAX_ROWS
}
fn default_batch_max_delay_ms() -> u64 {
    DEFAULT_BATCH_MAX_DELAY_MS
}

/// Which tables a source selects: `tables` include globs and `exclude` globs over
/// `schema.table`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableFilter {
    /// Include globs over `schema.table` (`*` any run of characters, `?` one character).
    #[serde(default = "default_tables")]
    pub tables: Vec<String>,
    /// Exclude globs, applied after `tables`.
    #[serde(default)]
    pub exclude: Vec<String>,
}

impl Default for TableFilter {
    fn default() -> Self {
        TableFilter { tables: default_tables(), exclude: Vec::new() }
    }
}

fn default_tables() -> Vec<String> {
    vec![DEFAULT_TABLES.to_string()]
}

impl TableFilter {
    /// Checks the globs; `at` is the source's key.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// Whether `schema.table` is selected by `tables` and not excluded by `exclude`.
    pub fn selects(&self, schema: &str, table: &str) -> bool {
        let name = format!("{schema}.{table}");
        self.tables.iter().any(|g| glob_match(g, &name)) && !self.exclude.iter().any(|g| glob_match(g, &name))
    }
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

/// Default of `buffer.count_records`.
pub const DEFAULT_COUNT_RECORDS: usize = 100_000;
/// Default of `buffer.flush_time_s`.
pub const DEFAULT_FLUSH_TIME_S: f64 = 1.0;
/// Default of `buffer.size_bytes`.
pub const DEFAULT_SIZE_BYTES: usize = 64 * 1024 * 1024;

/// `sink[].buffer` of the analytical sinks (DuckDB, Parquet, Snowflake): when buffered changes
/// are written, whichever limit is reached first (the Snowflake connector's
/// `buffer.count.records`, `buffer.flush.time` and `buffer.size.bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// Changes (or copied rows) buffered before a flush
    #[serde(default = "default_count_records")]
    pub count_records: usize,
    /// Seconds the oldest buffered change may wait
    #[serde(default = "default_flush_time_s")]
    pub flush_time_s: f64,
    /// Bytes of buffered row data (approximate) before a flush
    #[serde(default = "default_size_bytes")]
    pub size_bytes: usize,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            count_records: DEFAULT_COUNT_RECORDS,
            flush_time_s: DEFAULT_FLUSH_TIME_S,
            size_bytes: DEFAULT_SIZE_BYTES,
        }
    }
}

fn default_count_records() -> usize {
    DEFAULT_COUNT_RECORDS
}
fn default_flush_time_s() -> f64 {
    DEFAULT_FLUSH_TIME_S
}
fn default_size_bytes() -> usize {
    DEFAULT_SIZE_BYTES
}

impl BufferConfig {
    /// Checks the limits; `at` is the sink's key.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.count_records == 0 {
            return Err(invalid(format!("{at}.buffer.count_records"), "must be > 0"));
        }
        if !(self.flush_time_s > 0.0 && self.flush_time_s <= 86_400.0) {
            return Err(invalid(format!("{at}.buffer.flush_time_s"), "must be > 0 and at most 86400 (a day)"));
        }
        if self.size_bytes < 1024 {
            return Err(invalid(format!("{at}.buffer.size_bytes"), "must be at least 1024"));
        }
        Ok(())
    }

    /// The runtime's side: commit after `count_records` rows or `flush_time_s`.
    pub fn batch_policy(&self) -> sluice_core::BatchPolicy {
        sluice_core::BatchPolicy {
            max_rows: self.count_records,
            max_delay: std::time::Duration::from_secs_f64(self.flush_time_s),
            commit_when_idle: false,
        }
    }

    /// The sink's side: whether `bytes` buffered call for a commit now.
    pub fn is_full(&self, bytes: usize) -> bool {
        bytes >= self.size_bytes
    }

    /// Whether `rows` or `bytes` held inside one unit of work reached a limit (the sink then
    /// writes ahead of the commit to keep memory bounded).
    pub fn reached(&self, rows: usize, bytes: usize) -> bool {
        rows >= self.count_records || self.is_full(bytes)
    }
}

/// `sink[].schema_changes`: what a replica does when a source table changes shape. Changes
/// the policy does not allow, and changes that could lose data (a narrower type, an
/// incompatible one), put only that table in quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaChanges {
    /// Added columns are added, widened types widened, dropped columns dropped, renamed columns
    /// renamed.
    #[default]
    Follow,
    /// Added columns are added and types widened; nothing is ever dropped or renamed: a dropped
    /// column is kept (NULL in new rows), a renamed one is added under its new name.
    AddOnly,
    /// The target's shape never changes: any change that would need one quarantines the table.
    Freeze,
}

impl std::fmt::Display for SchemaChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SchemaChanges::Follow => "follow",
            SchemaChanges::AddOnly => "add_only",
            SchemaChanges::Freeze => "freeze",
        })
    }
}

#[cfg(test)]
mod tests;
