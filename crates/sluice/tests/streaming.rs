//! Large transactions arrive while they run (pgoutput protocol 2 streaming), so the source does
//! not spill them to its disk; Sluice still applies each atomically at its commit, and one that
//! aborts, or a subtransaction that rolls back, leaves no trace.

mod common;

use std::time::Duration;

use common::{connect, start, wait_copied, Env, CONVERGE};
use sluice_testkit::{wait_for, PgOptions, PgServer};

async fn slot_stats(env: &Env) -> Option<(i64, i64)> {
    let r = env
        .src
        .query_opt(
            "SELECT stream_txns, spill_txns FROM pg_stat_replication_slots WHERE slot_name = 'sluice_streamed'",
            &[],
        )
        .await
        .ok()??;
    Some((r.get(0), r.get(1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transactions_stream_while_running_and_apply_atomically_at_commit() {
    // A small decoding memory, so a few megabytes make the server stream a transaction.
    let source = PgServer::start_with(PgOptions {
        settings: vec![("logical_decoding_work_mem".into(), "64kB".into())],
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"));
    let env =
        Env::with_source(source, "CREATE TABLE big (id int PRIMARY KEY, v text); INSERT INTO big VALUES (0, 'seed');")
            .await;
    let running = start(env.config("streamed", "", ""));
    wait_copied(&env.dst, "streamed", &["big"]).await;

    // A large transaction stays open while a small one commits: the small one arrives, the
    // large one's rows do not, although the server has streamed them.
    let large = connect(&env.src_url).await;
    large
        .batch_execute("BEGIN; INSERT INTO big SELECT g, repeat('a', 200) FROM generate_series(1, 20000) g")
        .await
        .unwrap();
    wait_for("the server to stream the open transaction", CONVERGE, || async {
        slot_stats(&env).await.filter(|(streamed, _)| *streamed >= 1).map(|_| ())
    })
    .await;
    env.src.batch_execute("INSERT INTO big VALUES (-1, 'small')").await.unwrap();
    common::wait_row(&env.dst, "the small transaction", CONVERGE, "SELECT 1 FROM big WHERE id = -1").await;
    assert_eq!(env.count(&env.dst, "big").await, 2, "rows of an uncommitted transaction reached the replica");
    large
        .batch_execute("INSERT INTO big SELECT g, repeat('b', 200) FROM generate_series(20001, 30000) g; COMMIT")
        .await
        .unwrap();

    // An aborted large transaction, and a committed one whose savepoint rolled back.
    env.src
        .batch_execute(
            "BEGIN; INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(100000, 120000) g; ROLLBACK;
             BEGIN;
             INSERT INTO big SELECT g, repeat('c', 200) FROM generate_series(200000, 210000) g;
             SAVEPOINT s;
             INSERT INTO big SELECT g, repeat('y', 200) FROM generate_series(300000, 320000) g;
             UPDATE big SET v = 'rolled back' WHERE id <= 100;
             ROLLBACK TO SAVEPOINT s;
             DELETE FROM big WHERE id BETWEEN 1 AND 10;
             UPDATE big SET v = 'kept' WHERE id BETWEEN 11 AND 20;
             COMMIT;",
        )
        .await
        .unwrap();
    env.converge("big", "id").await;
    let absent: i64 = env
        .dst
        .query_one(
            "SELECT count(*) FROM big WHERE id >= 100000 AND id < 200000 OR id >= 300000 OR v = 'rolled back'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(absent, 0);
    running.stop().await;

    // The server streamed them instead of spilling them to its disk.
    let (streamed, spilled) = wait_for("slot statistics", Duration::from_secs(30), || async {
        slot_stats(&env).await.filter(|(streamed, _)| *streamed >= 3)
    })
    .await;
    assert!(streamed >= 3 && spilled == 0, "stream_txns {streamed}, spill_txns {spilled}");
}
