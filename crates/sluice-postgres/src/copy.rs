//! PostgreSQL's `COPY` text format: one row per line, tab-separated fields, `\N` for NULL,
//! backslash escapes for the characters the format reserves.
//!
//! A consistent snapshot reads tables with `COPY .. TO STDOUT` and hands the server's text on in
//! blocks of whole lines ([`COPY_TEXT`] bulk rows): a PostgreSQL sink writes them with
//! `COPY .. FROM STDIN` without looking inside, and every other sink gets them decoded into typed
//! rows by [`CopyTextDecoder`]. The replica sink also encodes typed rows into this format for
//! its bulk inserts.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sluice_core::{BulkDecoder, BulkFormat, ConnectorError, ErrorClass, Row, TableSchema, Value};

use crate::codec::{self, PgType};

/// PostgreSQL COPY text rows, in the column order of the schema they travel with, written by a
/// session with Sluice's fixed output settings (ISO dates, UTC, postgres interval style).
pub const COPY_TEXT: BulkFormat = BulkFormat("postgres/copy-text");

/// PostgreSQL binary COPY tuples (no header or trailer), in the column order of the schema they
/// travel with: each value in its type's `typsend` form, so a target of the same types takes
/// them without either server formatting or parsing text.
pub const COPY_BINARY: BulkFormat = BulkFormat("postgres/copy-binary");

/// The signature that opens a binary COPY stream.
const BINARY_SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

/// Decodes [`COPY_BINARY`] blocks of one table into typed rows.
pub struct CopyBinaryDecoder {
    types: Arc<Vec<PgType>>,
}

impl CopyBinaryDecoder {
    /// A decoder for rows whose columns have `types` (each [`PgType::binary_ok`]).
    pub fn new(types: Arc<Vec<PgType>>) -> CopyBinaryDecoder {
        CopyBinaryDecoder { types }
    }

    /// The rows of a block of whole tuples.
    pub fn rows(&self, data: &Bytes) -> Result<Vec<Row>, CopyTextError> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let fields = read_i16(data, at).ok_or_else(|| CopyTextError("a binary COPY tuple is cut short".into()))?;
            at += 2;
            if fields as usize != self.types.len() {
                return Err(CopyTextError(format!(
                    "a binary COPY tuple has {fields} fields, expected {}",
                    self.types.len()
                )));
            }
            let mut row = Vec::with_capacity(self.types.len());
            for ty in self.types.iter() {
                let len = read_i32(data, at).ok_or_else(|| CopyTextError("a binary COPY field is cut short".into()))?;
                at += 4;
                if len < 0 {
                    row.push(Value::Null);
                    continue;
                }
                let end = at + len as usize;
                if end > data.len() {
                    return Err(CopyTextError("a binary COPY field is cut short".into()));
                }
                row.push(codec::decode_binary(ty, data.slice(at..end)).map_err(|e| CopyTextError(e.to_string()))?);
                at = end;
            }
            out.push(row);
        }
        Ok(out)
    }
}

impl BulkDecoder for CopyBinaryDecoder {
    fn decode(&self, table: &TableSchema, data: &Bytes) -> Result<Vec<Row>, ConnectorError> {
        self.rows(data)
            .map_err(|e| ConnectorError::new(ErrorClass::Definite, format!("copied rows of {}: {e}", table.id), e))
    }
}

fn read_i16(b: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn read_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Gathers a binary COPY stream (chunks split anywhere) into blocks of whole tuples of at least
/// `target` bytes: the header is checked and dropped, the trailer ends the stream.
pub struct BinaryBlockBuilder {
    buf: BytesMut,
    target: usize,
    header_done: bool,
    /// Bytes of `buf` that are whole tuples, and how many
    parsed: usize,
    rows: usize,
    ended: bool,
}

impl BinaryBlockBuilder {
    /// A builder that closes a block once it holds `target` bytes of whole tuples.
    pub fn new(target: usize) -> BinaryBlockBuilder {
        BinaryBlockBuilder {
            buf: BytesMut::with_capacity(target + target / 4),
            target,
            header_done: false,
            parsed: 0,
            rows: 0,
            ended: false,
        }
    }

    /// Adds a chunk; returns a block of whole tuples and their number when one is full.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Option<(Bytes, usize)>, CopyTextError> {
        if self.ended {
            return if chunk.is_empty() {
                Ok(None)
            } else {
                Err(CopyTextError("data after the binary COPY trailer".into()))
            };
        }
        self.buf.extend_from_slice(chunk);
        if !self.header_done {
            if self.buf.len() < 19 {
                return Ok(None);
            }
            if &self.buf[..11] != BINARY_SIGNATURE {
                return Err(CopyTextError("not a binary COPY stream (bad signature)".into()));
            }
            let ext = read_i32(&self.buf, 15).unwrap_or(0).max(0) as usize;
            if self.buf.len() < 19 + ext {
                return Ok(None);
            }
            let _ = self.buf.split_to(19 + ext);
            self.header_done = true;
        }
        // Whole tuples from where the last scan stopped.
        loop {
            let Some(fields) = read_i16(&self.buf, self.parsed) else { break };
            if fields == -1 {
                self.ended = true;
                self.buf.truncate(self.parsed);
                break;
            }
            let mut at = self.parsed + 2;
            let mut whole = true;
            for _ in 0..fields.max(0) {
                match read_i32(&self.buf, at) {
                    Some(len) => at += 4 + len.max(0) as usize,
                    None => {
                        whole = false;
                        break;
                    }
                }
            }
            if !whole || at > self.buf.len() {
                break;
            }
            self.parsed = at;
            self.rows += 1;
        }
        if self.parsed < self.target {
            return Ok(None);
        }
        Ok(Some(self.take()))
    }

    fn take(&mut self) -> (Bytes, usize) {
        let block = self.buf.split_to(self.parsed).freeze();
        let rows = std::mem::take(&mut self.rows);
        self.parsed = 0;
        self.buf.reserve(self.target + self.target / 4);
        (block, rows)
    }

    /// The tuples left at the end of the stream; an error if it stopped inside a tuple or
    /// without its trailer.
    pub fn finish(&mut self) -> Result<Option<(Bytes, usize)>, CopyTextError> {
        if !self.ended || self.parsed != self.buf.len() {
            return Err(CopyTextError("the binary COPY stream ended in the middle of a tuple".into()));
        }
        Ok((self.parsed > 0).then(|| self.take()))
    }
}

/// COPY text that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CopyTextError(pub String);

/// Decodes [`COPY_TEXT`] blocks of one table into typed rows.
pub struct CopyTextDecoder {
    types: Arc<Vec<PgType>>,
}

impl CopyTextDecoder {
    /// A decoder for rows whose columns have `types`.
    pub fn new(types: Arc<Vec<PgType>>) -> CopyTextDecoder {
        CopyTextDecoder { types }
    }

    /// The rows of a block.
    pub fn rows(&self, data: &Bytes) -> Result<Vec<Row>, CopyTextError> {
        let mut out = Vec::with_capacity(memchr::memchr_iter(b'\n', data).count());
        let mut start = 0;
        while let Some(nl) = memchr::memchr(b'\n', &data[start..]) {
            out.push(self.line(data.slice(start..start + nl))?);
            start += nl + 1;
        }
        Ok(out)
    }

    fn line(&self, line: Bytes) -> Result<Row, CopyTextError> {
        let mut out = Vec::with_capacity(self.types.len());
        let mut start = 0;
        loop {
            let end = memchr::memchr(b'\t', &line[start..]).map_or(line.len(), |i| start + i);
            let ty = self
                .types
                .get(out.len())
                .ok_or_else(|| CopyTextError(format!("a COPY row has more than {} fields", self.types.len())))?;
            let field = &line[start..end];
            let value = if field == b"\\N" {
                Value::Null
            } else {
                let raw = if field.contains(&b'\\') { Bytes::from(unescape(field)?) } else { line.slice(start..end) };
                codec::decode_text(ty, raw).map_err(|e| CopyTextError(e.to_string()))?
            };
            out.push(value);
            if end == line.len() {
                break;
            }
            start = end + 1;
        }
        if out.len() != self.types.len() {
            return Err(CopyTextError(format!("a COPY row has {} fields, expected {}", out.len(), self.types.len())));
        }
        Ok(out)
    }
}

impl BulkDecoder for CopyTextDecoder {
    fn decode(&self, table: &TableSchema, data: &Bytes) -> Result<Vec<Row>, ConnectorError> {
        self.rows(data)
            .map_err(|e| ConnectorError::new(ErrorClass::Definite, format!("copied rows of {}: {e}", table.id), e))
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

/// Appends `row` as one line of COPY text; `scratch` is a reusable buffer.
pub fn encode_row(
    buf: &mut BytesMut,
    scratch: &mut BytesMut,
    types: &[PgType],
    row: &Row,
) -> Result<(), codec::CodecError> {
    for (i, (v, ty)) in row.iter().zip(types).enumerate() {
        if i > 0 {
            buf.extend_from_slice(b"\t");
        }
        match v {
            Value::Null | Value::Unchanged => buf.extend_from_slice(b"\\N"),
            v => {
                scratch.clear();
                codec::encode_text(ty, v, scratch)?;
                escape_into(buf, scratch);
            }
        }
    }
    buf.extend_from_slice(b"\n");
    Ok(())
}

fn escape_into(buf: &mut BytesMut, bytes: &[u8]) {
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

/// The header of a binary COPY stream: signature, flags, header extension length.
pub fn binary_header(buf: &mut BytesMut) {
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes());
}

/// The end of a binary COPY stream.
pub fn binary_trailer(buf: &mut BytesMut) {
    buf.extend_from_slice(&(-1i16).to_be_bytes());
}

/// Appends `row` as one binary COPY tuple.
pub fn encode_binary_row(buf: &mut BytesMut, types: &[PgType], row: &Row) -> Result<(), codec::CodecError> {
    buf.extend_from_slice(&(row.len() as i16).to_be_bytes());
    for (v, ty) in row.iter().zip(types) {
        match v {
            Value::Null | Value::Unchanged => buf.extend_from_slice(&(-1i32).to_be_bytes()),
            v => {
                let at = buf.len();
                buf.extend_from_slice(&0i32.to_be_bytes());
                codec::encode_binary(ty, v, buf)?;
                let len = (buf.len() - at - 4) as i32;
                buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
        }
    }
    Ok(())
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

/// Number of rows (lines) in a block of COPY text.
pub fn count_rows(block: &[u8]) -> usize {
    memchr::memchr_iter(b'\n', block).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Value {
        Value::Text(s.into())
    }

    fn decoder(n: usize) -> CopyTextDecoder {
        CopyTextDecoder::new(Arc::new(vec![PgType::Text; n]))
    }

    #[test]
    fn blocks_hold_whole_rows_whatever_the_chunking() {
        let data = b"1\ta\\tb\\\\c\\N\t\\N\n2\t\\x41\\101\\n\tz\n3\t\\N\t\n";
        let d = decoder(3);
        for size in 1..data.len() {
            let mut b = BlockBuilder::new(8);
            let mut rows = Vec::new();
            for chunk in data.chunks(size) {
                if let Some(block) = b.push(chunk) {
                    rows.extend(d.rows(&block).unwrap());
                }
            }
            if let Some(block) = b.finish().unwrap() {
                rows.extend(d.rows(&block).unwrap());
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
    fn a_truncated_stream_or_a_short_row_is_an_error() {
        let mut b = BlockBuilder::new(1024);
        assert!(b.push(b"1\tx\n2\t").is_none());
        assert!(b.finish().is_err());
        assert!(decoder(3).rows(&Bytes::from_static(b"1\tx\n")).is_err());
        assert!(decoder(1).rows(&Bytes::from_static(b"1\tx\n")).is_err());
    }

    #[test]
    fn binary_blocks_hold_whole_tuples_whatever_the_chunking() {
        let types = vec![PgType::Int8, PgType::Text, PgType::Numeric];
        let rows: Vec<Row> = (0..20)
            .map(|i| {
                vec![
                    Value::Int(i),
                    if i % 3 == 0 { Value::Null } else { t(&"x".repeat(i as usize)) },
                    Value::Decimal(sluice_core::Decimal::parse(&format!("{i}.50")).unwrap()),
                ]
            })
            .collect();
        let mut stream = BytesMut::new();
        binary_header(&mut stream);
        for r in &rows {
            encode_binary_row(&mut stream, &types, r).unwrap();
        }
        binary_trailer(&mut stream);
        let decoder = CopyBinaryDecoder::new(Arc::new(types));
        for size in [1, 2, 3, 7, 19, 64, stream.len()] {
            let mut b = BinaryBlockBuilder::new(40);
            let (mut got, mut counted) = (Vec::new(), 0);
            for chunk in stream.chunks(size) {
                if let Some((block, n)) = b.push(chunk).unwrap() {
                    counted += n;
                    got.extend(decoder.rows(&block).unwrap());
                }
            }
            if let Some((block, n)) = b.finish().unwrap() {
                counted += n;
                got.extend(decoder.rows(&block).unwrap());
            }
            assert_eq!((got.len(), counted), (rows.len(), rows.len()), "chunk size {size}");
            assert_eq!(got, rows, "chunk size {size}");
        }
        // Cut short, or not binary COPY at all.
        let mut b = BinaryBlockBuilder::new(1 << 20);
        assert!(b.push(&stream[..stream.len() - 5]).unwrap().is_none());
        assert!(b.finish().is_err());
        assert!(BinaryBlockBuilder::new(8).push(b"1\tx\n2\ty\n3\tz\n4\tw\n5\tv\n").is_err());
    }

    #[test]
    fn typed_rows_encode_then_decode_to_the_same_values() {
        let types = vec![PgType::Text, PgType::Int8, PgType::Bytea, PgType::Text];
        let rows = vec![
            vec![t("a\\b\tc\nd\re"), Value::Int(-5), Value::Bytes(Bytes::from_static(b"\x00\\\t")), Value::Null],
            vec![t("\\N"), Value::Int(0), Value::Null, t("")],
        ];
        let mut buf = BytesMut::new();
        let mut scratch = BytesMut::new();
        for r in &rows {
            encode_row(&mut buf, &mut scratch, &types, r).unwrap();
        }
        let block = buf.freeze();
        assert_eq!(count_rows(&block), 2);
        assert_eq!(CopyTextDecoder::new(Arc::new(types)).rows(&block).unwrap(), rows);
    }
}
