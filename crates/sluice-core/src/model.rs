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

/// One value of a row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// SQL NULL
    Null,
    /// The source did not send this value because it did not change (an unchanged TOASTed
    /// column in PostgreSQL). A sink must keep the value it already holds.
    Unchanged,
    /// The value in its source's canonical text form; see [`DataType`].
    Text(String),
}

impl Value {
    /// The text form, or `None` for NULL and unchanged values.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// Values in the column order of the row's [`TableSchema`].
pub type Row = Vec<Value>;

/// Shared handle to a schema; changes point at the schema they were captured under.
pub type SchemaRef = Arc<TableSchema>;
