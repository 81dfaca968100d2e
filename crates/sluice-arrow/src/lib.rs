//! Rows as Apache Arrow record batches: the shared encoding of the analytical sinks (DuckDB
//! appends them, Parquet writes them).
//!
//! ```text
//!  TableSchema ──field()──▶ arrow Schema (one field per column, then the caller's extra fields)
//!  rows ──Rows::push──▶ one builder per column ──finish──▶ RecordBatch
//! ```
//!
//! Each logical type has one Arrow type (the table in `docs/types.md`). Types Arrow has no
//! exact counterpart for travel as text in their canonical form: time with zone, UUIDs, JSON,
//! enums, decimals wider than 38 digits or of open precision, and values Sluice does not
//! interpret. Infinite dates and timestamps become the greatest and least values of the Arrow
//! type but one (`±i32::MAX` days, `±i64::MAX` µs), which DuckDB reads as ±infinity. A value the
//! Arrow type cannot hold (a decimal NaN, a timestamp past Arrow's range) is refused with the
//! column named; the sink dead-letters or stops.

use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder, Float64Builder,
    Int16Builder, Int32Builder, Int64Builder, Int8Builder, IntervalMonthDayNanoBuilder, ListBuilder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder, UInt16Builder, UInt32Builder, UInt64Builder, UInt8Builder,
};
use arrow_array::types::IntervalMonthDayNano;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType as A, Field, Schema, TimeUnit};
use sluice_core::{ColumnSchema, DataType, Date, TableSchema, Timestamp, Value};

/// Widest decimal Arrow's `Decimal128` (and DuckDB's `DECIMAL`) holds.
pub const MAX_DECIMAL_PRECISION: u32 = 38;

/// A value the column's Arrow type cannot hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {reason}")]
pub struct Refused {
    /// The column
    pub column: String,
    /// Why
    pub reason: String,
}

fn refuse(c: &str, reason: impl Into<String>) -> Refused {
    Refused { column: c.to_string(), reason: reason.into() }
}

/// The Arrow type of a column of logical type `t` (with the column's precision and scale for
/// decimals).
pub fn arrow_type(t: &DataType, precision: Option<u32>, scale: Option<u32>) -> A {
    match t {
        DataType::Bool => A::Boolean,
        DataType::Int8 => A::Int8,
        DataType::Int16 => A::Int16,
        DataType::Int32 => A::Int32,
        DataType::Int64 => A::Int64,
        DataType::UInt8 => A::UInt8,
        DataType::UInt16 => A::UInt16,
        DataType::UInt32 => A::UInt32,
        DataType::UInt64 => A::UInt64,
        DataType::Float32 => A::Float32,
        DataType::Float64 => A::Float64,
        DataType::Decimal => match (precision, scale) {
            (Some(p), s) if (1..=MAX_DECIMAL_PRECISION).contains(&p) && s.unwrap_or(0) <= p => {
                A::Decimal128(p as u8, s.unwrap_or(0) as i8)
            }
            _ => A::Utf8,
        },
        DataType::Bytes => A::Binary,
        DataType::Date => A::Date32,
        DataType::Time => A::Time64(TimeUnit::Microsecond),
        DataType::Timestamp => A::Timestamp(TimeUnit::Microsecond, None),
        DataType::TimestampTz => A::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        DataType::Interval => A::Interval(arrow_schema::IntervalUnit::MonthDayNano),
        DataType::List(inner) => A::List(Arc::new(Field::new("item", arrow_type(inner, None, None), true))),
        DataType::Text
        | DataType::TimeTz
        | DataType::Uuid
        | DataType::Json
        | DataType::Enum { .. }
        | DataType::Other => A::Utf8,
    }
}

/// `d` as Arrow days: ±infinity as ±`i32::MAX` (DuckDB's own infinities; Spark and Athena see
/// far dates). `None` for the one finite date that would read as −infinity.
pub fn arrow_days(d: Date) -> Option<i32> {
    if d == Date::INFINITY {
        Some(i32::MAX)
    } else if d == Date::NEG_INFINITY {
        Some(-i32::MAX)
    } else {
        (d.0 != -i32::MAX).then_some(d.0)
    }
}

/// `t` as Arrow microseconds: ±infinity as ±`i64::MAX` (DuckDB's own infinities). `None` past
/// what microseconds since 1970 hold in 64 bits, or on a sentinel.
pub fn arrow_micros(t: Timestamp) -> Option<i64> {
    if t == Timestamp::INFINITY {
        Some(i64::MAX)
    } else if t == Timestamp::NEG_INFINITY {
        Some(-i64::MAX)
    } else {
        t.micros().filter(|m| *m != i64::MAX && *m != -i64::MAX && *m != i64::MIN)
    }
}

fn date_refused(column: &str) -> Refused {
    refuse(column, format!("date {} days from 1970 has no Arrow date", -i32::MAX))
}

fn timestamp_refused(column: &str, t: &Timestamp) -> Refused {
    refuse(column, format!("timestamp {t} is past what an Arrow timestamp holds"))
}

/// The Arrow field of a column (nullable unless the column is NOT NULL).
pub fn field(c: &ColumnSchema) -> Field {
    Field::new(&c.name, arrow_type(&c.data_type, c.precision, c.scale), c.nullable || !c.key)
}

/// `t` with intervals (at any list depth) as text, `N months N days N microseconds`, which
/// DuckDB and PostgreSQL cast back exactly: for writers that have no lossless interval (Parquet's
/// INTERVAL holds unsigned milliseconds; arrow-rs writes no MonthDayNano) or lose its nulls.
pub fn intervals_as_text(t: &A) -> A {
    match t {
        A::Interval(_) => A::Utf8,
        A::List(f) => A::List(Arc::new(Field::new(f.name(), intervals_as_text(f.data_type()), true))),
        other => other.clone(),
    }
}

/// The Arrow schema of `t`'s columns followed by `extra`.
pub fn schema(t: &TableSchema, extra: &[Field]) -> Arc<Schema> {
    let mut fields: Vec<Field> = t.columns.iter().map(field).collect();
    fields.extend(extra.iter().cloned());
    Arc::new(Schema::new(fields))
}

/// One column being built.
enum Col {
    Bool(BooleanBuilder),
    I8(Int8Builder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    U8(UInt8Builder),
    U16(UInt16Builder),
    U32(UInt32Builder),
    U64(UInt64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Dec(Decimal128Builder, u8, i8),
    Str(StringBuilder),
    Bin(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Ts(TimestampMicrosecondBuilder, Option<Arc<str>>),
    Iv(IntervalMonthDayNanoBuilder),
    List(ListBuilder<Box<dyn ArrayBuilder>>, Box<Col>),
}

impl Col {
    fn new(t: &A) -> Col {
        match t {
            A::Boolean => Col::Bool(BooleanBuilder::new()),
            A::Int8 => Col::I8(Int8Builder::new()),
            A::Int16 => Col::I16(Int16Builder::new()),
            A::Int32 => Col::I32(Int32Builder::new()),
            A::Int64 => Col::I64(Int64Builder::new()),
            A::UInt8 => Col::U8(UInt8Builder::new()),
            A::UInt16 => Col::U16(UInt16Builder::new()),
            A::UInt32 => Col::U32(UInt32Builder::new()),
            A::UInt64 => Col::U64(UInt64Builder::new()),
            A::Float32 => Col::F32(Float32Builder::new()),
            A::Float64 => Col::F64(Float64Builder::new()),
            A::Decimal128(p, s) => Col::Dec(
                Decimal128Builder::new().with_precision_and_scale(*p, *s).expect("valid by arrow_type"),
                *p,
                *s,
            ),
            A::Binary => Col::Bin(BinaryBuilder::new()),
            A::Date32 => Col::Date(Date32Builder::new()),
            A::Time64(_) => Col::Time(Time64MicrosecondBuilder::new()),
            A::Timestamp(_, tz) => {
                Col::Ts(TimestampMicrosecondBuilder::new().with_timezone_opt(tz.clone()), tz.clone())
            }
            A::Interval(_) => Col::Iv(IntervalMonthDayNanoBuilder::new()),
            A::List(f) => {
                let inner = Col::new(f.data_type());
                let values = arrow_array::builder::make_builder(f.data_type(), 0);
                Col::List(ListBuilder::new(values).with_field(f.clone()), Box::new(inner))
            }
            _ => Col::Str(StringBuilder::new()),
        }
    }

    fn null(&mut self) {
        match self {
            Col::Bool(b) => b.append_null(),
            Col::I8(b) => b.append_null(),
            Col::I16(b) => b.append_null(),
            Col::I32(b) => b.append_null(),
            Col::I64(b) => b.append_null(),
            Col::U8(b) => b.append_null(),
            Col::U16(b) => b.append_null(),
            Col::U32(b) => b.append_null(),
            Col::U64(b) => b.append_null(),
            Col::F32(b) => b.append_null(),
            Col::F64(b) => b.append_null(),
            Col::Dec(b, ..) => b.append_null(),
            Col::Str(b) => b.append_null(),
            Col::Bin(b) => b.append_null(),
            Col::Date(b) => b.append_null(),
            Col::Time(b) => b.append_null(),
            Col::Ts(b, _) => b.append_null(),
            Col::Iv(b) => b.append_null(),
            Col::List(b, _) => b.append_null(),
        }
    }

    /// Appends `v`; `Err` (with nothing appended) when the type cannot hold it.
    fn push(&mut self, v: &Value, column: &str) -> Result<(), Refused> {
        if v.is_null() {
            self.null();
            return Ok(());
        }
        let wrong = || refuse(column, format!("a {} value in a column of another type", kind(v)));
        match (self, v) {
            (_, Value::Unchanged) => return Err(refuse(column, "an unchanged value has no content to write")),
            (Col::Bool(b), Value::Bool(x)) => b.append_value(*x),
            (Col::I8(b), Value::Int(x)) => b.append_value(i8::try_from(*x).map_err(|_| out_of_range(column, x))?),
            (Col::I16(b), Value::Int(x)) => b.append_value(i16::try_from(*x).map_err(|_| out_of_range(column, x))?),
            (Col::I32(b), Value::Int(x)) => b.append_value(i32::try_from(*x).map_err(|_| out_of_range(column, x))?),
            (Col::I64(b), Value::Int(x)) => b.append_value(*x),
            (Col::U8(b), Value::UInt(x)) => b.append_value(u8::try_from(*x).map_err(|_| out_of_range(column, x))?),
            (Col::U16(b), Value::UInt(x)) => b.append_value(u16::try_from(*x).map_err(|_| out_of_range(column, x))?),
            (Col::U32(b), Value::UInt(x)) => b.append_value(u32::try_from(*x).map_err(|_| out_of_range(column, x))?),
            (Col::U64(b), Value::UInt(x)) => b.append_value(*x),
            (Col::F32(b), Value::Float32(x)) => b.append_value(*x),
            (Col::F64(b), Value::Float64(x)) => b.append_value(*x),
            (Col::F64(b), Value::Float32(x)) => b.append_value(f64::from(*x)),
            (Col::Dec(b, p, s), Value::Decimal(d)) => b.append_value(unscaled(d, *p, *s, column)?),
            (Col::Bin(b), Value::Bytes(x)) => b.append_value(x),
            (Col::Date(b), Value::Date(d)) => b.append_value(arrow_days(*d).ok_or_else(|| date_refused(column))?),
            (Col::Time(b), Value::Time(t)) => b.append_value(t.0),
            (Col::Ts(b, _), Value::Timestamp(t) | Value::TimestampTz(t)) => {
                b.append_value(arrow_micros(*t).ok_or_else(|| timestamp_refused(column, t))?)
            }
            (Col::Iv(b), Value::Interval(i)) => b.append_value(IntervalMonthDayNano::new(
                i.months,
                i.days,
                i.micros.checked_mul(1000).ok_or_else(|| refuse(column, "interval out of range"))?,
            )),
            (Col::List(b, inner), Value::List(items)) => {
                let values = b.values();
                for item in items {
                    inner.push_into(values, item, column)?;
                }
                b.append(true)
            }
            (Col::Str(b), v) => match text(v) {
                Some(s) => b.append_value(s),
                None => return Err(wrong()),
            },
            _ => return Err(wrong()),
        }
        Ok(())
    }

    /// Appends `v` to `values`, the dynamically typed child builder of a list of this type.
    fn push_into(&self, values: &mut Box<dyn ArrayBuilder>, v: &Value, column: &str) -> Result<(), Refused> {
        // A scratch builder of the element type takes the value with the same rules, then its
        // one element moves into the list's child.
        let mut one = Col::new(&self.data_type());
        one.push(v, column)?;
        let array = one.finish();
        append_array(values, &array).map_err(|e| refuse(column, e.to_string()))
    }

    fn data_type(&self) -> A {
        match self {
            Col::Bool(_) => A::Boolean,
            Col::I8(_) => A::Int8,
            Col::I16(_) => A::Int16,
            Col::I32(_) => A::Int32,
            Col::I64(_) => A::Int64,
            Col::U8(_) => A::UInt8,
            Col::U16(_) => A::UInt16,
            Col::U32(_) => A::UInt32,
            Col::U64(_) => A::UInt64,
            Col::F32(_) => A::Float32,
            Col::F64(_) => A::Float64,
            Col::Dec(_, p, s) => A::Decimal128(*p, *s),
            Col::Str(_) => A::Utf8,
            Col::Bin(_) => A::Binary,
            Col::Date(_) => A::Date32,
            Col::Time(_) => A::Time64(TimeUnit::Microsecond),
            Col::Ts(_, tz) => A::Timestamp(TimeUnit::Microsecond, tz.clone()),
            Col::Iv(_) => A::Interval(arrow_schema::IntervalUnit::MonthDayNano),
            Col::List(_, inner) => A::List(Arc::new(Field::new("item", inner.data_type(), true))),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::Bool(b) => Arc::new(b.finish()),
            Col::I8(b) => Arc::new(b.finish()),
            Col::I16(b) => Arc::new(b.finish()),
            Col::I32(b) => Arc::new(b.finish()),
            Col::I64(b) => Arc::new(b.finish()),
            Col::U8(b) => Arc::new(b.finish()),
            Col::U16(b) => Arc::new(b.finish()),
            Col::U32(b) => Arc::new(b.finish()),
            Col::U64(b) => Arc::new(b.finish()),
            Col::F32(b) => Arc::new(b.finish()),
            Col::F64(b) => Arc::new(b.finish()),
            Col::Dec(b, ..) => Arc::new(b.finish()),
            Col::Str(b) => Arc::new(b.finish()),
            Col::Bin(b) => Arc::new(b.finish()),
            Col::Date(b) => Arc::new(b.finish()),
            Col::Time(b) => Arc::new(b.finish()),
            Col::Ts(b, _) => Arc::new(b.finish()),
            Col::Iv(b) => Arc::new(b.finish()),
            Col::List(b, _) => Arc::new(b.finish()),
        }
    }
}

/// Appends every element of `array` (one built by [`Col`], of the builder's type) to `to`.
fn append_array(to: &mut Box<dyn ArrayBuilder>, array: &ArrayRef) -> Result<(), ArrowError> {
    use arrow_array::Array;
    let any = to.as_any_mut();
    macro_rules! copy {
        ($builder:ty, $array:ty) => {
            if let Some(b) = any.downcast_mut::<$builder>() {
                let a = array
                    .as_any()
                    .downcast_ref::<$array>()
                    .ok_or_else(|| ArrowError::CastError("list element".into()))?;
                for i in 0..a.len() {
                    if a.is_null(i) {
                        b.append_null();
                    } else {
                        b.append_value(a.value(i));
                    }
                }
                return Ok(());
            }
        };
    }
    copy!(BooleanBuilder, arrow_array::BooleanArray);
    copy!(Int8Builder, arrow_array::Int8Array);
    copy!(Int16Builder, arrow_array::Int16Array);
    copy!(Int32Builder, arrow_array::Int32Array);
    copy!(Int64Builder, arrow_array::Int64Array);
    copy!(UInt8Builder, arrow_array::UInt8Array);
    copy!(UInt16Builder, arrow_array::UInt16Array);
    copy!(UInt32Builder, arrow_array::UInt32Array);
    copy!(UInt64Builder, arrow_array::UInt64Array);
    copy!(Float32Builder, arrow_array::Float32Array);
    copy!(Float64Builder, arrow_array::Float64Array);
    copy!(Decimal128Builder, arrow_array::Decimal128Array);
    copy!(StringBuilder, arrow_array::StringArray);
    copy!(BinaryBuilder, arrow_array::BinaryArray);
    copy!(Date32Builder, arrow_array::Date32Array);
    copy!(Time64MicrosecondBuilder, arrow_array::Time64MicrosecondArray);
    copy!(TimestampMicrosecondBuilder, arrow_array::TimestampMicrosecondArray);
    copy!(IntervalMonthDayNanoBuilder, arrow_array::IntervalMonthDayNanoArray);
    Err(ArrowError::NotYetImplemented(format!("lists of {}", array.data_type())))
}

fn out_of_range(column: &str, x: &impl std::fmt::Display) -> Refused {
    refuse(column, format!("{x} is out of the column's range"))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Unchanged => "unchanged",
        Value::Bool(_) => "boolean",
        Value::Int(_) => "integer",
        Value::UInt(_) => "unsigned integer",
        Value::Float32(_) | Value::Float64(_) => "float",
        Value::Decimal(_) => "decimal",
        Value::Text(_) => "text",
        Value::Bytes(_) => "bytes",
        Value::Date(_) => "date",
        Value::Time(_) => "time",
        Value::TimeTz(_) => "time with zone",
        Value::Timestamp(_) => "timestamp",
        Value::TimestampTz(_) => "timestamptz",
        Value::Interval(_) => "interval",
        Value::Uuid(_) => "uuid",
        Value::Json(_) => "json",
        Value::Enum(_) => "enum",
        Value::List(_) => "list",
        Value::Other(_) => "other",
    }
}

/// The canonical text of a value that travels as text; `None` for values that do not.
fn text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    Some(match v {
        Value::Text(t) | Value::Json(t) | Value::Enum(t) | Value::Other(t) => Cow::Borrowed(t.as_str()),
        Value::Decimal(d) => Cow::Borrowed(d.as_str()),
        Value::TimeTz(t) => Cow::Owned(t.to_string()),
        Value::Uuid(u) => Cow::Owned(uuid_text(u)),
        Value::Int(i) => Cow::Owned(i.to_string()),
        Value::UInt(i) => Cow::Owned(i.to_string()),
        Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        // Each field on its own (a month has no fixed days, a day no fixed microseconds), in
        // words DuckDB and PostgreSQL both read back exactly.
        Value::Interval(i) => Cow::Owned(format!("{} months {} days {} microseconds", i.months, i.days, i.micros)),
        _ => return None,
    })
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`
pub fn uuid_text(u: &sluice_core::Uuid) -> String {
    let h: String = u.0.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// A decimal as an integer of `scale` decimal places that fits `precision` digits.
fn unscaled(d: &sluice_core::Decimal, precision: u8, scale: i8, column: &str) -> Result<i128, Refused> {
    use sluice_core::DecimalKind;
    if d.kind() != DecimalKind::Finite {
        return Err(refuse(column, format!("{} has no Arrow decimal", d.as_str())));
    }
    let (int, frac) = d.digits();
    let scale = scale.max(0) as usize;
    if frac.len() > scale && frac[scale..].bytes().any(|b| b != b'0') {
        return Err(refuse(column, format!("{} has more than {scale} decimal places", d.as_str())));
    }
    let int = int.trim_start_matches('0');
    if int.len() + scale > precision as usize {
        return Err(refuse(column, format!("{} does not fit decimal({precision},{scale})", d.as_str())));
    }
    let mut n: i128 = 0;
    for b in int.bytes().chain(frac.bytes().chain(std::iter::repeat(b'0')).take(scale)) {
        n = n * 10 + i128::from(b - b'0');
    }
    Ok(if d.is_negative() { -n } else { n })
}

/// Rows of one table shape being gathered into a record batch.
pub struct Rows {
    schema: Arc<Schema>,
    names: Vec<String>,
    cols: Vec<Col>,
    len: usize,
}

impl Rows {
    /// An empty batch with `schema`'s columns (see [`schema`]).
    pub fn new(schema: Arc<Schema>) -> Rows {
        let cols = schema.fields().iter().map(|f| Col::new(f.data_type())).collect();
        let names = schema.fields().iter().map(|f| f.name().clone()).collect();
        Rows { schema, names, cols, len: 0 }
    }

    /// Rows so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a row whose values follow the schema's fields in order (the table's columns,
    /// then the extra fields). A value the type cannot hold refuses the whole row: nothing of
    /// it is appended.
    pub fn push<'v>(&mut self, values: impl IntoIterator<Item = &'v Value>) -> Result<(), Refused> {
        let values: Vec<&Value> = values.into_iter().collect();
        if values.len() != self.cols.len() {
            return Err(refuse("*", format!("{} values for {} columns", values.len(), self.cols.len())));
        }
        // Check first, so a refused row leaves every builder as it was.
        for ((f, v), name) in self.schema.fields().iter().zip(&values).zip(&self.names) {
            validate(f.data_type(), v, name)?;
        }
        for ((c, v), name) in self.cols.iter_mut().zip(&values).zip(&self.names) {
            c.push(v, name)?;
        }
        self.len += 1;
        Ok(())
    }

    /// The batch of the rows pushed so far; the builder is empty afterwards.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let arrays: Vec<ArrayRef> = self.cols.iter_mut().map(Col::finish).collect();
        self.len = 0;
        RecordBatch::try_new(self.schema.clone(), arrays)
    }

    /// The schema of the batches.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }
}

/// Whether a value of Arrow type `t` can hold `v` (the rules [`Col::push`] applies), without
/// building anything.
fn validate(t: &A, v: &Value, column: &str) -> Result<(), Refused> {
    let ok = match (t, v) {
        (_, Value::Null) => true,
        (_, Value::Unchanged) => return Err(refuse(column, "an unchanged value has no content to write")),
        (A::Boolean, Value::Bool(_)) => true,
        (A::Int8, Value::Int(x)) => i8::try_from(*x).map(|_| true).map_err(|_| out_of_range(column, x))?,
        (A::Int16, Value::Int(x)) => i16::try_from(*x).map(|_| true).map_err(|_| out_of_range(column, x))?,
        (A::Int32, Value::Int(x)) => i32::try_from(*x).map(|_| true).map_err(|_| out_of_range(column, x))?,
        (A::Int64, Value::Int(_)) => true,
        (A::UInt8, Value::UInt(x)) => u8::try_from(*x).map(|_| true).map_err(|_| out_of_range(column, x))?,
        (A::UInt16, Value::UInt(x)) => u16::try_from(*x).map(|_| true).map_err(|_| out_of_range(column, x))?,
        (A::UInt32, Value::UInt(x)) => u32::try_from(*x).map(|_| true).map_err(|_| out_of_range(column, x))?,
        (A::UInt64, Value::UInt(_)) => true,
        (A::Float32, Value::Float32(_)) => true,
        (A::Float64, Value::Float64(_) | Value::Float32(_)) => true,
        (A::Decimal128(p, s), Value::Decimal(d)) => unscaled(d, *p, *s, column).map(|_| true)?,
        (A::Binary, Value::Bytes(_)) => true,
        (A::Date32, Value::Date(d)) => arrow_days(*d).map(|_| true).ok_or_else(|| date_refused(column))?,
        (A::Time64(_), Value::Time(_)) => true,
        (A::Timestamp(..), Value::Timestamp(t) | Value::TimestampTz(t)) => {
            arrow_micros(*t).map(|_| true).ok_or_else(|| timestamp_refused(column, t))?
        }
        (A::Interval(_), Value::Interval(i)) => {
            i.micros.checked_mul(1000).is_some() || return Err(refuse(column, "interval out of range"))
        }
        (A::List(f), Value::List(items)) => {
            for item in items {
                validate(f.data_type(), item, column)?;
            }
            true
        }
        (A::Utf8, v) => text(v).is_some(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(refuse(column, format!("a {} value in a column of another type", kind(v))))
    }
}

#[cfg(test)]
mod tests;
