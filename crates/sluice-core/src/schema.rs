//! Table shapes: names, logical column types and what a sink needs to create a table.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::value::Value;

/// A table's qualified name in its source, e.g. `public.orders`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TableId {
    /// Schema (PostgreSQL namespace, MySQL database).
    pub schema: String,
    /// Table name within the schema.
    pub name: String,
}

impl TableId {
    /// A table id from its two parts.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableId { schema: schema.into(), name: name.into() }
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// The logical type of a column, independent of any database's spelling. `docs/types.md`
/// maps every source type to one of these and each of these to every sink's type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// true/false; values are [`Value::Bool`]
    Bool,
    /// 8-bit signed integer; [`Value::Int`]
    Int8,
    /// 16-bit signed integer; [`Value::Int`]
    Int16,
    /// 32-bit signed integer (also MySQL's 24-bit MEDIUMINT); [`Value::Int`]
    Int32,
    /// 64-bit signed integer; [`Value::Int`]
    Int64,
    /// 8-bit unsigned integer; [`Value::UInt`]
    UInt8,
    /// 16-bit unsigned integer; [`Value::UInt`]
    UInt16,
    /// 32-bit unsigned integer; [`Value::UInt`]
    UInt32,
    /// 64-bit unsigned integer; [`Value::UInt`]
    UInt64,
    /// IEEE single precision, with NaN and infinities; [`Value::Float32`]
    Float32,
    /// IEEE double precision, with NaN and infinities; [`Value::Float64`]
    Float64,
    /// Exact decimal (precision and scale on the column, when the source fixes them);
    /// [`Value::Decimal`]
    Decimal,
    /// Character data; [`Value::Text`]
    Text,
    /// Raw bytes; [`Value::Bytes`]
    Bytes,
    /// Calendar date; [`Value::Date`]
    Date,
    /// Time of day; [`Value::Time`]
    Time,
    /// Time of day with zone offset; [`Value::TimeTz`]
    TimeTz,
    /// Date and time without zone; [`Value::Timestamp`]
    Timestamp,
    /// An instant; [`Value::TimestampTz`]
    TimestampTz,
    /// Months, days and microseconds; [`Value::Interval`]
    Interval,
    /// UUID; [`Value::Uuid`]
    Uuid,
    /// JSON document; [`Value::Json`]
    Json,
    /// Enumerated type; [`Value::Enum`]
    Enum {
        /// Labels in sort order
        labels: Vec<String>,
    },
    /// A list of the element type (arrays; multi-dimensional ones nest); [`Value::List`]
    List(Box<DataType>),
    /// A type Sluice does not interpret; [`Value::Other`] carries its text form
    Other,
}

impl DataType {
    /// Whether values of this type are unsigned integers.
    pub fn is_unsigned(&self) -> bool {
        matches!(self, DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64)
    }
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSchema {
    /// Column name
    pub name: String,
    /// Logical type
    pub data_type: DataType,
    /// Whether NULL is allowed
    pub nullable: bool,
    /// Whether the column is part of the primary key (or replica identity key)
    pub key: bool,
    /// Decimals: total significant digits; time types: digits of fractional seconds.
    /// `None` when the source leaves it open.
    pub precision: Option<u32>,
    /// Decimals: digits after the point; `None` when open.
    pub scale: Option<u32>,
    /// Text and bytes: the declared maximum length (characters for text, bytes for binary);
    /// `None` when unbounded.
    pub length: Option<u32>,
    /// The source's own spelling of the type, e.g. `numeric(12,2)` or `public.mood[]`. Only a
    /// hint for sinks of the same kind of database (see [`TableSchema::dialect`]); every other
    /// sink maps [`ColumnSchema::data_type`].
    pub native_type: String,
    /// For a column added with a constant default: the value rows written before the column
    /// existed read as. The source wrote no change for those rows, so a sink that adds the
    /// column must fill it with this value.
    #[serde(default)]
    pub missing_value: Option<Value>,
}

impl ColumnSchema {
    /// A nullable, non-key column of `data_type` with no precision, scale or length.
    pub fn new(name: impl Into<String>, data_type: DataType, native_type: impl Into<String>) -> ColumnSchema {
        ColumnSchema {
            name: name.into(),
            data_type,
            nullable: true,
            key: false,
            precision: None,
            scale: None,
            length: None,
            native_type: native_type.into(),
            missing_value: None,
        }
    }

    /// The same column marked as (part of) the key, and so not nullable.
    pub fn key(mut self) -> ColumnSchema {
        self.key = true;
        self.nullable = false;
        self
    }

    /// Whether the column holds the same values as `other`: same logical type, precision,
    /// scale and length (names, nullability and spelling aside).
    pub fn same_type(&self, other: &ColumnSchema) -> bool {
        self.data_type == other.data_type
            && self.precision == other.precision
            && self.scale == other.scale
            && self.length == other.length
    }

    /// Whether every value a column of this type holds fits a column of `to`'s type without
    /// loss: wider integers (unsigned into a signed type of twice the width), integers into
    /// decimals with enough integer digits or into doubles (up to 32 bits), single into double
    /// precision, longer or unbounded text and bytes, decimals with at least as many integer and
    /// fraction digits, more fractional-second digits, enums gaining labels, enums into text.
    /// A sink follows such a change of a source column by widening its own column; any other
    /// change may lose data.
    pub fn widens_to(&self, to: &ColumnSchema) -> bool {
        use DataType::*;
        let at_least = |from: Option<u32>, to: Option<u32>| match (from, to) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(f), Some(t)) => t >= f,
        };
        let signed = |t: &DataType| match t {
            Int8 => Some(8),
            Int16 => Some(16),
            Int32 => Some(32),
            Int64 => Some(64),
            _ => None,
        };
        let unsigned = |t: &DataType| match t {
            UInt8 => Some(8),
            UInt16 => Some(16),
            UInt32 => Some(32),
            UInt64 => Some(64),
            _ => None,
        };
        let digits = |t: &DataType| match t {
            Int8 | UInt8 => Some(3),
            Int16 | UInt16 => Some(5),
            Int32 | UInt32 => Some(10),
            Int64 => Some(19),
            UInt64 => Some(20),
            _ => None,
        };
        let (f, t) = (&self.data_type, &to.data_type);
        if f == t {
            return match f {
                Text | Bytes => at_least(self.length, to.length),
                Decimal => match ((self.precision, self.scale), (to.precision, to.scale)) {
                    (_, (None, _)) => true,
                    ((None, _), _) => false,
                    ((Some(fp), fs), (Some(tp), ts)) => {
                        let (fs, ts) = (fs.unwrap_or(0), ts.unwrap_or(0));
                        ts >= fs && tp.saturating_sub(ts) >= fp.saturating_sub(fs)
                    }
                },
                Time | TimeTz | Timestamp | TimestampTz | Interval => at_least(self.precision, to.precision),
                _ => true,
            };
        }
        match (f, t) {
            (Enum { labels: a }, Enum { labels: b }) => a.iter().all(|l| b.contains(l)),
            (Enum { labels }, Text) => to.length.is_none_or(|n| labels.iter().all(|l| l.chars().count() <= n as usize)),
            (Float32, Float64) => true,
            (a, Decimal) if digits(a).is_some() => {
                to.precision.is_none_or(|p| p.saturating_sub(to.scale.unwrap_or(0)) >= digits(a).unwrap_or(u32::MAX))
            }
            (a, Float64) => signed(a).or(unsigned(a)).is_some_and(|w| w <= 32),
            (a, b) => match (signed(a), unsigned(a), signed(b), unsigned(b)) {
                (Some(x), _, Some(y), _) | (_, Some(x), _, Some(y)) => y > x,
                (_, Some(x), Some(y), _) => y > x,
                _ => false,
            },
        }
    }
}

/// The shape of a table at one point in the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    /// Qualified name
    pub id: TableId,
    /// Columns in source order
    pub columns: Vec<ColumnSchema>,
    /// Tells shapes apart: a new shape reported by the source gets a version not used before in
    /// this process (also across restarts of the source), so a sink reconciles its table when
    /// the version changes
    pub version: u64,
    /// Which database's spelling [`ColumnSchema::native_type`] uses, e.g. `postgres`
    pub dialect: String,
}

impl TableSchema {
    /// Indexes of the key columns in column order.
    pub fn key_indexes(&self) -> Vec<usize> {
        self.columns.iter().enumerate().filter(|(_, c)| c.key).map(|(i, _)| i).collect()
    }

    /// Index of the column called `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The key values of `row`, in key column order.
    pub fn key_of(&self, row: &Row) -> Key {
        self.columns.iter().zip(row).filter(|(c, _)| c.key).map(|(_, v)| v.clone()).collect()
    }

    /// Whether an update gave its row a new key: `before` holds a complete old key that differs
    /// from `after`'s. Change logs write such an update as a delete and an insert (as Debezium
    /// does), so the current state per key needs only the entries of that key.
    pub fn key_moved(&self, before: &Row, after: &Row) -> bool {
        let (old, new) = (self.key_of(before), self.key_of(after));
        !old.is_empty() && old.iter().all(|v| !matches!(v, Value::Null | Value::Unchanged)) && old != new
    }
}

/// Values in the column order of the row's [`TableSchema`].
pub type Row = Vec<Value>;

/// The key column values of a row, in key column order.
pub type Key = Vec<Value>;

/// Shared handle to a schema; changes point at the schema they were captured under.
pub type SchemaRef = Arc<TableSchema>;

/// A schema version never used before: unique in this process and, being seeded from the
/// clock, larger than any an earlier process used. Versions only tell shapes apart (a sink
/// reconciles its table when the version changes), so a source that rebuilds its shapes after a
/// restart must not reuse one.
pub fn next_version() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_micros() as u64);
    let _ = NEXT.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(t: DataType) -> ColumnSchema {
        ColumnSchema::new("c", t, "")
    }

    fn with(t: DataType, p: Option<u32>, s: Option<u32>, l: Option<u32>) -> ColumnSchema {
        ColumnSchema { precision: p, scale: s, length: l, ..col(t) }
    }

    #[test]
    fn widening_keeps_every_value() {
        use DataType::*;
        assert!(col(Int32).widens_to(&col(Int64)));
        assert!(!col(Int64).widens_to(&col(Int32)));
        assert!(col(UInt32).widens_to(&col(Int64)));
        assert!(!col(UInt32).widens_to(&col(Int32)), "u32 does not fit i32");
        assert!(!col(Int8).widens_to(&col(UInt16)), "negative values");
        assert!(col(Int32).widens_to(&col(Float64)));
        assert!(!col(Int64).widens_to(&col(Float64)), "doubles lose 64-bit integers");
        assert!(col(Float32).widens_to(&col(Float64)));
        assert!(col(Int32).widens_to(&with(Decimal, Some(12), Some(2), None)));
        assert!(!col(Int32).widens_to(&with(Decimal, Some(10), Some(2), None)));
        assert!(with(Decimal, Some(10), Some(2), None).widens_to(&with(Decimal, Some(12), Some(3), None)));
        assert!(!with(Decimal, Some(10), Some(2), None).widens_to(&with(Decimal, Some(10), Some(3), None)));
        assert!(with(Text, None, None, Some(10)).widens_to(&with(Text, None, None, Some(20))));
        assert!(with(Text, None, None, Some(10)).widens_to(&col(Text)));
        assert!(!col(Text).widens_to(&with(Text, None, None, Some(10))));
        assert!(with(Timestamp, Some(0), None, None).widens_to(&with(Timestamp, Some(6), None, None)));
        assert!(!with(Timestamp, Some(6), None, None).widens_to(&with(Timestamp, Some(3), None, None)));
        let e = |l: &[&str]| col(Enum { labels: l.iter().map(|s| s.to_string()).collect() });
        assert!(e(&["a", "b"]).widens_to(&e(&["a", "b", "c"])));
        assert!(!e(&["a", "b"]).widens_to(&e(&["a"])));
        assert!(e(&["small", "large"]).widens_to(&col(Text)));
        assert!(!col(Text).widens_to(&col(Int64)));
        assert!(!col(Int64).widens_to(&col(Text)), "not a widening: the type family changes");
        assert!(col(Int64).same_type(&col(Int64)) && !col(Int64).same_type(&col(Int32)));
    }
}
