//! `[source]` with `type = "mysql"`: keys, defaults and validation. Every key is documented in
//! `docs/config.md`.

use serde::{Deserialize, Serialize};
use sluice_config::{invalid, redact_url, typed, ConfigError, ParseContext, Secret, TableFilter};
use sluice_core::Date;

use crate::rows::ZeroDates;

/// Default for `source.heartbeat_ms`.
pub const DEFAULT_HEARTBEAT_MS: u64 = 1_000;
/// Default for `source.snapshot_connections`.
pub const DEFAULT_SNAPSHOT_CONNECTIONS: usize = 2;
/// Default for `source.chunk_rows`.
pub const DEFAULT_CHUNK_ROWS: usize = 8_192;
/// Default for `source.zero_dates`.
pub const DEFAULT_ZERO_DATES: &str = "null";

/// `[source]` with `type = "mysql"` (MySQL 5.7/8.x, MariaDB 10.5+).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MySqlSourceConfig {
    /// `mysql://user:password@host:port[/database]`; the password may come from `${ENV_VAR}`.
    pub url: Secret<String>,
    /// Include globs over `database.table`; default: every table of the URL's database.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Exclude globs over `database.table`, applied after `tables`.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Whether to copy existing rows.
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// The replica server id Sluice registers with; default derived from the pipeline name.
    #[serde(default)]
    pub server_id: Option<u32>,
    /// Whether to track GTIDs: `auto` when the server has them, `off` for file and position only.
    #[serde(default)]
    pub gtid: GtidMode,
    /// How often the server sends a heartbeat while the binlog is idle, in milliseconds.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Connections reading a consistent snapshot in parallel.
    #[serde(default = "default_snapshot_connections")]
    pub snapshot_connections: usize,
    /// Rows per primary-key chunk of a snapshot.
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: usize,
    /// What zero and partial dates (`0000-00-00`, `2024-00-10`) become: `"null"`, or a date such
    /// as `"1970-01-01"`.
    #[serde(default = "default_zero_dates")]
    pub zero_dates: String,
}

/// `source.snapshot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Copy existing rows at the first start, consistently with the binlog position.
    #[default]
    Initial,
    /// Stream changes only, from the current binlog position.
    Never,
    /// As `initial`; and when the binlog the sinks need has been purged, copy every table again
    /// from a new snapshot instead of stopping.
    WhenNeeded,
}

/// `source.gtid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GtidMode {
    /// Positions carry the GTID set when the server has GTIDs (MariaDB always; MySQL with
    /// `gtid_mode=ON`), and resume by it.
    #[default]
    Auto,
    /// Binlog file and offset only.
    Off,
}

fn default_heartbeat_ms() -> u64 {
    DEFAULT_HEARTBEAT_MS
}
fn default_snapshot_connections() -> usize {
    DEFAULT_SNAPSHOT_CONNECTIONS
}
fn default_chunk_rows() -> usize {
    DEFAULT_CHUNK_ROWS
}
fn default_zero_dates() -> String {
    DEFAULT_ZERO_DATES.into()
}

impl MySqlSourceConfig {
    /// Parses and validates `[source]`.
    pub fn parse(body: toml::Value, ctx: &ParseContext<'_>) -> Result<MySqlSourceConfig, ConfigError> {
        let mut c: MySqlSourceConfig = typed(body, ctx.at)?;
        c.validate(ctx.at)?;
        if c.tables.is_empty() {
            match c.database() {
                Some(db) => c.tables = vec![format!("{db}.*")],
                None => {
                    return Err(invalid(
                        format!("{}.tables", ctx.at),
                        "missing: list the tables as globs like [\"app.*\"], or name a database in the url",
                    ))
                }
            }
        }
        c.filter().validate(ctx.at)?;
        Ok(c)
    }

    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        validate_url(self.url.expose(), &format!("{at}.url"))?;
        if self.heartbeat_ms == 0 {
            return Err(invalid(format!("{at}.heartbeat_ms"), "must be > 0"));
        }
        if !(1..=64).contains(&self.snapshot_connections) {
            return Err(invalid(format!("{at}.snapshot_connections"), "must be between 1 and 64"));
        }
        if self.chunk_rows == 0 {
            return Err(invalid(format!("{at}.chunk_rows"), "must be > 0"));
        }
        if self.server_id == Some(0) {
            return Err(invalid(format!("{at}.server_id"), "must be between 1 and 4294967295 (0 is not a valid id)"));
        }
        parse_zero_dates(&self.zero_dates).map_err(|m| invalid(format!("{at}.zero_dates"), m))?;
        Ok(())
    }

    /// The table selection.
    pub fn filter(&self) -> TableFilter {
        TableFilter { tables: self.tables.clone(), exclude: self.exclude.clone() }
    }

    /// The database named in the URL's path, if any.
    pub fn database(&self) -> Option<String> {
        crate::catalog::opts(self.url.expose()).ok().and_then(|o| o.db_name().map(str::to_string))
    }

    /// The server id: `server_id`, or one derived from the pipeline name (stable, so a restart
    /// replaces its own registration, and distinct between pipelines).
    pub fn server_id(&self, pipeline: &str) -> u32 {
        self.server_id.unwrap_or_else(|| {
            // FNV-1a, folded into a range away from the small ids people give servers.
            let h = pipeline.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193));
            1_000_000_000 + h % 1_000_000_000
        })
    }

    /// The zero-date policy.
    pub fn zero_dates(&self) -> ZeroDates {
        parse_zero_dates(&self.zero_dates).unwrap_or_default()
    }
}

fn parse_zero_dates(s: &str) -> Result<ZeroDates, String> {
    if s == "null" {
        return Ok(ZeroDates::Null);
    }
    let parts: Vec<&str> = s.split('-').collect();
    let date = match parts.as_slice() {
        [y, m, d] if y.len() == 4 && m.len() == 2 && d.len() == 2 => {
            match (y.parse::<i64>(), m.parse::<u32>(), d.parse::<u32>()) {
                (Ok(y), Ok(m), Ok(d)) => Date::from_ymd(y, m, d),
                _ => None,
            }
        }
        _ => None,
    };
    date.map(ZeroDates::Sentinel)
        .ok_or_else(|| format!("{s:?} is neither \"null\" nor a valid date like \"1970-01-01\""))
}

fn validate_url(url: &str, key: &str) -> Result<(), ConfigError> {
    if !url.starts_with("mysql://") {
        return Err(invalid(key, format!("{} must start with mysql://", redact_url(url))));
    }
    crate::catalog::opts(url)
        .map(|_| ())
        .map_err(|e| invalid(key, format!("{} is not a valid MySQL URL: {}", redact_url(url), e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<MySqlSourceConfig, ConfigError> {
        MySqlSourceConfig::parse(toml::from_str(toml_text).unwrap(), &ParseContext { at: "source", pipeline: "p" })
    }

    #[test]
    fn defaults_and_validation() {
        let c = parse("url = \"mysql://repl:pw@127.0.0.1:3306/app\"").unwrap();
        assert_eq!(c.tables, vec!["app.*"]);
        assert_eq!((c.snapshot, c.gtid, c.zero_dates()), (SnapshotMode::Initial, GtidMode::Auto, ZeroDates::Null));
        assert_eq!(c.server_id("p"), c.server_id("p"));
        assert_ne!(c.server_id("p"), c.server_id("q"));
        let e = parse("url = \"mysql://repl:pw@127.0.0.1:3306\"").unwrap_err().to_string();
        assert!(e.starts_with("source.tables: missing"), "{e}");
        let e = parse("url = \"postgres://u:hunter2@h/d\"").unwrap_err().to_string();
        assert!(e.contains("source.url") && !e.contains("hunter2"), "{e}");
        let e = parse("url = \"mysql://h/d\"\nzero_dates = \"2024-02-30\"").unwrap_err().to_string();
        assert!(e.starts_with("source.zero_dates"), "{e}");
        let c = parse("url = \"mysql://h/d\"\nzero_dates = \"1970-01-01\"\nsnapshot = \"when_needed\"").unwrap();
        assert_eq!(c.zero_dates(), ZeroDates::Sentinel(Date::from_ymd(1970, 1, 1).unwrap()));
        assert_eq!(c.snapshot, SnapshotMode::WhenNeeded);
        let e = parse("url = \"mysql://h/d\"\nserver_id = 0").unwrap_err().to_string();
        assert!(e.starts_with("source.server_id"), "{e}");
        let e = parse("url = \"mysql://h/d\"\nslot = \"x\"").unwrap_err().to_string();
        assert!(e.contains("source.slot") || e.contains("unknown field"), "{e}");
    }
}
