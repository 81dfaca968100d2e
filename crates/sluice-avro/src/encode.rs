//! Rows in Avro's binary encoding, written straight from Sluice's values (no intermediate Avro
//! value tree), and the Confluent framing around them.

use sluice_core::{ColumnSchema, DataType, DecimalKind, Row, TableSchema, Value};

use crate::schema::decimal_of;

/// A value the column's Avro type cannot hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("column {column}: {message}")]
pub struct EncodeError {
    pub column: String,
    pub message: String,
}

/// Appends the Avro body of `row`'s `columns` (as [`crate::record_schema`] describes them).
pub fn encode_row(table: &TableSchema, columns: &[usize], row: &Row, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    for &i in columns {
        let c = &table.columns[i];
        let fail = |message: String| EncodeError { column: c.name.clone(), message };
        let v = row.get(i).ok_or_else(|| fail("the row has no value for it".into()))?;
        match (v, c.nullable) {
            (Value::Unchanged, _) => return Err(fail("the source did not send its value (unchanged)".into())),
            (Value::Null, true) => out.push(0),
            (Value::Null, false) => return Err(fail("NULL in a column that is not nullable".into())),
            (v, true) => {
                out.push(2); // union branch 1, zigzag-encoded
                value(c, &c.data_type, v, out).map_err(fail)?;
            }
            (v, false) => value(c, &c.data_type, v, out).map_err(fail)?,
        }
    }
    Ok(())
}

/// `[0, id (4 bytes, big-endian), body...]`: the Confluent wire format.
pub fn frame(id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(0);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// The schema id and Avro body of a Confluent-framed message.
pub fn unframe(msg: &[u8]) -> Result<(u32, &[u8]), String> {
    match msg {
        [0, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        [m, ..] => Err(format!("magic byte {m} where the Confluent wire format has 0")),
        [] => Err("an empty message where the Confluent wire format has a magic byte".into()),
    }
}

/// Appends an Avro `long` (or `int`): zigzag varint.
pub fn encode_long(n: i64, out: &mut Vec<u8>) {
    long(n, out)
}

/// Appends an Avro `string` (or `bytes`): length, then the bytes.
pub fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    bytes(b, out)
}

fn long(n: i64, out: &mut Vec<u8>) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn bytes(b: &[u8], out: &mut Vec<u8>) {
    long(b.len() as i64, out);
    out.extend_from_slice(b);
}

fn mismatch(t: &DataType, v: &Value) -> String {
    format!("a {v:?} value in a column of type {t:?}")
}

fn value(c: &ColumnSchema, t: &DataType, v: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    match (t, v) {
        (DataType::Bool, Value::Bool(b)) => out.push(*b as u8),
        (DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64, Value::Int(i)) => long(*i, out),
        (DataType::UInt8 | DataType::UInt16 | DataType::UInt32, Value::UInt(u)) => long(*u as i64, out),
        (DataType::UInt64, Value::UInt(u)) => bytes(&twos_complement(false, &u.to_string()), out),
        (DataType::Float32, Value::Float32(f)) => out.extend_from_slice(&f.to_le_bytes()),
        (DataType::Float64, Value::Float64(d)) => out.extend_from_slice(&d.to_le_bytes()),
        (DataType::Decimal, Value::Decimal(d)) => match decimal_of(c) {
            Some((p, s)) => {
                if d.kind() != DecimalKind::Finite {
                    return Err(format!("{d} has no Avro decimal form (decimal({p},{s}))"));
                }
                let (int, frac) = d.digits();
                let frac_kept = frac.get(..s as usize).unwrap_or(frac);
                if frac.len() > s as usize && frac[s as usize..].bytes().any(|b| b != b'0') {
                    return Err(format!("{d} has more fraction digits than the column's scale {s}"));
                }
                let mut unscaled = format!("{int}{frac_kept}");
                unscaled.extend(std::iter::repeat_n('0', s as usize - frac_kept.len()));
                let digits = unscaled.trim_start_matches('0');
                if digits.len() > p as usize {
                    return Err(format!("{d} has more digits than the column's precision {p}"));
                }
                bytes(&twos_complement(d.is_negative(), digits), out);
            }
            None => bytes(d.as_str().as_bytes(), out),
        },
        (DataType::Text | DataType::Json | DataType::Other | DataType::Enum { .. }, Value::Text(s))
        | (_, Value::Json(s) | Value::Enum(s) | Value::Other(s)) => bytes(s.as_bytes(), out),
        (DataType::Bytes, Value::Bytes(b)) => bytes(b, out),
        (DataType::Date, Value::Date(d)) => {
            if d.is_infinite() {
                return Err(format!("date {d} has no Avro form"));
            }
            long(d.0 as i64, out);
        }
        (DataType::Time, Value::Time(t)) => long(t.0, out),
        (DataType::Timestamp, Value::Timestamp(ts)) | (DataType::TimestampTz, Value::TimestampTz(ts)) => {
            long(ts.micros().ok_or_else(|| format!("timestamp {ts} has no Avro form"))?, out)
        }
        (DataType::Interval, Value::Interval(i)) => bytes(i.to_string().as_bytes(), out),
        (DataType::TimeTz, Value::TimeTz(t)) => bytes(t.to_string().as_bytes(), out),
        (DataType::Uuid, Value::Uuid(u)) => bytes(u.to_string().as_bytes(), out),
        (DataType::List(inner), Value::List(items)) => {
            if !items.is_empty() {
                long(items.len() as i64, out);
                for item in items {
                    match item {
                        Value::Null => out.push(0),
                        v => {
                            out.push(2);
                            value(c, inner, v, out)?;
                        }
                    }
                }
            }
            out.push(0);
        }
        (t, v) => return Err(mismatch(t, v)),
    }
    Ok(())
}

/// The big-endian two's complement of the decimal integer `digits` (no sign, no leading zeros
/// needed), negated when `negative`: the byte form of an Avro decimal's unscaled value.
fn twos_complement(negative: bool, digits: &str) -> Vec<u8> {
    // Base-10 digits to base-256 by repeated division.
    let mut dec: Vec<u8> = digits.bytes().map(|b| b - b'0').skip_while(|d| *d == 0).collect();
    let mut mag = Vec::new();
    while !dec.is_empty() {
        let mut rem = 0u32;
        let mut next = Vec::with_capacity(dec.len());
        for d in dec {
            let cur = rem * 10 + d as u32;
            let q = cur / 256;
            rem = cur % 256;
            if !(next.is_empty() && q == 0) {
                next.push(q as u8);
            }
        }
        mag.push(rem as u8);
        dec = next;
    }
    mag.reverse();
    if mag.is_empty() {
        return vec![0];
    }
    if !negative {
        if mag[0] & 0x80 != 0 {
            mag.insert(0, 0);
        }
        return mag;
    }
    // -m: invert and add one.
    for b in mag.iter_mut() {
        *b = !*b;
    }
    for b in mag.iter_mut().rev() {
        let (sum, carry) = b.overflowing_add(1);
        *b = sum;
        if !carry {
            break;
        }
    }
    if mag[0] & 0x80 == 0 {
        mag.insert(0, 0xff);
    }
    mag
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value as A;
    use sluice_core::{Date, Decimal, TableId, Text, Time, Timestamp, Uuid};

    fn col(name: &str, t: DataType, nullable: bool, ps: Option<(u32, u32)>) -> ColumnSchema {
        ColumnSchema {
            name: name.into(),
            data_type: t,
            nullable,
            key: false,
            precision: ps.map(|p| p.0),
            scale: ps.map(|p| p.1),
            length: None,
            native_type: String::new(),
            missing_value: None,
        }
    }

    #[test]
    fn twos_complement_matches_known_forms() {
        assert_eq!(twos_complement(false, "0"), vec![0]);
        assert_eq!(twos_complement(false, "127"), vec![0x7f]);
        assert_eq!(twos_complement(false, "128"), vec![0x00, 0x80]);
        assert_eq!(twos_complement(true, "128"), vec![0x80]);
        assert_eq!(twos_complement(true, "129"), vec![0xff, 0x7f]);
        assert_eq!(twos_complement(true, "1"), vec![0xff]);
        assert_eq!(twos_complement(false, "18446744073709551615"), vec![0, 255, 255, 255, 255, 255, 255, 255, 255]);
    }

    /// Rows encoded here decode with the Apache Avro implementation against the schema
    /// `record_schema` wrote, to the same values.
    #[test]
    fn rows_decode_with_apache_avro() {
        let table = TableSchema {
            id: TableId::new("app", "t-1"),
            columns: vec![
                col("id", DataType::Int64, false, None),
                col("flag", DataType::Bool, true, None),
                col("small", DataType::Int16, true, None),
                col("big", DataType::UInt64, true, None),
                col("f", DataType::Float32, true, None),
                col("amount", DataType::Decimal, true, Some((12, 2))),
                col("loose", DataType::Decimal, true, None),
                col("name", DataType::Text, true, None),
                col("raw", DataType::Bytes, true, None),
                col("day", DataType::Date, true, None),
                col("at", DataType::Time, true, None),
                col("ts", DataType::Timestamp, true, None),
                col("tz", DataType::TimestampTz, true, None),
                col("u", DataType::Uuid, true, None),
                col("tags", DataType::List(Box::new(DataType::Text)), true, None),
                col("odd name", DataType::Text, true, None),
            ],
            version: 1,
            dialect: "postgres".into(),
        };
        let names = crate::RecordNames { name: "t-1".into(), namespace: "sluice.app".into() };
        let all: Vec<usize> = (0..table.columns.len()).collect();
        let schema_json = crate::record_schema(&table, &all, &names);
        assert_eq!(schema_json["name"], "t_1");
        assert_eq!(schema_json["fields"][15]["name"], "odd_name");
        assert_eq!(schema_json["fields"][15]["sluice.name"], "odd name");
        let schema = apache_avro::Schema::parse(&schema_json).expect("a valid Avro schema");
        let u = Uuid::parse("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap();
        let row: Row = vec![
            Value::Int(-7),
            Value::Bool(true),
            Value::Null,
            Value::UInt(u64::MAX),
            Value::Float32(1.5),
            Value::Decimal(Decimal::parse("-1234.5").unwrap()),
            Value::Decimal(Decimal::parse("NaN").unwrap()),
            Value::Text(Text::from("héllo")),
            Value::Bytes(bytes::Bytes::from_static(&[0, 255])),
            Value::Date(Date::from_ymd(2024, 2, 29).unwrap()),
            Value::Time(Time(45_296_000_001)),
            Value::Timestamp(Timestamp::from_micros(-1)),
            Value::TimestampTz(Timestamp::from_micros(1_700_000_000_123_456)),
            Value::Uuid(u),
            Value::List(vec![Value::Text(Text::from("a")), Value::Null]),
            Value::Text(Text::from("x")),
        ];
        let mut body = Vec::new();
        encode_row(&table, &all, &row, &mut body).unwrap();
        let decoded = apache_avro::from_avro_datum(&schema, &mut &body[..], None).expect("decodes");
        let A::Record(fields) = decoded else { panic!("not a record: {decoded:?}") };
        let get = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap();
        let some = |v: A| A::Union(1, Box::new(v));
        assert_eq!(get("id"), A::Long(-7));
        assert_eq!(get("flag"), some(A::Boolean(true)));
        assert_eq!(get("small"), A::Union(0, Box::new(A::Null)));
        let A::Union(1, big) = get("big") else { panic!() };
        let A::Decimal(big) = *big else { panic!("{big:?}") };
        assert_eq!(Vec::<u8>::try_from(big).unwrap(), vec![0, 255, 255, 255, 255, 255, 255, 255, 255]);
        assert_eq!(get("f"), some(A::Float(1.5)));
        let A::Union(1, amount) = get("amount") else { panic!() };
        let A::Decimal(amount) = *amount else { panic!("{amount:?}") };
        // -123450 at scale 2
        assert_eq!(Vec::<u8>::try_from(amount).unwrap(), twos_complement(true, "123450"));
        assert_eq!(get("loose"), some(A::String("NaN".into())));
        assert_eq!(get("name"), some(A::String("héllo".into())));
        assert_eq!(get("raw"), some(A::Bytes(vec![0, 255])));
        assert_eq!(get("day"), some(A::Date(19_782)));
        assert_eq!(get("at"), some(A::TimeMicros(45_296_000_001)));
        assert_eq!(get("ts"), some(A::LocalTimestampMicros(-1)));
        assert_eq!(get("tz"), some(A::TimestampMicros(1_700_000_000_123_456)));
        assert_eq!(get("u"), some(A::Uuid(u.to_string().parse().unwrap())));
        assert_eq!(
            get("tags"),
            some(A::Array(vec![A::Union(1, Box::new(A::String("a".into()))), A::Union(0, Box::new(A::Null))]))
        );
    }

    #[test]
    fn values_the_column_cannot_hold_name_it() {
        let table = TableSchema {
            id: TableId::new("app", "t"),
            columns: vec![col("amount", DataType::Decimal, false, Some((4, 2)))],
            version: 1,
            dialect: "postgres".into(),
        };
        let enc =
            |v: &str| encode_row(&table, &[0], &vec![Value::Decimal(Decimal::parse(v).unwrap())], &mut Vec::new());
        assert!(enc("12.34").is_ok());
        assert!(enc("12.340").is_ok(), "trailing zeros past the scale are fine");
        assert_eq!(enc("123.4").unwrap_err().column, "amount");
        assert!(enc("1.234").unwrap_err().message.contains("scale"));
        assert!(enc("Infinity").is_err());
        let null = encode_row(&table, &[0], &vec![Value::Null], &mut Vec::new()).unwrap_err();
        assert!(null.message.contains("not nullable"), "{null}");
    }

    #[test]
    fn frames_carry_the_schema_id() {
        let f = frame(258, b"body");
        assert_eq!(f, [0, 0, 0, 1, 2, b'b', b'o', b'd', b'y']);
        assert_eq!(unframe(&f).unwrap(), (258, &b"body"[..]));
        assert!(unframe(&[1, 0, 0, 0, 1]).is_err());
    }
}
