//! The Snowflake sink, change-log mode: one table per source table with the Kafka connector's
//! columns, `RECORD_METADATA` and `RECORD_CONTENT` (VARIANT), so the connector's documented
//! queries (`RECORD_METADATA:operation::STRING`, `RECORD_CONTENT:item::INT`) work unchanged.
//!
//! ```text
//!  flush:  CREATE TABLE IF NOT EXISTS "<TABLE>" / "SLUICE_STAGE_<pipeline>_<n>"   (DDL commits: before BEGIN)
//!          BEGIN NAME SLUICE_<pipeline>_<n>
//!            DELETE FROM stage;  INSERT INTO stage VALUES (?, ?, ?), ..    (bound TEXT, 1,000 rows a statement)
//!            INSERT INTO "<TABLE>" SELECT PARSE_JSON(M), PARSE_JSON(C) FROM stage WHERE T = ?
//!            DELETE FROM "<checkpoint_table>" WHERE ..;  INSERT .. VALUES (?, ?, ?)
//!          COMMIT                                                            → ack
//!  open:   SHOW TRANSACTIONS; SYSTEM$ABORT_TRANSACTION(id) of one named as ours (a predecessor
//!          that died mid-flush still holds it and its locks); read the checkpoint
//! ```
//!
//! The checkpoint is written in the flush's transaction: a crash before COMMIT leaves nothing,
//! after it everything and the position that says so, so a replay neither loses nor doubles a
//! change. Values are always bound; names are quoted (Snowflake's upper-case for unquoted ones).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sluice_core::{
    Ack, BatchPolicy, Checkpoint, ConnectorError, CopyMode, CopyStep, ErrorClass, Event, Op, Position, Sink,
    SinkContext, TableId, TxnMeta,
};
use tracing::{info, warn};

use crate::client::{Auth, Bind, Login, Session, SnowflakeError};
use crate::config::SnowflakeSinkConfig;
use crate::jwt::KeyPair;

/// How often a position reached without rows (heartbeats) is stored: each flush is a
/// transaction that wakes a warehouse, so an idle pipeline stores its position only this often
/// (replaying from an older one re-sends nothing: no row of ours lies between).
const POSITION_STORE_EVERY: Duration = Duration::from_secs(60);

/// Rows per multi-row INSERT into the stage (three bound values each). One statement per chunk
/// rather than an array binding, which fakesnow runs row by row; Snowflake takes both.
const STAGE_ROWS: usize = 1_000;

impl From<SnowflakeError> for ConnectorError {
    fn from(e: SnowflakeError) -> ConnectorError {
        let class = if e.is_transient() { ErrorClass::Transient } else { ErrorClass::Fatal };
        ConnectorError::new(class, e.to_string(), e)
    }
}

/// `name` as a quoted Snowflake identifier: upper-cased, as Snowflake treats unquoted names.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.to_uppercase().replace('"', "\"\""))
}

/// A buffered change-log row: target table, metadata and content as JSON text.
struct LogRow {
    meta: String,
    content: Option<String>,
}

/// The sink.
pub struct SnowflakeSink {
    name: String,
    cfg: SnowflakeSinkConfig,
    pipeline: String,
    index: usize,
    session: Option<Session>,
    rows: BTreeMap<TableId, Vec<LogRow>>,
    txn: Option<TxnMeta>,
    seq: u32,
    /// The last transaction's position: where a copy of a live table stands in the stream
    last_position: Option<Position>,
    bytes: usize,
    created: HashSet<String>,
    /// The last checkpoint stored, and when
    stored: Option<(Checkpoint, std::time::Instant)>,
}

impl SnowflakeSink {
    pub fn new(cfg: SnowflakeSinkConfig, pipeline: &str, index: usize) -> SnowflakeSink {
        SnowflakeSink {
            name: format!("sink[{index}] snowflake {}", cfg.mode),
            cfg,
            pipeline: pipeline.to_string(),
            index,
            session: None,
            rows: BTreeMap::new(),
            txn: None,
            seq: 0,
            last_position: None,
            bytes: 0,
            created: HashSet::new(),
            stored: None,
        }
    }

    /// `"DATABASE"."SCHEMA"."NAME"`.
    fn qualified(&self, name: &str) -> String {
        format!("{}.{}.{}", ident(&self.cfg.database), ident(&self.cfg.schema), ident(name))
    }

    fn stage(&self) -> String {
        self.qualified(&format!("SLUICE_STAGE_{}_{}", self.pipeline, self.index))
    }

    /// The name this sink's transactions carry, so a successor can find one left open.
    fn txn_name(&self) -> String {
        format!("SLUICE_{}_{}", self.pipeline.to_uppercase(), self.index)
    }

    fn session(&self) -> Result<&Session, ConnectorError> {
        self.session
            .as_ref()
            .ok_or_else(|| ConnectorError::msg(ErrorClass::Fatal, "the snowflake sink was used before open"))
    }

    async fn login(&self) -> Result<Session, ConnectorError> {
        let auth = match (&self.cfg.private_key_file, &self.cfg.password) {
            (Some(file), _) => {
                let pem = std::fs::read_to_string(file).map_err(|e| {
                    ConnectorError::msg(ErrorClass::Fatal, format!("{}: private_key_file {file}: {e}", self.name))
                })?;
                let key = KeyPair::from_pem(&pem).map_err(|e| {
                    ConnectorError::msg(ErrorClass::Fatal, format!("{}: private_key_file {file}: {e}", self.name))
                })?;
                Auth::KeyPair(Arc::new(key))
            }
            (None, Some(p)) => Auth::Password(p.expose().clone()),
            (None, None) => return Err(ConnectorError::msg(ErrorClass::Fatal, "no credentials configured")),
        };
        let login = Login {
            url: self.cfg.service_url(),
            account: self.cfg.account.clone(),
            user: self.cfg.user.clone(),
            auth,
            role: self.cfg.role.clone(),
            warehouse: self.cfg.warehouse.clone(),
            database: Some(self.cfg.database.clone()),
            schema: Some(self.cfg.schema.clone()),
        };
        Ok(Session::login(&login).await?)
    }

    /// Aborts a transaction of ours that another session holds open (a predecessor that died
    /// between BEGIN and COMMIT): Snowflake keeps it, and its locks, until it is aborted.
    async fn abort_predecessor(&self, s: &Session) -> Result<(), ConnectorError> {
        let open = s.query("SHOW TRANSACTIONS", &[]).await?;
        let col = |name: &str| open.columns.iter().position(|c| c.eq_ignore_ascii_case(name));
        let (Some(id), Some(name), session) = (col("id"), col("name"), col("session")) else {
            return Ok(());
        };
        let own = s.id().map(|i| i.to_string());
        for row in &open.rows {
            let ours = row[name].as_deref().is_some_and(|n| n.eq_ignore_ascii_case(&self.txn_name()));
            let other = session.and_then(|i| row[i].clone()) != own;
            if ours && other {
                warn!(sink = %self.name, transaction = ?row[id], "aborting the transaction a previous run left open");
                s.query("SELECT SYSTEM$ABORT_TRANSACTION(?)", &[Bind::one("FIXED", row[id].clone())]).await?;
            }
        }
        Ok(())
    }

    fn push(&mut self, table: &TableId, meta: serde_json::Value, content: Option<serde_json::Value>) {
        let meta = meta.to_string();
        let content = content.map(|c| c.to_string());
        self.bytes += meta.len() + content.as_ref().map_or(0, String::len) + 32;
        self.rows.entry(table.clone()).or_default().push(LogRow { meta, content });
    }

    /// Creates what the flush writes to; DDL commits in Snowflake, so this runs outside the
    /// flush's transaction.
    async fn ensure_tables(&mut self) -> Result<(), ConnectorError> {
        let mut wanted: Vec<String> = self.rows.keys().map(|t| self.qualified(&t.name)).collect();
        wanted.push(self.stage());
        for table in wanted {
            if self.created.contains(&table) {
                continue;
            }
            let columns = if table == self.stage() {
                "(T TEXT, M TEXT, C TEXT)"
            } else {
                "(RECORD_METADATA VARIANT, RECORD_CONTENT VARIANT)"
            };
            self.session()?.query(&format!("CREATE TABLE IF NOT EXISTS {table} {columns}"), &[]).await?;
            self.created.insert(table);
        }
        Ok(())
    }

    async fn flush(&mut self, checkpoint: &Checkpoint) -> Result<(), ConnectorError> {
        self.ensure_tables().await?;
        let rows = std::mem::take(&mut self.rows);
        self.bytes = 0;
        let (stage, ckpt, txn) = (self.stage(), self.qualified(&self.cfg.checkpoint_table), self.txn_name());
        let targets: Vec<(TableId, String)> = rows.keys().map(|t| (t.clone(), self.qualified(&t.name))).collect();
        let s = self.session()?;
        s.query(&format!("BEGIN NAME {txn}"), &[]).await?;
        let r = async {
            s.query(&format!("DELETE FROM {stage}"), &[]).await?;
            for (table, (_, target)) in rows.iter().zip(&targets) {
                for chunk in table.1.chunks(STAGE_ROWS) {
                    let mut binds = Vec::with_capacity(chunk.len() * 3);
                    for r in chunk {
                        binds.push(Bind::text(target.clone()));
                        binds.push(Bind::text(r.meta.clone()));
                        binds.push(Bind::one("TEXT", r.content.clone()));
                    }
                    let values = vec!["(?, ?, ?)"; chunk.len()].join(", ");
                    s.query(&format!("INSERT INTO {stage} VALUES {values}"), &binds).await?;
                }
                s.query(
                    &format!("INSERT INTO {target} SELECT PARSE_JSON(M), PARSE_JSON(C) FROM {stage} WHERE T = ?"),
                    &[Bind::text(target.clone())],
                )
                .await?;
            }
            s.query(&format!("DELETE FROM {stage}"), &[]).await?;
            s.query(&format!("DELETE FROM {ckpt} WHERE PIPELINE = ? AND SINK = ?"), &self.key()).await?;
            let mut binds = self.key().to_vec();
            binds.push(Bind::text(checkpoint.to_json()));
            s.query(&format!("INSERT INTO {ckpt} VALUES (?, ?, ?)"), &binds).await?;
            sluice_core::crash_point("sink.before_commit");
            s.query("COMMIT", &[]).await?;
            sluice_core::crash_point("sink.after_commit");
            Ok::<(), SnowflakeError>(())
        }
        .await;
        if let Err(e) = r {
            // Nothing of the flush stays; the runtime replays it from the checkpoint.
            let _ = s.query("ROLLBACK", &[]).await;
            return Err(e.into());
        }
        Ok(())
    }

    fn key(&self) -> [Bind; 2] {
        [Bind::text(self.pipeline.clone()), Bind::one("FIXED", Some(self.index.to_string()))]
    }
}

#[async_trait]
impl Sink for SnowflakeSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn batch_policy(&self) -> BatchPolicy {
        self.cfg.buffer.batch_policy()
    }

    fn wants_commit(&self) -> bool {
        self.cfg.buffer.is_full(self.bytes)
    }

    async fn open(&mut self, _ctx: SinkContext) -> Result<Option<Checkpoint>, ConnectorError> {
        if let Some(old) = self.session.take() {
            let _ = old.close().await;
        }
        self.rows.clear();
        self.bytes = 0;
        self.created.clear();
        let s = self.login().await?;
        self.abort_predecessor(&s).await?;
        let ckpt = self.qualified(&self.cfg.checkpoint_table);
        s.query(&format!("CREATE TABLE IF NOT EXISTS {ckpt} (PIPELINE TEXT, SINK NUMBER, STATE TEXT)"), &[]).await?;
        let stored = s.query(&format!("SELECT STATE FROM {ckpt} WHERE PIPELINE = ? AND SINK = ?"), &self.key()).await?;
        let checkpoint: Option<Checkpoint> = match stored.rows.first().and_then(|r| r.first().cloned().flatten()) {
            Some(text) => Some(Checkpoint::from_json(&text).map_err(|e| {
                ConnectorError::msg(
                    ErrorClass::Fatal,
                    format!("{}: the checkpoint in {ckpt} cannot be read: {e}", self.name),
                )
            })?),
            None => None,
        };
        self.last_position = checkpoint.as_ref().and_then(|c| c.position.clone());
        self.stored = checkpoint.clone().map(|c| (c, std::time::Instant::now()));
        info!(sink = %self.name, database = %self.cfg.database, schema = %self.cfg.schema, "sink opened");
        self.session = Some(s);
        Ok(checkpoint)
    }

    async fn write(&mut self, event: &Event) -> Result<(), ConnectorError> {
        match event {
            Event::Begin(meta) => {
                self.txn = Some(meta.clone());
                self.seq = 0;
            }
            Event::Commit { meta, .. } => {
                self.last_position = Some(meta.position.clone());
                self.txn = None;
            }
            Event::Change(c) => {
                // A key change is a delete of the old key and an insert of the new one, as
                // Debezium logs it: the current state per key then needs only that key's entries.
                let split;
                let ops: &[Op] = match &c.op {
                    Op::Update { before: Some(before), after } if c.table.key_moved(before, after) => {
                        split = [Op::Delete { before: before.clone() }, Op::Insert { after: after.clone() }];
                        &split
                    }
                    op => std::slice::from_ref(op),
                };
                for op in ops {
                    let position = self.txn.as_ref().map(|m| format!("{}-{:08}", m.position.sortable(), self.seq));
                    self.seq += 1;
                    let (meta, content) =
                        sluice_core::json::connector_record(&c.table, op, self.txn.as_ref(), position);
                    self.push(&c.table.id, meta, content);
                }
            }
            Event::Copy(c) => {
                // A snapshot's rows come before every change (`0-r-..`); a live table's copy at its
                // place in the stream, after the transaction before it (`<position>-c..`), and a
                // copy that replaces what the log held of the table starts with a truncate.
                let base = self.last_position.as_ref().map(Position::sortable);
                match &c.step {
                    CopyStep::Begin { mode: CopyMode::Replace, .. } => {
                        let position = format!("{}-b", base.as_deref().unwrap_or("0"));
                        let (meta, _) =
                            sluice_core::json::connector_record(&c.table, &Op::Truncate, None, Some(position));
                        self.push(&c.table.id, meta, None);
                    }
                    CopyStep::Rows(rows) => {
                        for row in rows {
                            let position = match &base {
                                None => format!("0-r-{:010}", self.seq),
                                Some(p) => format!("{p}-c{:010}", self.seq),
                            };
                            self.seq += 1;
                            let op = Op::Insert { after: row.clone() };
                            let (mut meta, content) =
                                sluice_core::json::connector_record(&c.table, &op, None, Some(position));
                            meta["operation"] = "r".into();
                            self.push(&c.table.id, meta, content);
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn commit(&mut self, checkpoint: Checkpoint, ack: Ack) -> Result<(), ConnectorError> {
        let only_position = self.rows.is_empty()
            && self.stored.as_ref().is_some_and(|(s, at)| {
                at.elapsed() < POSITION_STORE_EVERY
                    && s.tables == checkpoint.tables
                    && s.table_ids == checkpoint.table_ids
            });
        if only_position {
            ack.durable();
            return Ok(());
        }
        match self.flush(&checkpoint).await {
            Ok(()) => {
                self.stored = Some((checkpoint, std::time::Instant::now()));
                ack.durable();
                Ok(())
            }
            Err(e) => {
                ack.fail(ConnectorError::msg(e.class(), e.to_string()));
                Err(e)
            }
        }
    }

    async fn close(&mut self) -> Result<(), ConnectorError> {
        if let Some(s) = self.session.take() {
            let _ = s.close().await;
        }
        Ok(())
    }
}
