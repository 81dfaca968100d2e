//! End-to-end: PostgreSQL source to PostgreSQL replica, in-process.

mod common;

use std::time::Duration;

use common::{confirmed_flush, start, Env, CONVERGE};
use sluice_testkit::wait_for;

const ACCOUNTS: &str = "
CREATE TABLE accounts (id bigint PRIMARY KEY, owner text NOT NULL, balance numeric(14,2) NOT NULL, updated timestamptz NOT NULL DEFAULT now());
INSERT INTO accounts SELECT g, 'owner-' || g, g * 1.25, now() FROM generate_series(1, 20000) g;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_stream_has_no_gap_or_duplicate() {
    let env = Env::new(ACCOUNTS).await;
    // A writer runs across the snapshot boundary: every change must land exactly once.
    let writer_client = common::connect(&env.src_url).await;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(async move {
        let mut i: i64 = 0;
        while !*stop_rx.borrow_and_update() {
            i += 1;
            writer_client
                .batch_execute(&format!(
                    "BEGIN; INSERT INTO accounts VALUES ({id}, 'new', 1, now()); \
                     UPDATE accounts SET balance = balance + 1 WHERE id = {u}; \
                     DELETE FROM accounts WHERE id = {d}; COMMIT;",
                    id = 100_000 + i,
                    u = 1 + (i * 7) % 20000,
                    d = 1 + (i * 13) % 20000
                ))
                .await
                .expect("writer transaction");
            if i >= 3000 {
                break;
            }
        }
        i
    });
    let pipeline = start(env.config("boundary", "", ""));
    wait_for("writer to make progress", CONVERGE, || async { writer.is_finished().then_some(()) }).await;
    let _ = stop_tx.send(true);
    let n = writer.await.unwrap();
    assert!(n > 0);
    env.converge("accounts", "id").await;
    pipeline.stop().await;
    env.assert_same("accounts", "id").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_deletes_and_truncates_are_applied_in_order() {
    let env = Env::new(
        "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE u (a int, b text, PRIMARY KEY (a, b));
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 100) g; INSERT INTO u VALUES (1, 'x');",
    )
    .await;
    let pipeline = start(env.config("ops", "", ""));
    env.converge("t", "id").await;
    env.src
        .batch_execute(
            "UPDATE t SET v = 'changed' WHERE id <= 10;
             DELETE FROM t WHERE id BETWEEN 11 AND 20;
             BEGIN; UPDATE t SET id = id + 1000 WHERE id = 21; INSERT INTO t VALUES (21, 'reused key'); COMMIT;
             BEGIN; DELETE FROM t WHERE id = 30; INSERT INTO t VALUES (30, 'reinserted'); UPDATE t SET v = 'again' WHERE id = 30; COMMIT;
             TRUNCATE u; INSERT INTO u VALUES (2, 'after truncate');
             BEGIN; INSERT INTO t VALUES (5000, 'temp'); DELETE FROM t WHERE id = 5000; COMMIT;",
        )
        .await
        .unwrap();
    env.converge("t", "id").await;
    env.converge("u", "a, b").await;
    assert_eq!(env.count(&env.dst, "u").await, 1);
    env.src.batch_execute("TRUNCATE t").await.unwrap();
    env.src.batch_execute("INSERT INTO t VALUES (1, 'only')").await.unwrap();
    env.converge("t", "id").await;
    pipeline.stop().await;
    assert_eq!(env.count(&env.dst, "t").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_toast_values_are_kept_with_identity_default_and_full() {
    let env = Env::new(
        // `k_id` is named like the sink's name for the key `id` in a partial update would have been.
        "CREATE TABLE docs (id int PRIMARY KEY, title text, body text, k_id int);
         ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
         CREATE TABLE docs_full (id int PRIMARY KEY, title text, body text);
         ALTER TABLE docs_full ALTER COLUMN body SET STORAGE EXTERNAL;
         ALTER TABLE docs_full REPLICA IDENTITY FULL;
         INSERT INTO docs VALUES (1, 'snap', repeat('a', 100000));
         INSERT INTO docs_full VALUES (1, 'snap', repeat('b', 100000));",
    )
    .await;
    let pipeline = start(env.config("toast", "", ""));
    env.converge("docs", "id").await;
    env.src
        .batch_execute(
            "INSERT INTO docs VALUES (2, 'streamed', repeat('c', 50000) || 'end');
             INSERT INTO docs_full VALUES (2, 'streamed', repeat('d', 50000) || 'end');
             UPDATE docs SET title = 'retitled', k_id = id;
             UPDATE docs_full SET title = 'retitled';
             BEGIN; UPDATE docs SET title = 'twice' WHERE id = 2; UPDATE docs SET title = 'thrice' WHERE id = 2; COMMIT;
             UPDATE docs SET id = 3 WHERE id = 1;
             UPDATE docs_full SET id = 3 WHERE id = 1;",
        )
        .await
        .unwrap();
    env.converge("docs", "id").await;
    env.converge("docs_full", "id").await;
    pipeline.stop().await;
    let len: i32 = env.dst.query_one("SELECT length(body) FROM docs WHERE id = 3", &[]).await.unwrap().get(0);
    assert_eq!(len, 100000, "TOASTed body must survive updates that did not send it");
}

const TYPES: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE types (
  id int PRIMARY KEY, i2 smallint, i4 integer, i8 bigint, num numeric, num_p numeric(40,20), r real, d double precision,
  b boolean, t text, vc varchar(20), c char(5), by bytea, dt date, tm time, ttz timetz, ts timestamp, tstz timestamptz,
  iv interval, u uuid, j json, jb jsonb, m mood, a_i4 integer[], a_t text[], a_num numeric[], a_m mood[],
  a_tstz timestamptz[], a_b boolean[], a_f8 float8[], other inet, pt point, money_col money);
"#;

const TYPE_ROWS: &[&str] = &[
    r#"(1, -32768, -2147483648, -9223372036854775808, 'NaN', '-99999999999999999999.99999999999999999999', 'NaN', 'NaN',
        false, '', '', '', '\x', 'infinity', '00:00:00', '00:00:00+15:59', 'infinity', 'infinity',
        '178000000 years', '00000000-0000-0000-0000-000000000000', '{"a": 1,  "a": 2}', '{}', 'sad', '{}', '{}', '{}', '{}',
        '{}', '{}', '{}', '0.0.0.0/0', '(0,0)', '-92233720368547758.08')"#,
    r#"(2, 32767, 2147483647, 9223372036854775807, 'Infinity', '0.00000000000000000001', 'Infinity', '-Infinity',
        true, E'tab\there\nnew line \\ back\\slash ''quote'' "dq" ünïcødé 🚀', 'varchar max len 20..', 'ab', '\x00ff10',
        '-infinity', '24:00:00', '23:59:59.999999-15:59', '-infinity', '-infinity', '-1 days +02:03:04.000005',
        'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '[1, 2.50, "x", null, true]', '{"k": [1, {"n": null}], "u": "\u00e9"}', 'happy',
        '{1,NULL,-3}', '{"a\"b","c,d",NULL,"","NULL"}', '{NaN,1.5,-0.000001}', '{happy,sad}',
        '{infinity,"2020-01-01 00:00:00+00",NULL}', '{t,f,NULL}', '{1e308,-5e-324,Infinity}', '2001:db8::1/128', '(1.5,-2.25)', '92233720368547758.07')"#,
    r#"(3, 0, 0, 0, '-Infinity', '12345678901234567890.12345678901234567890', 3.4028235e38, 1.7976931348623157e308,
        NULL, NULL, NULL, NULL, NULL, '4713-01-01 BC', '12:34:56.789012', '01:02:03-08', '294276-12-31 23:59:59.999999',
        '4713-01-01 00:00:00+00 BC', '1 mon -1 days', NULL, 'null', '"just a string"', NULL, NULL, NULL, NULL, NULL, NULL,
        NULL, NULL, NULL, NULL, NULL)"#,
    r#"(4, 1, 1, 1, '0.1', '-0.1', 1.17549435e-38, 5e-324, true, 'x', 'y', 'z    ', '\xdeadbeef', '2000-02-29',
        '00:00:00.000001', '00:00:00.000001+00', '2000-01-01 00:00:00.000001', '1999-12-31 23:59:59.999999+00',
        '-178000000 years -3 mons', 'ffffffff-ffff-ffff-ffff-ffffffffffff', '1e400', '12345678901234567890123456789',
        'ok', '{2147483647}', '{"{}"}', '{-Infinity}', '{ok}', '{-infinity}', '{true}', '{-0,0.1}', '10.0.0.1', '(1e300,-1e-300)', '0')"#,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_supported_type_round_trips_exactly() {
    let env = Env::new(TYPES).await;
    // The same columns minus the types Sluice keeps as text (inet, point, money): every value
    // of this table travels in binary (binary COPY for inserts, binary array parameters).
    env.src
        .batch_execute(
            "CREATE TABLE types_b (LIKE types); ALTER TABLE types_b DROP COLUMN other, DROP COLUMN pt, \
             DROP COLUMN money_col, ADD PRIMARY KEY (id);",
        )
        .await
        .unwrap();
    // Rows 1-4 go through the snapshot, rows 101-104 through the stream.
    for r in TYPE_ROWS {
        env.src.batch_execute(&format!("INSERT INTO types VALUES {r}")).await.unwrap();
    }
    let pipeline = start(env.config("types", "", ""));
    env.converge("types", "id").await;
    env.converge("types_b", "id").await;
    for r in TYPE_ROWS {
        let streamed = r.replacen('(', "(100 + ", 1);
        env.src.batch_execute(&format!("INSERT INTO types VALUES {streamed}")).await.unwrap();
    }
    // Updates that change every column of a row, through the upsert path.
    env.src
        .batch_execute("UPDATE types SET (i2, t, a_t, m) = (i2, coalesce(t, '') || '!', a_t, m) WHERE id IN (2, 102)")
        .await
        .unwrap();
    env.converge("types", "id").await;
    let cols = "id, i2, i4, i8, num, num_p, r, d, b, t, vc, c, by, dt, tm, ttz, ts, tstz, iv, u, j, jb, m, a_i4, a_t, \
                a_num, a_m, a_tstz, a_b, a_f8";
    env.src.batch_execute(&format!("INSERT INTO types_b SELECT {cols} FROM types")).await.unwrap();
    env.src
        .batch_execute(&format!("UPDATE types_b SET ({cols}) = (SELECT {cols} FROM types s WHERE s.id = types_b.id)"))
        .await
        .unwrap();
    env.converge("types_b", "id").await;
    pipeline.stop().await;
    assert_eq!(env.count(&env.dst, "types").await, 8);
    assert_eq!(env.count(&env.dst, "types_b").await, 8);
    // Column types are the same on the replica, not just the text.
    let q = "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) \
             FROM pg_attribute WHERE attrelid = 'types'::regclass AND attnum > 0 AND NOT attisdropped";
    let a: String = env.src.query_one(q, &[]).await.unwrap().get(0);
    let b: String = env.dst.query_one(q, &[]).await.unwrap().get(0);
    assert_eq!(a, b);
    // Exact value equality, beyond the text form: numeric and float compare as values too.
    let exact = "SELECT count(*) FROM types s WHERE s.num IS NOT DISTINCT FROM (SELECT num FROM types WHERE id = s.id)";
    assert_eq!(env.dst.query_one(exact, &[]).await.unwrap().get::<_, i64>(0), 8);
}

/// With only columns that have a binary form, the server streams values in binary; a column
/// added later without one switches the stream to text, and nothing is lost either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_binary_type_streams_in_binary_and_a_text_only_column_switches_to_text() {
    let env = Env::new(TYPES).await;
    env.src
        .batch_execute(
            "CREATE TABLE types_b (LIKE types); ALTER TABLE types_b DROP COLUMN other, DROP COLUMN pt, \
             DROP COLUMN money_col, ADD PRIMARY KEY (id);",
        )
        .await
        .unwrap();
    for r in TYPE_ROWS {
        env.src.batch_execute(&format!("INSERT INTO types VALUES {r}")).await.unwrap();
    }
    let pipeline = start(env.config("bin", "tables = [\"public.types_b\"]\nencoding = \"binary\"", ""));
    env.converge("types_b", "id").await;
    let cols = "id, i2, i4, i8, num, num_p, r, d, b, t, vc, c, by, dt, tm, ttz, ts, tstz, iv, u, j, jb, m, a_i4, a_t, \
                a_num, a_m, a_tstz, a_b, a_f8";
    env.src.batch_execute(&format!("INSERT INTO types_b SELECT {cols} FROM types")).await.unwrap();
    env.src.batch_execute("UPDATE types_b SET t = coalesce(t, '') || '!', iv = -iv WHERE id IN (2, 3)").await.unwrap();
    env.converge("types_b", "id").await;
    env.src
        .batch_execute(
            "ALTER TABLE types_b ADD COLUMN ip inet; UPDATE types_b SET ip = ('10.0.0.' || id)::inet; \
             INSERT INTO types_b (id, ip) VALUES (50, '::1');",
        )
        .await
        .unwrap();
    env.converge("types_b", "id").await;
    pipeline.stop().await;
    assert_eq!(env.count(&env.dst, "types_b").await, 5);
}

/// The raw path (COPY text passed through untouched) and the typed path (decoded into typed
/// values and encoded again) must write identical replicas, for every type and extreme value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_and_typed_copies_write_identical_replicas() {
    let env = Env::new(TYPES).await;
    for r in TYPE_ROWS {
        env.src.batch_execute(&format!("INSERT INTO types VALUES {r}")).await.unwrap();
    }
    let (typed_url, typed) = sluice_testkit::database(&env.target, "typed").await;
    let toml = format!(
        "{}\n[[sink]]\ntype = \"postgres\"\nurl = \"{typed_url}\"\nbulk_passthrough = false\n",
        env.toml("paths", "", "bulk_passthrough = true")
    );
    let pipeline = start(sluice::parse(&toml, &|_| None).unwrap());
    env.converge("types", "id").await;
    common::converge_with(&env.src, &typed, "types", "id").await;
    common::converge_with(&env.dst, &typed, "types", "id").await;
    pipeline.stop().await;
    let q = "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) \
             FROM pg_attribute WHERE attrelid = 'types'::regclass AND attnum > 0 AND NOT attisdropped";
    let raw_types: String = env.dst.query_one(q, &[]).await.unwrap().get(0);
    let typed_types: String = typed.query_one(q, &[]).await.unwrap().get(0);
    assert_eq!(raw_types, typed_types);
    // Beyond the text form: every column compares equal as a value, row by row.
    let cols: Vec<String> = env
        .dst
        .query("SELECT attname::text FROM pg_attribute WHERE attrelid = 'types'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for c in cols {
        let sql = format!("SELECT t.id, t.\"{c}\"::text FROM types t ORDER BY t.id");
        let a: Vec<(i32, Option<String>)> =
            env.dst.query(&sql, &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
        let b: Vec<(i32, Option<String>)> =
            typed.query(&sql, &[]).await.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(a, b, "column {c} differs between the raw and the typed path");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_apply_in_commit_order() {
    let env = Env::new(
        "CREATE TABLE seq (id int PRIMARY KEY, v bigint NOT NULL, history text NOT NULL DEFAULT '');
                        INSERT INTO seq SELECT g, 0 FROM generate_series(1, 10) g;",
    )
    .await;
    let pipeline = start(env.config("order", "", "batch = { max_rows = 7, max_delay_ms = 5 }"));
    env.converge("seq", "id").await;
    // Two interleaved sessions: commit order, not statement order, decides the final state.
    let a = common::connect(&env.src_url).await;
    let b = common::connect(&env.src_url).await;
    for i in 1..=200i64 {
        a.batch_execute("BEGIN").await.unwrap();
        b.batch_execute("BEGIN").await.unwrap();
        a.batch_execute(&format!("UPDATE seq SET v = {i}, history = history || 'a' WHERE id = {}", i % 10 + 1))
            .await
            .unwrap();
        b.batch_execute(&format!("UPDATE seq SET v = -{i}, history = history || 'b' WHERE id = {}", (i + 5) % 10 + 1))
            .await
            .unwrap();
        if i % 2 == 0 {
            b.batch_execute("COMMIT").await.unwrap();
            a.batch_execute("COMMIT").await.unwrap();
        } else {
            a.batch_execute("COMMIT").await.unwrap();
            b.batch_execute("COMMIT").await.unwrap();
        }
    }
    env.converge("seq", "id").await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_column_appears_without_restart() {
    let env =
        Env::new("CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1, 'one');").await;
    let pipeline = start(env.config("ddl", "", ""));
    env.converge("items", "id").await;
    env.src
        .batch_execute(
            "ALTER TABLE items ADD COLUMN price numeric(10,2);
             INSERT INTO items VALUES (2, 'two', 2.50);
             UPDATE items SET price = 1.00 WHERE id = 1;
             ALTER TABLE items ADD COLUMN tags text[] DEFAULT '{new}';
             INSERT INTO items (id, name) VALUES (3, 'three');",
        )
        .await
        .unwrap();
    env.converge("items", "id").await;
    assert!(!pipeline.is_finished(), "pipeline must keep running across the schema change");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_publication_still_advances_the_slot() {
    let env = Env::new(
        "CREATE TABLE quiet (id int PRIMARY KEY); CREATE SCHEMA busy; CREATE TABLE busy.noise (id serial PRIMARY KEY, v text);",
    )
    .await;
    let pipeline = start(env.config("idle", "tables = [\"public.*\"]", ""));
    let first = wait_for("slot to be confirmed", CONVERGE, || async {
        confirmed_flush(&env.src, "sluice_idle").await.filter(|l| *l > 0)
    })
    .await;
    // WAL grows from a table outside the publication only.
    env.src
        .batch_execute("INSERT INTO busy.noise (v) SELECT repeat('x', 100) FROM generate_series(1, 5000)")
        .await
        .unwrap();
    let wal: i64 =
        env.src.query_one("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint", &[]).await.unwrap().get(0);
    assert!(wal > first);
    let advanced = wait_for("slot to pass the idle WAL", Duration::from_secs(90), || async {
        confirmed_flush(&env.src, "sluice_idle").await.filter(|l| *l >= wal)
    })
    .await;
    assert!(advanced >= wal);
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changelog_mode_appends_one_row_per_change_with_metadata() {
    let env =
        Env::new("CREATE TABLE ev (id int PRIMARY KEY, v text, n int); INSERT INTO ev VALUES (1, 'snap', 1);").await;
    let pipeline = start(env.config("log", "", "mode = \"changelog\""));
    let dst = &env.dst;
    common::wait_row(dst, "snapshot row", CONVERGE, "SELECT 1 FROM ev_changelog WHERE op = 'r'").await;
    // Each statement its own transaction (a multi-statement simple query would be one).
    for sql in [
        "INSERT INTO ev VALUES (2, 'ins', 2)",
        "UPDATE ev SET v = 'upd', n = 20 WHERE id = 2",
        "DELETE FROM ev WHERE id = 1",
        "BEGIN; INSERT INTO ev VALUES (3, 'a', 3); INSERT INTO ev VALUES (4, 'b', 4); COMMIT;",
    ] {
        env.src.batch_execute(sql).await.unwrap();
    }
    let rows = wait_for("5 changelog rows after the snapshot", CONVERGE, || async {
        let rows = dst
            .query(
                "SELECT op, before::text, after::text, source_table, lsn::text, xid, commit_ts IS NOT NULL \
                 FROM ev_changelog ORDER BY sluice_seq",
                &[],
            )
            .await
            .ok()?;
        (rows.len() >= 6).then_some(rows)
    })
    .await;
    pipeline.stop().await;
    let ops: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ops, ["r", "c", "u", "d", "c", "c"]);
    assert_eq!(rows[0].get::<_, Option<String>>(2).as_deref(), Some(r#"{"n": 1, "v": "snap", "id": 1}"#));
    assert_eq!(rows[2].get::<_, Option<String>>(2).as_deref(), Some(r#"{"n": 20, "v": "upd", "id": 2}"#));
    assert_eq!(rows[3].get::<_, Option<String>>(1).as_deref(), Some(r#"{"n": null, "v": null, "id": 1}"#));
    assert!(rows.iter().all(|r| r.get::<_, String>(3) == "public.ev"));
    assert!(rows[1..].iter().all(|r| r.get::<_, Option<String>>(4).is_some() && r.get::<_, bool>(6)));
    // The two inserts of one transaction share its xid and commit LSN.
    assert_eq!(rows[4].get::<_, Option<i64>>(5), rows[5].get::<_, Option<i64>>(5));
    assert_eq!(rows[4].get::<_, Option<String>>(4), rows[5].get::<_, Option<String>>(4));
    assert_ne!(rows[1].get::<_, Option<i64>>(5), rows[4].get::<_, Option<i64>>(5));
    // A restart appends nothing twice.
    let again = start(env.config("log", "", "mode = \"changelog\""));
    env.src.batch_execute("INSERT INTO ev VALUES (9, 'after restart', 9)").await.unwrap();
    common::wait_row(dst, "row after restart", CONVERGE, "SELECT 1 FROM ev_changelog WHERE after->>'id' = '9'").await;
    again.stop().await;
    assert_eq!(env.count(&env.dst, "ev_changelog").await, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_the_target_refuses_goes_to_the_dead_letter_table() {
    let env = Env::new(
        "CREATE TABLE p (id int PRIMARY KEY, v text); INSERT INTO p SELECT g, 'v' || g FROM generate_series(1, 3) g;",
    )
    .await;
    // The replica has a rule the source lacks: some changes cannot be applied.
    env.dst.batch_execute("CREATE TABLE p (id int PRIMARY KEY, v text CHECK (v <> 'poison'))").await.unwrap();
    let pipeline = start(env.config("dlq", "", ""));
    let dst = &env.dst;
    env.wait_copied("dlq", &["p"]).await;
    // A row the source does not have yet appears on the replica: the source's insert must win.
    env.dst.batch_execute("INSERT INTO p VALUES (4, 'stale')").await.unwrap();
    env.src
        .batch_execute(
            "INSERT INTO p VALUES (4, 'ok'), (5, 'poison'), (6, 'fine'); UPDATE p SET v = 'poison' WHERE id = 1;",
        )
        .await
        .unwrap();
    env.src.batch_execute("INSERT INTO p VALUES (7, 'after')").await.unwrap();
    common::wait_row(dst, "the change after the poison", CONVERGE, "SELECT 1 FROM p WHERE id = 7").await;
    assert!(!pipeline.is_finished(), "a refused change must not stop the pipeline");
    pipeline.stop().await;
    let ids: Vec<i32> =
        env.dst.query("SELECT id FROM p ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, [1, 2, 3, 4, 6, 7]);
    let v1: String = env.dst.query_one("SELECT v FROM p WHERE id = 1", &[]).await.unwrap().get(0);
    assert_eq!(v1, "v1");
    let v4: String = env.dst.query_one("SELECT v FROM p WHERE id = 4", &[]).await.unwrap().get(0);
    assert_eq!(v4, "ok", "an insert meeting a row the target already had must overwrite it");
    let dead = env
        .dst
        .query("SELECT source_table, op, row->>'id', error FROM sluice.dead_letters WHERE pipeline = 'dlq' ORDER BY (row->>'id')::int", &[])
        .await
        .unwrap();
    assert_eq!(dead.len(), 2, "two refused changes");
    assert_eq!(dead[0].get::<_, String>(0), "public.p");
    assert_eq!(dead[0].get::<_, String>(1), "upsert");
    assert_eq!(dead[0].get::<_, Option<String>>(2).as_deref(), Some("1"));
    assert_eq!(dead[1].get::<_, Option<String>>(2).as_deref(), Some("5"));
    assert!(dead[0].get::<_, String>(3).contains("check constraint"), "{}", dead[0].get::<_, String>(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_feeds_two_sinks_and_confirms_only_what_both_hold() {
    let env = Env::new("CREATE TABLE m (id int PRIMARY KEY, v int); INSERT INTO m VALUES (1, 1);").await;
    let log_url = env.target.create_database("audit").await.unwrap();
    let toml = format!(
        "{}\n[[sink]]\ntype = \"postgres\"\nurl = \"{log_url}\"\nmode = \"changelog\"\n",
        env.toml("fan", "", "")
    );
    let cfg = sluice::parse(&toml, &|_| None).unwrap();
    let pipeline = start(cfg);
    env.converge("m", "id").await;
    env.src.batch_execute("UPDATE m SET v = 2; INSERT INTO m VALUES (2, 2);").await.unwrap();
    env.converge("m", "id").await;
    let audit = common::connect(&log_url).await;
    let audit_ref = &audit;
    wait_for("changelog rows in the second sink", CONVERGE, || async {
        let n: i64 = audit_ref.query_one("SELECT count(*) FROM m_changelog", &[]).await.ok()?.get(0);
        (n == 3).then_some(())
    })
    .await;
    pipeline.stop().await;
    // Both sinks keep their own checkpoint; the slot is confirmed no further than the older one.
    let p1: String = env
        .dst
        .query_one("SELECT position->>'at' FROM sluice.checkpoints WHERE pipeline = 'fan'", &[])
        .await
        .unwrap()
        .get(0);
    let p2: String = audit
        .query_one("SELECT position->>'at' FROM sluice.checkpoints WHERE pipeline = 'fan'", &[])
        .await
        .unwrap()
        .get(0);
    // The final confirmation reaches the walsender asynchronously after the pipeline returns.
    let src = &env.src;
    let (p1, p2) = (&p1, &p2);
    wait_for("the slot to be confirmed up to the older sink", CONVERGE, || async move {
        let row = src
            .query_one(
                "SELECT confirmed_flush_lsn >= LEAST($1::text::pg_lsn, $2::text::pg_lsn) FROM pg_replication_slots WHERE slot_name = 'sluice_fan'",
                &[p1, p2],
            )
            .await
            .ok()?;
        row.get::<_, bool>(0).then_some(())
    })
    .await;
}

const SNAPSHOT_TABLES: &str = "
CREATE TABLE big (id bigint PRIMARY KEY, note text, amount numeric(12,2), at timestamptz);
INSERT INTO big SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE E'line\\n\\ttab\\\\' || g END, g / 3.0, now() - g * interval '1 s'
  FROM generate_series(1, 30000) g;
CREATE TABLE empty_t (id int PRIMARY KEY, v text);
CREATE TABLE pair (a int, b text, v text, PRIMARY KEY (a, b));
INSERT INTO pair SELECT g % 10, 'b' || g, 'v' || g FROM generate_series(1, 500) g;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_written_over_several_connections_is_exact_and_gets_keys() {
    let env = Env::new(SNAPSHOT_TABLES).await;
    let pipeline = start(env.config("par", "", "snapshot_connections = 3"));
    let dst = &env.dst;
    env.wait_copied("par", &["big", "empty_t", "pair"]).await;
    env.assert_same("big", "id").await;
    env.assert_same("empty_t", "id").await;
    env.assert_same("pair", "a, b").await;
    // Tables created for the snapshot get the source's primary key once filled.
    for (table, key) in [("big", "PRIMARY KEY (id)"), ("empty_t", "PRIMARY KEY (id)"), ("pair", "PRIMARY KEY (a, b)")] {
        let def: Option<String> = dst
            .query_opt(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'p'",
                &[&table],
            )
            .await
            .unwrap()
            .map(|r| r.get(0));
        assert_eq!(def.as_deref(), Some(key), "primary key of {table}");
    }
    // Streaming upserts rely on that key.
    env.src
        .batch_execute(
            "UPDATE big SET note = 'changed' WHERE id % 1000 = 0; INSERT INTO empty_t VALUES (1, 'x'); \
             INSERT INTO pair VALUES (1, 'b1', 'dup-a') ON CONFLICT (a, b) DO UPDATE SET v = 'updated'; \
             DELETE FROM big WHERE id < 10;",
        )
        .await
        .unwrap();
    env.converge("big", "id").await;
    env.converge("empty_t", "id").await;
    env.converge("pair", "a, b").await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_row_the_target_refuses_stops_with_the_table_named() {
    let env = Env::new(
        "CREATE TABLE strict_t (id int PRIMARY KEY, v text); \
         INSERT INTO strict_t SELECT g, CASE WHEN g = 15000 THEN 'poison' ELSE 'v' || g END FROM generate_series(1, 20000) g;",
    )
    .await;
    env.dst.batch_execute("CREATE TABLE strict_t (id int PRIMARY KEY, v text CHECK (v <> 'poison'))").await.unwrap();
    let pipeline = start(env.config("refuse", "", "snapshot_connections = 2"));
    wait_for("the pipeline to stop", CONVERGE, || async { pipeline.is_finished().then_some(()) }).await;
    let err = match pipeline.handle.await.unwrap() {
        Ok(()) => panic!("a refused snapshot row must stop the pipeline"),
        Err(e) => sluice::chain(&e),
    };
    assert!(err.contains("public.strict_t") && err.contains("check constraint"), "{err}");
    let copied: i64 = env
        .dst
        .query_one(
            "SELECT count(*) FROM sluice.checkpoints c, jsonb_array_elements(c.state->'tables') t \
             WHERE c.pipeline = 'refuse' AND t->>'name' = 'strict_t' AND t->>'state' = 'copied'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(copied, 0, "the table must not be marked copied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_of_a_row_missing_on_the_target_puts_it_back() {
    let env = Env::new(
        "CREATE TABLE u (id int PRIMARY KEY, v text); INSERT INTO u SELECT g, 'v' || g FROM generate_series(1, 100) g;",
    )
    .await;
    let pipeline = start(env.config("miss", "", ""));
    let dst = &env.dst;
    env.wait_copied("miss", &["u"]).await;
    // Rows removed on the replica behind Sluice's back, then updated on the source in one
    // batch with rows that are still there.
    dst.batch_execute("DELETE FROM u WHERE id IN (3, 50)").await.unwrap();
    env.src.batch_execute("UPDATE u SET v = v || '-new' WHERE id <= 60").await.unwrap();
    env.converge("u", "id").await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_index_on_the_target_sees_changes_in_the_order_that_made_them_valid() {
    // Row 2 gives up the value row 1 then takes, in one source transaction: applied in key
    // order, row 1 would collide with row 2 on the replica's unique index.
    let env = Env::new(
        "CREATE TABLE people (id int PRIMARY KEY, email text NOT NULL);
         CREATE TABLE later (id int PRIMARY KEY, email text NOT NULL);
         INSERT INTO people VALUES (1, 'a'), (2, 'x'); INSERT INTO later VALUES (1, 'a'), (2, 'x');",
    )
    .await;
    // `people` has the index on the replica before Sluice first sees it; `later` gets it once
    // copied, so Sluice learns of it only when the target refuses a batch.
    env.dst.batch_execute("CREATE TABLE people (id int PRIMARY KEY, email text NOT NULL UNIQUE)").await.unwrap();
    let pipeline = start(env.config("unique", "", ""));
    env.wait_copied("unique", &["people", "later"]).await;
    env.dst.batch_execute("CREATE UNIQUE INDEX ON later (email)").await.unwrap();
    env.src
        .batch_execute(
            "BEGIN; UPDATE people SET email = 'q' WHERE id = 2; UPDATE people SET email = 'x' WHERE id = 1;
                    UPDATE later SET email = 'q' WHERE id = 2; UPDATE later SET email = 'x' WHERE id = 1; COMMIT;",
        )
        .await
        .unwrap();
    env.converge("people", "id").await;
    env.converge("later", "id").await;
    pipeline.stop().await;
    let parked: i64 = env.dst.query_one("SELECT count(*) FROM sluice.dead_letters", &[]).await.unwrap().get(0);
    assert_eq!(parked, 0, "no valid change may be parked as a dead letter");
}
