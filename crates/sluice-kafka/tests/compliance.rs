//! The core's sink compliance suite (change-log kind) against the Kafka sink with
//! `delivery = "exactly_once"`, on the test kit's broker (SLUICE_KAFKA_BROKER); what landed is
//! read by confluent-kafka with `read_committed`.

use std::process::Command;

use async_trait::async_trait;
use sluice_config::ParseContext;
use sluice_core::{Sink, TableId};
use sluice_kafka::config::KafkaSinkConfig;
use sluice_kafka::sink::KafkaSink;
use sluice_testkit::compliance::{self, run_all, Kind, SinkHarness};
use sluice_testkit::{KafkaBroker, KafkaKind};

struct Harness {
    broker: KafkaBroker,
    cfg: KafkaSinkConfig,
}

/// Every record of `topic`, read committed, as JSON objects.
pub fn read_topic(bootstrap: &str, topic: &str) -> Vec<serde_json::Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/read_topic.py");
    let out = Command::new("python3").args([script, bootstrap, topic]).output().expect("run python3");
    assert!(out.status.success(), "read {topic}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[async_trait]
impl SinkHarness for Harness {
    fn sink(&self) -> Box<dyn Sink> {
        Box::new(KafkaSink::new(self.cfg.clone(), "compliance", 0))
    }

    fn kind(&self) -> Kind {
        Kind::Log
    }

    async fn rows(&self, table: &TableId) -> Vec<Vec<Option<String>>> {
        let topic = format!("compliance.{}.{}", table.schema, table.name);
        read_topic(&self.broker.bootstrap(), &topic)
            .into_iter()
            .filter(|r| !r["value"].is_null())
            .map(|r| {
                let v = &r["value"];
                let row = if v["after"].is_null() { &v["before"] } else { &v["after"] };
                vec![v["op"].as_str().map(str::to_string), row["id"].as_i64().map(|i| i.to_string())]
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_exactly_once_sink_passes_the_compliance_suite() {
    let broker = KafkaBroker::start().unwrap_or_else(|e| panic!("cannot start a Kafka broker: {e}"));
    let cfg = KafkaSinkConfig::parse(
        toml::from_str(&format!("brokers = \"{}\"\nformat = \"debezium-json\"", broker.bootstrap())).unwrap(),
        &ParseContext { at: "sink[0]", pipeline: "compliance" },
    )
    .unwrap();
    let h = Harness { broker, cfg };
    if h.broker.kind() != KafkaKind::Tansu {
        run_all(&h).await;
        return;
    }
    // tansu 0.6.0 makes a transaction visible when a new producer with its transactional.id
    // fences it, where Kafka aborts it (docs/progress/issue-10.md), so the crash check cannot
    // pass on it; it runs on noida-db (scripts/test's second pass). The bug is asserted here so
    // that a tansu that fixes it fails this test and gets the whole suite back.
    let seen = fenced_transaction(&h.broker.bootstrap());
    assert_eq!(seen, (0, 5), "tansu no longer commits fenced transactions: run the whole suite on it");
    eprintln!("tansu: the crash check is left out (fenced transactions become visible); it runs on noida-db");
    compliance::empty_batch_commits_and_its_checkpoint_reads_back(&h).await;
    compliance::acknowledgement_comes_only_after_the_data_is_durable(&h).await;
    compliance::close_drains_background_commits(&h).await;
    compliance::schema_change_in_the_middle_of_a_batch(&h).await;
}

/// How many records of a fenced open transaction a read_committed reader sees: while it is
/// open, and after a new producer with its transactional.id initialised.
fn fenced_transaction(bootstrap: &str) -> (u64, u64) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/fenced_txn.py");
    let out = Command::new("python3").args([script, bootstrap, "fencing-check"]).output().expect("run python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (v["while_open"].as_u64().unwrap(), v["after_fencing"].as_u64().unwrap())
}

/// The broker aborts a fenced transaction (Kafka's rule; noida-db follows it): what the
/// exactly-once sink relies on after a crash.
#[test]
fn a_fenced_transaction_is_aborted_by_noida() {
    let broker = KafkaBroker::start_kind(KafkaKind::Noida).unwrap_or_else(|e| panic!("cannot start noida-db: {e}"));
    assert_eq!(fenced_transaction(&broker.bootstrap()), (0, 0));
}
