//! The test kit: real servers (from `sluice-playground`), waiting on conditions with deadlines,
//! and the compliance suite every sink runs. Only tests and benchmarks depend on it; the
//! release binary does not link it.

pub mod compliance;
pub mod tls;

use std::time::{Duration, Instant};

pub use sluice_playground::{free_port, pg_bindir, MariaDbOptions, MariaDbServer, PgOptions, PgServer};

/// Starts a PostgreSQL server for a test, or fails the test saying what is missing.
pub fn pg_server() -> PgServer {
    PgServer::start().unwrap_or_else(|e| panic!("cannot start PostgreSQL for this test: {e}"))
}

/// Creates database `db` on `server` and connects to it; fails the test on error.
pub async fn database(server: &PgServer, db: &str) -> (String, tokio_postgres::Client) {
    let url = server.create_database(db).await.unwrap_or_else(|e| panic!("{e}"));
    let client = server.connect(db).await.unwrap_or_else(|e| panic!("{e}"));
    (url, client)
}

/// Polls `cond` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut cond: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
