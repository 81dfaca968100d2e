//! Kafka as a source: PostgreSQL → Kafka (each format) → Kafka source → PostgreSQL replica,
//! equal to the source; and records written by confluent-kafka's own serializers.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{converge_with, start, Env};
use sluice_testkit::{wait_for, KafkaBroker};

const SETUP: &str = "
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2), day date, at timestamptz, flag boolean);
INSERT INTO items VALUES (1, 'one', 1.50, '2024-02-29', '2024-02-29 12:00:00.123456+00', true),
                         (2, 'two', NULL, NULL, NULL, NULL), (3, 'three', -3.25, '1999-12-31', now(), false);
";

const CHANGES: &str = "
INSERT INTO items VALUES (4, 'four', 4.00, '2000-01-01', '2000-01-01 00:00:00+00', true);
UPDATE items SET name = 'uno', price = 11.11 WHERE id = 1;
DELETE FROM items WHERE id = 2;
UPDATE items SET id = 30 WHERE id = 3;
UPDATE items SET day = NULL, flag = NULL WHERE id = 4;
";

/// Starts Sluice's registry on a free port; returns its URL.
async fn registry(dir: &std::path::Path) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let dir = dir.to_path_buf();
    tokio::spawn(async move { sluice_registry::serve(listener, &dir, std::future::pending()).await });
    url
}

/// Each format, through a broker, into a replica equal to the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_format_round_trips_into_an_exact_replica() {
    let broker = KafkaBroker::start().unwrap_or_else(|e| panic!("cannot start a Kafka broker: {e}"));
    let data = tempfile::tempdir().unwrap();
    let registry = registry(data.path()).await;
    let env = Env::new(SETUP).await;
    let formats = [
        ("debezium-json", "schemas = true"),
        ("json", "schemas = true"),
        ("canal-json", ""),
        ("avro", &*format!("schema_registry = \"{registry}\"")),
    ];
    let mut replicas = Vec::new();
    let mut running = Vec::new();
    // SLUICE_KAFKA_FORMATS=avro,json runs only those (to chase one).
    let only = std::env::var("SLUICE_KAFKA_FORMATS").ok();
    for (i, (format, extra)) in formats.iter().enumerate() {
        if only.as_ref().is_some_and(|o| !o.split(',').any(|f| f == *format)) {
            continue;
        }
        let name = format!("rt{i}");
        let topic = format!("{name}.public.items");
        let to_kafka = format!(
            "name = \"{name}\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\n[[sink]]\ntype = \"kafka\"\n\
             brokers = \"{}\"\nformat = \"{format}\"\n{extra}\n",
            env.src_url,
            broker.bootstrap()
        );
        let (replica_url, replica) = sluice_testkit::database(&env.target, &format!("replica{i}")).await;
        let from_kafka = format!(
            "name = \"{name}_replica\"\n[source]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopics = [\"{topic}\"]\n\
             format = \"{format}\"\n{}\n\n[[sink]]\ntype = \"postgres\"\nurl = \"{replica_url}\"\n",
            broker.bootstrap(),
            if *format == "avro" { extra.to_string() } else { String::new() }
        );
        running.push(start(sluice::parse(&to_kafka, &|_| None).expect("valid producer config")));
        running.push(start(sluice::parse(&from_kafka, &|_| None).expect("valid consumer config")));
        replicas.push((format, replica));
    }
    for (format, replica) in &replicas {
        eprintln!("{format}: snapshot");
        converge_with(&env.src, replica, "items", "id").await;
    }
    env.src.batch_execute(CHANGES).await.unwrap();
    for (format, replica) in &replicas {
        eprintln!("{format}: changes");
        converge_with(&env.src, replica, "items", "id").await;
    }
    // The replicas' checkpoints hold Kafka offsets, per topic and partition.
    for (format, replica) in &replicas {
        let position: String = replica
            .query_one("SELECT position::text FROM sluice.checkpoints", &[])
            .await
            .unwrap_or_else(|e| panic!("{format}: {e}"))
            .get(0);
        assert!(position.contains("\"kafka\"") && position.contains(".public.items"), "{format}: {position}");
    }
    for r in running {
        r.stop().await;
    }
}

/// Avro written by confluent-kafka's `AvroSerializer` (through Sluice's registry) and plain JSON
/// written by confluent-kafka decode into typed rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_confluent_serializers_become_rows() {
    let broker = KafkaBroker::start().unwrap_or_else(|e| panic!("cannot start a Kafka broker: {e}"));
    let data = tempfile::tempdir().unwrap();
    let registry = registry(data.path()).await;
    let env = Env::new("SELECT 1").await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/produce_confluent.py");
    let out = Command::new("python3")
        .args([script, &broker.bootstrap(), &registry, "conf.shop.orders", "conf.shop.events"])
        .output()
        .expect("run python3");
    assert!(out.status.success(), "produce: {}", String::from_utf8_lossy(&out.stderr));
    for (format, topic, extra) in [
        ("avro", "conf.shop.orders", format!("schema_registry = \"{registry}\"")),
        ("json", "conf.shop.events", String::new()),
    ] {
        let (replica_url, replica) = sluice_testkit::database(&env.target, &format!("conf_{format}")).await;
        let toml = format!(
            "name = \"conf_{format}\"\n[source]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopics = [\"{topic}\"]\n\
             format = \"{format}\"\n{extra}\n\n[[sink]]\ntype = \"postgres\"\nurl = \"{replica_url}\"\n",
            broker.bootstrap()
        );
        let p = start(sluice::parse(&toml, &|_| None).expect("valid config"));
        let table = topic.rsplit('.').next().unwrap();
        let q = format!("SELECT row_::text FROM shop.{table} row_ ORDER BY 1");
        let rows = wait_for(&format!("{topic} in the replica"), Duration::from_secs(60), || {
            let replica = &replica;
            let q = q.clone();
            async move {
                let rows = replica.query(&q, &[]).await.ok()?;
                let rows: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
                (rows.len() == 2).then_some(rows)
            }
        })
        .await;
        p.stop().await;
        match format {
            // id 1 updated after its insert, id 2 inserted, id 3 deleted (key without value)
            "avro" => assert_eq!(
                rows,
                ["(1,widget,12.50,2024-02-29,\"2024-02-29 12:00:00.123456+00\",t)", "(2,gadget,,,,f)"],
                "typed by the writer schema's logical types"
            ),
            // `meta` holds JSON as the record wrote it
            _ => assert_eq!(rows, ["(1,click,3,\"{\"\"x\"\":1}\")", "(2,view,,)"]),
        }
    }
}
