//! The registry entries of the PostgreSQL connector: `type = "postgres"` for `[source]` and
//! `[[sink]]`.

use std::sync::Arc;

use async_trait::async_trait;
use sluice_config::{ConfigError, ParseContext};
use sluice_core::{CheckResult, Sink, SinkConnector, Source, SourceConnector};

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

/// `postgres://user@host:port/database`, without the password.
pub fn describe_url(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) => {
            let host = c
                .get_hosts()
                .first()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(s) => s.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .unwrap_or_else(|| "localhost".into());
            let port = c.get_ports().first().copied().unwrap_or(5432);
            let user = c.get_user().unwrap_or("");
            let db = c.get_dbname().unwrap_or(user);
            format!("postgres://{user}@{host}:{port}/{db}")
        }
        Err(_) => sluice_config::redact_url(url),
    }
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
        let mut j = serde_json::to_value(&self.0).unwrap_or_default();
        j["type"] = TYPE.into();
        j
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
        let mut j = serde_json::to_value(&self.0).unwrap_or_default();
        j["type"] = TYPE.into();
        j
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_never_hold_the_password() {
        let d = describe_url("postgres://app:s3cr%2Ft@db.example:6432/orders");
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
    }
}
