//! librdkafka as Sluice configures it, against the test kit's broker (SLUICE_KAFKA_BROKER):
//! an idempotent producer's records are read back by a third-party client (confluent-kafka).

use std::process::Command;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice_kafka::client::producer_config;
use sluice_testkit::KafkaBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_reaches_the_broker() {
    let broker = KafkaBroker::start().unwrap_or_else(|e| panic!("cannot start a Kafka broker: {e}"));
    let mut admin_cfg = rdkafka::ClientConfig::new();
    admin_cfg.set("bootstrap.servers", broker.bootstrap());
    let admin: AdminClient<DefaultClientContext> = admin_cfg.create().expect("admin client");
    let topic = NewTopic::new("client-check", 1, TopicReplication::Fixed(1));
    let created = admin.create_topics([&topic], &AdminOptions::new()).await.expect("create topics");
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");

    let producer: FutureProducer = producer_config(&broker.bootstrap()).create().expect("producer");
    for i in 0..20 {
        let value = format!("v{i}");
        let key = format!("k{}", i % 3);
        producer
            .send(FutureRecord::to("client-check").key(&key).payload(&value), Duration::from_secs(10))
            .await
            .unwrap_or_else(|(e, _)| panic!("send {i}: {e}\nbroker log:\n{}", broker.log_tail(20)));
    }
    let read = "import sys, time\n\
        from confluent_kafka import Consumer, TopicPartition\n\
        c = Consumer({'bootstrap.servers': sys.argv[1], 'group.id': 'check', 'enable.auto.commit': False})\n\
        c.assign([TopicPartition('client-check', 0, 0)])\n\
        got, end = [], time.time() + 20\n\
        while len(got) < 20 and time.time() < end:\n\
        \x20   m = c.poll(0.5)\n\
        \x20   if m is not None and m.error() is None: got.append(m.key().decode() + '=' + m.value().decode())\n\
        print(','.join(got))\n";
    let out = Command::new("python3").args(["-c", read, &broker.bootstrap()]).output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want: Vec<String> = (0..20).map(|i| format!("k{}=v{i}", i % 3)).collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want.join(","), "every record once, in order");
}
