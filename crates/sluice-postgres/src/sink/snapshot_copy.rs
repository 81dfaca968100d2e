//! Replica mode's initial snapshot: rows streamed into the target with `COPY .. FROM STDIN`
//! over several connections at once.
//!
//! ```text
//!  blocks of COPY text ──round robin──▶ writer 0: COPY t (..) FROM STDIN   (own connection)
//!                                   ──▶ writer 1: COPY t (..) FROM STDIN   (own connection)
//! ```
//!
//! Parsing rows is the target's slowest part of a bulk load and is single-threaded per
//! statement, so one `COPY` per connection lets the target use several cores. Blocks are
//! passed on as the source wrote them: nothing is parsed or re-encoded here. A table whose
//! columns all have the source's types is loaded in binary COPY (each writer sends the stream's
//! header, the source's binary tuples, then the trailer), which neither server formats or
//! parses as text, over one connection (nothing to parse in parallel, and two streams into one
//! table wait on each other's relation extension); others in text over all of them. Each writer's
//! `COPY` commits on its own when its table is finished; the sink marks the table copied only
//! after all of them did. A table whose load fails or is interrupted is copied again from its
//! first row (the target table is emptied again), so partial contents are never taken for a
//! finished copy.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::SinkExt;
use sluice_core::{Row, TableId};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tracing::debug;

use crate::catalog;
use crate::codec::PgType;
use crate::copy;
use crate::error::{Ctx, PgError};

/// Blocks queued per writer.
const WRITER_QUEUE: usize = 4;
/// Single rows are gathered into blocks of this size before they are dealt out.
const ROW_BLOCK_BYTES: usize = 64 * 1024;

/// Connections writing the snapshot, and the table they are filling.
pub struct SnapshotCopy {
    clients: Vec<Arc<Client>>,
    current: Option<TableCopy>,
    rows: BytesMut,
    scratch: BytesMut,
}

struct TableCopy {
    table: TableId,
    writers: Vec<Writer>,
    next: usize,
    /// Binary COPY, typed rows encoded with these codecs; `None`: text
    binary: Option<Vec<PgType>>,
}

struct Writer {
    tx: mpsc::Sender<Bytes>,
    task: JoinHandle<Result<u64, PgError>>,
}

impl Drop for TableCopy {
    /// A copy abandoned before [`SnapshotCopy::finish_table`] is aborted, not committed.
    fn drop(&mut self) {
        for w in &self.writers {
            w.task.abort();
        }
    }
}

impl SnapshotCopy {
    /// Opens `connections` connections to the target.
    pub async fn open(url: &str, label: &str, connections: usize) -> Result<SnapshotCopy, PgError> {
        let mut clients = Vec::with_capacity(connections);
        for i in 0..connections.max(1) {
            clients.push(Arc::new(catalog::connect(url, &format!("{label} (snapshot writer {i})")).await?));
        }
        Ok(SnapshotCopy { clients, current: None, rows: BytesMut::new(), scratch: BytesMut::new() })
    }

    /// Finishes the table being filled and starts `copy_sql` (a `COPY .. FROM STDIN`, in binary
    /// format when `binary` gives the columns' codecs, else text) for `table` on every connection.
    pub async fn begin_table(
        &mut self,
        table: TableId,
        copy_sql: String,
        binary: Option<Vec<PgType>>,
    ) -> Result<(), PgError> {
        self.finish_table().await?;
        // Binary tuples need no parsing worth spreading over connections, and two COPY streams
        // into one table wait on each other's relation extension: one writer loads faster
        // (BENCHMARKS.md, issue 13).
        let connections = if binary.is_some() { 1 } else { self.clients.len() };
        let writers = self.clients[..connections]
            .iter()
            .map(|client| {
                let (tx, rx) = mpsc::channel(WRITER_QUEUE);
                let task =
                    tokio::spawn(write_copy(client.clone(), copy_sql.clone(), table.clone(), binary.is_some(), rx));
                Writer { tx, task }
            })
            .collect();
        self.current = Some(TableCopy { table, writers, next: 0, binary });
        Ok(())
    }

    /// Whether the table being filled takes blocks in binary COPY (`true`) or text (`false`).
    pub fn takes(&self, binary: bool) -> bool {
        self.current.as_ref().is_some_and(|c| c.binary.is_some() == binary)
    }

    /// Hands a block of whole rows in COPY text format to the next writer.
    pub async fn send(&mut self, block: Bytes) -> Result<(), PgError> {
        let cur = self.current.as_mut().ok_or_else(|| PgError::Protocol("snapshot rows before their table".into()))?;
        let i = cur.next;
        cur.next = (i + 1) % cur.writers.len();
        if cur.writers[i].tx.send(block).await.is_err() {
            // That writer stopped; its result says why.
            return Err(self.fail().await);
        }
        Ok(())
    }

    /// Adds one typed row, written with the target columns' `codecs`; rows are sent on in
    /// blocks.
    pub async fn push_row(&mut self, codecs: &[PgType], row: &Row) -> Result<(), PgError> {
        match self.current.as_ref().and_then(|c| c.binary.as_ref()) {
            Some(binary) => copy::encode_binary_row(&mut self.rows, binary, row),
            None => copy::encode_row(&mut self.rows, &mut self.scratch, codecs, row),
        }
        .map_err(|e| PgError::Encode(format!("a copied row: {e}")))?;
        if self.rows.len() >= ROW_BLOCK_BYTES {
            let block = self.rows.split().freeze();
            self.send(block).await?;
        }
        Ok(())
    }

    /// Completes (and so commits) the table's copy on every connection.
    pub async fn finish_table(&mut self) -> Result<(), PgError> {
        if !self.rows.is_empty() {
            let block = self.rows.split().freeze();
            self.send(block).await?;
        }
        let Some(mut cur) = self.current.take() else { return Ok(()) };
        let mut rows = 0;
        let mut first_error = None;
        for w in std::mem::take(&mut cur.writers) {
            drop(w.tx);
            match join(w.task).await {
                Ok(n) => rows += n,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        debug!(table = %cur.table, rows, "snapshot copy finished");
        Ok(())
    }

    /// After a writer failed: aborts the others and returns the failure.
    async fn fail(&mut self) -> PgError {
        let Some(mut cur) = self.current.take() else {
            return PgError::Protocol("snapshot writer failed".into());
        };
        let writers = std::mem::take(&mut cur.writers);
        let mut first_error = None;
        for w in writers.iter().filter(|w| !w.task.is_finished()) {
            w.task.abort();
        }
        for w in writers {
            if let Err(e) = join(w.task).await {
                if !matches!(&e, PgError::Protocol(m) if m == ABORTED) {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.unwrap_or_else(|| PgError::Protocol(format!("snapshot writer for {} stopped", cur.table)))
    }
}

const ABORTED: &str = "snapshot writer aborted";

async fn join(task: JoinHandle<Result<u64, PgError>>) -> Result<u64, PgError> {
    match task.await {
        Ok(r) => r,
        Err(e) if e.is_cancelled() => Err(PgError::Protocol(ABORTED.into())),
        Err(e) => Err(PgError::Protocol(format!("snapshot writer failed: {e}"))),
    }
}

async fn write_copy(
    client: Arc<Client>,
    sql: String,
    table: TableId,
    binary: bool,
    mut blocks: mpsc::Receiver<Bytes>,
) -> Result<u64, PgError> {
    let sink = client.copy_in::<_, Bytes>(&sql).await.ctx(format!("start COPY into {table}"))?;
    let mut sink = std::pin::pin!(sink);
    if binary {
        let mut header = BytesMut::new();
        copy::binary_header(&mut header);
        sink.feed(header.freeze()).await.ctx_with(|| format!("COPY into {table}"))?;
    }
    while let Some(block) = blocks.recv().await {
        sink.feed(block).await.ctx_with(|| format!("COPY into {table}"))?;
        if blocks.is_empty() {
            sink.flush().await.ctx_with(|| format!("COPY into {table}"))?;
        }
    }
    if binary {
        let mut trailer = BytesMut::new();
        copy::binary_trailer(&mut trailer);
        sink.feed(trailer.freeze()).await.ctx_with(|| format!("COPY into {table}"))?;
    }
    sink.as_mut().finish().await.ctx(format!("finish COPY into {table}"))
}
