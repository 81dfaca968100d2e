//! Two sluice processes on one pipeline (a rolling deploy, or a second start by mistake): the
//! second waits as a standby instead of taking the slot, takes over when the first stops, and
//! a checkpoint never moves backwards.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{converge_with, start, wait_copied, Env, CONVERGE};
use sluice_testkit::wait_for;

/// A `sluice run` process writing its log to a file; killed on drop.
struct Instance {
    child: Child,
    log: std::path::PathBuf,
}

impl Instance {
    fn spawn(dir: &tempfile::TempDir, name: &str, config: &str) -> Instance {
        let path = dir.path().join("pipeline.toml");
        std::fs::write(&path, config).unwrap();
        let log = dir.path().join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["run", path.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(std::fs::OpenOptions::new().append(true).open(&log).unwrap()))
            .spawn()
            .unwrap();
        Instance { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_log(&self, what: &str, needle: &str) {
        let log = self.log.clone();
        let ok = tokio::time::timeout(CONVERGE, async {
            loop {
                if std::fs::read_to_string(&log).unwrap_or_default().contains(needle) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(ok.is_ok(), "{what}: {needle:?} not logged within {CONVERGE:?}:\n{}", self.log());
    }

    async fn terminate(mut self) -> String {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let child = &mut self.child;
        let status = wait_for("sluice to exit after SIGTERM", Duration::from_secs(60), || {
            let s = child.try_wait().unwrap();
            async move { s }
        })
        .await;
        let log = self.log();
        assert!(status.success(), "exit {status}:\n{log}");
        log
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn slot_pid(env: &Env) -> Option<i32> {
    env.src
        .query_one("SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'sluice_fenced'", &[])
        .await
        .ok()
        .and_then(|r| r.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_waits_as_a_standby_and_takes_over_when_the_first_stops() {
    let env = Env::new("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a');").await;
    let dir = tempfile::tempdir().unwrap();
    let config = env.toml("fenced", "", "");
    let first = Instance::spawn(&dir, "first", &config);
    converge_with(&env.src, &env.dst, "t", "id").await;
    let holder = wait_for("the first process to hold the slot", CONVERGE, || async { slot_pid(&env).await }).await;

    let second = Instance::spawn(&dir, "second", &config);
    second.wait_log("the second process", "waiting as a standby").await;
    // The first keeps streaming, and keeps the slot, while the second waits: well past the
    // takeover time of a silent holder (5 s), so a takeover loop would show.
    for i in 2..=6 {
        env.src.execute("INSERT INTO t VALUES ($1, 'while both run')", &[&i]).await.unwrap();
        converge_with(&env.src, &env.dst, "t", "id").await;
        tokio::time::sleep(Duration::from_secs(2)).await; // spacing between writes, not a wait on a condition
        assert_eq!(slot_pid(&env).await, Some(holder), "the slot changed hands while the first process ran");
    }
    assert!(!second.log().contains("terminating it"), "the standby terminated a live holder:\n{}", second.log());

    // A rolling deploy: the first stops; the second takes the slot and carries on.
    let first_log = first.terminate().await;
    assert!(!first_log.contains("ERROR"), "{first_log}");
    second.wait_log("the second process", "taking over").await;
    second.wait_log("the second process", "streaming changes").await;
    env.src
        .batch_execute("INSERT INTO t VALUES (7, 'after the handover'); UPDATE t SET v = 'updated' WHERE id = 1")
        .await
        .unwrap();
    converge_with(&env.src, &env.dst, "t", "id").await;
    let new_holder = slot_pid(&env).await;
    assert!(new_holder.is_some() && new_holder != Some(holder), "the second process does not hold the slot");
    second.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_never_moves_backwards() {
    let env = Env::new("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);").await;
    let running = start(env.config("behind", "", ""));
    wait_copied(&env.dst, "behind", &["t"]).await;
    converge_with(&env.src, &env.dst, "t", "id").await;
    // Another process (simulated) has written this sink's checkpoint far ahead.
    let ahead = r#"{"kind": "pg", "at": "FFFF/0"}"#;
    let n = env
        .dst
        .execute("UPDATE sluice.checkpoints SET position = $1::text::jsonb WHERE pipeline = 'behind'", &[&ahead])
        .await
        .unwrap();
    assert_eq!(n, 1);
    env.src.batch_execute("INSERT INTO t VALUES (2)").await.unwrap();
    let result = tokio::time::timeout(CONVERGE, running.handle).await.expect("the pipeline stops").unwrap();
    let err = sluice::chain(&result.expect_err("the pipeline must stop instead of moving the checkpoint back"));
    assert!(err.contains("past this process's") && err.contains("FFFF/0"), "{err}");
    // Nothing of the refused batch was written, and the checkpoint is untouched.
    assert_eq!(env.count(&env.dst, "t").await, 1);
    let stored: String = env
        .dst
        .query_one("SELECT position->>'at' FROM sluice.checkpoints WHERE pipeline = 'behind'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, "FFFF/0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_with_other_sinks_waits_for_the_slot_instead_of_taking_it() {
    let env = Env::new("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a');").await;
    let other_url = env.target.create_database("other").await.unwrap();
    let other = common::connect(&other_url).await;
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let first = Instance::spawn(&dir_a, "first", &env.toml("fenced", "", ""));
    converge_with(&env.src, &env.dst, "t", "id").await;
    let holder = wait_for("the first process to hold the slot", CONVERGE, || async { slot_pid(&env).await }).await;

    // Same pipeline (so the same slot), another target: nothing fences its sink, the slot must.
    let second = Instance::spawn(&dir_b, "second", &env.toml("fenced", "", "").replace(&env.dst_url, &other_url));
    second.wait_log("the second process", "held by a live connection").await;
    for i in 2..=5 {
        env.src.execute("INSERT INTO t VALUES ($1, 'while both run')", &[&i]).await.unwrap();
        converge_with(&env.src, &env.dst, "t", "id").await;
        tokio::time::sleep(Duration::from_secs(2)).await; // spacing between writes, not a wait on a condition
        assert_eq!(slot_pid(&env).await, Some(holder), "the slot changed hands while the first process ran");
    }
    assert!(!second.log().contains("terminating it"), "the standby terminated a live holder:\n{}", second.log());
    assert!(!first.log().contains("ERROR"), "{}", first.log());

    first.terminate().await;
    second.wait_log("the second process", "taking over").await;
    env.src.batch_execute("INSERT INTO t VALUES (6, 'after the handover')").await.unwrap();
    converge_with(&env.src, &other, "t", "id").await;
    second.terminate().await;
}
