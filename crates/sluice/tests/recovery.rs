//! Recovery: a sink whose target goes away while the pipeline keeps running for the others.

mod common;

use std::time::Duration;

use common::{confirmed_flush, converge_with, start, Env, Gate};
use sluice_testkit::wait_for;
use tokio_postgres::Client;

/// The stream position a sink's checkpoint holds, as bytes from 0/0.
async fn sink_position(target: &Client, pipeline: &str, sink: &str) -> i64 {
    target
        .query_one(
            "SELECT ((position->>'at')::pg_lsn - '0/0'::pg_lsn)::bigint FROM sluice.checkpoints \
             WHERE pipeline = $1 AND sink = $2",
            &[&pipeline, &sink],
        )
        .await
        .unwrap()
        .get(0)
}

/// Waits until the source's walsender received a status update sent after this call.
async fn next_status_update(src: &Client) {
    let since: String = src.query_one("SELECT now()::text", &[]).await.unwrap().get(0);
    wait_for("a status update from the source", Duration::from_secs(30), || {
        let since = since.clone();
        async move {
            src.query_opt("SELECT 1 FROM pg_stat_replication WHERE reply_time > $1::text::timestamptz", &[&since])
                .await
                .ok()
                .flatten()
                .map(|_| ())
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_is_down_keeps_its_changes_on_the_source_and_catches_up() {
    let env = Env::new(
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g;",
    )
    .await;
    let (_, second) = sluice_testkit::database(&env.target, "second").await;
    let gate = Gate::new(env.target.port()).await;
    let toml = format!(
        "{}\n[[sink]]\ntype = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:{}/second\"\n",
        env.toml("down", "status_interval_ms = 100", ""),
        gate.port
    );
    let config = || sluice::parse(&toml, &|_| None).expect("valid config");

    let both = start(config());
    env.converge("t", "id").await;
    converge_with(&env.src, &second, "t", "id").await;
    both.stop().await;
    let held = sink_position(&second, "down", "sink1").await;

    // The second sink's target goes away. Two runs move the first sink ahead; each time the
    // source must keep what the second lacks.
    gate.close();
    for round in 0..2 {
        let one = start(config());
        env.src
            .batch_execute(&format!(
                "INSERT INTO t SELECT g, 'round {round}' FROM generate_series({}, {}) g; UPDATE t SET v = v || '+' WHERE id <= 10",
                1000 + round * 100,
                1099 + round * 100
            ))
            .await
            .unwrap();
        env.converge("t", "id").await;
        next_status_update(&env.src).await;
        let confirmed = confirmed_flush(&env.src, "sluice_down").await.expect("slot exists");
        assert!(
            confirmed <= held,
            "round {round}: the slot was confirmed to {confirmed}, past what the down sink holds ({held})"
        );
        assert!(sink_position(&env.dst, "down", "sink0").await > held, "the first sink moved on");
        one.stop().await;
    }

    // It comes back: it gets everything it missed, and the slot moves on.
    gate.open();
    let again = start(config());
    converge_with(&env.src, &second, "t", "id").await;
    env.converge("t", "id").await;
    env.src.batch_execute("UPDATE t SET v = 'last' WHERE id = 1").await.unwrap();
    converge_with(&env.src, &second, "t", "id").await;
    wait_for("the slot to move past the old position", Duration::from_secs(30), || async {
        (confirmed_flush(&env.src, "sluice_down").await? > held).then_some(())
    })
    .await;
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_in_the_middle_of_a_transaction_lets_it_finish_and_commit() {
    let env = Env::new("CREATE TABLE big (id int PRIMARY KEY, v text); INSERT INTO big VALUES (0, 'first');").await;
    let pipeline = start(env.config("grace", "", "batch = { max_rows = 1000 }"));
    env.converge("big", "id").await;
    // The replica table is locked, so the sink stalls in the middle of the next transaction and
    // the source, held back by the full queues, is in the middle of it too.
    let mut locker = common::connect(&env.dst_url).await;
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE big IN SHARE MODE").await.unwrap();
    env.src.batch_execute("INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, 60000) g").await.unwrap();
    wait_for("the sink to wait for the lock", Duration::from_secs(30), || async {
        env.dst
            .query_opt("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = 'replica'", &[])
            .await
            .ok()
            .flatten()
    })
    .await;
    pipeline.request_stop();
    wait_for("the pipeline to be stopping", Duration::from_secs(30), || async {
        (pipeline.status.status().state == sluice_runtime::RunState::Stopping).then_some(())
    })
    .await;
    // Once the lock goes, the source streams the rest of the transaction and the sink commits it.
    lock.rollback().await.unwrap();
    pipeline.stop().await;
    assert_eq!(env.count(&env.dst, "big").await, 60001, "the transaction was committed whole before stopping");
}
