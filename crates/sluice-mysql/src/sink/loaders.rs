//! A snapshot's rows loaded over several connections at once.
//!
//! One connection loads about 400k rows/s into MariaDB here and the server, not Sluice, is then
//! the limit (one statement runs on one server thread). Two connections loading halves of the
//! same rows took 1.2–1.5 s where one took 2.4 s (BENCHMARKS.md, 2026-12-03).
//!
//! Only rows of a [`sluice_core::CopyMode::Snapshot`] copy go this way. They come before any
//! change of the stream, and a snapshot cut short starts over from an emptied table, so each
//! loader may commit its share on its own: nothing of the copy is promised until its `End`, and
//! the sink does not pass `End` before every loader has committed.
//!
//! ```text
//!  Begin{snapshot}: DELETE FROM t; COMMIT (the sink's connection)
//!  Rows ──▶ buffer ──(every LOADER_ROWS)──▶ loader k: START TRANSACTION; LOAD/INSERT; COMMIT
//!  End: the rest, then wait for every loader
//! ```

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use sluice_core::collapse::NetOp;
use sluice_core::{Row, SchemaRef};
use tokio::task::JoinSet;

use super::{write_table, DeadLetters, Dest, TableWrites};
use crate::catalog;
use crate::error::{Ctx, MyError};

/// Rows handed to one loader at a time.
pub(super) const LOADER_ROWS: usize = 25_000;

type Done = (Option<Conn>, Result<(), MyError>);

/// Connections that load snapshot rows, at most `max` at once.
pub(super) struct Loaders {
    url: String,
    max: usize,
    idle: Vec<Conn>,
    running: JoinSet<Done>,
}

impl Loaders {
    pub fn new(url: &str, max: usize) -> Loaders {
        Loaders { url: url.to_string(), max: max.max(1), idle: Vec::new(), running: JoinSet::new() }
    }

    /// Loads `rows` into `dest` on a connection of its own, in a transaction of its own; waits
    /// first while `max` loads are running.
    pub async fn submit(
        &mut self,
        dest: Dest,
        schema: SchemaRef,
        rows: Vec<Row>,
        dead: DeadLetters,
    ) -> Result<(), MyError> {
        while self.running.len() >= self.max {
            self.reap().await?;
        }
        let mut conn = match self.idle.pop() {
            Some(c) => c,
            None => catalog::connect(&self.url, "sink (snapshot loader)").await?,
        };
        self.running.spawn(async move {
            let r = async {
                conn.query_drop("START TRANSACTION").await.ctx("start a loader transaction")?;
                let w = TableWrites::of(&dest, &schema, rows.into_iter().map(NetOp::Insert));
                write_table(&mut conn, &dest, &schema, w, &dead).await?;
                conn.query_drop("COMMIT").await.ctx(format!("commit snapshot rows of {}", dest.name))?;
                sluice_core::crash_point("sink.after_load_commit");
                Ok(())
            }
            .await;
            match r {
                Ok(()) => (Some(conn), Ok(())),
                Err(e) => (None, Err(e)),
            }
        });
        Ok(())
    }

    /// Waits for one running load.
    async fn reap(&mut self) -> Result<(), MyError> {
        let Some(done) = self.running.join_next().await else { return Ok(()) };
        let (conn, r) = done.map_err(|e| MyError::Protocol(format!("a snapshot loader failed: {e}")))?;
        if let Some(c) = conn {
            self.idle.push(c);
        }
        r
    }

    /// Waits until every load has committed; the first failure, if any.
    pub async fn finish(&mut self) -> Result<(), MyError> {
        while !self.running.is_empty() {
            self.reap().await?;
        }
        Ok(())
    }

    /// Stops the loads (their transactions roll back) and closes the connections.
    pub async fn close(&mut self) {
        self.running.shutdown().await;
        for c in self.idle.drain(..) {
            let _ = c.disconnect().await;
        }
    }
}
