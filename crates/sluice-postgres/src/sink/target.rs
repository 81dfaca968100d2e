//! Target tables: created with the source's columns and key, widened when the source adds
//! columns, and described for statement building (each column's type and codec).

use std::collections::HashMap;

use sluice_core::{ColumnSchema, DataType, TableId, TableSchema};
use tokio_postgres::Client;
use tracing::info;

use crate::catalog::{self, TypeCache, DIALECT};
use crate::codec::{self, PgType};
use crate::config::{SchemaChanges, SinkMode};
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
    /// Whether it has a unique index or an exclusion constraint besides the primary key (a
    /// batch's rows are then applied in the order they arrived, not in key order).
    pub other_unique: bool,
    /// The source columns it was last reconciled with: only these can be dropped or renamed
    /// when the source drops or renames them.
    pub source_columns: Vec<String>,
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
async fn target_columns(client: &Client, qualified_name: &str) -> Result<Vec<Existing>, PgError> {
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
    Ok(indexes(client, qualified_name).await?.0)
}

/// Whether the table has a primary key, and whether it has a unique index or an exclusion
/// constraint besides it.
async fn indexes(client: &Client, qualified_name: &str) -> Result<(bool, bool), PgError> {
    let row = client
        .query_one(
            "SELECT coalesce(bool_or(indisprimary), false), \
                    coalesce(bool_or((indisunique OR indisexclusion) AND NOT indisprimary), false) \
             FROM pg_index WHERE indrelid = to_regclass($1)",
            &[&qualified_name],
        )
        .await
        .ctx(format!("look up the indexes of {qualified_name}"))?;
    Ok((row.get(0), row.get(1)))
}

/// Creates or widens the table `tid` for rows of `schema`, inside the caller's transaction.
/// A replica table created here gets no primary key when `defer_key` (it is added after a bulk
/// load, see [`add_key`]).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn reconcile(
    client: &Client,
    url: &str,
    types: &mut TypeCache,
    tid: &TableId,
    schema: &TableSchema,
    mode: SinkMode,
    policy: SchemaChanges,
    previous: &[String],
    defer_key: bool,
) -> Result<Target, PgError> {
    let name = qualified(tid);
    // Processes of one pipeline sharing this target (a Kafka source's consumer group) may meet
    // a new table or shape at once: one changes it, the others then see the result.
    client
        .execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&format!("sluice table {name}")])
        .await
        .ctx(format!("lock {tid} for a change of its shape"))?;
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
        return Ok(Target {
            version: schema.version,
            name,
            columns: HashMap::new(),
            has_key: true,
            other_unique: false,
            source_columns: Vec::new(),
        });
    }
    // Everything is decided before anything changes: a change the target cannot follow leaves
    // the transaction untouched and only this table goes to quarantine.
    let plan = if existing.is_empty() {
        Vec::new()
    } else {
        plan_changes(client, tid, schema, &existing, previous, policy).await?
    };
    for c in &schema.columns {
        if schema.dialect == DIALECT {
            ensure_enum(client, url, &c.data_type, &c.native_type).await?;
        }
    }
    for step in &plan {
        let sql = match step {
            Change::Rename { from, to } => {
                format!("ALTER TABLE {name} RENAME COLUMN {} TO {}", quote_ident(from), quote_ident(to))
            }
            Change::Widen { column, to } => {
                format!("ALTER TABLE {name} ALTER COLUMN {col} TYPE {to} USING {col}::{to}", col = quote_ident(column))
            }
            Change::Drop { column } => format!("ALTER TABLE {name} DROP COLUMN {}", quote_ident(column)),
            Change::KeepNullable { column } => {
                format!("ALTER TABLE {name} ALTER COLUMN {} DROP NOT NULL", quote_ident(column))
            }
        };
        client.batch_execute(&sql).await.ctx(format!("change the shape of {tid}: {sql}"))?;
        info!(table = %tid, change = %step, "replica follows a schema change");
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
        let keyless = schema.key_indexes().is_empty();
        let key = if defer_key || keyless { String::new() } else { format!(", PRIMARY KEY ({})", key_list(schema)) };
        client
            .batch_execute(&format!("CREATE TABLE {name} ({cols}{key})"))
            .await
            .ctx(format!("create replica table {tid}"))?;
        info!(table = %tid, "created replica table");
    } else {
        let renamed_to = |n: &str| plan.iter().any(|s| matches!(s, Change::Rename { to, .. } if to == n));
        for c in schema.columns.iter().filter(|c| !existing.iter().any(|e| e.0 == c.name) && !renamed_to(&c.name)) {
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
    let (has_key, other_unique) = indexes(client, &name).await?;
    let source_columns = schema.columns.iter().map(|c| c.name.clone()).collect();
    Ok(Target { version: schema.version, name, columns, has_key, other_unique, source_columns })
}

/// One change to a target table's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Rename {
        from: String,
        to: String,
    },
    Widen {
        column: String,
        to: String,
    },
    Drop {
        column: String,
    },
    /// A column the source dropped, kept on the target: NULL in rows written from now on.
    KeepNullable {
        column: String,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Rename { from, to } => write!(f, "column {from} renamed to {to}"),
            Change::Widen { column, to } => write!(f, "column {column} widened to {to}"),
            Change::Drop { column } => write!(f, "column {column} dropped"),
            Change::KeepNullable { column } => {
                write!(f, "column {column} dropped on the source, kept (NULL from now on)")
            }
        }
    }
}

/// A column of an existing target table: name, `format_type`, type OID, modifier, array OID.
type Existing = (String, String, u32, i32, u32);

/// What must change on an existing target table for rows of `schema`, besides added columns
/// (added by the caller), or why it cannot be done under `policy`.
async fn plan_changes(
    client: &Client,
    tid: &TableId,
    schema: &TableSchema,
    existing: &[Existing],
    previous: &[String],
    policy: SchemaChanges,
) -> Result<Vec<Change>, PgError> {
    let fix = |what: String| {
        PgError::Incompatible(format!(
            "{tid}: {what}; the replica table was not changed and the table is quarantined (its other changes are \
             skipped). Fix the target table by hand or drop it, then release the table with `sluice tables \
             PIPELINE.toml --release {tid}`: it is copied again at the next start"
        ))
    };
    // The type each source column needs, as the target itself resolves the spelling.
    let desired: Vec<String> = schema.columns.iter().map(|c| column_type(c, &schema.dialect)).collect();
    let probe = format!("SELECT {}", desired.iter().map(|t| format!("NULL::{t}")).collect::<Vec<_>>().join(", "));
    let resolved = client.prepare(&probe).await.ctx(format!("resolve the column types of {tid}"))?;
    let have = |n: &str| existing.iter().position(|e| e.0 == n);
    let mut plan = Vec::new();
    // Renames: a target column the source no longer has, and a source column the target lacks,
    // at the same position with the same type.
    for (i, e) in existing.iter().enumerate() {
        // A target column the source did not have in the shape last seen here is left alone:
        // the replica's own column, or one dropped while Sluice was stopped.
        if schema.columns.iter().any(|c| c.name == e.0) || !previous.contains(&e.0) {
            continue;
        }
        let candidate = schema.columns.get(i).filter(|c| have(&c.name).is_none());
        let same_type = candidate.is_some_and(|_| {
            let col = &resolved.columns()[i];
            col.type_().oid() == e.2 && col.type_modifier() == e.3
        });
        match (candidate, same_type, policy) {
            (Some(c), true, SchemaChanges::Follow) => {
                plan.push(Change::Rename { from: e.0.clone(), to: c.name.clone() });
            }
            (_, _, SchemaChanges::Freeze) => {
                return Err(fix(format!("column {} is gone from the source (schema_changes = \"freeze\")", e.0)))
            }
            (_, _, SchemaChanges::Follow) => plan.push(Change::Drop { column: e.0.clone() }),
            (_, _, SchemaChanges::AddOnly) => plan.push(Change::KeepNullable { column: e.0.clone() }),
        }
    }
    for (i, c) in schema.columns.iter().enumerate() {
        let Some(at) = have(&c.name) else {
            if policy == SchemaChanges::Freeze {
                return Err(fix(format!("column {} was added on the source (schema_changes = \"freeze\")", c.name)));
            }
            continue;
        };
        let e = &existing[at];
        let col = &resolved.columns()[i];
        let (to_oid, to_mod) = (col.type_().oid(), col.type_modifier());
        if (to_oid, to_mod) == (e.2, e.3) {
            continue;
        }
        let target_type = desired[i].clone();
        if policy == SchemaChanges::Freeze {
            return Err(fix(format!(
                "column {} changed type from {} to {target_type} (schema_changes = \"freeze\")",
                c.name, e.1
            )));
        }
        if !widens((e.2, e.3), (to_oid, to_mod)) {
            return Err(fix(format!(
                "column {} changed type from {} to {target_type}, which may not hold every value the replica has",
                c.name, e.1
            )));
        }
        plan.push(Change::Widen { column: c.name.clone(), to: target_type });
    }
    Ok(plan)
}

/// Whether every value of type `from` (OID, modifier) converts to type `to` without loss.
fn widens(from: (u32, i32), to: (u32, i32)) -> bool {
    const INT2: u32 = 21;
    const INT4: u32 = 23;
    const INT8: u32 = 20;
    const NUMERIC: u32 = 1700;
    const FLOAT4: u32 = 700;
    const FLOAT8: u32 = 701;
    const TEXT: u32 = 25;
    const VARCHAR: u32 = 1043;
    const BPCHAR: u32 = 1042;
    const TIMES: [u32; 5] = [1083, 1266, 1114, 1184, 1186];
    // numeric's modifier: ((precision << 16) | scale) + 4; -1 for unconstrained.
    let numeric = |m: i32| (m >= 4).then(|| (((m - 4) >> 16) & 0xffff, (m - 4) & 0xffff));
    let integer_digits = |oid: u32| match oid {
        INT2 => Some(5),
        INT4 => Some(10),
        INT8 => Some(19),
        _ => None,
    };
    let (f, fm) = from;
    let (t, tm) = to;
    if f == t {
        return match f {
            // Length + 4, or -1 for unlimited.
            VARCHAR | BPCHAR => tm == -1 || (fm != -1 && tm >= fm),
            NUMERIC => match (numeric(fm), numeric(tm)) {
                (_, None) => true,
                (None, Some(_)) => false,
                (Some((fp, fs)), Some((tp, ts))) => ts >= fs && tp - ts >= fp - fs,
            },
            // Fractional-second digits, -1 for the maximum.
            _ if TIMES.contains(&f) => tm == -1 || (fm != -1 && tm >= fm),
            _ => false,
        };
    }
    match (f, t) {
        (INT2, INT4) | (INT2, INT8) | (INT4, INT8) | (FLOAT4, FLOAT8) => true,
        (INT2 | INT4 | INT8, NUMERIC) => match numeric(tm) {
            None => true,
            Some((p, s)) => p - s >= integer_digits(f).unwrap_or(i32::MAX),
        },
        (INT2 | INT4, FLOAT8) => true,
        (VARCHAR | BPCHAR, TEXT) => true,
        (TEXT, VARCHAR) => tm == -1,
        _ => false,
    }
}

/// Gives a table created without a key (for a bulk load) the source's primary key.
pub(crate) async fn add_key(client: &Client, target: &mut Target, schema: &TableSchema) -> Result<(), PgError> {
    if target.has_key {
        return Ok(());
    }
    // A table without a key on the source (REPLICA IDENTITY FULL) gets none on the target.
    if !schema.key_indexes().is_empty() && !has_primary_key(client, &target.name).await? {
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
