//! Replica identity: rows are matched by the columns the source's UPDATE and DELETE messages
//! carry, which is the replica identity index when it is not the primary key.

mod common;

use common::{start, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_index_other_than_the_primary_key_matches_updates_and_deletes() {
    let env = Env::new(
        "CREATE TABLE acct (id int PRIMARY KEY, code text NOT NULL, v int, body text);
         CREATE UNIQUE INDEX acct_code ON acct (code);
         ALTER TABLE acct REPLICA IDENTITY USING INDEX acct_code;
         ALTER TABLE acct ALTER COLUMN body SET STORAGE EXTERNAL;
         CREATE TABLE other (id int PRIMARY KEY);
         INSERT INTO acct SELECT g, 'c' || g, g, repeat('b', 20000) FROM generate_series(1, 20) g;",
    )
    .await;
    let running = start(env.config("ident", "", ""));
    env.converge("acct", "id").await;
    env.src
        .batch_execute(
            "UPDATE acct SET v = -1 WHERE id = 1;
             DELETE FROM acct WHERE id = 2;
             UPDATE acct SET id = 1000 WHERE id = 3;
             -- identity change of a row whose TOASTed body is not resent, inside a transaction
             -- with other writes: the move happens in the batch's own transaction
             BEGIN;
             INSERT INTO other VALUES (1);
             UPDATE acct SET code = 'moved' WHERE id = 4;
             UPDATE acct SET code = 'moved twice', v = 44 WHERE id = 4;
             INSERT INTO other VALUES (2);
             DELETE FROM acct WHERE code = 'c5';
             COMMIT;",
        )
        .await
        .unwrap();
    env.converge("acct", "id").await;
    env.converge("other", "id").await;
    running.stop().await;
    let body: i32 =
        env.dst.query_one("SELECT length(body) FROM acct WHERE code = 'moved twice'", &[]).await.unwrap().get(0);
    assert_eq!(body, 20000, "the TOASTed body must move with its row");
    // The replica's key is the identity the stream matches by.
    let key: String = env
        .dst
        .query_one(
            "SELECT string_agg(a.attname, ',') FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid \
             AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'acct'::regclass AND i.indisprimary",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(key, "code");
}

/// The rows of `events` as sorted text, duplicates kept.
async fn multiset(c: &tokio_postgres::Client, table: &str) -> Vec<String> {
    c.query(&format!("SELECT format('%s|%s|%s|%s', kind, n, payload, old_n) FROM {table} ORDER BY 1"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_a_key_replicates_with_replica_identity_full() {
    let env = Env::new(
        // `old_n` is named like the sink's name for the old value of `n` would have been.
        "CREATE TABLE events (kind text, n int, payload json, old_n int);
         ALTER TABLE events REPLICA IDENTITY FULL;
         INSERT INTO events VALUES ('a', 1, '{}'), ('a', 1, '{}'), ('b', 2, '{\"x\": 1}'), ('n', NULL, NULL);",
    )
    .await;
    let log_url = env.target.create_database("log").await.unwrap();
    let log = common::connect(&log_url).await;
    let toml = env.toml("nokey", "discover_interval_secs = 1", "")
        + &format!("\n[[sink]]\ntype = \"postgres\"\nurl = \"{log_url}\"\nmode = \"changelog\"\n");
    let running = start(sluice::parse(&toml, &|_| None).unwrap());
    common::wait_copied(&env.dst, "nokey", &["events"]).await;
    assert_eq!(multiset(&env.dst, "events").await, multiset(&env.src, "events").await);
    for sql in [
        // one of two identical rows
        "DELETE FROM events WHERE ctid = (SELECT min(ctid) FROM events WHERE kind = 'a')",
        "UPDATE events SET n = 3, payload = '{\"x\": 2}', old_n = 2 WHERE kind = 'b'",
        "UPDATE events SET kind = 'm' WHERE kind = 'n'",
        "INSERT INTO events VALUES ('c', 4, '[1, 2]'), ('c', 4, '[1, 2]')",
        "UPDATE events SET n = 5 WHERE ctid = (SELECT min(ctid) FROM events WHERE kind = 'c')",
    ] {
        env.src.batch_execute(sql).await.unwrap();
    }
    let expected = multiset(&env.src, "events").await;
    sluice_testkit::wait_for("the replica to match, duplicates included", common::CONVERGE, || async {
        (multiset(&env.dst, "events").await == expected).then_some(())
    })
    .await;
    // A table without a key created while running is copied whole, then streamed.
    env.src
        .batch_execute(
            "CREATE TABLE later (k text, v int); ALTER TABLE later REPLICA IDENTITY FULL;
             INSERT INTO later SELECT 'k' || (g % 50), g % 7 FROM generate_series(1, 3000) g;",
        )
        .await
        .unwrap();
    common::wait_copied(&env.dst, "nokey", &["later"]).await;
    env.src
        .batch_execute(
            "DELETE FROM later WHERE ctid = (SELECT min(ctid) FROM later); UPDATE later SET v = 100 WHERE k = 'k7'",
        )
        .await
        .unwrap();
    let later = "SELECT format('%s|%s', k, v) FROM later ORDER BY 1";
    let want: Vec<String> = env.src.query(later, &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    sluice_testkit::wait_for("the later table to match", common::CONVERGE, || async {
        let got: Vec<String> = env.dst.query(later, &[]).await.ok()?.iter().map(|r| r.get(0)).collect();
        (got == want).then_some(())
    })
    .await;
    // The change log has every change with its whole old row.
    let ops = sluice_testkit::wait_for("the change log", common::CONVERGE, || async {
        let rows = log.query("SELECT op, before::text FROM events_changelog ORDER BY sluice_seq", &[]).await.ok()?;
        (rows.len() >= 10).then_some(rows)
    })
    .await;
    running.stop().await;
    let kinds: Vec<String> = ops.iter().map(|r| r.get(0)).collect();
    assert_eq!(kinds, ["r", "r", "r", "r", "d", "u", "u", "c", "c", "u"]);
    assert_eq!(
        ops[4].get::<_, Option<String>>(1).as_deref(),
        Some(r#"{"n": 1, "kind": "a", "old_n": null, "payload": {}}"#)
    );
}
