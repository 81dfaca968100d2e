//! The registry entry of the Snowflake sink: `type = "snowflake"` for `[[sink]]`.

use std::sync::Arc;

use async_trait::async_trait;
use sluice_config::{ConfigError, ParseContext};
use sluice_core::{CheckResult, ConnectorError, Sink, SinkConnector, SinkTable, TableId};

use crate::config::SnowflakeSinkConfig;
use crate::sink::SnowflakeSink;

/// The `type` tag.
pub const TYPE: &str = "snowflake";

/// A configured Snowflake sink.
#[derive(Debug, Clone)]
pub struct SnowflakeSinkConnector(pub SnowflakeSinkConfig);

/// Parses a `[[sink]]` with `type = "snowflake"`.
pub fn parse_sink(body: toml::Value, ctx: &ParseContext<'_>) -> Result<Arc<dyn SinkConnector>, ConfigError> {
    Ok(Arc::new(SnowflakeSinkConnector(SnowflakeSinkConfig::parse(body, ctx)?)))
}

#[async_trait]
impl SinkConnector for SnowflakeSinkConnector {
    fn kind(&self) -> &'static str {
        TYPE
    }

    fn build(&self, pipeline: &str, index: usize) -> Box<dyn Sink> {
        Box::new(SnowflakeSink::new(self.0.clone(), pipeline, index))
    }

    /// The sink can log in and use its database and schema.
    async fn check(&self, at: &str) -> Vec<CheckResult> {
        let c = &self.0;
        let name = format!("{at}: snowflake {} as {}", c.account, c.user);
        let mut sink = SnowflakeSink::new(c.clone(), "check", 0);
        match sink.open(Default::default()).await {
            Ok(_) => {
                let _ = sink.close().await;
                vec![CheckResult::pass(name, format!("logged in; {}.{} usable", c.database, c.schema))]
            }
            Err(e) => vec![CheckResult::fail(
                name,
                format!(
                    "{e}; check account, user and the key (its public key set with ALTER USER .. SET RSA_PUBLIC_KEY) \
                     or password, and that the role may create tables in {}.{}",
                    c.database, c.schema
                ),
            )],
        }
    }

    fn describe(&self) -> String {
        format!("snowflake {} {}.{} ({})", self.0.account, self.0.database, self.0.schema, self.0.mode)
    }

    async fn tables(&self, pipeline: &str, index: usize) -> Result<Vec<SinkTable>, ConnectorError> {
        crate::sink::tables(&self.0, pipeline, index).await
    }

    async fn release(&self, pipeline: &str, index: usize, table: &TableId) -> Result<bool, ConnectorError> {
        crate::sink::release(&self.0, pipeline, index, table).await
    }

    fn to_json(&self) -> serde_json::Value {
        let mut j = serde_json::to_value(&self.0).unwrap_or_default();
        j["type"] = TYPE.into();
        j
    }
}
