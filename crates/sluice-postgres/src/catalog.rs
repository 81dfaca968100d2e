//! Catalog queries shared by the source, the preflight checks and the sink: which tables are
//! selected, their columns and keys, and how each column type maps to a [`DataType`].

use std::collections::HashMap;
use std::sync::Arc;

use sluice_config::PgSourceConfig;
use sluice_core::{ColumnSchema, DataType, TableId, TableSchema};
use tokio_postgres::Client;

use crate::error::{Ctx, PgError};
use crate::ident::quote_ident;

/// A selected source table.
#[derive(Debug, Clone)]
pub struct SourceTable {
    /// Relation OID
    pub oid: u32,
    /// Name
    pub id: TableId,
    /// `d`, `n`, `f` or `i`
    pub replica_identity: char,
    /// Planner's row estimate, for progress bars
    pub estimated_rows: i64,
}

/// Tables matching the source's `tables`/`exclude` globs, sorted by name.
pub async fn selected_tables(client: &Client, cfg: &PgSourceConfig) -> Result<Vec<SourceTable>, PgError> {
    let rows = client
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text, c.relreplident::text, \
                    GREATEST(c.reltuples, 0)::bigint \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
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
        .filter(|r| cfg.selects(r.get(1), r.get(2)))
        .map(|r| SourceTable {
            oid: r.get(0),
            id: TableId::new(r.get::<_, String>(1), r.get::<_, String>(2)),
            replica_identity: r.get::<_, String>(3).chars().next().unwrap_or('d'),
            estimated_rows: r.get(4),
        })
        .collect())
}

/// Key columns of a table: the primary key, else the replica identity index. Empty when the
/// table has neither.
pub async fn key_columns(client: &Client, oid: u32) -> Result<Vec<String>, PgError> {
    let rows = client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND (i.indisprimary OR i.indisreplident) \
             ORDER BY i.indisprimary DESC, i.indexrelid, k.ord",
            &[&oid],
        )
        .await
        .ctx("read key columns")?;
    // Rows of the primary key come first; keep only the first index's columns.
    let mut out: Vec<String> = Vec::new();
    for r in rows {
        let name: String = r.get(0);
        if out.contains(&name) {
            break;
        }
        out.push(name);
    }
    Ok(out)
}

/// Resolves type OIDs to Sluice data types and to the spelling a PostgreSQL sink should use.
#[derive(Default)]
pub struct TypeCache {
    cache: HashMap<(u32, i32), (DataType, String)>,
}

fn builtin(oid: u32) -> Option<DataType> {
    Some(match oid {
        16 => DataType::Bool,
        17 => DataType::Bytes,
        20 => DataType::Int64,
        21 => DataType::Int16,
        23 => DataType::Int32,
        18 | 19 | 25 | 1042 | 1043 => DataType::Text,
        114 => DataType::Json,
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
        3802 => DataType::Jsonb,
        _ => return None,
    })
}

impl TypeCache {
    /// The data type and sink spelling of `oid` with modifier `typmod`.
    pub async fn resolve(&mut self, client: &Client, oid: u32, typmod: i32) -> Result<(DataType, String), PgError> {
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
        let resolved = match row {
            // A type dropped since the change was written: keep its text.
            None => (DataType::Other, "text".to_string()),
            Some(r) => {
                let typtype: String = r.get(0);
                let category: String = r.get(1);
                let nsp: String = r.get(3);
                let formatted: String = r.get(5);
                if category == "A" {
                    let elem: u32 = r.get(2);
                    let elem_nsp: Option<String> = r.get(7);
                    let elem_type: Option<String> = r.get(6);
                    let (elem_dt, elem_native) = self.element(client, elem).await?;
                    if elem_type.as_deref() == Some("e") {
                        (DataType::Array(Box::new(elem_dt)), format!("{elem_native}[]"))
                    } else if elem_nsp.as_deref() == Some("pg_catalog") {
                        (DataType::Array(Box::new(elem_dt)), formatted)
                    } else {
                        (DataType::Other, "text".to_string())
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
                    (DataType::Enum { labels }, format!("{}.{}", quote_ident(&nsp), quote_ident(&name)))
                } else if let Some(dt) = builtin(oid) {
                    (dt, formatted)
                } else if nsp == "pg_catalog" {
                    (DataType::Other, formatted)
                } else {
                    // Domains, composites and extension types may not exist on a sink.
                    (DataType::Other, "text".to_string())
                }
            }
        };
        self.cache.insert((oid, typmod), resolved.clone());
        Ok(resolved)
    }

    async fn element(&mut self, client: &Client, elem: u32) -> Result<(DataType, String), PgError> {
        Box::pin(self.resolve(client, elem, -1)).await
    }

    /// Builds the schema of `id` from `(name, type oid, typmod)` columns and its key.
    pub async fn schema(
        &mut self,
        client: &Client,
        id: TableId,
        columns: &[(String, u32, i32)],
        key: &[String],
        version: u64,
        missing: &[(String, String)],
    ) -> Result<Arc<TableSchema>, PgError> {
        let mut cols = Vec::with_capacity(columns.len());
        for (name, oid, typmod) in columns {
            let (data_type, native_type) = self.resolve(client, *oid, *typmod).await?;
            let missing_value = missing.iter().find(|(n, _)| n == name).and_then(|(_, v)| single_element(v));
            cols.push(ColumnSchema {
                name: name.clone(),
                data_type,
                native_type,
                key: key.contains(name),
                missing_value,
            });
        }
        Ok(Arc::new(TableSchema { id, columns: cols, version }))
    }
}

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

/// Current columns of a table as `(name, type oid, typmod)`.
pub async fn table_columns(client: &Client, oid: u32) -> Result<Vec<(String, u32, i32)>, PgError> {
    Ok(client
        .query(
            "SELECT attname::text, atttypid, atttypmod FROM pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&oid],
        )
        .await
        .ctx("read table columns")?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Connects a normal (non-replication) client with fixed output formats, driving the
/// connection on a background task.
pub async fn connect(url: &str, what: &str) -> Result<Client, PgError> {
    let mut cfg: tokio_postgres::Config =
        url.parse().map_err(|e| PgError::Setup(format!("{what}: invalid connection URL: {e}")))?;
    cfg.options("-c datestyle=ISO -c intervalstyle=postgres -c timezone=UTC -c extra_float_digits=1");
    if cfg.get_application_name().is_none() {
        cfg.application_name("sluice");
    }
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.ctx(format!("connect to {what}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection closed");
        }
    });
    Ok(client)
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
