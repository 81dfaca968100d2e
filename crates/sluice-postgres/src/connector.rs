//! The registry entries of the PostgreSQL connector: `type = "postgres"` for `[source]` and
//! `[[sink]]`.

use std::sync::Arc;

use async_trait::async_trait;
use sluice_config::{ConfigError, ParseContext};
use sluice_core::{CheckResult, ConnectorError, Sink, SinkConnector, SinkTable, Source, SourceConnector, TableId};

use crate::check;
use crate::config::{PgSinkConfig, PgSourceConfig};
use crate::{PgSink, PgSource};

/// The `type` tag.
pub const TYPE: &str = "postgres";

/// A configured PostgreSQL source.
#[derive(Debug, Clone)]
pub struct PgSourceConnector(pub PgSourceConfig);

/// A configured PostgreSQL sink.
#[derive(Debug, Clone)]
pub struct PgSinkConnector(pub PgSinkConfig);

/// Parses `[source]` with `type = "postgres"`.
pub fn parse_source(body: toml::Value, ctx: &ParseContext<'_>) -> Result<Arc<dyn SourceConnector>, ConfigError> {
    Ok(Arc::new(PgSourceConnector(PgSourceConfig::parse(body, ctx)?)))
}

/// Parses a `[[sink]]` with `type = "postgres"`.
pub fn parse_sink(body: toml::Value, ctx: &ParseContext<'_>) -> Result<Arc<dyn SinkConnector>, ConfigError> {
    Ok(Arc::new(PgSinkConnector(PgSinkConfig::parse(body, ctx)?)))
}

/// `postgres://user@host:port/database`, never the password or the query.
pub fn describe_url(url: &str) -> String {
    sluice_config::redact_url(url)
}

/// The config as JSON for status output and the API: the URL as [`describe_url`] prints it.
fn redacted_json<T: serde::Serialize>(cfg: &T, url: &str) -> serde_json::Value {
    let mut j = serde_json::to_value(cfg).unwrap_or_default();
    j["type"] = TYPE.into();
    j["url"] = describe_url(url).into();
    j
}

#[async_trait]
impl SourceConnector for PgSourceConnector {
    fn kind(&self) -> &'static str {
        TYPE
    }

    fn build(&self, pipeline: &str) -> Box<dyn Source> {
        Box::new(PgSource::new(self.0.clone(), pipeline))
    }

    async fn check(&self, pipeline: &str) -> Vec<CheckResult> {
        check::check_source(&self.0, &self.0.slot_name(pipeline)).await
    }

    fn describe(&self) -> String {
        describe_url(self.0.url.expose())
    }

    fn to_json(&self) -> serde_json::Value {
        redacted_json(&self.0, self.0.url.expose())
    }
}

#[async_trait]
impl SinkConnector for PgSinkConnector {
    fn kind(&self) -> &'static str {
        TYPE
    }

    fn build(&self, pipeline: &str, index: usize) -> Box<dyn Sink> {
        Box::new(PgSink::new(self.0.clone(), pipeline, index))
    }

    async fn check(&self, at: &str) -> Vec<CheckResult> {
        check::check_sink(&self.0, at).await
    }

    fn describe(&self) -> String {
        format!("{} ({})", describe_url(self.0.url.expose()), self.0.mode)
    }

    fn to_json(&self) -> serde_json::Value {
        redacted_json(&self.0, self.0.url.expose())
    }

    async fn tables(&self, pipeline: &str, index: usize) -> Result<Vec<SinkTable>, ConnectorError> {
        crate::sink::tables(&self.0, pipeline, index).await
    }

    async fn release(&self, pipeline: &str, index: usize, table: &TableId) -> Result<bool, ConnectorError> {
        crate::sink::release(&self.0, pipeline, index, table).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_never_hold_the_password() {
        let d = describe_url("postgres://app:s3cr/t?x@db.example:6432/orders?sslmode=require");
        assert_eq!(d, "postgres://app@db.example:6432/orders");
        let c = PgSourceConnector(
            PgSourceConfig::parse(
                toml::from_str("url = \"postgres://app:hunter2@h/d\"").unwrap(),
                &ParseContext { at: "source", pipeline: "p" },
            )
            .unwrap(),
        );
        let j = c.to_json().to_string();
        assert!(!j.contains("hunter2") && j.contains("\"type\":\"postgres\""), "{j}");
        assert!(j.contains("\"url\":\"postgres://app@h/d\""), "{j}");
    }
}
