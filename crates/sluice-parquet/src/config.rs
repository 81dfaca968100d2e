//! `[[sink]]` with `type = "parquet"`.

use serde::{Deserialize, Serialize};
use sluice_config::{invalid, typed, BufferConfig, ConfigError, ParseContext, Secret};

/// `[[sink]]` with `type = "parquet"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSinkConfig {
    /// Where files go: `file:///abs/dir`, an absolute path, or `s3://bucket/prefix`
    pub url: String,
    /// S3: the endpoint of an S3-compatible server (default: the `AWS_ENDPOINT_URL` variable,
    /// else AWS); `http://` is allowed as written
    #[serde(default)]
    pub endpoint: Option<String>,
    /// S3: the region (default: `AWS_REGION`, `AWS_DEFAULT_REGION`, else `us-east-1`)
    #[serde(default)]
    pub region: Option<String>,
    /// S3: the access key (default: `AWS_ACCESS_KEY_ID`)
    #[serde(default)]
    pub access_key_id: Option<Secret<String>>,
    /// S3: the secret key (default: `AWS_SECRET_ACCESS_KEY`)
    #[serde(default)]
    pub secret_access_key: Option<Secret<String>>,
    /// S3: a session token (default: `AWS_SESSION_TOKEN`)
    #[serde(default)]
    pub session_token: Option<Secret<String>>,
    /// When buffered changes are written as files
    #[serde(default)]
    pub buffer: BufferConfig,
    /// `snappy`, `zstd` or `none`
    #[serde(default = "default_compression")]
    pub compression: String,
    /// Merging a partition's small files (off when absent)
    #[serde(default)]
    pub compaction: Option<CompactionConfig>,
}

/// Default of `compaction.target_bytes`.
pub const DEFAULT_TARGET_BYTES: usize = 64 * 1024 * 1024;

/// `compaction`: after a commit, a partition's files under `target_bytes / 2` are merged once
/// there are `min_files` of them, into files of up to `target_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactionConfig {
    /// Small files of one partition that trigger a merge
    pub min_files: usize,
    /// The size merged files grow to (bytes, compressed)
    #[serde(default = "default_target_bytes")]
    pub target_bytes: usize,
}

fn default_target_bytes() -> usize {
    DEFAULT_TARGET_BYTES
}

fn default_compression() -> String {
    "snappy".into()
}

/// Where the files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local directory
    Local(String),
    /// An S3 bucket and a key prefix (no leading or trailing `/`)
    S3 { bucket: String, prefix: String },
}

impl ParquetSinkConfig {
    /// Parses and validates a `[[sink]]`.
    pub fn parse(body: toml::Value, ctx: &ParseContext<'_>) -> Result<ParquetSinkConfig, ConfigError> {
        let c: ParquetSinkConfig = typed(body, ctx.at)?;
        let at = ctx.at;
        c.location().map_err(|e| invalid(format!("{at}.url"), e))?;
        c.buffer.validate(at)?;
        if !["snappy", "zstd", "none"].contains(&c.compression.as_str()) {
            return Err(invalid(
                format!("{at}.compression"),
                format!("{:?}: expected \"snappy\", \"zstd\" or \"none\"", c.compression),
            ));
        }
        if let Some(e) = &c.endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(invalid(format!("{at}.endpoint"), format!("{e:?} must start with http:// or https://")));
            }
        }
        if let Some(k) = &c.compaction {
            if k.min_files < 2 {
                return Err(invalid(format!("{at}.compaction.min_files"), "must be at least 2"));
            }
            if k.target_bytes < 1024 * 1024 {
                return Err(invalid(format!("{at}.compaction.target_bytes"), "must be at least 1048576 (1 MiB)"));
            }
        }
        if c.access_key_id.is_some() != c.secret_access_key.is_some() {
            return Err(invalid(
                format!("{at}.secret_access_key"),
                "access_key_id and secret_access_key go together (or neither, to take them from the environment)",
            ));
        }
        Ok(c)
    }

    /// Where the files go, from `url`.
    pub fn location(&self) -> Result<Location, String> {
        let u = self.url.trim();
        if let Some(rest) = u.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!("{u:?} names no bucket: s3://bucket/prefix"));
            }
            return Ok(Location::S3 { bucket: bucket.to_string(), prefix: prefix.trim_matches('/').to_string() });
        }
        let path = u.strip_prefix("file://").unwrap_or(u);
        if !path.starts_with('/') {
            return Err(format!("{u:?}: expected file:///absolute/dir, /absolute/dir or s3://bucket/prefix"));
        }
        Ok(Location::Local(path.trim_end_matches('/').to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ParquetSinkConfig, ConfigError> {
        ParquetSinkConfig::parse(toml::from_str(s).unwrap(), &ParseContext { at: "sink[0]", pipeline: "p" })
    }

    #[test]
    fn urls_and_keys() {
        let c = parse("url = \"s3://lake/raw/cdc/\"").unwrap();
        assert_eq!(c.location().unwrap(), Location::S3 { bucket: "lake".into(), prefix: "raw/cdc".into() });
        assert_eq!(parse("url = \"file:///data/x/\"").unwrap().location().unwrap(), Location::Local("/data/x".into()));
        for (bad, key) in [
            ("url = \"relative/dir\"", "sink[0].url"),
            ("url = \"s3:///x\"", "sink[0].url"),
            ("url = \"/d\"\ncompression = \"lz77\"", "sink[0].compression"),
            ("url = \"s3://b\"\nendpoint = \"localhost:9000\"", "sink[0].endpoint"),
            ("url = \"s3://b\"\naccess_key_id = \"k\"", "sink[0].secret_access_key"),
            ("url = \"/d\"\ncompaction = { min_files = 1 }", "sink[0].compaction.min_files"),
            ("url = \"/d\"\ncompaction = { min_files = 4, target_bytes = 10 }", "sink[0].compaction.target_bytes"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.starts_with(key), "{bad}: {e}");
        }
        let c = parse("url = \"s3://b\"\naccess_key_id = \"AKIA\"\nsecret_access_key = \"hunter2\"").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"), "secrets are never shown");
    }
}
