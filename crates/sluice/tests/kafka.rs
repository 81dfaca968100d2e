//! PostgreSQL → Kafka (`type = "kafka"`, debezium-json, exactly once) on the test kit's broker
//! (SLUICE_KAFKA_BROKER); the topic is read by confluent-kafka with read_committed.

mod common;

use std::process::Command;
use std::time::Duration;

use common::kafka::{read_topic, read_topic_with};
use common::{start, Env, CONVERGE};
use sluice_testkit::{wait_for, KafkaBroker};

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
    pipeline.stop().await;
}

/// `sluice run` (PostgreSQL → Kafka, exactly once) killed with SIGKILL at random moments under
/// writes: a read_committed consumer sees every change exactly once, each row's in order. On
/// noida-db: tansu 0.6.0 commits a fenced transaction instead of aborting it (see
/// `crates/sluice-kafka/tests/compliance.rs`), which no producer can make up for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_leaves_every_change_once() {
    use sluice_playground::scenario::Rng;
    use sluice_testkit::KafkaKind;
    let seed = common::crash_seed();
    let broker = KafkaBroker::start_kind(KafkaKind::Noida).unwrap_or_else(|e| panic!("cannot start noida-db: {e}"));
    let env = Env::new("CREATE TABLE events (id int PRIMARY KEY, n int NOT NULL)").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"kafkacrash\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\n[[sink]]\ntype = \"kafka\"\n\
             brokers = \"{}\"\nformat = \"json\"\ntopic_partitions = 3\nbatch = {{ max_rows = 40, max_delay_ms = 20 }}\n",
            env.src_url,
            broker.bootstrap()
        ),
    )
    .unwrap();
    let log = dir.path().join("sluice.log");
    let config = config.display().to_string();

    // The table is empty: once the first commit is in, every row arrives as a change.
    let mut sluice = common::process::spawn(&config, &log);
    wait_for("the pipeline's first commit", CONVERGE, || async {
        let offsets = read_topic(&broker.bootstrap(), "_sluice_offsets");
        offsets.iter().any(|r| r["key"] == "kafkacrash/0").then_some(())
    })
    .await;
    // Writes: inserts of new ids and updates of earlier ones, in transactions of 1 to 5.
    let writer_url = env.src_url.clone();
    let writer = tokio::spawn(async move {
        let client = common::connect(&writer_url).await;
        let mut rng = Rng::new(seed ^ 0x5eed);
        let (mut next, mut updates) = (1i64, 0u64);
        while next <= 1500 {
            let mut sql = String::from("BEGIN;");
            for _ in 0..rng.range(1, 5) {
                if next > 10 && rng.range(0, 3) == 0 {
                    sql.push_str(&format!(
                        "UPDATE events SET n = n + 1 WHERE id = {};",
                        rng.range(1, (next - 1) as i32)
                    ));
                    updates += 1;
                } else {
                    sql.push_str(&format!("INSERT INTO events VALUES ({next}, 0);"));
                    next += 1;
                }
            }
            sql.push_str("COMMIT;");
            client.batch_execute(&sql).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (next - 1, updates)
    });
    let mut rng = Rng::new(seed);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(rng.range(300, 2000) as u64)).await;
        sluice.child.kill().expect("SIGKILL");
        sluice.child.wait().unwrap();
        sluice = common::process::spawn(&config, &log);
    }
    let (inserted, updates) = writer.await.unwrap();
    let topic = "kafkacrash.public.events";
    let want = inserted as u64 + updates;
    let deadline = std::time::Instant::now() + CONVERGE;
    let records = loop {
        let r = read_topic(&broker.bootstrap(), topic);
        let n = r.iter().filter(|r| !r["value"].is_null()).count() as u64;
        if n >= want {
            break r;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "{n} of {want} changes in the topic after {CONVERGE:?} (seed {seed}); sluice's log:\n{}",
                common::process::log_tail(&log)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    sluice.stop(&log).await;
    // Exactly the changes made: one `c` per id, `u`s adding up to the updates, and per id the
    // values in order (n counts up from 0 on its partition).
    let mut last: std::collections::HashMap<i64, i64> = Default::default();
    let (mut creates, mut ups) = (0u64, 0u64);
    for r in records.iter().filter(|r| !r["value"].is_null()) {
        let v = &r["value"];
        let (id, n) = (v["id"].as_i64().unwrap(), v["n"].as_i64().unwrap());
        match v["_op"].as_str() {
            Some("c") => {
                creates += 1;
                assert!(last.insert(id, n).is_none(), "id {id} created twice (seed {seed})");
            }
            Some("u") => {
                ups += 1;
                let before = last.insert(id, n).unwrap_or_else(|| panic!("id {id} updated before it was created"));
                assert_eq!(n, before + 1, "id {id}: an update lost or doubled (seed {seed})");
            }
            other => panic!("unexpected op {other:?} in {r}"),
        }
    }
    assert_eq!((creates, ups), (inserted as u64, updates), "every change exactly once (seed {seed})");
    let final_n: i64 = env.src.query_one("SELECT sum(n)::int8 FROM events", &[]).await.unwrap().get(0);
    assert_eq!(last.values().sum::<i64>(), final_n);
}

/// The canal-json format as TiCDC writes it, read by confluent-kafka: one message per change
/// with the row's values as strings, `old` holding what an update changed (PostgreSQL sends old
/// rows with REPLICA IDENTITY FULL; without it `old` is null).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canal_json_messages_carry_rows_as_text() {
    let broker = KafkaBroker::start().unwrap_or_else(|e| panic!("cannot start a Kafka broker: {e}"));
    let env = Env::new(
        "CREATE TABLE t (id int PRIMARY KEY, v text, b bytea); ALTER TABLE t REPLICA IDENTITY FULL;
         INSERT INTO t VALUES (1, 'a', '\\x00ff')",
    )
    .await;
    let toml = format!(
        "name = \"kcanal\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\n[[sink]]\ntype = \"kafka\"\nbrokers = \"{}\"\n\
         format = \"canal-json\"\ntombstones = false\n",
        env.src_url,
        broker.bootstrap()
    );
    let pipeline = start(sluice::parse(&toml, &|_| None).expect("valid config"));
    let topic = "kcanal.public.t";
    wait_for("the snapshot row", CONVERGE, || async {
        (!read_topic(&broker.bootstrap(), topic).is_empty()).then_some(())
    })
    .await;
    env.src.batch_execute("UPDATE t SET v = 'b' WHERE id = 1; DELETE FROM t WHERE id = 1").await.unwrap();
    let got = wait_for("three messages", CONVERGE, || async {
        let r = read_topic(&broker.bootstrap(), topic);
        (r.len() >= 3).then_some(r)
    })
    .await;
    pipeline.stop().await;
    let kinds: Vec<&str> = got.iter().map(|r| r["value"]["type"].as_str().unwrap_or("?")).collect();
    assert_eq!(kinds, ["INSERT", "UPDATE", "DELETE"]);
    assert_eq!(got[0]["value"]["data"], serde_json::json!([{"id": "1", "v": "a", "b": "\u{0}\u{ff}"}]));
    assert_eq!(got[1]["value"]["old"], serde_json::json!([{"v": "a"}]));
    assert_eq!(got[2]["value"]["data"][0]["v"], "b");
    assert_eq!(got[0]["value"]["pkNames"], serde_json::json!(["id"]));
    assert_eq!(got.len(), 3, "no tombstone with tombstones = false");
}

/// PostgreSQL → Kafka in Avro with Sluice's registry, read back by confluent-kafka's
/// `AvroDeserializer`: logical types, deletes as key + no value, and a column added mid-stream
/// registered as a second, BACKWARD-compatible version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_records_decode_with_confluent_deserializers() {
    let broker = KafkaBroker::start().unwrap_or_else(|e| panic!("cannot start a Kafka broker: {e}"));
    let data = tempfile::tempdir().unwrap();
    let registry = common::kafka::registry(data.path()).await;
    let env = Env::new(
        "CREATE TABLE orders (id int PRIMARY KEY, item text NOT NULL, amount numeric(10,2), day date, at timestamptz);
         INSERT INTO orders VALUES (1, 'one', 1.50, '2024-02-29', '2024-02-29 12:00:00.123456+00');",
    )
    .await;
    let toml = format!(
        "name = \"kavro\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\n[[sink]]\ntype = \"kafka\"\nbrokers = \"{}\"\n\
         format = \"avro\"\nschema_registry = \"{registry}\"\n",
        env.src_url,
        broker.bootstrap()
    );
    let pipeline = start(sluice::parse(&toml, &|_| None).expect("valid config"));
    let topic = "kavro.public.orders";
    let read = || read_topic_with(&broker.bootstrap(), topic, Some(&registry));
    wait_for("the snapshot row", CONVERGE, || async { (!read().is_empty()).then_some(()) }).await;
    env.src
        .batch_execute(
            "UPDATE orders SET amount = -2.25 WHERE id = 1;
             ALTER TABLE orders ADD COLUMN note text;
             INSERT INTO orders VALUES (2, 'two', NULL, NULL, NULL, 'added');
             DELETE FROM orders WHERE id = 1;",
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + CONVERGE;
    let got = loop {
        let r = read();
        if r.len() >= 4 {
            break r;
        }
        if std::time::Instant::now() > deadline {
            panic!("{} records after {CONVERGE:?}: {r:#?}\npipeline finished: {}", r.len(), pipeline.is_finished());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    pipeline.stop().await;
    let snap = &got[0];
    assert_eq!(snap["key"], serde_json::json!({"id": 1}));
    let v = &snap["value"];
    assert_eq!((v["__op"].as_str(), v["item"].as_str(), v["amount"].as_str()), (Some("r"), Some("one"), Some("1.50")));
    assert_eq!((v["day"].as_str(), v["at"].as_str()), (Some("2024-02-29"), Some("2024-02-29 12:00:00.123456+00:00")));
    assert_eq!(got[1]["value"]["amount"], "-2.25");
    assert_eq!(got[1]["value"]["__op"], "u");
    assert!(got[1]["value"]["__source_ts_ms"].as_i64().is_some());
    assert_eq!(got[2]["value"]["note"], "added", "the added column, in the second version");
    assert_eq!(got[3]["key"], serde_json::json!({"id": 1}));
    assert!(got[3]["value"].is_null(), "a delete is the key without a value");
    // The registry holds both versions of the value schema.
    let versions: Vec<u32> = {
        let script = "import sys\nfrom confluent_kafka.schema_registry import SchemaRegistryClient\n\
                      print(SchemaRegistryClient({'url': sys.argv[1]}).get_versions(sys.argv[2]))";
        let out =
            Command::new("python3").args(["-c", script, &registry, "kavro.public.orders-value"]).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    assert_eq!(versions, [1, 2]);
}

/// A change the Avro format cannot carry (a numeric NaN in a decimal column) goes to the sink's
/// dead-letter topic as Debezium JSON with the error in its headers, once; the changes around
/// it go on to their topic. Without a dead-letter topic the pipeline stops naming the table,
/// the column and the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_the_format_cannot_carry_goes_to_the_dead_letter_topic() {
    let broker = KafkaBroker::start().unwrap_or_else(|e| panic!("cannot start a Kafka broker: {e}"));
    let data = tempfile::tempdir().unwrap();
    let registry = common::kafka::registry(data.path()).await;
    let env = Env::new(
        "CREATE TABLE prices (id int PRIMARY KEY, amount numeric(10,2)); INSERT INTO prices VALUES (1, 1.50);",
    )
    .await;
    let toml = |name: &str, extra: &str| {
        format!(
            "name = \"{name}\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\n[[sink]]\ntype = \"kafka\"\nbrokers = \"{}\"\n\
             format = \"avro\"\nschema_registry = \"{registry}\"\n{extra}\n",
            env.src_url,
            broker.bootstrap()
        )
    };
    let parked = start(sluice::parse(&toml("kdlq", "dead_letter_topic = \"kdlq.errors\""), &|_| None).unwrap());
    let read = |topic: &str| read_topic_with(&broker.bootstrap(), topic, Some(&registry));
    wait_for("the snapshot row", CONVERGE, || async { (!read("kdlq.public.prices").is_empty()).then_some(()) }).await;
    env.src.batch_execute("INSERT INTO prices VALUES (2, 'NaN'); INSERT INTO prices VALUES (3, 2.00);").await.unwrap();
    let rows = wait_for("id 3 in the topic", CONVERGE, || async {
        let r = read("kdlq.public.prices");
        (r.len() >= 2).then_some(r)
    })
    .await;
    let ids: Vec<i64> = rows.iter().map(|r| r["key"]["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [1, 3], "the NaN row is not in the data topic");
    let parked_rows = read_topic(&broker.bootstrap(), "kdlq.errors");
    assert_eq!(parked_rows.len(), 1, "{parked_rows:#?}");
    let r = &parked_rows[0];
    assert_eq!((r["value"]["op"].as_str(), r["value"]["after"]["id"].as_i64()), (Some("c"), Some(2)));
    assert_eq!(r["value"]["after"]["amount"], "NaN");
    assert_eq!(r["headers"]["__connect.errors.topic"], "kdlq.public.prices");
    let msg = r["headers"]["__connect.errors.exception.message"].as_str().unwrap_or_default();
    assert!(msg.contains("public.prices") && msg.contains("amount"), "{msg}");
    parked.stop().await;

    // Without a dead-letter topic: the pipeline stops, saying what and how to fix it.
    let stopped = start(sluice::parse(&toml("knodlq", ""), &|_| None).unwrap());
    let ended = tokio::time::timeout(CONVERGE, stopped.handle).await.expect("the pipeline stops by itself");
    let e = sluice::chain(&ended.expect("no panic").expect_err("a change it cannot carry stops it"));
    assert!(e.contains("public.prices") && e.contains("amount") && e.contains("dead_letter_topic"), "{e}");
}

/// TiCDC's example dispatch rule: every table to `tidb_{schema}_{table}`, partitioned by the
/// key's hash (`index-value`), so all changes of one row land in one partition, in order; read
/// back by confluent-kafka.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticdc_dispatch_rule_sends_each_table_to_its_topic_and_each_key_to_one_partition() {
    let broker = KafkaBroker::start().unwrap_or_else(|e| panic!("cannot start a Kafka broker: {e}"));
    let env = Env::new(
        "CREATE TABLE orders (id int PRIMARY KEY, v int NOT NULL);
         CREATE TABLE users (name text PRIMARY KEY, v int NOT NULL);",
    )
    .await;
    let toml = format!(
        "name = \"kdisp\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\n[[sink]]\ntype = \"kafka\"\nbrokers = \"{}\"\n\
         format = \"json\"\ntopic_partitions = 4\n\
         dispatchers = [{{ matcher = [\"*.*\"], topic = \"tidb_{{schema}}_{{table}}\", partition = \"index-value\" }}]\n",
        env.src_url,
        broker.bootstrap()
    );
    let pipeline = start(sluice::parse(&toml, &|_| None).expect("valid config"));
    // Both (empty) tables copied: the checkpoint in the offsets topic says so.
    wait_for("the copy of both tables", CONVERGE, || async {
        read_topic(&broker.bootstrap(), "_sluice_offsets")
            .iter()
            .filter(|r| r["key"] == "kdisp/0")
            .any(|r| {
                let tables = r["value"]["tables"].as_array().cloned().unwrap_or_default();
                tables.iter().filter(|t| t["state"] == "copied").count() == 2
            })
            .then_some(())
    })
    .await;
    // Ten keys per table, each written five times (v = 1..5), interleaved.
    for v in 1..=5 {
        let mut sql = String::new();
        for k in 0..10 {
            sql.push_str(&format!(
                "INSERT INTO orders VALUES ({k}, {v}) ON CONFLICT (id) DO UPDATE SET v = {v};
                 INSERT INTO users VALUES ('user{k}', {v}) ON CONFLICT (name) DO UPDATE SET v = {v};"
            ));
        }
        env.src.batch_execute(&sql).await.unwrap();
    }
    for (topic, key) in [("tidb_public_orders", "id"), ("tidb_public_users", "name")] {
        let got = wait_for(&format!("50 records in {topic}"), CONVERGE, || async {
            let r = read_topic(&broker.bootstrap(), topic);
            (r.len() >= 50).then_some(r)
        })
        .await;
        assert_eq!(got.len(), 50, "{topic}");
        let mut per_key: std::collections::BTreeMap<String, (i64, Vec<i64>)> = Default::default();
        let mut partitions = std::collections::BTreeSet::new();
        for r in &got {
            let k = r["key"][key].to_string();
            let p = r["partition"].as_i64().unwrap();
            partitions.insert(p);
            let e = per_key.entry(k.clone()).or_insert((p, Vec::new()));
            assert_eq!(e.0, p, "{topic}: key {k} in partitions {} and {p}", e.0);
            e.1.push(r["value"]["v"].as_i64().unwrap());
        }
        assert_eq!(per_key.len(), 10, "{topic}");
        for (k, (_, vs)) in &per_key {
            assert_eq!(vs, &[1, 2, 3, 4, 5], "{topic}: key {k}'s changes in order");
        }
        assert!(partitions.len() > 1, "{topic}: ten keys spread over the 4 partitions, got {partitions:?}");
    }
    pipeline.stop().await;
}
