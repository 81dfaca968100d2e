//! The Snowflake sink, in two modes.
//!
//! **changelog**: one table per source table with the Kafka connector's columns,
//! `RECORD_METADATA` and `RECORD_CONTENT` (VARIANT), so the connector's documented queries
//! (`RECORD_METADATA:operation::STRING`, `RECORD_CONTENT:item::INT`) work unchanged.
//!
//! **replica**: typed tables with the source's columns and key (`types`), kept equal to the
//! source: each table's changes collapse to one net operation per key (`KeyedBatch`, the last
//! change wins) and are applied set-based from a staging table.
//!
//! ```text
//!  DDL (commits in Snowflake, so never inside the flush): CREATE TABLE .. / ALTER TABLE ..
//!  flush:  BEGIN NAME SLUICE_<pipeline>_<n>
//!   log:     DELETE FROM stage; INSERT INTO stage VALUES (?, ?, ?), ..        (bound TEXT)
//!            INSERT INTO "<TABLE>" SELECT PARSE_JSON(M), PARSE_JSON(C) FROM stage WHERE T = ?
//!   replica: DELETE FROM stage; INSERT INTO stage VALUES (?, .., ?), ..       (every value TEXT)
//!            DELETE FROM "<TABLE>" t USING stage s WHERE s.op IN ('W','D') AND t.key = CAST(s.key ..)
//!            INSERT INTO "<TABLE>" (..) SELECT CAST(s.c AS <type>), .. FROM stage s WHERE s.op = 'W'
//!            UPDATE "<TABLE>" t SET c = CAST(s.c ..) FROM (..'P<n>'..) s WHERE t.key = s.key  (unchanged TOAST)
//!            DELETE FROM "<TABLE>"                                             (a truncate, in order)
//!          quarantine and dead-letter rows; DELETE + INSERT of the checkpoint row
//!          COMMIT                                                              → ack
//!  open:   SHOW TRANSACTIONS; SYSTEM$ABORT_TRANSACTION(id) of one named as ours (a predecessor
//!          that died mid-flush still holds it and its locks); read checkpoint and quarantine
//! ```
//!
//! The checkpoint is written in the flush's transaction: a crash before COMMIT leaves nothing,
//! after it everything and the position that says so, so a replay neither loses nor doubles a
//! change. DELETE + INSERT is the MERGE a replica needs (fakesnow, the test stand-in, runs no
//! MERGE inside a transaction; Snowflake runs both). A source transaction larger than `buffer`
//! is written ahead into the open Snowflake transaction, so memory stays bounded. A replica's
//! shape change needs DDL, which commits in Snowflake: what was written ahead commits first
//! (without the checkpoint; replaying a replica's changes over them leaves the same rows). A
//! change log creates a table met inside an open transaction from a second session instead, so
//! its rows never commit without their checkpoint.
//!
//! Values are always bound; names are quoted (Snowflake's upper-case for unquoted ones).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sluice_config::SchemaChanges;
use sluice_core::collapse::{Added, KeyedBatch, NetOp};
use sluice_core::json::{row_json, value_json};
use sluice_core::{
    Ack, BatchPolicy, Checkpoint, ColumnSchema, ConnectorError, CopyMode, CopyStep, ErrorClass, Event, Op, Position,
    Row, SchemaRef, Sink, SinkContext, SinkStats, TableId, TableSchema, TxnMeta, Value,
};
use tracing::{info, warn};

use crate::client::{Auth, Bind, Login, Session, SnowflakeError};
use crate::config::SnowflakeSinkConfig;
use crate::jwt::KeyPair;
use crate::types;

/// How often a position reached without rows (heartbeats) is stored: each flush is a
/// transaction that wakes a warehouse, so an idle pipeline stores its position only this often
/// (replaying from an older one re-sends nothing: no row of ours lies between).
const POSITION_STORE_EVERY: Duration = Duration::from_secs(60);

/// Bound values per multi-row INSERT into a stage. One statement per chunk rather than an
/// array binding, which fakesnow runs row by row; Snowflake takes both.
const STAGE_BINDS: usize = 3_000;

/// How long another process's open transaction of this sink must stay open before a process
/// sharing the target takes it for a dead one's (a live flush commits within seconds; aborting a
/// live one only makes that process replay it).
const STALE_AFTER: Duration = Duration::from_secs(60);

/// The stage column that says what a replica's staged row is: `W` a whole row, `D` a delete
/// (only the key), `P<n>` the n-th set of columns of rows that did not resend every value.
const OP_COLUMN: &str = "_SLUICE_OP";

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

/// A buffered change-log row: metadata and content as JSON text.
struct LogRow {
    meta: String,
    content: Option<String>,
}

/// Where one source table goes.
struct Target {
    /// The shape the table was last reconciled with
    schema: SchemaRef,
    /// `"DB"."SCHEMA"."TABLE"`
    name: String,
    /// Replica: changes collapsed per key
    batch: Option<KeyedBatch>,
    /// Replica: a snapshot copy's rows, inserted as they are into the emptied table
    rows: Vec<Row>,
    /// Replica: a snapshot copy is loading the table
    loading: bool,
    /// Change log: the rows to append
    log: Vec<LogRow>,
}

/// A unit of work, run in order inside the flush's transaction.
enum Step {
    /// Change-log rows of one table
    Log { target: String, rows: Vec<LogRow> },
    /// A replica table's net operations (`plain`: inserts into a table a snapshot emptied)
    Apply { schema: SchemaRef, target: String, ops: Vec<NetOp>, plain: bool },
    /// A statement of one table: a truncate, a row moved to a new key
    Sql { table: TableId, sql: String, binds: Vec<Bind> },
}

/// A change the target cannot hold: stored in the dead-letter table, with the flush.
struct DeadLetter {
    table: TableId,
    op: &'static str,
    row: String,
    error: String,
}

/// The sink.
pub struct SnowflakeSink {
    name: String,
    cfg: SnowflakeSinkConfig,
    pipeline: String,
    index: usize,
    session: Option<Session>,
    /// A second session for DDL while the flush's transaction is open (change log)
    side: Option<Session>,
    targets: HashMap<TableId, Target>,
    steps: Vec<Step>,
    /// The flush's Snowflake transaction is open (written ahead, not committed)
    open_txn: bool,
    txn: Option<TxnMeta>,
    seq: u32,
    /// The last transaction's position: where a copy of a live table stands in the stream
    last_position: Option<Position>,
    buffered: usize,
    bytes: usize,
    created: HashSet<String>,
    quarantine: HashMap<TableId, String>,
    quarantined: Vec<(TableId, String)>,
    dead: Vec<DeadLetter>,
    stats: Arc<SinkStats>,
    /// The last checkpoint stored, and when
    stored: Option<(Checkpoint, std::time::Instant)>,
    /// Other processes of the pipeline write this target too (`SinkContext::shared`)
    shared: bool,
    /// This process's position before the next commit: what it opened with, adopted or last
    /// stored (a shared sink's commit is refused if another process moved past it)
    known: Option<Position>,
    /// Where the transactions written since the last commit end
    written: Option<Position>,
}

impl SnowflakeSink {
    pub fn new(cfg: SnowflakeSinkConfig, pipeline: &str, index: usize) -> SnowflakeSink {
        SnowflakeSink {
            name: format!("sink[{index}] snowflake {}", cfg.mode),
            cfg,
            pipeline: pipeline.to_string(),
            index,
            session: None,
            side: None,
            targets: HashMap::new(),
            steps: Vec::new(),
            open_txn: false,
            txn: None,
            seq: 0,
            last_position: None,
            buffered: 0,
            bytes: 0,
            created: HashSet::new(),
            quarantine: HashMap::new(),
            quarantined: Vec::new(),
            dead: Vec::new(),
            stats: Arc::default(),
            stored: None,
            shared: false,
            known: None,
            written: None,
        }
    }

    fn replica(&self) -> bool {
        self.cfg.mode == "replica"
    }

    /// `"DATABASE"."SCHEMA"."NAME"`.
    fn qualified(&self, name: &str) -> String {
        qualified(&self.cfg, name)
    }

    /// The staging table of the change log, or of one replica table: a temporary table (the
    /// session's own, so processes sharing a target never see each other's rows), named
    /// unqualified as temporary tables are found in the session's database and schema.
    fn stage(&self, table: Option<&TableId>) -> String {
        match table {
            None => ident(&format!("SLUICE_STAGE_{}_{}", self.pipeline, self.index)),
            Some(t) => ident(&format!("SLUICE_STAGE_{}_{}_{}_{}", self.pipeline, self.index, t.schema, t.name)),
        }
    }

    /// The name this sink's transactions carry, so a successor can find one left open:
    /// pipeline, sink and a digest of the target (database, schema, checkpoint table), so
    /// deployments of one pipeline into other databases never take each other's for their own.
    /// Processes sharing the target (a Kafka consumer group) each add their session id.
    fn txn_name(&self) -> String {
        let base = self.txn_base();
        match (self.shared, self.session.as_ref().and_then(Session::id)) {
            (true, Some(id)) => format!("{base}_S{id}"),
            _ => base,
        }
    }

    fn txn_base(&self) -> String {
        let target = format!("{}\u{0}{}\u{0}{}", self.cfg.database, self.cfg.schema, self.cfg.checkpoint_table);
        let digest =
            target.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        format!("SLUICE_{}_{}_{:08X}", self.pipeline.to_uppercase(), self.index, digest as u32)
    }

    fn session(&self) -> Result<&Session, ConnectorError> {
        self.session
            .as_ref()
            .ok_or_else(|| ConnectorError::msg(ErrorClass::Fatal, "the snowflake sink was used before open"))
    }

    /// Aborts a transaction of ours that another session holds open (a predecessor that died
    /// between BEGIN and COMMIT): Snowflake keeps it, and its locks, until it is aborted. When
    /// processes share the target, another's open transaction may be a live flush: only one
    /// still open after [`STALE_AFTER`] is aborted (aborting a live one would only make that
    /// process replay it).
    async fn abort_predecessor(&self, s: &Session) -> Result<(), ConnectorError> {
        let base = self.txn_base();
        let own = s.id().map(|i| i.to_string());
        let shared = self.shared;
        let list = || async {
            let open = s.query("SHOW TRANSACTIONS", &[]).await?;
            let col = |name: &str| open.columns.iter().position(|c| c.eq_ignore_ascii_case(name));
            let (Some(id), Some(name), session) = (col("id"), col("name"), col("session")) else {
                return Ok::<Vec<String>, ConnectorError>(Vec::new());
            };
            Ok(open
                .rows
                .iter()
                .filter(|row| {
                    let n = row[name].as_deref().unwrap_or("").to_uppercase();
                    let ours = if shared { n.starts_with(&format!("{base}_S")) } else { n == base };
                    ours && session.and_then(|i| row[i].clone()) != own
                })
                .filter_map(|row| row[id].clone())
                .collect())
        };
        let mut stale = list().await?;
        if shared {
            // A live peer's flush ends within seconds (its next one has another id): keep only
            // transactions still open after STALE_AFTER, looking every few seconds.
            let since = std::time::Instant::now();
            while !stale.is_empty() && since.elapsed() < STALE_AFTER {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let still = list().await?;
                stale.retain(|id| still.contains(id));
            }
        }
        for id in stale {
            warn!(sink = %self.name, transaction = %id, "aborting the transaction a previous run left open");
            s.query("SELECT SYSTEM$ABORT_TRANSACTION(?)", &[Bind::one("FIXED", Some(id))]).await?;
        }
        Ok(())
    }

    /// Runs DDL: on the flush's session between transactions; a change log's while a
    /// transaction is open on a second session (its rows must not commit early).
    async fn ddl(&mut self, sql: &str) -> Result<(), ConnectorError> {
        if self.open_txn {
            if self.side.is_none() {
                self.side = Some(login(&self.cfg, &self.name).await?);
            }
            self.side.as_ref().expect("logged in").query(sql, &[]).await?;
        } else {
            self.session()?.query(sql, &[]).await?;
        }
        Ok(())
    }

    /// The target of `schema`'s table, created (or, for a replica, brought to `schema`'s shape)
    /// first. `None` when the table is (or just went) in quarantine.
    async fn target(&mut self, schema: &SchemaRef) -> Result<Option<&mut Target>, ConnectorError> {
        if self.quarantine.contains_key(&schema.id) {
            return Ok(None);
        }
        let table = self.table_name(&schema.id);
        // A change log is one table per Snowflake name (two topics may map to one table).
        let key =
            if self.replica() { schema.id.clone() } else { TableId::new(schema.id.schema.clone(), table.clone()) };
        let current = self.targets.get(&key).is_some_and(|t| t.schema.version == schema.version);
        if !current {
            let name = self.qualified(&table);
            if self.replica() {
                let seen = self.targets.get(&key).map(|t| t.schema.clone());
                if let Some(reason) = self.reconcile(schema, &table, seen.as_deref()).await? {
                    warn!(sink = %self.name, table = %schema.id, reason = %reason, "table put in quarantine; its changes are skipped");
                    self.quarantine.insert(schema.id.clone(), reason.clone());
                    self.quarantined.push((schema.id.clone(), reason));
                    self.targets.remove(&key);
                    return Ok(None);
                }
            } else if !self.created.contains(&name) {
                self.ddl(&format!(
                    "CREATE TABLE IF NOT EXISTS {name} (RECORD_METADATA VARIANT, RECORD_CONTENT VARIANT)"
                ))
                .await?;
                self.created.insert(name.clone());
            }
            let replica = self.replica();
            let t = self.targets.entry(key.clone()).or_insert_with(|| Target {
                schema: schema.clone(),
                name,
                batch: None,
                rows: Vec::new(),
                loading: false,
                log: Vec::new(),
            });
            t.schema = schema.clone();
            t.batch = replica.then(|| KeyedBatch::new(schema.clone()));
        }
        Ok(self.targets.get_mut(&key))
    }

    /// The Snowflake table (unquoted, upper-cased when quoted) of source table `id`: the
    /// `topic2table` entry of the record's topic for a Kafka source, else the table's name.
    fn table_name(&self, id: &TableId) -> String {
        if let Some(TxnMeta { position: Position::Kafka(at), .. }) = &self.txn {
            if let Some(t) = at.entries().next().and_then(|(topic, ..)| self.cfg.topic2table.get(topic)) {
                return t.clone();
            }
        }
        id.name.clone()
    }

    /// Creates the replica table or changes its shape to `schema`'s; `Some(reason)` when the
    /// `schema_changes` policy (or data safety) forbids it. DDL commits in Snowflake, so when a
    /// transaction is open (written ahead), or the table has changes of its old shape pending,
    /// those are written and committed first, after the same overtaken/fenced check as a flush
    /// (a replica's changes replayed over them leave the same rows).
    async fn reconcile(
        &mut self,
        schema: &TableSchema,
        table: &str,
        seen: Option<&TableSchema>,
    ) -> Result<Option<String>, ConnectorError> {
        let key = schema.id.clone();
        if schema.key_indexes().is_empty() {
            // What the table's keyed shape buffered still goes out, in order.
            self.drain_table(&key);
            return Ok(Some(format!(
                "table {} has no primary key (nor a unique key the source logs rows by); a Snowflake replica applies \
                 changes by key: add one on the source, then release the table (sluice tables --release {}), or use \
                 mode = \"changelog\"",
                schema.id, schema.id
            )));
        }
        let name = self.qualified(table);
        if let Some(other) = self.targets.iter().find(|(id, t)| **id != key && t.name == name).map(|(id, _)| id.clone())
        {
            return Ok(Some(format!(
                "table {} maps to {name}, which already holds {other}: Snowflake names are upper-cased and take no \
                 source schema; select one of them into another pipeline (or another database), then release it",
                schema.id
            )));
        }
        if self.open_txn || self.pending_for(&key) {
            self.write_out().await?;
            self.commit_early(&schema.id).await?;
        }
        let existing = table_columns(self.session()?, &self.cfg, table).await?;
        let mut ddl: Vec<(String, Vec<Bind>)> = Vec::new();
        if existing.is_empty() {
            let mut defs: Vec<String> = schema
                .columns
                .iter()
                .map(|c| {
                    format!("{} {}{}", ident(&c.name), types::column_type(c), if c.key { " NOT NULL" } else { "" })
                })
                .collect();
            let keys: Vec<String> = schema.columns.iter().filter(|c| c.key).map(|c| ident(&c.name)).collect();
            defs.push(format!("PRIMARY KEY ({})", keys.join(", ")));
            ddl.push((format!("CREATE TABLE IF NOT EXISTS {name} ({})", defs.join(", ")), Vec::new()));
        } else {
            match shape_changes(&name, schema, seen, &existing, self.cfg.schema_changes) {
                Ok(mut changes) => ddl.append(&mut changes),
                Err(reason) => return Ok(Some(reason)),
            }
        }
        for (sql, binds) in &ddl {
            self.session()?.query(sql, binds).await?;
            info!(sink = %self.name, table = %schema.id, statement = %sql, "table created or changed");
        }
        let mut stage: Vec<String> = schema.columns.iter().map(|c| format!("{} TEXT", ident(&c.name))).collect();
        stage.push(format!("{} TEXT", ident(OP_COLUMN)));
        let stage =
            format!("CREATE OR REPLACE TEMPORARY TABLE {} ({})", self.stage(Some(&schema.id)), stage.join(", "));
        self.session()?.query(&stage, &[]).await?;
        Ok(None)
    }

    /// Whether the table has changes buffered or steps waiting.
    fn pending_for(&self, id: &TableId) -> bool {
        let buffered = self.targets.get(id).is_some_and(|t| {
            !t.rows.is_empty() || !t.log.is_empty() || t.batch.as_ref().is_some_and(|b| !b.is_empty())
        });
        buffered
            || self.steps.iter().any(|s| match s {
                Step::Apply { schema, .. } => schema.id == *id,
                Step::Sql { table, .. } => table == id,
                Step::Log { .. } => false,
            })
    }

    /// Commits the open transaction without a checkpoint (DDL must follow), once the stored
    /// checkpoint shows no other process applied what it holds.
    async fn commit_early(&mut self, why: &TableId) -> Result<(), ConnectorError> {
        if !self.open_txn {
            return Ok(());
        }
        let mut upto = Checkpoint { position: self.known.clone(), ..Default::default() };
        if let Some(w) = &self.written {
            Position::advance_into(&mut upto.position, w);
        }
        self.guard(&upto).await?;
        info!(sink = %self.name, table = %why, "DDL for a new table shape: committing what was written ahead first");
        self.session()?.query("COMMIT", &[]).await?;
        self.open_txn = false;
        Ok(())
    }

    /// Moves what is buffered into steps: each table's rows, then its net operations.
    fn drain(&mut self) {
        let mut ids: Vec<TableId> = self.targets.keys().cloned().collect();
        ids.sort();
        for id in ids {
            self.drain_table(&id);
        }
        self.buffered = 0;
        self.bytes = 0;
    }

    fn drain_table(&mut self, id: &TableId) {
        let Some(t) = self.targets.get_mut(id) else { return };
        if !t.log.is_empty() {
            self.steps.push(Step::Log { target: t.name.clone(), rows: std::mem::take(&mut t.log) });
        }
        if !t.rows.is_empty() {
            let ops = std::mem::take(&mut t.rows).into_iter().map(NetOp::Insert).collect();
            self.steps.push(Step::Apply { schema: t.schema.clone(), target: t.name.clone(), ops, plain: true });
        }
        if let Some(b) = t.batch.as_mut().filter(|b| !b.is_empty()) {
            let schema = b.schema().clone();
            let ops = std::mem::replace(b, KeyedBatch::new(schema.clone())).into_ops();
            self.steps.push(Step::Apply { schema, target: t.name.clone(), ops, plain: false });
        }
    }

    /// Runs what is buffered inside the flush's transaction (opened if needed); nothing commits.
    async fn write_out(&mut self) -> Result<(), ConnectorError> {
        self.drain();
        if self.steps.is_empty() {
            return Ok(());
        }
        let steps = std::mem::take(&mut self.steps);
        let r = self.run_steps(steps).await;
        self.fail_on(r).await
    }

    /// Rolls the open transaction back when `r` failed (the runtime replays from the
    /// checkpoint).
    async fn fail_on<T>(&mut self, r: Result<T, ConnectorError>) -> Result<T, ConnectorError> {
        if r.is_err() && self.open_txn {
            self.open_txn = false;
            if let Some(s) = &self.session {
                let _ = s.query("ROLLBACK", &[]).await;
            }
        }
        r
    }

    async fn begin(&mut self) -> Result<(), ConnectorError> {
        if !self.open_txn {
            let sql = format!("BEGIN NAME {}", self.txn_name());
            self.session()?.query(&sql, &[]).await?;
            self.open_txn = true;
        }
        Ok(())
    }

    async fn run_steps(&mut self, steps: Vec<Step>) -> Result<(), ConnectorError> {
        self.begin().await?;
        for step in steps {
            match step {
                Step::Log { target, rows } => self.append_log(&target, &rows).await?,
                Step::Apply { schema, target, ops, plain } => self.apply(&schema, &target, ops, plain).await?,
                Step::Sql { sql, binds, .. } => {
                    self.session()?.query(&sql, &binds).await?;
                }
            }
        }
        Ok(())
    }

    /// Fills `stage` with `rows` of `width` bound text values each, in multi-row INSERTs.
    async fn fill_stage(&self, stage: &str, width: usize, rows: &[Vec<Option<String>>]) -> Result<(), ConnectorError> {
        let s = self.session()?;
        s.query(&format!("DELETE FROM {stage}"), &[]).await?;
        let placeholders = format!("({})", vec!["?"; width].join(", "));
        for chunk in rows.chunks((STAGE_BINDS / width).max(1)) {
            let binds: Vec<Bind> = chunk.iter().flatten().map(|v| Bind::one("TEXT", v.clone())).collect();
            let values = vec![placeholders.as_str(); chunk.len()].join(", ");
            s.query(&format!("INSERT INTO {stage} VALUES {values}"), &binds).await?;
        }
        Ok(())
    }

    async fn append_log(&self, target: &str, rows: &[LogRow]) -> Result<(), ConnectorError> {
        let stage = self.stage(None);
        let staged: Vec<Vec<Option<String>>> =
            rows.iter().map(|r| vec![Some(target.to_string()), Some(r.meta.clone()), r.content.clone()]).collect();
        self.fill_stage(&stage, 3, &staged).await?;
        self.session()?
            .query(
                &format!("INSERT INTO {target} SELECT PARSE_JSON(M), PARSE_JSON(C) FROM {stage} WHERE T = ?"),
                &[Bind::text(target.to_string())],
            )
            .await?;
        Ok(())
    }

    /// Applies a replica table's net operations: staged as text, then one DELETE .. USING for
    /// every key written or deleted, one INSERT .. SELECT of the whole rows, and an UPDATE per
    /// set of columns of rows that did not resend every value.
    async fn apply(
        &mut self,
        schema: &TableSchema,
        target: &str,
        ops: Vec<NetOp>,
        plain: bool,
    ) -> Result<(), ConnectorError> {
        let keys = schema.key_indexes();
        let width = schema.columns.len() + 1;
        let mut staged: Vec<Vec<Option<String>>> = Vec::with_capacity(ops.len());
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let (mut whole, mut deletes) = (false, false);
        for op in ops {
            let (row, tag) = match &op {
                NetOp::Delete(key) => {
                    let mut row = vec![Value::Unchanged; schema.columns.len()];
                    for (i, v) in keys.iter().zip(key) {
                        row[*i] = v.clone();
                    }
                    (row, "D".to_string())
                }
                NetOp::Insert(r) | NetOp::Update(r) | NetOp::Upsert(r) if r.contains(&Value::Unchanged) => {
                    let sent: Vec<usize> = (0..r.len()).filter(|i| r[*i] != Value::Unchanged).collect();
                    let n = match groups.iter().position(|g| *g == sent) {
                        Some(n) => n,
                        None => {
                            groups.push(sent);
                            groups.len() - 1
                        }
                    };
                    (r.clone(), format!("P{n}"))
                }
                NetOp::Insert(r) | NetOp::Update(r) | NetOp::Upsert(r) => (r.clone(), "W".to_string()),
            };
            let mut values = Vec::with_capacity(width);
            let mut bad = None;
            for (c, v) in schema.columns.iter().zip(&row) {
                match types::stage_text(c, v) {
                    Ok(t) => values.push(t),
                    Err(e) => {
                        bad = Some(format!("column {}: {e}", c.name));
                        break;
                    }
                }
            }
            if let Some(error) = bad {
                self.dead_letter(schema, &op, error);
                continue;
            }
            whole |= tag == "W";
            deletes |= tag == "D";
            values.push(Some(tag));
            staged.push(values);
        }
        if staged.is_empty() {
            return Ok(());
        }
        let stage = self.stage(Some(&schema.id));
        self.fill_stage(&stage, width, &staged).await?;
        let s = self.session()?;
        let key_match: Vec<String> = keys
            .iter()
            .map(|i| {
                let c = &schema.columns[*i];
                format!("t.{} = {}", ident(&c.name), types::cast(c, &format!("s.{}", ident(&c.name))))
            })
            .collect();
        let key_match = key_match.join(" AND ");
        let op = ident(OP_COLUMN);
        if !plain && (whole || deletes) {
            s.query(
                &format!("DELETE FROM {target} AS t USING {stage} AS s WHERE s.{op} IN ('W', 'D') AND {key_match}"),
                &[],
            )
            .await?;
        }
        if whole {
            let cols: Vec<String> = schema.columns.iter().map(|c| ident(&c.name)).collect();
            let casts: Vec<String> =
                schema.columns.iter().map(|c| types::cast(c, &format!("s.{}", ident(&c.name)))).collect();
            s.query(
                &format!(
                    "INSERT INTO {target} ({}) SELECT {} FROM {stage} AS s WHERE s.{op} = 'W'",
                    cols.join(", "),
                    casts.join(", ")
                ),
                &[],
            )
            .await?;
        }
        for (n, sent) in groups.iter().enumerate() {
            let set: Vec<String> = sent
                .iter()
                .filter(|i| !keys.contains(i))
                .map(|i| {
                    let c = &schema.columns[*i];
                    format!("{} = {}", ident(&c.name), types::cast(c, &format!("s.{}", ident(&c.name))))
                })
                .collect();
            if set.is_empty() {
                continue;
            }
            s.query(
                &format!(
                    "UPDATE {target} AS t SET {} FROM (SELECT * FROM {stage} WHERE {op} = ?) AS s WHERE {key_match}",
                    set.join(", ")
                ),
                &[Bind::text(format!("P{n}"))],
            )
            .await?;
        }
        Ok(())
    }

    fn dead_letter(&mut self, schema: &TableSchema, op: &NetOp, error: String) {
        let (kind, row) = match op {
            NetOp::Upsert(r) | NetOp::Insert(r) | NetOp::Update(r) => ("upsert", row_json(schema, r)),
            NetOp::Delete(k) => {
                let keys = schema.columns.iter().filter(|c| c.key).map(|c| c.name.clone());
                ("delete", serde_json::Value::Object(keys.zip(k.iter().map(value_json)).collect()))
            }
        };
        warn!(sink = %self.name, table = %schema.id, op = kind, error = %error, "change sent to the dead-letter table");
        self.stats.dead_letters.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dead.push(DeadLetter { table: schema.id.clone(), op: kind, row: row.to_string(), error });
    }

    /// A row moved to a new key without resending some values: its key and the values sent
    /// are updated in place. A row already under the new key (a replay over a commit that held
    /// the move) is removed first, and only while the old key still exists, so a replay leaves
    /// one row.
    fn move_steps(target: &str, schema: &TableSchema, old_key: &[Value], row: &Row) -> Result<Vec<Step>, String> {
        let text = |c: &ColumnSchema, v: &Value| {
            types::stage_text(c, v).map(|t| Bind::one("TEXT", t)).map_err(|e| format!("column {}: {e}", c.name))
        };
        let (mut set, mut set_binds) = (Vec::new(), Vec::new());
        for (c, v) in schema.columns.iter().zip(row) {
            if *v != Value::Unchanged {
                set.push(format!("{} = {}", ident(&c.name), types::cast(c, "?")));
                set_binds.push(text(c, v)?);
            }
        }
        let (mut old, mut old_binds, mut new, mut new_binds) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, v) in schema.key_indexes().into_iter().zip(old_key) {
            let c = &schema.columns[i];
            old.push(format!("o.{} = {}", ident(&c.name), types::cast(c, "?")));
            old_binds.push(text(c, v)?);
            new.push(format!("{} = {}", ident(&c.name), types::cast(c, "?")));
            new_binds.push(text(c, &row[i])?);
        }
        let mut delete_binds = new_binds;
        delete_binds.extend(old_binds.iter().cloned());
        let mut update_binds = set_binds;
        update_binds.extend(old_binds);
        let old_here = old.iter().map(|w| w.trim_start_matches("o.").to_string()).collect::<Vec<_>>().join(" AND ");
        Ok(vec![
            Step::Sql {
                table: schema.id.clone(),
                sql: format!(
                    "DELETE FROM {target} WHERE {} AND EXISTS (SELECT 1 FROM {target} AS o WHERE {})",
                    new.join(" AND "),
                    old.join(" AND ")
                ),
                binds: delete_binds,
            },
            Step::Sql {
                table: schema.id.clone(),
                sql: format!("UPDATE {target} SET {} WHERE {old_here}", set.join(", ")),
                binds: update_binds,
            },
        ])
    }

    /// Counts a buffered row and writes ahead when the buffer is full.
    async fn after_row(&mut self, bytes: usize) -> Result<(), ConnectorError> {
        self.buffered += 1;
        self.bytes += bytes;
        if self.cfg.buffer.reached(self.buffered, self.bytes) {
            self.write_out().await?;
        }
        Ok(())
    }

    async fn push_log(
        &mut self,
        table: &SchemaRef,
        meta: serde_json::Value,
        content: Option<serde_json::Value>,
    ) -> Result<(), ConnectorError> {
        let meta = meta.to_string();
        let content = content.map(|c| c.to_string());
        let bytes = meta.len() + content.as_ref().map_or(0, String::len) + 32;
        let Some(t) = self.target(table).await? else { return Ok(()) };
        t.log.push(LogRow { meta, content });
        self.after_row(bytes).await
    }

    async fn change(&mut self, table: &SchemaRef, op: Cow<'_, Op>) -> Result<(), ConnectorError> {
        let bytes = match &*op {
            Op::Insert { after } | Op::Update { after, .. } => after.iter().map(Value::approx_bytes).sum(),
            Op::Delete { before } => before.iter().map(Value::approx_bytes).sum(),
            Op::Truncate => 0,
        };
        if !self.replica() {
            // A key change is a delete of the old key and an insert of the new one, as Debezium
            // logs it: the current state per key then needs only that key's entries.
            let ops: Vec<Op> = match &*op {
                Op::Update { before: Some(before), after } if table.key_moved(before, after) => {
                    vec![Op::Delete { before: before.clone() }, Op::Insert { after: after.clone() }]
                }
                _ => vec![op.into_owned()],
            };
            for op in &ops {
                let position = self.txn.as_ref().map(|m| format!("{}-{:08}", m.position.sortable(), self.seq));
                self.seq += 1;
                let (meta, content) = sluice_core::json::connector_record(table, op, self.txn.as_ref(), position);
                self.push_log(table, meta, content).await?;
            }
            return Ok(());
        }
        let Some(t) = self.target(table).await? else { return Ok(()) };
        let name = t.name.clone();
        let batch = t.batch.as_mut().expect("a replica target has a batch");
        match batch.add(op) {
            Added::Buffered { .. } => {}
            Added::Truncate => {
                // What the batch held before is void; the table is emptied in order.
                self.drain_table(&table.id);
                self.steps.push(Step::Sql {
                    table: table.id.clone(),
                    sql: format!("DELETE FROM {name}"),
                    binds: Vec::new(),
                });
            }
            Added::MoveRow { old_key, row } => {
                self.drain_table(&table.id);
                match Self::move_steps(&name, table, &old_key, &row) {
                    Ok(steps) => self.steps.extend(steps),
                    Err(e) => self.dead_letter(table, &NetOp::Upsert(row), e),
                }
            }
        }
        self.after_row(bytes).await
    }

    async fn copy(&mut self, c: &sluice_core::Copy) -> Result<(), ConnectorError> {
        if !self.replica() {
            return self.copy_to_log(c).await;
        }
        match &c.step {
            CopyStep::Begin { mode, .. } => {
                let Some(t) = self.target(&c.table).await? else { return Ok(()) };
                if mode.empties() {
                    // Rows the replica held of the table before are void.
                    t.batch = Some(KeyedBatch::new(c.table.clone()));
                    t.rows.clear();
                    t.loading = *mode == CopyMode::Snapshot;
                    let name = t.name.clone();
                    self.steps.push(Step::Sql {
                        table: c.table.id.clone(),
                        sql: format!("DELETE FROM {name}"),
                        binds: Vec::new(),
                    });
                }
            }
            CopyStep::Rows(rows) => {
                for row in rows {
                    let bytes = row.iter().map(Value::approx_bytes).sum();
                    let Some(t) = self.target(&c.table).await? else { return Ok(()) };
                    if t.loading {
                        t.rows.push(row.clone());
                    } else if let Some(b) = t.batch.as_mut() {
                        b.add_copied(row.clone());
                    }
                    self.after_row(bytes).await?;
                }
            }
            CopyStep::Bulk(_) => {
                return Err(ConnectorError::msg(
                    ErrorClass::Fatal,
                    "the snowflake sink was sent rows in a bulk format it does not accept",
                ))
            }
            CopyStep::Progress { .. } => {}
            CopyStep::End => {
                self.drain_table(&c.table.id);
                if let Some(t) = self.targets.get_mut(&c.table.id) {
                    t.loading = false;
                }
            }
        }
        Ok(())
    }

    /// A copy in the change log: a snapshot's rows come before every change (`0-r-..`); a live
    /// table's copy at its place in the stream, after the transaction before it
    /// (`<position>-c..`), and a copy that replaces what the log held of the table starts with
    /// a truncate.
    async fn copy_to_log(&mut self, c: &sluice_core::Copy) -> Result<(), ConnectorError> {
        let base = self.last_position.as_ref().map(Position::sortable);
        match &c.step {
            CopyStep::Begin { mode: CopyMode::Replace, .. } => {
                let position = format!("{}-b", base.as_deref().unwrap_or("0"));
                let (meta, _) = sluice_core::json::connector_record(&c.table, &Op::Truncate, None, Some(position));
                self.push_log(&c.table, meta, None).await?;
            }
            CopyStep::Begin { .. } => {
                self.target(&c.table).await?;
            }
            CopyStep::Rows(rows) => {
                for row in rows {
                    let position = match &base {
                        None => format!("0-r-{:010}", self.seq),
                        Some(p) => format!("{p}-c{:010}", self.seq),
                    };
                    self.seq += 1;
                    let op = Op::Insert { after: row.clone() };
                    let (mut meta, content) = sluice_core::json::connector_record(&c.table, &op, None, Some(position));
                    meta["operation"] = "r".into();
                    self.push_log(&c.table, meta, content).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn write_one(&mut self, event: &Event) -> Result<(), ConnectorError> {
        match event {
            Event::Begin(meta) => {
                self.txn = Some(meta.clone());
                self.seq = 0;
            }
            Event::Commit { meta, position } => {
                self.last_position = Some(meta.position.clone());
                self.txn = None;
                Position::advance_into(&mut self.written, position);
            }
            Event::Change(c) => self.change(&c.table, Cow::Borrowed(&c.op)).await?,
            Event::Copy(c) => self.copy(c).await?,
            _ => {}
        }
        Ok(())
    }

    /// Everything buffered, the quarantine and dead-letter records and the checkpoint, in the
    /// flush's transaction, committed.
    async fn flush(&mut self, checkpoint: &Checkpoint) -> Result<(), ConnectorError> {
        self.drain();
        let steps = std::mem::take(&mut self.steps);
        self.run_steps(steps).await?;
        let position = checkpoint.position.as_ref().map(|p| p.to_string());
        let s = self.session()?;
        let (pipeline, sink) = (self.pipeline.clone(), self.index.to_string());
        for (t, reason) in &self.quarantined {
            let q = self.qualified(QUARANTINE_TABLE);
            let who = [Bind::text(&pipeline), Bind::one("FIXED", Some(sink.clone()))];
            let mut binds = who.to_vec();
            binds.extend([Bind::text(&t.schema), Bind::text(&t.name)]);
            s.query(
                &format!("DELETE FROM {q} WHERE PIPELINE = ? AND SINK = ? AND SOURCE_SCHEMA = ? AND SOURCE_TABLE = ?"),
                &binds,
            )
            .await?;
            binds.extend([Bind::text(reason), Bind::one("TEXT", position.clone())]);
            s.query(&format!("INSERT INTO {q} VALUES (?, ?, ?, ?, ?, ?, CURRENT_TIMESTAMP())"), &binds).await?;
        }
        for d in &self.dead {
            let binds = [
                Bind::text(&pipeline),
                Bind::one("FIXED", Some(sink.clone())),
                Bind::text(d.table.to_string()),
                Bind::text(d.op),
                Bind::text(&d.row),
                Bind::text(&d.error),
                Bind::one("TEXT", position.clone()),
            ];
            s.query(
                &format!(
                    "INSERT INTO {} VALUES (?, ?, ?, ?, ?, ?, ?, CURRENT_TIMESTAMP())",
                    self.qualified(DEAD_LETTER_TABLE)
                ),
                &binds,
            )
            .await?;
        }
        let ckpt = self.qualified(&self.cfg.checkpoint_table);
        let to_store = self.guard(checkpoint).await?;
        let s = self.session()?;
        s.query(&format!("DELETE FROM {ckpt} WHERE PIPELINE = ? AND SINK = ?"), &self.key()).await?;
        let mut binds = self.key().to_vec();
        binds.push(Bind::text(to_store.to_json()));
        s.query(&format!("INSERT INTO {ckpt} VALUES (?, ?, ?)"), &binds).await?;
        sluice_core::crash_point("sink.before_commit");
        s.query("COMMIT", &[]).await?;
        self.open_txn = false;
        sluice_core::crash_point("sink.after_commit");
        self.quarantined.clear();
        self.dead.clear();
        Ok(())
    }

    /// Inside the flush's transaction: what to store for `checkpoint`, after checking that no
    /// other process moved the target past this one. A shared target's row is locked (an
    /// `UPDATE` Snowflake holds to COMMIT) and `checkpoint` merged into it, refused for a
    /// partition another process applied past what this one knew; a single writer's stored
    /// position past `checkpoint` means another process wrote the target (this one is fenced).
    async fn guard(&self, checkpoint: &Checkpoint) -> Result<Checkpoint, ConnectorError> {
        let s = self.session()?;
        let ckpt = self.qualified(&self.cfg.checkpoint_table);
        if self.shared {
            s.query(&format!("UPDATE {ckpt} SET STATE = STATE WHERE PIPELINE = ? AND SINK = ?"), &self.key()).await?;
        }
        let stored = read_checkpoint(s, &self.cfg, &self.pipeline, self.index).await?;
        Ok(match stored {
            Some(stored) if self.shared => checkpoint
                .merge_shared(&stored, self.known.as_ref())
                .map_err(|e| ConnectorError::msg(ErrorClass::Transient, format!("{}: {e}", self.name)))?,
            Some(stored) => {
                if let (Some(old), Some(new)) = (&stored.position, &checkpoint.position) {
                    if old != new && old.includes(new) {
                        return Err(ConnectorError::msg(
                            ErrorClass::Fatal,
                            format!(
                                "{}: the checkpoint of pipeline {:?} in {ckpt} is at {old}, past this process's {new}: \
                                 another sluice process has been writing this target for the same pipeline. This one \
                                 stops so the target never moves backwards; run one process per pipeline",
                                self.name, self.pipeline
                            ),
                        ));
                    }
                }
                checkpoint.clone()
            }
            None => checkpoint.clone(),
        })
    }

    fn key(&self) -> [Bind; 2] {
        [Bind::text(self.pipeline.clone()), Bind::one("FIXED", Some(self.index.to_string()))]
    }
}

/// The table of quarantined source tables, next to the checkpoint table.
pub const QUARANTINE_TABLE: &str = "SLUICE_QUARANTINE";
/// The table of changes the target refused.
pub const DEAD_LETTER_TABLE: &str = "SLUICE_DEAD_LETTERS";

fn qualified(cfg: &SnowflakeSinkConfig, name: &str) -> String {
    format!("{}.{}.{}", ident(&cfg.database), ident(&cfg.schema), ident(name))
}

/// Logs in as the configured user.
pub async fn login(cfg: &SnowflakeSinkConfig, who: &str) -> Result<Session, ConnectorError> {
    let auth = match (&cfg.private_key_file, &cfg.password) {
        (Some(file), _) => {
            let fail =
                |e: String| ConnectorError::msg(ErrorClass::Fatal, format!("{who}: private_key_file {file}: {e}"));
            let pem = std::fs::read_to_string(file).map_err(|e| fail(e.to_string()))?;
            Auth::KeyPair(Arc::new(KeyPair::from_pem(&pem).map_err(|e| fail(e.to_string()))?))
        }
        (None, Some(p)) => Auth::Password(p.expose().clone()),
        (None, None) => return Err(ConnectorError::msg(ErrorClass::Fatal, "no credentials configured")),
    };
    let login = Login {
        url: cfg.service_url(),
        account: cfg.account.clone(),
        user: cfg.user.clone(),
        auth,
        role: cfg.role.clone(),
        warehouse: cfg.warehouse.clone(),
        database: Some(cfg.database.clone()),
        schema: Some(cfg.schema.clone()),
    };
    Ok(Session::login(&login).await?)
}

/// A table's columns `(NAME, catalog type)` in order; empty when there is no such table.
async fn table_columns(
    s: &Session,
    cfg: &SnowflakeSinkConfig,
    table: &str,
) -> Result<Vec<(String, String)>, ConnectorError> {
    let r = s
        .query(
            &format!(
                "SELECT COLUMN_NAME, DATA_TYPE, NUMERIC_PRECISION, NUMERIC_SCALE FROM {}.INFORMATION_SCHEMA.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                ident(&cfg.database)
            ),
            &[Bind::text(cfg.schema.to_uppercase()), Bind::text(table.to_uppercase())],
        )
        .await?;
    let num = |v: &Option<String>| v.as_deref().and_then(|s| s.parse::<u32>().ok());
    Ok(r.rows
        .iter()
        .filter_map(|row| {
            let name = row.first()?.clone()?;
            let t = row.get(1)?.clone()?;
            Some((name, types::catalog_type(&t, num(&row[2]), num(&row[3]))))
        })
        .collect())
}

/// The DDL that brings a replica table with `existing` columns to `schema`'s shape under
/// `policy`; `Err(reason)` to quarantine it instead:
/// - a column the target lacks is added (`freeze`: quarantine);
/// - a NUMBER whose precision grew (same scale) is widened; any other type change quarantines
///   the table (Snowflake changes no other type in place);
/// - a column that left the source is dropped under `follow` if this run saw it on the source
///   (a replica's own columns are never touched), kept otherwise (NULL in new rows);
/// - under `follow`, a column that left and one that arrived at the same position with the same
///   type are a rename.
fn shape_changes(
    name: &str,
    schema: &TableSchema,
    seen: Option<&TableSchema>,
    existing: &[(String, String)],
    policy: SchemaChanges,
) -> Result<Vec<(String, Vec<Bind>)>, String> {
    let up = |s: &str| s.to_uppercase();
    let seen_names: Vec<String> = seen.map(|s| s.columns.iter().map(|c| up(&c.name)).collect()).unwrap_or_default();
    let gone: Vec<&(String, String)> = existing
        .iter()
        .filter(|(n, _)| !schema.columns.iter().any(|c| up(&c.name) == *n) && seen_names.contains(n))
        .collect();
    let mut ddl: Vec<(String, Vec<Bind>)> = Vec::new();
    let mut renamed = Vec::new();
    for (pos, c) in schema.columns.iter().enumerate() {
        let wanted = types::wanted_catalog_type(c);
        match existing.iter().find(|(n, _)| *n == up(&c.name)) {
            Some((_, have)) if *have == wanted => {}
            Some((_, have)) => {
                if policy == SchemaChanges::Freeze {
                    return Err(format!(
                        "column {} of {} changed type from {have} to {wanted}, and schema_changes = \"freeze\"",
                        c.name, schema.id
                    ));
                }
                if !types::widens(have, &wanted) {
                    return Err(format!(
                        "column {} of {} changed type from {have} to {wanted}, which Snowflake cannot change in place \
                         without losing data; rebuild the table (drop it), then release it (sluice tables --release {})",
                        c.name, schema.id, schema.id
                    ));
                }
                ddl.push((
                    format!("ALTER TABLE {name} ALTER COLUMN {} SET DATA TYPE {wanted}", ident(&c.name)),
                    Vec::new(),
                ));
            }
            None => {
                if policy == SchemaChanges::Freeze {
                    return Err(format!(
                        "column {} was added to {} on the source, and schema_changes = \"freeze\"",
                        c.name, schema.id
                    ));
                }
                let old = (policy == SchemaChanges::Follow)
                    .then(|| seen.and_then(|s| s.columns.get(pos)))
                    .flatten()
                    .filter(|old| old.name != c.name && gone.iter().any(|(n, t)| *n == up(&old.name) && *t == wanted));
                match old {
                    Some(old) => {
                        ddl.push((
                            format!("ALTER TABLE {name} RENAME COLUMN {} TO {}", ident(&old.name), ident(&c.name)),
                            Vec::new(),
                        ));
                        renamed.push(up(&old.name));
                    }
                    None => match c.missing_value.as_ref().and_then(|v| types::stage_text(c, v).ok().flatten()) {
                        None => ddl.push((
                            format!("ALTER TABLE {name} ADD COLUMN {} {}", ident(&c.name), types::column_type(c)),
                            Vec::new(),
                        )),
                        Some(text) => {
                            // Rows written before the column existed read as its default: the
                            // column is filled under a working name and renamed once full, so a
                            // crash in between leaves no column half filled (the next run starts
                            // over).
                            let work = ident(&format!("{}__SLUICE_ADDING", c.name));
                            ddl.push((format!("ALTER TABLE {name} DROP COLUMN IF EXISTS {work}"), Vec::new()));
                            ddl.push((
                                format!("ALTER TABLE {name} ADD COLUMN {work} {}", types::column_type(c)),
                                Vec::new(),
                            ));
                            ddl.push((
                                format!("UPDATE {name} SET {work} = {}", types::cast(c, "?")),
                                vec![Bind::text(text)],
                            ));
                            ddl.push((
                                format!("ALTER TABLE {name} RENAME COLUMN {work} TO {}", ident(&c.name)),
                                Vec::new(),
                            ));
                        }
                    },
                }
            }
        }
    }
    if policy == SchemaChanges::Follow {
        for (n, _) in gone {
            if !renamed.contains(n) {
                ddl.push((format!("ALTER TABLE {name} DROP COLUMN {}", ident(n)), Vec::new()));
            }
        }
    }
    Ok(ddl)
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

    async fn open(&mut self, ctx: SinkContext) -> Result<Option<Checkpoint>, ConnectorError> {
        self.stats = ctx.stats;
        self.shared = ctx.shared;
        self.close().await?;
        self.targets.clear();
        self.steps.clear();
        self.dead.clear();
        self.quarantined.clear();
        self.buffered = 0;
        self.bytes = 0;
        self.created.clear();
        let s = login(&self.cfg, &self.name).await?;
        self.abort_predecessor(&s).await?;
        let ckpt = self.qualified(&self.cfg.checkpoint_table);
        let (q, dl) = (self.qualified(QUARANTINE_TABLE), self.qualified(DEAD_LETTER_TABLE));
        s.query(&format!("CREATE TABLE IF NOT EXISTS {ckpt} (PIPELINE TEXT, SINK NUMBER, STATE TEXT)"), &[]).await?;
        if self.replica() {
            s.query(
                &format!(
                    "CREATE TABLE IF NOT EXISTS {q} (PIPELINE TEXT, SINK NUMBER, SOURCE_SCHEMA TEXT, SOURCE_TABLE TEXT, \
                     REASON TEXT, POSITION TEXT, SINCE TIMESTAMP_TZ)"
                ),
                &[],
            )
            .await?;
            s.query(
                &format!(
                    "CREATE TABLE IF NOT EXISTS {dl} (PIPELINE TEXT, SINK NUMBER, SOURCE_TABLE TEXT, OP TEXT, \
                     ROW_JSON TEXT, ERROR TEXT, POSITION TEXT, FAILED_AT TIMESTAMP_TZ)"
                ),
                &[],
            )
            .await?;
            self.quarantine = read_quarantine(&s, &self.cfg, &self.pipeline, self.index)
                .await?
                .into_iter()
                .map(|(t, reason, _, _)| (t, reason))
                .collect();
            for (t, reason) in &self.quarantine {
                warn!(sink = %self.name, table = %t, reason = %reason, "table is in quarantine; its changes are skipped");
            }
        } else {
            s.query(&format!("CREATE OR REPLACE TEMPORARY TABLE {} (T TEXT, M TEXT, C TEXT)", self.stage(None)), &[])
                .await?;
        }
        if self.shared {
            // A row for the first commit's lock to hold (processes starting together would
            // otherwise both find none and overwrite each other's offsets).
            let mut binds = self.key().to_vec();
            binds.extend(self.key());
            s.query(
                &format!(
                    "INSERT INTO {ckpt} SELECT ?, ?, NULL WHERE NOT EXISTS \
                     (SELECT 1 FROM {ckpt} WHERE PIPELINE = ? AND SINK = ?)"
                ),
                &binds,
            )
            .await?;
        }
        let checkpoint = read_checkpoint(&s, &self.cfg, &self.pipeline, self.index).await?;
        self.last_position = checkpoint.as_ref().and_then(|c| c.position.clone());
        self.known = self.last_position.clone();
        self.written = None;
        self.stored = checkpoint.clone().map(|c| (c, std::time::Instant::now()));
        info!(sink = %self.name, database = %self.cfg.database, schema = %self.cfg.schema, "sink opened");
        self.session = Some(s);
        Ok(checkpoint)
    }

    async fn write(&mut self, event: &Event) -> Result<(), ConnectorError> {
        let r = self.write_one(event).await;
        self.fail_on(r).await
    }

    async fn write_batch(&mut self, events: Vec<Arc<Event>>) -> Result<(), ConnectorError> {
        for ev in events {
            let r = match Arc::try_unwrap(ev) {
                Ok(Event::Change(c)) => self.change(&c.table, Cow::Owned(c.op)).await,
                Ok(other) => self.write_one(&other).await,
                Err(shared) => self.write_one(&shared).await,
            };
            self.fail_on(r).await?;
        }
        Ok(())
    }

    async fn commit(&mut self, checkpoint: Checkpoint, ack: Ack) -> Result<(), ConnectorError> {
        let idle = !self.open_txn
            && self.steps.is_empty()
            && self.quarantined.is_empty()
            && self.dead.is_empty()
            && self
                .targets
                .values()
                .all(|t| t.log.is_empty() && t.rows.is_empty() && t.batch.as_ref().is_none_or(KeyedBatch::is_empty));
        let only_position = idle
            && self
                .stored
                .as_ref()
                .is_some_and(|(s, at)| at.elapsed() < POSITION_STORE_EVERY && s.same_but_position(&checkpoint));
        if only_position {
            ack.durable();
            return Ok(());
        }
        let r = self.flush(&checkpoint).await;
        match self.fail_on(r).await {
            Ok(()) => {
                self.known = checkpoint.position.clone();
                self.written = None;
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

    async fn adopt(&mut self, scope: &Position) -> Result<Option<Position>, ConnectorError> {
        if !self.shared {
            return Ok(None);
        }
        let stored = read_checkpoint(self.session()?, &self.cfg, &self.pipeline, self.index).await?;
        let Some(stored) = stored.and_then(|c| c.position) else { return Ok(None) };
        Position::advance_into(&mut self.known, &stored.within(scope));
        Ok(Some(stored))
    }

    async fn close(&mut self) -> Result<(), ConnectorError> {
        if let Some(s) = self.session.take() {
            if std::mem::take(&mut self.open_txn) {
                let _ = s.query("ROLLBACK", &[]).await;
            }
            let _ = s.close().await;
        }
        if let Some(s) = self.side.take() {
            let _ = s.close().await;
        }
        Ok(())
    }
}

async fn read_checkpoint(
    s: &Session,
    cfg: &SnowflakeSinkConfig,
    pipeline: &str,
    index: usize,
) -> Result<Option<Checkpoint>, ConnectorError> {
    let ckpt = qualified(cfg, &cfg.checkpoint_table);
    let key = [Bind::text(pipeline), Bind::one("FIXED", Some(index.to_string()))];
    let stored = s
        .query(&format!("SELECT STATE FROM {ckpt} WHERE PIPELINE = ? AND SINK = ? AND STATE IS NOT NULL"), &key)
        .await?;
    match stored.rows.first().and_then(|r| r.first().cloned().flatten()) {
        Some(text) => Ok(Some(Checkpoint::from_json(&text).map_err(|e| {
            ConnectorError::msg(ErrorClass::Fatal, format!("the checkpoint in {ckpt} cannot be read: {e}"))
        })?)),
        None => Ok(None),
    }
}

/// The quarantined tables `(table, reason, since, position)`.
async fn read_quarantine(
    s: &Session,
    cfg: &SnowflakeSinkConfig,
    pipeline: &str,
    index: usize,
) -> Result<Vec<(TableId, String, String, Option<String>)>, ConnectorError> {
    let key = [Bind::text(pipeline), Bind::one("FIXED", Some(index.to_string()))];
    let r = s
        .query(
            &format!(
                "SELECT SOURCE_SCHEMA, SOURCE_TABLE, REASON, TO_VARCHAR(SINCE), POSITION FROM {} \
                 WHERE PIPELINE = ? AND SINK = ?",
                qualified(cfg, QUARANTINE_TABLE)
            ),
            &key,
        )
        .await?;
    Ok(r.rows
        .into_iter()
        .map(|row| {
            let text = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
            (TableId::new(text(0), text(1)), text(2), text(3), row.get(4).cloned().flatten())
        })
        .collect())
}

/// For `sluice tables`: what the sink's checkpoint and quarantine say.
pub async fn tables(
    cfg: &SnowflakeSinkConfig,
    pipeline: &str,
    index: usize,
) -> Result<Vec<sluice_core::SinkTable>, ConnectorError> {
    let s = login(cfg, "sluice tables").await?;
    let cp = read_checkpoint(&s, cfg, pipeline, index).await.ok().flatten();
    let quarantined = if cfg.mode == "replica" {
        read_quarantine(&s, cfg, pipeline, index).await.unwrap_or_default()
    } else {
        Vec::new()
    };
    let _ = s.close().await;
    Ok(sluice_core::SinkTable::list(cp.as_ref(), quarantined))
}

/// For `sluice tables --release`: takes a table out of quarantine and forgets its copy, so the
/// next run copies it again.
pub async fn release(
    cfg: &SnowflakeSinkConfig,
    pipeline: &str,
    index: usize,
    t: &TableId,
) -> Result<bool, ConnectorError> {
    let s = login(cfg, "sluice tables --release").await?;
    let key = [Bind::text(pipeline), Bind::one("FIXED", Some(index.to_string()))];
    let mut binds = key.to_vec();
    binds.extend([Bind::text(&t.schema), Bind::text(&t.name)]);
    let q = qualified(cfg, QUARANTINE_TABLE);
    let found = s
        .query(
            &format!(
                "SELECT COUNT(*) FROM {q} WHERE PIPELINE = ? AND SINK = ? AND SOURCE_SCHEMA = ? AND SOURCE_TABLE = ?"
            ),
            &binds,
        )
        .await?;
    let n: u64 =
        found.rows.first().and_then(|r| r.first().cloned().flatten()).and_then(|v| v.parse().ok()).unwrap_or(0);
    s.query(
        &format!("DELETE FROM {q} WHERE PIPELINE = ? AND SINK = ? AND SOURCE_SCHEMA = ? AND SOURCE_TABLE = ?"),
        &binds,
    )
    .await?;
    if let Some(mut cp) = read_checkpoint(&s, cfg, pipeline, index).await? {
        cp.tables.remove(t);
        cp.table_ids.remove(t);
        let mut binds = vec![Bind::text(cp.to_json())];
        binds.extend(key);
        s.query(
            &format!("UPDATE {} SET STATE = ? WHERE PIPELINE = ? AND SINK = ?", qualified(cfg, &cfg.checkpoint_table)),
            &binds,
        )
        .await?;
    }
    let _ = s.close().await;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::{ColumnSchema, DataType};

    fn table(cols: &[(&str, DataType, bool)]) -> TableSchema {
        TableSchema {
            id: TableId::new("public", "t"),
            columns: cols
                .iter()
                .map(|(n, t, k)| {
                    let c = ColumnSchema::new(*n, t.clone(), "x");
                    if *k {
                        c.key()
                    } else {
                        c
                    }
                })
                .collect(),
            version: 1,
            dialect: "postgres".into(),
        }
    }

    #[test]
    fn shape_changes_follow_the_policy() {
        let old = table(&[("id", DataType::Int64, true), ("a", DataType::Text, false)]);
        let existing = vec![("ID".to_string(), "NUMBER(38,0)".to_string()), ("A".to_string(), "TEXT".to_string())];
        // Renamed at the same position with the same type.
        let renamed = table(&[("id", DataType::Int64, true), ("b", DataType::Text, false)]);
        let sql = |d: Vec<(String, Vec<Bind>)>| d.into_iter().map(|(s, _)| s).collect::<Vec<_>>();
        let ddl = shape_changes("T", &renamed, Some(&old), &existing, SchemaChanges::Follow).unwrap();
        assert_eq!(sql(ddl), vec!["ALTER TABLE T RENAME COLUMN \"A\" TO \"B\""]);
        let ddl = shape_changes("T", &renamed, Some(&old), &existing, SchemaChanges::AddOnly).unwrap();
        assert_eq!(sql(ddl), vec!["ALTER TABLE T ADD COLUMN \"B\" TEXT"]);
        assert!(shape_changes("T", &renamed, Some(&old), &existing, SchemaChanges::Freeze)
            .unwrap_err()
            .contains("freeze"));
        // A type Snowflake cannot change in place.
        let retyped = table(&[("id", DataType::Int64, true), ("a", DataType::Bool, false)]);
        assert!(shape_changes("T", &retyped, Some(&old), &existing, SchemaChanges::Follow)
            .unwrap_err()
            .contains("cannot change in place"));
        // A dropped column is dropped only under follow.
        let dropped = table(&[("id", DataType::Int64, true)]);
        assert_eq!(
            sql(shape_changes("T", &dropped, Some(&old), &existing, SchemaChanges::Follow).unwrap()),
            vec!["ALTER TABLE T DROP COLUMN \"A\""]
        );
        assert!(shape_changes("T", &dropped, Some(&old), &existing, SchemaChanges::AddOnly).unwrap().is_empty());
    }
}
