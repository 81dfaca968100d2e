//! The test kit's Kafka brokers, each implementation, used by a third-party client
//! (confluent-kafka): topics, a committed and an aborted transaction, read_committed reads.

use std::process::Command;

use sluice_testkit::{KafkaBroker, KafkaKind};

fn check(kind: KafkaKind) {
    let broker = KafkaBroker::start_kind(kind).unwrap_or_else(|e| panic!("cannot start {}: {e}", kind.name()));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/broker_check.py");
    let out = Command::new("python3").args([script, &broker.bootstrap(), "kit-check"]).output().expect("run python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "confluent-kafka against {}:\n{stderr}\nbroker log:\n{}",
        kind.name(),
        broker.log_tail(20)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#"{"committed": 50}"#);
}

#[test]
fn tansu_serves_transactions_to_confluent_kafka() {
    check(KafkaKind::Tansu);
}

#[test]
fn noida_serves_transactions_to_confluent_kafka() {
    check(KafkaKind::Noida);
}
