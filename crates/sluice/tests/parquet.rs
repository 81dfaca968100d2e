//! PostgreSQL → Parquet change files, on local disk and on S3 (moto's server from the test kit):
//! read back with DuckDB's own Python package (and boto3 for S3), turned into each table's
//! current state with the query docs/parquet.md documents.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{converge_to as converge, start, Env, CONVERGE};
use sluice_testkit::duckdb::{parquet_query, s3_download};
use sluice_testkit::{S3Server, S3_ACCESS_KEY, S3_SECRET_KEY};

type Rows = Vec<Vec<Option<String>>>;

/// Columns compared across the two engines (as in tests/duckdb.rs, with the Parquet column
/// types: uuid, json, enums, timetz and intervals are strings in a Parquet file).
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
        "CASE WHEN iv IS NOT NULL THEN concat_ws(' ', datepart('year', iv::INTERVAL) * 12 + datepart('month', iv::INTERVAL), \
         datepart('day', iv::INTERVAL), datepart('hour', iv::INTERVAL), datepart('minute', iv::INTERVAL), \
         datepart('microseconds', iv::INTERVAL)) END",
    ),
    ("u::text", "CAST(u AS VARCHAR)"),
    ("j::jsonb::text", "CAST(CAST(j AS JSON) AS VARCHAR)"),
    ("jb::text", "CAST(CAST(jb AS JSON) AS VARCHAR)"),
    ("m::text", "m"),
    (
        "array_to_string(a_i, ',', '∅')",
        "array_to_string(list_transform(a_i, x -> coalesce(CAST(x AS VARCHAR), '∅')), ',')",
    ),
    ("array_to_string(a_t, ',', '∅')", "array_to_string(list_transform(a_t, x -> coalesce(x, '∅')), ',')"),
    ("tz::text", "CAST(CAST(tz AS TIMETZ) AS VARCHAR)"),
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

/// The documented current-state query (docs/parquet.md) for a table with `key` and `columns`,
/// over the files `glob` matches.
fn current_state(glob: &str, key: &str, columns: &[&str]) -> String {
    let cols: Vec<String> = columns
        .iter()
        .filter(|c| **c != key)
        .map(|c| format!("arg_max_null({c}, _position) FILTER (WHERE NOT list_contains(_unchanged, '{c}')) AS {c}"))
        .collect();
    format!(
        "WITH log AS (SELECT * FROM read_parquet('{glob}', union_by_name = true, hive_partitioning = false)), \
         live AS (SELECT * FROM log WHERE _op <> 't' AND _position > coalesce((SELECT max(_position) FROM log WHERE _op = 't'), '')) \
         SELECT {key}, {} FROM live GROUP BY {key} HAVING arg_max(_op, _position) <> 'd'",
        cols.join(", ")
    )
}

/// The query docs/parquet.md shows, as written there, reading `glob` instead of its S3 path.
fn documented_query(glob: &str) -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/parquet.md")).unwrap();
    let block = doc.split("<!-- current-state:duckdb -->").nth(1).expect("the marked query in docs/parquet.md");
    let sql = block.split("```sql").nth(1).and_then(|b| b.split("```").next()).expect("a sql block after the marker");
    let doc_path = "s3://lake/cdc/table=public.accounts/*/*.parquet";
    assert!(sql.contains(doc_path), "the documented query reads {doc_path}");
    sql.replace(doc_path, glob)
}

/// Where a sink's files are for reading: a local directory, or a bucket copied down first.
enum Files {
    Local(PathBuf),
    S3 { endpoint: String, bucket: String, prefix: String, copy: PathBuf },
}

impl Files {
    /// The root the `table=` folders are under, fetched fresh for S3.
    fn root(&self) -> PathBuf {
        match self {
            Files::Local(dir) => dir.clone(),
            Files::S3 { endpoint, bucket, prefix, copy } => {
                let _ = std::fs::remove_dir_all(copy);
                std::fs::create_dir_all(copy).unwrap();
                s3_download(endpoint, bucket, prefix, copy).unwrap_or_else(|e| panic!("download from S3: {e}"));
                copy.join(prefix)
            }
        }
    }

    fn glob(root: &Path, table: &str) -> String {
        root.join(format!("table=public.{table}")).join("*").join("*.parquet").display().to_string()
    }
}

/// `columns` rendered by DuckDB from `state` (a query giving the current rows), by `key`.
fn render(state: &str, columns: &[(&str, &str)], key: &str) -> String {
    format!(
        "SELECT {} FROM ({state}) ORDER BY {key}",
        columns
            .iter()
            .map(|(_, d)| format!("coalesce(CAST(({d}) AS VARCHAR), '<null>')"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn read(sql: &str) -> Option<Rows> {
    parquet_query(sql).unwrap_or_else(|e| panic!("{e}\n{sql}"))
}

/// Table `t`'s columns in the order of [`COLUMNS`].
const T_NAMES: &[&str] = &[
    "id", "i2", "i8", "num", "num_open", "r", "d", "b", "tx", "vc", "byt", "dt", "tm", "ts", "tstz", "iv", "u", "j",
    "jb", "m", "a_i", "a_t", "tz",
];

fn sink_toml(env: &Env, name: &str, url: &str, extra: &str) -> String {
    format!(
        "name = \"{name}\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\n[[sink]]\ntype = \"parquet\"\nurl = \"{url}\"\n\
         buffer = {{ flush_time_s = 0.1 }}\n{extra}\n",
        env.src_url
    )
}

/// Snapshot then a stream of inserts, updates (a key change among them), deletes and a
/// truncate, every type at its awkward values; the current-state query gives the source.
async fn every_type(files: Files, url: &str, extra: &str) {
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
    let pipeline = start(sluice::parse(&sink_toml(&env, "pgparquet", url, extra), &|_| None).expect("valid config"));
    assert_eq!(T_NAMES.len(), COLUMNS.len());
    let other = [("k", "k"), ("n::text", "CAST(n AS VARCHAR)")];
    let check = |table: &'static str| {
        let files = &files;
        let (cols, names): (&[(&str, &str)], Vec<&str>) =
            if table == "t" { (COLUMNS, T_NAMES.to_vec()) } else { (&other, vec!["k", "n"]) };
        let key = names[0];
        move || {
            let root = files.root();
            read(&render(&current_state(&Files::glob(&root, table), key, &names), cols, key))
        }
    };
    converge(&env, "t", COLUMNS, "id", check("t")).await;
    converge(&env, "other", &other, "k", check("other")).await;
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
    converge(&env, "t", COLUMNS, "id", check("t")).await;
    converge(&env, "other", &other, "k", check("other")).await;
    pipeline.stop().await;

    let root = files.root();
    // Hive-style folders, and file names that say whose they are.
    let mut found = Vec::new();
    for table in std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()) {
        if table.starts_with('_') {
            continue;
        }
        for date in std::fs::read_dir(root.join(&table)).unwrap() {
            let date = date.unwrap().file_name().into_string().unwrap();
            for f in std::fs::read_dir(root.join(&table).join(&date)).unwrap() {
                found.push(format!("{table}/{date}/{}", f.unwrap().file_name().into_string().unwrap()));
            }
        }
    }
    assert!(!found.is_empty());
    for f in &found {
        let parts: Vec<&str> = f.split('/').collect();
        assert!(parts[0] == "table=public.t" || parts[0] == "table=public.other", "{f}");
        assert!(parts[1].starts_with("date=") && parts[1].len() == "date=2026-01-01".len(), "{f}");
        assert!(parts[2].starts_with("part-pgparquet-0-") && parts[2].ends_with(".parquet"), "{f}");
    }
    // The log of key 1 and 3/30 in position order: snapshot row, then the changes, the key
    // change as a delete of the old key and an insert of the new.
    let glob = Files::glob(&root, "t");
    let log = read(&format!(
        "SELECT CAST(id AS VARCHAR), _op, CAST(_commit_ts IS NOT NULL AS VARCHAR) FROM read_parquet('{glob}', union_by_name = true, \
         hive_partitioning = false) WHERE id IN (1, 3, 30) ORDER BY _position"
    ))
    .unwrap();
    let flat: Vec<String> =
        log.iter().map(|r| r.iter().map(|v| v.clone().unwrap_or_default()).collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(flat, ["1 r false", "3 r false", "1 u true", "3 d true", "30 c true"]);
    // Column types as a reader sees them.
    let types = read(&format!(
        "SELECT string_agg(column_name || ' ' || column_type, ', ') FROM (DESCRIBE SELECT * FROM read_parquet('{glob}', \
         union_by_name = true, hive_partitioning = false))"
    ))
    .unwrap();
    assert_eq!(
        types[0][0].as_deref(),
        Some(
            "id INTEGER, i2 SMALLINT, i8 BIGINT, num DECIMAL(12,2), num_open VARCHAR, r FLOAT, d DOUBLE, b BOOLEAN, \
             tx VARCHAR, vc VARCHAR, byt BLOB, dt DATE, tm TIME, ts TIMESTAMP, tstz TIMESTAMP WITH TIME ZONE, iv VARCHAR, \
             u VARCHAR, j VARCHAR, jb VARCHAR, m VARCHAR, a_i INTEGER[], a_t VARCHAR[], tz VARCHAR, _op VARCHAR, \
             _position VARCHAR, _commit_ts TIMESTAMP WITH TIME ZONE, _unchanged VARCHAR[]"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_parquet_on_local_disk_gives_the_source_state_with_every_type() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    every_type(Files::Local(lake.clone()), &format!("file://{}", lake.display()), "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_parquet_on_s3_gives_the_source_state_with_every_type() {
    let server = S3Server::start().unwrap_or_else(|e| panic!("cannot start the S3 server for this test: {e}"));
    server.create_bucket("lake").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = Files::S3 {
        endpoint: server.endpoint(),
        bucket: "lake".into(),
        prefix: "cdc".into(),
        copy: dir.path().join("copy"),
    };
    let extra = format!(
        "endpoint = \"{}\"\naccess_key_id = \"{S3_ACCESS_KEY}\"\nsecret_access_key = \"{S3_SECRET_KEY}\"",
        server.endpoint()
    );
    every_type(files, "s3://lake/cdc", &extra).await;
}

/// A column added while streaming appears in new files; older rows read NULL in it (readers
/// union by name); a dropped column stays in the older files only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_files_follow_schema_changes() {
    let env = Env::new("CREATE TABLE s (id int PRIMARY KEY, a int, gone int); INSERT INTO s VALUES (1, 1, 7);").await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let pipeline =
        start(sluice::parse(&sink_toml(&env, "pqshape", &lake.display().to_string(), ""), &|_| None).expect("valid"));
    let glob = Files::glob(&lake, "s");
    let a = [("id::text", "CAST(id AS VARCHAR)"), ("a::text", "CAST(a AS VARCHAR)")];
    converge(&env, "s", &a, "id", || read(&render(&current_state(&glob, "id", &["id", "a", "gone"]), &a, "id"))).await;
    env.src
        .batch_execute(
            "ALTER TABLE s ADD COLUMN c text; INSERT INTO s VALUES (2, 2, 8, 'two'); \
             ALTER TABLE s DROP COLUMN gone; ALTER TABLE s ALTER COLUMN a TYPE bigint; \
             INSERT INTO s VALUES (3, 9000000000, 'three'); UPDATE s SET c = 'one' WHERE id = 1;",
        )
        .await
        .unwrap();
    let ac = [("id::text", "CAST(id AS VARCHAR)"), ("a::text", "CAST(a AS VARCHAR)"), ("c", "c")];
    converge(&env, "s", &ac, "id", || read(&render(&current_state(&glob, "id", &["id", "a", "c"]), &ac, "id"))).await;
    pipeline.stop().await;
    // The snapshot row's file has no `c`; the last insert's has no `gone` and a wider `a`.
    let shapes = read(&format!(
        "SELECT CAST(id AS VARCHAR), _op, coalesce(c, '-') FROM read_parquet('{glob}', union_by_name = true, \
         hive_partitioning = false) ORDER BY _position"
    ))
    .unwrap();
    let flat: Vec<String> =
        shapes.iter().map(|r| r.iter().map(|v| v.clone().unwrap_or_default()).collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(flat, ["1 r -", "2 c two", "3 c three", "1 u one"]);
    let types = read(&format!(
        "SELECT string_agg(column_name || ' ' || column_type, ', ') FROM (DESCRIBE SELECT * FROM read_parquet('{glob}', \
         union_by_name = true, hive_partitioning = false))"
    ))
    .unwrap();
    let types = types[0][0].clone().unwrap();
    assert!(types.starts_with("id INTEGER, a BIGINT, gone INTEGER"), "{types}");
    assert!(types.contains("c VARCHAR"), "{types}");
}

/// A row with a value no Parquet column of its type holds (a decimal NaN in `numeric(6,2)`) goes
/// to the dead-letter file, in the snapshot and in the stream; the rest keeps flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_parquet_cannot_hold_goes_to_the_dead_letter_file() {
    let env = Env::new(
        "CREATE TABLE n (id int PRIMARY KEY, x numeric(6,2)); INSERT INTO n VALUES (1, 1.5), (2, 'NaN'), (3, 2.5);",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let pipeline =
        start(sluice::parse(&sink_toml(&env, "pqdead", &lake.display().to_string(), ""), &|_| None).expect("valid"));
    let glob = Files::glob(&lake, "n");
    let dead = lake.join("_sluice").join("pqdead-0").join("dead_letters").join("*.jsonl").display().to_string();
    let ids = format!(
        "SELECT CAST(id AS VARCHAR), CAST(x AS VARCHAR) FROM read_parquet('{glob}', union_by_name = true, \
         hive_partitioning = false) ORDER BY id"
    );
    let letters = format!(
        "SELECT \"table\", op, CAST(row.id AS VARCHAR), CAST(row.x AS VARCHAR), CAST(error LIKE '%column x%' AS VARCHAR) \
         FROM read_json_auto('{dead}') ORDER BY row.id"
    );
    let strings =
        |rows: &[&[&str]]| -> Rows { rows.iter().map(|r| r.iter().map(|v| Some(v.to_string())).collect()).collect() };
    let until = |want_rows: Rows, want_letters: Rows| {
        let (ids, letters) = (&ids, &letters);
        async move {
            let deadline = std::time::Instant::now() + CONVERGE;
            loop {
                let got = (parquet_query(ids).unwrap(), parquet_query(letters).unwrap());
                if got.0.as_ref() == Some(&want_rows) && got.1.as_ref() == Some(&want_letters) {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "after {CONVERGE:?}: rows {:?}, dead letters {:?}",
                    got.0,
                    got.1
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    // The snapshot's NaN row is parked; the others are in the files.
    until(strings(&[&["1", "1.50"], &["3", "2.50"]]), strings(&[&["public.n", "r", "2", "NaN", "true"]])).await;
    // And the stream's.
    env.src.batch_execute("INSERT INTO n VALUES (4, 'NaN'), (5, 1);").await.unwrap();
    until(
        strings(&[&["1", "1.50"], &["3", "2.50"], &["5", "1.00"]]),
        strings(&[&["public.n", "r", "2", "NaN", "true"], &["public.n", "c", "4", "NaN", "true"]]),
    )
    .await;
    pipeline.stop().await;
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

/// Updates (leaving TOASTed notes unchanged), inserts, deletes, key changes and now and then a
/// truncate that refills the table, until told to stop.
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
                sql.push_str(&match rng.range(1, 2000) {
                    1 => "TRUNCATE accounts; INSERT INTO accounts SELECT g, 'again-' || g, 1, CASE WHEN g % 10 = 0 \
                          THEN repeat('a', 3000) END FROM generate_series(1, 20000) g;"
                        .to_string(),
                    2..=1000 => {
                        format!("UPDATE accounts SET balance = balance + 1, owner = owner || '.' WHERE id = {id};")
                    }
                    1001..=1250 => format!("INSERT INTO accounts VALUES ({next}, 'new', 0, repeat('m', 3000));"),
                    1251..=1500 => format!("DELETE FROM accounts WHERE id = {id};"),
                    1501..=1750 => format!("UPDATE accounts SET balance = balance - 1 WHERE id = {id};"),
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

/// Parquet files on S3 under a workload, the process crashed at every named point (in the
/// middle of a commit's files among them), then killed with SIGKILL at random moments: after a
/// clean run the documented current-state query gives the source table exactly, and no change
/// is in the files twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_at_every_point_and_sigkills_leave_exact_parquet_files() {
    let seed = common::crash_seed();
    // Whole old rows: key changes then carry their unchanged TOAST values (docs/parquet.md).
    let env = Env::new(&format!("{CRASH_SETUP} ALTER TABLE accounts REPLICA IDENTITY FULL;")).await;
    let server = S3Server::start().unwrap_or_else(|e| panic!("cannot start the S3 server for this test: {e}"));
    server.create_bucket("lake").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"pqcrash\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\nslot_takeover_secs = 1\n\n[[sink]]\n\
             type = \"parquet\"\nurl = \"s3://lake/cdc\"\nendpoint = \"{}\"\naccess_key_id = \"{S3_ACCESS_KEY}\"\n\
             secret_access_key = \"{S3_SECRET_KEY}\"\nbuffer = {{ count_records = 3000, flush_time_s = 0.05 }}\n\
             compaction = {{ min_files = 8 }}\n",
            env.src_url,
            server.endpoint()
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
            ("sink.mid_files", 3),
            ("sink.before_commit", 4),
            ("sink.after_commit", 4),
            ("sink.mid_compaction", 1),
            ("source.before_confirm", 3),
            ("source.after_confirm", 3),
        ],
        seed,
    )
    .await;
    let _ = stop_tx.send(true);
    assert!(load.await.unwrap() > 20, "the workload ran");
    let files = Files::S3 {
        endpoint: server.endpoint(),
        bucket: "lake".into(),
        prefix: "cdc".into(),
        copy: dir.path().join("copy"),
    };
    let documented = |root: &Path| render(&documented_query(&Files::glob(root, "accounts")), ACCOUNTS, "id");
    converge(&env, "accounts", ACCOUNTS, "id", || read(&documented(&files.root()))).await;
    sluice.stop(&log).await;
    let root = files.root();
    converge(&env, "accounts", ACCOUNTS, "id", || read(&documented(&root))).await;
    let glob = Files::glob(&root, "accounts");
    let dup = read(&format!(
        "SELECT CAST(count(*) AS VARCHAR), CAST(count(DISTINCT _position) AS VARCHAR) FROM read_parquet('{glob}', \
         union_by_name = true, hive_partitioning = false)"
    ))
    .unwrap();
    assert_eq!(dup[0][0], dup[0][1], "a change is in the files twice");
    let compacted = std::fs::read_dir(root.join("table=public.accounts"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .filter(|f| f.as_ref().unwrap().file_name().to_string_lossy().starts_with("compact-"))
        .count();
    assert!(compacted > 0, "small files were compacted");
}
