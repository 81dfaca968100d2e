//! Micro-benchmark: rows of the drain benchmark's shape (bigint key, int, 32-char text,
//! timestamp(6), numeric(12,2)) encoded to Avro bodies, in rows per second: Sluice's encoder
//! and, as the baseline in the same run, the Apache Avro implementation's `to_avro_datum` from
//! its value tree. Then the same bodies decoded: Sluice's decoder (writer schema parsed once,
//! values straight into Sluice's) against `from_avro_datum` into Apache Avro's value tree. The
//! ratios are printed at the end.

use std::time::Instant;

use apache_avro::types::Value as A;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_core::{ColumnSchema, DataType, Decimal, Row, TableId, TableSchema, Text, Timestamp, Value};

fn col(name: &str, t: DataType, ps: Option<(u32, u32)>) -> ColumnSchema {
    ColumnSchema {
        name: name.into(),
        data_type: t,
        nullable: name != "id",
        key: name == "id",
        precision: ps.map(|p| p.0),
        scale: ps.map(|p| p.1),
        length: None,
        native_type: String::new(),
        missing_value: None,
    }
}

fn table() -> TableSchema {
    TableSchema {
        id: TableId::new("app", "t"),
        columns: vec![
            col("id", DataType::Int64, None),
            col("a", DataType::Int32, None),
            col("b", DataType::Text, None),
            col("c", DataType::Timestamp, None),
            col("d", DataType::Decimal, Some((12, 2))),
        ],
        version: 1,
        dialect: "postgres".into(),
    }
}

fn rows(n: i64) -> Vec<Row> {
    (0..n)
        .map(|id| {
            vec![
                Value::Int(id),
                Value::Int(id % 100_000),
                Value::Text(Text::from(format!("{:032x}", (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)))),
                Value::Timestamp(Timestamp::from_micros(1_763_719_962_123_456 + id)),
                Value::Decimal(Decimal::parse(&format!("{}.{:02}", id % 100_000 / 100, id % 100)).unwrap()),
            ]
        })
        .collect()
}

/// The same row as an Apache Avro value tree (what a user of that crate builds).
fn tree(r: &Row) -> A {
    let some = |v: A| A::Union(1, Box::new(v));
    let (Value::Int(id), Value::Int(a), Value::Text(b), Value::Timestamp(c), Value::Decimal(d)) =
        (&r[0], &r[1], &r[2], &r[3], &r[4])
    else {
        unreachable!()
    };
    let unscaled: i64 = d.as_str().replace('.', "").parse().unwrap();
    let dec = apache_avro::Decimal::from(unscaled.to_be_bytes().to_vec());
    A::Record(vec![
        ("id".into(), A::Long(*id)),
        ("a".into(), some(A::Int(*a as i32))),
        ("b".into(), some(A::String(b.to_string()))),
        ("c".into(), some(A::LocalTimestampMicros(c.micros().unwrap()))),
        ("d".into(), some(A::Decimal(dec))),
    ])
}

fn bench(c: &mut Criterion) {
    const N: i64 = 1000;
    let t = table();
    let all: Vec<usize> = (0..t.columns.len()).collect();
    let names = sluice_avro::RecordNames { name: "t".into(), namespace: "sluice.app".into() };
    let schema = apache_avro::Schema::parse(&sluice_avro::record_schema(&t, &all, &names)).unwrap();
    let data = rows(N);
    let mut g = c.benchmark_group("avro");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("encode_sluice", |b| {
        let mut out = Vec::with_capacity(64 * N as usize);
        b.iter(|| {
            out.clear();
            for r in &data {
                sluice_avro::encode_row(&t, &all, r, &mut out).unwrap();
            }
            out.len()
        })
    });
    g.bench_function("encode_apache_avro_baseline", |b| {
        b.iter(|| data.iter().map(|r| apache_avro::to_avro_datum(&schema, tree(r)).unwrap().len()).sum::<usize>())
    });
    let bodies: Vec<Vec<u8>> = data
        .iter()
        .map(|r| {
            let mut out = Vec::new();
            sluice_avro::encode_row(&t, &all, r, &mut out).unwrap();
            out
        })
        .collect();
    let node = sluice_avro::Node::parse(&sluice_avro::record_schema(&t, &all, &names)).unwrap();
    let sluice_avro::Node::Record(record) = node else { unreachable!() };
    let decode_ours = || bodies.iter().map(|b| sluice_avro::Reader::new(b).row(&record).unwrap().len()).sum::<usize>();
    let decode_theirs = || {
        bodies
            .iter()
            .map(|b| match apache_avro::from_avro_datum(&schema, &mut &b[..], None).unwrap() {
                A::Record(f) => f.len(),
                _ => 0,
            })
            .sum::<usize>()
    };
    g.bench_function("decode_sluice", |b| b.iter(decode_ours));
    g.bench_function("decode_apache_avro_baseline", |b| b.iter(decode_theirs));
    g.finish();

    // The ratio, from one timed pass of each over the same rows.
    let time = |f: &dyn Fn() -> usize| {
        let start = Instant::now();
        let mut n = 0;
        for _ in 0..200 {
            n += f();
        }
        (start.elapsed().as_secs_f64(), n)
    };
    let (ours, _) = time(&|| {
        let mut out = Vec::with_capacity(64 * N as usize);
        for r in &data {
            sluice_avro::encode_row(&t, &all, r, &mut out).unwrap();
        }
        out.len()
    });
    let (theirs, _) =
        time(&|| data.iter().map(|r| apache_avro::to_avro_datum(&schema, tree(r)).unwrap().len()).sum::<usize>());
    println!(
        "avro_encode rows_per_s={:.0} baseline_rows_per_s={:.0} ratio_vs_apache_avro={:.2}",
        200.0 * N as f64 / ours,
        200.0 * N as f64 / theirs,
        theirs / ours
    );
    let (ours, _) = time(&decode_ours);
    let (theirs, _) = time(&decode_theirs);
    println!(
        "avro_decode rows_per_s={:.0} baseline_rows_per_s={:.0} ratio_vs_apache_avro={:.2}",
        200.0 * N as f64 / ours,
        200.0 * N as f64 / theirs,
        theirs / ours
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
