//! `[[sink]]` with `type = "kafka"`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sluice_config::{glob_match, invalid, typed, BatchConfig, ConfigError, ParseContext, Secret};
use sluice_core::TableId;

use crate::format::Format;

/// Default topic template (`{name}` is the pipeline's name).
pub const DEFAULT_TOPIC: &str = "{name}.{schema}.{table}";
/// Default topic of the sink's positions (compacted, one partition).
pub const DEFAULT_OFFSETS_TOPIC: &str = "_sluice_offsets";

/// A dispatch rule, as TiCDC's `[sink] dispatchers`: the first whose matcher selects the table
/// decides its topic and how records are spread over the topic's partitions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dispatcher {
    /// Globs over `schema.table`
    pub matcher: Vec<String>,
    /// Topic template with `{schema}`, `{table}` and `{name}`; the sink's `topic` when absent
    #[serde(default)]
    pub topic: Option<String>,
    /// `index-value` (hash of the key: one row's changes in one partition, in order), `table`,
    /// `ts` (commit time) or `columns` (hash of `columns`)
    #[serde(default)]
    pub partition: Option<String>,
    /// The columns hashed by `partition = "columns"`
    #[serde(default)]
    pub columns: Vec<String>,
}

/// How records are spread over a topic's partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partitioner {
    /// librdkafka's murmur2 of the record key, as the Java client does
    IndexValue,
    Table,
    Ts,
    Columns(Vec<String>),
}

/// The sink's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// `host:port[,host:port...]`
    pub brokers: String,
    /// `avro`, `debezium-json`, `canal-json` or `json`
    #[serde(default = "default_format")]
    pub format: String,
    /// The Schema Registry (`avro`): `http[s]://[key:secret@]host:port`
    #[serde(default)]
    pub schema_registry: Option<Secret<String>>,
    /// How `avro` subjects are named, as Confluent's serializers' `subject.name.strategy`:
    /// `topic` (`<topic>-key`/`<topic>-value`: one table per topic), `record` (the record's full
    /// name) or `topic_record` (`<topic>-<record full name>`: several tables in one topic)
    #[serde(default = "default_subject_strategy")]
    pub subject_name_strategy: String,
    /// Default topic template
    #[serde(default = "default_topic")]
    pub topic: String,
    #[serde(default)]
    pub dispatchers: Vec<Dispatcher>,
    /// `exactly_once` (Kafka transactions) or `at_least_once`
    #[serde(default = "default_delivery")]
    pub delivery: String,
    /// `debezium-json` and `json`: wrap keys and values in Kafka Connect's
    /// `{"schema": ..., "payload": ...}` (the JSON converter's `schemas.enable`), so readers get
    /// the column types
    #[serde(default)]
    pub schemas: bool,
    /// A delete is followed by a record with the same key and no value
    #[serde(default = "yes")]
    pub tombstones: bool,
    /// Where a change goes that the format cannot carry (an Avro decimal NaN, say), as
    /// Debezium JSON with the error in its headers, in the same transaction as the rest; without
    /// it such a change stops the sink, naming the table and column
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Where the sink keeps its position (compacted, created when missing)
    #[serde(default = "default_offsets_topic")]
    pub offsets_topic: String,
    /// Partitions of topics the sink creates
    #[serde(default = "one")]
    pub topic_partitions: i32,
    /// Replication factor of topics the sink creates
    #[serde(default = "one")]
    pub replication_factor: i32,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`
    #[serde(default = "default_compression")]
    pub compression: String,
    /// Extra librdkafka properties (`security.protocol`, `sasl.mechanism`, `sasl.username`,
    /// `sasl.password`, `ssl.ca.location`, ...); values are never shown
    #[serde(default)]
    pub properties: BTreeMap<String, Secret<String>>,
    #[serde(default)]
    pub batch: BatchConfig,
}

fn default_format() -> String {
    "debezium-json".into()
}
fn default_subject_strategy() -> String {
    "topic".into()
}
fn default_topic() -> String {
    DEFAULT_TOPIC.into()
}
fn default_delivery() -> String {
    "exactly_once".into()
}
fn default_offsets_topic() -> String {
    DEFAULT_OFFSETS_TOPIC.into()
}
fn default_compression() -> String {
    "none".into()
}
fn yes() -> bool {
    true
}
fn one() -> i32 {
    1
}

/// Properties the sink sets itself; setting them in `properties` would break its guarantees.
const OWN_PROPERTIES: &[&str] = &["bootstrap.servers", "transactional.id", "enable.idempotence", "acks"];

impl KafkaSinkConfig {
    /// Parses and validates a `[[sink]]`.
    pub fn parse(body: toml::Value, ctx: &ParseContext<'_>) -> Result<KafkaSinkConfig, ConfigError> {
        let c: KafkaSinkConfig = typed(body, ctx.at)?;
        let at = ctx.at;
        if c.brokers.trim().is_empty() {
            return Err(invalid(format!("{at}.brokers"), "must name at least one broker, e.g. \"127.0.0.1:9092\""));
        }
        if Format::parse(&c.format).is_none() {
            let why = format!("{:?}: expected \"avro\", \"debezium-json\", \"canal-json\" or \"json\"", c.format);
            return Err(invalid(format!("{at}.format"), why));
        }
        if !["topic", "record", "topic_record"].contains(&c.subject_name_strategy.as_str()) {
            let why = format!("{:?}: expected \"topic\", \"record\" or \"topic_record\"", c.subject_name_strategy);
            return Err(invalid(format!("{at}.subject_name_strategy"), why));
        }
        if c.format == "avro" {
            match &c.schema_registry {
                None => {
                    return Err(invalid(
                        format!("{at}.schema_registry"),
                        "format = \"avro\" needs the Schema Registry's URL, e.g. \"http://127.0.0.1:8081\" (`sluice registry` serves one)",
                    ))
                }
                Some(url) => {
                    sluice_registry::RegistryClient::new(url.expose())
                        .map_err(|e| invalid(format!("{at}.schema_registry"), e.to_string()))?;
                }
            }
        }
        if c.delivery != "exactly_once" && c.delivery != "at_least_once" {
            return Err(invalid(
                format!("{at}.delivery"),
                format!("{:?}: expected \"exactly_once\" or \"at_least_once\"", c.delivery),
            ));
        }
        if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&c.compression.as_str()) {
            return Err(invalid(
                format!("{at}.compression"),
                format!("{:?}: expected none, gzip, snappy, lz4 or zstd", c.compression),
            ));
        }
        if c.topic_partitions < 1 || c.replication_factor < 1 {
            return Err(invalid(
                format!("{at}.topic_partitions"),
                "topic_partitions and replication_factor must be at least 1",
            ));
        }
        if c.offsets_topic.is_empty() {
            return Err(invalid(format!("{at}.offsets_topic"), "must not be empty"));
        }
        for (i, d) in c.dispatchers.iter().enumerate() {
            let key = format!("{at}.dispatchers[{i}]");
            if d.matcher.is_empty() {
                return Err(invalid(format!("{key}.matcher"), "must list at least one glob, e.g. [\"*.*\"]"));
            }
            match d.partition.as_deref() {
                None | Some("index-value" | "table" | "ts") => {}
                Some("columns") if !d.columns.is_empty() => {}
                Some("columns") => {
                    return Err(invalid(format!("{key}.columns"), "partition = \"columns\" needs columns = [...]"))
                }
                Some(p) => {
                    return Err(invalid(
                        format!("{key}.partition"),
                        format!("{p:?}: expected \"index-value\", \"table\", \"ts\" or \"columns\""),
                    ))
                }
            }
        }
        if let Some(k) = c.properties.keys().find(|k| OWN_PROPERTIES.contains(&k.as_str())) {
            return Err(invalid(
                format!("{at}.properties.{k}"),
                "is set by the sink itself (brokers, delivery); remove it from properties",
            ));
        }
        c.batch.validate(at)?;
        Ok(c)
    }

    pub fn format(&self) -> Format {
        Format::parse(&self.format).unwrap_or(Format::DebeziumJson)
    }

    pub fn exactly_once(&self) -> bool {
        self.delivery == "exactly_once"
    }

    /// The topic and partitioner for `table` of pipeline `name`.
    pub fn route(&self, name: &str, table: &TableId) -> (String, Partitioner) {
        let full = format!("{}.{}", table.schema, table.name);
        let rule = self.dispatchers.iter().find(|d| d.matcher.iter().any(|m| glob_match(m, &full)));
        let template = rule.and_then(|d| d.topic.as_deref()).unwrap_or(&self.topic);
        let topic = template.replace("{schema}", &table.schema).replace("{table}", &table.name).replace("{name}", name);
        let partitioner = match rule.and_then(|d| d.partition.as_deref()) {
            Some("table") => Partitioner::Table,
            Some("ts") => Partitioner::Ts,
            Some("columns") => Partitioner::Columns(rule.map(|d| d.columns.clone()).unwrap_or_default()),
            _ => Partitioner::IndexValue,
        };
        (topic, partitioner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<KafkaSinkConfig, ConfigError> {
        KafkaSinkConfig::parse(toml::from_str(s).unwrap(), &ParseContext { at: "sink[0]", pipeline: "p" })
    }

    #[test]
    fn dispatch_rules_pick_topic_and_partitioner() {
        let c = parse(
            r#"brokers = "127.0.0.1:9092"
               dispatchers = [{ matcher = ["app.orders"], topic = "tidb_{schema}_{table}", partition = "table" },
                              { matcher = ["*.*"], partition = "columns", columns = ["region"] }]"#,
        )
        .unwrap();
        assert_eq!(c.route("shop", &TableId::new("app", "orders")), ("tidb_app_orders".into(), Partitioner::Table));
        assert_eq!(
            c.route("shop", &TableId::new("app", "lines")),
            ("shop.app.lines".into(), Partitioner::Columns(vec!["region".into()]))
        );
        assert!(c.exactly_once() && c.tombstones);
    }

    #[test]
    fn bad_keys_are_named() {
        assert!(parse("brokers = \"\"").unwrap_err().to_string().contains("sink[0].brokers"));
        let e = parse("brokers = \"b:1\"\nformat = \"avro\"").unwrap_err().to_string();
        assert!(e.contains("sink[0].schema_registry"), "{e}");
        assert!(parse("brokers = \"b:1\"\nformat = \"avro\"\nschema_registry = \"http://r:8081\"").is_ok());
        assert!(parse("brokers = \"b:1\"\nformat = \"xml\"").unwrap_err().to_string().contains("sink[0].format"));
        assert!(parse("brokers = \"b:1\"\ndelivery = \"maybe\"").unwrap_err().to_string().contains("delivery"));
        let e =
            parse("brokers = \"b:1\"\ndispatchers = [{ matcher = [\"*.*\"], partition = \"columns\" }]").unwrap_err();
        assert!(e.to_string().contains("dispatchers[0].columns"), "{e}");
        let e = parse("brokers = \"b:1\"\nproperties = { \"transactional.id\" = \"x\" }").unwrap_err();
        assert!(e.to_string().contains("properties.transactional.id"), "{e}");
    }

    #[test]
    fn property_values_are_never_shown() {
        let c = parse("brokers = \"b:1\"\nproperties = { \"sasl.password\" = \"hunter2\" }").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&c).unwrap().contains("hunter2"));
    }
}
