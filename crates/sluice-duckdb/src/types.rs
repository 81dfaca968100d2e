//! DuckDB types for logical types (the DuckDB column of `docs/types.md`), and the types of the
//! staging tables that take Arrow batches as they are.

use arrow_schema::{DataType as A, TimeUnit};
use sluice_arrow::MAX_DECIMAL_PRECISION;
use sluice_core::{ColumnSchema, DataType};

/// `"name"`, with embedded quotes doubled.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"catalog"."schema"."table"`. Always with the catalog: DuckDB names a file's catalog after
/// the file (`sluice.duckdb` is `sluice`), and a schema of that name would make two-part names
/// ambiguous.
pub fn qualified(catalog: &str, schema: &str, table: &str) -> String {
    format!("{}.{}.{}", quote(catalog), quote(schema), quote(table))
}

/// The DuckDB type of a replica column.
pub fn column_type(c: &ColumnSchema) -> String {
    logical(&c.data_type, c.precision, c.scale)
}

fn logical(t: &DataType, precision: Option<u32>, scale: Option<u32>) -> String {
    match t {
        DataType::Bool => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INTEGER".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 => "UTINYINT".into(),
        DataType::UInt16 => "USMALLINT".into(),
        DataType::UInt32 => "UINTEGER".into(),
        DataType::UInt64 => "UBIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal => match (precision, scale) {
            (Some(p), s) if (1..=MAX_DECIMAL_PRECISION).contains(&p) && s.unwrap_or(0) <= p => {
                format!("DECIMAL({p},{})", s.unwrap_or(0))
            }
            // Wider than DuckDB's 38 digits, or of open precision: exact as text.
            _ => "VARCHAR".into(),
        },
        DataType::Text | DataType::Enum { .. } | DataType::Other => "VARCHAR".into(),
        DataType::Bytes => "BLOB".into(),
        DataType::Date => "DATE".into(),
        DataType::Time => "TIME".into(),
        DataType::TimeTz => "TIMETZ".into(),
        DataType::Timestamp => "TIMESTAMP".into(),
        DataType::TimestampTz => "TIMESTAMPTZ".into(),
        DataType::Interval => "INTERVAL".into(),
        DataType::Uuid => "UUID".into(),
        DataType::Json => "JSON".into(),
        DataType::List(inner) => format!("{}[]", logical(inner, None, None)),
    }
}

/// The DuckDB type an Arrow column appends into unchanged.
pub fn staging_type(t: &A) -> String {
    match t {
        A::Boolean => "BOOLEAN".into(),
        A::Int8 => "TINYINT".into(),
        A::Int16 => "SMALLINT".into(),
        A::Int32 => "INTEGER".into(),
        A::Int64 => "BIGINT".into(),
        A::UInt8 => "UTINYINT".into(),
        A::UInt16 => "USMALLINT".into(),
        A::UInt32 => "UINTEGER".into(),
        A::UInt64 => "UBIGINT".into(),
        A::Float32 => "FLOAT".into(),
        A::Float64 => "DOUBLE".into(),
        A::Decimal128(p, s) => format!("DECIMAL({p},{s})"),
        A::Binary => "BLOB".into(),
        A::Date32 => "DATE".into(),
        A::Time64(_) => "TIME".into(),
        A::Timestamp(TimeUnit::Microsecond, Some(_)) => "TIMESTAMPTZ".into(),
        A::Timestamp(..) => "TIMESTAMP".into(),
        A::Interval(_) => "INTERVAL".into(),
        A::List(f) => format!("{}[]", staging_type(f.data_type())),
        _ => "VARCHAR".into(),
    }
}

/// Whether a target column of DuckDB type `current` can take the values of `wanted` without
/// loss (the widenings `ALTER COLUMN .. SET DATA TYPE` may apply).
pub fn same_type(current: &str, wanted: &str) -> bool {
    normalize(current) == normalize(wanted)
}

/// DuckDB's spelling of a type in `information_schema`, made comparable with ours.
fn normalize(t: &str) -> String {
    let t = t.trim().to_ascii_uppercase();
    match t.as_str() {
        "INT" | "INT4" | "SIGNED" => "INTEGER".into(),
        "INT8" | "LONG" => "BIGINT".into(),
        "INT2" | "SHORT" => "SMALLINT".into(),
        "INT1" => "TINYINT".into(),
        "REAL" | "FLOAT4" => "FLOAT".into(),
        "FLOAT8" => "DOUBLE".into(),
        "TIMESTAMP WITH TIME ZONE" => "TIMESTAMPTZ".into(),
        "TIME WITH TIME ZONE" => "TIMETZ".into(),
        "BYTEA" | "BINARY" | "VARBINARY" => "BLOB".into(),
        "TEXT" | "STRING" => "VARCHAR".into(),
        "BOOL" => "BOOLEAN".into(),
        _ => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_names() {
        let mut d = ColumnSchema::new("d", DataType::Decimal, "numeric(12,2)");
        d.precision = Some(12);
        d.scale = Some(2);
        assert_eq!(column_type(&d), "DECIMAL(12,2)");
        d.precision = Some(60);
        assert_eq!(column_type(&d), "VARCHAR");
        let l = ColumnSchema::new("l", DataType::List(Box::new(DataType::TimestampTz)), "x");
        assert_eq!(column_type(&l), "TIMESTAMPTZ[]");
        assert_eq!(qualified("w", "public", "a\"b"), "\"w\".\"public\".\"a\"\"b\"");
        assert!(same_type("INTEGER", "integer") && same_type("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"));
        assert!(!same_type("INTEGER", "BIGINT"));
    }
}
