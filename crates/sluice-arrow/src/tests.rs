use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Decimal128Type, Int32Type, IntervalMonthDayNanoType, TimestampMicrosecondType};
use arrow_array::Array;
use sluice_core::{
    ColumnSchema, DataType, Date, Decimal, Interval, TableId, TableSchema, Text, Time, Timestamp, Uuid, Value,
};

use super::*;

fn col(name: &str, t: DataType) -> ColumnSchema {
    ColumnSchema::new(name, t, "x")
}

fn table(cols: Vec<ColumnSchema>) -> TableSchema {
    TableSchema { id: TableId::new("public", "t"), columns: cols, version: 1, dialect: "test".into() }
}

fn dec(p: u32, s: u32) -> ColumnSchema {
    let mut c = col("d", DataType::Decimal);
    c.precision = Some(p);
    c.scale = Some(s);
    c
}

#[test]
fn each_logical_type_has_its_arrow_type() {
    assert_eq!(arrow_type(&DataType::Int16, None, None), A::Int16);
    assert_eq!(arrow_type(&DataType::UInt64, None, None), A::UInt64);
    assert_eq!(arrow_type(&DataType::Decimal, Some(12), Some(2)), A::Decimal128(12, 2));
    assert_eq!(arrow_type(&DataType::Decimal, Some(39), Some(2)), A::Utf8, "wider than 38 digits: text");
    assert_eq!(arrow_type(&DataType::Decimal, None, None), A::Utf8, "open precision: text");
    assert_eq!(arrow_type(&DataType::TimestampTz, None, None), A::Timestamp(TimeUnit::Microsecond, Some("UTC".into())));
    assert_eq!(arrow_type(&DataType::Uuid, None, None), A::Utf8);
    assert_eq!(
        arrow_type(&DataType::List(Box::new(DataType::Int32)), None, None),
        A::List(Arc::new(Field::new("item", A::Int32, true)))
    );
}

#[test]
fn rows_become_a_record_batch_with_every_value_in_place() {
    let t = table(vec![
        col("i", DataType::Int32).key(),
        dec(10, 2),
        col("s", DataType::Text),
        col("ts", DataType::TimestampTz),
        col("iv", DataType::Interval),
        col("u", DataType::Uuid),
        col("l", DataType::List(Box::new(DataType::Int32))),
        col("day", DataType::Date),
        col("tm", DataType::Time),
    ]);
    let mut rows = Rows::new(schema(&t, &[Field::new("_op", A::Utf8, false)]));
    let uuid = Uuid::parse("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap();
    let op = Value::Text(Text::from("c"));
    rows.push(&[
        Value::Int(7),
        Value::Decimal(Decimal::parse("-12.5").unwrap()),
        Value::Text(Text::from("héllo")),
        Value::TimestampTz(Timestamp::from_micros(1_000_001)),
        Value::Interval(Interval { months: 14, days: -3, micros: 5 }),
        Value::Uuid(uuid),
        Value::List(vec![Value::Int(1), Value::Null, Value::Int(3)]),
        Value::Date(Date(19_782)),
        Value::Time(Time(3_600_000_001)),
        op.clone(),
    ])
    .unwrap();
    rows.push(&[
        Value::Int(8),
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
        Value::List(vec![]),
        Value::Null,
        Value::Null,
        op,
    ])
    .unwrap();
    let b = rows.finish().unwrap();
    assert_eq!(b.num_rows(), 2);
    assert_eq!(b.column(0).as_primitive::<Int32Type>().values(), &[7, 8]);
    let d = b.column(1).as_primitive::<Decimal128Type>();
    assert_eq!((d.value(0), d.is_null(1)), (-1250, true));
    assert_eq!(b.column(2).as_string::<i32>().value(0), "héllo");
    assert_eq!(b.column(3).as_primitive::<TimestampMicrosecondType>().value(0), 1_000_001);
    let iv = b.column(4).as_primitive::<IntervalMonthDayNanoType>().value(0);
    assert_eq!((iv.months, iv.days, iv.nanoseconds), (14, -3, 5000));
    assert_eq!(b.column(5).as_string::<i32>().value(0), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    let l = b.column(6).as_list::<i32>();
    let first = l.value(0);
    let first = first.as_primitive::<Int32Type>();
    assert_eq!((first.len(), first.value(0), first.is_null(1), first.value(2)), (3, 1, true, 3));
    assert_eq!(l.value(1).len(), 0, "an empty list is not NULL");
    assert_eq!(b.column(9).as_string::<i32>().value(1), "c");
    assert_eq!(rows.len(), 0, "finish empties the builder");
}

#[test]
fn a_value_the_type_cannot_hold_refuses_the_whole_row() {
    let t = table(vec![col("i", DataType::Int16).key(), dec(6, 2), col("day", DataType::Date)]);
    let mut rows = Rows::new(schema(&t, &[]));
    rows.push(&[Value::Int(1), Value::Decimal(Decimal::parse("1.50").unwrap()), Value::Null]).unwrap();
    let bad = [
        (vec![Value::Int(70_000), Value::Null, Value::Null], "i"),
        (
            vec![Value::Int(2), Value::Decimal(Decimal::parse("1.234").unwrap()), Value::Null],
            "more than 2 decimal places",
        ),
        (vec![Value::Int(2), Value::Decimal(Decimal::parse("12345.6").unwrap()), Value::Null], "does not fit"),
        (vec![Value::Int(2), Value::Decimal(Decimal::NAN), Value::Null], "NaN"),
        (vec![Value::Int(2), Value::Null, Value::Date(Date(-i32::MAX))], "has no Arrow date"),
        (vec![Value::Text(Text::from("x")), Value::Null, Value::Null], "a text value"),
        (vec![Value::Int(2), Value::Unchanged, Value::Null], "unchanged"),
    ];
    for (row, why) in bad {
        let e = rows.push(&row).unwrap_err();
        assert!(e.to_string().contains(why), "{e} ({why})");
    }
    rows.push(&[Value::Int(3), Value::Decimal(Decimal::parse("-9999.990").unwrap()), Value::Null]).unwrap();
    let b = rows.finish().unwrap();
    assert_eq!(b.num_rows(), 2, "refused rows left nothing behind");
    assert_eq!(b.column(1).as_primitive::<Decimal128Type>().values(), &[150, -999_999]);
}

#[test]
fn infinities_become_the_sentinels_duckdb_reads_as_infinity() {
    let t = table(vec![col("day", DataType::Date), col("at", DataType::Timestamp)]);
    let mut rows = Rows::new(schema(&t, &[]));
    rows.push(&[Value::Date(Date::INFINITY), Value::Timestamp(Timestamp::NEG_INFINITY)]).unwrap();
    rows.push(&[Value::Date(Date::NEG_INFINITY), Value::Timestamp(Timestamp::INFINITY)]).unwrap();
    rows.push(&[Value::Date(Date(0)), Value::Timestamp(Timestamp::from_micros(1))]).unwrap();
    let b = rows.finish().unwrap();
    assert_eq!(b.column(0).as_primitive::<arrow_array::types::Date32Type>().values(), &[i32::MAX, -i32::MAX, 0]);
    assert_eq!(b.column(1).as_primitive::<TimestampMicrosecondType>().values(), &[-i64::MAX, i64::MAX, 1]);
}
