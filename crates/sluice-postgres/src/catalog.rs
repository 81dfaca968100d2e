//! Catalog queries shared by the source, the preflight checks and the sink: which tables are
//! selected, their columns and keys, and how each column type maps to a [`DataType`].

use std::collections::HashMap;
use std::sync::Arc;

use sluice_config::TableFilter;
use sluice_core::{ColumnSchema, DataType, SchemaRef, TableId, TableSchema};
use tokio_postgres::Client;

use crate::codec::{self, PgType};
use crate::error::{Ctx, PgError};
use crate::ident::{qualified, quote_ident};

/// A selected source table.
#[derive(Debug, Clone)]
pub struct SourceTable {
    /// Relation OID
    pub oid: u32,
    /// Name
    pub id: TableId,
    /// `d`, `n`, `f` or `i`
    pub replica_identity: char,
    /// Planner's row estimate, for progress bars (a partitioned table: its partitions' sum)
    pub estimated_rows: i64,
    /// A partitioned table's partitions, at every level (sorted OIDs); empty for other tables
    pub partitions: Vec<u32>,
    /// Whether the table is partitioned (replicated as one table, under its own name)
    pub partitioned: bool,
    /// The publication's row filter for the table (PostgreSQL 15+), which copies apply too
    pub row_filter: Option<String>,
    /// The publication's column list for the table (PostgreSQL 15+); `None`: every column
    pub columns: Option<Vec<String>>,
}

impl SourceTable {
    /// What the sinks' checkpoints record about the table's copy: its OID, and a partitioned
    /// table's partitions. When it differs from what a sink holds (the table was dropped and
    /// created again, or partitions were attached or detached), the table is copied again.
    pub fn identity(&self) -> String {
        if self.partitions.is_empty() {
            return self.oid.to_string();
        }
        let parts = self.partitions.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        format!("{}:{parts}", self.oid)
    }
}

/// `FROM` target reading a table's own rows: `ONLY` for plain tables (inheritance children are
/// selected on their own), the whole tree for a partitioned table (its parent holds no rows).
pub fn from_rows(id: &TableId, partitioned: bool) -> String {
    if partitioned {
        crate::ident::qualified(id)
    } else {
        format!("ONLY {}", crate::ident::qualified(id))
    }
}

/// Tables matching the source's `tables`/`exclude` globs, sorted by name.
pub async fn selected_tables(client: &Client, filter: &TableFilter) -> Result<Vec<SourceTable>, PgError> {
    let rows = client
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text, c.relreplident::text, \
                    CASE WHEN c.relkind = 'p' \
                         THEN (SELECT COALESCE(sum(GREATEST(pc.reltuples, 0)), 0) FROM pg_class pc WHERE pc.oid = ANY(parts.oids)) \
                         ELSE GREATEST(c.reltuples, 0) END::bigint, \
                    parts.oids, c.relkind = 'p' \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             CROSS JOIN LATERAL (SELECT CASE WHEN c.relkind <> 'p' THEN '{}'::oid[] ELSE ARRAY( \
                 WITH RECURSIVE tree(relid) AS ( \
                     SELECT inhrelid FROM pg_inherits WHERE inhparent = c.oid \
                     UNION ALL SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.relid) \
                 SELECT relid FROM tree ORDER BY 1) END AS oids) parts \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
             ORDER BY 2, 3",
            &[],
        )
        .await
        .ctx("list source tables")?;
    Ok(rows
        .iter()
        .filter(|r| filter.selects(r.get(1), r.get(2)))
        .map(|r| SourceTable {
            oid: r.get(0),
            id: TableId::new(r.get::<_, String>(1), r.get::<_, String>(2)),
            replica_identity: r.get::<_, String>(3).chars().next().unwrap_or('d'),
            estimated_rows: r.get(4),
            partitions: r.get(5),
            partitioned: r.get(6),
            row_filter: None,
            columns: None,
        })
        .collect())
}

/// Fills in the row filters and column lists publication `name` has for `tables`
/// (PostgreSQL 15+; older servers have neither).
pub async fn publication_filters(client: &Client, name: &str, tables: &mut [SourceTable]) -> Result<(), PgError> {
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .ctx("read server version")?
        .get(0);
    if version < 150_000 {
        return Ok(());
    }
    let rows = client
        .query(
            "SELECT pr.prrelid, pg_get_expr(pr.prqual, pr.prrelid), \
                    CASE WHEN pr.prattrs IS NULL THEN NULL ELSE ARRAY( \
                        SELECT a.attname::text FROM pg_attribute a \
                        WHERE a.attrelid = pr.prrelid AND a.attnum = ANY(pr.prattrs) ORDER BY a.attnum) END \
             FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid WHERE p.pubname = $1",
            &[&name],
        )
        .await
        .ctx(format!("read the row filters and column lists of publication {name}"))?;
    for t in tables.iter_mut() {
        let found = rows.iter().find(|r| r.get::<_, u32>(0) == t.oid);
        t.row_filter = found.and_then(|r| r.get(1));
        t.columns = found.and_then(|r| r.get(2));
    }
    Ok(())
}

/// How a table appears in `CREATE/ALTER PUBLICATION .. TABLE`: with its column list and row
/// filter, if it has them.
pub fn publication_entry(t: &SourceTable) -> String {
    let mut s = qualified(&t.id);
    if let Some(cols) = &t.columns {
        s.push_str(&format!(" ({})", cols.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ")));
    }
    if let Some(f) = &t.row_filter {
        s.push_str(&format!(" WHERE ({f})"));
    }
    s
}

/// The `WHERE` clause a copy of `t` reads with: the publication's row filter.
pub fn row_filter_clause(filter: Option<&str>) -> String {
    filter.map(|f| format!(" WHERE ({f})")).unwrap_or_default()
}

/// Key columns of a table: the columns its UPDATE and DELETE messages identify rows by. That is
/// the replica identity index when the table has one (`REPLICA IDENTITY USING INDEX`, which may
/// differ from the primary key), else the primary key. Empty when the table has neither (its
/// rows are then matched whole, which needs `REPLICA IDENTITY FULL`).
pub async fn key_columns(client: &Client, oid: u32) -> Result<Vec<String>, PgError> {
    let rows = client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indrelid \
             JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND CASE WHEN c.relreplident = 'i' THEN i.indisreplident ELSE i.indisprimary END \
             ORDER BY k.ord",
            &[&oid],
        )
        .await
        .ctx("read key columns")?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// What Sluice knows about one PostgreSQL column type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedType {
    /// The logical type
    pub data_type: DataType,
    /// How values are read and written
    pub pg: PgType,
    /// The spelling a PostgreSQL sink should use (`format_type` with modifiers; `text` for
    /// types a target may lack, such as domains and extension types)
    pub native: String,
    /// Decimal precision, or fractional-second digits of time types
    pub precision: Option<u32>,
    /// Decimal scale
    pub scale: Option<u32>,
    /// Declared length of varchar(n) and char(n)
    pub length: Option<u32>,
}

/// A column as a source or catalog reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgColumn {
    /// Name
    pub name: String,
    /// Type OID
    pub type_oid: u32,
    /// Type modifier (-1 for none)
    pub typmod: i32,
    /// Declared NOT NULL
    pub not_null: bool,
}

/// A table's schema together with the codec of each column.
#[derive(Debug, Clone)]
pub struct PgTable {
    /// The shape every sink sees
    pub schema: SchemaRef,
    /// How to decode each column, in column order
    pub types: Arc<Vec<PgType>>,
    /// A partitioned table: its rows are read from all its partitions
    pub partitioned: bool,
    /// The publication's row filter, applied by copies too
    pub row_filter: Option<String>,
}

/// Resolves type OIDs to Sluice data types and to the spelling a PostgreSQL sink should use.
#[derive(Default)]
pub struct TypeCache {
    cache: HashMap<(u32, i32), ResolvedType>,
}

fn builtin(oid: u32) -> Option<DataType> {
    Some(match oid {
        16 => DataType::Bool,
        17 => DataType::Bytes,
        20 => DataType::Int64,
        21 => DataType::Int16,
        23 => DataType::Int32,
        18 | 19 | 25 | 1042 | 1043 => DataType::Text,
        114 | 3802 => DataType::Json,
        700 => DataType::Float32,
        701 => DataType::Float64,
        1082 => DataType::Date,
        1083 => DataType::Time,
        1114 => DataType::Timestamp,
        1184 => DataType::TimestampTz,
        1186 => DataType::Interval,
        1266 => DataType::TimeTz,
        1700 => DataType::Decimal,
        2950 => DataType::Uuid,
        _ => return None,
    })
}

/// Precision, scale and length a type modifier encodes.
fn modifiers(oid: u32, typmod: i32) -> (Option<u32>, Option<u32>, Option<u32>) {
    const VARHDRSZ: i32 = 4;
    match oid {
        1700 if typmod >= VARHDRSZ => {
            let m = typmod - VARHDRSZ;
            let scale = (m & 0xffff) as i16;
            (Some(((m >> 16) & 0xffff) as u32), u32::try_from(scale).ok(), None)
        }
        1042 | 1043 if typmod >= VARHDRSZ => (None, None, Some((typmod - VARHDRSZ) as u32)),
        1083 | 1266 | 1114 | 1184 if typmod >= 0 => (Some(typmod as u32), None, None),
        1186 if typmod >= 0 && typmod & 0xffff != 0xffff => (Some((typmod & 0xffff) as u32), None, None),
        _ => (None, None, None),
    }
}

impl TypeCache {
    /// The type of `oid` with modifier `typmod`.
    pub async fn resolve(&mut self, client: &Client, oid: u32, typmod: i32) -> Result<ResolvedType, PgError> {
        if let Some(hit) = self.cache.get(&(oid, typmod)) {
            return Ok(hit.clone());
        }
        let row = client
            .query_opt(
                "SELECT t.typtype::text, t.typcategory::text, t.typelem, n.nspname::text, t.typname::text, \
                        format_type(t.oid, $2), e.typtype::text, en.nspname::text, e.typname::text \
                 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
                 LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A' \
                 LEFT JOIN pg_namespace en ON en.oid = e.typnamespace \
                 WHERE t.oid = $1",
                &[&oid, &typmod],
            )
            .await
            .ctx("resolve column type")?;
        let other = |native: String| ResolvedType {
            data_type: DataType::Other,
            pg: PgType::Other,
            native,
            precision: None,
            scale: None,
            length: None,
        };
        let resolved = match row {
            // A type dropped since the change was written: keep its text.
            None => other("text".to_string()),
            Some(r) => {
                let typtype: String = r.get(0);
                let category: String = r.get(1);
                let nsp: String = r.get(3);
                let formatted: String = r.get(5);
                if category == "A" {
                    let elem: u32 = r.get(2);
                    let elem_nsp: Option<String> = r.get(7);
                    let elem_type: Option<String> = r.get(6);
                    let e = Box::pin(self.resolve(client, elem, -1)).await?;
                    let list = |native: String| ResolvedType {
                        data_type: DataType::List(Box::new(e.data_type.clone())),
                        pg: PgType::Array { elem: Box::new(e.pg.clone()), elem_oid: elem },
                        native,
                        precision: None,
                        scale: None,
                        length: None,
                    };
                    if elem_type.as_deref() == Some("e") {
                        list(format!("{}[]", e.native))
                    } else if elem_nsp.as_deref() == Some("pg_catalog") && e.data_type != DataType::Other {
                        list(formatted)
                    } else if elem_nsp.as_deref() == Some("pg_catalog") {
                        other(formatted)
                    } else {
                        other("text".to_string())
                    }
                } else if typtype == "e" {
                    let labels = client
                        .query(
                            "SELECT enumlabel::text FROM pg_enum WHERE enumtypid = $1 ORDER BY enumsortorder",
                            &[&oid],
                        )
                        .await
                        .ctx("read enum labels")?
                        .iter()
                        .map(|r| r.get::<_, String>(0))
                        .collect();
                    let name: String = r.get(4);
                    ResolvedType {
                        data_type: DataType::Enum { labels },
                        pg: PgType::Enum,
                        native: format!("{}.{}", quote_ident(&nsp), quote_ident(&name)),
                        precision: None,
                        scale: None,
                        length: None,
                    }
                } else if let (Some(dt), Some(pg)) = (builtin(oid), PgType::from_builtin_oid(oid)) {
                    let (precision, scale, length) = modifiers(oid, typmod);
                    ResolvedType { data_type: dt, pg, native: formatted, precision, scale, length }
                } else if nsp == "pg_catalog" {
                    other(formatted)
                } else {
                    // Domains, composites and extension types may not exist on a sink.
                    other("text".to_string())
                }
            }
        };
        self.cache.insert((oid, typmod), resolved.clone());
        Ok(resolved)
    }

    /// Forgets resolved types (after a schema change, enum labels may have grown).
    pub fn clear(&mut self) {
        self.cache.clear();
    }

    /// Builds the schema of `id` from its columns and key.
    pub async fn table(
        &mut self,
        client: &Client,
        id: TableId,
        columns: &[PgColumn],
        key: &[String],
        version: u64,
        missing: &[(String, String)],
    ) -> Result<PgTable, PgError> {
        let mut cols = Vec::with_capacity(columns.len());
        let mut types = Vec::with_capacity(columns.len());
        for c in columns {
            let t = self.resolve(client, c.type_oid, c.typmod).await?;
            let missing_value = match missing.iter().find(|(n, _)| *n == c.name).and_then(|(_, v)| single_element(v)) {
                Some(text) => Some(
                    codec::decode_text(&t.pg, bytes::Bytes::from(text))
                        .map_err(|e| PgError::Protocol(format!("default of column {} of {id}: {e}", c.name)))?,
                ),
                None => None,
            };
            let is_key = key.contains(&c.name);
            cols.push(ColumnSchema {
                name: c.name.clone(),
                data_type: t.data_type,
                nullable: !c.not_null && !is_key,
                key: is_key,
                precision: t.precision,
                scale: t.scale,
                length: t.length,
                native_type: t.native,
                missing_value,
            });
            types.push(t.pg);
        }
        let schema = Arc::new(TableSchema { id, columns: cols, version, dialect: DIALECT.to_string() });
        Ok(PgTable { schema, types: Arc::new(types), partitioned: false, row_filter: None })
    }
}

pub use sluice_core::next_version;

/// The dialect name PostgreSQL schemas carry.
pub const DIALECT: &str = "postgres";

/// Columns with a stored "missing" value (added with a constant default), as
/// `(name, one-element array literal)`.
pub async fn missing_values(client: &Client, oid: u32) -> Result<Vec<(String, String)>, PgError> {
    Ok(client
        .query(
            "SELECT attname::text, attmissingval::text FROM pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND atthasmissing",
            &[&oid],
        )
        .await
        .ctx("read column defaults")?
        .iter()
        .filter_map(|r| Some((r.get(0), r.get::<_, Option<String>>(1)?)))
        .collect())
}

/// The element of a one-element array literal such as `{2.50}`, `{"a b"}` or `{{x,y}}`.
fn single_element(literal: &str) -> Option<String> {
    let inner = literal.strip_prefix('{')?.strip_suffix('}')?;
    if inner == "NULL" {
        return None;
    }
    match inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
        Some(quoted) => {
            let mut out = String::with_capacity(quoted.len());
            let mut chars = quoted.chars();
            while let Some(c) = chars.next() {
                out.push(if c == '\\' { chars.next().unwrap_or('\\') } else { c });
            }
            Some(out)
        }
        None => Some(inner.to_string()),
    }
}

/// Current columns of a table.
///
/// Generated columns are left out, as pgoutput leaves them out of the stream (before
/// PostgreSQL 18), and so is every column not in `only` (a publication's column list).
pub async fn table_columns(client: &Client, oid: u32, only: Option<&[String]>) -> Result<Vec<PgColumn>, PgError> {
    Ok(client
        .query(
            // attgenerated: PostgreSQL 12+, the oldest release still in use.
            "SELECT attname::text, atttypid, atttypmod, attnotnull FROM pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
            &[&oid],
        )
        .await
        .ctx("read table columns")?
        .iter()
        .map(|r| PgColumn { name: r.get(0), type_oid: r.get(1), typmod: r.get(2), not_null: r.get(3) })
        .filter(|c| only.is_none_or(|list| list.contains(&c.name)))
        .collect())
}

/// Names of the NOT NULL columns of a table.
pub async fn not_null_columns(client: &Client, oid: u32) -> Result<Vec<String>, PgError> {
    Ok(client
        .query(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attnotnull",
            &[&oid],
        )
        .await
        .ctx("read NOT NULL columns")?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Connects a normal (non-replication) client with fixed output formats, driving the
/// connection on a background task.
pub async fn connect(url: &str, what: &str) -> Result<Client, PgError> {
    let crate::tls::Target { mut config, tls } = crate::tls::target(url, what.split(' ').next().unwrap_or(what))?;
    config.options("-c datestyle=ISO -c intervalstyle=postgres -c timezone=UTC -c extra_float_digits=1");
    if config.get_application_name().is_none() {
        config.application_name("sluice");
    }
    let (client, conn) = config.connect(tls).await.map_err(|e| connect_failed(&config, what, e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection closed");
        }
    });
    Ok(client)
}

/// The error of a failed connection attempt: a TLS failure or a server that wants TLS is a
/// set-up problem with its fix spelled out; anything else keeps the driver's error.
fn connect_failed(config: &tokio_postgres::Config, what: &str, source: tokio_postgres::Error) -> PgError {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => String::new(),
    };
    if let Some(why) = crate::tls::explain(&source, &host) {
        return PgError::Setup(format!("connect to {what}: {why}"));
    }
    if let Some(db) = source.as_db_error() {
        if let Some(hint) = crate::tls::server_wants_tls(db.code().code(), db.message()) {
            return PgError::Setup(format!("connect to {what}: {}; {hint}", db.message()));
        }
    }
    PgError::Client { what: format!("connect to {what}"), source }
}

#[cfg(test)]
mod tests {
    #[test]
    fn single_element_unquotes_array_literals() {
        use super::single_element as e;
        assert_eq!(e("{2.50}").as_deref(), Some("2.50"));
        assert_eq!(e(r#"{"a \"b\" \\c"}"#).as_deref(), Some(r#"a "b" \c"#));
        assert_eq!(e("{{new,old}}").as_deref(), Some("{new,old}"));
        assert_eq!(e("{NULL}"), None);
        assert_eq!(e(r#"{"NULL"}"#).as_deref(), Some("NULL"));
    }
}
