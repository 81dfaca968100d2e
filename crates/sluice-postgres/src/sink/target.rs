//! Target tables: created with the source's columns and key, widened when the source adds
//! columns, and described for statement building (each column's type and codec).

use std::collections::HashMap;

use sluice_core::{ColumnSchema, DataType, TableId, TableSchema};
use tokio_postgres::Client;
use tracing::info;

use crate::catalog::{self, TypeCache, DIALECT};
use crate::codec::{self, PgType};
use crate::config::SinkMode;
use crate::error::{Ctx, PgError};
use crate::ident::{qualified, quote_ident, quote_literal};

/// One column of a target table.
#[derive(Debug, Clone)]
pub(crate) struct TargetColumn {
    /// The column's type as `format_type` prints it, for casts
    pub cast: String,
    /// How values are written into it
    pub codec: PgType,
    /// OID of the type's array type (0 if none), for binary array parameters
    pub array_oid: u32,
}

/// What a target table looks like.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Source schema version the target was last reconciled with.
    pub version: u64,
    /// Qualified target name.
    pub name: String,
    /// Columns by name.
    pub columns: HashMap<String, TargetColumn>,
    /// Whether the table has its primary key (tables created for a consistent snapshot get it
    /// after the load).
    pub has_key: bool,
}

impl Target {
    /// The type to cast a text parameter to for column `col`.
    pub fn cast<'a>(&'a self, col: &'a ColumnSchema) -> &'a str {
        self.columns.get(&col.name).map_or(col.native_type.as_str(), |c| c.cast.as_str())
    }

    /// The codec of column `col`.
    pub fn codec<'a>(&'a self, col: &ColumnSchema) -> &'a PgType {
        self.columns.get(&col.name).map_or(&PgType::Other, |c| &c.codec)
    }

    /// The OID of column `col`'s array type, 0 if unknown.
    pub fn array_oid(&self, col: &ColumnSchema) -> u32 {
        self.columns.get(&col.name).map_or(0, |c| c.array_oid)
    }

    /// The codecs of `schema`'s columns, in its order.
    pub fn codecs(&self, schema: &TableSchema) -> Vec<PgType> {
        schema.columns.iter().map(|c| self.codec(c).clone()).collect()
    }
}

/// The PostgreSQL type for a column: the source's own spelling when the source is PostgreSQL,
/// else the mapping of `docs/types.md`.
pub(crate) fn column_type(c: &ColumnSchema, dialect: &str) -> String {
    if dialect == DIALECT {
        return c.native_type.clone();
    }
    logical_type(&c.data_type, c)
}

fn logical_type(dt: &DataType, c: &ColumnSchema) -> String {
    let frac = |base: &str| match c.precision {
        Some(p) if p <= 6 => format!("{base}({p})"),
        _ => base.to_string(),
    };
    match dt {
        DataType::Bool => "boolean".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 => "bigint".into(),
        DataType::UInt64 => "numeric(20,0)".into(),
        DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal => match (c.precision, c.scale) {
            (Some(p), Some(s)) if (1..=1000).contains(&p) => format!("numeric({p},{s})"),
            _ => "numeric".into(),
        },
        DataType::Text => match c.length {
            Some(n) if n > 0 && n <= 10_485_760 => format!("varchar({n})"),
            _ => "text".into(),
        },
        DataType::Bytes => "bytea".into(),
        DataType::Date => "date".into(),
        DataType::Time => frac("time"),
        DataType::TimeTz => frac("timetz"),
        DataType::Timestamp => frac("timestamp"),
        DataType::TimestampTz => frac("timestamptz"),
        DataType::Interval => "interval".into(),
        DataType::Uuid => "uuid".into(),
        DataType::Json => "jsonb".into(),
        DataType::Enum { .. } | DataType::Other => "text".into(),
        DataType::List(inner) => format!("{}[]", logical_type(inner, c)),
    }
}

/// The key columns of `schema`, quoted and comma-separated.
pub(crate) fn key_list(schema: &TableSchema) -> String {
    schema.columns.iter().filter(|c| c.key).map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ")
}

/// Columns of a table: name, `format_type`, type OID, modifier and array type OID.
async fn target_columns(
    client: &Client,
    qualified_name: &str,
) -> Result<Vec<(String, String, u32, i32, u32)>, PgError> {
    Ok(client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.atttypid, a.atttypmod, t.typarray \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&qualified_name],
        )
        .await
        .ctx(format!("read columns of {qualified_name}"))?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect())
}

async fn has_primary_key(client: &Client, qualified_name: &str) -> Result<bool, PgError> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = to_regclass($1) AND indisprimary)",
            &[&qualified_name],
        )
        .await
        .ctx(format!("look up the primary key of {qualified_name}"))?
        .get(0))
}

/// Creates or widens the table `tid` for rows of `schema`, inside the caller's transaction.
/// A replica table created here gets no primary key when `defer_key` (it is added after a bulk
/// load, see [`add_key`]).
pub(crate) async fn reconcile(
    client: &Client,
    url: &str,
    types: &mut TypeCache,
    tid: &TableId,
    schema: &TableSchema,
    mode: SinkMode,
    defer_key: bool,
) -> Result<Target, PgError> {
    let name = qualified(tid);
    let existing = target_columns(client, &name).await?;
    if existing.is_empty() {
        client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(&tid.schema)))
            .await
            .ctx(format!("create schema {}", tid.schema))?;
    }
    if mode == SinkMode::Changelog {
        if existing.is_empty() {
            client
                .batch_execute(&format!(
                    "CREATE TABLE {name} (sluice_seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
                     op text NOT NULL, before jsonb, after jsonb, source_table text NOT NULL, \
                     lsn pg_lsn, xid bigint, commit_ts timestamptz)"
                ))
                .await
                .ctx(format!("create changelog table {tid}"))?;
            info!(table = %tid, "created changelog table");
        }
        return Ok(Target { version: schema.version, name, columns: HashMap::new(), has_key: true });
    }
    for c in &schema.columns {
        if schema.dialect == DIALECT {
            ensure_enum(client, url, &c.data_type, &c.native_type).await?;
        }
    }
    if existing.is_empty() {
        let cols = schema
            .columns
            .iter()
            .map(|c| {
                let t = column_type(c, &schema.dialect);
                format!("{} {t}{}", quote_ident(&c.name), if c.key { " NOT NULL" } else { "" })
            })
            .collect::<Vec<_>>()
            .join(", ");
        let key = if defer_key { String::new() } else { format!(", PRIMARY KEY ({})", key_list(schema)) };
        client
            .batch_execute(&format!("CREATE TABLE {name} ({cols}{key})"))
            .await
            .ctx(format!("create replica table {tid}"))?;
        info!(table = %tid, "created replica table");
    } else {
        for c in schema.columns.iter().filter(|c| !existing.iter().any(|e| e.0 == c.name)) {
            let col = quote_ident(&c.name);
            let t = column_type(c, &schema.dialect);
            // Rows that predate the column read as its default on the source without any
            // change being streamed; give the replica's rows the same value.
            let sql = match &c.missing_value {
                Some(v) => {
                    let mut buf = bytes::BytesMut::new();
                    codec::encode_text(&codec::natural_type(v), v, &mut buf)
                        .map_err(|e| PgError::Protocol(format!("default of column {} of {tid}: {e}", c.name)))?;
                    let literal = quote_literal(&String::from_utf8_lossy(&buf));
                    format!("ALTER TABLE {name} ADD COLUMN {col} {t} DEFAULT {literal}::{t}; ALTER TABLE {name} ALTER COLUMN {col} DROP DEFAULT")
                }
                None => format!("ALTER TABLE {name} ADD COLUMN {col} {t}"),
            };
            client.batch_execute(&sql).await.ctx(format!("add column {} to {tid}", c.name))?;
            info!(table = %tid, column = %c.name, "added column to replica");
        }
    }
    let mut columns = HashMap::new();
    for (col, cast, oid, typmod, array_oid) in target_columns(client, &name).await? {
        let codec = types.resolve(client, oid, typmod).await?.pg;
        columns.insert(col, TargetColumn { cast, codec, array_oid });
    }
    let has_key = has_primary_key(client, &name).await?;
    Ok(Target { version: schema.version, name, columns, has_key })
}

/// Gives a table created without a key (for a bulk load) the source's primary key.
pub(crate) async fn add_key(client: &Client, target: &mut Target, schema: &TableSchema) -> Result<(), PgError> {
    if target.has_key {
        return Ok(());
    }
    if !has_primary_key(client, &target.name).await? {
        let started = std::time::Instant::now();
        client
            .batch_execute(&format!("ALTER TABLE {} ADD PRIMARY KEY ({})", target.name, key_list(schema)))
            .await
            .ctx(format!("add the primary key to {}", target.name))?;
        info!(table = %target.name, secs = started.elapsed().as_secs_f64(), "added primary key after the bulk load");
    }
    target.has_key = true;
    Ok(())
}

/// Creates an enum type on the target when a column needs one that is missing, and adds labels
/// the source has gained.
async fn ensure_enum(client: &Client, url: &str, dt: &DataType, native: &str) -> Result<(), PgError> {
    let (labels, name) = match dt {
        DataType::Enum { labels } => (labels, native),
        DataType::List(inner) => match inner.as_ref() {
            DataType::Enum { labels } => (labels, native.trim_end_matches("[]")),
            _ => return Ok(()),
        },
        _ => return Ok(()),
    };
    let exists: Option<u32> =
        client.query_one("SELECT to_regtype($1)::oid", &[&name]).await.ctx("look up enum type")?.get(0);
    match exists {
        None => {
            let schema = name.split("\".\"").next().unwrap_or("").trim_start_matches('"').replace("\"\"", "\"");
            if !schema.is_empty() {
                client
                    .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(&schema)))
                    .await
                    .ctx("create schema")?;
            }
            let list = labels.iter().map(|l| quote_literal(l)).collect::<Vec<_>>().join(", ");
            client
                .batch_execute(&format!("CREATE TYPE {name} AS ENUM ({list})"))
                .await
                .ctx(format!("create enum {name}"))?;
        }
        Some(oid) => {
            let mut have: Vec<String> = client
                .query("SELECT enumlabel::text FROM pg_enum WHERE enumtypid = $1", &[&oid])
                .await
                .ctx("read enum labels")?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if labels.iter().all(|l| have.contains(l)) {
                return Ok(());
            }
            // A label added inside a transaction cannot be used before it commits: add it on a
            // connection of its own, unless the type itself is not committed yet (created by
            // this transaction), where it can be used at once.
            let side = catalog::connect(url, "sink (enum labels)").await?;
            let committed: Option<u32> =
                side.query_one("SELECT to_regtype($1)::oid", &[&name]).await.ctx("look up enum type")?.get(0);
            let on = if committed.is_some() { &side } else { client };
            for (i, l) in labels.iter().enumerate() {
                if have.contains(l) {
                    continue;
                }
                // Keep the source's order, so values sort alike on both sides.
                let place = match labels[i + 1..].iter().find(|n| have.contains(n)) {
                    Some(next) => format!(" BEFORE {}", quote_literal(next)),
                    None => match labels[..i].iter().rev().find(|p| have.contains(p)) {
                        Some(prev) => format!(" AFTER {}", quote_literal(prev)),
                        None => String::new(),
                    },
                };
                on.batch_execute(&format!("ALTER TYPE {name} ADD VALUE IF NOT EXISTS {}{place}", quote_literal(l)))
                    .await
                    .ctx(format!("add label {l} to enum {name}"))?;
                have.push(l.clone());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_from_other_databases_map_to_postgres_types() {
        let col = |dt: DataType| ColumnSchema::new("c", dt, "ignored");
        assert_eq!(column_type(&col(DataType::UInt64), "mysql"), "numeric(20,0)");
        assert_eq!(column_type(&col(DataType::UInt32), "mysql"), "bigint");
        assert_eq!(column_type(&col(DataType::List(Box::new(DataType::Int32))), "mysql"), "integer[]");
        let mut d = col(DataType::Decimal);
        d.precision = Some(12);
        d.scale = Some(2);
        assert_eq!(column_type(&d, "mysql"), "numeric(12,2)");
        let mut v = col(DataType::Text);
        v.length = Some(20);
        assert_eq!(column_type(&v, "mysql"), "varchar(20)");
        let mut ts = col(DataType::TimestampTz);
        ts.precision = Some(3);
        assert_eq!(column_type(&ts, "mysql"), "timestamptz(3)");
        assert_eq!(column_type(&col(DataType::Json), "mysql"), "jsonb");
        assert_eq!(column_type(&ColumnSchema::new("c", DataType::Int32, "int4"), DIALECT), "int4");
    }
}
