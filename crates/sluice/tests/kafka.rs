//! PostgreSQL → Kafka (`type = "kafka"`, debezium-json, exactly once) on the test kit's broker
//! (SLUICE_KAFKA_BROKER); the topic is read by confluent-kafka with read_committed.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{start, Env, CONVERGE};
use sluice_testkit::{wait_for, KafkaBroker};

fn read_topic(bootstrap: &str, topic: &str) -> Vec<serde_json::Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../sluice-kafka/tests/python/read_topic.py");
    let out = Command::new("python3").args([script, bootstrap, topic]).output().expect("run python3");
    assert!(out.status.success(), "read {topic}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// `op:id` per record (`~:id` for a tombstone), in offset order per partition.
fn ops(records: &[serde_json::Value]) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            let v = &r["value"];
            if v.is_null() {
                return format!("~:{}", r["key"]["id"]);
            }
            let row = if v["after"].is_null() { &v["before"] } else { &v["after"] };
            format!("{}:{}", v["op"].as_str().unwrap_or("?"), row["id"])
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_changes_reach_kafka_once_in_order() {
    let broker = KafkaBroker::start().unwrap_or_else(|e| panic!("cannot start a Kafka broker: {e}"));
    let env = Env::new(
        "CREATE TABLE orders (id int PRIMARY KEY, item text NOT NULL, amount numeric(10,2), at timestamptz);
         INSERT INTO orders VALUES (1, 'one', 1.50, '2024-02-29 12:00:00+00'), (2, 'two', 2.00, NULL), (3, 'three', NULL, NULL);",
    )
    .await;
    let toml = format!(
        "name = \"kafkae2e\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\n[[sink]]\ntype = \"kafka\"\nbrokers = \"{}\"\n\
         format = \"debezium-json\"\ntopic_partitions = 1\n",
        env.src_url,
        broker.bootstrap()
    );
    let cfg = sluice::parse(&toml, &|_| None).expect("valid config");
    let topic = "kafkae2e.public.orders";
    let pipeline = start(cfg.clone());
    let got = wait_for("the snapshot in the topic", CONVERGE, || async {
        let r = read_topic(&broker.bootstrap(), topic);
        (r.len() >= 3).then_some(r)
    })
    .await;
    assert_eq!(ops(&got), ["r:1", "r:2", "r:3"]);
    let first = &got[0]["value"];
    assert_eq!(first["after"]["amount"], "1.50");
    assert_eq!(first["after"]["at"], "2024-02-29T12:00:00Z");
    assert_eq!(first["source"]["table"], "orders");
    assert_eq!(got[0]["key"], serde_json::json!({"id": 1}));

    env.src
        .batch_execute(
            "INSERT INTO orders VALUES (4, 'four', 4.25, now());
             UPDATE orders SET item = 'uno' WHERE id = 1;
             DELETE FROM orders WHERE id = 2;
             UPDATE orders SET id = 30 WHERE id = 3;",
        )
        .await
        .unwrap();
    let want = ["r:1", "r:2", "r:3", "c:4", "u:1", "d:2", "~:2", "d:3", "~:3", "c:30"];
    let got = wait_for("the changes in the topic", CONVERGE, || async {
        let r = read_topic(&broker.bootstrap(), topic);
        (r.len() >= want.len()).then_some(r)
    })
    .await;
    assert_eq!(ops(&got), want);
    let update = &got[4]["value"];
    assert_eq!(update["after"]["item"], "uno");
    assert!(update["source"]["txId"].as_u64().is_some() && update["source"]["position"].is_string(), "{update}");
    pipeline.stop().await;

    // A restart resumes from the checkpoint in the offsets topic: nothing is sent twice.
    let offsets = read_topic(&broker.bootstrap(), "_sluice_offsets");
    assert!(offsets.iter().any(|r| r["key"] == "kafkae2e/0" && r["value"]["position"].is_object()), "{offsets:?}");
    let pipeline = start(cfg);
    env.src.batch_execute("INSERT INTO orders VALUES (5, 'five', NULL, NULL)").await.unwrap();
    let mut want = want.to_vec();
    want.push("c:5");
    let got = wait_for("the change after the restart", CONVERGE, || async {
        let r = read_topic(&broker.bootstrap(), topic);
        (r.len() >= want.len()).then_some(r)
    })
    .await;
    assert_eq!(ops(&got), want, "each change once after the restart");
    tokio::time::sleep(Duration::from_millis(0)).await;
    pipeline.stop().await;
}
