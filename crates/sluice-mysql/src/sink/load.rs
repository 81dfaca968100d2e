//! Whole rows in bulk: `LOAD DATA LOCAL INFILE .. REPLACE`, the rows streamed from memory in
//! MySQL's default text format (tab-separated, backslash escapes, `\N` for NULL).
//!
//! Measured on MariaDB 10.11 here (BENCHMARKS.md), the server applies rows this way about 1.6×
//! faster than multi-row `INSERT .. ON DUPLICATE KEY UPDATE`, for new rows and for rows that
//! replace existing ones. `REPLACE` deletes the row with the same key and inserts the new one,
//! which for whole rows of a table whose columns all come from the source equals an upsert
//! (a target with columns of its own, or unique keys besides the primary key, keeps `INSERT`).
//!
//! With `LOCAL`, the server turns data errors into warnings (it cannot stop the client's
//! transfer), so a load that leaves any warning is rolled back to a savepoint and the rows go
//! through `INSERT`, which reports the exact error. A server that refuses `LOCAL` loading
//! (`local_infile = OFF`) is remembered and `INSERT` is used from then on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value as M};
use sluice_core::{ColumnSchema, DataType, SchemaRef, Value};
use tracing::{debug, warn};

use super::encode;
use crate::catalog::quote;
use crate::error::{Ctx, MyError};

/// Fewer rows than this go through `INSERT`: a load's extra round trips do not pay off.
pub const MIN_ROWS: usize = 64;
/// Rows per block of the data sent (bounds the memory of one encoded block).
const ROWS_PER_BLOCK: usize = 500;

/// How one load ended.
pub enum Loaded {
    /// Every row is in the open transaction.
    Done,
    /// Nothing was written: use `INSERT` for these rows.
    Fallback,
}

/// Loads whole `rows` of `schema` into `name` in the open transaction; `allowed` is the sink's
/// note of whether its server accepts `LOAD DATA LOCAL` (cleared at the first refusal). The rows are encoded
/// block by block as the client library sends them, so the server parses one block while the
/// next is encoded.
pub async fn load(
    conn: &mut Conn,
    name: &str,
    schema: &SchemaRef,
    rows: &Arc<Vec<Vec<Value>>>,
    allowed: &AtomicBool,
) -> Result<Loaded, MyError> {
    if !allowed.load(Ordering::Relaxed) {
        return Ok(Loaded::Fallback);
    }
    let hex: Vec<bool> = schema.columns.iter().map(|c| needs_hex(c, &schema.dialect)).collect();
    // YEAR reads the text `0` as 2000; four digits keep 0000 apart.
    let year: Vec<bool> = schema
        .columns
        .iter()
        .map(|c| encode::column_type(c, &schema.dialect).to_ascii_lowercase().starts_with("year"))
        .collect();
    let mut list = Vec::with_capacity(schema.columns.len());
    let mut sets = Vec::new();
    for (i, c) in schema.columns.iter().enumerate() {
        if hex[i] {
            list.push(format!("@v{i}"));
            sets.push(format!("{} = UNHEX(@v{i})", quote(&c.name)));
        } else {
            list.push(quote(&c.name));
        }
    }
    let sql = format!(
        "LOAD DATA LOCAL INFILE 'sluice' REPLACE INTO TABLE {name} CHARACTER SET utf8mb4 ({}){}",
        list.join(", "),
        if sets.is_empty() { String::new() } else { format!(" SET {}", sets.join(", ")) }
    );
    conn.query_drop("SAVEPOINT sluice_load").await.ctx("set a savepoint")?;
    // A value that cannot be encoded ends the data early; the rows then go through INSERT,
    // which reports it.
    let unencodable = Arc::new(Mutex::new(None::<String>));
    let blocks = Blocks { rows: rows.clone(), schema: schema.clone(), hex, year, bad: unencodable.clone() };
    conn.set_infile_handler(async move {
        let s: mysql_async::InfileData = Box::pin(futures_util::stream::unfold((blocks, 0), |(b, at)| async move {
            let (data, next) = b.encode(at)?;
            Some((Ok(data), (b, next)))
        }));
        Ok(s)
    });
    match conn.query_drop(&sql).await {
        Ok(()) => {}
        Err(e) if refused(&e) => {
            warn!(error = %e, "the target refuses LOAD DATA LOCAL (local_infile = OFF); writing rows with INSERT");
            allowed.store(false, Ordering::Relaxed);
            back(conn).await.ctx("roll back to the savepoint")?;
            return Ok(Loaded::Fallback);
        }
        Err(mysql_async::Error::Server(e)) => {
            // A value the text form does not carry as INSERT would: let INSERT write these rows
            // (or report exactly which one the target refuses).
            debug!(table = %name, error = %e, "a load failed; writing these rows with INSERT instead");
            back(conn).await.map_err(|_| MyError::Client {
                what: format!("load rows into {name}"),
                source: mysql_async::Error::Server(e),
            })?;
            return Ok(Loaded::Fallback);
        }
        Err(e) => return Err(MyError::Client { what: format!("load rows into {name}"), source: e }),
    }
    let bad = unencodable.lock().map(|b| b.clone()).unwrap_or(None);
    if bad.is_some() || conn.get_warnings() > 0 {
        let shown: Vec<(String, u32, String)> = conn.query("SHOW WARNINGS LIMIT 3").await.unwrap_or_default();
        debug!(table = %name, warnings = ?shown, unencodable = ?bad, "a load was not clean; writing these rows with INSERT instead");
        back(conn).await.ctx("roll back to the savepoint")?;
        return Ok(Loaded::Fallback);
    }
    Ok(Loaded::Done)
}

/// The rows of one load, encoded a block at a time.
struct Blocks {
    rows: Arc<Vec<Vec<Value>>>,
    schema: SchemaRef,
    hex: Vec<bool>,
    year: Vec<bool>,
    bad: Arc<Mutex<Option<String>>>,
}

impl Blocks {
    /// The block of rows from `at`, and where the next starts; `None` at the end or when a
    /// value cannot be encoded (noted in `bad`).
    fn encode(&self, at: usize) -> Option<(Bytes, usize)> {
        let end = (at + ROWS_PER_BLOCK).min(self.rows.len());
        if at >= end {
            return None;
        }
        let mut buf = Vec::with_capacity((end - at) * 128);
        for r in &self.rows[at..end] {
            for (i, (v, c)) in r.iter().zip(&self.schema.columns).enumerate() {
                if i > 0 {
                    buf.push(b'\t');
                }
                if let Err(e) = value_field(&mut buf, v, c, self.hex[i], self.year[i]) {
                    if let Ok(mut b) = self.bad.lock() {
                        *b = Some(format!("{}.{}: {e}", self.schema.id, c.name));
                    }
                    return None;
                }
            }
            buf.push(b'\n');
        }
        Some((Bytes::from(buf), end))
    }
}

async fn back(conn: &mut Conn) -> Result<(), mysql_async::Error> {
    conn.query_drop("ROLLBACK TO SAVEPOINT sluice_load").await
}

/// The server (or the client library) refused local loading.
fn refused(e: &mysql_async::Error) -> bool {
    match e {
        // ER_NOT_ALLOWED_COMMAND, ER_CLIENT_LOCAL_FILES_DISABLED (MySQL 8),
        // ER_LOAD_INFILE_CAPABILITY_DISABLED (MariaDB 10.x)
        mysql_async::Error::Server(s) => [1148, 3948, 4166].contains(&s.code),
        _ => false,
    }
}

/// Columns whose values travel as hex and are stored through `UNHEX`: bytes of any kind
/// (binary strings, blobs, geometry), which the file's text character set must not touch, and
/// `BIT` columns, which take no text form (`1` would be the byte 0x31).
fn needs_hex(c: &ColumnSchema, dialect: &str) -> bool {
    matches!(c.data_type, DataType::Bytes) || encode::column_type(c, dialect).to_ascii_lowercase().starts_with("bit")
}

/// Appends one value in the default `LOAD DATA` format: the common kinds straight from the
/// value, the rest through the statement parameter [`encode::param`] makes of it (the same
/// text either way).
fn value_field(buf: &mut Vec<u8>, v: &Value, c: &ColumnSchema, hex: bool, year: bool) -> Result<(), String> {
    match v {
        Value::Null => buf.extend_from_slice(b"\\N"),
        Value::Int(i) if !year => push_i64(buf, *i),
        Value::UInt(u) if !year => push_u64(buf, *u),
        Value::Text(t) | Value::Enum(t) | Value::Other(t) | Value::Json(t) if !hex => escape(buf, t.as_bytes()),
        Value::Decimal(d) if matches!(d.kind(), sluice_core::DecimalKind::Finite) => {
            buf.extend_from_slice(d.as_str().as_bytes())
        }
        _ => match encode::param(v, c)? {
            M::Int(y) if year => pad(buf, y.unsigned_abs(), 4),
            p => field(buf, &p, hex),
        },
    }
    Ok(())
}

/// Appends `n` in decimal.
fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

fn push_i64(buf: &mut Vec<u8>, n: i64) {
    if n < 0 {
        buf.push(b'-');
    }
    push_u64(buf, n.unsigned_abs());
}

/// Appends `n` with at least `width` digits, zero-padded.
fn pad(buf: &mut Vec<u8>, n: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut m = n;
    while m > 0 || digits.len() - at < width {
        at -= 1;
        digits[at] = b'0' + (m % 10) as u8;
        m /= 10;
    }
    buf.extend_from_slice(&digits[at..]);
}

/// Appends bytes with `LOAD DATA`'s escapes.
fn escape(buf: &mut Vec<u8>, b: &[u8]) {
    for &x in b {
        match x {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            0 => buf.extend_from_slice(b"\\0"),
            x => buf.push(x),
        }
    }
}

/// Appends one field in the default `LOAD DATA` format.
fn field(buf: &mut Vec<u8>, v: &M, hex: bool) {
    use std::io::Write;
    match v {
        M::NULL => buf.extend_from_slice(b"\\N"),
        M::Int(i) => push_i64(buf, *i),
        M::UInt(u) => push_u64(buf, *u),
        M::Float(f) => {
            let _ = write!(buf, "{f:e}");
        }
        M::Double(d) => {
            let _ = write!(buf, "{d:e}");
        }
        M::Bytes(b) if hex => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for x in b {
                buf.push(HEX[(x >> 4) as usize]);
                buf.push(HEX[(x & 15) as usize]);
            }
        }
        M::Bytes(b) => escape(buf, b),
        M::Date(y, mo, d, h, mi, s, us) => {
            pad(buf, *y as u64, 4);
            buf.push(b'-');
            pad(buf, *mo as u64, 2);
            buf.push(b'-');
            pad(buf, *d as u64, 2);
            if (*h, *mi, *s, *us) != (0, 0, 0, 0) {
                buf.push(b' ');
                pad(buf, *h as u64, 2);
                buf.push(b':');
                pad(buf, *mi as u64, 2);
                buf.push(b':');
                pad(buf, *s as u64, 2);
                buf.push(b'.');
                pad(buf, *us as u64, 6);
            }
        }
        M::Time(neg, days, h, mi, s, us) => {
            let hours = *days as u64 * 24 + *h as u64;
            let _ = write!(buf, "{}{hours:02}:{mi:02}:{s:02}.{us:06}", if *neg { "-" } else { "" });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: M, hex: bool) -> String {
        let mut b = Vec::new();
        field(&mut b, &v, hex);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn fields_use_the_default_load_data_format() {
        assert_eq!(text(M::NULL, false), "\\N");
        assert_eq!(text(M::Int(-5), false), "-5");
        assert_eq!(text(M::UInt(u64::MAX), false), "18446744073709551615");
        assert_eq!(text(M::Double(1e300), false), "1e300");
        assert_eq!(text(M::Double(0.1), false), "1e-1");
        assert_eq!(text(M::Float(-3.40282e38), false), "-3.40282e38");
        assert_eq!(text(M::Bytes(b"a\tb\nc\\d\0\r".to_vec()), false), "a\\tb\\nc\\\\d\\0\\r");
        assert_eq!(text(M::Bytes(vec![0, 0xff, 0x10]), true), "00ff10");
        assert_eq!(text(M::Date(2024, 2, 29, 0, 0, 0, 0), false), "2024-02-29");
        assert_eq!(text(M::Date(2024, 2, 29, 13, 4, 5, 7), false), "2024-02-29 13:04:05.000007");
        assert_eq!(text(M::Time(true, 34, 22, 59, 59, 0), false), "-838:59:59.000000");
        assert_eq!(text(M::Int(i64::MIN), false), "-9223372036854775808");
        assert_eq!(text(M::Int(0), false), "0");
        assert_eq!(text(M::Date(0, 1, 1, 0, 0, 0, 0), false), "0000-01-01");
    }

    /// The direct path writes what the parameter path writes.
    #[test]
    fn values_encode_as_their_parameters_do() {
        use sluice_core::{ColumnSchema, Decimal, Text, Timestamp};
        let col = |t: DataType, native: &str| ColumnSchema {
            name: "c".into(),
            data_type: t,
            nullable: true,
            key: false,
            precision: None,
            scale: None,
            length: None,
            native_type: native.into(),
            missing_value: None,
        };
        let cases = [
            (Value::Int(-42), col(DataType::Int64, "bigint")),
            (Value::UInt(u64::MAX), col(DataType::UInt64, "bigint unsigned")),
            (Value::Text(Text::from("tab\there\\ \0")), col(DataType::Text, "text")),
            (
                Value::Decimal(Decimal::parse("-12345678901234567890.0000000001").unwrap()),
                col(DataType::Decimal, "decimal(30,10)"),
            ),
            (Value::Timestamp(Timestamp::from_micros(1_700_000_000_123_456)), col(DataType::Timestamp, "datetime(6)")),
            (Value::Null, col(DataType::Text, "text")),
        ];
        for (v, c) in cases {
            let mut direct = Vec::new();
            value_field(&mut direct, &v, &c, false, false).unwrap();
            let mut via = Vec::new();
            field(&mut via, &encode::param(&v, &c).unwrap(), false);
            assert_eq!(String::from_utf8(direct).unwrap(), String::from_utf8(via).unwrap(), "{v:?}");
        }
        let mut y = Vec::new();
        value_field(&mut y, &Value::Int(5), &col(DataType::Int16, "year"), false, true).unwrap();
        assert_eq!(y, b"0005");
    }
}
