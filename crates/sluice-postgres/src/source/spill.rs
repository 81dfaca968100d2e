//! Transactions the server streams while they are still running (pgoutput protocol 2,
//! `streaming 'on'`), held in an unnamed temporary file until they commit.
//!
//! The server starts streaming a transaction once its changes outgrow
//! `logical_decoding_work_mem`, instead of spilling it to disk on the source. Its blocks arrive
//! between other transactions; each message is appended, as received, to the transaction's file.
//! At Stream Commit the file is read back and applied as one ordinary transaction, so the sinks
//! still see it whole and in commit order; at Stream Abort of the transaction the file is
//! dropped, and the changes of an aborted subtransaction are skipped on the way back. Memory
//! stays at two buffers per open transaction whatever its size. The files live in the system's
//! temporary directory (`TMPDIR`) and vanish with the process.

use bytes::{Bytes, BytesMut};
use rustc_hash::{FxHashMap, FxHashSet};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader, BufWriter};

use crate::error::PgError;
use crate::pgoutput::streamed_xid;

const BUFFER_BYTES: usize = 256 * 1024;

fn io(what: &'static str) -> impl Fn(std::io::Error) -> PgError {
    move |source| PgError::Io { what, source }
}

struct Spill {
    file: BufWriter<tokio::fs::File>,
    aborted: FxHashSet<u32>,
    messages: u64,
    bytes: u64,
}

/// The streamed transactions not yet committed or aborted.
#[derive(Default)]
pub(super) struct Spills {
    open: FxHashMap<u32, Spill>,
}

impl Spills {
    /// A Stream Start for `xid`: a new file for its first block.
    pub async fn start(&mut self, xid: u32, first: bool) -> Result<(), PgError> {
        if !first && !self.open.contains_key(&xid) {
            // Its earlier blocks went to another connection: restart, and the server streams
            // the transaction again from its start.
            return Err(PgError::Protocol(format!(
                "a later block of streamed transaction {xid} arrived without its first block"
            )));
        }
        if first {
            let file = tempfile::tempfile().map_err(io("temporary file for a streamed transaction"))?;
            let spill = Spill {
                file: BufWriter::with_capacity(BUFFER_BYTES, tokio::fs::File::from_std(file)),
                aborted: FxHashSet::default(),
                messages: 0,
                bytes: 0,
            };
            self.open.insert(xid, spill);
        }
        Ok(())
    }

    /// A message of the block of top-level transaction `top`, as received.
    pub async fn append(&mut self, top: u32, msg: &[u8]) -> Result<(), PgError> {
        let spill = self.open.get_mut(&top).ok_or_else(|| {
            PgError::Protocol(format!("streamed change of transaction {top} before its Stream Start"))
        })?;
        streamed_xid(msg)?;
        let len = u32::try_from(msg.len()).map_err(|_| PgError::Protocol("streamed message over 4 GiB".into()))?;
        let w = io("temporary file for a streamed transaction");
        spill.file.write_all(&len.to_be_bytes()).await.map_err(&w)?;
        spill.file.write_all(msg).await.map_err(&w)?;
        spill.messages += 1;
        spill.bytes += msg.len() as u64;
        Ok(())
    }

    /// A Stream Abort: the whole transaction, or one subtransaction's changes.
    pub fn abort(&mut self, xid: u32, subxid: u32) {
        if xid == subxid {
            if let Some(s) = self.open.remove(&xid) {
                tracing::debug!(xid, messages = s.messages, bytes = s.bytes, "streamed transaction aborted");
            }
        } else if let Some(s) = self.open.get_mut(&xid) {
            s.aborted.insert(subxid);
        }
    }

    /// A Stream Commit: the transaction's messages to read back, `None` if none arrived.
    pub async fn take(&mut self, xid: u32) -> Result<Option<Replay>, PgError> {
        let Some(mut s) = self.open.remove(&xid) else { return Ok(None) };
        let r = io("temporary file for a streamed transaction");
        s.file.flush().await.map_err(&r)?;
        let mut file = s.file.into_inner();
        file.seek(std::io::SeekFrom::Start(0)).await.map_err(&r)?;
        tracing::debug!(xid, messages = s.messages, bytes = s.bytes, "streamed transaction committed; applying it");
        Ok(Some(Replay {
            file: BufReader::with_capacity(BUFFER_BYTES, file),
            aborted: s.aborted,
            left: s.messages,
            buf: BytesMut::new(),
        }))
    }
}

/// A committed streamed transaction being read back.
pub(super) struct Replay {
    file: BufReader<tokio::fs::File>,
    aborted: FxHashSet<u32>,
    left: u64,
    buf: BytesMut,
}

impl Replay {
    /// The next message not of an aborted subtransaction.
    pub async fn next(&mut self) -> Result<Option<Bytes>, PgError> {
        let r = io("temporary file for a streamed transaction");
        while self.left > 0 {
            self.left -= 1;
            let len = self.file.read_u32().await.map_err(&r)? as usize;
            self.buf.resize(len, 0);
            self.file.read_exact(&mut self.buf).await.map_err(&r)?;
            let msg = self.buf.split().freeze();
            if streamed_xid(&msg)?.is_some_and(|x| self.aborted.contains(&x)) {
                continue;
            }
            return Ok(Some(msg));
        }
        Ok(None)
    }
}
