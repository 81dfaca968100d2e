//! The registry entry of the MySQL source: `type = "mysql"` for `[source]`.

use std::sync::Arc;

use async_trait::async_trait;
use sluice_config::{ConfigError, ParseContext};
use sluice_core::{CheckResult, Sink, SinkConnector, Source, SourceConnector};

use crate::config::MySqlSourceConfig;
use crate::sink::{MySqlSink, MySqlSinkConfig};
use crate::MySqlSource;

/// The `type` tag.
pub const TYPE: &str = "mysql";

/// A configured MySQL/MariaDB source.
#[derive(Debug, Clone)]
pub struct MySqlSourceConnector(pub MySqlSourceConfig);

/// Parses `[source]` with `type = "mysql"`.
pub fn parse_source(body: toml::Value, ctx: &ParseContext<'_>) -> Result<Arc<dyn SourceConnector>, ConfigError> {
    Ok(Arc::new(MySqlSourceConnector(MySqlSourceConfig::parse(body, ctx)?)))
}

/// A configured MySQL/MariaDB/TiDB sink.
#[derive(Debug, Clone)]
pub struct MySqlSinkConnector(pub MySqlSinkConfig);

/// Parses a `[[sink]]` with `type = "mysql"`.
pub fn parse_sink(body: toml::Value, ctx: &ParseContext<'_>) -> Result<Arc<dyn SinkConnector>, ConfigError> {
    Ok(Arc::new(MySqlSinkConnector(MySqlSinkConfig::parse(body, ctx)?)))
}

/// `mysql://user@host:port/database`, never the password or the query.
pub fn describe_url(url: &str) -> String {
    sluice_config::redact_url(url)
}

#[async_trait]
impl SourceConnector for MySqlSourceConnector {
    fn kind(&self) -> &'static str {
        TYPE
    }

    fn build(&self, pipeline: &str) -> Box<dyn Source> {
        Box::new(MySqlSource::new(self.0.clone(), pipeline))
    }

    async fn check(&self, pipeline: &str) -> Vec<CheckResult> {
        crate::check::check_source(&self.0, pipeline).await
    }

    fn describe(&self) -> String {
        describe_url(self.0.url.expose())
    }

    fn to_json(&self) -> serde_json::Value {
        let mut j = serde_json::to_value(&self.0).unwrap_or_default();
        j["type"] = TYPE.into();
        j["url"] = describe_url(self.0.url.expose()).into();
        j
    }
}

#[async_trait]
impl SinkConnector for MySqlSinkConnector {
    fn kind(&self) -> &'static str {
        TYPE
    }

    fn build(&self, pipeline: &str, index: usize) -> Box<dyn Sink> {
        Box::new(MySqlSink::new(self.0.clone(), pipeline, index))
    }

    async fn check(&self, at: &str) -> Vec<CheckResult> {
        crate::check::check_sink(&self.0, at).await
    }

    fn describe(&self) -> String {
        format!("{} ({})", describe_url(self.0.url.expose()), self.0.mode)
    }

    fn to_json(&self) -> serde_json::Value {
        let mut j = serde_json::to_value(&self.0).unwrap_or_default();
        j["type"] = TYPE.into();
        j["url"] = describe_url(self.0.url.expose()).into();
        j
    }

    async fn tables(
        &self,
        pipeline: &str,
        index: usize,
    ) -> Result<Vec<sluice_core::SinkTable>, sluice_core::ConnectorError> {
        Ok(crate::sink::tables(&self.0, pipeline, index).await?)
    }

    async fn release(
        &self,
        pipeline: &str,
        index: usize,
        table: &sluice_core::TableId,
    ) -> Result<bool, sluice_core::ConnectorError> {
        Ok(crate::sink::release(&self.0, pipeline, index, table).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_never_hold_the_password() {
        let c = MySqlSourceConnector(
            MySqlSourceConfig::parse(
                toml::from_str("url = \"mysql://repl:hunter2@db.example:3306/app\"").unwrap(),
                &ParseContext { at: "source", pipeline: "p" },
            )
            .unwrap(),
        );
        assert_eq!(c.describe(), "mysql://repl@db.example:3306/app");
        let j = c.to_json().to_string();
        assert!(!j.contains("hunter2") && j.contains("\"type\":\"mysql\""), "{j}");
    }
}
