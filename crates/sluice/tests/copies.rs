//! Copies of live tables: a table that starts to match the globs while the pipeline runs, and a
//! sink added to a running pipeline's config. Only what lacks the data is copied; writes go on
//! during the copy.

mod common;

use common::{start, wait_copied, Env};
use sluice_playground::scenario::Rng;
use tokio::sync::watch;

/// Writes to `table` until told to stop: updates of the non-TOAST columns (so the stream does
/// not resend the TOASTed body), inserts, deletes, and key changes, in transactions of 1 to 5
/// statements. Returns the number of transactions.
fn workload(
    client: tokio_postgres::Client,
    table: &'static str,
    seed: u64,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut rng = Rng::new(seed);
        let mut n = 0u64;
        let mut next_id = 1_000_000i64;
        while !*stop.borrow() {
            let mut sql = String::from("BEGIN;");
            for _ in 0..rng.range(1, 5) {
                let id = rng.range(1, 6000);
                sql.push_str(&match rng.range(1, 10) {
                    1..=5 => format!("UPDATE {table} SET v = v || '+', n = n + 1 WHERE id = {id};"),
                    6 | 7 => {
                        next_id += 1;
                        format!("INSERT INTO {table} VALUES ({next_id}, 'new', 0, repeat('b', 3000));")
                    }
                    8 => format!("DELETE FROM {table} WHERE id = {id};"),
                    // A key change to a key below every other: if the row was not copied yet, only
                    // its move tells the sink about it (the copy has passed those keys).
                    _ => {
                        next_id += 1;
                        format!("UPDATE {table} SET id = -{next_id} WHERE id = {id};")
                    }
                });
            }
            sql.push_str("COMMIT;");
            client.batch_execute(&sql).await.expect("workload transaction");
            n += 1;
        }
        n
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_created_while_running_is_copied_then_streamed() {
    let env = Env::new("CREATE TABLE first (id int PRIMARY KEY, v text); INSERT INTO first VALUES (1, 'a');").await;
    let pipeline = start(env.config("late", "discover_interval_secs = 1\nbackfill_chunk_rows = 500", ""));
    env.converge("first", "id").await;
    // A new table that matches public.* appears with rows already in it, and keeps changing
    // while it is being copied.
    env.src
        .batch_execute(
            "CREATE TABLE later (id bigint PRIMARY KEY, v text NOT NULL, n int NOT NULL, body text);
             ALTER TABLE later ALTER COLUMN body SET STORAGE EXTERNAL;
             INSERT INTO later SELECT g, 'v' || g, 0, repeat('a', 3000) FROM generate_series(1, 6000) g;",
        )
        .await
        .unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let writer = workload(common::connect(&env.src_url).await, "later", 11, stop_rx);
    wait_copied(&env.dst, "late", &["first", "later"]).await;
    let _ = stop_tx.send(true);
    let txns = writer.await.unwrap();
    assert!(txns > 0, "the workload ran during the copy");
    env.converge("later", "id").await;
    // Later changes stream as usual.
    env.src
        .batch_execute("UPDATE later SET v = 'after' WHERE id <= 10; DELETE FROM later WHERE id > 5990")
        .await
        .unwrap();
    env.converge("later", "id").await;
    env.converge("first", "id").await;
    let status = pipeline.status.status();
    let later = status.tables.iter().find(|t| t.table == "public.later").expect("the new table in the status");
    assert!(later.copied_rows > 0, "{later:?}");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_added_later_is_backfilled_and_the_first_is_not_rewritten() {
    let env = Env::new(
        "CREATE TABLE t (id bigint PRIMARY KEY, v text NOT NULL, n int NOT NULL, body text);
         ALTER TABLE t ALTER COLUMN body SET STORAGE EXTERNAL;
         INSERT INTO t SELECT g, 'v' || g, 0, repeat('a', 3000) FROM generate_series(1, 6000) g;
         CREATE TABLE quiet (id int PRIMARY KEY, v text); INSERT INTO quiet SELECT g, 'q' || g FROM generate_series(1, 300) g;",
    )
    .await;
    let first = start(env.config("grow", "backfill_chunk_rows = 500", ""));
    env.wait_copied("grow", &["t", "quiet"]).await;
    env.converge("t", "id").await;
    first.stop().await;
    // The row versions the first sink holds; a rewrite would change them.
    let before = versions(&env.dst).await;

    let (second_url, second) = sluice_testkit::database(&env.target, "second").await;
    let toml = format!(
        "{}\n[[sink]]\ntype = \"postgres\"\nurl = \"{second_url}\"\n",
        env.toml("grow", "backfill_chunk_rows = 500", "")
    );
    let both = start(sluice::parse(&toml, &|_| None).unwrap());
    let (stop_tx, stop_rx) = watch::channel(false);
    let writer = workload(common::connect(&env.src_url).await, "t", 7, stop_rx);
    wait_copied(&second, "grow", &["t", "quiet"]).await;
    let _ = stop_tx.send(true);
    assert!(writer.await.unwrap() > 0);
    env.converge("t", "id").await;
    common::converge_with(&env.src, &second, "t", "id").await;
    common::converge_with(&env.src, &second, "quiet", "id").await;
    both.stop().await;
    assert_eq!(versions(&env.dst).await, before, "the first sink's rows of an unchanged table were rewritten");
    let status = first_copy_counts(&env.dst).await;
    assert_eq!(status, 2, "the first sink still holds both tables as copied");
}

/// `id:xmin` of every row of `quiet`.
async fn versions(c: &tokio_postgres::Client) -> Vec<String> {
    c.query("SELECT id::text || ':' || xmin::text FROM quiet ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

async fn first_copy_counts(c: &tokio_postgres::Client) -> i64 {
    c.query_one(
        "SELECT count(*) FROM sluice.checkpoints c, jsonb_array_elements(c.state->'tables') t \
         WHERE c.pipeline = 'grow' AND c.sink = 'sink0' AND t->>'state' = 'copied'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_of_the_first_release_still_load() {
    // What the first release left behind: a slot and publication on the source, a replica with
    // the copied rows, and a checkpoint row without the `state` column.
    let env = Env::new(
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g;
         CREATE PUBLICATION sluice_mig FOR TABLE t;",
    )
    .await;
    let lsn: String = env
        .src
        .query_one("SELECT lsn::text FROM pg_create_logical_replication_slot('sluice_mig', 'pgoutput')", &[])
        .await
        .unwrap()
        .get(0);
    env.dst
        .batch_execute(&format!(
            "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g;
             CREATE SCHEMA sluice;
             CREATE TABLE sluice.checkpoints (pipeline text NOT NULL, sink text NOT NULL, position jsonb,
               snapshot_done boolean NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (pipeline, sink));
             INSERT INTO sluice.checkpoints (pipeline, sink, position, snapshot_done)
               VALUES ('mig', 'sink0', '{{\"kind\":\"pg\",\"at\":\"{lsn}\"}}', true);"
        ))
        .await
        .unwrap();
    let before: Vec<String> =
        env.dst.query("SELECT xmin::text FROM t ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    env.src
        .batch_execute("INSERT INTO t VALUES (101, 'after the old release'); UPDATE t SET v = 'changed' WHERE id = 1")
        .await
        .unwrap();
    let pipeline = start(env.config("mig", "", ""));
    env.converge("t", "id").await;
    pipeline.stop().await;
    let after: Vec<String> = env
        .dst
        .query("SELECT xmin::text FROM t WHERE id BETWEEN 2 AND 100 ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(after, before[1..], "the table was copied again although the old checkpoint said it was");
    let state: String = env
        .dst
        .query_one("SELECT state::text FROM sluice.checkpoints WHERE pipeline = 'mig'", &[])
        .await
        .unwrap()
        .get(0);
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["version"], 2, "{state}");
    assert_eq!(state["tables"][0]["name"], "t", "{state}");
    assert_eq!(state["tables"][0]["state"], "copied", "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_dropped_and_created_again_replaces_its_rows() {
    let env = Env::new(
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'old ' || g FROM generate_series(1, 300) g;",
    )
    .await;
    let pipeline = start(env.config("again", "discover_interval_secs = 1\nbackfill_chunk_rows = 50", ""));
    env.converge("t", "id").await;
    // Same name, new table: the rows the replica holds of the old one must go, including keys the
    // new table does not have.
    env.src
        .batch_execute(
            "DROP TABLE t; CREATE TABLE t (id int PRIMARY KEY, v text, extra int);
             INSERT INTO t SELECT g, 'new ' || g, g FROM generate_series(200, 500) g;",
        )
        .await
        .unwrap();
    env.converge("t", "id").await;
    env.src.batch_execute("UPDATE t SET v = 'after' WHERE id = 200; DELETE FROM t WHERE id = 500").await.unwrap();
    env.converge("t", "id").await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_not_yet_visible_when_chunks_are_read_is_not_lost() {
    // Commits wait for a synchronous standby that never connects, unless the session says
    // otherwise: a transaction can be committed in the WAL (and in the commit log) while no
    // snapshot sees it yet.
    let source = sluice_testkit::PgServer::start_with(sluice_testkit::PgOptions {
        settings: vec![("synchronous_standby_names".into(), "nobody".into())],
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("cannot start PostgreSQL for this test: {e}"));
    let admin = source.connect("postgres").await.unwrap();
    admin.batch_execute("ALTER SYSTEM SET synchronous_commit = local").await.unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    let env =
        Env::with_source(source, "CREATE TABLE first (id int PRIMARY KEY, v text); INSERT INTO first VALUES (1, 'a');")
            .await;
    let pipeline = start(env.config("hidden", "backfill_chunk_rows = 100", ""));
    env.converge("first", "id").await;
    pipeline.stop().await;

    // While the pipeline is stopped: a new table with rows, and a transaction that updates one
    // of them and commits, but stays invisible (waiting for the standby).
    env.src
        .batch_execute("CREATE TABLE later (id int PRIMARY KEY, v text); INSERT INTO later SELECT g, 'v' || g FROM generate_series(1, 1000) g;")
        .await
        .unwrap();
    let hidden = common::connect(&env.src_url).await;
    let pid: i32 = hidden.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let waiting = tokio::spawn(async move {
        hidden.batch_execute("SET synchronous_commit = on; UPDATE later SET v = 'hidden' WHERE id = 500").await
    });
    sluice_testkit::wait_for("the update to wait for the standby", common::CONVERGE, || async {
        admin
            .query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'SyncRep'", &[&pid])
            .await
            .ok()
            .flatten()
    })
    .await;

    // The pipeline starts and copies `later` while the update is committed but invisible; the
    // table was not in the publication when it committed, so only the copy can bring it.
    let before = commits(&admin).await;
    let pipeline = start(env.config("hidden", "backfill_chunk_rows = 100", ""));
    // Enough source transactions for every chunk of the table to have been read at least once.
    sluice_testkit::wait_for("chunks to be read", common::CONVERGE, || async {
        admin.batch_execute("SELECT pg_stat_clear_snapshot()").await.ok()?;
        (commits(&admin).await > before + 60).then_some(())
    })
    .await;
    // The standby wait is cancelled: the update becomes visible.
    admin.query_one("SELECT pg_cancel_backend($1)", &[&pid]).await.unwrap();
    waiting.await.unwrap().unwrap();
    assert_eq!(
        env.src.query_one("SELECT v FROM later WHERE id = 500", &[]).await.unwrap().get::<_, String>(0),
        "hidden"
    );
    wait_copied(&env.dst, "hidden", &["first", "later"]).await;
    env.converge("later", "id").await;
    pipeline.stop().await;
}

/// Transactions committed in the source database `app`.
async fn commits(admin: &tokio_postgres::Client) -> i64 {
    admin.query_one("SELECT xact_commit FROM pg_stat_database WHERE datname = 'app'", &[]).await.unwrap().get(0)
}
