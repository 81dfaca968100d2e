//! Statements that apply a batch of net operations (see `sluice_core::collapse`) to a replica
//! table, set-based and with bound parameters:
//!
//! - deletes: `DELETE .. USING unnest($1::text[], ..)`;
//! - keys whose only change is an insert: `COPY .. FROM STDIN`;
//! - keys only updated: `UPDATE .. FROM unnest(..)`, then the upsert if some rows were missing;
//! - everything else: `INSERT .. SELECT .. FROM unnest(..) ON CONFLICT DO UPDATE`;
//! - rows whose update did not resend some values: `UPDATE` of the columns that were sent.
//!
//! Every column travels as one `text[]` parameter encoded straight from the typed rows, cast
//! to the target column's type by the server; nothing is spliced into the SQL.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use rustc_hash::FxHashMap;
use sluice_core::collapse::NetOp;
use sluice_core::{Key, Row, TableSchema, Value};
use tokio_postgres::types::{IsNull, ToSql, Type};
use tokio_postgres::{Client, Statement};
use tracing::debug;

use super::target::Target;
use crate::codec::{self, PgType};
use crate::copy;
use crate::error::{Ctx, PgError};
use crate::ident::quote_ident;

/// OID of `text`, the element type of every array parameter.
const TEXT_OID: u32 = 25;

/// One column of a batch as a `text[]` parameter, encoded from the rows when it is sent.
#[derive(Debug, Clone)]
pub struct Column {
    rows: Arc<Vec<Row>>,
    col: usize,
    codec: PgType,
}

impl ToSql for Column {
    fn to_sql(&self, _ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let has_null = self.rows.iter().any(|r| matches!(r[self.col], Value::Null | Value::Unchanged));
        out.put_i32(1);
        out.put_i32(i32::from(has_null));
        out.put_u32(TEXT_OID);
        out.put_i32(i32::try_from(self.rows.len())?);
        out.put_i32(1);
        for r in self.rows.iter() {
            match &r[self.col] {
                Value::Null | Value::Unchanged => out.put_i32(-1),
                v => {
                    let at = out.len();
                    out.put_i32(0);
                    codec::encode_text(&self.codec, v, out)?;
                    let len = i32::try_from(out.len() - at - 4)?;
                    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
                }
            }
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TEXT_ARRAY
    }

    tokio_postgres::types::to_sql_checked!();
}

/// One statement of a batch.
pub(crate) enum Step {
    /// A prepared statement with its parameters.
    Exec { st: Statement, params: Vec<Column>, what: String },
    /// An update; if it finds fewer than `rows` rows, the upsert with the same parameters.
    UpdateElseUpsert { update: Statement, upsert: Statement, params: Vec<Column>, rows: u64, what: String },
    /// `COPY .. FROM STDIN` with its rows in text format.
    Copy { sql: String, data: Bytes, what: String },
}

fn bind(params: &[Column]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|c| c as _).collect()
}

impl Step {
    /// Runs the statement; returns the rows it affected.
    pub async fn execute(&self, client: &Client) -> Result<u64, PgError> {
        match self {
            Step::Exec { st, params, what } => client.execute(st, &bind(params)).await.ctx(what.clone()),
            Step::UpdateElseUpsert { update, upsert, params, rows, what } => {
                let found = client.execute(update, &bind(params)).await.ctx(what.clone())?;
                if found == *rows {
                    return Ok(found);
                }
                debug!(what, found, rows, "rows missing on the target; upserting");
                client.execute(upsert, &bind(params)).await.ctx(what.clone())
            }
            Step::Copy { sql, data, what } => {
                let sink = client.copy_in::<_, Bytes>(sql.as_str()).await.ctx(what.clone())?;
                let mut sink = std::pin::pin!(sink);
                sink.send(data.clone()).await.ctx(what.clone())?;
                sink.as_mut().finish().await.ctx(what.clone())
            }
        }
    }
}

/// Prepares statements on one connection, caching them by text.
pub(crate) struct Planner<'a> {
    pub client: &'a Client,
    pub statements: &'a mut HashMap<String, Statement>,
}

/// `$1::text[], $2::text[], ..` for `n` parameters.
fn array_args(n: usize) -> String {
    (1..=n).map(|i| format!("${i}::text[]")).collect::<Vec<_>>().join(", ")
}

/// The rows as one parameter per column, each written with its column's codec.
pub fn columns(rows: &Arc<Vec<Row>>, codecs: &[PgType]) -> Vec<Column> {
    codecs.iter().enumerate().map(|(col, codec)| Column { rows: rows.clone(), col, codec: codec.clone() }).collect()
}

impl Planner<'_> {
    async fn statement(&mut self, sql: String, params: usize) -> Result<Statement, PgError> {
        if let Some(s) = self.statements.get(&sql) {
            return Ok(s.clone());
        }
        let types = vec![Type::TEXT_ARRAY; params];
        let head: String = sql.chars().take(60).collect();
        let st = self.client.prepare_typed(&sql, &types).await.ctx(format!("prepare {head}"))?;
        self.statements.insert(sql, st.clone());
        Ok(st)
    }

    /// The statements that apply `ops` (each key at most once) to `target`.
    pub async fn plan(&mut self, schema: &TableSchema, target: &Target, ops: &[NetOp]) -> Result<Vec<Step>, PgError> {
        let key_idx = schema.key_indexes();
        let mut deletes: Vec<Key> = Vec::new();
        let mut upserts: Vec<Row> = Vec::new();
        let mut inserts: Vec<Row> = Vec::new();
        let mut updates: Vec<Row> = Vec::new();
        let mut partial: FxHashMap<Vec<bool>, Vec<(Key, Row)>> = FxHashMap::default();
        for op in ops.iter().cloned() {
            match op {
                NetOp::Delete(k) => deletes.push(k),
                NetOp::Insert(r) if !r.contains(&Value::Unchanged) => inserts.push(r),
                NetOp::Insert(r) | NetOp::Upsert(r) | NetOp::Update(r) if r.contains(&Value::Unchanged) => {
                    let mask = r.iter().map(|v| *v != Value::Unchanged).collect();
                    let key = key_idx.iter().map(|&i| r[i].clone()).collect();
                    partial.entry(mask).or_default().push((key, r));
                }
                NetOp::Upsert(r) | NetOp::Insert(r) => upserts.push(r),
                NetOp::Update(r) => updates.push(r),
            }
        }
        let mut steps = Vec::new();
        if !deletes.is_empty() {
            steps.push(self.delete(schema, target, deletes).await?);
        }
        if !upserts.is_empty() {
            let st = self.upsert_statement(schema, target).await?;
            let params = columns(&Arc::new(upserts), &target.codecs(schema));
            steps.push(Step::Exec { st, params, what: format!("upsert into {}", schema.id) });
        }
        if !inserts.is_empty() {
            steps.push(self.copy(schema, target, &inserts)?);
        }
        if !updates.is_empty() {
            steps.push(self.update_else_upsert(schema, target, updates).await?);
        }
        for (_, rows) in partial {
            steps.extend(self.update(schema, target, rows, false).await?);
        }
        Ok(steps)
    }

    async fn delete(&mut self, schema: &TableSchema, target: &Target, keys: Vec<Key>) -> Result<Step, PgError> {
        let key_cols: Vec<_> = schema.columns.iter().filter(|c| c.key).collect();
        let alias = key_cols.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
        let cond = key_cols
            .iter()
            .map(|c| format!("t.{q} = u.{q}::{}", target.cast(c), q = quote_ident(&c.name)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let sql = format!(
            "DELETE FROM {} AS t USING unnest({}) AS u({alias}) WHERE {cond}",
            target.name,
            array_args(key_cols.len())
        );
        let st = self.statement(sql, key_cols.len()).await?;
        let codecs: Vec<PgType> = key_cols.iter().map(|c| target.codec(c).clone()).collect();
        let params = columns(&Arc::new(keys), &codecs);
        Ok(Step::Exec { st, params, what: format!("delete from {}", schema.id) })
    }

    /// `INSERT .. SELECT .. FROM unnest(..) ON CONFLICT .. DO UPDATE` over every column.
    async fn upsert_statement(&mut self, schema: &TableSchema, target: &Target) -> Result<Statement, PgError> {
        let list = schema.columns.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
        let select = schema
            .columns
            .iter()
            .map(|c| format!("u.{}::{}", quote_ident(&c.name), target.cast(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let key = schema.columns.iter().filter(|c| c.key).map(|c| quote_ident(&c.name)).collect::<Vec<_>>();
        let set = schema
            .columns
            .iter()
            .filter(|c| !c.key)
            .map(|c| format!("{q} = EXCLUDED.{q}", q = quote_ident(&c.name)))
            .collect::<Vec<_>>();
        let action = if set.is_empty() { "NOTHING".to_string() } else { format!("UPDATE SET {}", set.join(", ")) };
        let sql = format!(
            "INSERT INTO {} ({list}) SELECT {select} FROM unnest({}) AS u({list}) ON CONFLICT ({}) DO {action}",
            target.name,
            array_args(schema.columns.len()),
            key.join(", ")
        );
        self.statement(sql, schema.columns.len()).await
    }

    /// `COPY .. FROM STDIN` for rows that are new to the target: the server inserts them in
    /// bulk (measured: a third less server time per row than `INSERT .. SELECT .. unnest`).
    /// A row that exists after all fails the batch, which is then retried with upserts.
    fn copy(&self, schema: &TableSchema, target: &Target, rows: &[Row]) -> Result<Step, PgError> {
        let cols = schema.columns.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
        let codecs = target.codecs(schema);
        let mut data = BytesMut::with_capacity(rows.len() * 128);
        let mut scratch = BytesMut::new();
        for r in rows {
            copy::encode_row(&mut data, &mut scratch, &codecs, r)
                .map_err(|e| PgError::Encode(format!("a row of {}: {e}", schema.id)))?;
        }
        Ok(Step::Copy {
            sql: format!("COPY {} ({cols}) FROM STDIN", target.name),
            data: data.freeze(),
            what: format!("insert into {}", schema.id),
        })
    }

    /// `UPDATE` of whole rows found by their key; if some are not found, the same rows go
    /// through the upsert (which rewrites the updated ones with the same values).
    async fn update_else_upsert(
        &mut self,
        schema: &TableSchema,
        target: &Target,
        rows: Vec<Row>,
    ) -> Result<Step, PgError> {
        let upsert = self.upsert_statement(schema, target).await?;
        let n = rows.len() as u64;
        let params = columns(&Arc::new(rows), &target.codecs(schema));
        let what = format!("update {}", schema.id);
        if schema.columns.iter().all(|c| c.key) {
            return Ok(Step::Exec { st: upsert, params, what });
        }
        let list = schema.columns.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
        let typed = |c: &sluice_core::ColumnSchema| format!("u.{}::{}", quote_ident(&c.name), target.cast(c));
        let set = schema
            .columns
            .iter()
            .filter(|c| !c.key)
            .map(|c| format!("{} = {}", quote_ident(&c.name), typed(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let cond = schema
            .columns
            .iter()
            .filter(|c| c.key)
            .map(|c| format!("t.{} = {}", quote_ident(&c.name), typed(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let sql = format!(
            "UPDATE {} AS t SET {set} FROM unnest({}) AS u({list}) WHERE {cond}",
            target.name,
            array_args(schema.columns.len())
        );
        let update = self.statement(sql, schema.columns.len()).await?;
        Ok(Step::UpdateElseUpsert { update, upsert, params, rows: n, what })
    }

    /// `UPDATE` rows found by their key, setting only the columns that were sent (all rows
    /// share the same set). With `set_key`, the key columns are set too (a key change).
    pub async fn update(
        &mut self,
        schema: &TableSchema,
        target: &Target,
        rows: Vec<(Key, Row)>,
        set_key: bool,
    ) -> Result<Option<Step>, PgError> {
        let Some((_, first)) = rows.first() else { return Ok(None) };
        let key_cols: Vec<_> = schema.columns.iter().filter(|c| c.key).collect();
        let set_idx: Vec<usize> = schema
            .columns
            .iter()
            .enumerate()
            .filter(|(i, c)| first[*i] != Value::Unchanged && (set_key || !c.key))
            .map(|(i, _)| i)
            .collect();
        if set_idx.is_empty() {
            return Ok(None);
        }
        let mut alias: Vec<String> = key_cols.iter().map(|c| quote_ident(&format!("k_{}", c.name))).collect();
        alias.extend(set_idx.iter().map(|&i| quote_ident(&schema.columns[i].name)));
        let set = set_idx
            .iter()
            .map(|&i| {
                let c = &schema.columns[i];
                format!("{q} = u.{q}::{}", target.cast(c), q = quote_ident(&c.name))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let cond = key_cols
            .iter()
            .map(|c| {
                format!("t.{} = u.{}::{}", quote_ident(&c.name), quote_ident(&format!("k_{}", c.name)), target.cast(c))
            })
            .collect::<Vec<_>>()
            .join(" AND ");
        let sql = format!(
            "UPDATE {} AS t SET {set} FROM unnest({}) AS u({}) WHERE {cond}",
            target.name,
            array_args(alias.len()),
            alias.join(", ")
        );
        let st = self.statement(sql, alias.len()).await?;
        let (keys, full): (Vec<Key>, Vec<Row>) = rows.into_iter().unzip();
        let keys = Arc::new(keys);
        let full = Arc::new(full);
        let mut params: Vec<Column> = key_cols
            .iter()
            .enumerate()
            .map(|(j, c)| Column { rows: keys.clone(), col: j, codec: target.codec(c).clone() })
            .collect();
        params.extend(set_idx.iter().map(|&i| Column {
            rows: full.clone(),
            col: i,
            codec: target.codec(&schema.columns[i]).clone(),
        }));
        Ok(Some(Step::Exec { st, params, what: format!("update {}", schema.id) }))
    }
}
