//! Crashes under a mixed workload: SIGKILL at random moments (during the snapshot and during
//! streaming), and an abort at every named crash point (`SLUICE_CRASH_AT`); after the last
//! restart the replica must equal the source exactly.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{crash_there, log_tail, spawn};
use common::{confirmed_flush, Env};
use sluice_playground::scenario::Rng;
use sluice_testkit::wait_for;

const SETUP: &str = "
CREATE TABLE accounts (id bigint PRIMARY KEY, owner text NOT NULL, balance numeric(14,2) NOT NULL, note text);
CREATE TABLE ledger (id bigserial PRIMARY KEY, account bigint NOT NULL, amount numeric(14,2) NOT NULL, at timestamptz NOT NULL DEFAULT now());
CREATE TABLE tags (account bigint NOT NULL, tag text NOT NULL, PRIMARY KEY (account, tag));
ALTER TABLE tags REPLICA IDENTITY FULL;
INSERT INTO accounts SELECT g, 'owner-' || g, g % 1000, CASE WHEN g % 100 = 0 THEN repeat('n', 5000) END FROM generate_series(1, 150000) g;
INSERT INTO tags SELECT g, 't' || (g % 7) FROM generate_series(1, 3000) g;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_leaves_an_exact_replica() {
    // A new kill schedule every run; a failure prints the seed that reproduces it.
    let seed = common::crash_seed();
    let env = Env::new(SETUP).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        env.toml("crash", "slot_takeover_secs = 2", "batch = { max_rows = 500, max_delay_ms = 20 }"),
    )
    .unwrap();
    let config = config.display().to_string();
    let log = dir.path().join("sluice.log");

    // Mixed workload in transactions of 1 to 40 statements, until told to stop.
    let mut client = common::connect(&env.src_url).await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let workload = tokio::spawn(async move {
        let mut rng = Rng::new(seed ^ 0x5eed);
        let mut txns = 0u64;
        let started = Instant::now();
        while !*stop_rx.borrow() && started.elapsed() < Duration::from_secs(120) {
            let tx = client.transaction().await.expect("begin");
            for _ in 0..rng.range(1, 40) {
                let id = rng.range(1, 160_000) as i64;
                let sql = match rng.range(1, 10) {
                    1..=4 => format!("UPDATE accounts SET balance = balance + {}, owner = owner || '.' WHERE id = {id}", rng.range(-50, 50)),
                    5 => format!("INSERT INTO accounts VALUES ({id}, 'new', 0, NULL) ON CONFLICT (id) DO UPDATE SET note = 'upserted'"),
                    6 => format!("DELETE FROM accounts WHERE id = {id}"),
                    7 | 8 => format!("INSERT INTO ledger (account, amount) VALUES ({id}, {}.{:02})", rng.range(-999, 999), rng.range(0, 99)),
                    9 => format!("DELETE FROM tags WHERE account = {}", id % 3000),
                    _ => format!("INSERT INTO tags VALUES ({}, 't{}') ON CONFLICT DO NOTHING", id % 3000, rng.range(0, 9)),
                };
                tx.batch_execute(&sql).await.expect("workload statement");
            }
            tx.commit().await.expect("commit");
            txns += 1;
        }
        txns
    });

    let mut rng = Rng::new(seed);
    let mut sluice = spawn(&config, &log);
    // The first two kills land during the initial snapshot, the others while streaming.
    let delays_ms = [
        300,
        500,
        rng.range(0, 1500),
        rng.range(0, 1500),
        rng.range(200, 2500),
        rng.range(200, 2500),
        rng.range(0, 800),
        rng.range(0, 300),
    ];
    let dst = &env.dst;
    for (i, d) in delays_ms.iter().enumerate() {
        if i >= 2 {
            common::wait_copied(dst, "crash", &["accounts", "ledger", "tags"]).await;
        }
        // Deliberately random kill moments, not a wait for a condition.
        tokio::time::sleep(Duration::from_millis(*d as u64)).await;
        if let Ok(Some(status)) = sluice.child.try_wait() {
            panic!("sluice exited by itself ({status}) before kill {i}:\n{}", log_tail(&log));
        }
        sluice.child.kill().expect("SIGKILL");
        sluice.child.wait().unwrap();
        sluice = spawn(&config, &log);
    }
    let _ = stop_tx.send(true);
    let txns = workload.await.unwrap();
    assert!(txns > 50, "workload too small to mean anything: {txns} transactions");

    let wal_at_end: i64 =
        env.src.query_one("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint", &[]).await.unwrap().get(0);
    for (t, k) in [("accounts", "id"), ("ledger", "id"), ("tags", "account, tag")] {
        if let Ok(Some(status)) = sluice.child.try_wait() {
            panic!("sluice exited ({status}):\n{}", log_tail(&log));
        }
        env.converge(t, k).await;
    }
    // SIGTERM: flush, confirm, exit 0; the slot is confirmed past everything the workload wrote.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(sluice.child.id() as i32, libc::SIGTERM) };
    let child = &mut sluice.child;
    let status = wait_for("sluice to exit after SIGTERM", Duration::from_secs(60), || {
        let s = child.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert!(status.success(), "exit {status}:\n{}", log_tail(&log));
    let confirmed = confirmed_flush(&env.src, "sluice_crash").await.unwrap_or(0);
    assert!(confirmed >= wal_at_end, "slot confirmed {confirmed} < {wal_at_end} after a clean stop");
    for (t, k) in [("accounts", "id"), ("ledger", "id"), ("tags", "account, tag")] {
        env.assert_same(t, k).await;
    }
    let all = std::fs::read_to_string(&log).unwrap();
    let restarts = all.matches("pipeline starting").count();
    let redone = all.matches("dropping the slot and starting over").count()
        + all.matches("table will be copied while streaming").count();
    let taken_over = all.matches("terminating it").count();
    eprintln!(
        "{txns} workload transactions, {restarts} starts, {redone} snapshot restarts, {taken_over} slot takeovers"
    );
    // A kill drawn a few milliseconds after a spawn can land before that process logs its start,
    // so not every kill shows one; most must, or the kills did not exercise restarts.
    assert!(restarts > delays_ms.len() / 2, "expected a start for most kills, saw {restarts}");
    assert!(redone >= 1, "no kill landed during the snapshot; the test lost its point:\n{}", log_tail(&log));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_held_by_a_stale_connection_is_taken_over() {
    let env = Env::new("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a');").await;
    let config = env.config("held", "slot_takeover_secs = 1", "");
    // First run creates the slot and copies the table.
    let first = common::start(config.clone());
    env.converge("t", "id").await;
    first.stop().await;
    // Another client now streams from the slot, as a connection of a crashed run would.
    let bindir = sluice_testkit::pg_bindir().unwrap();
    let mut holder = KillOnDrop(
        Command::new(bindir.join("pg_recvlogical"))
            .args([
                "-d",
                &env.src_url,
                "--slot",
                "sluice_held",
                "--start",
                "--no-loop",
                "-o",
                "proto_version=1",
                "-o",
                "publication_names=sluice_held",
                "-f",
                "/dev/null",
            ])
            .stderr(Stdio::null())
            .spawn()
            .expect("start pg_recvlogical"),
    );
    let src = &env.src;
    common::wait_row(
        src,
        "the slot to be held",
        Duration::from_secs(30),
        "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'sluice_held' AND active",
    )
    .await;
    env.src.batch_execute("INSERT INTO t VALUES (2, 'while held')").await.unwrap();
    let second = common::start(config);
    env.converge("t", "id").await;
    second.stop().await;
    let holder_status = wait_for("the holder to be terminated", Duration::from_secs(30), || {
        let s = holder.0.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert!(!holder_status.success(), "pg_recvlogical should have been terminated by the takeover");
}

const SMALL_SETUP: &str = "
CREATE TABLE accounts (id bigint PRIMARY KEY, owner text NOT NULL, balance numeric(14,2) NOT NULL, note text);
ALTER TABLE accounts ALTER COLUMN note SET STORAGE EXTERNAL;
CREATE TABLE tags (account bigint NOT NULL, tag text NOT NULL, PRIMARY KEY (account, tag));
INSERT INTO accounts SELECT g, 'owner-' || g, g % 1000, CASE WHEN g % 10 = 0 THEN repeat('n', 3000) END FROM generate_series(1, 40000) g;
INSERT INTO tags SELECT g, 't' || (g % 7) FROM generate_series(1, 2000) g;
";

/// Updates, inserts, deletes and key changes on `accounts` and `tags` until told to stop.
fn mixed_workload(
    client: tokio_postgres::Client,
    seed: u64,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut rng = Rng::new(seed);
        let mut txns = 0u64;
        let mut next = 100_000i64;
        while !*stop.borrow() {
            let mut sql = String::from("BEGIN;");
            for _ in 0..rng.range(1, 8) {
                let id = rng.range(1, 40_000) as i64;
                next += 1;
                sql.push_str(&match rng.range(1, 10) {
                    1..=4 => {
                        format!("UPDATE accounts SET balance = balance + 1, owner = owner || '.' WHERE id = {id};")
                    }
                    5 => format!("INSERT INTO accounts VALUES ({next}, 'new', 0, repeat('m', 3000));"),
                    6 => format!("DELETE FROM accounts WHERE id = {id};"),
                    7 => format!("UPDATE accounts SET id = -{next} WHERE id = {id};"),
                    8 => format!("DELETE FROM tags WHERE account = {};", id % 2000),
                    _ => format!(
                        "INSERT INTO tags VALUES ({}, 't{}') ON CONFLICT DO NOTHING;",
                        id % 2000,
                        rng.range(0, 9)
                    ),
                });
            }
            sql.push_str("COMMIT;");
            client.batch_execute(&sql).await.expect("workload transaction");
            txns += 1;
        }
        txns
    })
}

/// One crash at `point` (its `hit`-th pass), then a clean run: the replica must be exact. The
/// backfill points crash while a second sink is being filled.
async fn crash_at(point: &str, hit: u32) {
    let env = Env::new(SMALL_SETUP).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sluice.log");
    let source_extra = "slot_takeover_secs = 1\nbackfill_chunk_rows = 1000";
    let sink_extra = "batch = { max_rows = 300, max_delay_ms = 20 }";
    let one = dir.path().join("one.toml");
    std::fs::write(&one, env.toml("points", source_extra, sink_extra)).unwrap();
    let one = one.display().to_string();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let workload = mixed_workload(common::connect(&env.src_url).await, hit as u64 * 31 + point.len() as u64, stop_rx);
    let tables = [("accounts", "id"), ("tags", "account, tag")];
    if point.starts_with("backfill.") {
        // The first sink copies everything; then a second sink joins and crashes mid-copy.
        let first = spawn(&one, &log);
        common::wait_copied(&env.dst, "points", &["accounts", "tags"]).await;
        first.stop_explained(&log, env.activity()).await;
        let (second_url, second) = sluice_testkit::database(&env.target, "second").await;
        let two = dir.path().join("two.toml");
        std::fs::write(
            &two,
            format!(
                "{}\n[[sink]]\ntype = \"postgres\"\nurl = \"{second_url}\"\n{sink_extra}\n",
                env.toml("points", source_extra, sink_extra)
            ),
        )
        .unwrap();
        let two = two.display().to_string();
        crash_there(&two, &log, point, hit).await;
        let sluice = spawn(&two, &log);
        let _ = stop_tx.send(true);
        assert!(workload.await.unwrap() > 0);
        for (t, k) in tables {
            env.converge(t, k).await;
            common::converge_with(&env.src, &second, t, k).await;
        }
        sluice.stop_explained(&log, env.activity()).await;
        for (t, k) in tables {
            env.assert_same(t, k).await;
            common::assert_same_with(&env.src, &second, t, k).await;
        }
    } else {
        crash_there(&one, &log, point, hit).await;
        let sluice = spawn(&one, &log);
        let _ = stop_tx.send(true);
        assert!(workload.await.unwrap() > 0);
        for (t, k) in tables {
            env.converge(t, k).await;
        }
        sluice.stop_explained(&log, env.activity()).await;
        for (t, k) in tables {
            env.assert_same(t, k).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_named_point_ends_with_an_exact_replica() {
    for (point, hit) in [
        ("snapshot.mid_table", 4),
        ("sink.before_commit", 6),
        ("sink.after_commit", 6),
        ("source.before_confirm", 3),
        ("source.after_confirm", 3),
        ("backfill.mid_chunk", 3),
        ("backfill.after_chunk", 3),
    ] {
        // SLUICE_CRASH_POINTS=a,b reruns only those points (to chase one that failed).
        if let Ok(only) = std::env::var("SLUICE_CRASH_POINTS") {
            if !only.split(',').any(|p| p == point) {
                continue;
            }
        }
        eprintln!("crash point {point}, hit {hit}");
        crash_at(point, hit).await;
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
