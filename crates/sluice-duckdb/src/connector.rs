//! The registry entry of the DuckDB sink: `type = "duckdb"` for `[[sink]]`.

use std::sync::Arc;

use async_trait::async_trait;
use sluice_config::{ConfigError, ParseContext};
use sluice_core::{CheckResult, ConnectorError, Sink, SinkConnector, SinkTable, TableId};

use crate::config::DuckDbSinkConfig;
use crate::db::Db;
use crate::sink::DuckDbSink;

/// The `type` tag.
pub const TYPE: &str = "duckdb";

/// A configured DuckDB sink.
#[derive(Debug, Clone)]
pub struct DuckDbSinkConnector(pub DuckDbSinkConfig);

/// Parses a `[[sink]]` with `type = "duckdb"`.
pub fn parse_sink(body: toml::Value, ctx: &ParseContext<'_>) -> Result<Arc<dyn SinkConnector>, ConfigError> {
    Ok(Arc::new(DuckDbSinkConnector(DuckDbSinkConfig::parse(body, ctx)?)))
}

#[async_trait]
impl SinkConnector for DuckDbSinkConnector {
    fn kind(&self) -> &'static str {
        TYPE
    }

    fn build(&self, pipeline: &str, index: usize) -> Box<dyn Sink> {
        Box::new(DuckDbSink::new(self.0.clone(), pipeline, index))
    }

    /// The file opens for writing (created when missing); another process holding it is named.
    async fn check(&self, at: &str) -> Vec<CheckResult> {
        let cfg = self.0.clone();
        let name = format!("{at}: DuckDB file {} writable", cfg.path);
        let r = tokio::task::spawn_blocking(move || {
            if let Some(dir) = std::path::Path::new(&cfg.path).parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let mut db = Db::new(&cfg.path, cfg.memory_limit.clone(), cfg.threads);
            let version: String = db
                .conn()
                .map_err(|e| e.to_string())?
                .query_row("SELECT version()", [], |r| r.get(0))
                .map_err(|e| e.to_string())?;
            db.release();
            Ok::<_, String>(version)
        })
        .await;
        match r {
            Ok(Ok(v)) => vec![CheckResult::pass(name, format!("DuckDB {v}"))],
            Ok(Err(e)) => vec![CheckResult::fail(
                name,
                format!("{e}; check the path and its directory's permissions, and that no other program keeps the file open"),
            )],
            Err(e) => vec![CheckResult::fail(name, e.to_string())],
        }
    }

    fn describe(&self) -> String {
        format!("duckdb {} ({})", self.0.path, self.0.mode)
    }

    fn to_json(&self) -> serde_json::Value {
        let mut j = serde_json::to_value(&self.0).unwrap_or_default();
        j["type"] = TYPE.into();
        j
    }

    async fn tables(&self, pipeline: &str, index: usize) -> Result<Vec<SinkTable>, ConnectorError> {
        let (cfg, pipeline) = (self.0.clone(), pipeline.to_string());
        tokio::task::spawn_blocking(move || crate::sink::tables(&cfg, &pipeline, index))
            .await
            .map_err(|e| ConnectorError::msg(sluice_core::ErrorClass::Fatal, e.to_string()))?
            .map_err(ConnectorError::from)
    }

    async fn query(&self, sql: &str) -> Result<String, ConnectorError> {
        let (path, sql) = (self.0.path.clone(), sql.to_string());
        tokio::task::spawn_blocking(move || crate::query::query(&path, &sql, crate::db::OPEN_WAIT))
            .await
            .map_err(|e| ConnectorError::msg(sluice_core::ErrorClass::Fatal, e.to_string()))?
            .map_err(|e| ConnectorError::new(sluice_core::ErrorClass::Fatal, e.to_string(), e))
    }

    async fn release(&self, pipeline: &str, index: usize, table: &TableId) -> Result<bool, ConnectorError> {
        let (cfg, pipeline, table) = (self.0.clone(), pipeline.to_string(), table.clone());
        tokio::task::spawn_blocking(move || crate::sink::release(&cfg, &pipeline, index, &table))
            .await
            .map_err(|e| ConnectorError::msg(sluice_core::ErrorClass::Fatal, e.to_string()))?
            .map_err(ConnectorError::from)
    }
}
