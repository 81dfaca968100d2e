//! Decoder for the `pgoutput` logical decoding protocol, version 1.
//!
//! Tuple values borrow from the received CopyData buffer (`Bytes` slices), so decoding a
//! message allocates only its containers.

use bytes::{Buf, Bytes};

use crate::error::PgError;

/// One column value in a tuple.
#[derive(Debug, Clone, PartialEq)]
pub enum TupleValue {
    /// SQL NULL
    Null,
    /// An unchanged TOASTed value that the server did not send
    Unchanged,
    /// Text-format value
    Text(Bytes),
    /// Binary-format value (the `binary` option)
    Binary(Bytes),
}

/// A column of a Relation message.
#[derive(Debug, Clone, PartialEq)]
pub struct RelColumn {
    /// Part of the replica identity key
    pub key: bool,
    /// Column name
    pub name: String,
    /// Type OID
    pub type_oid: u32,
    /// Type modifier
    pub typmod: i32,
}

/// A Relation message: the shape of a table as of the following changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    /// Relation OID
    pub id: u32,
    /// Schema
    pub namespace: String,
    /// Table name
    pub name: String,
    /// `d` default, `n` nothing, `f` full, `i` index
    pub replica_identity: u8,
    /// Columns
    pub columns: Vec<RelColumn>,
}

/// The old-row part of an update or delete.
#[derive(Debug, Clone, PartialEq)]
pub enum OldTuple {
    /// Key columns only (`K`); other columns are NULL
    Key(Vec<TupleValue>),
    /// The whole old row (`O`, replica identity full)
    Full(Vec<TupleValue>),
}

impl OldTuple {
    /// The values.
    pub fn values(&self) -> &[TupleValue] {
        match self {
            OldTuple::Key(v) | OldTuple::Full(v) => v,
        }
    }
}

/// A decoded pgoutput message.
#[derive(Debug, Clone, PartialEq)]
pub enum PgOutput {
    /// Transaction start
    Begin {
        /// LSN of the commit record
        final_lsn: u64,
        /// Commit time, microseconds since 2000-01-01
        commit_ts: i64,
        /// Transaction id
        xid: u32,
    },
    /// Transaction end
    Commit {
        /// LSN of the commit record
        commit_lsn: u64,
        /// LSN just past the commit record
        end_lsn: u64,
        /// Commit time, microseconds since 2000-01-01
        commit_ts: i64,
    },
    /// Table shape
    Relation(Relation),
    /// A custom type's name
    Type {
        /// Type OID
        oid: u32,
        /// Schema
        namespace: String,
        /// Name
        name: String,
    },
    /// Row inserted
    Insert {
        /// Relation OID
        rel: u32,
        /// New row
        new: Vec<TupleValue>,
    },
    /// Row updated
    Update {
        /// Relation OID
        rel: u32,
        /// Old key or row, when sent
        old: Option<OldTuple>,
        /// New row
        new: Vec<TupleValue>,
    },
    /// Row deleted
    Delete {
        /// Relation OID
        rel: u32,
        /// Old key or row
        old: OldTuple,
    },
    /// Tables truncated
    Truncate {
        /// Relation OIDs
        rels: Vec<u32>,
    },
    /// A logical decoding message (`pg_logical_emit_message`)
    Message {
        /// Emitted inside a transaction (decoded at its commit) rather than immediately
        transactional: bool,
        /// Where it was written
        lsn: u64,
        /// Its prefix
        prefix: String,
        /// Its content
        content: Bytes,
    },
    /// Origin, or anything else we pass over
    Other(u8),
}

fn short(what: &str) -> PgError {
    PgError::Protocol(format!("truncated pgoutput {what} message"))
}

fn need(b: &Bytes, n: usize, what: &str) -> Result<(), PgError> {
    if b.remaining() < n {
        Err(short(what))
    } else {
        Ok(())
    }
}

fn cstr(b: &mut Bytes, what: &str) -> Result<String, PgError> {
    let end = b.iter().position(|c| *c == 0).ok_or_else(|| short(what))?;
    let s = String::from_utf8_lossy(&b[..end]).into_owned();
    b.advance(end + 1);
    Ok(s)
}

fn tuple(b: &mut Bytes, what: &str) -> Result<Vec<TupleValue>, PgError> {
    need(b, 2, what)?;
    let n = b.get_i16().max(0) as usize;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        need(b, 1, what)?;
        match b.get_u8() {
            b'n' => out.push(TupleValue::Null),
            b'u' => out.push(TupleValue::Unchanged),
            kind @ (b't' | b'b') => {
                need(b, 4, what)?;
                let len = b.get_i32().max(0) as usize;
                need(b, len, what)?;
                let v = b.split_to(len);
                out.push(if kind == b't' { TupleValue::Text(v) } else { TupleValue::Binary(v) });
            }
            other => return Err(PgError::Protocol(format!("unknown tuple value kind {:?}", other as char))),
        }
    }
    Ok(out)
}

/// Decodes one pgoutput message.
pub fn decode(mut b: Bytes) -> Result<PgOutput, PgError> {
    need(&b, 1, "empty")?;
    let tag = b.get_u8();
    Ok(match tag {
        b'B' => {
            need(&b, 20, "Begin")?;
            PgOutput::Begin { final_lsn: b.get_u64(), commit_ts: b.get_i64(), xid: b.get_u32() }
        }
        b'C' => {
            need(&b, 25, "Commit")?;
            let _flags = b.get_u8();
            PgOutput::Commit { commit_lsn: b.get_u64(), end_lsn: b.get_u64(), commit_ts: b.get_i64() }
        }
        b'R' => {
            need(&b, 4, "Relation")?;
            let id = b.get_u32();
            let namespace = cstr(&mut b, "Relation")?;
            let name = cstr(&mut b, "Relation")?;
            need(&b, 3, "Relation")?;
            let replica_identity = b.get_u8();
            let n = b.get_i16().max(0) as usize;
            let mut columns = Vec::with_capacity(n);
            for _ in 0..n {
                need(&b, 1, "Relation")?;
                let flags = b.get_u8();
                let name = cstr(&mut b, "Relation")?;
                need(&b, 8, "Relation")?;
                columns.push(RelColumn { key: flags & 1 == 1, name, type_oid: b.get_u32(), typmod: b.get_i32() });
            }
            PgOutput::Relation(Relation { id, namespace, name, replica_identity, columns })
        }
        b'Y' => {
            need(&b, 4, "Type")?;
            let oid = b.get_u32();
            PgOutput::Type { oid, namespace: cstr(&mut b, "Type")?, name: cstr(&mut b, "Type")? }
        }
        b'I' => {
            need(&b, 5, "Insert")?;
            let rel = b.get_u32();
            let _n = b.get_u8();
            PgOutput::Insert { rel, new: tuple(&mut b, "Insert")? }
        }
        b'U' => {
            need(&b, 5, "Update")?;
            let rel = b.get_u32();
            let mut kind = b.get_u8();
            let mut old = None;
            if kind == b'K' || kind == b'O' {
                let t = tuple(&mut b, "Update")?;
                old = Some(if kind == b'K' { OldTuple::Key(t) } else { OldTuple::Full(t) });
                need(&b, 1, "Update")?;
                kind = b.get_u8();
            }
            if kind != b'N' {
                return Err(PgError::Protocol(format!("Update without new tuple (got {:?})", kind as char)));
            }
            PgOutput::Update { rel, old, new: tuple(&mut b, "Update")? }
        }
        b'D' => {
            need(&b, 5, "Delete")?;
            let rel = b.get_u32();
            let kind = b.get_u8();
            let t = tuple(&mut b, "Delete")?;
            PgOutput::Delete { rel, old: if kind == b'O' { OldTuple::Full(t) } else { OldTuple::Key(t) } }
        }
        b'T' => {
            need(&b, 5, "Truncate")?;
            let n = b.get_u32() as usize;
            let _options = b.get_u8();
            need(&b, 4 * n, "Truncate")?;
            PgOutput::Truncate { rels: (0..n).map(|_| b.get_u32()).collect() }
        }
        b'M' => {
            need(&b, 9, "Message")?;
            let flags = b.get_u8();
            let lsn = b.get_u64();
            let prefix = cstr(&mut b, "Message")?;
            need(&b, 4, "Message")?;
            let len = b.get_i32().max(0) as usize;
            need(&b, len, "Message")?;
            PgOutput::Message { transactional: flags & 1 == 1, lsn, prefix, content: b.split_to(len) }
        }
        other => PgOutput::Other(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    fn tuple_bytes(b: &mut BytesMut, vals: &[Option<&str>]) {
        b.put_i16(vals.len() as i16);
        for v in vals {
            match v {
                None => b.put_u8(b'n'),
                Some("\u{0}") => b.put_u8(b'u'),
                Some(s) => {
                    b.put_u8(b't');
                    b.put_i32(s.len() as i32);
                    b.put_slice(s.as_bytes());
                }
            }
        }
    }

    #[test]
    fn decodes_begin_commit_relation_and_row_messages() {
        let mut b = BytesMut::new();
        b.put_u8(b'B');
        b.put_u64(0x100);
        b.put_i64(42);
        b.put_u32(7);
        assert_eq!(decode(b.split().freeze()).unwrap(), PgOutput::Begin { final_lsn: 0x100, commit_ts: 42, xid: 7 });

        b.put_u8(b'R');
        b.put_u32(16384);
        b.put_slice(b"public\0t\0");
        b.put_u8(b'd');
        b.put_i16(2);
        b.put_u8(1);
        b.put_slice(b"id\0");
        b.put_u32(20);
        b.put_i32(-1);
        b.put_u8(0);
        b.put_slice(b"body\0");
        b.put_u32(25);
        b.put_i32(-1);
        let PgOutput::Relation(r) = decode(b.split().freeze()).unwrap() else { panic!() };
        assert_eq!((r.namespace.as_str(), r.name.as_str(), r.columns.len()), ("public", "t", 2));
        assert!(r.columns[0].key && !r.columns[1].key);

        b.put_u8(b'U');
        b.put_u32(16384);
        b.put_u8(b'K');
        tuple_bytes(&mut b, &[Some("1"), None]);
        b.put_u8(b'N');
        tuple_bytes(&mut b, &[Some("2"), Some("\u{0}")]);
        let m = decode(b.split().freeze()).unwrap();
        assert_eq!(
            m,
            PgOutput::Update {
                rel: 16384,
                old: Some(OldTuple::Key(vec![TupleValue::Text(Bytes::from_static(b"1")), TupleValue::Null])),
                new: vec![TupleValue::Text(Bytes::from_static(b"2")), TupleValue::Unchanged],
            }
        );

        b.put_u8(b'C');
        b.put_u8(0);
        b.put_u64(0x100);
        b.put_u64(0x130);
        b.put_i64(42);
        assert_eq!(
            decode(b.split().freeze()).unwrap(),
            PgOutput::Commit { commit_lsn: 0x100, end_lsn: 0x130, commit_ts: 42 }
        );

        b.put_u8(b'M');
        b.put_u8(1);
        b.put_u64(0x200);
        b.put_slice(b"sluice\0");
        b.put_i32(3);
        b.put_slice(b"low");
        assert_eq!(
            decode(b.split().freeze()).unwrap(),
            PgOutput::Message {
                transactional: true,
                lsn: 0x200,
                prefix: "sluice".into(),
                content: Bytes::from_static(b"low")
            }
        );

        b.put_u8(b'I');
        b.put_u32(16384);
        b.put_u8(b'N');
        b.put_i16(1);
        b.put_u8(b'b');
        b.put_i32(2);
        b.put_slice(b"\x00\x07");
        let PgOutput::Insert { new, .. } = decode(b.split().freeze()).unwrap() else { panic!() };
        assert_eq!(new, vec![TupleValue::Binary(Bytes::from_static(b"\x00\x07"))]);
    }

    #[test]
    fn truncated_messages_are_errors_not_panics() {
        for msg in [
            &b"B\0\0"[..],
            b"R\0\0\0\x01pub",
            b"I\0\0\0\x01N\0\x01t\0\0\0\x09ab",
            b"U\0\0\0\x01X",
            b"T\0\0\0\x05\0",
            b"M\x01\0\0\0\0\0\0\0\x01p\0\0\0\0\x09ab",
        ] {
            assert!(decode(Bytes::copy_from_slice(msg)).is_err(), "{msg:?}");
        }
    }
}
