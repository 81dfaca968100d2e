//! The registry entry of the Parquet sink: `type = "parquet"` for `[[sink]]`.

use std::sync::Arc;

use async_trait::async_trait;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use sluice_config::{ConfigError, ParseContext};
use sluice_core::{CheckResult, Sink, SinkConnector};

use crate::config::ParquetSinkConfig;
use crate::sink::ParquetSink;

/// The `type` tag.
pub const TYPE: &str = "parquet";

/// A configured Parquet sink.
#[derive(Debug, Clone)]
pub struct ParquetSinkConnector(pub ParquetSinkConfig);

/// Parses a `[[sink]]` with `type = "parquet"`.
pub fn parse_sink(body: toml::Value, ctx: &ParseContext<'_>) -> Result<Arc<dyn SinkConnector>, ConfigError> {
    Ok(Arc::new(ParquetSinkConnector(ParquetSinkConfig::parse(body, ctx)?)))
}

#[async_trait]
impl SinkConnector for ParquetSinkConnector {
    fn kind(&self) -> &'static str {
        TYPE
    }

    fn build(&self, pipeline: &str, index: usize) -> Box<dyn Sink> {
        Box::new(ParquetSink::new(self.0.clone(), pipeline, index))
    }

    /// An object can be written under the url and removed again.
    async fn check(&self, at: &str) -> Vec<CheckResult> {
        let name = format!("{at}: {} writable", self.0.url);
        let r = async {
            let (store, root) = crate::store::open(&self.0).map_err(|e| e.to_string())?;
            let probe = root.clone().join("_sluice").join(format!("check-{}", std::process::id()));
            store.put(&probe, PutPayload::from_static(b"sluice check")).await.map_err(|e| e.to_string())?;
            store.delete(&probe).await.map_err(|e| e.to_string())?;
            Ok::<Path, String>(root)
        }
        .await;
        match r {
            Ok(_) => vec![CheckResult::pass(name, "an object was written and removed")],
            Err(e) => vec![CheckResult::fail(
                name,
                format!(
                    "{e}; check the url, the bucket's existence and the credentials (or the directory's permissions)"
                ),
            )],
        }
    }

    fn describe(&self) -> String {
        format!("parquet {} (change log, {})", self.0.url, self.0.compression)
    }

    fn to_json(&self) -> serde_json::Value {
        let mut j = serde_json::to_value(&self.0).unwrap_or_default();
        j["type"] = TYPE.into();
        j
    }
}
