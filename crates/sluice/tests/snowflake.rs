//! PostgreSQL and Kafka → Snowflake, change log and replica, on the test kit's Snowflake stand-in
//! (fakesnow), read back with Snowflake's own Python connector (the change log also folded into
//! current state as a user's MERGE would).

mod common;

use std::time::Duration;

use common::{Env, CONVERGE};
use sluice_testkit::snowflake::snowflake_query;
use sluice_testkit::{fakesnow_python, SnowflakeServer};

const SETUP: &str = "
CREATE TABLE accounts (id bigint PRIMARY KEY, owner text NOT NULL, balance numeric(14,2) NOT NULL);
INSERT INTO accounts SELECT g, 'owner-' || g, g % 1000 FROM generate_series(1, 3000) g;
";

/// The folded state of the change log (see tests/python/snowflake_changelog_state.py).
fn state(server: &SnowflakeServer, table: &str) -> serde_json::Value {
    let out = std::process::Command::new(fakesnow_python().unwrap())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/snowflake_changelog_state.py"))
        .args([&server.port().to_string(), table, "id", "owner", "balance"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), server.log_tail(20));
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn source_rows(env: &Env) -> serde_json::Value {
    let rows =
        env.src.query("SELECT id::text, owner, balance::text FROM accounts ORDER BY accounts.id", &[]).await.unwrap();
    serde_json::Value::Array(
        rows.iter()
            .map(|r| serde_json::json!([r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, String>(2)]))
            .collect(),
    )
}

/// Waits until the folded change log equals the source; returns the fold.
async fn converge(env: &Env, server: &SnowflakeServer, log: &std::path::Path) -> serde_json::Value {
    let deadline = std::time::Instant::now() + CONVERGE;
    loop {
        let (want, fold) = (source_rows(env).await, state(server, "ACCOUNTS"));
        if fold["rows"] == want {
            return fold;
        }
        if std::time::Instant::now() > deadline {
            let (got, want) =
                (fold["rows"].as_array().cloned().unwrap_or_default(), want.as_array().cloned().unwrap_or_default());
            let first = got.iter().zip(&want).find(|(g, w)| g != w);
            panic!(
                "the change log folds to a state other than the source's after {CONVERGE:?}: {} rows vs {}; first \
                 difference (log, source): {first:?}; truncates at {}, last positions {}\nsluice log:\n{}",
                got.len(),
                want.len(),
                fold["truncates"],
                fold["last_positions"],
                common::process::log_tail(log)
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

type Rows = Vec<Vec<Option<String>>>;

/// Waits until `sql` in `database`, read by Snowflake's Python connector, gives rows `done`
/// accepts; panics with the last rows after [`CONVERGE`].
async fn until_rows(server: &SnowflakeServer, database: &str, sql: &str, done: impl Fn(&Rows) -> bool) -> Rows {
    let mut last = Rows::new();
    let found = sluice_testkit::poll_until(CONVERGE, || {
        let rows = snowflake_query(server, database, sql);
        let ok = done(&rows);
        if !ok {
            last = rows.clone();
        }
        async move { ok.then_some(rows) }
    })
    .await;
    found.unwrap_or_else(|| panic!("{sql}: not as expected after {CONVERGE:?}, found {last:?}"))
}

/// A `sluice run` pipeline file in `dir`: the source's `accounts` into the test kit's Snowflake,
/// with `sink_extra` lines; returns its path.
fn crash_pipeline(dir: &std::path::Path, name: &str, env: &Env, server: &SnowflakeServer, sink_extra: &str) -> String {
    let config = dir.join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"{name}\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\nslot_takeover_secs = 1\n\n[[sink]]\n\
             type = \"snowflake\"\naccount = \"xy12345\"\nurl = \"{}\"\nuser = \"svc_sluice\"\npassword = \"check\"\n\
             buffer = {{ count_records = 500, flush_time_s = 0.05 }}\n{sink_extra}\n",
            env.src_url,
            server.url()
        ),
    )
    .unwrap();
    config.display().to_string()
}

/// Runs sluice on `config` through the crash points and three SIGKILLs while transactions of
/// inserts, updates (60%), deletes, key changes and now and then a truncate with 100 new rows
/// hit `accounts`; `note` adds a large `note` value to new rows. Returns the sluice left running.
async fn crash_under_load(
    env: &Env,
    config: &str,
    log: &std::path::Path,
    seed: u64,
    note: bool,
) -> common::process::Sluice {
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let client = common::connect(&env.src_url).await;
    let (note_value, refill_note) =
        if note { (", repeat('n', {id})", ", repeat(md5(g::text), 100)") } else { ("", "") };
    let load = tokio::spawn(async move {
        let mut rng = sluice_playground::scenario::Rng::new(seed);
        let (mut txns, mut next) = (0u64, 100_000i64);
        while !*stop_rx.borrow_and_update() {
            let mut sql = String::from("BEGIN;");
            for _ in 0..rng.range(1, 6) {
                let id = rng.range(1, 3000) as i64;
                next += 1;
                sql.push_str(&match rng.range(1, 400) {
                    1 => format!(
                        "TRUNCATE accounts; INSERT INTO accounts SELECT g, 'again-' || g, 1{refill_note} \
                         FROM generate_series(1, 100) g;"
                    ),
                    2..=240 => {
                        format!("UPDATE accounts SET balance = balance + 1, owner = owner || '.' WHERE id = {id};")
                    }
                    241..=320 => format!(
                        "INSERT INTO accounts VALUES ({next}, 'new', 0{});",
                        note_value.replace("{id}", &id.to_string())
                    ),
                    321..=380 => format!("DELETE FROM accounts WHERE id = {id};"),
                    _ => format!("UPDATE accounts SET id = -{next} WHERE id = {id};"),
                });
            }
            sql.push_str("COMMIT;");
            client.batch_execute(&sql).await.expect("workload transaction");
            txns += 1;
            // Pacing of the workload (about 100 transactions a second), not a wait.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        txns
    });
    let sluice = common::process::crash_then_kill(
        config,
        log,
        &[("sink.before_commit", 2), ("sink.after_commit", 3), ("source.before_confirm", 3)],
        seed,
    )
    .await;
    let _ = stop_tx.send(true);
    assert!(load.await.unwrap() > 20, "the workload ran");
    sluice
}

/// Snapshot, then inserts, updates, key changes, deletes and a truncate under crashes at the
/// named points and SIGKILLs (a flush's transaction left open by a killed process must be
/// aborted by the next): the log holds every change once and folds to the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_snowflake_changelog_holds_every_change_once_across_crashes() {
    let seed = common::crash_seed();
    let env = Env::new(SETUP).await;
    let server = SnowflakeServer::start().unwrap_or_else(|e| panic!("cannot start fakesnow: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let config = crash_pipeline(dir.path(), "sfcrash", &env, &server, "database = \"STREAMING\"");
    let log = dir.path().join("sluice.log");
    let sluice = crash_under_load(&env, &config, &log, seed, false).await;
    converge(&env, &server, &log).await;
    sluice.stop(&log).await;
    let fold = converge(&env, &server, &log).await;
    assert_eq!(fold["duplicates"], 0, "an entry is in the log twice (same position)");
    assert_eq!(fold["copied"], fold["copied_keys"], "a snapshot row is in the log twice");
    // The workload starts before the snapshot, so it holds about the 3,000 rows set up.
    assert!(fold["copied"].as_u64().unwrap() > 2500, "the snapshot's rows: {}", fold["copied"]);
    assert!(fold["changes"].as_u64().unwrap() > 20, "{fold}");
}

/// Every type's value lands in RECORD_CONTENT in the JSON form docs/types.md gives, and the
/// metadata carries what the connector's queries read (operation, key, position, commit time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_lands_in_record_content_as_documented() {
    let env = Env::new(
        "CREATE TYPE mood AS ENUM ('sad', 'happy');
         CREATE TABLE t (id int PRIMARY KEY, i2 smallint, i8 bigint, num numeric(12,2), nan numeric, r real,
           d double precision, b boolean, tx text, byt bytea, dt date, tm time, ts timestamp, tstz timestamptz,
           iv interval, u uuid, jb jsonb, m mood, a_i int[], nul text);
         INSERT INTO t VALUES (1, -32768, 9223372036854775807, -9999999999.99, 'NaN', 1.5, '-Infinity', true,
           'héllo \"q\"', '\\x00ff10', '2024-02-29', '23:59:59.999999', '1999-12-31 23:59:59.999999',
           '2000-01-01 00:00:00.000001+00', '1 year 2 mons 3 days 04:05:06.789',
           'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"k\": [1, 2.5, null]}', 'happy', '{1,NULL,3}', NULL);",
    )
    .await;
    let server = SnowflakeServer::start().unwrap_or_else(|e| panic!("cannot start fakesnow: {e}"));
    let toml = format!(
        "name = \"sftypes\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\n[[sink]]\ntype = \"snowflake\"\n\
         account = \"xy12345\"\nurl = \"{}\"\nuser = \"svc_sluice\"\npassword = \"check\"\ndatabase = \"STREAMING\"\n\
         buffer = {{ count_records = 100, flush_time_s = 0.1 }}\n",
        env.src_url,
        server.url()
    );
    let pipeline = common::start(sluice::parse(&toml, &|_| None).expect("valid"));
    let sql = "SELECT RECORD_METADATA:operation::TEXT, RECORD_METADATA:key:id::TEXT, RECORD_CONTENT::TEXT, \
               RECORD_METADATA:commit_time::TEXT FROM \"T\" ORDER BY RECORD_METADATA:position::TEXT";
    let entries = |n: usize| until_rows(&server, "STREAMING", sql, move |rows| rows.len() == n);
    // The snapshot's row first, then an update and a delete.
    entries(1).await;
    env.src.batch_execute("UPDATE t SET tx = 'changed' WHERE id = 1; DELETE FROM t WHERE id = 1;").await.unwrap();
    // A column added on the source appears in the next entries' content (the log's columns
    // are VARIANT: no DDL).
    env.src
        .batch_execute("ALTER TABLE t ADD COLUMN extra text; INSERT INTO t (id, extra) VALUES (2, 'x');")
        .await
        .unwrap();
    let rows = entries(4).await;
    pipeline.stop().await;
    let added = snowflake_query(
        &server,
        "STREAMING",
        "SELECT RECORD_CONTENT:extra::TEXT FROM \"T\" WHERE RECORD_METADATA:key:id::INT = 2",
    );
    assert_eq!(added, vec![vec![Some("x".to_string())]], "the added column in the content");
    let ops: Vec<(Option<String>, Option<String>)> = rows.iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    let s = |v: &str| Some(v.to_string());
    assert_eq!(ops, [(s("r"), s("1")), (s("u"), s("1")), (s("d"), s("1")), (s("c"), s("2"))]);
    assert_eq!(rows[0][3], None, "a copied row has no commit time");
    assert!(rows[1][3].as_deref().is_some_and(|t| t.ends_with('Z')), "commit time in UTC: {:?}", rows[1][3]);
    assert_eq!(rows[2][2], None, "a delete has no content");
    let content: serde_json::Value = serde_json::from_str(rows[0][2].as_deref().unwrap()).unwrap();
    assert_eq!(
        content,
        serde_json::json!({
            "id": 1, "i2": -32768, "i8": 9223372036854775807_i64, "num": "-9999999999.99", "nan": "NaN", "r": 1.5,
            "d": "-Infinity", "b": true, "tx": "héllo \"q\"", "byt": "AP8Q", "dt": "2024-02-29",
            "tm": "23:59:59.999999", "ts": "1999-12-31T23:59:59.999999", "tstz": "2000-01-01T00:00:00.000001Z",
            "iv": "P1Y2M3DT4H5M6.789S", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "jb": {"k": [1, 2.5, null]},
            "m": "happy", "a_i": [1, null, 3], "nul": null
        })
    );
}

/// Waits until the replica's accounts, read by Snowflake's Python connector, equal the source's.
async fn replica_converges(env: &Env, server: &SnowflakeServer) {
    let columns =
        [("id", "\"ID\""), ("owner", "\"OWNER\""), ("balance", "\"BALANCE\""), ("md5(note)", "MD5(\"NOTE\")")];
    let sql = format!(
        "SELECT {} FROM \"ACCOUNTS\" ORDER BY \"ID\"",
        columns.iter().map(|(_, s)| *s).collect::<Vec<_>>().join(", ")
    );
    common::converge_to(env, "accounts", &columns, "accounts.id", || {
        let rows = snowflake_query(server, "REPLICA", &sql);
        Some(
            rows.into_iter()
                .map(|r| r.into_iter().map(|v| Some(v.unwrap_or_else(|| "<null>".into()))).collect())
                .collect(),
        )
    })
    .await;
}

/// Snapshot, then inserts, updates that leave a large (TOASTed, unchanged) column out, key
/// changes, deletes and truncates under crashes at the named points and SIGKILLs: the typed
/// replica ends equal to the source, row for row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_snowflake_replica_is_exact_across_crashes() {
    let seed = common::crash_seed();
    let env = Env::new(
        "CREATE TABLE accounts (id bigint PRIMARY KEY, owner text NOT NULL, balance numeric(14,2) NOT NULL, note text);
         ALTER TABLE accounts ALTER COLUMN note SET STORAGE EXTERNAL;
         INSERT INTO accounts SELECT g, 'owner-' || g, g % 1000, CASE WHEN g % 100 = 0 THEN repeat(md5(g::text), 200) END
           FROM generate_series(1, 3000) g;",
    )
    .await;
    let server = SnowflakeServer::start().unwrap_or_else(|e| panic!("cannot start fakesnow: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let config = crash_pipeline(dir.path(), "sfreplica", &env, &server, "mode = \"replica\"\ndatabase = \"REPLICA\"");
    let log = dir.path().join("sluice.log");
    let sluice = crash_under_load(&env, &config, &log, seed, true).await;
    replica_converges(&env, &server).await;
    sluice.stop(&log).await;
    let notes = snowflake_query(&server, "REPLICA", "SELECT COUNT(*) FROM \"ACCOUNTS\" WHERE \"NOTE\" IS NOT NULL");
    assert_ne!(notes[0][0].as_deref(), Some("0"), "large values survive updates that leave them out");
}

/// A typed replica: every type of docs/types.md in its Snowflake column, read back typed by
/// Snowflake's Python connector; then a column added (with a default) and one dropped on the
/// source, an update that leaves a TOASTed value out, and a truncate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_types_schema_changes_and_truncate() {
    let env = Env::new(
        "CREATE TYPE mood AS ENUM ('sad', 'happy');
         CREATE TABLE t (id int PRIMARY KEY, i2 smallint, i8 bigint, num numeric(12,2), opn numeric, r real,
           d double precision, b boolean, tx text, byt bytea, dt date, tm time, ts timestamp, tstz timestamptz,
           iv interval, u uuid, jb jsonb, m mood, a_i int[], inf_dt date, big text, gone int);
         ALTER TABLE t ALTER COLUMN big SET STORAGE EXTERNAL;
         INSERT INTO t VALUES (1, -32768, 9223372036854775807, -9999999999.99, 'NaN', 1.5, '-Infinity', true,
           'héllo \"q\"', '\\x00ff10', '2024-02-29', '23:59:59.999999', '1999-12-31 23:59:59.999999',
           '2000-01-01 00:00:00.000001+00', '1 year 2 mons 3 days 04:05:06.789',
           'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"k\": [1, 2.5, null]}', 'happy', '{1,NULL,3}', 'infinity',
           repeat('0123456789abcdef', 1000), 7);
         INSERT INTO t (id) VALUES (2);",
    )
    .await;
    let server = SnowflakeServer::start().unwrap_or_else(|e| panic!("cannot start fakesnow: {e}"));
    let toml = format!(
        "name = \"sftyped\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\n[[sink]]\ntype = \"snowflake\"\n\
         mode = \"replica\"\naccount = \"xy12345\"\nurl = \"{}\"\nuser = \"svc_sluice\"\npassword = \"check\"\n\
         database = \"REPLICA\"\nbuffer = {{ count_records = 100, flush_time_s = 0.1 }}\n",
        env.src_url,
        server.url()
    );
    let pipeline = common::start(sluice::parse(&toml, &|_| None).expect("valid"));
    let read = |sql: &str| snowflake_query(&server, "REPLICA", sql);
    let until = |sql: &'static str, want: Rows| until_rows(&server, "REPLICA", sql, move |rows| *rows == want);
    let s = |v: &str| Some(v.to_string());
    until("SELECT \"ID\" FROM \"T\" ORDER BY \"ID\"", vec![vec![s("1")], vec![s("2")]]).await;
    // Each column's Snowflake type, as the catalog lists it.
    let types = read(
        "SELECT COLUMN_NAME, DATA_TYPE, NUMERIC_PRECISION, NUMERIC_SCALE FROM INFORMATION_SCHEMA.COLUMNS \
         WHERE TABLE_NAME = 'T' ORDER BY ORDINAL_POSITION",
    );
    let types: Vec<String> = types
        .iter()
        .map(|r| match (&r[2], &r[3]) {
            (Some(p), Some(sc)) => format!("{} {}({p},{sc})", r[0].as_deref().unwrap(), r[1].as_deref().unwrap()),
            _ => format!("{} {}", r[0].as_deref().unwrap(), r[1].as_deref().unwrap()),
        })
        .collect();
    assert_eq!(
        types,
        [
            "ID NUMBER(38,0)",
            "I2 NUMBER(38,0)",
            "I8 NUMBER(38,0)",
            "NUM NUMBER(12,2)",
            "OPN TEXT",
            "R FLOAT",
            "D FLOAT",
            "B BOOLEAN",
            "TX TEXT",
            "BYT BINARY",
            "DT DATE",
            "TM TIME",
            "TS TIMESTAMP_NTZ",
            "TSTZ TIMESTAMP_TZ",
            "IV TEXT",
            "U TEXT",
            "JB VARIANT",
            "M TEXT",
            "A_I VARIANT",
            "INF_DT DATE",
            "BIG TEXT",
            "GONE NUMBER(38,0)"
        ]
    );
    // Values through the connector's own typed conversions (Python's str of each).
    let row = read("SELECT * EXCLUDE (\"BIG\"), LENGTH(\"BIG\") FROM \"T\" WHERE \"ID\" = 1");
    let want: Vec<Option<String>> = [
        "1",
        "-32768",
        "9223372036854775807",
        "-9999999999.99",
        "NaN",
        "1.5",
        "-inf",
        "True",
        "héllo \"q\"",
        "bytearray(b'\\x00\\xff\\x10')",
        "2024-02-29",
        "23:59:59.999999",
        "1999-12-31 23:59:59.999999",
        "2000-01-01 00:00:00.000001+00:00",
        "P1Y2M3DT4H5M6.789S",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "{\"k\":[1,2.5,null]}",
        "happy",
        "[1,null,3]",
        "9999-12-31",
        "7",
        "16000",
    ]
    .iter()
    .map(|v| s(v))
    .collect();
    assert_eq!(row, vec![want]);
    let paths = read("SELECT \"JB\":k[1]::FLOAT, \"A_I\"[2]::INT FROM \"T\" WHERE \"ID\" = 1");
    assert_eq!(paths, vec![vec![s("2.5"), s("3")]], "VARIANT paths read the documents");
    // Shape changes: a column added with a default (rows before it read as the default), one
    // dropped; an update that does not resend the TOASTed value; then a truncate.
    env.src
        .batch_execute(
            "ALTER TABLE t ADD COLUMN extra text DEFAULT 'dflt'; ALTER TABLE t DROP COLUMN gone;
             INSERT INTO t (id, extra) VALUES (3, 'x'); UPDATE t SET tx = 'changed' WHERE id = 1;",
        )
        .await
        .unwrap();
    until(
        "SELECT \"ID\", \"TX\", LENGTH(\"BIG\"), \"EXTRA\" FROM \"T\" ORDER BY \"ID\"",
        vec![
            vec![s("1"), s("changed"), s("16000"), s("dflt")],
            vec![s("2"), None, None, s("dflt")],
            vec![s("3"), None, None, s("x")],
        ],
    )
    .await;
    let gone = read("SELECT COUNT(*) FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_NAME = 'T' AND COLUMN_NAME = 'GONE'");
    assert_eq!(gone, vec![vec![s("0")]], "a dropped column is dropped (schema_changes = follow)");
    env.src.batch_execute("TRUNCATE t; INSERT INTO t (id, tx) VALUES (9, 'after');").await.unwrap();
    until("SELECT \"ID\", \"TX\" FROM \"T\" ORDER BY \"ID\"", vec![vec![s("9"), s("after")]]).await;
    pipeline.stop().await;
}

/// Avro records from Confluent's own serializer (a Schema Registry, as in the connector's
/// guide) land in the change log with the Kafka connector's metadata: the connector's
/// documented queries (`RECORD_METADATA:topic`, `:offset`, `RECORD_CONTENT:<field>`) read them,
/// in the table `topic2table` names; a replica sink of the same pipeline holds their current
/// state, typed (the tombstone deleted its key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_avro_records_land_with_the_connectors_metadata() {
    let broker = sluice_testkit::KafkaBroker::start().unwrap_or_else(|e| panic!("cannot start a Kafka broker: {e}"));
    let data = tempfile::tempdir().unwrap();
    let registry = common::kafka::registry(data.path()).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/produce_confluent.py");
    let out = std::process::Command::new("python3")
        .args([script, &broker.bootstrap(), &registry, "sf.shop.orders", "sf.shop.events"])
        .output()
        .expect("run python3");
    assert!(out.status.success(), "produce: {}", String::from_utf8_lossy(&out.stderr));
    let server = SnowflakeServer::start().unwrap_or_else(|e| panic!("cannot start fakesnow: {e}"));
    let toml = format!(
        "name = \"sfkafka\"\n[source]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopics = [\"sf.shop.orders\"]\n\
         format = \"avro\"\nschema_registry = \"{registry}\"\n\n[[sink]]\ntype = \"snowflake\"\naccount = \"xy12345\"\n\
         url = \"{}\"\nuser = \"svc_sluice\"\npassword = \"check\"\ndatabase = \"STREAMING\"\n\
         topic2table = {{ \"sf.shop.orders\" = \"ORDERS_LOG\" }}\nbuffer = {{ count_records = 100, flush_time_s = 0.1 }}\n\n\
         [[sink]]\ntype = \"snowflake\"\nmode = \"replica\"\naccount = \"xy12345\"\nurl = \"{url}\"\nuser = \"svc_sluice\"\n\
         password = \"check\"\ndatabase = \"REPLICA\"\nbuffer = {{ count_records = 100, flush_time_s = 0.1 }}\n",
        broker.bootstrap(),
        server.url(),
        url = server.url()
    );
    let pipeline = common::start(sluice::parse(&toml, &|_| None).expect("valid"));
    let sql = "SELECT RECORD_METADATA:topic::STRING, RECORD_METADATA:partition::INT, RECORD_METADATA:offset::INT, \
               RECORD_METADATA:key:id::INT, RECORD_CONTENT:name::STRING, RECORD_CONTENT:price::NUMBER(10,2), \
               RECORD_METADATA:CreateTime::NUMBER > 1600000000000 FROM ORDERS_LOG \
               ORDER BY RECORD_METADATA:key:id::INT, RECORD_METADATA:offset::INT";
    let rows = until_rows(&server, "STREAMING", sql, |rows| rows.len() == 5).await;
    // The replica sink of the same pipeline holds the records' current state, typed.
    let replica_sql = "SELECT \"ID\", \"NAME\", \"PRICE\", \"DAY\", \"FLAG\" FROM \"ORDERS\" ORDER BY \"ID\"";
    let want = vec![
        vec![
            Some("1".to_string()),
            Some("widget".into()),
            Some("12.50".into()),
            Some("2024-02-29".into()),
            Some("True".into()),
        ],
        vec![Some("2".to_string()), Some("gadget".into()), None, None, Some("False".into())],
    ];
    until_rows(&server, "REPLICA", replica_sql, |rows| *rows == want).await;
    pipeline.stop().await;
    let s = |v: &str| Some(v.to_string());
    // Each key's records are in one partition, in the order produced; (partition, offset) is
    // each record's own.
    let places: std::collections::HashSet<(Option<String>, Option<String>)> =
        rows.iter().map(|r| (r[1].clone(), r[2].clone())).collect();
    assert_eq!(places.len(), 5, "partition and offset identify each record: {rows:?}");
    for key in ["1", "3"] {
        let parts: std::collections::HashSet<&Option<String>> =
            rows.iter().filter(|r| r[3].as_deref() == Some(key)).map(|r| &r[1]).collect();
        assert_eq!(parts.len(), 1, "key {key} in one partition: {rows:?}");
    }
    let seen: Vec<Vec<Option<String>>> =
        rows.iter().map(|r| vec![r[0].clone(), r[3].clone(), r[4].clone(), r[5].clone(), r[6].clone()]).collect();
    let entry = |id: &str, name: Option<String>, price: Option<String>| {
        vec![s("sf.shop.orders"), s(id), name, price, s("True")]
    };
    assert_eq!(
        seen,
        vec![
            entry("1", s("widget"), s("10.00")),
            entry("1", s("widget"), s("12.50")),
            entry("2", s("gadget"), None),
            entry("3", s("gone"), None),
            // A tombstone: the key, no content.
            entry("3", None, None),
        ]
    );
}
