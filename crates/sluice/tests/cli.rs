//! The `sluice` command line: help, config errors, preflight checks, secrets.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::Env;
use sluice_testkit::{free_port, wait_for, PgOptions, PgServer};

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice")).args(args).env("RUST_LOG", "info").output().expect("run sluice")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn write_config(dir: &tempfile::TempDir, toml: &str) -> String {
    let path = dir.path().join("pipeline.toml");
    std::fs::write(&path, toml).unwrap();
    path.display().to_string()
}

#[test]
fn version_and_help_describe_the_commands() {
    let v = sluice(&["--version"]);
    assert!(v.status.success());
    assert_eq!(String::from_utf8_lossy(&v.stdout).trim(), format!("sluice {}", env!("CARGO_PKG_VERSION")));
    let h = sluice(&["--help"]);
    assert!(h.status.success());
    let h = text(&h);
    for cmd in ["run", "check", "playground"] {
        assert!(h.contains(cmd), "help lacks {cmd}: {h}");
    }
}

#[test]
fn invalid_config_is_rejected_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = "name = \"orders\"\n[source]\ntype = \"postgres\"\nurl = \"postgres://u@127.0.0.1:1/app\"\n\n[[sink]]\ntype = \"postgres\"\nurl = \"postgres://u@127.0.0.1:2/r\"\n";
    let cases = [
        (format!("{base}mode = \"mirror\"\n"), "sink[0].mode", "changelog"),
        (format!("{base}batch = {{ max_rows = 0 }}\n"), "sink[0].batch.max_rows", "must be > 0"),
        (format!("{base}colour = \"blue\"\n"), "sink[0]", "colour"),
        (
            base.replace(
                "type = \"postgres\"\nurl = \"postgres://u@127.0.0.1:1",
                "type = \"postgres\"\ntables = 3\nurl = \"postgres://u@127.0.0.1:1",
            ),
            "source.tables",
            "sequence",
        ),
        (
            base.replace("snapshot", "x").replace(
                "url = \"postgres://u@127.0.0.1:1/app\"",
                "url = \"postgres://u@127.0.0.1:1/app\"\nsnapshot = \"sometimes\"",
            ),
            "source.snapshot",
            "initial",
        ),
        (
            base.replace(
                "url = \"postgres://u@127.0.0.1:1/app\"",
                "url = \"postgres://u:${SLUICE_TEST_UNSET_VAR}@127.0.0.1:1/app\"",
            ),
            "source.url",
            "SLUICE_TEST_UNSET_VAR",
        ),
    ];
    for (toml, key, hint) in cases {
        let path = write_config(&dir, &toml);
        for cmd in ["run", "check"] {
            let out = sluice(&[cmd, &path]);
            let t = text(&out);
            assert_eq!(out.status.code(), Some(2), "{cmd} should exit 2 for {key}: {t}");
            assert!(t.contains(key) && t.contains(hint), "{cmd}: expected {key:?} and {hint:?} in: {t}");
        }
    }
    let missing = sluice(&["run", "/nonexistent/pipeline.toml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing).contains("cannot read config file"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_on_wal_level_replica_explains_the_fix() {
    let source = PgServer::start_with(PgOptions { wal_level: "replica".into(), ..Default::default() }).unwrap();
    let target = PgServer::start().unwrap();
    let c = source.connect("postgres").await.unwrap();
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE nokey (v text);").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        &format!(
            "name = \"chk\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\n[[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n",
            source.url("postgres"),
            target.url("postgres")
        ),
    );
    let out = sluice(&["check", &path]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("FAIL  source: wal_level = logical"), "{t}");
    assert!(t.contains("ALTER SYSTEM SET wal_level = logical") && t.contains("restart"), "{t}");
    assert!(t.contains("FAIL  source: public.nokey has a key") && t.contains("REPLICA IDENTITY"), "{t}");
    assert!(t.contains("ok    source: public.t has a key"), "{t}");
    assert!(t.contains("ok    sink[0]: reachable"), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_on_a_ready_server_and_fails_on_an_unreachable_one() {
    let env = Env::new("CREATE TABLE t (id int PRIMARY KEY);").await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, &env.toml("ready", "", ""));
    let out = sluice(&["check", &path]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("all checks passed"));
    assert!(text(&out).contains("ok    source: may write copy watermarks"), "{}", text(&out));

    let port = free_port();
    let path = write_config(
        &dir,
        &env.toml("ready", "", "").replace(&env.dst_url, &format!("postgres://u:{RAW_PASSWORD}@127.0.0.1:{port}/x")),
    );
    let out = sluice(&["check", &path]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("FAIL  sink[0]: reachable") && t.contains(&format!("u@127.0.0.1:{port}/x")), "{t}");
    assert_no_password(&t);

    // Reachable, with passwords holding URL delimiters, raw and percent-encoded (trust
    // authentication ignores them, so the URLs work).
    for password in [RAW_PASSWORD, ENCODED_PASSWORD] {
        let toml =
            env.toml("ready", "", "").replace("postgres://postgres@", &format!("postgres://postgres:{password}@"));
        let out = sluice(&["check", &write_config(&dir, &toml)]);
        let t = text(&out);
        assert!(out.status.success(), "{t}");
        assert!(t.contains("ok    source: reachable") && t.contains("postgres://postgres@127.0.0.1:"), "{t}");
        assert_no_password(&t);
    }
}

/// A password holding every URL delimiter, written raw (as users do) and percent-encoded.
const RAW_PASSWORD: &str = "hunter2/x?y#z";
const ENCODED_PASSWORD: &str = "hunter2%2Fx%3Fy%40z%23";

fn assert_no_password(output: &str) {
    for piece in ["hunter2", "x?y#z", "%2Fx", "%40z"] {
        assert!(!output.contains(piece), "password ({piece}) leaked: {output}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_never_logs_the_password_and_exits_cleanly_on_sigterm() {
    let env = Env::new("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);").await;
    let dir = tempfile::tempdir().unwrap();
    // Trust authentication ignores the password, so the URL works and still carries a secret.
    let toml =
        env.toml("secret", "", "").replace("postgres://postgres@", &format!("postgres://postgres:{RAW_PASSWORD}@"));
    let (status, all) = run_until_converged(&env, &dir, &toml, &[], "trace").await;
    assert!(status.success(), "exit {status}: {all}");
    assert!(all.contains("source stopped"), "{all}");
    assert_no_password(&all);
    // Again with a second sink that cannot be reached: connection errors and their chains.
    env.src.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
    let down = free_port();
    let toml = toml
        + &format!("\n[[sink]]\ntype = \"postgres\"\nurl = \"postgres://u:{ENCODED_PASSWORD}@127.0.0.1:{down}/x\"\n");
    let (status, all) = run_until_converged(&env, &dir, &toml, &[], "trace").await;
    assert!(status.success(), "exit {status}: {all}");
    assert!(all.contains(&format!("u@127.0.0.1:{down}/x")), "the failing sink is not named: {all}");
    assert_no_password(&all);
    assert!(!all.contains('\x1b'), "colour codes in logs written to a file: {all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let env = Env::new("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);").await;
    let dir = tempfile::tempdir().unwrap();
    let (status, all) =
        run_until_converged(&env, &dir, &env.toml("jsonlogs", "", ""), &["--log-format", "json"], "debug").await;
    assert!(status.success(), "exit {status}: {all}");
    let mut messages = Vec::new();
    for line in all.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{line}");
        messages.push(v["fields"]["message"].as_str().unwrap_or_default().to_string());
    }
    assert!(messages.iter().any(|m| m == "source stopped"), "{messages:?}");
}

/// Runs `sluice [args] run` on `toml` until the replica of `t` converges, then stops it with
/// SIGTERM. Returns its exit status and everything it wrote (stdout, then stderr).
async fn run_until_converged(
    env: &Env,
    dir: &tempfile::TempDir,
    toml: &str,
    args: &[&str],
    rust_log: &str,
) -> (std::process::ExitStatus, String) {
    let path = write_config(dir, toml);
    let (out, err) = (dir.path().join("run.out"), dir.path().join("run.err"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .args(["run", &path])
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err).unwrap()))
        .spawn()
        .unwrap();
    let converged = tokio::spawn({
        let (src, dst) = (env.src_url.clone(), env.dst_url.clone());
        async move { common::converge_with(&common::connect(&src).await, &common::connect(&dst).await, "t", "id").await }
    });
    if let Err(e) = converged.await {
        let _ = child.kill();
        let log = format!("{}{}", std::fs::read_to_string(&out).unwrap(), std::fs::read_to_string(&err).unwrap());
        panic!("{e}\nsluice's output:\n{log}");
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_for("sluice to exit after SIGTERM", Duration::from_secs(60), || {
        let s = child.try_wait().unwrap();
        async move { s }
    })
    .await;
    let all = format!("{}{}", std::fs::read_to_string(&out).unwrap(), std::fs::read_to_string(&err).unwrap());
    (status, all)
}

/// `sluice playground` on each source and replica runs its workload and ends with a replica
/// identical to the source (the command checks that itself and fails otherwise): PostgreSQL
/// into DuckDB (the default, read live in DuckDB) and into PostgreSQL, MariaDB into PostgreSQL.
#[test]
fn the_playground_converges_on_every_source_and_replica() {
    for (args, replica) in [
        (&["--source", "postgres"][..], "PostgreSQL -> DuckDB"),
        (&["--source", "postgres", "--sink", "postgres"][..], "PostgreSQL -> PostgreSQL"),
        (&["--source", "mysql"][..], "MariaDB -> PostgreSQL"),
    ] {
        let mut all = vec!["playground", "--duration", "3", "--rate", "20"];
        all.extend_from_slice(args);
        let o = sluice(&all);
        let out = text(&o);
        assert!(o.status.success(), "playground {args:?} failed:\n{out}");
        assert!(out.contains(replica), "{args:?}: the view names {replica}:\n{out}");
        assert!(out.contains("Replica is identical to the source"), "{args:?}: {out}");
    }
}

/// `sluice import kafka-connect` on sample connector files: each set becomes a pipeline Sluice
/// accepts, every property is accounted for, and no secret from the files is shown.
#[test]
fn import_turns_kafka_connect_configs_into_a_pipeline() {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/kafka-connect");
    let file = |f: &str| format!("{data}/{f}");
    let secrets = ["mysql-secret", "pg-secret", "jdbc-secret", "registry-secret", "passphrase-not-to-show", "MIIEvQ"];
    let import = |files: &[&str]| -> (String, String) {
        let paths: Vec<String> = files.iter().map(|f| file(f)).collect();
        let mut args = vec!["import", "kafka-connect"];
        args.extend(paths.iter().map(String::as_str));
        let out = sluice(&args);
        let (stdout, stderr) =
            (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string());
        assert!(out.status.success(), "{files:?}: {stderr}");
        assert!(!stderr.contains("warning"), "{files:?}: the pipeline does not validate: {stderr}");
        for s in secrets {
            assert!(!stdout.contains(s) && !stderr.contains(s), "{files:?}: a secret is shown: {s}");
        }
        // The file is a pipeline Sluice accepts once the referenced variables are set.
        let cfg = sluice::parse(&stdout, &|_| Some("value".into())).unwrap_or_else(|e| panic!("{stdout}\n{e}"));
        let kinds: Vec<&str> = std::iter::once(cfg.source.kind()).chain(cfg.sinks.iter().map(|s| s.kind())).collect();
        (stdout, format!("{}|{stderr}", kinds.join(",")))
    };
    // The Snowflake connector alone: its topics through a Kafka source (Avro, registry auth from
    // the environment), its buffer and topic2table kept; the inline key and passphrase flagged.
    let (toml, report) = import(&["snowflake-sink.properties"]);
    assert!(report.starts_with("kafka,snowflake|"), "{report}");
    for line in [
        "topics = [\"orders\", \"customers\"]",
        "format = \"avro\"",
        "schema_registry = \"http://${SCHEMA_REGISTRY_USER_INFO}@registry.internal:8081\"",
        "account = \"xy12345.eu-west-1\"",
        "buffer = { count_records = 10000, flush_time_s = 60, size_bytes = 5000000 }",
        "topic2table = { \"orders\" = \"ORDERS_LOG\", \"customers\" = \"CUSTOMERS_LOG\" }",
    ] {
        assert!(toml.lines().any(|l| l == line), "missing {line}:\n{toml}");
    }
    for key in ["snowflake.private.key —", "snowflake.private.key.passphrase —", "jmx —"] {
        assert!(report.contains(key), "{key} not reported:\n{report}");
    }
    // Debezium MySQL with the Snowflake sink: the database read directly, no Kafka.
    let (toml, report) = import(&["debezium-mysql.properties", "snowflake-sink.properties"]);
    assert!(report.starts_with("mysql,snowflake|"), "{report}");
    assert!(toml.contains("url = \"mysql://debezium:${MYSQL_PASSWORD}@mysql.internal:3306\""), "{toml}");
    assert!(
        toml.contains("tables = [\"inventory.*\"]") && toml.contains("exclude = [\"inventory.audit_*\"]"),
        "{toml}"
    );
    assert!(toml.contains("server_id = 184054"), "{toml}");
    assert!(report.contains("snowflake.topic2table.map —"), "{report}");
    // Debezium PostgreSQL alone (the REST API's JSON): Debezium's topics from a Kafka sink.
    let (toml, report) = import(&["debezium-postgres.json"]);
    assert!(report.starts_with("postgres,kafka|"), "{report}");
    assert!(
        toml.contains("slot = \"dbz_slot\"") && toml.contains("topic = \"fulfillment.{schema}.{table}\""),
        "{toml}"
    );
    assert!(toml.contains("tables = [\"public.inventory\", \"public.orders\"]"), "{toml}");
    assert!(report.contains("column.exclude.list — leave columns out with a publication column list"), "{report}");
    // The JDBC sink behind Debezium MySQL: a PostgreSQL replica following schema changes.
    let (toml, report) = import(&["debezium-mysql.properties", "jdbc-sink.properties"]);
    assert!(report.starts_with("mysql,postgres|"), "{report}");
    assert!(report.contains("every property was mapped"), "{report}");
    assert!(
        toml.contains("url = \"postgres://loader:${SINK_POSTGRES_PASSWORD}@warehouse.internal:5432/analytics\"")
            && toml.contains("mode = \"replica\"")
            && toml.contains("schema_changes = \"follow\""),
        "{toml}"
    );
    // A connector it does not know is refused by name.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("s3.properties");
    std::fs::write(&other, "name=s3\nconnector.class=io.confluent.connect.s3.S3SinkConnector\n").unwrap();
    let out = sluice(&["import", "kafka-connect", &other.display().to_string()]);
    assert!(!out.status.success() && text(&out).contains("S3SinkConnector"), "{}", text(&out));
}
