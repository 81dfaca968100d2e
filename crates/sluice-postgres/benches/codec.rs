//! Micro-benchmarks: pgoutput decoding into typed rows and sink batch encoding, in rows per
//! second.

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::sync::Arc;

use sluice_core::{Row, Value};
use sluice_postgres::codec::{decode_text, PgType};
use sluice_postgres::pgoutput::{decode, PgOutput, TupleValue};
use sluice_postgres::text_columns;
use tokio_postgres::types::{ToSql, Type};

/// The drain benchmark's column types.
const TYPES: [PgType; 5] = [PgType::Int8, PgType::Int4, PgType::Text, PgType::TimestampTz, PgType::Numeric];

/// A tuple decoded into typed values, as the source does.
fn to_row(vals: &[TupleValue]) -> Row {
    vals.iter()
        .zip(TYPES.iter())
        .map(|(v, ty)| match v {
            TupleValue::Text(t) | TupleValue::Binary(t) => decode_text(ty, t.clone()).unwrap_or(Value::Null),
            TupleValue::Null => Value::Null,
            TupleValue::Unchanged => Value::Unchanged,
        })
        .collect()
}

/// An Insert message like the drain benchmark's rows: bigint, int, 64-char text, timestamptz, numeric.
fn insert_message(id: u64) -> Bytes {
    let vals = [
        id.to_string(),
        (id % 100_000).to_string(),
        format!("{:032x}{:032x}", id.wrapping_mul(0x9E37_79B9_7F4A_7C15), id),
        "2026-11-21 10:12:42.123456+00".to_string(),
        format!("{}.{:02}", id % 1000, id % 100),
    ];
    let mut b = BytesMut::new();
    b.put_u8(b'I');
    b.put_u32(16384);
    b.put_u8(b'N');
    b.put_i16(vals.len() as i16);
    for v in &vals {
        b.put_u8(b't');
        b.put_i32(v.len() as i32);
        b.put_slice(v.as_bytes());
    }
    b.freeze()
}

fn bench(c: &mut Criterion) {
    const N: usize = 10_000;
    // Each column type of the drain benchmark alone, text form.
    let samples: Vec<Vec<Bytes>> = (0..N as u64)
        .map(|id| match insert_message(id).slice(8..) {
            body => {
                let mut out = Vec::new();
                let mut b = body;
                while b.len() >= 5 {
                    let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
                    out.push(b.slice(5..5 + len));
                    b = b.slice(5 + len..);
                }
                out
            }
        })
        .collect();
    let mut g = c.benchmark_group("decode_text");
    g.throughput(Throughput::Elements(N as u64));
    for (i, name) in ["int8", "int4", "text", "timestamptz", "numeric"].iter().enumerate() {
        g.bench_function(*name, |b| {
            b.iter(|| samples.iter().filter(|s| decode_text(&TYPES[i], s[i].clone()).is_ok()).count())
        });
    }
    g.finish();

    let messages: Vec<Bytes> = (0..N as u64).map(insert_message).collect();
    let mut g = c.benchmark_group("pgoutput");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("decode_insert_to_row", |b| {
        b.iter(|| {
            let mut n = 0;
            for m in &messages {
                if let Ok(PgOutput::Insert { new, .. }) = decode(m.clone()) {
                    n += to_row(&new).len();
                }
            }
            n
        })
    });
    g.finish();

    let rows: Vec<Row> = messages
        .iter()
        .filter_map(|m| match decode(m.clone()) {
            Ok(PgOutput::Insert { new, .. }) => Some(to_row(&new)),
            _ => None,
        })
        .collect();
    let rows = Arc::new(rows);
    let mut g = c.benchmark_group("sink");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("encode_upsert_batch", |b| {
        b.iter_batched_ref(
            || BytesMut::with_capacity(2 << 20),
            |buf| {
                for col in text_columns(&rows, &TYPES) {
                    let _ = col.to_sql(&Type::TEXT_ARRAY, buf);
                }
                buf.len()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
