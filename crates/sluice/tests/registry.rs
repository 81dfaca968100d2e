//! `sluice registry`, checked with Confluent's own Python client (confluent-kafka's
//! `SchemaRegistryClient`, `AvroSerializer` and `AvroDeserializer`): registering, evolving under
//! BACKWARD, compatibility per subject, errors by Confluent's codes, deletes; then a restart that
//! keeps everything.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use sluice_testkit::{free_port, wait_ready};

struct Registry {
    child: Child,
    url: String,
}

impl Registry {
    async fn start(data: &Path, log: &Path) -> Registry {
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
            let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(["registry", "--listen", &format!("127.0.0.1:{port}"), "--data"])
                .arg(data)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn sluice registry");
            // Only this child's listener counts (another test may have taken the port meanwhile).
            match tokio::task::block_in_place(|| wait_ready(&mut child, port)) {
                Ok(()) => return Registry { child, url: format!("http://127.0.0.1:{port}") },
                Err(e) => {
                    last = e;
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        panic!("the registry did not start: {last}");
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

/// Rows Sluice encodes in Avro, framed with the id its registry gave the schema, decode with
/// confluent-kafka's `AvroDeserializer` (fastavro) to the same values, every logical type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_deserializers_read_sluice_avro() {
    use sluice_core::{
        ColumnSchema, DataType, Date, Decimal, TableId, TableSchema, Text, Time, Timestamp, Uuid, Value,
    };
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(&dir.path().join("registry"), &dir.path().join("registry.log")).await;
    let col = |name: &str, t: DataType, ps: Option<(u32, u32)>| ColumnSchema {
        name: name.into(),
        data_type: t,
        nullable: name != "id",
        key: name == "id",
        precision: ps.map(|p| p.0),
        scale: ps.map(|p| p.1),
        length: None,
        native_type: String::new(),
        missing_value: None,
    };
    let table = TableSchema {
        id: TableId::new("app", "typed"),
        columns: vec![
            col("id", DataType::Int64, None),
            col("flag", DataType::Bool, None),
            col("big", DataType::UInt64, None),
            col("f", DataType::Float32, None),
            col("d", DataType::Float64, None),
            col("amount", DataType::Decimal, Some((12, 2))),
            col("loose", DataType::Decimal, None),
            col("name", DataType::Text, None),
            col("raw", DataType::Bytes, None),
            col("day", DataType::Date, None),
            col("at", DataType::Time, None),
            col("ts", DataType::Timestamp, None),
            col("tz", DataType::TimestampTz, None),
            col("u", DataType::Uuid, None),
            col("tags", DataType::List(Box::new(DataType::Int32)), None),
        ],
        version: 1,
        dialect: "postgres".into(),
    };
    let all: Vec<usize> = (0..table.columns.len()).collect();
    let names = sluice_avro::RecordNames { name: "typed".into(), namespace: "sluice.app".into() };
    let schema_file = dir.path().join("schema.json");
    std::fs::write(&schema_file, sluice_avro::record_schema(&table, &all, &names).to_string()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/avro_decode.py");
    let run = |args: &[&str]| {
        let out = Command::new("python3").arg(script).args(args).output().expect("run python3");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let schema_path = schema_file.display().to_string();
    let id: u32 = run(&["register", &registry.url, "app.typed-value", &schema_path]).trim().parse().unwrap();
    let rows = [
        vec![
            Value::Int(1),
            Value::Bool(false),
            Value::UInt(u64::MAX),
            Value::Float32(-0.5),
            Value::Float64(1e300),
            Value::Decimal(Decimal::parse("-9999999999.99").unwrap()),
            Value::Decimal(Decimal::parse("3.14159265358979323846264338327950288").unwrap()),
            Value::Text(Text::from("tab\tand ünïcode ✓")),
            Value::Bytes(bytes::Bytes::from_static(&[0, 1, 254, 255])),
            Value::Date(Date::from_ymd(1, 1, 1).unwrap()),
            Value::Time(Time(86_399_999_999)),
            Value::Timestamp(Timestamp::from_micros(951_782_400_000_001)),
            Value::TimestampTz(Timestamp::from_micros(-1_000_000)),
            Value::Uuid(Uuid::parse("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap()),
            Value::List(vec![Value::Int(1), Value::Null, Value::Int(-3)]),
        ],
        std::iter::once(Value::Int(2)).chain(std::iter::repeat_n(Value::Null, 14)).collect(),
    ];
    let mut hex = String::new();
    for row in &rows {
        let mut body = Vec::new();
        sluice_avro::encode_row(&table, &all, row, &mut body).unwrap();
        for b in sluice_avro::frame(id, &body) {
            hex.push_str(&format!("{b:02x}"));
        }
        hex.push('\n');
    }
    let messages = dir.path().join("messages.hex");
    std::fs::write(&messages, hex).unwrap();
    let decoded = run(&["decode", &registry.url, "app.typed", &messages.display().to_string()]);
    let lines: Vec<serde_json::Value> = decoded.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let want = serde_json::json!({
        "id": 1, "flag": false, "big": "18446744073709551615", "f": -0.5, "d": 1e300,
        "amount": "-9999999999.99", "loose": "3.14159265358979323846264338327950288",
        "name": "tab\tand ünïcode ✓", "raw": "0001feff", "day": "0001-01-01", "at": "23:59:59.999999",
        "ts": "2000-02-29 00:00:00.000001", "tz": "1969-12-31 23:59:59+00:00",
        "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "tags": [1, null, -3]
    });
    assert_eq!(lines[0], want);
    let nulls = lines[1].as_object().unwrap();
    assert_eq!(nulls["id"], 2);
    assert!(nulls.iter().filter(|(k, _)| *k != "id").all(|(_, v)| v.is_null()), "{nulls:?}");
    registry.stop();
}
