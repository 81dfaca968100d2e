//! Shared fixtures for the end-to-end tests: a source and a target server, pipelines run
//! in-process or as the real binary, and row-by-row comparison with a readable diff.
#![allow(dead_code)]

pub mod kafka;
pub mod process;

use std::time::Duration;

use sluice_config::PipelineConfig;
use sluice_testkit::{pg_server, wait_for, PgServer};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

pub const CONVERGE: Duration = Duration::from_secs(60);

pub struct Env {
    pub source: PgServer,
    pub target: PgServer,
    pub src_url: String,
    pub dst_url: String,
    pub src: Client,
    pub dst: Client,
}

pub async fn connect(url: &str) -> Client {
    let (c, conn) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(conn);
    c
}

impl Env {
    /// What every session on both servers is doing (for a test that timed out waiting).
    pub async fn activity(&self) -> String {
        let sql = "SELECT datname, application_name, state, wait_event_type, wait_event, \
                   left(query, 200), (now() - xact_start)::text FROM pg_stat_activity WHERE backend_type = 'client backend' \
                   AND pid <> pg_backend_pid()";
        let mut out = String::new();
        for (name, c) in [("source", &self.src), ("target", &self.dst)] {
            out.push_str(&format!("--- {name} sessions ---\n"));
            match c.query(sql, &[]).await {
                Ok(rows) => {
                    for r in rows {
                        let cols: Vec<String> =
                            (0..r.len()).map(|i| r.get::<_, Option<String>>(i).unwrap_or_default()).collect();
                        out.push_str(&cols.join(" | "));
                        out.push('\n');
                    }
                }
                Err(e) => out.push_str(&format!("({e})\n")),
            }
        }
        out
    }

    /// Two servers, database `app` on the source and `replica` on the target, and `setup` SQL
    /// run on the source.
    pub async fn new(setup: &str) -> Env {
        Self::with_source(pg_server(), setup).await
    }

    /// Like [`Env::new`], with a source server started by the caller.
    pub async fn with_source(source: PgServer, setup: &str) -> Env {
        let target = pg_server();
        let src_url = source.create_database("app").await.unwrap_or_else(|e| panic!("{e}"));
        let dst_url = target.create_database("replica").await.unwrap_or_else(|e| panic!("{e}"));
        let src = connect(&src_url).await;
        let dst = connect(&dst_url).await;
        if !setup.is_empty() {
            src.batch_execute(setup).await.unwrap_or_else(|e| panic!("setup SQL failed: {e:?}"));
        }
        Env { source, target, src_url, dst_url, src, dst }
    }

    /// Pipeline TOML with `source_extra` and `sink_extra` lines appended to each section.
    pub fn toml(&self, name: &str, source_extra: &str, sink_extra: &str) -> String {
        format!(
            "name = \"{name}\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n{source_extra}\n\n[[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n{sink_extra}\n",
            self.src_url, self.dst_url
        )
    }

    pub fn config(&self, name: &str, source_extra: &str, sink_extra: &str) -> PipelineConfig {
        sluice::parse(&self.toml(name, source_extra, sink_extra), &|_| None).expect("valid test config")
    }

    /// Waits until `table` is identical on both sides; on timeout panics with a row diff.
    pub async fn converge(&self, table: &str, key: &str) {
        converge_with(&self.src, &self.dst, table, key).await
    }

    /// Asserts `table` is identical now, with a row diff on failure.
    pub async fn assert_same(&self, table: &str, key: &str) {
        assert_same_with(&self.src, &self.dst, table, key).await
    }

    /// Waits until pipeline `name` has durably copied every table in `tables` into the replica.
    pub async fn wait_copied(&self, name: &str, tables: &[&str]) {
        wait_copied(&self.dst, name, tables).await
    }

    pub async fn count(&self, client: &Client, table: &str) -> i64 {
        client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0)
    }
}

/// Waits until `table` holds the same rows in `a` and `b`; on timeout panics with a row diff.
pub async fn converge_with(a: &Client, b: &Client, table: &str, key: &str) {
    let q = format!("SELECT row_::text FROM {table} row_ ORDER BY {key}");
    let ok = tokio::time::timeout(
        CONVERGE,
        wait_for(&format!("{table} to converge"), CONVERGE, || {
            let q = q.clone();
            async move {
                let x = rows(a, &q).await;
                let y = rows(b, &q).await;
                (x.is_some() && x == y).then_some(())
            }
        }),
    )
    .await;
    if ok.is_err() {
        panic!("{table} did not converge within {CONVERGE:?}:\n{}", diff(a, b, table, key).await);
    }
}

/// Asserts `table` holds the same rows in `a` and `b` now, with a row diff on failure.
pub async fn assert_same_with(a: &Client, b: &Client, table: &str, key: &str) {
    let q = format!("SELECT row_::text FROM {table} row_ ORDER BY {key}");
    if rows(a, &q).await != rows(b, &q).await {
        panic!("{table} differs between source and replica:\n{}", diff(a, b, table, key).await);
    }
}

/// The rows only one side holds (first 10 of each).
pub async fn diff(a: &Client, b: &Client, table: &str, key: &str) -> String {
    let q = format!("SELECT row_::text FROM {table} row_ ORDER BY {key}");
    let x = rows(a, &q).await.unwrap_or_default();
    let y = rows(b, &q).await.unwrap_or_default();
    let short = |r: &String| if r.len() > 160 { format!("{}…", &r[..r.floor_char_boundary(160)]) } else { r.clone() };
    let only_a: Vec<String> = x.iter().filter(|r| !y.contains(r)).take(10).map(short).collect();
    let only_b: Vec<String> = y.iter().filter(|r| !x.contains(r)).take(10).map(short).collect();
    format!(
        "source rows: {}, replica rows: {}\nonly in source (first 10): {only_a:#?}\nonly in replica (first 10): {only_b:#?}",
        x.len(),
        y.len()
    )
}

async fn rows(c: &Client, q: &str) -> Option<Vec<String>> {
    c.query(q, &[]).await.ok().map(|rs| {
        rs.iter().map(|r| r.try_get::<_, String>(0).unwrap_or_else(|e| panic!("row text of `{q}`: {e:?}"))).collect()
    })
}

/// Waits until the checkpoint of pipeline `name` in `client`'s database says every table in
/// `tables` (names in schema public) is copied.
pub async fn wait_copied(client: &Client, name: &str, tables: &[&str]) {
    let names: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
    let what = format!("pipeline {name} to copy {tables:?}");
    wait_for(&what, CONVERGE, || {
        let names = names.clone();
        async move {
            let n: i64 = client
                .query_one(
                    "SELECT count(DISTINCT t->>'name') FROM sluice.checkpoints c, jsonb_array_elements(c.state->'tables') t \
                     WHERE c.pipeline = $1 AND t->>'state' = 'copied' AND t->>'name' = ANY($2)",
                    &[&name, &names],
                )
                .await
                .ok()?
                .get(0);
            (n == names.len() as i64).then_some(())
        }
    })
    .await
}

/// A pipeline running in-process.
pub struct Running {
    stop: watch::Sender<bool>,
    pub status: sluice_runtime::PipelineHandle,
    pub handle: JoinHandle<Result<(), sluice_runtime::PipelineError>>,
}

pub fn start(cfg: PipelineConfig) -> Running {
    // SLUICE_TEST_LOG=debug (or any filter) shows the pipeline's log on stderr.
    if let Ok(filter) = std::env::var("SLUICE_TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
    let (stop, rx) = watch::channel(false);
    let running = sluice::start(&cfg, rx);
    Running { stop, status: running.handle, handle: running.task }
}

impl Running {
    /// Stops gracefully and asserts the pipeline ended without error.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        match tokio::time::timeout(Duration::from_secs(60), self.handle).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => panic!("pipeline failed: {}", sluice::chain(&e)),
            Ok(Err(e)) => panic!("pipeline task panicked: {e}"),
            Err(_) => panic!("pipeline did not stop within 60s"),
        }
    }

    /// Asks the pipeline to stop without waiting for it.
    pub fn request_stop(&self) {
        let _ = self.stop.send(true);
    }

    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

/// Waits until `sql` returns a row, or panics naming `what` after `timeout`.
pub async fn wait_row(client: &Client, what: &str, timeout: Duration, sql: &str) {
    wait_for(what, timeout, || async { client.query_opt(sql, &[]).await.ok().flatten().map(|_| ()) }).await
}

/// The slot's confirmed flush LSN, as bytes from 0/0.
pub async fn confirmed_flush(src: &Client, slot: &str) -> Option<i64> {
    src.query_opt(
        "SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1",
        &[&slot],
    )
    .await
    .ok()
    .flatten()
    .and_then(|r| r.get(0))
}

/// A TCP forwarder in front of a server that can be closed (every connection cut, new ones
/// refused) and opened again: a sink target that goes away and comes back.
pub struct Gate {
    pub port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    task: JoinHandle<()>,
}

impl Gate {
    pub async fn new(to_port: u16) -> Gate {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind gate");
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::<tokio::task::AbortHandle>::new()));
        let (o, c) = (open.clone(), conns.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !o.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let h = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to_port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock().unwrap().push(h.abort_handle());
            }
        });
        Gate { port, open, conns, task }
    }

    /// Cuts every connection and refuses new ones.
    pub fn close(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    pub fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.close();
        self.task.abort();
    }
}

/// The seed of a randomized crash test: `SLUICE_CRASH_SEED`, else a new one each run; printed
/// so a failure can be rerun.
pub fn crash_seed() -> u64 {
    let seed = std::env::var("SLUICE_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(42, |d| d.as_nanos() as u64)
    });
    println!("crash test seed: {seed} (rerun with SLUICE_CRASH_SEED={seed})");
    seed
}

/// Waits until `read` (the sink's rows of `table` read with a third-party client, each value
/// rendered as the second expression of its `columns` pair) equals PostgreSQL's rendering (the
/// first); panics with both after the deadline.
pub async fn converge_to(
    env: &Env,
    table: &str,
    columns: &[(&str, &str)],
    key: &str,
    read: impl Fn() -> Option<Vec<Vec<Option<String>>>>,
) {
    let pg_sql = format!(
        "SELECT {} FROM {table} ORDER BY {key}",
        columns.iter().map(|(p, _)| format!("coalesce(({p})::text, '<null>')")).collect::<Vec<_>>().join(", ")
    );
    let deadline = std::time::Instant::now() + CONVERGE;
    loop {
        let want: Vec<Vec<Option<String>>> = env
            .src
            .query(&pg_sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (0..columns.len()).map(|i| Some(r.get::<_, String>(i))).collect())
            .collect();
        let got = read();
        if got.as_ref() == Some(&want) {
            return;
        }
        if std::time::Instant::now() > deadline {
            let show = |rows: &[Vec<Option<String>>]| {
                rows.iter()
                    .map(|r| r.iter().map(|v| v.as_deref().unwrap_or("NULL")).collect::<Vec<_>>().join(" | "))
                    .collect::<Vec<_>>()
                    .join("\n  ")
            };
            panic!(
                "{table} in the sink differs from PostgreSQL after {CONVERGE:?}:\nPostgreSQL:\n  {}\nsink:\n  {}",
                show(&want),
                got.as_deref().map(show).unwrap_or_else(|| "(nothing yet)".into())
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
