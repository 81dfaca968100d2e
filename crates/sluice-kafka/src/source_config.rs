//! `[source]` with `type = "kafka"`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_config::{invalid, typed, ConfigError, ParseContext, Secret};
use sluice_core::TableId;

use crate::format::Format;

/// Properties the source sets itself.
const OWN_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "group.instance.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "isolation.level",
];

/// The source's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// `host:port[,host:port...]`
    pub brokers: String,
    /// Topics to consume; a name starting with `^` is a regular expression
    pub topics: Vec<String>,
    /// The consumer group; processes running the same pipeline with the same group share the
    /// partitions. Default: `sluice-<pipeline>`
    #[serde(default)]
    pub group: Option<String>,
    /// This process's static member id in the group (`group.instance.id`): a restart with the
    /// same id takes its place at once. Processes sharing a group need different ones (a second
    /// process with the same id fences the first out of the group). Default: none (dynamic
    /// membership: a process that died leaves the group after the 10 s session timeout).
    #[serde(default)]
    pub instance: Option<String>,
    /// `avro`, `debezium-json`, `canal-json` or `json`
    #[serde(default = "default_format")]
    pub format: String,
    /// The Schema Registry (`avro`)
    #[serde(default)]
    pub schema_registry: Option<Secret<String>>,
    /// The table a record goes to: `{schema}` and `{table}` as the record names them (the
    /// Debezium `source` block, Canal's `database`/`table`, the Avro record's namespace), else
    /// from the topic (its last two dot-separated parts, or `public` and the whole topic);
    /// `{topic}` is the topic
    #[serde(default = "default_table")]
    pub table: String,
    /// Where partitions that no sink holds a position for start: `earliest` or `latest`
    #[serde(default = "default_start")]
    pub start: String,
    /// Records that cannot be decoded go here, with the error in their headers (Kafka Connect's
    /// `__connect.errors.*`); without it such a record stops the pipeline
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Extra librdkafka properties (security, timeouts); values are never shown
    #[serde(default)]
    pub properties: BTreeMap<String, Secret<String>>,
}

fn default_format() -> String {
    "debezium-json".into()
}
fn default_table() -> String {
    "{schema}.{table}".into()
}
fn default_start() -> String {
    "earliest".into()
}

impl KafkaSourceConfig {
    /// Parses and validates `[source]`.
    pub fn parse(body: toml::Value, ctx: &ParseContext<'_>) -> Result<KafkaSourceConfig, ConfigError> {
        let c: KafkaSourceConfig = typed(body, ctx.at)?;
        let at = ctx.at;
        if c.brokers.trim().is_empty() {
            return Err(invalid(format!("{at}.brokers"), "must name at least one broker, e.g. \"127.0.0.1:9092\""));
        }
        if c.topics.is_empty() || c.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(invalid(format!("{at}.topics"), "must list at least one topic, e.g. [\"shop.public.orders\"]"));
        }
        if Format::parse(&c.format).is_none() {
            let why = format!("{:?}: expected \"avro\", \"debezium-json\", \"canal-json\" or \"json\"", c.format);
            return Err(invalid(format!("{at}.format"), why));
        }
        match (&c.schema_registry, c.format.as_str()) {
            (None, "avro") => {
                return Err(invalid(
                    format!("{at}.schema_registry"),
                    "format = \"avro\" needs the Schema Registry's URL, e.g. \"http://127.0.0.1:8081\"",
                ))
            }
            (Some(url), _) => {
                sluice_registry::RegistryClient::new(url.expose())
                    .map_err(|e| invalid(format!("{at}.schema_registry"), e.to_string()))?;
            }
            _ => {}
        }
        if c.start != "earliest" && c.start != "latest" {
            return Err(invalid(format!("{at}.start"), format!("{:?}: expected \"earliest\" or \"latest\"", c.start)));
        }
        if !c.table.contains('.') {
            return Err(invalid(
                format!("{at}.table"),
                "must be schema.table, e.g. \"{schema}.{table}\" or \"app.{table}\"",
            ));
        }
        if let Some(k) = c.properties.keys().find(|k| OWN_PROPERTIES.contains(&k.as_str())) {
            return Err(invalid(
                format!("{at}.properties.{k}"),
                "is set by the source itself; remove it from properties",
            ));
        }
        Ok(c)
    }

    pub fn format(&self) -> Format {
        Format::parse(&self.format).unwrap_or(Format::DebeziumJson)
    }

    pub fn group(&self, pipeline: &str) -> String {
        self.group.clone().unwrap_or_else(|| format!("sluice-{pipeline}"))
    }

    pub fn instance(&self) -> Option<&str> {
        self.instance.as_deref()
    }

    /// The table for a record of `topic` that names `schema` and `table` (either may be absent).
    pub fn table_for(&self, topic: &str, schema: Option<&str>, table: Option<&str>) -> TableId {
        let parts: Vec<&str> = topic.split('.').collect();
        let (ts, tt) = match parts.as_slice() {
            [.., s, t] => (*s, *t),
            _ => ("public", topic),
        };
        let (s, t) = match (schema, table) {
            (Some(s), Some(t)) => (s, t),
            (None, Some(t)) => (ts, t),
            _ => (ts, tt),
        };
        let name = self.table.replace("{schema}", s).replace("{table}", t).replace("{topic}", topic);
        match name.split_once('.') {
            Some((a, b)) => TableId::new(a, b),
            None => TableId::new("public", name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<KafkaSourceConfig, ConfigError> {
        KafkaSourceConfig::parse(toml::from_str(s).unwrap(), &ParseContext { at: "source", pipeline: "p" })
    }

    #[test]
    fn tables_come_from_the_record_then_the_topic() {
        let c = parse("brokers = \"b:1\"\ntopics = [\"t\"]").unwrap();
        assert_eq!(c.table_for("shop.app.orders", None, None), TableId::new("app", "orders"));
        assert_eq!(c.table_for("tidb_public_orders", Some("app"), Some("orders")), TableId::new("app", "orders"));
        assert_eq!(c.table_for("orders", None, None), TableId::new("public", "orders"));
        assert_eq!(c.group("p"), "sluice-p");
        let c = parse("brokers = \"b:1\"\ntopics = [\"t\"]\ntable = \"replica.{table}\"").unwrap();
        assert_eq!(c.table_for("shop.app.orders", None, None), TableId::new("replica", "orders"));
    }

    #[test]
    fn bad_keys_are_named() {
        assert!(parse("brokers = \"b:1\"\ntopics = []").unwrap_err().to_string().contains("source.topics"));
        let e = parse("brokers = \"b:1\"\ntopics = [\"t\"]\nformat = \"avro\"").unwrap_err().to_string();
        assert!(e.contains("source.schema_registry"), "{e}");
        let e = parse("brokers = \"b:1\"\ntopics = [\"t\"]\nproperties = { \"group.id\" = \"x\" }").unwrap_err();
        assert!(e.to_string().contains("properties.group.id"), "{e}");
        assert!(parse("brokers = \"b:1\"\ntopics = [\"t\"]\nstart = \"middle\"").is_err());
    }
}
