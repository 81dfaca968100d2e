//! The `avro` format: Confluent-framed Avro with the schemas in a Schema Registry, shaped as
//! Debezium's "new record state" (`ExtractNewRecordState`) leaves them, which JDBC and warehouse
//! sinks consume:
//!
//! - key: a record `<pipeline>.<schema>.<table>.Key` of the key columns, subject `<topic>-key`;
//! - value: a record `<pipeline>.<schema>.<table>.Value` of every column, then `__op` (`c`, `u`,
//!   `r`) and `__source_ts_ms` (the commit time, ms), subject `<topic>-value`;
//! - subjects as Confluent's `TopicNameStrategy` names them, or with `subject_name_strategy` as
//!   `RecordNameStrategy` (the record's full name) or `TopicRecordNameStrategy`
//!   (`<topic>-<full name>`), for topics that carry several tables;
//! - a delete is the key with no value (a tombstone), as with `delete.handling.mode=none`;
//!   truncates are not sent (Avro consumers have no record for them).
//!
//! A table's shape is registered once per version; a column the source adds is nullable with
//! default null, so the new version is BACKWARD compatible and the registry accepts it. A
//! registry that refuses a new version stops the sink with the subject and the registry's reason.

use std::collections::HashMap;

use sluice_avro::{encode_bytes, encode_long, encode_row, frame, record_schema, RecordNames};
use sluice_core::{ConnectorError, ErrorClass, TableId, TableSchema};
use sluice_registry::RegistryClient;

use crate::format::Record;

/// Schema ids per table shape.
pub struct AvroFormat {
    registry: RegistryClient,
    strategy: String,
    ids: HashMap<(TableId, u64, String), (Option<u32>, u32)>,
}

/// The subject of a key (`key`) or value schema in `topic` for the record `names`.
fn subject(strategy: &str, topic: &str, key: bool, names: &RecordNames) -> String {
    let full = format!("{}.{}", names.namespace, names.name);
    match strategy {
        "record" => full,
        "topic_record" => format!("{topic}-{full}"),
        _ => format!("{topic}-{}", if key { "key" } else { "value" }),
    }
}

fn names(pipeline: &str, t: &TableSchema, record: &str) -> RecordNames {
    RecordNames { name: record.into(), namespace: format!("{pipeline}.{}.{}", t.id.schema, t.id.name) }
}

/// The value schema: the table's columns, then the two metadata fields.
fn value_schema(pipeline: &str, t: &TableSchema) -> serde_json::Value {
    let all: Vec<usize> = (0..t.columns.len()).collect();
    let mut s = record_schema(t, &all, &names(pipeline, t, "Value"));
    if let Some(fields) = s["fields"].as_array_mut() {
        fields.push(serde_json::json!({ "name": "__op", "type": "string" }));
        fields.push(serde_json::json!({ "name": "__source_ts_ms", "type": ["null", "long"], "default": null }));
    }
    s
}

impl AvroFormat {
    /// `strategy`: `topic`, `record` or `topic_record` (see the module's comment).
    pub fn new(registry: RegistryClient, strategy: &str) -> AvroFormat {
        AvroFormat { registry, strategy: strategy.to_string(), ids: HashMap::new() }
    }

    /// The key and value schema ids of `t` in `topic` (registered on first use).
    async fn ids(
        &mut self,
        pipeline: &str,
        topic: &str,
        t: &TableSchema,
    ) -> Result<(Option<u32>, u32), ConnectorError> {
        let slot = (t.id.clone(), t.version, topic.to_string());
        if let Some(ids) = self.ids.get(&slot) {
            return Ok(*ids);
        }
        let refused = |subject: String| {
            move |e: sluice_registry::RegistryError| {
                let class = if e.code().is_some() { ErrorClass::Fatal } else { ErrorClass::Transient };
                ConnectorError::msg(
                    class,
                    format!(
                        "register the schema of {} under subject {subject}: {e}; when the registry refuses a new \
                         version as incompatible, set the subject's compatibility (PUT /config/{subject}) or write \
                         the table to a new topic",
                        t.id
                    ),
                )
            }
        };
        let keys = t.key_indexes();
        let key_id = if keys.is_empty() {
            None
        } else {
            let names = names(pipeline, t, "Key");
            let subject = subject(&self.strategy, topic, true, &names);
            let schema = record_schema(t, &keys, &names).to_string();
            Some(self.registry.register(&subject, &schema).await.map_err(refused(subject))?)
        };
        let subject = subject(&self.strategy, topic, false, &names(pipeline, t, "Value"));
        let schema = value_schema(pipeline, t).to_string();
        let value_id = self.registry.register(&subject, &schema).await.map_err(refused(subject))?;
        self.ids.insert(slot, (key_id, value_id));
        Ok((key_id, value_id))
    }

    /// The record's key and value (`None`: a tombstone), or `None` for a record the format has
    /// no message for (a truncate).
    pub async fn encode(
        &mut self,
        pipeline: &str,
        topic: &str,
        r: &Record<'_>,
    ) -> Result<Option<(Option<Vec<u8>>, Option<Vec<u8>>)>, ConnectorError> {
        if r.op == "t" {
            return Ok(None);
        }
        let t = r.table;
        let (key_id, value_id) = self.ids(pipeline, topic, t).await?;
        // This record is bad, not the pipeline: Definite, so a dead-letter topic can take it.
        let bad = |e: sluice_avro::EncodeError| {
            ConnectorError::msg(ErrorClass::Definite, format!("{}: {e} (the Avro format cannot carry it)", t.id))
        };
        let row = r
            .after
            .or(r.before)
            .ok_or_else(|| ConnectorError::msg(ErrorClass::Fatal, format!("{}: a change without a row", t.id)))?;
        // Values the source did not resend (PostgreSQL's unchanged TOAST values) come from the
        // old row when the source sent it (REPLICA IDENTITY FULL); Avro has no "unchanged".
        let merged;
        let row = match r.before {
            Some(before) if r.after.is_some() && row.iter().any(|v| matches!(v, sluice_core::Value::Unchanged)) => {
                merged = row
                    .iter()
                    .zip(before)
                    .map(|(a, b)| if matches!(a, sluice_core::Value::Unchanged) { b.clone() } else { a.clone() })
                    .collect::<Vec<_>>();
                &merged
            }
            _ => row,
        };
        let key = match key_id {
            Some(id) => {
                let mut body = Vec::new();
                encode_row(t, &t.key_indexes(), row, &mut body).map_err(bad)?;
                Some(frame(id, &body))
            }
            None => None,
        };
        if r.op == "d" {
            return Ok(Some((key, None)));
        }
        let mut body = Vec::new();
        let all: Vec<usize> = (0..t.columns.len()).collect();
        encode_row(t, &all, row, &mut body).map_err(bad)?;
        encode_bytes(r.op.as_bytes(), &mut body);
        match r.txn {
            Some(txn) => {
                body.push(2);
                encode_long(txn.commit_ts_micros.div_euclid(1000), &mut body);
            }
            None => body.push(0),
        }
        Ok(Some((key, Some(frame(value_id, &body)))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_confluents_three_strategies() {
        let n = RecordNames { name: "Value".into(), namespace: "p.public.orders".into() };
        assert_eq!(subject("topic", "t1", false, &n), "t1-value");
        assert_eq!(subject("topic", "t1", true, &n), "t1-key");
        assert_eq!(subject("record", "t1", false, &n), "p.public.orders.Value");
        assert_eq!(subject("topic_record", "t1", false, &n), "t1-p.public.orders.Value");
    }
}
