//! PostgreSQL values ⇄ [`Value`], in both wire formats.
//!
//! ```text
//!   pgoutput tuples, COPY rows, DataRow fields ──decode_text / decode_binary──▶ Value
//!   Value ──encode_text / encode_binary──▶ bind parameters, COPY rows
//! ```
//!
//! The text format is what PostgreSQL's output functions print and its input functions read;
//! the binary format is `typsend`/`typrecv` (binary COPY, binary parameters, pgoutput's binary
//! mode). Sessions are fixed to `DateStyle=ISO, IntervalStyle=postgres, TimeZone=UTC,
//! extra_float_digits=1, client_encoding=UTF8`, so only those output styles are parsed.
//!
//! Every value decodes to the same [`Value`] from either format, and encodes to a form the
//! server reads back to the same bits: floats keep NaN, ±infinity and `-0`, numerics their scale,
//! timestamps PostgreSQL's whole range (past `i64` microseconds since 1970).
//!
//! Nothing here tracks progress: each call converts one value. Error model: malformed input and
//! values that do not fit a column give a [`CodecError`] naming the type and showing the input;
//! it is a definite error (this record is bad), never a panic. Decoding text-like values shares
//! the received buffer instead of copying it.

mod binary;
mod text;

use std::borrow::Cow;
use std::fmt;

use sluice_core::{Decimal, ErrorClass, Text, Value, ValueError};

pub use binary::{decode_binary, encode_binary};
pub use text::{decode_text, encode_text};

/// Days from 1970-01-01 (Sluice's epoch) to 2000-01-01 (PostgreSQL's).
const PG_EPOCH_DAYS: i64 = 10_957;

/// Microseconds in an hour, a minute and a second.
const MICROS_PER_HOUR: i64 = 3_600_000_000;
const MICROS_PER_MINUTE: i64 = 60_000_000;
const MICROS_PER_SEC: i64 = 1_000_000;

/// A `timetz` zone must be closer to UTC than this many seconds (PostgreSQL's `TZDISP_LIMIT`).
const TZ_LIMIT_SECS: i32 = 16 * 3600;

/// PostgreSQL's `MAXDIM`: arrays have at most this many dimensions.
const MAX_ARRAY_DIMS: usize = 6;

/// How many bytes of offending input an error message shows.
const ERROR_INPUT_PREFIX: usize = 64;

/// How to read and write one PostgreSQL column type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgType {
    /// `bool`
    Bool,
    /// `int2`
    Int2,
    /// `int4`
    Int4,
    /// `int8`
    Int8,
    /// `float4`
    Float4,
    /// `float8`
    Float8,
    /// `numeric`
    Numeric,
    /// text, varchar, bpchar (char(n), padded), name, "char" (OID 18)
    Text,
    /// `bytea`
    Bytea,
    /// `date`
    Date,
    /// `time`
    Time,
    /// `timetz`
    TimeTz,
    /// `timestamp`
    Timestamp,
    /// `timestamptz`
    TimestampTz,
    /// `interval`
    Interval,
    /// `uuid`
    Uuid,
    /// `json`
    Json,
    /// `jsonb`
    Jsonb,
    /// any enum type (value = label)
    Enum,
    /// one array type; `elem_oid` is the element type's OID (needed in the binary array header)
    Array {
        /// How to read and write the elements
        elem: Box<PgType>,
        /// The element type's OID, written in (and checked against) the binary array header
        elem_oid: u32,
    },
    /// a type Sluice does not interpret: text form only, as Value::Other
    Other,
}

impl PgType {
    /// The PgType of a built-in type OID (scalars and their one-dimensional array types); None
    /// for anything else.
    pub fn from_builtin_oid(oid: u32) -> Option<PgType> {
        if let Some(t) = scalar_of_oid(oid) {
            return Some(t);
        }
        let elem_oid = match oid {
            1000 => 16,
            1001 => 17,
            1002 => 18,
            1003 => 19,
            1016 => 20,
            1005 => 21,
            1007 => 23,
            1009 => 25,
            199 => 114,
            1021 => 700,
            1022 => 701,
            1014 => 1042,
            1015 => 1043,
            1182 => 1082,
            1183 => 1083,
            1115 => 1114,
            1185 => 1184,
            1187 => 1186,
            1270 => 1266,
            1231 => 1700,
            2951 => 2950,
            3807 => 3802,
            _ => return None,
        };
        let elem = scalar_of_oid(elem_oid)?;
        Some(PgType::Array { elem: Box::new(elem), elem_oid })
    }

    /// Whether values of this type can be read and written in binary (false for Other and
    /// arrays of Other).
    pub fn binary_ok(&self) -> bool {
        match self {
            PgType::Other => false,
            PgType::Array { elem, .. } => elem.binary_ok(),
            _ => true,
        }
    }
}

/// The scalar built-in types Sluice interprets.
fn scalar_of_oid(oid: u32) -> Option<PgType> {
    Some(match oid {
        16 => PgType::Bool,
        17 => PgType::Bytea,
        18 | 19 | 25 | 1042 | 1043 => PgType::Text,
        20 => PgType::Int8,
        21 => PgType::Int2,
        23 => PgType::Int4,
        114 => PgType::Json,
        700 => PgType::Float4,
        701 => PgType::Float8,
        1082 => PgType::Date,
        1083 => PgType::Time,
        1114 => PgType::Timestamp,
        1184 => PgType::TimestampTz,
        1186 => PgType::Interval,
        1266 => PgType::TimeTz,
        1700 => PgType::Numeric,
        2950 => PgType::Uuid,
        3802 => PgType::Jsonb,
        _ => return None,
    })
}

impl fmt::Display for PgType {
    /// PostgreSQL's name for the type, for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            PgType::Bool => "bool",
            PgType::Int2 => "int2",
            PgType::Int4 => "int4",
            PgType::Int8 => "int8",
            PgType::Float4 => "float4",
            PgType::Float8 => "float8",
            PgType::Numeric => "numeric",
            PgType::Text => "text",
            PgType::Bytea => "bytea",
            PgType::Date => "date",
            PgType::Time => "time",
            PgType::TimeTz => "timetz",
            PgType::Timestamp => "timestamp",
            PgType::TimestampTz => "timestamptz",
            PgType::Interval => "interval",
            PgType::Uuid => "uuid",
            PgType::Json => "json",
            PgType::Jsonb => "jsonb",
            PgType::Enum => "enum",
            PgType::Other => "uninterpreted type",
            PgType::Array { elem, .. } => return write!(f, "{elem}[]"),
        };
        f.write_str(name)
    }
}

/// Which wire format an input was in, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    Binary,
}

/// A value that cannot be decoded or encoded: names the type, shows (a prefix of) the input and
/// says what is wrong. Always [`ErrorClass::Definite`]: the record is bad, not the connection.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct CodecError(Box<ErrorInner>);

/// Boxed so that `Result<Value, CodecError>` stays small on the hot path.
#[derive(Debug, thiserror::Error)]
#[error("cannot {what}: {detail}")]
struct ErrorInner {
    /// "decode int4 from text \"12a\"", "encode Value::Text(\"x\") as int4"
    what: String,
    detail: Cow<'static, str>,
    #[source]
    source: Option<ValueError>,
}

impl CodecError {
    /// The runtime's reaction: quarantine the record, keep the pipeline running.
    pub fn class(&self) -> ErrorClass {
        ErrorClass::Definite
    }

    pub(crate) fn decode(ty: &PgType, format: Format, input: &[u8], problem: Problem) -> CodecError {
        let shown = match format {
            Format::Text => show_text(input),
            Format::Binary => show_binary(input),
        };
        let format = match format {
            Format::Text => "text",
            Format::Binary => "binary",
        };
        CodecError::new(format!("decode {ty} from {format} {shown}"), problem)
    }

    pub(crate) fn encode(ty: &PgType, v: &Value, problem: Problem) -> CodecError {
        let mut shown = format!("{v:?}");
        if shown.len() > ERROR_INPUT_PREFIX {
            let mut end = ERROR_INPUT_PREFIX;
            while !shown.is_char_boundary(end) {
                end -= 1;
            }
            shown.truncate(end);
            shown.push('…');
        }
        CodecError::new(format!("encode {shown} as {ty}"), problem)
    }

    /// The value's variant does not fit the column type at all.
    pub(crate) fn mismatch(ty: &PgType, v: &Value) -> CodecError {
        CodecError::encode(ty, v, Problem::from(format!("{} does not fit a column of type {ty}", kind(v))))
    }

    fn new(what: String, problem: Problem) -> CodecError {
        CodecError(Box::new(ErrorInner { what, detail: problem.detail, source: problem.source }))
    }
}

/// What is wrong with one input, before the codec adds which type and which bytes.
#[derive(Debug)]
pub(crate) struct Problem {
    detail: Cow<'static, str>,
    source: Option<ValueError>,
}

impl Problem {
    /// A problem reported by the core value types, kept as the cause.
    pub(crate) fn value(detail: &'static str, source: ValueError) -> Problem {
        Problem { detail: Cow::Borrowed(detail), source: Some(source) }
    }
}

impl From<&'static str> for Problem {
    fn from(s: &'static str) -> Problem {
        Problem { detail: Cow::Borrowed(s), source: None }
    }
}

impl From<String> for Problem {
    fn from(s: String) -> Problem {
        Problem { detail: Cow::Owned(s), source: None }
    }
}

/// Text input as a quoted string, cut after [`ERROR_INPUT_PREFIX`] bytes.
fn show_text(input: &[u8]) -> String {
    let cut = &input[..input.len().min(ERROR_INPUT_PREFIX)];
    let mut s = format!("{:?}", String::from_utf8_lossy(cut));
    if cut.len() < input.len() {
        s.push_str(&format!("… ({} bytes)", input.len()));
    }
    s
}

/// Binary input as hex, cut after half of [`ERROR_INPUT_PREFIX`] bytes.
fn show_binary(input: &[u8]) -> String {
    let cut = &input[..input.len().min(ERROR_INPUT_PREFIX / 2)];
    let mut s = String::with_capacity(2 + 2 * cut.len() + 16);
    s.push_str("0x");
    for b in cut {
        s.push_str(&format!("{b:02x}"));
    }
    if cut.len() < input.len() {
        s.push('…');
    }
    s.push_str(&format!(" ({} bytes)", input.len()));
    s
}

/// The variant name of a value, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "Value::Null",
        Value::Unchanged => "Value::Unchanged",
        Value::Bool(_) => "Value::Bool",
        Value::Int(_) => "Value::Int",
        Value::UInt(_) => "Value::UInt",
        Value::Float32(_) => "Value::Float32",
        Value::Float64(_) => "Value::Float64",
        Value::Decimal(_) => "Value::Decimal",
        Value::Text(_) => "Value::Text",
        Value::Bytes(_) => "Value::Bytes",
        Value::Date(_) => "Value::Date",
        Value::Time(_) => "Value::Time",
        Value::TimeTz(_) => "Value::TimeTz",
        Value::Timestamp(_) => "Value::Timestamp",
        Value::TimestampTz(_) => "Value::TimestampTz",
        Value::Interval(_) => "Value::Interval",
        Value::Uuid(_) => "Value::Uuid",
        Value::Json(_) => "Value::Json",
        Value::Enum(_) => "Value::Enum",
        Value::List(_) => "Value::List",
        Value::Other(_) => "Value::Other",
    }
}

/// Wraps received bytes as text without copying them.
fn utf8(raw: bytes::Bytes) -> Result<Text, Problem> {
    Text::from_utf8(raw).map_err(|e| Problem::value("not valid UTF-8", e))
}

// Encoding accepts the obvious lossless conversions between variants; these helpers hold them
// so that the text and binary encoders agree.

/// The integer for an `int2`/`int4`/`int8` column, checked against the column's range.
fn int_value(ty: &PgType, v: &Value) -> Result<i64, CodecError> {
    let (min, max) = match ty {
        PgType::Int2 => (i16::MIN as i64, i16::MAX as i64),
        PgType::Int4 => (i32::MIN as i64, i32::MAX as i64),
        _ => (i64::MIN, i64::MAX),
    };
    let n = match *v {
        Value::Int(i) => i128::from(i),
        Value::UInt(u) => i128::from(u),
        _ => return Err(CodecError::mismatch(ty, v)),
    };
    if n < i128::from(min) || n > i128::from(max) {
        return Err(CodecError::encode(ty, v, Problem::from(format!("{n} is out of range for {ty}"))));
    }
    Ok(n as i64)
}

/// Integers up to this magnitude are exact in an `f64` (2^53).
const F64_EXACT_INT: u64 = 1 << 53;
/// Integers up to this magnitude are exact in an `f32` (2^24).
const F32_EXACT_INT: u64 = 1 << 24;

/// The double for a `float8` column: doubles, widened singles and integers a double holds exactly.
fn f64_value(ty: &PgType, v: &Value) -> Result<f64, CodecError> {
    match *v {
        Value::Float64(f) => Ok(f),
        Value::Float32(f) => Ok(f64::from(f)),
        Value::Int(i) if i.unsigned_abs() <= F64_EXACT_INT => Ok(i as f64),
        Value::UInt(u) if u <= F64_EXACT_INT => Ok(u as f64),
        Value::Int(_) | Value::UInt(_) => {
            Err(CodecError::encode(ty, v, Problem::from("integer is not exact as a float8")))
        }
        _ => Err(CodecError::mismatch(ty, v)),
    }
}

/// The single for a `float4` column: singles and integers a single holds exactly.
fn f32_value(ty: &PgType, v: &Value) -> Result<f32, CodecError> {
    match *v {
        Value::Float32(f) => Ok(f),
        Value::Int(i) if i.unsigned_abs() <= F32_EXACT_INT => Ok(i as f32),
        Value::UInt(u) if u <= F32_EXACT_INT => Ok(u as f32),
        Value::Int(_) | Value::UInt(_) => {
            Err(CodecError::encode(ty, v, Problem::from("integer is not exact as a float4")))
        }
        _ => Err(CodecError::mismatch(ty, v)),
    }
}

/// The decimal for a `numeric` column; integers convert exactly.
fn decimal_value<'a>(ty: &PgType, v: &'a Value) -> Result<Cow<'a, Decimal>, CodecError> {
    match v {
        Value::Decimal(d) => Ok(Cow::Borrowed(d)),
        Value::Int(i) => Ok(Cow::Owned(Decimal::from_parts(*i < 0, &i.unsigned_abs().to_string(), ""))),
        Value::UInt(u) => Ok(Cow::Owned(Decimal::from_parts(false, &u.to_string(), ""))),
        _ => Err(CodecError::mismatch(ty, v)),
    }
}

/// The text for a text-like column (text, json, jsonb, enum): a variant of the column's own kind,
/// or plain text, which the server parses.
fn text_value<'a>(ty: &PgType, v: &'a Value) -> Result<&'a Text, CodecError> {
    match (ty, v) {
        (PgType::Text, Value::Text(t) | Value::Enum(t) | Value::Json(t)) => Ok(t),
        (PgType::Json | PgType::Jsonb, Value::Json(t) | Value::Text(t)) => Ok(t),
        (PgType::Enum, Value::Enum(t) | Value::Text(t)) => Ok(t),
        _ => Err(CodecError::mismatch(ty, v)),
    }
}

/// The dimension lengths of a nested list, checking that it is rectangular and not deeper than
/// PostgreSQL allows. An array with no elements has no dimensions.
fn array_dims(list: &[Value]) -> Result<Vec<usize>, Problem> {
    let mut dims = vec![list.len()];
    let mut first = list.first();
    while let Some(Value::List(inner)) = first {
        dims.push(inner.len());
        first = inner.first();
        if dims.len() > MAX_ARRAY_DIMS {
            return Err(Problem::from(format!("more than {MAX_ARRAY_DIMS} dimensions")));
        }
    }
    check_rectangular(list, &dims)?;
    if dims.contains(&0) {
        dims.clear();
    }
    Ok(dims)
}

fn check_rectangular(list: &[Value], dims: &[usize]) -> Result<(), Problem> {
    let Some((&len, inner_dims)) = dims.split_first() else {
        return Ok(());
    };
    if list.len() != len {
        return Err(Problem::from("sub-lists differ in length (arrays must be rectangular)"));
    }
    for v in list {
        match (v, inner_dims.is_empty()) {
            (Value::List(inner), false) => check_rectangular(inner, inner_dims)?,
            (Value::List(_), true) => return Err(Problem::from("lists nested to different depths")),
            (_, false) => return Err(Problem::from("an element where a sub-list belongs")),
            (_, true) => {}
        }
    }
    Ok(())
}

/// Puts a flat list of elements into nested lists of `dims` (row-major, as PostgreSQL stores
/// them).
fn nest(items: &mut impl Iterator<Item = Value>, dims: &[usize]) -> Vec<Value> {
    match dims {
        [] => Vec::new(),
        [n] => items.take(*n).collect(),
        [n, rest @ ..] => (0..*n).map(|_| Value::List(nest(items, rest))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn builtin_oids_map_to_types_and_arrays_carry_their_element_oid() {
        assert_eq!(PgType::from_builtin_oid(23), Some(PgType::Int4));
        assert_eq!(PgType::from_builtin_oid(18), Some(PgType::Text));
        assert_eq!(PgType::from_builtin_oid(3802), Some(PgType::Jsonb));
        assert_eq!(
            PgType::from_builtin_oid(1185),
            Some(PgType::Array { elem: Box::new(PgType::TimestampTz), elem_oid: 1184 })
        );
        assert_eq!(PgType::from_builtin_oid(199), Some(PgType::Array { elem: Box::new(PgType::Json), elem_oid: 114 }));
        assert_eq!(PgType::from_builtin_oid(1002), Some(PgType::Array { elem: Box::new(PgType::Text), elem_oid: 18 }));
        assert_eq!(PgType::from_builtin_oid(600), None, "point is not interpreted");
        assert_eq!(PgType::from_builtin_oid(0), None);
        let all = [
            16, 17, 18, 19, 20, 21, 23, 25, 114, 700, 701, 1042, 1043, 1082, 1083, 1114, 1184, 1186, 1266, 1700, 2950,
            3802, 1000, 1001, 1002, 1003, 1016, 1005, 1007, 1009, 199, 1021, 1022, 1014, 1015, 1182, 1183, 1115, 1185,
            1187, 1270, 1231, 2951, 3807,
        ];
        for oid in all {
            let t = PgType::from_builtin_oid(oid).unwrap_or_else(|| panic!("oid {oid} unmapped"));
            assert!(t.binary_ok(), "{t} should have a binary form");
        }
    }

    #[test]
    fn only_uninterpreted_types_lack_a_binary_form() {
        assert!(!PgType::Other.binary_ok());
        assert!(!PgType::Array { elem: Box::new(PgType::Other), elem_oid: 600 }.binary_ok());
        assert!(PgType::Array { elem: Box::new(PgType::Enum), elem_oid: 90000 }.binary_ok());
    }

    #[test]
    fn errors_name_the_type_and_show_a_prefix_of_the_input() {
        let e = decode_text(&PgType::Int4, Bytes::from_static(b"12a")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("int4") && msg.contains("\"12a\""), "{msg}");
        assert_eq!(e.class(), ErrorClass::Definite);

        let long = Bytes::from(vec![b'x'; 1000]);
        let msg = decode_text(&PgType::Date, long).unwrap_err().to_string();
        assert!(msg.len() < 300 && msg.contains("1000 bytes"), "{msg}");

        let msg = decode_binary(&PgType::Int8, Bytes::from_static(&[1, 2, 3])).unwrap_err().to_string();
        assert!(msg.contains("int8") && msg.contains("0x010203") && msg.contains("8 bytes"), "{msg}");

        let arr = PgType::Array { elem: Box::new(PgType::Int2), elem_oid: 21 };
        let msg = encode_text(&arr, &Value::Text("x".into()), &mut bytes::BytesMut::new()).unwrap_err().to_string();
        assert!(msg.contains("int2[]") && msg.contains("Value::Text"), "{msg}");

        let e = decode_text(&PgType::Text, Bytes::from_static(b"\xff")).unwrap_err();
        assert!(std::error::Error::source(&e).is_some(), "the UTF-8 error is kept as the cause");
    }

    #[test]
    fn cross_type_encoding_accepts_only_lossless_conversions() {
        let mut out = bytes::BytesMut::new();
        assert_eq!(int_value(&PgType::Int2, &Value::UInt(32767)).unwrap(), 32767);
        assert!(int_value(&PgType::Int2, &Value::Int(32768)).is_err());
        assert!(int_value(&PgType::Int8, &Value::UInt(u64::MAX)).is_err());
        assert_eq!(int_value(&PgType::Int8, &Value::UInt(i64::MAX as u64)).unwrap(), i64::MAX);
        assert_eq!(f64_value(&PgType::Float8, &Value::Int(1 << 53)).unwrap(), 9007199254740992.0);
        assert!(f64_value(&PgType::Float8, &Value::Int((1 << 53) + 1)).is_err());
        assert!(f32_value(&PgType::Float4, &Value::Float64(1.5)).is_err());
        assert_eq!(decimal_value(&PgType::Numeric, &Value::Int(i64::MIN)).unwrap().as_str(), "-9223372036854775808");
        assert_eq!(decimal_value(&PgType::Numeric, &Value::UInt(u64::MAX)).unwrap().as_str(), "18446744073709551615");
        assert!(text_value(&PgType::Json, &Value::Text("{}".into())).is_ok());
        assert!(text_value(&PgType::Enum, &Value::Text("happy".into())).is_ok());
        assert!(text_value(&PgType::Json, &Value::Int(1)).is_err());
        let e = encode_binary(&PgType::Uuid, &Value::Text("x".into()), &mut out).unwrap_err().to_string();
        assert!(e.contains("Value::Text") && e.contains("uuid"), "{e}");
    }

    #[test]
    fn array_dims_requires_rectangular_lists() {
        let l = |v: Vec<Value>| Value::List(v);
        let i = Value::Int;
        assert_eq!(array_dims(&[]).unwrap(), Vec::<usize>::new());
        assert_eq!(array_dims(&[i(1), Value::Null]).unwrap(), vec![2]);
        assert_eq!(array_dims(&[l(vec![i(1), i(2)]), l(vec![i(3), i(4)])]).unwrap(), vec![2, 2]);
        assert!(array_dims(&[l(vec![i(1), i(2)]), l(vec![i(3)])]).is_err());
        assert!(array_dims(&[l(vec![i(1)]), i(3)]).is_err());
        assert!(array_dims(&[i(3), l(vec![i(1)])]).is_err());
        let mut deep = i(1);
        for _ in 0..7 {
            deep = l(vec![deep]);
        }
        let Value::List(deep) = deep else { unreachable!() };
        assert!(array_dims(&deep).is_err());
    }
}

/// The PostgreSQL type a value would naturally be written as: enough to render it as a text
/// literal when the column's own type is not at hand (a column default in DDL).
pub fn natural_type(v: &Value) -> PgType {
    match v {
        Value::Bool(_) => PgType::Bool,
        Value::Int(_) => PgType::Int8,
        Value::UInt(_) | Value::Decimal(_) => PgType::Numeric,
        Value::Float32(_) => PgType::Float4,
        Value::Float64(_) => PgType::Float8,
        Value::Text(_) => PgType::Text,
        Value::Bytes(_) => PgType::Bytea,
        Value::Date(_) => PgType::Date,
        Value::Time(_) => PgType::Time,
        Value::TimeTz(_) => PgType::TimeTz,
        Value::Timestamp(_) => PgType::Timestamp,
        Value::TimestampTz(_) => PgType::TimestampTz,
        Value::Interval(_) => PgType::Interval,
        Value::Uuid(_) => PgType::Uuid,
        Value::Json(_) => PgType::Json,
        Value::Enum(_) => PgType::Enum,
        Value::List(items) => {
            let elem = items.iter().find(|i| !i.is_null()).map_or(PgType::Text, natural_type);
            let elem = match elem {
                PgType::Array { elem, .. } => *elem,
                e => e,
            };
            PgType::Array { elem: Box::new(elem), elem_oid: 0 }
        }
        Value::Null | Value::Unchanged | Value::Other(_) => PgType::Other,
    }
}
