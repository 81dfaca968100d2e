//! `sluice registry`, checked with Confluent's own Python client (confluent-kafka's
//! `SchemaRegistryClient`, `AvroSerializer` and `AvroDeserializer`): registering, evolving under
//! BACKWARD, compatibility per subject, errors by Confluent's codes, deletes; then a restart that
//! keeps everything.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sluice_testkit::{free_port, wait_for};

struct Registry {
    child: Child,
    url: String,
}

impl Registry {
    async fn start(data: &Path, log: &Path) -> Registry {
        let port = free_port();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["registry", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(data)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sluice registry");
        wait_for("the registry to listen", Duration::from_secs(30), || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
        })
        .await;
        Registry { child, url: format!("http://127.0.0.1:{port}") }
    }

    /// SIGTERM, then a clean exit.
    fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the registry exited with {status}");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the confluent-kafka check script; returns its JSON output.
fn confluent_check(url: &str, phase: &str) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/registry_check.py");
    let out = Command::new("python3").args([script, url, phase]).output().expect("run python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'confluent_kafka'"),
        "the Python package confluent-kafka is missing: run scripts/setup.sh"
    );
    assert!(out.status.success(), "confluent-kafka check `{phase}` failed:\n{stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("check output: {e}: {:?}", out.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_clients_use_the_registry_and_it_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("registry");
    let log = dir.path().join("registry.log");
    let registry = Registry::start(&data, &log).await;
    let first = confluent_check(&registry.url, "first");
    assert_eq!(first["ids"], serde_json::json!([1, 2, 3]), "three schemas, ids from 1");
    registry.stop();
    assert!(data.join("registry.json").exists(), "the state is on disk");

    let registry = Registry::start(&data, &log).await;
    let again = confluent_check(&registry.url, "again");
    assert_eq!(again["ids"], first["ids"], "the same ids after the restart");
    registry.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_state_file_is_named_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("registry.json"), b"{ not json").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["registry", "--listen", &format!("127.0.0.1:{}", free_port()), "--data"])
        .arg(dir.path())
        .output()
        .expect("run sluice registry");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("registry.json") && stderr.contains("move it away"), "{stderr}");
    assert_eq!(std::fs::read(dir.path().join("registry.json")).unwrap(), b"{ not json", "the file is untouched");
}
