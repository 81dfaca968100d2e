//! Statements that apply a batch of net operations (see `sluice_core::collapse`) to a replica
//! table, set-based and with bound parameters:
//!
//! - deletes: `DELETE .. USING (SELECT unnest($1), ..)`;
//! - keys whose only change is an insert: `COPY .. FROM STDIN`;
//! - keys only updated: `UPDATE .. FROM (SELECT unnest(..), ..)`, then the upsert if some rows were missing;
//! - everything else: `INSERT .. SELECT .. FROM (SELECT unnest(..), ..) ON CONFLICT DO UPDATE`;
//! - rows whose update did not resend some values: `UPDATE` of the columns that were sent.
//!
//! Every column travels as one array parameter encoded straight from the typed rows: in binary,
//! as an array of the target column's own type, when the column is a built-in scalar type and
//! every value of the batch has a binary form (`encoding = "binary"`, the default); otherwise as
//! a `text[]` cast to the column's type by the server. Inserts are COPY'd in binary under the
//! same condition, in text otherwise. Nothing is spliced into the SQL.

use std::cmp::Ordering;
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
use super::Inflight;
use crate::codec::{self, PgType};
use crate::config::Encoding;
use crate::copy;
use crate::error::{Ctx, PgError};
use crate::ident::quote_ident;

/// OID of `text`, the element type of text array parameters.
const TEXT_OID: u32 = 25;

/// One column of a batch as an array parameter, encoded from the rows when it is sent (or
/// beforehand, [`Step::encode_ahead`]): binary elements of the column's own type (`elem` is its
/// OID), or text.
#[derive(Debug, Clone)]
pub struct Column {
    rows: Arc<Vec<Row>>,
    col: usize,
    codec: PgType,
    /// Binary, with elements of this type OID; `None` for text.
    elem: Option<u32>,
    /// The array already encoded.
    encoded: Option<Bytes>,
}

impl Column {
    fn new(rows: &Arc<Vec<Row>>, col: usize, codec: PgType, elem: Option<u32>) -> Self {
        Column { rows: rows.clone(), col, codec, elem, encoded: None }
    }

    /// Encodes the array now, so sending it later only copies bytes. A value that cannot be
    /// encoded leaves the column as it was: sending it reports the error as it always did.
    fn encode_ahead(&mut self) {
        let mut out = BytesMut::new();
        if self.encode(&mut out).is_ok() {
            self.encoded = Some(out.freeze());
        }
    }

    fn encode(&self, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if let Some(bytes) = &self.encoded {
            out.extend_from_slice(bytes);
            return Ok(IsNull::No);
        }
        let has_null = self.rows.iter().any(|r| matches!(r[self.col], Value::Null | Value::Unchanged));
        out.put_i32(1);
        out.put_i32(i32::from(has_null));
        out.put_u32(self.elem.unwrap_or(TEXT_OID));
        out.put_i32(i32::try_from(self.rows.len())?);
        out.put_i32(1);
        for r in self.rows.iter() {
            match &r[self.col] {
                Value::Null | Value::Unchanged => out.put_i32(-1),
                v => {
                    let at = out.len();
                    out.put_i32(0);
                    match self.elem {
                        Some(_) => codec::encode_binary(&self.codec, v, out)?,
                        None => codec::encode_text(&self.codec, v, out)?,
                    }
                    let len = i32::try_from(out.len() - at - 4)?;
                    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
                }
            }
        }
        Ok(IsNull::No)
    }
}

impl ToSql for Column {
    fn to_sql(&self, _ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.encode(out)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// The order in which a batch's rows are applied: by key, column by column, in the target
/// index's order for the usual key types (integers, text in byte order, UUIDs, dates and
/// times); other values compare equal among themselves (and before those), so such rows keep
/// their arrival order (the sort is stable). A total preorder, as sorting requires. Only
/// locality depends on it, never correctness.
fn key_order<'a>(pairs: impl Iterator<Item = (&'a Value, &'a Value)>) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Int(_) => 1,
            Value::UInt(_) => 2,
            Value::Text(_) => 3,
            Value::Uuid(_) => 4,
            Value::Date(_) => 5,
            Value::Timestamp(_) => 6,
            Value::TimestampTz(_) => 7,
            _ => 0,
        }
    }
    for (a, b) in pairs {
        let o = match (a, b) {
            (Value::Int(x), Value::Int(y)) => x.cmp(y),
            (Value::UInt(x), Value::UInt(y)) => x.cmp(y),
            (Value::Text(x), Value::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
            (Value::Uuid(x), Value::Uuid(y)) => x.cmp(y),
            (Value::Date(x), Value::Date(y)) => x.cmp(y),
            (Value::Timestamp(x), Value::Timestamp(y)) | (Value::TimestampTz(x), Value::TimestampTz(y)) => x.cmp(y),
            _ => rank(a).cmp(&rank(b)),
        };
        if o.is_ne() {
            return o;
        }
    }
    Ordering::Equal
}

/// Whether a value has a binary form (an opaque text-only value has none).
fn binary_safe(v: &Value) -> bool {
    match v {
        Value::Other(_) => false,
        Value::List(items) => items.iter().all(binary_safe),
        _ => true,
    }
}

/// Whether every value of column `col` in `rows` has a binary form for `codec`.
fn column_binary(rows: &[Row], col: usize, codec: &PgType) -> bool {
    codec.binary_ok() && rows.iter().all(|r| binary_safe(&r[col]))
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
    /// Encodes the parameters now rather than when the statement is sent: a batch is encoded
    /// while the one before it still runs on the target.
    pub fn encode_ahead(&mut self) {
        match self {
            Step::Exec { params, .. } | Step::UpdateElseUpsert { params, .. } => {
                params.iter_mut().for_each(Column::encode_ahead)
            }
            Step::Copy { .. } => {}
        }
    }

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

/// A batch's net operations sorted by the statement that applies them, each with the position
/// its operation had in the batch (`*_at`).
pub(crate) struct Sorted {
    deletes: Arc<Vec<Key>>,
    upserts: Arc<Vec<Row>>,
    inserts: Arc<Vec<Row>>,
    updates: Arc<Vec<Row>>,
    partial: Vec<Vec<(Key, Row)>>,
    deletes_at: Vec<usize>,
    upserts_at: Vec<usize>,
    inserts_at: Vec<usize>,
    updates_at: Vec<usize>,
    partial_at: Vec<Vec<usize>>,
}

impl Sorted {
    /// The operations again, in the order they had in the batch, to apply them another way;
    /// plain inserts become upserts (a batch is only applied again after the target refused it,
    /// and an insert meeting an existing row is the usual reason). Arrival order matters when
    /// they are applied one by one: with a unique index besides the key, key order can make a
    /// valid sequence collide (row 2 gives up a value row 1 takes).
    pub fn ops(&self) -> Vec<NetOp> {
        let mut out: Vec<(usize, NetOp)> = Vec::new();
        out.extend(self.deletes_at.iter().copied().zip(self.deletes.iter().cloned().map(NetOp::Delete)));
        out.extend(self.upserts_at.iter().copied().zip(self.upserts.iter().cloned().map(NetOp::Upsert)));
        out.extend(self.inserts_at.iter().copied().zip(self.inserts.iter().cloned().map(NetOp::Upsert)));
        out.extend(self.updates_at.iter().copied().zip(self.updates.iter().cloned().map(NetOp::Update)));
        for (at, rows) in self.partial_at.iter().zip(&self.partial) {
            out.extend(at.iter().copied().zip(rows.iter().map(|(_, r)| NetOp::Update(r.clone()))));
        }
        out.sort_by_key(|(at, _)| *at);
        out.into_iter().map(|(_, op)| op).collect()
    }
}

/// Prepares statements on one connection, caching them by text.
pub(crate) struct Planner<'a> {
    client: &'a Client,
    statements: &'a mut HashMap<String, Statement>,
    encoding: Encoding,
    /// The batch committing in the background on the same connection, planned ahead of: a
    /// statement that is not prepared yet waits for it first, so the preparation cannot land
    /// in (and fail with) that batch's transaction.
    ahead_of: Option<&'a mut Inflight>,
}

/// The rows as one text parameter per column, each written with its column's codec.
pub fn columns(rows: &Arc<Vec<Row>>, codecs: &[PgType]) -> Vec<Column> {
    codecs.iter().enumerate().map(|(col, codec)| Column::new(rows, col, codec.clone(), None)).collect()
}

/// A batch's parameters with the SQL that reads them: `$n` (typed, binary) or `$n::text[]`.
struct Params {
    columns: Vec<Column>,
    types: Vec<Type>,
}

impl Params {
    /// `(SELECT unnest($1) AS c1, unnest($2::text[]) AS c2) AS u`: the batch as rows named `u`,
    /// column `cN` from parameter `$N` (positional names, so none can collide with a column's).
    /// The arrays are unnested in the select list, which streams the rows (`ProjectSet`),
    /// rather than with `FROM unnest(..)`, a function scan that first copies every row into a
    /// tuplestore: about 4% less server time per updated row in 10,000-row batches, pooled
    /// over six passes of `bench/sql/update-forms.sql` (single passes on this noisy machine
    /// ranged from 14% less to 9% more).
    fn rows(&self) -> String {
        let cols = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let cast = if c.elem.is_some() { "" } else { "::text[]" };
                format!("unnest(${n}{cast}) AS c{n}", n = i + 1)
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!("(SELECT {cols}) AS u")
    }

    /// Column `j` of `u`: as is when binary (already typed), `u.cN::type` when text.
    fn value(&self, j: usize, cast: &str) -> String {
        if self.columns[j].elem.is_some() {
            format!("u.c{}", j + 1)
        } else {
            format!("u.c{}::{cast}", j + 1)
        }
    }
}

impl<'a> Planner<'a> {
    pub fn new(client: &'a Client, statements: &'a mut HashMap<String, Statement>, encoding: Encoding) -> Self {
        Planner { client, statements, encoding, ahead_of: None }
    }

    /// Plans ahead of `inflight` (see the field).
    pub fn ahead_of(self, inflight: &'a mut Inflight) -> Self {
        Planner { ahead_of: Some(inflight), ..self }
    }

    async fn statement(&mut self, sql: String, types: &[Type]) -> Result<Statement, PgError> {
        if let Some(s) = self.statements.get(&sql) {
            return Ok(s.clone());
        }
        if let Some(inflight) = self.ahead_of.as_deref_mut() {
            inflight.settle().await?;
        }
        let head: String = sql.chars().take(60).collect();
        let st = self.client.prepare_typed(&sql, types).await.ctx(format!("prepare {head}"))?;
        self.statements.insert(sql, st.clone());
        Ok(st)
    }

    /// Parameters for columns `cols` of `rows` (each column's values at its index in the rows,
    /// or at its position in `cols` when `by_position`).
    fn params(&self, target: &Target, rows: &Arc<Vec<Row>>, cols: &[(&sluice_core::ColumnSchema, usize)]) -> Params {
        let mut columns = Vec::with_capacity(cols.len());
        let mut types = Vec::with_capacity(cols.len());
        for (c, idx) in cols {
            let codec = target.codec(c).clone();
            let array = Type::from_oid(target.array_oid(c)).filter(|_| {
                self.encoding == Encoding::Binary
                    && !matches!(codec, PgType::Array { .. } | PgType::Enum)
                    && column_binary(rows, *idx, &codec)
            });
            let elem = array.as_ref().and_then(|t| match t.kind() {
                tokio_postgres::types::Kind::Array(e) => Some(e.oid()),
                _ => None,
            });
            types.push(array.filter(|_| elem.is_some()).unwrap_or(Type::TEXT_ARRAY));
            columns.push(Column::new(rows, *idx, codec, elem));
        }
        Params { columns, types }
    }

    /// The statements that apply `ops` (each key at most once) to `target`, and the operations
    /// sorted by kind (shared with the statements, not copied), to apply them again one by one
    /// if the target refuses the batch.
    pub async fn plan(
        &mut self,
        schema: &TableSchema,
        target: &Target,
        ops: Vec<NetOp>,
    ) -> Result<(Vec<Step>, Sorted), PgError> {
        let key_idx = schema.key_indexes();
        let mut deletes: Vec<(usize, Key)> = Vec::new();
        let mut upserts: Vec<(usize, Row)> = Vec::new();
        let mut inserts: Vec<(usize, Row)> = Vec::new();
        let mut updates: Vec<(usize, Row)> = Vec::new();
        let mut partial: FxHashMap<Vec<bool>, Vec<(usize, (Key, Row))>> = FxHashMap::default();
        for (at, op) in ops.into_iter().enumerate() {
            match op {
                NetOp::Delete(k) => deletes.push((at, k)),
                NetOp::Insert(r) if !r.contains(&Value::Unchanged) => inserts.push((at, r)),
                NetOp::Insert(r) | NetOp::Upsert(r) | NetOp::Update(r) if r.contains(&Value::Unchanged) => {
                    let mask = r.iter().map(|v| *v != Value::Unchanged).collect();
                    let key = key_idx.iter().map(|&i| r[i].clone()).collect();
                    partial.entry(mask).or_default().push((at, (key, r)));
                }
                NetOp::Upsert(r) | NetOp::Insert(r) => upserts.push((at, r)),
                NetOp::Update(r) => updates.push((at, r)),
            }
        }
        let mut partial: Vec<Vec<(usize, (Key, Row))>> = partial.into_values().collect();
        // In key order, each statement walks the key's index and the heap in order instead of
        // jumping about (bench/sql/update-forms.sql: 14-21% less server time than the same rows
        // in random order); rows that arrived in key order are only checked (a run is O(n)).
        // Not when the target has another unique index (or an exclusion constraint), which
        // PostgreSQL checks row by row: there the order the source applied them in is the one
        // known to be valid.
        if !target.other_unique {
            deletes.sort_by(|a, b| key_order(a.1.iter().zip(&b.1)));
            let by_key = |a: &(usize, Row), b: &(usize, Row)| key_order(key_idx.iter().map(|&i| (&a.1[i], &b.1[i])));
            for rows in [&mut upserts, &mut inserts, &mut updates] {
                rows.sort_by(by_key);
            }
            for rows in &mut partial {
                rows.sort_by(|a, b| key_order(a.1 .0.iter().zip(&b.1 .0)));
            }
        }
        let (deletes_at, deletes): (Vec<usize>, Vec<Key>) = deletes.into_iter().unzip();
        let (upserts_at, upserts): (Vec<usize>, Vec<Row>) = upserts.into_iter().unzip();
        let (inserts_at, inserts): (Vec<usize>, Vec<Row>) = inserts.into_iter().unzip();
        let (updates_at, updates): (Vec<usize>, Vec<Row>) = updates.into_iter().unzip();
        let (partial_at, partial): (Vec<Vec<usize>>, Vec<Vec<(Key, Row)>>) =
            partial.into_iter().map(|rows| rows.into_iter().unzip()).unzip();
        let sorted = Sorted {
            deletes: Arc::new(deletes),
            upserts: Arc::new(upserts),
            inserts: Arc::new(inserts),
            updates: Arc::new(updates),
            partial,
            deletes_at,
            upserts_at,
            inserts_at,
            updates_at,
            partial_at,
        };
        let mut steps = Vec::new();
        if !sorted.deletes.is_empty() {
            steps.push(self.delete(schema, target, sorted.deletes.clone()).await?);
        }
        if !sorted.upserts.is_empty() {
            let p = self.row_params(schema, target, &sorted.upserts);
            let st = self.upsert_statement(schema, target, &p).await?;
            steps.push(Step::Exec { st, params: p.columns, what: format!("upsert into {}", schema.id) });
        }
        if !sorted.inserts.is_empty() {
            match self.copy(schema, target, &sorted.inserts) {
                Ok(step) => steps.push(step),
                // A value the COPY cannot carry: the rows go as an upsert instead, whose
                // parameters fail when sent, so the batch is replayed change by change and the
                // bad row parked with the dead letters like any other refused change.
                Err(PgError::Encode(_)) => {
                    let p = self.row_params(schema, target, &sorted.inserts);
                    let st = self.upsert_statement(schema, target, &p).await?;
                    steps.push(Step::Exec { st, params: p.columns, what: format!("insert into {}", schema.id) });
                }
                Err(e) => return Err(e),
            }
        }
        if !sorted.updates.is_empty() {
            steps.push(self.update_else_upsert(schema, target, sorted.updates.clone()).await?);
        }
        for rows in &sorted.partial {
            steps.extend(self.update(schema, target, rows.clone(), false).await?);
        }
        Ok((steps, sorted))
    }

    async fn delete(&mut self, schema: &TableSchema, target: &Target, keys: Arc<Vec<Key>>) -> Result<Step, PgError> {
        let key_cols: Vec<(&sluice_core::ColumnSchema, usize)> =
            schema.columns.iter().filter(|c| c.key).enumerate().map(|(j, c)| (c, j)).collect();
        let p = self.params(target, &keys, &key_cols);
        let cond = key_cols
            .iter()
            .enumerate()
            .map(|(j, (c, _))| format!("t.{} = {}", quote_ident(&c.name), p.value(j, target.cast(c))))
            .collect::<Vec<_>>()
            .join(" AND ");
        let sql = format!("DELETE FROM {} AS t USING {} WHERE {cond}", target.name, p.rows());
        let st = self.statement(sql, &p.types).await?;
        Ok(Step::Exec { st, params: p.columns, what: format!("delete from {}", schema.id) })
    }

    /// Parameters for every column of `rows`.
    fn row_params(&self, schema: &TableSchema, target: &Target, rows: &Arc<Vec<Row>>) -> Params {
        let cols: Vec<(&sluice_core::ColumnSchema, usize)> =
            schema.columns.iter().enumerate().map(|(i, c)| (c, i)).collect();
        self.params(target, rows, &cols)
    }

    /// `INSERT .. SELECT .. FROM unnest(..) ON CONFLICT .. DO UPDATE` over every column.
    async fn upsert_statement(
        &mut self,
        schema: &TableSchema,
        target: &Target,
        p: &Params,
    ) -> Result<Statement, PgError> {
        let list = schema.columns.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
        let select =
            schema.columns.iter().enumerate().map(|(j, c)| p.value(j, target.cast(c))).collect::<Vec<_>>().join(", ");
        let key = schema.columns.iter().filter(|c| c.key).map(|c| quote_ident(&c.name)).collect::<Vec<_>>();
        let set = schema
            .columns
            .iter()
            .filter(|c| !c.key)
            .map(|c| format!("{q} = EXCLUDED.{q}", q = quote_ident(&c.name)))
            .collect::<Vec<_>>();
        let action = if set.is_empty() { "NOTHING".to_string() } else { format!("UPDATE SET {}", set.join(", ")) };
        let sql = format!(
            "INSERT INTO {} ({list}) SELECT {select} FROM {} ON CONFLICT ({}) DO {action}",
            target.name,
            p.rows(),
            key.join(", ")
        );
        self.statement(sql, &p.types).await
    }

    /// `COPY .. FROM STDIN` for rows that are new to the target: the server inserts them in
    /// bulk (measured: a third less server time per row than `INSERT .. SELECT .. unnest`).
    /// A row that exists after all fails the batch, which is then retried with upserts.
    pub(crate) fn copy(&self, schema: &TableSchema, target: &Target, rows: &[Row]) -> Result<Step, PgError> {
        let cols = schema.columns.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
        let codecs = target.codecs(schema);
        let what = format!("insert into {}", schema.id);
        let binary =
            self.encoding == Encoding::Binary && codecs.iter().enumerate().all(|(i, c)| column_binary(rows, i, c));
        let mut data = BytesMut::with_capacity(rows.len() * 96);
        let encode = |e: codec::CodecError| PgError::Encode(format!("a row of {}: {e}", schema.id));
        if binary {
            copy::binary_header(&mut data);
            for r in rows {
                copy::encode_binary_row(&mut data, &codecs, r).map_err(encode)?;
            }
            copy::binary_trailer(&mut data);
            return Ok(Step::Copy {
                sql: format!("COPY {} ({cols}) FROM STDIN (FORMAT binary)", target.name),
                data: data.freeze(),
                what,
            });
        }
        let mut scratch = BytesMut::new();
        for r in rows {
            copy::encode_row(&mut data, &mut scratch, &codecs, r).map_err(encode)?;
        }
        Ok(Step::Copy { sql: format!("COPY {} ({cols}) FROM STDIN", target.name), data: data.freeze(), what })
    }

    /// `UPDATE` of whole rows found by their key; if some are not found, the same rows go
    /// through the upsert (which rewrites the updated ones with the same values).
    async fn update_else_upsert(
        &mut self,
        schema: &TableSchema,
        target: &Target,
        rows: Arc<Vec<Row>>,
    ) -> Result<Step, PgError> {
        let n = rows.len() as u64;
        let p = self.row_params(schema, target, &rows);
        let upsert = self.upsert_statement(schema, target, &p).await?;
        let what = format!("update {}", schema.id);
        if schema.columns.iter().all(|c| c.key) {
            return Ok(Step::Exec { st: upsert, params: p.columns, what });
        }
        let typed = |j: usize, c: &sluice_core::ColumnSchema| p.value(j, target.cast(c));
        let set = schema
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.key)
            .map(|(j, c)| format!("{} = {}", quote_ident(&c.name), typed(j, c)))
            .collect::<Vec<_>>()
            .join(", ");
        let cond = schema
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.key)
            .map(|(j, c)| format!("t.{} = {}", quote_ident(&c.name), typed(j, c)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let sql = format!("UPDATE {} AS t SET {set} FROM {} WHERE {cond}", target.name, p.rows());
        let update = self.statement(sql, &p.types).await?;
        Ok(Step::UpdateElseUpsert { update, upsert, params: p.columns, rows: n, what })
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
        let (keys, full): (Vec<Key>, Vec<Row>) = rows.into_iter().unzip();
        let keys = Arc::new(keys);
        let full = Arc::new(full);
        let key_list: Vec<(&sluice_core::ColumnSchema, usize)> =
            key_cols.iter().enumerate().map(|(j, c)| (*c, j)).collect();
        let set_list: Vec<(&sluice_core::ColumnSchema, usize)> =
            set_idx.iter().map(|&i| (&schema.columns[i], i)).collect();
        let kp = self.params(target, &keys, &key_list);
        let sp = self.params(target, &full, &set_list);
        let p = Params {
            columns: kp.columns.into_iter().chain(sp.columns).collect(),
            types: kp.types.into_iter().chain(sp.types).collect(),
        };
        let set = set_idx
            .iter()
            .enumerate()
            .map(|(j, &i)| {
                let c = &schema.columns[i];
                format!("{} = {}", quote_ident(&c.name), p.value(key_cols.len() + j, target.cast(c)))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let cond = key_cols
            .iter()
            .enumerate()
            .map(|(j, c)| format!("t.{} = {}", quote_ident(&c.name), p.value(j, target.cast(c))))
            .collect::<Vec<_>>()
            .join(" AND ");
        let sql = format!("UPDATE {} AS t SET {set} FROM {} WHERE {cond}", target.name, p.rows());
        let st = self.statement(sql, &p.types).await?;
        let params = p.columns;
        Ok(Some(Step::Exec { st, params, what: format!("update {}", schema.id) }))
    }

    /// The statement applying one change to a table without a key (`REPLICA IDENTITY FULL`):
    /// an insert as is, an update or delete on one row equal to the old row in every column
    /// (`ctid` of the first match, so of two identical rows only one changes). Columns are
    /// compared by their text form (the target's own output function on both sides), so types
    /// without an equality operator (json, point) match too. Slow: every such update or delete
    /// scans the table.
    pub async fn unkeyed(
        &mut self,
        schema: &TableSchema,
        target: &Target,
        op: &sluice_core::Op,
    ) -> Result<Option<Step>, PgError> {
        use sluice_core::Op;
        let all: Vec<(&sluice_core::ColumnSchema, usize)> =
            schema.columns.iter().enumerate().map(|(i, c)| (c, i)).collect();
        let list = schema.columns.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ");
        let no_old_row = || {
            PgError::Setup(format!(
                "{} has no key and its change carries no old row to find it by; run ALTER TABLE {} REPLICA IDENTITY FULL \
                 on the source (or give it a primary key)",
                schema.id,
                crate::ident::qualified(&schema.id)
            ))
        };
        // `x.col::text IS NOT DISTINCT FROM <value>::text` for every column of `old` that was sent.
        let matches = |old: &Row, p: &Params, offset: usize| {
            let conds: Vec<String> = schema
                .columns
                .iter()
                .enumerate()
                .filter(|(i, _)| old[*i] != Value::Unchanged)
                .map(|(i, c)| {
                    let v = p.value(offset + i, target.cast(c));
                    format!("x.{}::text IS NOT DISTINCT FROM ({v})::text", quote_ident(&c.name))
                })
                .collect();
            if conds.is_empty() {
                "true".to_string()
            } else {
                conds.join(" AND ")
            }
        };
        let (sql, p, what) = match op {
            Op::Insert { after } => {
                let p = self.params(target, &Arc::new(vec![after.clone()]), &all);
                let values = schema
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(j, c)| p.value(j, target.cast(c)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!("INSERT INTO {} ({list}) SELECT {values} FROM {}", target.name, p.rows());
                (sql, p, format!("insert into {}", schema.id))
            }
            Op::Delete { before } => {
                let p = self.params(target, &Arc::new(vec![before.clone()]), &all);
                let sql = format!(
                    "DELETE FROM {t} WHERE ctid = (SELECT x.ctid FROM {t} AS x, {} WHERE {} LIMIT 1)",
                    p.rows(),
                    matches(before, &p, 0),
                    t = target.name
                );
                (sql, p, format!("delete from {}", schema.id))
            }
            Op::Update { before, after } => {
                let before = before.as_ref().ok_or_else(no_old_row)?;
                let set: Vec<(&sluice_core::ColumnSchema, usize)> =
                    all.iter().copied().filter(|(_, i)| after[*i] != Value::Unchanged).collect();
                if set.is_empty() {
                    return Ok(None);
                }
                let old = self.params(target, &Arc::new(vec![before.clone()]), &all);
                let new = self.params(target, &Arc::new(vec![after.clone()]), &set);
                let p = Params {
                    columns: old.columns.into_iter().chain(new.columns).collect(),
                    types: old.types.into_iter().chain(new.types).collect(),
                };
                let assign = set
                    .iter()
                    .enumerate()
                    .map(|(j, (c, _))| format!("{} = {}", quote_ident(&c.name), p.value(all.len() + j, target.cast(c))))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "UPDATE {t} SET {assign} FROM {} WHERE {t}.ctid = (SELECT x.ctid FROM {t} AS x WHERE {} LIMIT 1)",
                    p.rows(),
                    matches(before, &p, 0),
                    t = target.name
                );
                (sql, p, format!("update {}", schema.id))
            }
            Op::Truncate => return Ok(None),
        };
        let st = self.statement(sql, &p.types).await?;
        Ok(Some(Step::Exec { st, params: p.columns, what }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(c: &Column) -> Result<Vec<u8>, String> {
        let mut out = BytesMut::new();
        c.to_sql(&Type::INT4_ARRAY, &mut out).map(|_| out.to_vec()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_column_encoded_ahead_sends_the_same_bytes_and_a_bad_value_still_fails_when_sent() {
        let rows = Arc::new(vec![vec![Value::Int(7)], vec![Value::Null], vec![Value::Int(-3)]]);
        let lazy = Column::new(&rows, 0, PgType::Int4, Some(23));
        let mut ahead = lazy.clone();
        ahead.encode_ahead();
        assert!(ahead.encoded.is_some());
        assert_eq!(encoded(&ahead), encoded(&lazy));
        assert!(encoded(&lazy).unwrap().len() > 20, "header and three elements");

        let bad = Arc::new(vec![vec![Value::Int(1 << 40)]]);
        let mut ahead = Column::new(&bad, 0, PgType::Int4, Some(23));
        ahead.encode_ahead();
        assert!(ahead.encoded.is_none(), "left to fail when sent, as before");
        let err = encoded(&ahead).unwrap_err();
        assert_eq!(Some(err), encoded(&Column::new(&bad, 0, PgType::Int4, Some(23))).err());
    }

    #[test]
    fn rows_are_applied_in_key_order_and_incomparable_keys_keep_their_order() {
        let mut keys: Vec<Key> = vec![
            vec![Value::Int(3), Value::Text("b".into())],
            vec![Value::Int(1), Value::Text("z".into())],
            vec![Value::Int(3), Value::Text("a".into())],
            vec![Value::Float64(2.0)],
            vec![Value::Float64(1.0)],
        ];
        keys.sort_by(|a, b| key_order(a.iter().zip(b)));
        // Floats are not ordered here: the two keep the order they arrived in, first.
        assert_eq!(keys[0], vec![Value::Float64(2.0)]);
        assert_eq!(keys[1], vec![Value::Float64(1.0)]);
        assert_eq!(keys[2], vec![Value::Int(1), Value::Text("z".into())]);
        assert_eq!(keys[3], vec![Value::Int(3), Value::Text("a".into())]);
        assert_eq!(keys[4], vec![Value::Int(3), Value::Text("b".into())]);
    }
}
