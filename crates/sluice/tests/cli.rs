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
        &env.toml("ready", "", "").replace(&env.dst_url, &format!("postgres://u:hunter2secret@127.0.0.1:{port}/x")),
    );
    let out = sluice(&["check", &path]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("FAIL  sink[0]: reachable") && t.contains("u:***@127.0.0.1"), "{t}");
    assert!(!t.contains("hunter2secret"), "password leaked: {t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_never_logs_the_password_and_exits_cleanly_on_sigterm() {
    let env = Env::new("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);").await;
    let dir = tempfile::tempdir().unwrap();
    // Trust authentication ignores the password, so the URL works and still carries a secret.
    let toml = env.toml("secret", "", "").replace("postgres://postgres@", "postgres://postgres:hunter2secret@");
    let path = write_config(&dir, &toml);
    let log = dir.path().join("run.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", &path])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(dir.path().join("run.err")).unwrap()))
        .spawn()
        .unwrap();
    env.converge("t", "id").await;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_for("sluice to exit after SIGTERM", Duration::from_secs(60), || {
        let s = child.try_wait().unwrap();
        async move { s }
    })
    .await;
    let all = format!(
        "{}{}",
        std::fs::read_to_string(&log).unwrap(),
        std::fs::read_to_string(dir.path().join("run.err")).unwrap()
    );
    assert!(status.success(), "exit {status}: {all}");
    assert!(all.contains("source stopped"), "{all}");
    assert!(!all.contains("hunter2secret"), "password leaked into logs");
}
