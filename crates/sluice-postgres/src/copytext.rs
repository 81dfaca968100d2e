//! Parser for `COPY ... TO STDOUT` text format: tab-separated fields, `\N` for NULL,
//! backslash escapes, one row per line. Values come out exactly as the type output functions
//! wrote them, the same text pgoutput sends while streaming.

use bytes::Bytes;
use sluice_core::{Text, Value};

use crate::error::PgError;

/// Splits a stream of COPY chunks into rows.
#[derive(Default)]
pub struct CopyTextParser {
    carry: Vec<u8>,
}

impl CopyTextParser {
    /// Feeds one chunk and calls `row` for every complete line in it. Values share the
    /// chunk's buffer unless they contained escapes.
    pub fn feed(
        &mut self,
        chunk: Bytes,
        mut row: impl FnMut(Vec<Value>) -> Result<(), PgError>,
    ) -> Result<(), PgError> {
        let mut start = 0;
        while let Some(nl) = chunk[start..].iter().position(|b| *b == b'\n') {
            let end = start + nl;
            if self.carry.is_empty() {
                row(parse_line(chunk.slice(start..end))?)?;
            } else {
                self.carry.extend_from_slice(&chunk[start..end]);
                let line = Bytes::from(std::mem::take(&mut self.carry));
                row(parse_line(line)?)?;
            }
            start = end + 1;
        }
        self.carry.extend_from_slice(&chunk[start..]);
        Ok(())
    }

    /// Whether a partial line is left over (a truncated stream).
    pub fn has_partial(&self) -> bool {
        !self.carry.is_empty()
    }
}

fn parse_line(line: Bytes) -> Result<Vec<Value>, PgError> {
    let mut out = Vec::with_capacity(8);
    let mut start = 0;
    loop {
        let end = line[start..].iter().position(|b| *b == b'\t').map_or(line.len(), |i| start + i);
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

fn unescape(f: &[u8]) -> Result<Vec<u8>, PgError> {
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
                    return Err(PgError::Protocol("bad \\x escape in COPY data".into()));
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn parses_rows_split_across_chunks_with_escapes_and_nulls() {
        let mut p = CopyTextParser::default();
        let mut rows = Vec::new();
        let data = b"1\ta\\tb\\\\c\\N\t\\N\n2\t\\x41\\101\\n\tz\n";
        for chunk in data.chunks(3) {
            p.feed(Bytes::copy_from_slice(chunk), |r| {
                rows.push(r);
                Ok(())
            })
            .unwrap();
        }
        assert!(!p.has_partial());
        assert_eq!(rows, vec![vec![t("1"), t("a\tb\\cN"), Value::Null], vec![t("2"), t("AA\n"), t("z")]]);
    }
}
