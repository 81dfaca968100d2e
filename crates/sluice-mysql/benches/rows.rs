//! Micro-benchmark: binlog row images (the drain benchmark's rows) decoded into typed rows, in
//! rows per second.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_core::Value;
use sluice_mysql::binlog::{ty, Reader};
use sluice_mysql::rows::{read_image, Charset, ColumnPlan, ZeroDates};

fn plan(t: u8, meta: u16, charset: Charset) -> ColumnPlan {
    ColumnPlan { ty: t, meta, unsigned: false, charset, labels: None, json_text: false, fixed_binary: None }
}

/// One write-rows event body's rows: BIGINT, INT, VARCHAR(64) (32 hex chars), DATETIME(6),
/// DECIMAL(12,2), as the drain benchmark's table `t`.
fn rows_block(n: u64) -> Vec<u8> {
    let mut b = Vec::new();
    for id in 0..n {
        b.push(0); // null bitmap
        b.extend_from_slice(&id.to_le_bytes());
        b.extend_from_slice(&((id % 100_000) as u32).to_le_bytes());
        let s = format!("{:032x}", id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // VARCHAR(64) in utf8mb4 holds up to 256 bytes: a 2-byte length
        b.extend_from_slice(&(s.len() as u16).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
        // DATETIME2(6): 2026-11-21 10:12:42.123456
        let ym: u64 = 2026 * 13 + 11;
        let int = (((ym << 5) | 21) << 17) | (10 << 12) | (12 << 6) | 42;
        b.extend_from_slice(&(int + 0x80_0000_0000).to_be_bytes()[3..]);
        b.extend_from_slice(&123_456u32.to_be_bytes()[1..]);
        // DECIMAL(12,2) of id % 100000 / 100: 10 integer digits (1 + 4 bytes), 2 fraction (1 byte)
        let v = id % 100_000;
        let (i, f) = (v / 100, v % 100);
        let mut d = vec![((i / 1_000_000_000) as u8), 0, 0, 0, 0, f as u8];
        d[1..5].copy_from_slice(&((i % 1_000_000_000) as u32).to_be_bytes());
        d[0] ^= 0x80;
        b.extend_from_slice(&d);
    }
    b
}

fn bench(c: &mut Criterion) {
    let plans = vec![
        plan(ty::LONGLONG, 0, Charset::Utf8),
        plan(ty::LONG, 0, Charset::Utf8),
        plan(ty::VARCHAR, 256, Charset::Utf8),
        plan(ty::DATETIME2, 6, Charset::Utf8),
        plan(ty::NEWDECIMAL, (12 << 8) | 2, Charset::Utf8),
    ];
    const N: u64 = 1000;
    let data = Bytes::from(rows_block(N));
    let present = [0b1_1111u8];
    let mut g = c.benchmark_group("binlog");
    g.throughput(Throughput::Elements(N));
    g.bench_function("decode_write_rows", |b| {
        b.iter(|| {
            let mut r = Reader::shared(&data);
            let mut n = 0;
            while !r.rest().is_empty() {
                let row = read_image(&mut r, &plans, &present, &Value::Null, ZeroDates::Null).unwrap();
                n += row.len();
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
