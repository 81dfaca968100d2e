//! Tables created from the source's shape, and changed as it changes, under the sink's
//! `schema_changes` policy.
//!
//! A replica table has the source's columns (key columns `NOT NULL`, the others nullable, so a
//! column the source dropped can stay) and its primary key. When a new shape arrives:
//! - a column the target lacks is added (`freeze`: quarantine);
//! - a column whose type changed is widened when the new type holds every old value
//!   (`ALTER COLUMN .. SET DATA TYPE`), else the table goes to quarantine;
//! - a column that left the source is dropped under `follow` if this run saw it on the source
//!   (a replica's own columns are never touched), kept otherwise;
//! - under `follow`, a column that left and one that arrived at the same position with the same
//!   type are a rename.
//!
//! A typed change log follows added columns the same way; the Snowflake-shaped log has no
//! per-table shape.

use sluice_config::SchemaChanges;
use sluice_core::{ColumnSchema, TableSchema};
use tracing::info;

use crate::config::{ChangelogFormat, DuckDbSinkConfig};
use crate::db::{Ctx, Db, DbError};
use crate::sink::log_columns;
use crate::types::{column_type, qualified, quote, same_type};

/// Creates or changes the table of `schema`; `Some(reason)` when the policy (or data safety)
/// forbids the change, which puts the table in quarantine. `seen` is the shape this run last
/// applied to the table.
pub fn reconcile(
    db: &mut Db,
    cfg: &DuckDbSinkConfig,
    schema: &TableSchema,
    seen: Option<&TableSchema>,
    in_tx: bool,
) -> Result<Option<String>, DbError> {
    let _ = in_tx;
    let catalog = db.catalog()?;
    let name = qualified(&catalog, &schema.id.schema, &schema.id.name);
    let replica = !cfg.changelog();
    if replica && schema.key_indexes().is_empty() {
        return Ok(Some(format!(
            "table {} has no primary key (nor a unique key the source logs rows by); a DuckDB replica applies \
             changes by key: add one on the source, then release the table (sluice tables --release {}), or use \
             mode = \"changelog\"",
            schema.id, schema.id
        )));
    }
    let columns: Vec<ColumnSchema> =
        if replica { schema.columns.clone() } else { log_columns(schema, cfg.changelog_format) };
    let existing = target_columns(db, &catalog, &schema.id.schema, &schema.id.name)?;
    if existing.is_empty() {
        let mut defs: Vec<String> = columns
            .iter()
            .map(|c| {
                format!("{} {}{}", quote(&c.name), column_type(c), if replica && c.key { " NOT NULL" } else { "" })
            })
            .collect();
        if replica {
            let keys: Vec<String> = columns.iter().filter(|c| c.key).map(|c| quote(&c.name)).collect();
            defs.push(format!("PRIMARY KEY ({})", keys.join(", ")));
        }
        db.execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {}.{}; CREATE TABLE IF NOT EXISTS {name} ({})",
            quote(&catalog),
            quote(&schema.id.schema),
            defs.join(", ")
        ))?;
        info!(table = %schema.id, target = %name, "created table");
        return Ok(None);
    }
    if cfg.changelog() && cfg.changelog_format == ChangelogFormat::Snowflake {
        return Ok(None);
    }
    let policy = cfg.schema_changes;
    let mut ddl: Vec<String> = Vec::new();
    let seen_names: Vec<&str> = seen.map(|s| s.columns.iter().map(|c| c.name.as_str()).collect()).unwrap_or_default();
    let gone: Vec<&(String, String)> = existing
        .iter()
        .filter(|(n, _)| !columns.iter().any(|c| &c.name == n) && seen_names.contains(&n.as_str()))
        .collect();
    for (pos, c) in columns.iter().enumerate() {
        let wanted = column_type(c);
        match existing.iter().find(|(n, _)| *n == c.name) {
            Some((_, have)) if same_type(have, &wanted) => {}
            Some((_, have)) => {
                if policy == SchemaChanges::Freeze {
                    return Ok(Some(format!(
                        "column {} of {} changed type from {have} to {wanted}, and schema_changes = \"freeze\"",
                        c.name, schema.id
                    )));
                }
                if !widens(have, &wanted) {
                    return Ok(Some(format!(
                        "column {} of {} changed type from {have} to {wanted}, which DuckDB cannot hold without \
                         losing data; widen it on the source or rebuild the table, then release it",
                        c.name, schema.id
                    )));
                }
                ddl.push(format!("ALTER TABLE {name} ALTER COLUMN {} SET DATA TYPE {wanted}", quote(&c.name)));
            }
            None => {
                if policy == SchemaChanges::Freeze {
                    return Ok(Some(format!(
                        "column {} was added to {} on the source, and schema_changes = \"freeze\"",
                        c.name, schema.id
                    )));
                }
                // Under `follow`, a column that left at this position with this type was renamed.
                let renamed = (policy == SchemaChanges::Follow)
                    .then(|| {
                        seen.and_then(|s| s.columns.get(pos)).filter(|old| {
                            old.name != c.name && gone.iter().any(|(n, t)| *n == old.name && same_type(t, &wanted))
                        })
                    })
                    .flatten();
                match renamed {
                    Some(old) => {
                        ddl.push(format!("ALTER TABLE {name} RENAME COLUMN {} TO {}", quote(&old.name), quote(&c.name)))
                    }
                    None => {
                        ddl.push(format!("ALTER TABLE {name} ADD COLUMN {} {wanted}", quote(&c.name)));
                        if let Some(v) = &c.missing_value {
                            // Rows written before the column existed read as its default.
                            let text = match sluice_core::json::value_json(v) {
                                serde_json::Value::String(s) => s,
                                other => other.to_string(),
                            };
                            ddl.push(format!(
                                "UPDATE {name} SET {} = CAST('{}' AS {wanted})",
                                quote(&c.name),
                                text.replace('\'', "''")
                            ));
                        }
                    }
                }
            }
        }
    }
    if policy == SchemaChanges::Follow {
        let renamed: Vec<String> = ddl
            .iter()
            .filter_map(|d| d.split(" RENAME COLUMN ").nth(1).and_then(|r| r.split(" TO ").next()).map(str::to_string))
            .collect();
        for (n, _) in &gone {
            if !renamed.contains(&quote(n)) {
                ddl.push(format!("ALTER TABLE {name} DROP COLUMN {}", quote(n)));
            }
        }
    }
    for sql in &ddl {
        db.execute(sql)?;
        info!(table = %schema.id, statement = %sql, "table shape changed");
    }
    Ok(None)
}

/// The table's columns and their DuckDB types, in order; empty when there is no such table.
fn target_columns(db: &mut Db, catalog: &str, schema: &str, table: &str) -> Result<Vec<(String, String)>, DbError> {
    let conn = db.conn()?;
    let mut stmt = conn
        .prepare(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_catalog = ? AND table_schema = ? \
             AND table_name = ? ORDER BY ordinal_position",
        )
        .ctx("read a table's columns")?;
    let rows = stmt
        .query_map(duckdb::params![catalog, schema, table], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .ctx("read a table's columns")?;
    rows.collect::<Result<Vec<_>, _>>().ctx("read a table's columns")
}

/// Whether DuckDB type `from` widens to `to`: every value of `from` is a value of `to`.
pub fn widens(from: &str, to: &str) -> bool {
    let f = from.to_ascii_uppercase();
    let t = to.to_ascii_uppercase();
    if t == "VARCHAR" {
        return true;
    }
    let signed = ["TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"];
    let unsigned = ["UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"];
    let rank = |list: &[&str], x: &str| list.iter().position(|y| *y == x);
    if let (Some(a), Some(b)) = (rank(&signed, &f), rank(&signed, &t)) {
        return a < b;
    }
    if let (Some(a), Some(b)) = (rank(&unsigned, &f), rank(&unsigned, &t)) {
        return a < b;
    }
    if let (Some(a), Some(b)) = (rank(&unsigned, &f), rank(&signed, &t)) {
        return a < b;
    }
    if f == "FLOAT" && t == "DOUBLE" {
        return true;
    }
    let dec = |s: &str| -> Option<(u32, u32)> {
        let inner = s.strip_prefix("DECIMAL(")?.strip_suffix(')')?;
        let (p, sc) = inner.split_once(',')?;
        Some((p.trim().parse().ok()?, sc.trim().parse().ok()?))
    };
    if let (Some((p1, s1)), Some((p2, s2))) = (dec(&f), dec(&t)) {
        return s2 >= s1 && p2 - s2 >= p1 - s1;
    }
    if let (Some(a), Some((p, s))) = (rank(&signed, &f), dec(&t)) {
        let digits = [3, 5, 10, 19, 39][a];
        return p - s >= digits;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::widens;

    #[test]
    fn widenings_hold_every_old_value() {
        assert!(widens("INTEGER", "BIGINT") && widens("UINTEGER", "BIGINT") && widens("FLOAT", "DOUBLE"));
        assert!(widens("DECIMAL(10,2)", "DECIMAL(12,4)") && widens("SMALLINT", "DECIMAL(7,2)"));
        assert!(widens("DATE", "VARCHAR"));
        assert!(
            !widens("BIGINT", "INTEGER") && !widens("DECIMAL(10,2)", "DECIMAL(10,3)") && !widens("DOUBLE", "FLOAT")
        );
        assert!(!widens("UBIGINT", "BIGINT") && !widens("TIMESTAMP", "DATE"));
    }
}
