//! Kafka fixtures: topics read back by confluent-kafka, and Sluice's registry in-process.

use std::process::Command;

/// Every record of `topic`, read committed by confluent-kafka.
pub fn read_topic(bootstrap: &str, topic: &str) -> Vec<serde_json::Value> {
    read_topic_with(bootstrap, topic, None)
}

/// Every record of `topic`, read committed by confluent-kafka; Avro through `registry` if given.
pub fn read_topic_with(bootstrap: &str, topic: &str, registry: Option<&str>) -> Vec<serde_json::Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../sluice-kafka/tests/python/read_topic.py");
    let out = Command::new("python3").args([script, bootstrap, topic]).args(registry).output().expect("run python3");
    assert!(out.status.success(), "read {topic}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Starts Sluice's registry on a free port, keeping its state in `dir`; returns its URL.
pub async fn registry(dir: &std::path::Path) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let dir = dir.to_path_buf();
    tokio::spawn(async move { sluice_registry::serve(listener, &dir, std::future::pending()).await });
    url
}
