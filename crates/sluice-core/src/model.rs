use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

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

/// The logical type of a column, independent of any one database's spelling.
///
/// Values of every type travel as [`Value::Text`] in their source's canonical text form (for
/// PostgreSQL: the type's output function, ISO dates, `\x` hex bytea), so nothing is lost in
/// transit; the data type says how a sink that needs native values should read that text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// true/false
    Bool,
    /// 16-bit integer
    Int16,
    /// 32-bit integer
    Int32,
    /// 64-bit integer
    Int64,
    /// IEEE single precision, including NaN and infinities
    Float32,
    /// IEEE double precision, including NaN and infinities
    Float64,
    /// Exact decimal of any precision, including NaN and infinities
    Decimal,
    /// Character data (text, varchar, char)
    Text,
    /// Raw bytes
    Bytes,
    /// Calendar date
    Date,
    /// Time of day without zone
    Time,
    /// Time of day with zone offset
    TimeTz,
    /// Timestamp without zone
    Timestamp,
    /// Timestamp with zone (an instant)
    TimestampTz,
    /// Interval (months, days, microseconds)
    Interval,
    /// UUID
    Uuid,
    /// JSON document kept as written
    Json,
    /// JSON document in normalised binary form (jsonb)
    Jsonb,
    /// Enumerated type with its labels in sort order
    Enum {
        /// Labels in declaration order
        labels: Vec<String>,
    },
    /// One-dimensional array of the element type
    Array(Box<DataType>),
    /// A type Sluice does not interpret; its text form passes through unchanged
    Other,
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSchema {
    /// Column name
    pub name: String,
    /// Logical type
    pub data_type: DataType,
    /// The source's own spelling of the type, e.g. `numeric(12,2)` or `public.mood[]`,
    /// for sinks of the same kind of database
    pub native_type: String,
    /// Whether the column is part of the primary key (or replica identity key)
    pub key: bool,
    /// For a column added with a constant default: the value rows written before the column
    /// existed read as, in text form. The source wrote no change for those rows, so a sink
    /// that adds the column must fill it with this value.
    #[serde(default)]
    pub missing_value: Option<String>,
}

/// The shape of a table at one point in the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSchema {
    /// Qualified name
    pub id: TableId,
    /// Columns in source order
    pub columns: Vec<ColumnSchema>,
    /// Increases every time the source reports a new shape for this table
    pub version: u64,
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
}

/// UTF-8 text that may share the network buffer it arrived in, so decoding a value costs no
/// allocation. Cloning is a reference-count increment.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Text(bytes::Bytes);

impl Text {
    /// Wraps received bytes; invalid UTF-8 (which a server sending UTF-8 never produces) is
    /// replaced rather than trusted.
    pub fn from_utf8_bytes(b: bytes::Bytes) -> Text {
        match std::str::from_utf8(&b) {
            Ok(_) => Text(b),
            Err(_) => Text(bytes::Bytes::from(String::from_utf8_lossy(&b).into_owned().into_bytes())),
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor guarantees valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The UTF-8 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text(bytes::Bytes::from(s.into_bytes()))
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text(bytes::Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Text::from)
    }
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// SQL NULL
    Null,
    /// The source did not send this value because it did not change (an unchanged TOASTed
    /// column in PostgreSQL). A sink must keep the value it already holds.
    Unchanged,
    /// The value in its source's canonical text form; see [`DataType`].
    Text(Text),
}

impl Value {
    /// The text form, or `None` for NULL and unchanged values.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s.as_str()),
            _ => None,
        }
    }
}

/// Values in the column order of the row's [`TableSchema`].
pub type Row = Vec<Value>;

/// Shared handle to a schema; changes point at the schema they were captured under.
pub type SchemaRef = Arc<TableSchema>;
