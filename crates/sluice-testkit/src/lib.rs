//! The test kit: real servers (from `sluice-playground`), waiting on conditions with deadlines,
//! and the compliance suite every sink runs. Only tests and benchmarks depend on it; the
//! release binary does not link it.

pub mod compliance;
pub mod duckdb;
pub mod snowflake;
pub mod tls;

use std::time::{Duration, Instant};

pub use sluice_playground::{
    fakesnow_python, free_port, pg_bindir, wait_ready, KafkaBroker, KafkaKind, MariaDbOptions, MariaDbServer,
    PgOptions, PgServer, S3Server, SnowflakeServer, S3_ACCESS_KEY, S3_SECRET_KEY,
};

/// Starts a PostgreSQL server for a test, or fails the test saying what is missing.
pub fn pg_server() -> PgServer {
    PgServer::start().unwrap_or_else(|e| panic!("cannot start PostgreSQL for this test: {e}"))
}

/// The MariaDB server this test binary shares, started at its first use and stopped when the
/// process exits (a static is never dropped, so an exit hook drops it). Each test takes a
/// database of its own on it ([`unique_name`]); a test that changes server-wide state (binlog
/// format, purging binlogs, global counters, TLS) starts its own [`MariaDbServer`].
pub fn shared_mariadb() -> std::sync::Arc<MariaDbServer> {
    use std::sync::{Arc, Mutex};
    static SHARED: Mutex<Option<Arc<MariaDbServer>>> = Mutex::new(None);
    extern "C" fn stop_shared() {
        let server = SHARED.lock().ok().and_then(|mut g| g.take());
        drop(server);
    }
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = shared.as_ref() {
        return s.clone();
    }
    let server = Arc::new(
        MariaDbServer::start().unwrap_or_else(|e| panic!("cannot start the MariaDB server of this test binary: {e}")),
    );
    // SAFETY: registers a plain function without arguments; it runs once, at exit.
    unsafe { libc::atexit(stop_shared) };
    *shared = Some(server.clone());
    server
}

/// A name no other caller in this process gets: `prefix` and a number.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    format!("{prefix}{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// Creates database `db` on `server` and connects to it; fails the test on error.
pub async fn database(server: &PgServer, db: &str) -> (String, tokio_postgres::Client) {
    let url = server.create_database(db).await.unwrap_or_else(|e| panic!("{e}"));
    let client = server.connect(db).await.unwrap_or_else(|e| panic!("{e}"));
    (url, client)
}

/// Polls `cond` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    match poll_until(timeout, cond).await {
        Some(v) => v,
        None => panic!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// Polls `cond` until it returns `Some`; `None` after `timeout` (the caller says what failed).
pub async fn poll_until<T, F, Fut>(timeout: Duration, mut cond: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
