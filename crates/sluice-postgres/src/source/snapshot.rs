//! The consistent snapshot of a fresh start: every selected table read with `COPY .. TO STDOUT`
//! in the snapshot the slot exported, before any change is streamed.
//!
//! Rows travel on as the server wrote them, in blocks of whole binary tuples ([`COPY_BINARY`],
//! when a sink takes it and every column's type has a binary form Sluice reads) or of whole text
//! lines ([`COPY_TEXT`]) when a sink takes that format, else decoded into typed rows here. At most
//! [`SNAPSHOT_BUDGET_BYTES`] of them are in the pipeline at once: each block holds a share of a
//! budget until the last sink has written it, so memory stays bounded whatever the table size.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use sluice_core::{BulkFormat, BulkRows, Copy, CopyMode, CopyStep, Event, Hold, SinkSet};
use tokio::sync::{mpsc, watch};
use tracing::info;

use super::send;
use crate::catalog::{self, SourceTable, TypeCache};
use crate::copy::{
    count_rows, BinaryBlockBuilder, BlockBuilder, CopyBinaryDecoder, CopyTextDecoder, CopyTextError, COPY_BINARY,
    COPY_TEXT,
};
use crate::error::{Ctx, PgError};
use crate::ident::{quote_ident, quote_literal};

/// Size of the blocks of rows the snapshot emits.
const SNAPSHOT_BLOCK_BYTES: usize = 64 * 1024;
/// Bytes of snapshot rows that may be in the pipeline at once (queued or being written).
const SNAPSHOT_BUDGET_BYTES: usize = 16 * 1024 * 1024;

/// Copies every table to the sinks `to`. Returns `false` if the pipeline began stopping
/// before the copy finished.
pub(super) async fn copy_all(
    url: &str,
    tables: &[SourceTable],
    snapshot_name: &str,
    to: SinkSet,
    accepted: &[BulkFormat],
    events: &mpsc::Sender<Event>,
    stop: &watch::Receiver<bool>,
) -> Result<bool, PgError> {
    let client = catalog::connect(url, "source (snapshot)").await?;
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
            quote_literal(snapshot_name)
        ))
        .await
        .ctx("import the slot's snapshot")?;
    let mut types = TypeCache::default();
    let budget = Arc::new(tokio::sync::Semaphore::new(SNAPSHOT_BUDGET_BYTES));
    let bulk = accepted.contains(&COPY_TEXT);
    for t in tables {
        let started = Instant::now();
        let cols = catalog::table_columns(&client, t.oid, t.columns.as_deref()).await?;
        let key = catalog::key_columns(&client, t.oid).await?;
        let mut table = types.table(&client, t.id.clone(), &cols, &key, catalog::next_version(), &[]).await?;
        table.partitioned = t.partitioned;
        table.row_filter = t.row_filter.clone();
        let binary = accepted.contains(&COPY_BINARY) && table.types.iter().all(|t| t.binary_ok());
        let decoder: Arc<dyn sluice_core::BulkDecoder> = if binary {
            Arc::new(CopyBinaryDecoder::new(table.types.clone()))
        } else {
            Arc::new(CopyTextDecoder::new(table.types.clone()))
        };
        let (format, bulk) = if binary { (COPY_BINARY, true) } else { (COPY_TEXT, bulk) };
        let copy = |step| Event::Copy(Copy::new(to, table.schema.clone(), step));
        let estimated_rows = u64::try_from(t.estimated_rows).ok().filter(|n| *n > 0);
        let source_id = Some(t.identity());
        send(events, copy(CopyStep::Begin { mode: CopyMode::Snapshot, source_id, estimated_rows })).await?;
        let list = table.schema.columns.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
        let stream = client
            .copy_out(&format!(
                "COPY (SELECT {list} FROM {}{}) TO STDOUT{}",
                catalog::from_rows(&t.id, t.partitioned),
                catalog::row_filter_clause(t.row_filter.as_deref()),
                if binary { " (FORMAT binary)" } else { "" }
            ))
            .await
            .ctx(format!("snapshot of {}", t.id))?;
        let mut stream = std::pin::pin!(stream);
        let mut blocks = Blocks::new(binary);
        let mut rows: u64 = 0;
        loop {
            let chunk = stream.next().await.transpose().ctx_with(|| format!("snapshot of {}", t.id))?;
            let block = match &chunk {
                Some(c) => blocks.push(c),
                None => blocks.finish(),
            }
            .map_err(|e| PgError::Protocol(format!("snapshot of {}: {e}", t.id)))?;
            if let Some((block, n)) = block {
                let permits = block.len().clamp(1, SNAPSHOT_BUDGET_BYTES) as u32;
                let share = budget
                    .clone()
                    .acquire_many_owned(permits)
                    .await
                    .map_err(|_| PgError::Protocol("snapshot memory budget closed".into()))?;
                rows += n as u64;
                let step = if bulk {
                    CopyStep::Bulk(BulkRows::new(format, block, n, decoder.clone()))
                } else {
                    let decoded = decoder
                        .decode(&table.schema, &block)
                        .map_err(|e| PgError::Protocol(format!("snapshot of {}: {e}", t.id)))?;
                    CopyStep::Rows(decoded)
                };
                // Typed rows take more memory than their text; the share covers the text.
                let held = Copy { hold: Hold(Some(Arc::new(share))), ..Copy::new(to, table.schema.clone(), step) };
                send(events, Event::Copy(held)).await?;
                sluice_core::crash_point("snapshot.mid_table");
                if *stop.borrow() {
                    return Ok(false);
                }
            }
            if chunk.is_none() {
                break;
            }
        }
        send(events, copy(CopyStep::End)).await?;
        info!(table = %t.id, rows, secs = started.elapsed().as_secs_f64(), "snapshot of table finished");
    }
    client.batch_execute("COMMIT").await.ctx("finish snapshot")?;
    Ok(true)
}

/// Blocks of whole rows from a COPY stream, text or binary, with their row counts.
enum Blocks {
    Text(BlockBuilder),
    Binary(BinaryBlockBuilder),
}

impl Blocks {
    fn new(binary: bool) -> Blocks {
        if binary {
            Blocks::Binary(BinaryBlockBuilder::new(SNAPSHOT_BLOCK_BYTES))
        } else {
            Blocks::Text(BlockBuilder::new(SNAPSHOT_BLOCK_BYTES))
        }
    }

    fn push(&mut self, chunk: &[u8]) -> Result<Option<(bytes::Bytes, usize)>, CopyTextError> {
        match self {
            Blocks::Text(b) => Ok(b.push(chunk).map(|block| {
                let n = count_rows(&block);
                (block, n)
            })),
            Blocks::Binary(b) => b.push(chunk),
        }
    }

    fn finish(&mut self) -> Result<Option<(bytes::Bytes, usize)>, CopyTextError> {
        match self {
            Blocks::Text(b) => Ok(b.finish()?.map(|block| {
                let n = count_rows(&block);
                (block, n)
            })),
            Blocks::Binary(b) => b.finish(),
        }
    }
}
