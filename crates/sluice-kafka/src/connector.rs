//! The registry entry of the Kafka sink: `type = "kafka"` for `[[sink]]`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::{BaseConsumer, Consumer};
use sluice_config::{ConfigError, ParseContext};
use sluice_core::{CheckResult, Sink, SinkConnector, Source, SourceConnector};

use crate::config::KafkaSinkConfig;
use crate::sink::KafkaSink;
use crate::source::KafkaSource;
use crate::source_config::KafkaSourceConfig;

/// The `type` tag.
pub const TYPE: &str = "kafka";

/// A configured Kafka sink.
#[derive(Debug, Clone)]
pub struct KafkaSinkConnector(pub KafkaSinkConfig);

/// A configured Kafka source.
#[derive(Debug, Clone)]
pub struct KafkaSourceConnector(pub KafkaSourceConfig);

/// Parses `[source]` with `type = "kafka"`.
pub fn parse_source(body: toml::Value, ctx: &ParseContext<'_>) -> Result<Arc<dyn SourceConnector>, ConfigError> {
    Ok(Arc::new(KafkaSourceConnector(KafkaSourceConfig::parse(body, ctx)?)))
}

/// Asks the brokers for the cluster's metadata: the check of both the sink and the source.
async fn probe_brokers(
    brokers: &str,
    properties: &std::collections::BTreeMap<String, sluice_config::Secret<String>>,
    name: String,
) -> CheckResult {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in properties {
        c.set(k, v.expose());
    }
    let probe = tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = c.create().map_err(|e| e.to_string())?;
        consumer.fetch_metadata(None, Duration::from_secs(10)).map(|m| m.brokers().len()).map_err(|e| e.to_string())
    })
    .await;
    match probe {
        Ok(Ok(n)) => CheckResult::pass(name, format!("{n} broker(s) in the cluster")),
        Ok(Err(e)) => CheckResult::fail(
            name,
            format!("{e}; check `brokers` (host:port as the brokers advertise themselves) and the security properties"),
        ),
        Err(e) => CheckResult::fail(name, e.to_string()),
    }
}

#[async_trait]
impl SourceConnector for KafkaSourceConnector {
    fn kind(&self) -> &'static str {
        TYPE
    }

    fn build(&self, pipeline: &str) -> Box<dyn Source> {
        Box::new(KafkaSource::new(self.0.clone(), pipeline))
    }

    fn shares_partitions(&self) -> bool {
        true
    }

    async fn check(&self, _pipeline: &str) -> Vec<CheckResult> {
        vec![
            probe_brokers(&self.0.brokers, &self.0.properties, format!("source: brokers {} reachable", self.0.brokers))
                .await,
        ]
    }

    fn describe(&self) -> String {
        format!("kafka {} topics {:?} ({})", self.0.brokers, self.0.topics, self.0.format)
    }

    fn to_json(&self) -> serde_json::Value {
        let mut j = serde_json::to_value(&self.0).unwrap_or_default();
        j["type"] = TYPE.into();
        j
    }
}

/// Parses a `[[sink]]` with `type = "kafka"`.
pub fn parse_sink(body: toml::Value, ctx: &ParseContext<'_>) -> Result<Arc<dyn SinkConnector>, ConfigError> {
    Ok(Arc::new(KafkaSinkConnector(KafkaSinkConfig::parse(body, ctx)?)))
}

#[async_trait]
impl SinkConnector for KafkaSinkConnector {
    fn kind(&self) -> &'static str {
        TYPE
    }

    fn build(&self, pipeline: &str, index: usize) -> Box<dyn Sink> {
        Box::new(KafkaSink::new(self.0.clone(), pipeline, index))
    }

    /// The brokers answer a metadata request.
    async fn check(&self, at: &str) -> Vec<CheckResult> {
        vec![
            probe_brokers(&self.0.brokers, &self.0.properties, format!("{at}: brokers {} reachable", self.0.brokers))
                .await,
        ]
    }

    fn describe(&self) -> String {
        format!("kafka {} ({}, {})", self.0.brokers, self.0.format, self.0.delivery)
    }

    fn to_json(&self) -> serde_json::Value {
        let mut j = serde_json::to_value(&self.0).unwrap_or_default();
        j["type"] = TYPE.into();
        j
    }
}
