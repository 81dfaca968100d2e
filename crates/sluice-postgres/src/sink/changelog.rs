//! Changelog mode: one appended row per change, with before/after images as JSON and the
//! source's transaction metadata.

use std::collections::HashMap;

use sluice_core::json::row_json;
use sluice_core::{Op, Position, Row, TableSchema, Timestamp, TxnMeta, Utc};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};

use crate::error::{Ctx, PgError};

/// One row to append.
pub(crate) struct LogRow {
    op: &'static str,
    before: Option<String>,
    after: Option<String>,
    lsn: Option<String>,
    xid: Option<String>,
    commit_ts: Option<String>,
}

impl LogRow {
    /// The log row of a streamed change in transaction `txn`.
    pub fn change(schema: &TableSchema, op: &Op, txn: Option<&TxnMeta>) -> LogRow {
        let json = |r: &Row| Some(row_json(schema, r).to_string());
        let (kind, before, after) = match op {
            Op::Insert { after } => ("c", None, json(after)),
            Op::Update { before, after } => ("u", before.as_ref().and_then(json), json(after)),
            Op::Delete { before } => ("d", json(before), None),
            Op::Truncate => ("t", None, None),
        };
        let (lsn, xid, commit_ts) = match txn {
            Some(m) => (
                match &m.position {
                    Position::Pg(l) => Some(l.to_string()),
                    _ => None,
                },
                Some(m.xid.to_string()),
                Some(Utc(Timestamp::from_micros(m.commit_ts_micros)).to_string()),
            ),
            None => (None, None, None),
        };
        LogRow { op: kind, before, after, lsn, xid, commit_ts }
    }

    /// The log row of a copied row.
    pub fn copied(schema: &TableSchema, row: &Row) -> LogRow {
        LogRow {
            op: "r",
            before: None,
            after: Some(row_json(schema, row).to_string()),
            lsn: None,
            xid: None,
            commit_ts: None,
        }
    }
}

/// Appends `rows` to the changelog table `name` for source table `schema`.
pub(crate) async fn append(
    client: &Client,
    statements: &mut HashMap<String, Statement>,
    name: &str,
    schema: &TableSchema,
    rows: Vec<LogRow>,
) -> Result<(), PgError> {
    let sql = format!(
        "INSERT INTO {name} (op, before, after, source_table, lsn, xid, commit_ts) \
         SELECT u.op, u.b::jsonb, u.a::jsonb, $7, u.l::pg_lsn, u.x::bigint, u.t::timestamptz \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) AS u(op, b, a, l, x, t)"
    );
    let st = match statements.get(&sql) {
        Some(s) => s.clone(),
        None => {
            let mut types = vec![Type::TEXT_ARRAY; 6];
            types.push(Type::TEXT);
            let st = client.prepare_typed(&sql, &types).await.ctx("prepare changelog insert")?;
            statements.insert(sql, st.clone());
            st
        }
    };
    let ops: Vec<&str> = rows.iter().map(|r| r.op).collect();
    let b: Vec<Option<&str>> = rows.iter().map(|r| r.before.as_deref()).collect();
    let a: Vec<Option<&str>> = rows.iter().map(|r| r.after.as_deref()).collect();
    let l: Vec<Option<&str>> = rows.iter().map(|r| r.lsn.as_deref()).collect();
    let x: Vec<Option<&str>> = rows.iter().map(|r| r.xid.as_deref()).collect();
    let t: Vec<Option<&str>> = rows.iter().map(|r| r.commit_ts.as_deref()).collect();
    let table = schema.id.to_string();
    client.execute(&st, &[&ops, &b, &a, &l, &x, &t, &table]).await.ctx(format!("append changelog of {}", schema.id))?;
    Ok(())
}
