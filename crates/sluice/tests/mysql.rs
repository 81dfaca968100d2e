//! MariaDB source → PostgreSQL replica: a consistent snapshot, then the binlog, with every MySQL
//! type at its extremes, DDL mid-stream, a table created mid-stream, and restarts that resume
//! where the sinks stopped (by GTID and by file and position). The source is read back with the
//! `mariadb` client, the replica with PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use common::{connect, start, CONVERGE};
use std::sync::Arc;

use sluice_testkit::{pg_server, shared_mariadb, unique_name, wait_for, MariaDbOptions, MariaDbServer, PgServer};
use tokio_postgres::Client;

/// One test's MariaDB source database and PostgreSQL replica. The tests' SQL and configs name
/// the source database `app`; [`MyEnv::at`] puts this test's database in its place (the
/// PostgreSQL replica's schema carries the same name).
struct MyEnv {
    source: Arc<MariaDbServer>,
    /// This test's source database
    db: String,
    _target: PgServer,
    src_url: String,
    dst: Client,
    dst_url: String,
}

impl MyEnv {
    /// A database of its own on the MariaDB server this test binary shares.
    async fn new(setup: &str) -> MyEnv {
        Self::on(shared_mariadb(), unique_name("app_"), setup).await
    }

    /// A MariaDB server of its own, started with `opts` (for server-wide settings and state).
    async fn with(opts: MariaDbOptions, setup: &str) -> MyEnv {
        let source = MariaDbServer::start_with(opts).unwrap_or_else(|e| panic!("cannot start MariaDB: {e}"));
        Self::on(Arc::new(source), "app".into(), setup).await
    }

    async fn on(source: Arc<MariaDbServer>, db: String, setup: &str) -> MyEnv {
        let src_url = source.create_database(&db).unwrap_or_else(|e| panic!("{e}"));
        if !setup.is_empty() {
            source.cli(&db, setup).unwrap_or_else(|e| panic!("setup SQL failed: {e}"));
        }
        let target = pg_server();
        let dst_url = target.create_database("replica").await.unwrap_or_else(|e| panic!("{e}"));
        let dst = connect(&dst_url).await;
        MyEnv { source, db, _target: target, src_url, dst, dst_url }
    }

    /// Another database on the source's server for this test (a MySQL sink's target).
    fn named(&self, name: &str) -> String {
        format!("{}_{name}", self.db)
    }

    /// `text` with each `app.` (the nominal source database, as a whole word) naming this
    /// test's database instead.
    fn at(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find("app.") {
            let word_start = rest[..i].chars().next_back().is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            out.push_str(&rest[..i]);
            out.push_str(if word_start { &self.db } else { "app" });
            out.push('.');
            rest = &rest[i + 4..];
        }
        out.push_str(rest);
        out
    }

    fn config(&self, name: &str, source_extra: &str) -> sluice_config::PipelineConfig {
        let tables = if source_extra.contains("tables") { "" } else { "tables = [\"app.*\"]" };
        let toml = format!(
            "name = \"{name}\"\n[source]\ntype = \"mysql\"\nurl = \"{}\"\n{tables}\n{source_extra}\n\n\
             [[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n",
            self.src_url, self.dst_url
        );
        sluice::parse(&self.at(&toml), &|_| None).expect("valid test config")
    }

    fn src(&self, sql: &str) -> String {
        self.source.cli(&self.db, sql).unwrap_or_else(|e| panic!("{e}\nserver log:\n{}", self.source.log_tail(20)))
    }

    /// Rows of `sql` on the replica as text, one string per row.
    async fn dst_rows(&self, sql: &str) -> Option<Vec<String>> {
        let rows = self.dst.query(&self.at(sql), &[]).await.ok()?;
        Some(rows.iter().map(|r| r.get::<_, Option<String>>(0).unwrap_or_else(|| "NULL".into())).collect())
    }

    /// Rows of `sql` on the replica now; fails the test on a query error.
    async fn dst_now(&self, sql: &str) -> Vec<String> {
        let rows = self.dst.query(&self.at(sql), &[]).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        rows.iter().map(|r| r.get::<_, Option<String>>(0).unwrap_or_else(|| "NULL".into())).collect()
    }

    /// Waits until `pg_sql` on the replica returns exactly the lines `my_sql` prints on the
    /// source; panics with both on timeout.
    async fn converge(&self, my_sql: &str, pg_sql: &str) {
        self.converge_on(&self.dst, my_sql, pg_sql).await
    }

    /// [`MyEnv::converge`] for the replica `dst`.
    async fn converge_on(&self, dst: &Client, my_sql: &str, pg_sql: &str) {
        let pg_sql = &self.at(pg_sql);
        let rows = |sql: &str| {
            let sql = sql.to_string();
            async move {
                let rows = dst.query(&sql, &[]).await.ok()?;
                Some(rows.iter().map(|r| r.get::<_, Option<String>>(0).unwrap_or_else(|| "NULL".into())).collect())
            }
        };
        let what = format!("replica to match `{my_sql}`");
        let r = tokio::time::timeout(
            CONVERGE,
            wait_for(&what, CONVERGE, || async {
                let want: Vec<String> = self.src(my_sql).lines().map(str::to_string).collect();
                let got: Vec<String> = rows(pg_sql).await?;
                (got == want).then_some(())
            }),
        )
        .await;
        if r.is_err() {
            let want: Vec<String> = self.src(my_sql).lines().map(str::to_string).collect();
            let got: Vec<String> = rows(pg_sql).await.unwrap_or_default();
            let (w, g): (std::collections::HashSet<&String>, std::collections::HashSet<&String>) =
                (want.iter().collect(), got.iter().collect());
            let missing: Vec<&String> = want.iter().filter(|x| !g.contains(x)).take(10).collect();
            let extra: Vec<&String> = got.iter().filter(|x| !w.contains(x)).take(10).collect();
            panic!(
                "replica did not converge within {CONVERGE:?} on `{my_sql}`: source {} rows, replica {} rows\n\
                 missing on the replica: {missing:#?}\nonly on the replica: {extra:#?}",
                want.len(),
                got.len()
            );
        }
    }
}

/// Transactions piped into one `mariadb` client from a thread, until stopped (at most two
/// minutes); `next` writes each one's SQL.
struct Workload {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<u64>,
    client: std::process::Child,
}

impl Workload {
    fn start(
        env: &MyEnv,
        seed: u64,
        mut next: impl FnMut(&mut sluice_playground::scenario::Rng) -> String + Send + 'static,
    ) -> Workload {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut client = Command::new("mariadb")
            .args(["--no-defaults", "--batch", "--user=root", "--default-character-set=utf8mb4"])
            .arg(format!("--database={}", env.db))
            .arg(format!("--socket={}", env.source.socket().display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the mariadb client");
        let mut stdin = client.stdin.take().unwrap();
        let (stop, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let mut rng = sluice_playground::scenario::Rng::new(seed);
            let mut txns = 0u64;
            let started = Instant::now();
            while stop_rx.try_recv().is_err() && started.elapsed() < Duration::from_secs(120) {
                stdin.write_all(next(&mut rng).as_bytes()).expect("workload");
                txns += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            drop(stdin);
            txns
        });
        Workload { stop, thread, client }
    }

    /// Stops the workload once the client has run everything; returns the transactions sent.
    fn stop(mut self) -> u64 {
        let _ = self.stop.send(());
        let txns = self.thread.join().unwrap();
        assert!(self.client.wait().unwrap().success(), "the workload client failed");
        txns
    }
}

const TYPES: &str = "CREATE TABLE types (
    id INT PRIMARY KEY,
    ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, su SMALLINT UNSIGNED, mi MEDIUMINT, mu MEDIUMINT UNSIGNED,
    i INT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED,
    d DECIMAL(65,30), d2 DECIMAL(10,2), f FLOAT, db DOUBLE,
    b1 BIT(1), b64 BIT(64),
    c CHAR(10), vc VARCHAR(100) COLLATE utf8mb4_bin, tx TEXT, lat VARCHAR(20) CHARACTER SET latin1,
    bn BINARY(4), vbn VARBINARY(10), bl BLOB,
    dt DATE, dtm DATETIME(6), dt0 DATETIME, ts TIMESTAMP(3) NULL DEFAULT NULL, tm TIME(6), yr YEAR,
    js JSON, en ENUM('small','large'), st SET('a','b','c'), geo GEOMETRY
)";

/// Rows with ids `base+1..base+4`: minimums, maximums, NULLs and zero dates.
fn type_rows(base: i32) -> String {
    format!(
        "INSERT INTO types VALUES
        ({a}, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0,
         -99999999999999999999999999999999999.999999999999999999999999999999, -99999999.99, -3.40282e38,
         -1.7976931348623157e308, b'0', b'0', '', '', '', 'caf\u{e9} \u{20ac}', 0x00, '', '',
         '1000-01-01', '1000-01-01 00:00:00.000000', '1000-01-01 00:00:00', '1970-01-01 00:00:01.000',
         '-838:59:59.000000', 1901, '[]', 'small', '', ST_GeomFromText('POINT(0 0)')),
        ({b}, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295, 9223372036854775807,
         18446744073709551615, 99999999999999999999999999999999999.999999999999999999999999999999, 99999999.99,
         3.40282e38, 1.7976931348623157e308, b'1', b'1111111111111111111111111111111111111111111111111111111111111111',
         'abc', '\u{fc}\u{2713}\u{1F600}', REPEAT('x', 3000), '\u{ff}', 0x01020000, 0x00ff, 0xdeadbeef,
         '9999-12-31', '9999-12-31 23:59:59.999999', '2024-02-29 13:14:15', '2038-01-19 03:14:07.999',
         '838:59:59.000000', 2155, '{{\"a\": [1, 2.5, \"x\", null, true]}}', 'large', 'a,c',
         ST_GeomFromText('POINT(1 2)')),
        ({c}, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
         NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        ({d}, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0.5, 0.25, 0.5, 0.1, b'1', b'101', 'pad  ', 'x', 'y', 'z', 0x61, 0x62, 0x63,
         '0000-00-00', '0000-00-00 00:00:00', '2024-00-10 00:00:00', NULL, '-00:00:00.500000', 0, 'null', 'small',
         'a,b,c', NULL)",
        a = base + 1,
        b = base + 2,
        c = base + 3,
        d = base + 4
    )
}

/// What the replica holds for the rows of [`type_rows`], id by id (`row::text` without the id).
const EXPECTED: [&str; 4] = [
    "-128,0,-32768,0,-8388608,0,-2147483648,0,-9223372036854775808,0,-99999999999999999999999999999999999.999999999999999999999999999999,-99999999.99,-3.40282e+38,-1.7976931348623157e+308,f,\"\\\\x0000000000000000\",\"\",\"\",\"\",\"café €\",\"\\\\x00000000\",\"\\\\x\",\"\\\\x\",1000-01-01,\"1000-01-01 00:00:00\",\"1000-01-01 00:00:00\",\"1970-01-01 00:00:01+00\",-838:59:59,1901,[],small,\"\",\"\\\\x010100000000000000000000000000000000000000\"",
    "127,255,32767,65535,8388607,16777215,2147483647,4294967295,9223372036854775807,18446744073709551615,99999999999999999999999999999999999.999999999999999999999999999999,99999999.99,3.40282e+38,1.7976931348623157e+308,t,\"\\\\xffffffffffffffff\",abc,ü✓😀,xxx,ÿ,\"\\\\x01020000\",\"\\\\x00ff\",\"\\\\xdeadbeef\",9999-12-31,\"9999-12-31 23:59:59.999999\",\"2024-02-29 13:14:15\",\"2038-01-19 03:14:07.999+00\",838:59:59,2155,\"{\"\"a\"\": [1, 2.5, \"\"x\"\", null, true]}\",large,\"a,c\",\"\\\\x0101000000000000000000f03f0000000000000040\"",
    ",,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,",
    "1,1,1,1,1,1,1,1,1,1,0.500000000000000000000000000000,0.25,0.5,0.1,t,\"\\\\x0000000000000005\",pad,x,y,z,\"\\\\x61000000\",\"\\\\x62\",\"\\\\x63\",,,,,-00:00:00.5,0,null,small,\"a,b,c\",",
];

/// The replica's rows of `types` as text without the id; the long text column shortened.
const PG_TYPES: &str = "SELECT regexp_replace(substr(t::text, length(id::text) + 3, length(t::text) - length(id::text) - 3), 'xxxx+', 'xxx', 'g') \
                        FROM app.types t ORDER BY id";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_stream_carries_every_type_at_its_extremes() {
    let env = MyEnv::new(&format!("{TYPES}; {}", type_rows(0))).await;
    let pipeline = start(env.config("mytypes", ""));
    wait_for("the snapshot rows on the replica", CONVERGE, || async {
        (env.dst_rows("SELECT id::text FROM app.types").await?.len() == 4).then_some(())
    })
    .await;
    // The same rows again, now through the binlog, plus updates and deletes.
    env.src(&type_rows(10));
    env.src("UPDATE types SET vc = 'changed', d2 = -0.01 WHERE id = 12; DELETE FROM types WHERE id = 13");
    wait_for("the streamed rows on the replica", CONVERGE, || async {
        let rows = env.dst_rows("SELECT id::text || ':' || coalesce(vc, '') FROM app.types ORDER BY id").await?;
        (rows.len() == 7 && rows.contains(&"12:changed".to_string())).then_some(())
    })
    .await;
    let got = env.dst_now(PG_TYPES).await;
    let ids = env.dst_now("SELECT id::text AS k FROM app.types ORDER BY id").await;
    assert_eq!(ids, ["1", "2", "3", "4", "11", "12", "14"]);
    for (i, want) in EXPECTED.iter().enumerate() {
        assert_eq!(got[i], *want, "snapshot row {} differs", i + 1);
    }
    assert_eq!(got[4], EXPECTED[0], "streamed row 11 differs from its snapshot twin");
    let row12 = EXPECTED[1].replace("99999999.99,3.4", "-0.01,3.4");
    let row12 = row12.replacen("ü✓😀", "changed", 1);
    assert_eq!(got[5], row12, "streamed row 12 (updated)");
    assert_eq!(got[6], EXPECTED[3], "streamed row 14 differs from its snapshot twin");
    // The source agrees on what it holds (read by the mariadb client).
    assert_eq!(env.src("SELECT COUNT(*), SUM(id) FROM types").trim(), "7\t47");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_and_new_tables_mid_stream_and_restarts_resume_exactly() {
    for gtid in ["auto", "off"] {
        let env = MyEnv::new(
            "CREATE TABLE orders (id BIGINT PRIMARY KEY, item VARCHAR(20), qty INT);
             INSERT INTO orders SELECT seq, CONCAT('item', seq), seq % 7 FROM seq_1_to_5000;",
        )
        .await;
        let cfg = env.config("myddl", &format!("gtid = \"{gtid}\"\nchunk_rows = 700"));
        let my_orders = "SELECT CONCAT_WS(',', id, item, IFNULL(qty, 'NULL')) FROM orders ORDER BY id";
        let pg_orders = "SELECT concat_ws(',', id, item, coalesce(qty::text, 'NULL')) FROM app.orders ORDER BY id";
        let pipeline = start(cfg.clone());
        env.converge(my_orders, pg_orders).await;
        env.src("UPDATE orders SET qty = qty + 100 WHERE id % 10 = 0; DELETE FROM orders WHERE id > 4990");
        env.converge(my_orders, pg_orders).await;

        // A column added, then a table created and filled, while streaming.
        env.src("ALTER TABLE orders ADD COLUMN note VARCHAR(30) NULL; UPDATE orders SET note = 'n' WHERE id < 5");
        env.src("CREATE TABLE later (k VARCHAR(10) PRIMARY KEY, v INT); INSERT INTO later VALUES ('a', 1), ('b', 2)");
        let my_note = "SELECT CONCAT_WS(',', id, IFNULL(note, 'NULL')) FROM orders WHERE id < 8 ORDER BY id";
        let pg_note = "SELECT concat_ws(',', id, coalesce(note, 'NULL')) FROM app.orders WHERE id < 8 ORDER BY id";
        env.converge(my_note, pg_note).await;
        let my_later = "SELECT CONCAT_WS(',', k, v) FROM later ORDER BY k";
        let pg_later = "SELECT concat_ws(',', k, v) FROM app.later ORDER BY k";
        env.converge(my_later, pg_later).await;
        // A truncate empties the replica's table too.
        env.src(
            "INSERT INTO later VALUES ('z', 26); TRUNCATE TABLE later; INSERT INTO later VALUES ('c', 3), ('d', 4)",
        );
        env.converge(my_later, pg_later).await;
        assert_eq!(env.dst_now("SELECT string_agg(k, ',' ORDER BY k) FROM app.later").await, ["c,d"]);
        pipeline.stop().await;

        // Changes while stopped arrive after a restart, once each.
        env.src("INSERT INTO orders (id, item, qty) VALUES (9001, 'late', 1); UPDATE later SET v = v + 10");
        env.src("ALTER TABLE orders DROP COLUMN qty");
        env.src("INSERT INTO orders (id, item) VALUES (9002, 'after drop')");
        let pipeline = start(cfg);
        let my_orders = "SELECT CONCAT_WS(',', id, item) FROM orders ORDER BY id";
        let pg_orders = "SELECT concat_ws(',', id, item) FROM app.orders ORDER BY id";
        env.converge(my_orders, pg_orders).await;
        env.converge(my_later, pg_later).await;
        assert!(!pipeline.is_finished(), "gtid = {gtid}: pipeline must keep running");
        pipeline.stop().await;
        // The checkpoint holds a MySQL position, with GTIDs only when they are tracked.
        let pos: String = env
            .dst
            .query_one("SELECT position::text FROM sluice.checkpoints WHERE pipeline = 'myddl'", &[])
            .await
            .unwrap()
            .get(0);
        assert!(pos.contains("mysql-bin.0000"), "{pos}");
        assert_eq!(pos.contains("gtids"), gtid == "auto", "gtid = {gtid}: {pos}");
    }
}

/// Writes to `table` while it is copied: updates, inserts, deletes, and key changes to keys
/// below every other (the copy has passed them: only the move tells the sink about the row).
fn copy_workload(env: &MyEnv, table: &'static str, seed: u64) -> Workload {
    let mut next_id = seed * 1_000_000;
    Workload::start(env, seed, move |rng| {
        let mut sql = String::from("BEGIN;\n");
        for _ in 0..rng.range(1, 5) {
            let id = rng.range(1, 20_000);
            next_id += 1;
            sql.push_str(&match rng.range(1, 10) {
                1..=5 => format!("UPDATE {table} SET v = CONCAT(v, '+'), n = n + 1 WHERE id = {id};\n"),
                6 | 7 => format!("INSERT INTO {table} VALUES ({next_id}, 'new', 0);\n"),
                8 => format!("DELETE FROM {table} WHERE id = {id};\n"),
                _ => format!("UPDATE {table} SET id = -{next_id} WHERE id = {id};\n"),
            });
        }
        sql.push_str("COMMIT;\n");
        sql
    })
}

/// Live-table copies with a MariaDB source: a table renamed into the selection while writes go
/// on, then a sink added to the pipeline. Only what a sink lacks is copied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_renamed_in_and_sinks_added_are_copied_while_streaming() {
    let env = MyEnv::new(
        "CREATE TABLE orders (id BIGINT PRIMARY KEY, v VARCHAR(200) NOT NULL, n INT NOT NULL);
         INSERT INTO orders SELECT seq, CONCAT('o', seq), 0 FROM seq_1_to_3000;
         CREATE TABLE staging (id BIGINT PRIMARY KEY, v VARCHAR(200) NOT NULL, n INT NOT NULL);
         INSERT INTO staging SELECT seq, CONCAT('s', seq), 0 FROM seq_1_to_20000;",
    )
    .await;
    let source_extra = "exclude = [\"app.staging\"]\nchunk_rows = 500";
    let pipeline = start(env.config("myfill", source_extra));
    let my = |t: &str| format!("SELECT CONCAT_WS('|', id, v, n) FROM {t} ORDER BY id");
    let pg = |t: &str| env.at(&format!("SELECT concat_ws('|', id, v, n) FROM app.{t} ORDER BY id"));
    env.converge(&my("orders"), &pg("orders")).await;

    env.src("RENAME TABLE staging TO moved");
    let writes = copy_workload(&env, "moved", 31);
    common::wait_copied(&env.dst, "myfill", &["orders", "moved"]).await;
    assert!(writes.stop() > 0, "the workload ran during the copy");
    env.converge(&my("moved"), &pg("moved")).await;
    env.src("UPDATE moved SET v = 'after' WHERE id <= 10; DELETE FROM moved WHERE id > 19990 AND id < 20001");
    env.converge(&my("moved"), &pg("moved")).await;
    pipeline.stop().await;

    // A second sink: it gets both tables copied while writes go on; the first keeps its rows
    // as they are (a row only it holds survives: nothing replaced its table).
    env.dst.batch_execute(&env.at("INSERT INTO app.orders VALUES (-1, 'only in the first sink', 0)")).await.unwrap();
    let second_url = env._target.create_database("second").await.unwrap_or_else(|e| panic!("{e}"));
    let second = connect(&second_url).await;
    let toml = env.at(&format!(
        "name = \"myfill\"\n[source]\ntype = \"mysql\"\nurl = \"{}\"\ntables = [\"app.*\"]\n{source_extra}\n\n\
         [[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n\n[[sink]]\ntype = \"postgres\"\nurl = \"{second_url}\"\n",
        env.src_url, env.dst_url
    ));
    let both = start(sluice::parse(&toml, &|_| None).unwrap());
    let writes = copy_workload(&env, "moved", 37);
    common::wait_copied(&second, "myfill", &["orders", "moved"]).await;
    assert!(writes.stop() > 0, "the workload ran during the copy");
    env.converge(&my("moved"), &pg("moved")).await;
    let second_rows = |sql: String| {
        let second = &second;
        async move {
            let rows = second.query(&sql, &[]).await.ok()?;
            Some(rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>())
        }
    };
    for t in ["orders", "moved"] {
        let want: Vec<String> = env.src(&my(t)).lines().map(str::to_string).collect();
        wait_for(&format!("the second sink's {t} to match the source"), CONVERGE, || async {
            (second_rows(pg(t)).await? == want).then_some(())
        })
        .await;
    }
    both.stop().await;
    let marker = env.dst_now("SELECT v FROM app.orders WHERE id = -1").await;
    assert_eq!(marker, ["only in the first sink"], "the first sink's orders were copied again");
}

/// Copies page by the key in the order the server sorts it, one row per chunk: ENUM by index
/// and SET by bit mask (not as text), DECIMAL beyond a double's 15 digits, BIT as a number, and
/// a zero date (read as the sentinel, which sorts after 1960) in the key. A row skipped by a
/// page predicate that compares otherwise is missing on the replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_page_by_keys_in_the_servers_own_order() {
    let env = MyEnv::new(
        "SET SESSION sql_mode = '';
         CREATE TABLE s_enum (e ENUM('zeta','alpha','mid') NOT NULL, n INT NOT NULL, PRIMARY KEY (e, n));
         INSERT INTO s_enum VALUES ('zeta', 1), ('zeta', 2), ('alpha', 3), ('alpha', 4), ('mid', 5), ('mid', 6);
         CREATE TABLE s_set (s SET('b','a','c') NOT NULL PRIMARY KEY, n INT NOT NULL);
         INSERT INTO s_set VALUES ('b', 11), ('a', 12), ('b,a', 13), ('c', 14), ('a,c', 15);
         CREATE TABLE s_dec (d DECIMAL(30,10) NOT NULL PRIMARY KEY, n INT NOT NULL);
         INSERT INTO s_dec VALUES (12345678901234567890.0000000001, 21), (12345678901234567890.0000000002, 22),
           (12345678901234567890.0000000003, 23), (-12345678901234567890.0000000001, 24);
         CREATE TABLE s_bit (b BIT(12) NOT NULL PRIMARY KEY, n INT NOT NULL);
         INSERT INTO s_bit VALUES (b'000000000001', 31), (b'000100000000', 32), (b'100000000000', 33), (b'000000010000', 34);
         CREATE TABLE s_date (d DATE NOT NULL PRIMARY KEY, n INT NOT NULL);
         INSERT INTO s_date VALUES ('0000-00-00', 41), ('1960-01-01', 42), ('2000-01-01', 43), ('2024-02-29', 44);
         CREATE TABLE k_ready (id INT PRIMARY KEY);",
    )
    .await;
    let tables = ["k_enum", "k_set", "k_dec", "k_bit", "k_date"];
    let pipeline = start(env.config("mykeys", "tables = [\"app.k_*\"]\nchunk_rows = 1\nzero_dates = \"1970-01-01\""));
    common::wait_copied(&env.dst, "mykeys", &["k_ready"]).await;
    // Nothing is selected yet; renamed in, each table is copied while streaming.
    env.src("RENAME TABLE s_enum TO k_enum, s_set TO k_set, s_dec TO k_dec, s_bit TO k_bit, s_date TO k_date");
    common::wait_copied(&env.dst, "mykeys", &tables).await;
    for t in tables {
        env.converge(&format!("SELECT n FROM {t} ORDER BY n"), &format!("SELECT n::text FROM app.{t} ORDER BY n"))
            .await;
    }
    let dates = env.dst_now("SELECT d::text FROM app.k_date ORDER BY n").await;
    assert_eq!(dates, ["1970-01-01", "1960-01-01", "2000-01-01", "2024-02-29"], "zero date as the sentinel");
    let decimals = env.dst_now("SELECT d::text FROM app.k_dec ORDER BY n").await;
    assert_eq!(decimals[2], "12345678901234567890.0000000003", "decimal keys keep every digit");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tables_still_move_the_position() {
    let env = MyEnv::new("CREATE TABLE a (id INT PRIMARY KEY); CREATE TABLE unrelated (id INT PRIMARY KEY)").await;
    let cfg = env.config("myidle", "tables = [\"app.a\"]\nheartbeat_ms = 200");
    let pipeline = start(cfg);
    let position = || async {
        env.dst_rows("SELECT position::text FROM sluice.checkpoints WHERE pipeline = 'myidle'").await?.pop()
    };
    let first = wait_for("a checkpoint", CONVERGE, &position).await;
    env.src("INSERT INTO unrelated VALUES (1), (2), (3)");
    let after = env.src("SHOW MASTER STATUS");
    let what = format!("the position to move past writes to an unselected table (checkpoint {first}; binlog {after})");
    wait_for(&what, CONVERGE, || async {
        let now = position().await?;
        (now != first).then_some(())
    })
    .await;
    assert_eq!(env.dst_rows("SELECT count(*)::text FROM app.a").await.unwrap(), ["0"]);
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_explains_a_statement_binlog() {
    let env = MyEnv::with(
        MariaDbOptions { settings: vec![("binlog_format".into(), "STATEMENT".into())] },
        "CREATE TABLE t (id INT PRIMARY KEY)",
    )
    .await;
    let cfg = env.config("mycheck", "");
    let results = cfg.source.check("mycheck").await;
    let format = results.iter().find(|r| r.name.contains("binlog_format")).expect("a binlog_format check");
    assert!(!format.ok, "{format:?}");
    assert!(format.detail.contains("SET GLOBAL binlog_format = 'ROW'"), "{}", format.detail);
    for name in ["log_bin", "binlog_row_image", "privileges", "tables", "server_id"] {
        let r =
            results.iter().find(|r| r.name.contains(name)).unwrap_or_else(|| panic!("no {name} check: {results:?}"));
        assert!(r.ok, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_binlog_stops_and_when_needed_copies_everything_again() {
    // A server of its own: purging binlogs would pull them from under other tests.
    let env = MyEnv::with(
        MariaDbOptions::default(),
        "CREATE TABLE t (id INT PRIMARY KEY, v INT); INSERT INTO t VALUES (1, 1)",
    )
    .await;
    let cfg = env.config("mypurge", "gtid = \"off\"");
    let pipeline = start(cfg.clone());
    wait_for("the snapshot", CONVERGE, || async {
        (env.dst_rows("SELECT count(*)::text FROM app.t").await? == ["1"]).then_some(())
    })
    .await;
    pipeline.stop().await;
    env.src("INSERT INTO t VALUES (2, 2); FLUSH BINARY LOGS; INSERT INTO t VALUES (3, 3); FLUSH BINARY LOGS");
    let last = env.src("SHOW MASTER STATUS");
    let file = last.split('\t').next().unwrap().to_string();
    // A dump thread of the stopped run may still hold the old file for a moment.
    wait_for("the old binlogs to be purged", CONVERGE, || async {
        env.src(&format!("PURGE BINARY LOGS TO '{file}'"));
        (!env.src("SHOW BINARY LOGS").contains("mysql-bin.000001")).then_some(())
    })
    .await;
    let pipeline = start(cfg);
    let r = tokio::time::timeout(Duration::from_secs(60), pipeline.handle).await.expect("pipeline must stop by itself");
    let e = r.expect("no panic").expect_err("pipeline must fail");
    let msg = sluice::chain(&e);
    assert!(msg.contains("purged") && msg.contains("snapshot = \"when_needed\""), "{msg}");
    assert_eq!(env.dst_rows("SELECT count(*)::text FROM app.t").await.unwrap(), ["1"], "nothing applied past the gap");

    // The explicit option: copy everything again, then stream on.
    env.src("DELETE FROM t WHERE id = 1");
    let pipeline = start(env.config("mypurge", "gtid = \"off\"\nsnapshot = \"when_needed\""));
    let my = "SELECT CONCAT_WS(',', id, v) FROM t ORDER BY id";
    let pg = "SELECT concat_ws(',', id, v) FROM app.t ORDER BY id";
    env.converge(my, pg).await;
    env.src("INSERT INTO t VALUES (4, 4)");
    env.converge(my, pg).await;
    assert_eq!(env.dst_now("SELECT string_agg(id::text, ',' ORDER BY id) FROM app.t").await, ["2,3,4"]);
    pipeline.stop().await;
}

/// `sluice run` killed with SIGKILL at random moments (twice during the snapshot, then while
/// streaming) under a mixed workload written by the `mariadb` client; after the last restart the
/// replica equals the source row for row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_leaves_an_exact_replica() {
    sigkill_at_random("auto").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_without_gtids_leaves_an_exact_replica() {
    sigkill_at_random("off").await
}

/// SIGKILL at random moments (two during the snapshot) under writes, resuming by GTID
/// (`gtid = "auto"`) or by binlog file and offset (`"off"`); the replica must end exact.
async fn sigkill_at_random(gtid: &str) {
    use sluice_playground::scenario::Rng;

    let seed: u64 = std::env::var("SLUICE_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(42, |d| d.as_nanos() as u64)
    });
    println!("crash test seed: {seed}, gtid = {gtid} (rerun with SLUICE_CRASH_SEED={seed})");
    let env = MyEnv::new(
        "CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner VARCHAR(100) NOT NULL, balance DECIMAL(14,2) NOT NULL, note TEXT);
         CREATE TABLE ledger (id BIGINT AUTO_INCREMENT PRIMARY KEY, account BIGINT NOT NULL, amount DECIMAL(14,2) NOT NULL);
         INSERT INTO accounts SELECT seq, CONCAT('owner-', seq), seq % 1000, IF(seq % 100 = 0, REPEAT('n', 2000), NULL)
           FROM seq_1_to_150000;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        env.at(&format!(
            "name = \"mycrash\"\n[source]\ntype = \"mysql\"\nurl = \"{}\"\ntables = [\"app.*\"]\ngtid = \"{gtid}\"\n\n\
             [[sink]]\ntype = \"postgres\"\nurl = \"{}\"\nbatch = {{ max_rows = 500, max_delay_ms = 20 }}\n",
            env.src_url, env.dst_url
        )),
    )
    .unwrap();
    let log = dir.path().join("sluice.log");
    let config = config.display().to_string();
    let spawn = || common::process::spawn(&config, &log).child;
    let log_tail = || common::process::log_tail(&log);

    // The workload: transactions of 1 to 30 statements piped into one mariadb client.
    let workload = Workload::start(&env, seed ^ 0x5eed, |rng| {
        let mut sql = String::from("BEGIN;\n");
        for _ in 0..rng.range(1, 30) {
            let id = rng.range(1, 160_000);
            sql.push_str(&match rng.range(1, 8) {
                1..=4 => format!(
                    "UPDATE accounts SET balance = balance + {}, owner = LEFT(CONCAT(owner, '.'), 100) WHERE id = {id};\n",
                    rng.range(-50, 50)
                ),
                5 => format!("INSERT INTO accounts VALUES ({id}, 'new', 0, NULL) ON DUPLICATE KEY UPDATE note = 'upserted';\n"),
                6 => format!("DELETE FROM accounts WHERE id = {id};\n"),
                _ => format!("INSERT INTO ledger (account, amount) VALUES ({id}, {}.{:02});\n", rng.range(-999, 999), rng.range(0, 99)),
            });
        }
        sql.push_str("COMMIT;\n");
        sql
    });

    let mut rng = Rng::new(seed);
    let mut sluice = spawn();
    let delays_ms = [200, 400, rng.range(0, 1500), rng.range(200, 2500), rng.range(0, 800), rng.range(0, 300)];
    let copied = || async {
        let rows = env
            .dst_rows(
                "SELECT count(*)::text FROM sluice.checkpoints c, jsonb_array_elements(c.state->'tables') t \
                 WHERE c.pipeline = 'mycrash' AND t->>'state' = 'copied'",
            )
            .await?;
        (rows == ["2"]).then_some(())
    };
    for (i, d) in delays_ms.iter().enumerate() {
        if i >= 2 {
            wait_for("both tables copied", CONVERGE, copied).await;
        }
        // Deliberately random kill moments, not a wait for a condition.
        tokio::time::sleep(Duration::from_millis(*d as u64)).await;
        if let Ok(Some(status)) = sluice.try_wait() {
            panic!("sluice exited by itself ({status}) before kill {i}:\n{}", log_tail());
        }
        sluice.kill().expect("SIGKILL");
        sluice.wait().unwrap();
        sluice = spawn();
    }
    let txns = workload.stop();
    assert!(txns > 50, "workload too small to mean anything: {txns} transactions");

    let my_accounts = "SELECT CONCAT_WS('|', id, owner, balance, IFNULL(note, '~')) FROM accounts ORDER BY id";
    let pg_accounts = "SELECT concat_ws('|', id, owner, balance, coalesce(note, '~')) FROM app.accounts ORDER BY id";
    let my_ledger = "SELECT CONCAT_WS('|', id, account, amount) FROM ledger ORDER BY id";
    let pg_ledger = "SELECT concat_ws('|', id, account, amount) FROM app.ledger ORDER BY id";
    env.converge(my_accounts, pg_accounts).await;
    env.converge(my_ledger, pg_ledger).await;
    if let Ok(Some(status)) = sluice.try_wait() {
        panic!("sluice exited ({status}):\n{}", log_tail());
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(sluice.id() as i32, libc::SIGTERM) };
    let status = wait_for("sluice to exit after SIGTERM", Duration::from_secs(60), || {
        let s = sluice.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert!(status.success(), "exit {status}:\n{}", log_tail());
    env.converge(my_accounts, pg_accounts).await;
    let all = std::fs::read_to_string(&log).unwrap();
    let starts = all.matches("pipeline starting").count();
    let snapshots = all.matches("snapshot started").count();
    // A start after a kill during the snapshot copies the tables again: by a new snapshot when
    // no sink held a position yet, else while streaming.
    let copies = all.matches("table will be copied while streaming").count();
    eprintln!("{txns} workload transactions, {starts} starts, {snapshots} snapshots, {copies} live copies");
    assert!(starts > delays_ms.len() / 2, "expected a start for most kills, saw {starts}");
    assert!(
        snapshots >= 2 || snapshots == 1 && copies >= 1,
        "no kill landed during the snapshot; the test lost its point:\n{}",
        log_tail()
    );
    let pos = env.dst_now("SELECT position::text FROM sluice.checkpoints WHERE pipeline = 'mycrash'").await;
    assert_eq!(pos[0].contains("gtids"), gtid == "auto", "gtid = {gtid}: {pos:?}");
}

const CRASH_SETUP: &str = "
    CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner VARCHAR(200) NOT NULL, balance DECIMAL(14,2) NOT NULL, note TEXT);
    INSERT INTO accounts SELECT seq, CONCAT('owner-', seq), seq % 1000, IF(seq % 10 = 0, REPEAT('n', 2000), NULL)
      FROM seq_1_to_20000;
    CREATE TABLE tags (tag VARCHAR(10) NOT NULL, account BIGINT NOT NULL, PRIMARY KEY (account, tag));
    INSERT INTO tags SELECT CONCAT('t', seq % 7), seq FROM seq_1_to_3000;";

/// Updates, inserts, deletes and key changes on `accounts` and `tags`.
fn crash_workload(env: &MyEnv, seed: u64) -> Workload {
    let mut next = seed * 1_000_000;
    Workload::start(env, seed, move |rng| {
        let mut sql = String::from("BEGIN;\n");
        for _ in 0..rng.range(1, 8) {
            let id = rng.range(1, 20_000);
            next += 1;
            sql.push_str(&match rng.range(1, 10) {
                1..=4 => format!(
                    "UPDATE accounts SET balance = balance + 1, owner = LEFT(CONCAT(owner, '.'), 200) WHERE id = {id};\n"
                ),
                5 => format!("INSERT INTO accounts VALUES ({next}, 'new', 0, REPEAT('m', 1000));\n"),
                6 => format!("DELETE FROM accounts WHERE id = {id};\n"),
                7 => format!("UPDATE accounts SET id = -{next} WHERE id = {id};\n"),
                8 => format!("DELETE FROM tags WHERE account = {};\n", id % 3000),
                _ => format!("INSERT IGNORE INTO tags VALUES ('t{}', {});\n", rng.range(0, 9), id % 3000),
            });
        }
        sql.push_str("COMMIT;\n");
        sql
    })
}

/// An abort at each of the core's named crash points (`SLUICE_CRASH_AT`), with GTIDs tracked
/// and not, then a clean run under writes: the replica equals the source row for row. The
/// backfill points crash while a second sink is being filled. (The PostgreSQL source's
/// `source.*_confirm` points have no MySQL counterpart: a binlog has nothing to confirm.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_named_point_ends_with_an_exact_replica() {
    use common::process::{crash_there, spawn};
    let env = MyEnv::new(CRASH_SETUP).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sluice.log");
    let tables = [
        (
            "SELECT CONCAT_WS('|', id, owner, balance, IFNULL(note, '~')) FROM accounts ORDER BY id",
            "SELECT concat_ws('|', id, owner, balance, coalesce(note, '~')) FROM app.accounts ORDER BY id",
        ),
        (
            "SELECT CONCAT_WS('|', account, tag) FROM tags ORDER BY account, tag",
            "SELECT concat_ws('|', account, tag) FROM app.tags ORDER BY account, tag COLLATE \"C\"",
        ),
    ];
    let points = [
        ("snapshot.mid_table", 25),
        ("sink.before_commit", 6),
        ("sink.after_commit", 6),
        ("backfill.mid_chunk", 15),
        ("backfill.after_chunk", 15),
    ];
    let mut run = 0;
    for gtid in ["auto", "off"] {
        for (point, hit) in points {
            run += 1;
            eprintln!("crash point {point}, hit {hit}, gtid = {gtid}");
            let name = format!("mypoints{run}");
            let (url, dst) = {
                let url = env._target.create_database(&format!("points{run}")).await.unwrap();
                (url.clone(), connect(&url).await)
            };
            let sink = |url: &str| {
                format!(
                    "[[sink]]\ntype = \"postgres\"\nurl = \"{url}\"\nbatch = {{ max_rows = 300, max_delay_ms = 20 }}\n"
                )
            };
            let head = env.at(&format!(
                "name = \"{name}\"\n[source]\ntype = \"mysql\"\nurl = \"{}\"\ntables = [\"app.*\"]\ngtid = \"{gtid}\"\n\
                 chunk_rows = 500\n\n{}",
                env.src_url,
                sink(&url)
            ));
            let one = dir.path().join(format!("{name}.toml"));
            std::fs::write(&one, &head).unwrap();
            let one = one.display().to_string();
            let writes = crash_workload(&env, run);
            let mut replicas = vec![dst];
            if point.starts_with("backfill.") {
                // The first sink copies everything; then a second sink joins and crashes mid-copy.
                let first = spawn(&one, &log);
                common::wait_copied(&replicas[0], &name, &["accounts", "tags"]).await;
                first.stop(&log).await;
                let second = env._target.create_database(&format!("points{run}b")).await.unwrap();
                replicas.push(connect(&second).await);
                let two = dir.path().join(format!("{name}-two.toml"));
                std::fs::write(&two, format!("{head}\n{}", sink(&second))).unwrap();
                let two = two.display().to_string();
                crash_there(&two, &log, point, hit).await;
                let sluice = spawn(&two, &log);
                assert!(writes.stop() > 0);
                for dst in &replicas {
                    for (my, pg) in tables {
                        env.converge_on(dst, my, pg).await;
                    }
                }
                sluice.stop(&log).await;
            } else {
                crash_there(&one, &log, point, hit).await;
                let sluice = spawn(&one, &log);
                assert!(writes.stop() > 0);
                for (my, pg) in tables {
                    env.converge_on(&replicas[0], my, pg).await;
                }
                sluice.stop(&log).await;
            }
            // Nothing moved after the stop: one last exact comparison, then the position kind.
            for dst in &replicas {
                for (my, pg) in tables {
                    env.converge_on(dst, my, pg).await;
                }
                let pos: String = dst
                    .query_one("SELECT position::text FROM sluice.checkpoints WHERE pipeline = $1", &[&name])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(pos.contains("gtids"), gtid == "auto", "gtid = {gtid}: {pos}");
            }
        }
    }
}

/// A MySQL sink loads a snapshot over several connections, each committing its share; a crash
/// mid-snapshot (source side, and right after a sink commit) leaves a partial table that the
/// next run empties and copies again: the replica ends equal to the source, counted and
/// checksummed by the `mariadb` client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mysql_sink_crashed_mid_snapshot_ends_with_an_exact_replica() {
    use common::process::{crash_there, spawn};
    let env = MyEnv::new(
        "CREATE TABLE big (id BIGINT PRIMARY KEY, v VARCHAR(40) NOT NULL, n INT NOT NULL);
         INSERT INTO big SELECT seq, MD5(seq), seq % 1000 FROM seq_1_to_120000;",
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sluice.log");
    let digest = "SELECT COUNT(*), SUM(CRC32(CONCAT_WS('|', id, v, n))) FROM big";
    let mut partial_seen = false;
    for (run, (point, hit)) in [("sink.after_load_commit", 2), ("snapshot.mid_table", 40)].into_iter().enumerate() {
        let db = env.named(&format!("replica{run}"));
        let replica = env.source.create_database(&db).unwrap();
        let config = dir.path().join(format!("{db}.toml"));
        std::fs::write(
            &config,
            env.at(&format!(
                "name = \"myload{run}\"\n[source]\ntype = \"mysql\"\nurl = \"{}\"\ntables = [\"app.big\"]\nchunk_rows = 2000\n\n\
                 [[sink]]\ntype = \"mysql\"\nurl = \"{replica}\"\nload_connections = 3\n\
                 batch = {{ max_rows = 20000, max_delay_ms = 50 }}\n",
                env.src_url
            )),
        )
        .unwrap();
        let config = config.display().to_string();
        crash_there(&config, &log, point, hit).await;
        let partial = env.source.cli(&db, "SELECT COUNT(*) FROM big").unwrap_or_default();
        eprintln!("{point}: {} rows in the replica after the crash", partial.trim());
        let partial: u64 = partial.trim().parse().unwrap_or(0);
        partial_seen |= partial > 0 && partial < 119_990;
        let sluice = spawn(&config, &log);
        let want = env.src(digest);
        wait_for(&format!("the replica to equal the source after a crash at {point}"), CONVERGE, || async {
            (env.source.cli(&db, digest).ok()? == want).then_some(())
        })
        .await;
        env.src("UPDATE big SET n = n + 1 WHERE id % 1000 = 0; DELETE FROM big WHERE id > 119990");
        let want = env.src(digest);
        wait_for("changes after the snapshot to arrive", CONVERGE, || async {
            (env.source.cli(&db, digest).ok()? == want).then_some(())
        })
        .await;
        sluice.stop(&log).await;
    }
    assert!(partial_seen, "no crash left a partly loaded table: the test did not test the restart");
}

/// MariaDB → MariaDB: the replica (another database on the same server) holds what the source
/// holds, read back by the `mariadb` client, for every type; zero dates become NULL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_to_mariadb_replica_matches_row_for_row() {
    // Enough rows that the sink loads them in bulk (LOAD DATA) rather than by INSERT.
    let many = |from: i32| (from..from + 20).map(|b| type_rows(b * 100)).collect::<Vec<_>>().join(";\n");
    // A server of its own: the test reads global status counters.
    let env = MyEnv::with(MariaDbOptions::default(), &format!("{TYPES}; {}; {}", type_rows(0), many(1))).await;
    let replica = env.source.create_database(&env.named("replica")).unwrap();
    let toml = env.at(&format!(
        "name = \"mymy\"\n[source]\ntype = \"mysql\"\nurl = \"{}\"\ntables = [\"app.*\"]\n\n[[sink]]\ntype = \"mysql\"\nurl = \"{replica}\"\n",
        env.src_url
    ));
    let status = |name: &str| -> u64 {
        let out = env.source.cli(&env.db, &format!("SHOW GLOBAL STATUS LIKE '{name}'")).unwrap();
        out.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{name}: {out}"))
    };
    let (loads, rollbacks) = (status("Com_load"), status("Handler_savepoint_rollback"));
    let pipeline = start(sluice::parse(&toml, &|_| None).expect("valid config"));
    env.src(&format!("BEGIN; {}; {}; COMMIT", type_rows(10), many(30)));
    env.src("UPDATE types SET vc = 'changed', d2 = -0.01 WHERE id = 12; DELETE FROM types WHERE id = 13");
    let rows = |db: &str| {
        env.source
            .cli(db, "SELECT * FROM types WHERE id % 10 <> 4 ORDER BY id")
            .unwrap_or_else(|e| format!("error: {e}"))
    };
    wait_for("the replica to match the source", CONVERGE, || async {
        let (a, b) = (rows(&env.db), rows(&env.named("replica")));
        (a == b && a.lines().count() == 125).then_some(())
    })
    .await;
    assert_eq!(rows(&env.db), rows(&env.named("replica")));
    let zero = env
        .source
        .cli(&env.named("replica"), "SELECT id, dt, dtm, dt0, c, yr, st FROM types WHERE id IN (4, 14) ORDER BY id")
        .unwrap();
    assert_eq!(zero, "4\tNULL\tNULL\tNULL\tpad\t0000\ta,b,c\n14\tNULL\tNULL\tNULL\tpad\t0000\ta,b,c\n");
    let ddl = env.source.cli(&env.named("replica"), "SHOW CREATE TABLE types").unwrap();
    assert!(ddl.contains("`bu` bigint(20) unsigned") && ddl.contains("`d` decimal(65,30)"), "{ddl}");
    // The rows went in by LOAD DATA, and no load fell back to INSERT.
    assert!(status("Com_load") > loads, "expected a bulk load");
    assert_eq!(status("Handler_savepoint_rollback"), rollbacks, "a load left warnings and fell back to INSERT");
    pipeline.stop().await;
}

/// MariaDB → MariaDB schema changes under the sink's policy: widened types are followed, a
/// narrowed one puts only that table in quarantine (listed by `sluice tables`, released by
/// `--release`, then copied again), and `freeze` quarantines an added column.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_sink_follows_widening_and_quarantines_what_could_lose_data() {
    let env = MyEnv::new(
        "CREATE TABLE w (id INT PRIMARY KEY, n INT NOT NULL, s VARCHAR(10));
         CREATE TABLE ok (id INT PRIMARY KEY, v INT);
         INSERT INTO w VALUES (1, 1, 'a'); INSERT INTO ok VALUES (1, 1);",
    )
    .await;
    let replica = env.source.create_database(&env.named("replica")).unwrap();
    let frozen = env.source.create_database(&env.named("frozen")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        env.at(&format!(
            "name = \"myschema\"\n[source]\ntype = \"mysql\"\nurl = \"{}\"\ntables = [\"app.*\"]\n\n\
             [[sink]]\ntype = \"mysql\"\nurl = \"{replica}\"\n\n\
             [[sink]]\ntype = \"mysql\"\nurl = \"{frozen}\"\nschema_changes = \"freeze\"\n",
            env.src_url
        )),
    )
    .unwrap();
    let cfg = sluice::load(&config).expect("valid config");
    let same = |db: &str, table: &str| {
        let sql = format!("SELECT * FROM {table} ORDER BY id");
        let db = env.named(db);
        let (a, b) = (env.source.cli(&env.db, &sql).unwrap_or_default(), env.source.cli(&db, &sql).unwrap_or_default());
        async move { (!a.is_empty() && a == b).then_some(()) }
    };
    let column_type = |db: &str, c: &str| {
        let db = env.named(db);
        env.source
            .cli(&db, &format!("SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '{db}' AND TABLE_NAME = 'w' AND COLUMN_NAME = '{c}'"))
            .unwrap()
            .trim()
            .to_string()
    };
    let pipeline = start(cfg.clone());
    wait_for("the copy of w", CONVERGE, || same("replica", "w")).await;
    wait_for("the copy of w (frozen)", CONVERGE, || same("frozen", "w")).await;

    // Widening: followed by the replica, and by the frozen sink never.
    env.src("ALTER TABLE w MODIFY n BIGINT NOT NULL, MODIFY s VARCHAR(40); INSERT INTO w VALUES (2, 1099511627776, 'a longer text than ten')");
    wait_for("the widened row on the replica", CONVERGE, || same("replica", "w")).await;
    assert_eq!(column_type("replica", "n"), "bigint(20)");
    assert_eq!(column_type("replica", "s"), "varchar(40)");
    assert_eq!(column_type("frozen", "n"), "int(11)", "a frozen replica keeps its shape");

    // Narrowing: w goes to quarantine in the replica; ok keeps streaming into both sinks.
    env.src("DELETE FROM w WHERE id = 2; ALTER TABLE w MODIFY n INT NOT NULL; INSERT INTO w VALUES (3, 3, 'c'); UPDATE ok SET v = 2");
    wait_for("ok to keep streaming", CONVERGE, || same("replica", "ok")).await;
    wait_for("ok to keep streaming (frozen)", CONVERGE, || same("frozen", "ok")).await;
    let listed = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["tables", &config.display().to_string()])
            .output()
            .expect("run sluice tables");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tables = wait_for("w in quarantine", CONVERGE, || async {
        let t = listed();
        (t.matches("quarantined").count() == 2).then_some(t)
    })
    .await;
    assert!(tables.contains("may not hold every value"), "{tables}");
    assert!(tables.contains("changed type from bigint(20) to int(11)"), "{tables}");
    assert!(tables.contains("schema_changes = \"freeze\""), "{tables}");
    assert_eq!(
        env.source.cli(&env.named("replica"), "SELECT GROUP_CONCAT(id) FROM w").unwrap().trim(),
        "1",
        "w not written since"
    );
    assert_eq!(
        env.source.cli("sluice", "SELECT COUNT(*) FROM quarantine WHERE pipeline = 'myschema'").unwrap().trim(),
        "2"
    );
    assert!(!pipeline.is_finished(), "the pipeline keeps running");

    // Releasing refuses while the pipeline runs, then works; the next start copies w again.
    let release = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["tables", &config.display().to_string(), "--release", &env.at("app.w"), "--sink", "0"])
            .output()
            .expect("run sluice tables --release")
    };
    let refused = release();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is running against sink[0]"), "{refused:?}");
    pipeline.stop().await;
    let released = release();
    assert!(released.status.success(), "{released:?}");
    let pipeline = start(cfg);
    wait_for("w copied again into the replica", CONVERGE, || same("replica", "w")).await;
    env.src("INSERT INTO w VALUES (4, 4, 'd')");
    wait_for("w streaming again", CONVERGE, || same("replica", "w")).await;
    let tables = listed();
    assert_eq!(tables.matches("quarantined").count(), 1, "only the frozen sink's w: {tables}");

    // A renamed column keeps its values in the replica (renamed there, not dropped and added),
    // for a shape the sink saw since it started.
    env.src("UPDATE ok SET v = 3 WHERE id = 1");
    wait_for("ok streaming after the restart", CONVERGE, || same("replica", "ok")).await;
    env.src("ALTER TABLE ok RENAME COLUMN v TO amount; INSERT INTO ok VALUES (2, 5)");
    wait_for("ok with the renamed column", CONVERGE, || same("replica", "ok")).await;
    let cols = env
        .source
        .cli(&env.named("replica"), &format!("SELECT GROUP_CONCAT(COLUMN_NAME ORDER BY ORDINAL_POSITION) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '{}' AND TABLE_NAME = 'ok'", env.named("replica")))
        .unwrap();
    assert_eq!(cols.trim(), "id,amount");
    assert_eq!(env.source.cli(&env.named("replica"), "SELECT amount FROM ok WHERE id = 1").unwrap().trim(), "3");
    pipeline.stop().await;
}

/// A change the MySQL target refuses (here a CHECK constraint of the replica's own) goes to the
/// dead-letter table with its row and the error; the rest of its transaction and of the stream
/// is applied, and the pipeline keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_change_goes_to_the_dead_letter_table() {
    let env = MyEnv::new("CREATE TABLE t (id INT PRIMARY KEY, v INT); INSERT INTO t VALUES (1, 1)").await;
    let replica = env.source.create_database(&env.named("replica")).unwrap();
    let toml = env.at(&format!(
        "name = \"mydead\"\n[source]\ntype = \"mysql\"\nurl = \"{}\"\ntables = [\"app.*\"]\n\n[[sink]]\ntype = \"mysql\"\nurl = \"{replica}\"\n",
        env.src_url
    ));
    let pipeline = start(sluice::parse(&toml, &|_| None).expect("valid config"));
    let replica_rows = || env.source.cli(&env.named("replica"), "SELECT id, v FROM t ORDER BY id").unwrap_or_default();
    wait_for("the copy", CONVERGE, || async { (replica_rows() == "1\t1\n").then_some(()) }).await;
    env.source.cli(&env.named("replica"), "ALTER TABLE t ADD CONSTRAINT small CHECK (v < 100)").unwrap();
    // Enough rows that the batch goes by LOAD DATA first.
    let many: Vec<String> = (10..200).map(|i| format!("({i}, {})", i % 50)).collect();
    env.src(&format!(
        "BEGIN; INSERT INTO t VALUES (2, 5), (3, 500), {}; UPDATE t SET v = 7 WHERE id = 1; COMMIT",
        many.join(", ")
    ));
    env.src("INSERT INTO t VALUES (4, 6)");
    let want: String = {
        let mut rows = vec!["1\t7".to_string(), "2\t5".into(), "4\t6".into()];
        rows.extend((10..200).map(|i| format!("{i}\t{}", i % 50)));
        rows.sort_by_key(|r| r.split('\t').next().unwrap().parse::<i32>().unwrap());
        rows.join("\n") + "\n"
    };
    wait_for("every accepted change on the replica", CONVERGE, || async { (replica_rows() == want).then_some(()) })
        .await;
    let dead = env
        .source
        .cli("sluice", "SELECT pipeline, sink, source_table, op, JSON_EXTRACT(`row`, '$.v'), error LIKE '%small%', position IS NOT NULL FROM dead_letters WHERE pipeline = 'mydead'")
        .unwrap();
    assert_eq!(dead, env.at("mydead\t0\tapp.t\tupsert\t500\t1\t1\n"), "one dead letter for the refused row");
    assert!(!pipeline.is_finished(), "the pipeline keeps running");
    pipeline.stop().await;
}

/// TLS to a MariaDB source for a user the server admits only over TLS: `ssl_ca` in the URL
/// verifies the server's certificate; without TLS, or with a CA that did not sign it, `sluice
/// check` fails and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_mariadb_source_that_requires_it() {
    let (source, files) = sluice_testkit::tls::mariadb_tls_server();
    source.create_database("app").unwrap();
    source
        .cli(
            "app",
            "CREATE USER tlsuser@'%' IDENTIFIED BY 'pw' REQUIRE SSL; GRANT ALL ON *.* TO tlsuser@'%';
             CREATE USER certuser@'%' IDENTIFIED BY 'pw' REQUIRE X509; GRANT ALL ON *.* TO certuser@'%';
             CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO t VALUES (1, 'a')",
        )
        .unwrap();
    let target = pg_server();
    let dst_url = target.create_database("replica").await.unwrap();
    let dst = connect(&dst_url).await;
    let url = |q: &str| format!("mysql://tlsuser:pw@localhost:{}/app?prefer_socket=false&{q}", source.port());
    let toml = |q: &str| {
        format!(
            "name = \"mytls\"\n[source]\ntype = \"mysql\"\nurl = \"{}\"\ntables = [\"app.*\"]\n\n\
             [[sink]]\ntype = \"postgres\"\nurl = \"{dst_url}\"\n",
            url(q)
        )
    };
    let check_as = |user: &str, q: &str| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipeline.toml");
        std::fs::write(&path, toml(q).replace("tlsuser:", &format!("{user}:"))).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["check", path.to_str().unwrap()])
            .output()
            .expect("run sluice check");
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let check = |q: &str| check_as("tlsuser", q);
    let ca = format!("ssl_ca={}", files.ca.display());
    let (ok, out) = check(&ca);
    assert!(ok, "{out}");
    let (ok, out) = check("require_ssl=false");
    assert!(!ok && out.contains("Access denied"), "without TLS the server refuses the user: {out}");
    let (ok, out) = check(&format!("ssl_ca={}", files.other_ca.display()));
    assert!(
        !ok && out.contains("TLS certificate was not accepted") && out.contains("ssl_ca=PATH"),
        "a CA that signed nothing: {out}"
    );
    assert!(!out.contains("pw@"), "the password stays out of messages: {out}");
    // A user admitted only with a client certificate signed by the server's CA.
    let cert_q = format!("{ca}&ssl_cert={}&ssl_key={}", files.client_cert.display(), files.client_key.display());
    let (ok, out) = check_as("certuser", &cert_q);
    assert!(ok, "with a client certificate: {out}");
    let (ok, out) = check_as("certuser", &ca);
    assert!(!ok && out.contains("Access denied"), "without one: {out}");

    let pipeline = start(sluice::parse(&toml(&ca), &|_| None).expect("valid config"));
    source.cli("app", "INSERT INTO t VALUES (2, 'b')").unwrap();
    wait_for("rows over TLS on the replica", CONVERGE, || async {
        let rows = dst.query("SELECT id::text || v FROM app.t ORDER BY id", &[]).await.ok()?;
        let got: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        (got == ["1a", "2b"]).then_some(())
    })
    .await;
    // The server saw encrypted sessions from Sluice's user.
    let tls_sessions =
        source.cli("", "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'tlsuser'").unwrap();
    assert_ne!(tls_sessions.trim(), "0", "sluice's connections as tlsuser");
    pipeline.stop().await;
}

/// Tables without a key: matched by every column into PostgreSQL (snapshot, duplicates,
/// updates, deletes, and a copy while streaming after a rename), quarantined by a MySQL sink
/// while its keyed tables keep streaming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_tables_reach_postgres_and_a_mysql_sink_quarantines_them() {
    let env = MyEnv::new(
        "CREATE TABLE logs (a INT, b VARCHAR(10)); INSERT INTO logs VALUES (1, 'x'), (1, 'x'), (2, 'y');
         CREATE TABLE k (id INT PRIMARY KEY, v INT); INSERT INTO k VALUES (1, 1);
         CREATE TABLE staging (a INT, b VARCHAR(10)); INSERT INTO staging SELECT seq, 's' FROM seq_1_to_500;",
    )
    .await;
    let replica = env.source.create_database(&env.named("replica")).unwrap();
    let toml = env.at(&format!(
        "name = \"mykeyless\"\n[source]\ntype = \"mysql\"\nurl = \"{}\"\ntables = [\"app.*\"]\nexclude = [\"app.staging\"]\n\n\
         [[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n\n[[sink]]\ntype = \"mysql\"\nurl = \"{replica}\"\n",
        env.src_url, env.dst_url
    ));
    let pipeline = start(sluice::parse(&toml, &|_| None).expect("valid config"));
    let my = |t: &str| format!("SELECT CONCAT_WS(',', a, b, COUNT(*)) FROM {t} GROUP BY a, b ORDER BY a, b");
    let pg = |t: &str| format!("SELECT concat_ws(',', a, b, count(*)) FROM app.{t} GROUP BY a, b ORDER BY a, b");
    env.converge(&my("logs"), &pg("logs")).await;
    env.src("INSERT INTO logs VALUES (3, 'z'), (1, 'x'); UPDATE logs SET b = 'w' WHERE a = 2; DELETE FROM logs WHERE a = 1 LIMIT 1");
    env.converge(&my("logs"), &pg("logs")).await;
    assert_eq!(env.src(&my("logs")), "1,x,2\n2,w,1\n3,z,1\n");
    // Renamed into the selection: copied while streaming, as one chunk.
    env.src("RENAME TABLE staging TO logs2");
    env.src("INSERT INTO logs2 VALUES (1000, 'new')");
    env.converge(&my("logs2"), &pg("logs2")).await;
    // The MySQL sink quarantined the keyless tables and keeps streaming k.
    env.src("UPDATE k SET v = 2");
    wait_for("k on the MySQL sink", CONVERGE, || async {
        (env.source.cli(&env.named("replica"), "SELECT v FROM k").ok()? == "2\n").then_some(())
    })
    .await;
    let q = env
        .source
        .cli("sluice", "SELECT source_table, reason LIKE '%no primary key%' FROM quarantine WHERE pipeline = 'mykeyless' ORDER BY 1")
        .unwrap();
    assert_eq!(q, "logs\t1\nlogs2\t1\n");
    assert!(!pipeline.is_finished());
    pipeline.stop().await;
}

/// A target that refuses `LOAD DATA LOCAL` (`local_infile = OFF`, MySQL 8's default): the
/// sink writes with INSERT instead, and the replica is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_without_local_infile_gets_inserts() {
    let opts = MariaDbOptions { settings: vec![("local-infile".into(), "0".into())] };
    let env = MyEnv::with(
        opts,
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO t SELECT seq, CONCAT('v', seq) FROM seq_1_to_500",
    )
    .await;
    assert_eq!(env.src("SELECT @@local_infile").trim(), "0");
    let replica = env.source.create_database(&env.named("replica")).unwrap();
    let toml = env.at(&format!(
        "name = \"mynoload\"\n[source]\ntype = \"mysql\"\nurl = \"{}\"\ntables = [\"app.*\"]\n\n[[sink]]\ntype = \"mysql\"\nurl = \"{replica}\"\n",
        env.src_url
    ));
    let pipeline = start(sluice::parse(&toml, &|_| None).expect("valid config"));
    env.src("UPDATE t SET v = 'changed' WHERE id % 3 = 0; DELETE FROM t WHERE id > 490");
    let sql = "SELECT COUNT(*), SUM(CRC32(CONCAT(id, v))) FROM t";
    wait_for("the replica to match", CONVERGE, || async {
        let (a, b) = (env.source.cli(&env.db, sql).ok()?, env.source.cli(&env.named("replica"), sql).ok()?);
        (a == b).then_some(())
    })
    .await;
    assert!(env.source.cli(&env.named("replica"), sql).unwrap().starts_with("490\t"));
    pipeline.stop().await;
}

/// PostgreSQL → MariaDB: logical types become MySQL types; values read back by the `mariadb`
/// client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_to_mariadb_replica() {
    let env = common::Env::new(
        "CREATE TABLE items (id bigint PRIMARY KEY, name text, price numeric(10,2), ok boolean, at timestamptz,
           day date, data bytea, doc jsonb, u uuid, big numeric);
         INSERT INTO items VALUES (1, 'caf\u{e9}', 12.50, true, '2024-02-29 13:14:15.123456+02', '2024-02-29', '\\x00ff',
           '{\"a\": 1}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 123456789.000001),
           (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
         -- Enough rows to go in by LOAD DATA, with the characters its text format escapes.
         CREATE TABLE bulk (LIKE items INCLUDING ALL);
         INSERT INTO bulk SELECT g, E'a\\tb\\nc\\\\d\\r', price, ok, at, day, '\\x5c0009000a', doc, u, big
           FROM items, generate_series(100, 300) g WHERE id = 1;",
    )
    .await;
    let maria = MariaDbServer::start().unwrap_or_else(|e| panic!("cannot start MariaDB: {e}"));
    let replica = maria.create_database("replica").unwrap();
    let toml = format!(
        "name = \"pgmy\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\n[[sink]]\ntype = \"mysql\"\nurl = \"{replica}\"\n",
        env.src_url
    );
    let pipeline = start(sluice::parse(&toml, &|_| None).expect("valid config"));
    env.src
        .batch_execute(
            "INSERT INTO items (id, name) VALUES (3, 'streamed'); UPDATE items SET price = 1.25 WHERE id = 1",
        )
        .await
        .unwrap();
    let q = "SELECT id, name, price, ok, at, day, HEX(data), doc, u, big FROM items ORDER BY id";
    let want = "1\tcafé\t1.25\t1\t2024-02-29 11:14:15.123456\t2024-02-29\t00FF\t{\"a\": 1}\ta0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\t123456789.000001000000000000000000000000\n\
                2\tNULL\tNULL\tNULL\tNULL\tNULL\tNULL\tNULL\tNULL\tNULL\n\
                3\tstreamed\tNULL\tNULL\tNULL\tNULL\tNULL\tNULL\tNULL\tNULL\n";
    let got = wait_for("the MariaDB replica", CONVERGE, || async {
        let got = maria.cli("replica", q).ok()?;
        (got == want).then_some(got)
    })
    .await;
    assert_eq!(got, want);
    let q = "SELECT COUNT(*), COUNT(DISTINCT CONCAT_WS('|', HEX(name), price, ok, at, day, HEX(data), doc, u, big)), \
             MIN(CONCAT_WS('|', HEX(name), price, ok, at, day, HEX(data), doc, u, big)) FROM bulk";
    let want = "201\t1\t6109620A635C640D|12.50|1|2024-02-29 11:14:15.123456|2024-02-29|5C0009000A|{\"a\": 1}|\
                a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|123456789.000001000000000000000000000000\n";
    let got = wait_for("the bulk rows on the MariaDB replica", CONVERGE, || async {
        let got = maria.cli("replica", q).ok()?;
        (got == want).then_some(got)
    })
    .await;
    assert_eq!(got, want);
    let status = |name: &str| maria.cli("replica", &format!("SHOW GLOBAL STATUS LIKE '{name}'")).unwrap();
    assert!(!status("Com_load").ends_with("\t0\n"), "expected a bulk load: {}", status("Com_load"));
    assert!(status("Handler_savepoint_rollback").ends_with("\t0\n"), "a load fell back to INSERT");
    pipeline.stop().await;
}

/// MariaDB → MariaDB change log: the snapshot's rows as `r`, then every change in order with
/// its position and commit time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_changelog_records_every_change_in_order() {
    let env = MyEnv::new("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO t VALUES (1, 'a')").await;
    let replica = env.source.create_database(&env.named("replica")).unwrap();
    let toml = env.at(&format!(
        "name = \"mylog\"\n[source]\ntype = \"mysql\"\nurl = \"{}\"\ntables = [\"app.t\"]\n\n[[sink]]\ntype = \"mysql\"\nmode = \"changelog\"\nurl = \"{replica}\"\n",
        env.src_url
    ));
    let pipeline = start(sluice::parse(&toml, &|_| None).expect("valid config"));
    wait_for("the snapshot row", CONVERGE, || async {
        let n = env.source.cli(&env.named("replica"), "SELECT COUNT(*) FROM t_changelog").ok()?;
        (n.trim() == "1").then_some(())
    })
    .await;
    env.src("INSERT INTO t VALUES (2, 'b'); UPDATE t SET v = 'a2' WHERE id = 1; DELETE FROM t WHERE id = 2");
    let q = "SELECT op, JSON_VALUE(COALESCE(`after`, `before`), '$.id'), JSON_VALUE(`after`, '$.v'), \
             position IS NOT NULL, commit_ts IS NOT NULL, source_table FROM t_changelog ORDER BY sluice_seq";
    let want = env.at("r\t1\ta\t0\t0\tapp.t\nc\t2\tb\t1\t1\tapp.t\nu\t1\ta2\t1\t1\tapp.t\nd\t2\tNULL\t1\t1\tapp.t\n");
    let deadline = Instant::now() + CONVERGE;
    let mut got = String::new();
    while Instant::now() < deadline {
        got = env.source.cli(&env.named("replica"), q).unwrap_or_else(|e| e);
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got, want);
    pipeline.stop().await;
}

/// MariaDB → DuckDB: every MySQL type at its extremes, through the snapshot and the binlog,
/// read back with DuckDB's Python package; the DuckDB column types follow docs/types.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_to_duckdb_carries_every_type_at_its_extremes() {
    let env = MyEnv::new(&format!("{TYPES}; {}", type_rows(0))).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("my.duckdb");
    let toml = format!(
        "name = \"myduck\"\n[source]\ntype = \"mysql\"\nurl = \"{}\"\ntables = [\"app.types\"]\n\n[[sink]]\n\
         type = \"duckdb\"\npath = \"{}\"\nbuffer = {{ flush_time_s = 0.1 }}\n",
        env.src_url,
        path.display()
    );
    let pipeline = start(sluice::parse(&env.at(&toml), &|_| None).expect("valid config"));
    // FLOAT and TIME as DuckDB prints them (Python would widen the float and turn TIME into a
    // timedelta); the long text column left out.
    let q = env.at(
        "SELECT * EXCLUDE (tx, f, tm), CAST(f AS VARCHAR) AS f, CAST(tm AS VARCHAR) AS tm FROM app.types ORDER BY id",
    );
    let read = || sluice_testkit::duckdb::duckdb_query(&path, &q).ok().flatten();
    wait_for("the snapshot rows in DuckDB", CONVERGE, || async { read().filter(|r| r.len() == 4) }).await;
    env.src(&type_rows(10));
    env.src("UPDATE types SET vc = 'changed', d2 = -0.01 WHERE id = 12; DELETE FROM types WHERE id = 13");
    let rows = wait_for("the streamed rows in DuckDB", CONVERGE, || async {
        read().filter(|r| r.len() == 7 && r[5][17].as_deref() == Some("changed"))
    })
    .await;
    pipeline.stop().await;
    let show = |r: &Vec<Option<String>>| {
        r.iter().skip(1).map(|v| v.clone().unwrap_or_else(|| "NULL".into())).collect::<Vec<_>>().join("|")
    };
    let rows: Vec<String> = rows.iter().map(show).collect();
    let want = [
        "-128|0|-32768|0|-8388608|0|-2147483648|0|-9223372036854775808|0|-99999999999999999999999999999999999.999999999999999999999999999999|-99999999.99|-1.7976931348623157e+308|False|b'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00'|||café €|b'\\x00\\x00\\x00\\x00'|b''|b''|1000-01-01|1000-01-01 00:00:00|1000-01-01 00:00:00|1970-01-01 00:00:01+00:00|1901|[]|small||b'\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00'|-3.40282e+38|-838:59:59",
    ];
    assert_eq!(rows[0], want[0], "snapshot row 1");
    assert_eq!(rows[4], rows[0], "row 11 through the binlog is its snapshot twin");
    assert_eq!(rows[1].replace("|99999999.99|", "|-0.01|").replacen("ü✓😀", "changed", 1), rows[5], "row 12 updated");
    assert_eq!(rows[3], rows[6], "row 14 through the binlog is its snapshot twin");
    for r in &rows {
        eprintln!("{r}");
    }
}
