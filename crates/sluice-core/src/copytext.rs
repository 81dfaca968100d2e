//! Rows in PostgreSQL's `COPY` text format: one row per line, tab-separated fields, `\N` for
//! NULL, backslash escapes for the characters the format reserves.
//!
//! This is how the initial snapshot carries rows in bulk ([`crate::Op::ReadRows`]): a source
//! that reads with `COPY .. TO STDOUT` hands its output on without looking inside, a sink that
//! writes with `COPY .. FROM STDIN` sends it on the same way, and any other sink reads the rows
//! out of it with [`RowBlock::rows`].

use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::model::{Row, Text, Value};

/// Whole rows in COPY text format, in the column order of the table schema they travel with.
///
/// A block may hold a share of a memory budget (see [`RowBlock::with_budget`]) that is given
/// back when the last copy of the block is dropped.
#[derive(Clone)]
pub struct RowBlock {
    data: Bytes,
    rows: usize,
    _budget: Option<Arc<dyn Send + Sync>>,
}

impl RowBlock {
    /// A block from COPY text that ends with a complete line (or is empty).
    pub fn new(data: Bytes) -> Result<RowBlock, CopyTextError> {
        if data.last().is_some_and(|b| *b != b'\n') {
            return Err(CopyTextError("a block of COPY rows ends in the middle of a row".into()));
        }
        let rows = memchr::memchr_iter(b'\n', &data).count();
        Ok(RowBlock { data, rows, _budget: None })
    }

    /// Attaches a share of a memory budget, held until every copy of the block is dropped.
    pub fn with_budget(mut self, share: Arc<dyn Send + Sync>) -> RowBlock {
        self._budget = Some(share);
        self
    }

    /// The COPY text.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether the block holds no rows.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The rows, parsed. Values share the block's buffer unless they contained escapes.
    pub fn rows(&self) -> impl Iterator<Item = Result<Row, CopyTextError>> + '_ {
        let mut start = 0;
        std::iter::from_fn(move || {
            let nl = memchr::memchr(b'\n', &self.data[start..])?;
            let line = self.data.slice(start..start + nl);
            start += nl + 1;
            Some(parse_line(line))
        })
    }
}

impl fmt::Debug for RowBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RowBlock").field("rows", &self.rows).field("bytes", &self.data.len()).finish()
    }
}

impl PartialEq for RowBlock {
    fn eq(&self, other: &Self) -> bool {
        self.data == other.data
    }
}

/// COPY text that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CopyTextError(String);

/// Parses one line (without its newline) into values.
pub fn parse_line(line: Bytes) -> Result<Row, CopyTextError> {
    let mut out = Vec::with_capacity(8);
    let mut start = 0;
    loop {
        let end = memchr::memchr(b'\t', &line[start..]).map_or(line.len(), |i| start + i);
        let field = &line[start..end];
        if field == b"\\N" {
            out.push(Value::Null);
        } else if !field.contains(&b'\\') {
            out.push(Value::Text(Text::from_utf8_bytes(line.slice(start..end))));
        } else {
            out.push(Value::Text(Text::from_utf8_bytes(Bytes::from(unescape(field)?))));
        }
        if end == line.len() {
            return Ok(out);
        }
        start = end + 1;
    }
}

fn unescape(f: &[u8]) -> Result<Vec<u8>, CopyTextError> {
    let mut out = Vec::with_capacity(f.len());
    let mut i = 0;
    while i < f.len() {
        if f[i] != b'\\' || i + 1 == f.len() {
            out.push(f[i]);
            i += 1;
            continue;
        }
        let c = f[i + 1];
        i += 2;
        match c {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = (c - b'0') as u32;
                let mut k = 0;
                while k < 2 && i < f.len() && (b'0'..=b'7').contains(&f[i]) {
                    v = v * 8 + (f[i] - b'0') as u32;
                    i += 1;
                    k += 1;
                }
                out.push(v as u8);
            }
            b'x' => {
                let mut v = 0u32;
                let mut k = 0;
                while k < 2 && i < f.len() && f[i].is_ascii_hexdigit() {
                    v = v * 16 + (f[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                    k += 1;
                }
                if k == 0 {
                    return Err(CopyTextError("bad \\x escape in COPY data".into()));
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Appends `row` as one line of COPY text.
pub fn encode_row(buf: &mut BytesMut, row: &Row) {
    for (i, v) in row.iter().enumerate() {
        if i > 0 {
            buf.extend_from_slice(b"\t");
        }
        match v {
            Value::Text(t) => {
                let bytes = t.as_bytes();
                let mut start = 0;
                for (j, &b) in bytes.iter().enumerate() {
                    let esc: &[u8] = match b {
                        b'\\' => b"\\\\",
                        b'\t' => b"\\t",
                        b'\n' => b"\\n",
                        b'\r' => b"\\r",
                        _ => continue,
                    };
                    buf.extend_from_slice(&bytes[start..j]);
                    buf.extend_from_slice(esc);
                    start = j + 1;
                }
                buf.extend_from_slice(&bytes[start..]);
            }
            Value::Null | Value::Unchanged => buf.extend_from_slice(b"\\N"),
        }
    }
    buf.extend_from_slice(b"\n");
}

/// Gathers a stream of COPY chunks (which may split rows anywhere) into blocks of whole rows of
/// at least `target` bytes.
pub struct BlockBuilder {
    buf: BytesMut,
    target: usize,
}

impl BlockBuilder {
    /// A builder that closes a block once it holds `target` bytes and ends with a whole row.
    pub fn new(target: usize) -> BlockBuilder {
        BlockBuilder { buf: BytesMut::with_capacity(target + target / 4), target }
    }

    /// Adds a chunk; returns a block when one is full.
    pub fn push(&mut self, chunk: &[u8]) -> Option<Bytes> {
        self.buf.extend_from_slice(chunk);
        if self.buf.len() < self.target {
            return None;
        }
        let end = memchr::memrchr(b'\n', &self.buf)? + 1;
        let block = self.buf.split_to(end).freeze();
        self.buf.reserve(self.target + self.target / 4);
        Some(block)
    }

    /// The rows left over at the end of the stream; an error if it stopped inside a row.
    pub fn finish(&mut self) -> Result<Option<Bytes>, CopyTextError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        if self.buf.last() != Some(&b'\n') {
            return Err(CopyTextError("the COPY stream ended in the middle of a row".into()));
        }
        Ok(Some(self.buf.split().freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn blocks_hold_whole_rows_whatever_the_chunking() {
        let data = b"1\ta\\tb\\\\c\\N\t\\N\n2\t\\x41\\101\\n\tz\n3\t\\N\t\n";
        for size in 1..data.len() {
            let mut b = BlockBuilder::new(8);
            let mut rows = Vec::new();
            for chunk in data.chunks(size) {
                if let Some(block) = b.push(chunk) {
                    rows.extend(RowBlock::new(block).unwrap().rows().map(Result::unwrap));
                }
            }
            if let Some(block) = b.finish().unwrap() {
                rows.extend(RowBlock::new(block).unwrap().rows().map(Result::unwrap));
            }
            assert_eq!(
                rows,
                vec![
                    vec![t("1"), t("a\tb\\cN"), Value::Null],
                    vec![t("2"), t("AA\n"), t("z")],
                    vec![t("3"), Value::Null, t("")]
                ],
                "chunk size {size}"
            );
        }
    }

    #[test]
    fn a_truncated_stream_is_an_error() {
        let mut b = BlockBuilder::new(1024);
        assert!(b.push(b"1\tx\n2\t").is_none());
        assert!(b.finish().is_err());
        assert!(RowBlock::new(Bytes::from_static(b"1\tx")).is_err());
    }

    #[test]
    fn encoding_escapes_reserved_characters() {
        let mut buf = BytesMut::new();
        encode_row(&mut buf, &vec![t("a\tb\\c\nd\re"), Value::Null, t("")]);
        assert_eq!(&buf[..], b"a\\tb\\\\c\\nd\\re\t\\N\t\n");
    }

    #[test]
    fn encoding_then_parsing_gives_the_rows_back() {
        let rows = vec![vec![t("a\\b\tc\nd\re"), Value::Null, t("")], vec![t("\\N"), t("x"), Value::Null]];
        let mut buf = BytesMut::new();
        for r in &rows {
            encode_row(&mut buf, r);
        }
        let block = RowBlock::new(buf.freeze()).unwrap();
        assert_eq!(block.len(), 2);
        assert_eq!(block.rows().collect::<Result<Vec<_>, _>>().unwrap(), rows);
    }
}
