//! PostgreSQL → DuckDB: the replica and the change log, read back with DuckDB's own Python
//! package; `sluice query` against a running pipeline.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{start, Env, CONVERGE};
use sluice_testkit::duckdb::duckdb_query;
use sluice_testkit::wait_for;

/// Columns compared across the two engines: PostgreSQL's expression, DuckDB's, each rendering
/// the value the same way (ints, decimals and text as text; instants as epoch microseconds;
/// intervals by their fields; arrays element by element).
const COLUMNS: &[(&str, &str)] = &[
    ("id::text", "CAST(id AS VARCHAR)"),
    ("i2::text", "CAST(i2 AS VARCHAR)"),
    ("i8::text", "CAST(i8 AS VARCHAR)"),
    ("num::text", "CAST(num AS VARCHAR)"),
    ("num_open::text", "num_open"),
    ("lower(r::text)", "replace(lower(CAST(r AS VARCHAR)), 'inf', 'infinity')"),
    ("lower(d::text)", "replace(lower(CAST(d AS VARCHAR)), 'inf', 'infinity')"),
    ("b::int::text", "CAST(CAST(b AS INTEGER) AS VARCHAR)"),
    ("tx", "tx"),
    ("vc", "vc"),
    ("encode(byt, 'hex')", "lower(hex(byt))"),
    ("dt::text", "CAST(dt AS VARCHAR)"),
    ("tm::text", "CAST(tm AS VARCHAR)"),
    ("ts::text", "CAST(ts AS VARCHAR)"),
    ("(extract(epoch FROM tstz) * 1000000)::bigint::text", "CAST(epoch_us(tstz) AS VARCHAR)"),
    (
        "CASE WHEN iv IS NOT NULL THEN concat_ws(' ', (extract(year FROM iv) * 12 + extract(month FROM iv))::int, \
         extract(day FROM iv)::int, extract(hour FROM iv)::int, extract(minute FROM iv)::int, \
         extract(microseconds FROM iv)::bigint) END",
        "CASE WHEN iv IS NOT NULL THEN concat_ws(' ', datepart('year', iv) * 12 + datepart('month', iv), \
         datepart('day', iv), datepart('hour', iv), datepart('minute', iv), datepart('microseconds', iv)) END",
    ),
    ("u::text", "CAST(u AS VARCHAR)"),
    ("j::jsonb::text", "CAST(CAST(j AS JSON) AS VARCHAR)"),
    ("jb::text", "CAST(jb AS VARCHAR)"),
    ("m::text", "m"),
    (
        "array_to_string(a_i, ',', '∅')",
        "array_to_string(list_transform(a_i, x -> coalesce(CAST(x AS VARCHAR), '∅')), ',')",
    ),
    ("array_to_string(a_t, ',', '∅')", "array_to_string(list_transform(a_t, x -> coalesce(x, '∅')), ',')"),
    ("tz::text", "CAST(tz AS VARCHAR)"),
];

const SETUP: &str = "
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE t (id int PRIMARY KEY, i2 smallint, i8 bigint, num numeric(12,2), num_open numeric, r real,
  d double precision, b boolean, tx text, vc varchar(10), byt bytea, dt date, tm time, ts timestamp,
  tstz timestamptz, iv interval, u uuid, j json, jb jsonb, m mood, a_i int[], a_t text[], tz timetz);
CREATE TABLE other (k text PRIMARY KEY, n int);
";

fn row(id: i32) -> String {
    format!(
        "({id}, -32768, 9223372036854775807, -9999999999.99, 123456789012345678901234567890.123456789, 1.5, -1e-05, true, \
         'héllo\tworld', 'x''y', '\\x00ff10', '2024-02-29', '23:59:59.999999', '1999-12-31 23:59:59.999999', \
         '2000-01-01 00:00:00.000001+00', '1 year 2 mons 3 days 04:05:06.789', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', \
         '{{\"a\": [1, 2.5, null]}}', '{{\"k\": \"v\"}}', 'happy', '{{1,NULL,3}}', '{{\"x,y\",NULL}}', '01:02:03-08')"
    )
}

fn nulls(id: i32) -> String {
    format!("({id}, {})", vec!["NULL"; COLUMNS.len() - 1].join(", "))
}

/// The rows of `table` in both engines, by `key`, rendered alike; waits until they are equal
/// (or panics with both after the deadline).
async fn converge(env: &Env, path: &Path, table: &str, columns: &[(&str, &str)], key: &str) {
    let duck_sql = format!(
        "SELECT {} FROM public.{table} ORDER BY {key}",
        columns
            .iter()
            .map(|(_, d)| format!("coalesce(CAST(({d}) AS VARCHAR), '<null>')"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    common::converge_to(env, table, columns, key, || {
        if path.exists() {
            duckdb_query(path, &duck_sql).unwrap_or_else(|e| panic!("{e}"))
        } else {
            None
        }
    })
    .await
}

fn toml(env: &Env, name: &str, path: &Path, extra: &str) -> String {
    format!(
        "name = \"{name}\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\n[[sink]]\ntype = \"duckdb\"\npath = \"{}\"\n\
         buffer = {{ flush_time_s = 0.1 }}\n{extra}\n",
        env.src_url,
        path.display()
    )
}

/// Snapshot, then inserts, updates (a key change among them), deletes and a truncate, with
/// every type at its awkward values: the DuckDB replica equals the source, column types
/// included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_duckdb_replica_follows_snapshot_and_stream_with_every_type() {
    let env = Env::new(SETUP).await;
    env.src
        .batch_execute(&format!(
            "INSERT INTO t VALUES {}, {}, {}; INSERT INTO t (id, r, d, dt, ts) VALUES (4, 'NaN', '-Infinity', '-infinity', 'infinity'); \
             INSERT INTO other VALUES ('a', 1), ('b', 2);",
            row(1),
            nulls(2),
            row(3)
        ))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replica.duckdb");
    let pipeline = start(sluice::parse(&toml(&env, "pgduck", &path, ""), &|_| None).expect("valid config"));
    converge(&env, &path, "t", COLUMNS, "id").await;
    converge(&env, &path, "other", &[("k", "k"), ("n::text", "CAST(n AS VARCHAR)")], "k").await;
    env.src
        .batch_execute(&format!(
            "INSERT INTO t VALUES {}, {};
             UPDATE t SET tx = 'changed', num = 0.01, a_i = '{{}}' WHERE id = 1;
             UPDATE t SET id = 30 WHERE id = 3;
             DELETE FROM t WHERE id = 2;
             BEGIN; UPDATE t SET i2 = 1 WHERE id = 101; UPDATE t SET i2 = 2 WHERE id = 101; DELETE FROM t WHERE id = 102; COMMIT;
             TRUNCATE other; INSERT INTO other VALUES ('c', 3);",
            row(101),
            nulls(102)
        ))
        .await
        .unwrap();
    converge(&env, &path, "t", COLUMNS, "id").await;
    converge(&env, &path, "other", &[("k", "k"), ("n::text", "CAST(n AS VARCHAR)")], "k").await;
    pipeline.stop().await;
    // The column types DuckDB holds, and the key.
    let types = duckdb_query(
        &path,
        "SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = 't'",
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        types[0][0].as_deref(),
        Some(
            "id INTEGER, i2 SMALLINT, i8 BIGINT, num DECIMAL(12,2), num_open VARCHAR, r FLOAT, d DOUBLE, b BOOLEAN, \
             tx VARCHAR, vc VARCHAR, byt BLOB, dt DATE, tm TIME, ts TIMESTAMP, tstz TIMESTAMP WITH TIME ZONE, iv INTERVAL, \
             u UUID, j JSON, jb JSON, m VARCHAR, a_i INTEGER[], a_t VARCHAR[], tz TIME WITH TIME ZONE"
        )
    );
    let key = duckdb_query(
        &path,
        "SELECT constraint_type FROM information_schema.table_constraints WHERE table_name = 't' AND constraint_type = 'PRIMARY KEY'",
    )
    .unwrap()
    .unwrap();
    assert_eq!(key.len(), 1, "the replica has the source's primary key");
}

/// Shape changes while streaming: an added column (with a default for the rows before it), a
/// widened type, a rename and a drop are followed, the values land in place. (A column dropped
/// and one added at its position with its type in one go read as a rename, as for the
/// PostgreSQL sink: the dropped column here has another type.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_replica_follows_schema_changes() {
    let env =
        Env::new("CREATE TABLE s (id int PRIMARY KEY, a int, b text, gone int); INSERT INTO s VALUES (1, 1, 'x', 7);")
            .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shapes.duckdb");
    let pipeline = start(sluice::parse(&toml(&env, "duckshape", &path, ""), &|_| None).expect("valid config"));
    converge(&env, &path, "s", &[("id::text", "CAST(id AS VARCHAR)"), ("b", "b")], "id").await;
    // The added column's default first: a type change that rewrites the table afterwards would
    // clear the stored default the source reads (rows written before keep it only on the
    // source's disk, with no change for them in the log). The source announces a new shape with
    // the table's next change.
    env.src
        .batch_execute(
            "INSERT INTO s VALUES (2, 2, 'y', 8); ALTER TABLE s ADD COLUMN c text DEFAULT 'dflt'; \
             UPDATE s SET b = 'x' WHERE id = 1;",
        )
        .await
        .unwrap();
    converge(&env, &path, "s", &[("id::text", "CAST(id AS VARCHAR)"), ("c", "c")], "id").await;
    env.src
        .batch_execute(
            "ALTER TABLE s ALTER COLUMN a TYPE bigint;
             ALTER TABLE s RENAME COLUMN b TO bee;
             ALTER TABLE s DROP COLUMN gone;
             INSERT INTO s VALUES (3, 9000000000, 'z', 'c3');
             UPDATE s SET a = a + 1 WHERE id = 1;",
        )
        .await
        .unwrap();
    converge(
        &env,
        &path,
        "s",
        &[("id::text", "CAST(id AS VARCHAR)"), ("a::text", "CAST(a AS VARCHAR)"), ("bee", "bee"), ("c", "c")],
        "id",
    )
    .await;
    pipeline.stop().await;
    let types = duckdb_query(
        &path,
        "SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position) FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = 's'",
    )
    .unwrap()
    .unwrap();
    assert_eq!(types[0][0].as_deref(), Some("id INTEGER, a BIGINT, bee VARCHAR, c VARCHAR"));
}

/// Change-log mode in the Snowflake connector's shape: one row per change with its metadata and
/// the row image, queried as the connector's documents query RECORD_METADATA/RECORD_CONTENT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_changelog_holds_each_change_with_its_metadata() {
    let env = Env::new("CREATE TABLE o (id int PRIMARY KEY, item text); INSERT INTO o VALUES (1, 'one');").await;
    let dir = tempfile::tempdir().unwrap();
    // Named like the checkpoint schema: DuckDB names the file's catalog `sluice` too.
    let path = dir.path().join("sluice.duckdb");
    let pipeline =
        start(sluice::parse(&toml(&env, "ducklog", &path, "mode = \"changelog\""), &|_| None).expect("valid config"));
    wait_for("the snapshot row in the log", CONVERGE, || async {
        duckdb_query(&path, "SELECT count(*) FROM public.o").ok().flatten().filter(|r| r[0][0].as_deref() == Some("1"))
    })
    .await;
    env.src
        .batch_execute(
            "INSERT INTO o VALUES (2, 'two'); UPDATE o SET item = 'uno' WHERE id = 1; DELETE FROM o WHERE id = 2;",
        )
        .await
        .unwrap();
    let q = "SELECT RECORD_METADATA->>'operation', RECORD_METADATA->>'table', RECORD_METADATA->'key'->>'id', \
             RECORD_CONTENT->>'item', RECORD_METADATA->>'position' IS NOT NULL FROM public.o";
    let rows = wait_for("four changes in the log", CONVERGE, || async {
        let rows = duckdb_query(&path, q).ok().flatten()?;
        (rows.len() >= 4).then_some(rows)
    })
    .await;
    pipeline.stop().await;
    let flat: Vec<Vec<String>> =
        rows.iter().map(|r| r.iter().map(|v| v.clone().unwrap_or_default()).collect()).collect();
    assert_eq!(
        flat,
        [
            ["r", "public.o", "1", "one", "False"],
            ["c", "public.o", "2", "two", "True"],
            ["u", "public.o", "1", "uno", "True"],
            ["d", "public.o", "2", "", "True"],
        ]
    );
}

/// `sluice query` reads a live replica while `sluice run` streams into it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_query_reads_the_replica_while_the_pipeline_runs() {
    let env = Env::new(
        "CREATE TABLE q (id int PRIMARY KEY, v int); INSERT INTO q SELECT g, g FROM generate_series(1, 100) g;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.duckdb");
    let config = dir.path().join("pipeline.toml");
    std::fs::write(&config, toml(&env, "duckquery", &path, "")).unwrap();
    let log = dir.path().join("sluice.log");
    let run = common::process::spawn(&config.display().to_string(), &log);
    // Writes keep coming while the queries run.
    let src_url = env.src_url.clone();
    let writer = tokio::spawn(async move {
        let c = common::connect(&src_url).await;
        for i in 101..=300 {
            c.batch_execute(&format!("INSERT INTO q VALUES ({i}, {i})")).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let bin = env!("CARGO_BIN_EXE_sluice");
    let count = || {
        let out = std::process::Command::new(bin)
            .args(["query", &config.display().to_string(), "SELECT count(*) AS n, max(v) AS top FROM public.q"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A query while rows are streaming answers (between the sink's commits).
    let mut answered = 0;
    let deadline = std::time::Instant::now() + CONVERGE;
    while !writer.is_finished() && std::time::Instant::now() < deadline {
        let (ok, out, err) = count();
        if ok && out.contains("| n") {
            answered += 1;
        } else if !err.contains("no such table") && !err.contains("does not exist") {
            panic!(
                "sluice query failed while the pipeline ran: {err}\n{out}\nlog:\n{}",
                common::process::log_tail(&log)
            );
        }
    }
    writer.await.unwrap();
    assert!(answered > 0, "no query answered while the pipeline streamed");
    let text = wait_for("every row in the replica", CONVERGE, || async {
        let (ok, out, _) = count();
        (ok && out.contains("| 300 | 300 |")).then_some(out)
    })
    .await;
    assert!(text.contains("300"), "{text}");
    run.stop(&log).await;
}

const CRASH_SETUP: &str = "
CREATE TABLE accounts (id bigint PRIMARY KEY, owner text NOT NULL, balance numeric(14,2) NOT NULL, note text);
ALTER TABLE accounts ALTER COLUMN note SET STORAGE EXTERNAL;
INSERT INTO accounts SELECT g, 'owner-' || g, g % 1000, CASE WHEN g % 10 = 0 THEN repeat('n', 3000) END
  FROM generate_series(1, 20000) g;
";

const ACCOUNTS: &[(&str, &str)] = &[
    ("id::text", "CAST(id AS VARCHAR)"),
    ("owner", "owner"),
    ("balance::text", "CAST(balance AS VARCHAR)"),
    ("md5(coalesce(note, '-'))", "md5(coalesce(note, '-'))"),
];

/// Updates (of rows with unchanged TOASTed notes among them), inserts, deletes and key changes
/// until told to stop.
fn workload(
    client: tokio_postgres::Client,
    seed: u64,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut rng = sluice_playground::scenario::Rng::new(seed);
        let (mut txns, mut next) = (0u64, 100_000i64);
        while !*stop.borrow() {
            let mut sql = String::from("BEGIN;");
            for _ in 0..rng.range(1, 8) {
                let id = rng.range(1, 20_000) as i64;
                next += 1;
                sql.push_str(&match rng.range(1, 8) {
                    1..=4 => {
                        format!("UPDATE accounts SET balance = balance + 1, owner = owner || '.' WHERE id = {id};")
                    }
                    5 => format!("INSERT INTO accounts VALUES ({next}, 'new', 0, repeat('m', 3000));"),
                    6 => format!("DELETE FROM accounts WHERE id = {id};"),
                    _ => format!("UPDATE accounts SET id = -{next} WHERE id = {id};"),
                });
            }
            sql.push_str("COMMIT;");
            client.batch_execute(&sql).await.expect("workload transaction");
            txns += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        txns
    })
}

/// A DuckDB replica under a workload, crashed at every named point of the core (the process
/// aborts there), then killed with SIGKILL at random moments while streaming: after a clean
/// run it equals the source, row for row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_at_every_point_and_sigkills_leave_an_exact_duckdb_replica() {
    let seed = common::crash_seed();
    let env = Env::new(CRASH_SETUP).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.duckdb");
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"duckcrash\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\nslot_takeover_secs = 1\n\n[[sink]]\n\
             type = \"duckdb\"\npath = \"{}\"\nbuffer = {{ count_records = 300, flush_time_s = 0.05 }}\n",
            env.src_url,
            path.display()
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let log = dir.path().join("sluice.log");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load = workload(common::connect(&env.src_url).await, seed, stop_rx);
    let sluice = common::process::crash_then_kill(
        &config,
        &log,
        &[
            ("snapshot.mid_table", 2),
            ("sink.before_commit", 4),
            ("sink.after_commit", 4),
            ("source.before_confirm", 3),
            ("source.after_confirm", 3),
        ],
        seed,
    )
    .await;
    let _ = stop_tx.send(true);
    assert!(load.await.unwrap() > 20, "the workload ran");
    converge(&env, &path, "accounts", ACCOUNTS, "id").await;
    sluice.stop(&log).await;
    converge(&env, &path, "accounts", ACCOUNTS, "id").await;
}
