//! `[[sink]]` with `type = "snowflake"`.

use serde::{Deserialize, Serialize};
use sluice_config::{invalid, typed, BufferConfig, ConfigError, ParseContext, SchemaChanges, Secret};

/// Default of `checkpoint_table`.
pub const DEFAULT_CHECKPOINT_TABLE: &str = "SLUICE_CHECKPOINTS";

/// `[[sink]]` with `type = "snowflake"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnowflakeSinkConfig {
    /// The account identifier (`xy12345.eu-west-1`, `myorg-myaccount`)
    pub account: String,
    /// Where to connect instead of `https://<account>.snowflakecomputing.com` (private link,
    /// tests)
    #[serde(default)]
    pub url: Option<String>,
    pub user: String,
    /// Key-pair authentication: an unencrypted PKCS#8 PEM file
    #[serde(default)]
    pub private_key_file: Option<String>,
    /// Password authentication
    #[serde(default)]
    pub password: Option<Secret<String>>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub warehouse: Option<String>,
    pub database: String,
    #[serde(default = "default_schema")]
    pub schema: String,
    /// `changelog` (the Kafka connector's RECORD_METADATA/RECORD_CONTENT tables) or `replica`
    #[serde(default = "default_mode")]
    pub mode: String,
    /// When buffered changes are flushed
    #[serde(default = "default_buffer")]
    pub buffer: BufferConfig,
    /// Kafka sources: the Snowflake table of each topic (the connector's
    /// `snowflake.topic2table.map`); other topics go to the source table's name
    #[serde(default)]
    pub topic2table: std::collections::BTreeMap<String, String>,
    /// Replica: what a source table's shape change does to its Snowflake table
    #[serde(default)]
    pub schema_changes: SchemaChanges,
    /// The table in `database.schema` that holds the sink's checkpoint
    #[serde(default = "default_checkpoint_table")]
    pub checkpoint_table: String,
}

fn default_schema() -> String {
    "PUBLIC".into()
}
fn default_mode() -> String {
    "changelog".into()
}
fn default_checkpoint_table() -> String {
    DEFAULT_CHECKPOINT_TABLE.into()
}

/// The Snowflake Kafka connector's defaults (`buffer.count.records` 10000, `buffer.flush.time`
/// 120 s, `buffer.size.bytes` 5 MB): each flush is a transaction that keeps a warehouse busy, so
/// fewer, larger flushes cost less; lower them for fresher data.
pub fn default_buffer() -> BufferConfig {
    BufferConfig { count_records: 10_000, flush_time_s: 120.0, size_bytes: 5_000_000 }
}

impl SnowflakeSinkConfig {
    /// Parses and validates a `[[sink]]`.
    pub fn parse(body: toml::Value, ctx: &ParseContext<'_>) -> Result<SnowflakeSinkConfig, ConfigError> {
        let c: SnowflakeSinkConfig = typed(body, ctx.at)?;
        let at = ctx.at;
        for (key, value) in
            [("account", &c.account), ("user", &c.user), ("database", &c.database), ("schema", &c.schema)]
        {
            if value.trim().is_empty() {
                return Err(invalid(format!("{at}.{key}"), "must not be empty"));
            }
        }
        if c.mode != "changelog" && c.mode != "replica" {
            return Err(invalid(format!("{at}.mode"), format!("{:?}: expected \"changelog\" or \"replica\"", c.mode)));
        }
        match (&c.private_key_file, &c.password) {
            (Some(_), Some(_)) => {
                return Err(invalid(format!("{at}.password"), "give private_key_file or password, not both"))
            }
            (None, None) => return Err(invalid(
                format!("{at}.private_key_file"),
                "Snowflake needs private_key_file (key-pair auth, recommended) or password = \"${SNOWFLAKE_PASSWORD}\"",
            )),
            _ => {}
        }
        if let Some(u) = &c.url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(invalid(format!("{at}.url"), format!("{u:?} must start with https:// (or http://)")));
            }
        }
        c.buffer.validate(at)?;
        for (topic, table) in &c.topic2table {
            if table.trim().is_empty() {
                return Err(invalid(format!("{at}.topic2table.{topic}"), "names no table"));
            }
        }
        if c.checkpoint_table.trim().is_empty() {
            return Err(invalid(format!("{at}.checkpoint_table"), "must not be empty"));
        }
        Ok(c)
    }

    /// The service URL.
    pub fn service_url(&self) -> String {
        self.url.clone().unwrap_or_else(|| format!("https://{}.snowflakecomputing.com", self.account.to_lowercase()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<SnowflakeSinkConfig, ConfigError> {
        SnowflakeSinkConfig::parse(toml::from_str(s).unwrap(), &ParseContext { at: "sink[0]", pipeline: "p" })
    }

    #[test]
    fn keys_defaults_and_refusals() {
        let base = "account = \"xy12345.eu-west-1\"\nuser = \"SVC\"\ndatabase = \"STREAMING\"\n";
        let c = parse(&format!("{base}password = \"hunter2\"")).unwrap();
        assert_eq!(c.service_url(), "https://xy12345.eu-west-1.snowflakecomputing.com");
        assert_eq!((c.schema.as_str(), c.mode.as_str(), c.buffer.count_records), ("PUBLIC", "changelog", 10_000));
        assert!(!format!("{c:?}").contains("hunter2"), "secrets are never shown");
        for (bad, key) in [
            (base.to_string(), "sink[0].private_key_file"),
            (format!("{base}password = \"x\"\nprivate_key_file = \"k.p8\""), "sink[0].password"),
            (format!("{base}password = \"x\"\nmode = \"upsert\""), "sink[0].mode"),
            (format!("{base}password = \"x\"\nurl = \"localhost:8080\""), "sink[0].url"),
            ("account = \"a\"\nuser = \"\"\ndatabase = \"d\"\npassword = \"x\"".to_string(), "sink[0].user"),
        ] {
            let e = parse(&bad).unwrap_err().to_string();
            assert!(e.starts_with(key), "{bad}: {e}");
        }
    }
}
