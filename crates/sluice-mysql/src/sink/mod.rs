//! MySQL/MariaDB/TiDB sink: a replica, or a change log (one appended row per change).
//!
//! ```text
//!  write: Change ──▶ per-table KeyedBatch (last change per key wins)
//!         Copy Begin{snapshot|replace} ──▶ flush, DELETE FROM t (same transaction)
//!         Copy Rows ──▶ batch as upserts
//!  commit: START TRANSACTION; per table: DELETE .. WHERE key IN (..); whole rows by
//!          LOAD DATA LOCAL .. REPLACE (load.rs) or multi-row INSERT .. ON DUPLICATE KEY
//!          UPDATE (delete-then-insert when the table has other unique keys); checkpoint row
//!          (locked, never moved backwards); COMMIT; ack
//! ```
//! Tables are created (or their columns added and dropped) before the transaction opens: DDL
//! commits implicitly in MySQL. A batch that outgrows [`MAX_BUFFERED_ROWS`] is written into the
//! open transaction early, so memory stays bounded; it still commits with its checkpoint.
//! Fencing: `GET_LOCK` on a connection held while the sink is open; a second process waits.

pub(crate) mod encode;
mod load;
mod loaders;

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use serde::{Deserialize, Serialize};
use sluice_config::{invalid, typed, BatchConfig, ConfigError, ParseContext, SchemaChanges, Secret};
use sluice_core::collapse::{Added, KeyedBatch, NetOp};
use sluice_core::{
    Ack, BatchPolicy, Checkpoint, ConnectorError, CopyMode, CopyStep, Event, Op, Position, SchemaRef, Sink,
    SinkContext, TableId, Value,
};
use tracing::{info, warn};

use crate::catalog::{self, quote};
use crate::error::{Ctx, MyError};

/// Default for `sink[].checkpoint_database`.
pub const DEFAULT_CHECKPOINT_DATABASE: &str = "sluice";
/// Rows buffered across tables before they are written into the open transaction.
const MAX_BUFFERED_ROWS: usize = 20_000;
/// Rows per multi-row statement (also bounded by 65,535 placeholders).
const ROWS_PER_STATEMENT: usize = 1_000;
/// How long opening waits for another process holding this sink's lock.
const FENCE_WAIT: Duration = Duration::from_secs(50);

/// `[[sink]]` with `type = "mysql"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MySqlSinkConfig {
    /// `mysql://user:password@host:port/database`; tables are created in that database.
    pub url: Secret<String>,
    /// `replica` keeps tables of the same shape; `changelog` appends one row per change.
    #[serde(default = "default_mode")]
    pub mode: String,
    /// In changelog mode, appended to the source table name to name the changelog table.
    #[serde(default = "default_changelog_suffix")]
    pub changelog_suffix: String,
    /// When to commit.
    #[serde(default = "default_batch")]
    pub batch: BatchConfig,
    /// Database of the checkpoint table.
    #[serde(default = "default_checkpoint_database")]
    pub checkpoint_database: String,
    /// Replica mode: how the target follows the source's schema changes.
    #[serde(default)]
    pub schema_changes: SchemaChanges,
    /// Connections that load a snapshot's rows side by side (1: the sink's own connection).
    #[serde(default = "default_load_connections")]
    pub load_connections: usize,
}

/// Default for `sink[].load_connections`: two loads at once took 1.2–1.5 s where one took
/// 2.4 s for 1M rows into MariaDB here; a third added nothing on 2 cores (BENCHMARKS.md).
pub const DEFAULT_LOAD_CONNECTIONS: usize = 2;

fn default_load_connections() -> usize {
    DEFAULT_LOAD_CONNECTIONS
}

/// Default for `sink[].batch` of a MySQL sink: larger commits than the shared default, since
/// each MySQL commit costs the target more (a 2M-row snapshot: 8.2 s with 10,000 rows per
/// commit, 6.8 s with 50,000; BENCHMARKS.md). Under a steady stream commits are bound by
/// `max_delay_ms` long before that many rows.
pub const DEFAULT_BATCH_MAX_ROWS: usize = 50_000;

fn default_batch() -> BatchConfig {
    BatchConfig { max_rows: DEFAULT_BATCH_MAX_ROWS, ..BatchConfig::default() }
}

fn default_mode() -> String {
    "replica".into()
}
fn default_changelog_suffix() -> String {
    "_changelog".into()
}
fn default_checkpoint_database() -> String {
    DEFAULT_CHECKPOINT_DATABASE.into()
}

impl MySqlSinkConfig {
    /// Parses and validates a `[[sink]]`.
    pub fn parse(body: toml::Value, ctx: &ParseContext<'_>) -> Result<MySqlSinkConfig, ConfigError> {
        let c: MySqlSinkConfig = typed(body, ctx.at)?;
        let at = ctx.at;
        if !c.url.expose().starts_with("mysql://") {
            return Err(invalid(
                format!("{at}.url"),
                format!("{} must start with mysql://", crate::describe_url(c.url.expose())),
            ));
        }
        let opts = crate::catalog::opts(c.url.expose())
            .map_err(|e| invalid(format!("{at}.url"), format!("not a valid MySQL URL: {e}")))?;
        if opts.db_name().is_none() {
            return Err(invalid(
                format!("{at}.url"),
                "must name the target database, e.g. mysql://user@host:3306/replica",
            ));
        }
        if c.mode != "replica" && c.mode != "changelog" {
            return Err(invalid(format!("{at}.mode"), format!("{:?}: expected \"replica\" or \"changelog\"", c.mode)));
        }
        if c.mode == "changelog" && c.changelog_suffix.is_empty() {
            return Err(invalid(
                format!("{at}.changelog_suffix"),
                "must not be empty (the changelog would replace the table)",
            ));
        }
        c.batch.validate(at)?;
        if c.checkpoint_database.is_empty() {
            return Err(invalid(format!("{at}.checkpoint_database"), "must not be empty"));
        }
        if !(1..=16).contains(&c.load_connections) {
            return Err(invalid(
                format!("{at}.load_connections"),
                format!("{} is out of range: use 1 (the sink's own connection) to 16", c.load_connections),
            ));
        }
        Ok(c)
    }

    fn database(&self) -> String {
        crate::catalog::opts(self.url.expose()).ok().and_then(|o| o.db_name().map(str::to_string)).unwrap_or_default()
    }
}

/// What the sink knows about one target table.
struct Target {
    version: u64,
    name: String,
    /// Other unique keys than the primary key: upserts then delete first
    other_unique: bool,
    /// The source's columns as this sink last saw them (none in changelog mode)
    columns: Vec<sluice_core::ColumnSchema>,
    /// Every target column comes from the source: whole rows may be loaded with `REPLACE`
    loadable: bool,
}

/// Where one table's rows go, for a commit.
#[derive(Clone)]
struct Dest {
    name: String,
    other_unique: bool,
    loadable: bool,
    /// The target accepts `LOAD DATA LOCAL` (until it refuses once)
    load_ok: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The MySQL sink.
pub struct MySqlSink {
    name: String,
    cfg: MySqlSinkConfig,
    pipeline: String,
    index: String,
    database: String,
    conn: Option<Conn>,
    lock: Option<Conn>,
    targets: HashMap<TableId, Target>,
    batches: Vec<KeyedBatch>,
    buffered: usize,
    in_tx: bool,
    /// A commit running in the background on this sink's connection
    pending: Option<tokio::task::JoinHandle<(Conn, Result<(), MyError>)>>,
    /// Changelog mode: rows to append, in arrival order (target table, row)
    log: Vec<(String, LogRow)>,
    /// The transaction being received (changelog metadata)
    txn: Option<sluice_core::TxnMeta>,
    /// Tables in quarantine (and why): their changes and copies are skipped
    quarantine: HashMap<TableId, String>,
    /// Tables put in quarantine since the last commit, recorded with the next checkpoint
    quarantined: Vec<(TableId, String)>,
    /// The target accepts `LOAD DATA LOCAL` (cleared when it refuses)
    load_ok: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Snapshot rows loaded over connections of their own (loaders.rs)
    loaders: loaders::Loaders,
    /// Tables whose snapshot copy goes through the loaders, with the rows not handed over yet
    snapshots: HashMap<TableId, Vec<sluice_core::Row>>,
}

impl MySqlSink {
    /// The `index`-th sink of `pipeline`.
    pub fn new(cfg: MySqlSinkConfig, pipeline: &str, index: usize) -> MySqlSink {
        let database = cfg.database();
        let loaders = loaders::Loaders::new(cfg.url.expose(), cfg.load_connections);
        MySqlSink {
            name: format!("sink[{index}] mysql {}", cfg.mode),
            cfg,
            pipeline: pipeline.to_string(),
            index: index.to_string(),
            database,
            conn: None,
            lock: None,
            targets: HashMap::new(),
            batches: Vec::new(),
            buffered: 0,
            in_tx: false,
            pending: None,
            log: Vec::new(),
            txn: None,
            quarantine: HashMap::new(),
            quarantined: Vec::new(),
            load_ok: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
            loaders,
            snapshots: HashMap::new(),
        }
    }

    fn conn(&mut self) -> Result<&mut Conn, MyError> {
        self.conn.as_mut().ok_or_else(|| MyError::Protocol("sink used before open".into()))
    }

    fn checkpoint_table(&self) -> String {
        format!("{}.`checkpoints`", quote(&self.cfg.checkpoint_database))
    }

    async fn begin_tx(&mut self) -> Result<(), MyError> {
        self.wait_pending().await?;
        if !self.in_tx {
            self.conn()?.query_drop("START TRANSACTION").await.ctx("start a transaction")?;
            self.in_tx = true;
        }
        Ok(())
    }

    /// Creates the table or brings its columns in line with `schema` under the
    /// `schema_changes` policy (outside any transaction: DDL commits implicitly). Returns why
    /// the table must go to quarantine instead, when the change is not allowed or could lose
    /// data; the target is then left as it is.
    async fn reconcile(&mut self, schema: &SchemaRef) -> Result<Option<String>, MyError> {
        if self.targets.get(&schema.id).is_some_and(|t| t.version == schema.version) {
            return Ok(None);
        }
        self.wait_pending().await?;
        if self.in_tx {
            // Only a batch written out early is open here; DDL commits it implicitly (replays
            // of it are idempotent for a replica).
            warn!(table = %schema.id, "table shape changed inside a large batch; the batch so far commits with the DDL");
            self.in_tx = false;
        }
        if self.changelog() {
            let table = format!("{}{}", schema.id.name, self.cfg.changelog_suffix);
            let name = format!("{}.{}", quote(&self.database), quote(&table));
            self.conn()?
                .query_drop(format!(
                    "CREATE TABLE IF NOT EXISTS {name} (sluice_seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
                     op CHAR(1) NOT NULL, `before` JSON NULL, `after` JSON NULL, source_table VARCHAR(255) NOT NULL, \
                     position VARCHAR(1024) NULL, xid BIGINT UNSIGNED NULL, commit_ts DATETIME(6) NULL) \
                     DEFAULT CHARSET = utf8mb4"
                ))
                .await
                .ctx(format!("create changelog table {name}"))?;
            self.targets.insert(
                schema.id.clone(),
                Target { version: schema.version, name, other_unique: false, columns: Vec::new(), loadable: false },
            );
            return Ok(None);
        }
        if schema.key_indexes().is_empty() {
            // Changes of a keyless table cannot be collapsed or applied by key.
            return Ok(Some(format!(
                "table {} has no primary key (nor a NOT NULL unique key) on the source; a MySQL replica needs one: \
                 add one on the source (ALTER TABLE .. ADD PRIMARY KEY (..)), then release the table",
                schema.id
            )));
        }
        let name = format!("{}.{}", quote(&self.database), quote(&schema.id.name));
        let db = self.database.clone();
        let seen = self.targets.get(&schema.id).map(|t| t.columns.clone());
        let policy = self.cfg.schema_changes;
        let conn = self.conn()?;
        let existing: Vec<(String, String, String, bool)> = conn
            .exec(
                "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT IS NULL FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                (&db, &schema.id.name),
            )
            .await
            .ctx(format!("read the columns of {name}"))?;
        let ty = |c: &sluice_core::ColumnSchema| {
            format!(
                "{} {}{}",
                quote(&c.name),
                encode::column_type(c, &schema.dialect),
                if c.nullable { " NULL" } else { " NOT NULL" }
            )
        };
        if existing.is_empty() {
            let mut cols: Vec<String> = schema.columns.iter().map(ty).collect();
            let key: Vec<String> = schema.columns.iter().filter(|c| c.key).map(|c| quote(&c.name)).collect();

            cols.push(format!("PRIMARY KEY ({})", key.join(", ")));
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {name} ({}) DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin",
                cols.join(", ")
            );
            conn.query_drop(&sql).await.ctx(format!("create {name}"))?;
            info!(table = %schema.id, target = %name, "created replica table");
        } else {
            // The target's own view of its columns, for a type changed while Sluice was stopped.
            let target_cols = match seen {
                Some(_) => Vec::new(),
                None => {
                    let info = catalog::table_columns(conn, &TableId::new(&db, &schema.id.name)).await?;
                    catalog::schema_from_info(&schema.id, &info, false).0.columns
                }
            };
            let plan = match plan_changes(schema, &existing, seen.as_deref(), &target_cols, policy) {
                Ok(plan) => plan,
                Err(reason) => return Ok(Some(reason)),
            };
            let changes: Vec<String> = plan
                .iter()
                .map(|ch| match ch {
                    Change::Add(c) => format!("ADD COLUMN {}", ty(c)),
                    Change::Widen(c) => format!("MODIFY COLUMN {}", ty(c)),
                    Change::Drop(n) => format!("DROP COLUMN {}", quote(n)),
                    Change::Nullable(n, t) => format!("MODIFY COLUMN {} {t} NULL", quote(n)),
                    Change::Rename(from, to) => format!("RENAME COLUMN {} TO {}", quote(from), quote(to)),
                })
                .collect();
            if !changes.is_empty() {
                conn.query_drop(format!("ALTER TABLE {name} {}", changes.join(", ")))
                    .await
                    .ctx(format!("alter {name}"))?;
                info!(table = %schema.id, changes = %changes.join(", "), policy = %policy, "replica follows a schema change");
            }
        }
        let unique: Vec<String> = conn
            .exec(
                "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
                 AND NON_UNIQUE = 0 AND INDEX_NAME <> 'PRIMARY'",
                (&db, &schema.id.name),
            )
            .await
            .ctx(format!("read the keys of {name}"))?;
        let now: Vec<String> = conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (&db, &schema.id.name),
            )
            .await
            .ctx(format!("read the columns of {name}"))?;
        let loadable = now.iter().all(|n| schema.column_index(n).is_some());
        let target = Target {
            version: schema.version,
            name,
            other_unique: !unique.is_empty(),
            columns: schema.columns.clone(),
            loadable,
        };
        self.targets.insert(schema.id.clone(), target);
        Ok(None)
    }

    /// Reconciles `schema`'s table; `false` when its events are to be skipped (in quarantine,
    /// now or before).
    async fn follow(&mut self, schema: &SchemaRef) -> Result<bool, MyError> {
        if self.quarantine.contains_key(&schema.id) {
            return Ok(false);
        }
        match self.reconcile(schema).await? {
            None => Ok(true),
            Some(reason) => {
                warn!(sink = %self.name, table = %schema.id, reason = %reason, "table quarantined; the other tables keep running");
                self.quarantine.insert(schema.id.clone(), reason.clone());
                self.quarantined.push((schema.id.clone(), reason));
                Ok(false)
            }
        }
    }

    fn batch_for(&mut self, schema: &SchemaRef) -> &mut KeyedBatch {
        match self.batches.iter().position(|b| b.schema().id == schema.id && b.schema().version == schema.version) {
            Some(i) => &mut self.batches[i],
            None => {
                self.batches.push(KeyedBatch::new(schema.clone()));
                self.batches.last_mut().unwrap_or_else(|| unreachable!())
            }
        }
    }

    /// Where each table's rows go: target name and whether it has other unique keys.
    fn dead_letters(&self, position: Option<&Position>) -> DeadLetters {
        DeadLetters {
            table: format!("{}.`dead_letters`", quote(&self.cfg.checkpoint_database)),
            pipeline: self.pipeline.clone(),
            sink: self.index.clone(),
            position: position.map(|p| p.to_string()),
        }
    }

    fn dests(&self) -> HashMap<TableId, Dest> {
        self.targets.keys().filter_map(|id| Some((id.clone(), self.dest(id)?))).collect()
    }

    /// Where `id`'s rows go.
    fn dest(&self, id: &TableId) -> Option<Dest> {
        self.targets.get(id).map(|t| Dest {
            name: t.name.clone(),
            other_unique: t.other_unique,
            loadable: t.loadable,
            load_ok: self.load_ok.clone(),
        })
    }

    /// Buffers snapshot rows of `schema`'s table for the loaders, handing them over in blocks.
    async fn snapshot_rows(
        &mut self,
        schema: &SchemaRef,
        rows: impl Iterator<Item = sluice_core::Row>,
    ) -> Result<(), MyError> {
        let Some(buf) = self.snapshots.get_mut(&schema.id) else { return Ok(()) };
        buf.extend(rows);
        if buf.len() >= loaders::LOADER_ROWS {
            let block = std::mem::replace(buf, Vec::with_capacity(loaders::LOADER_ROWS * 2));
            self.hand_over(schema, block).await?;
        }
        Ok(())
    }

    /// Gives `rows` to a loader.
    async fn hand_over(&mut self, schema: &SchemaRef, rows: Vec<sluice_core::Row>) -> Result<(), MyError> {
        if rows.is_empty() {
            return Ok(());
        }
        let dest = self.dest(&schema.id).ok_or_else(|| MyError::Protocol(format!("no target for {}", schema.id)))?;
        let dead = self.dead_letters(None);
        self.loaders.submit(dest, schema.clone(), rows, dead).await
    }

    /// Writes every buffered batch into the open transaction.
    async fn flush(&mut self) -> Result<(), MyError> {
        self.wait_pending().await?;
        if self.batches.is_empty() && self.log.is_empty() {
            return Ok(());
        }
        self.begin_tx().await?;
        let batches = std::mem::take(&mut self.batches);
        let log = std::mem::take(&mut self.log);
        let dests = self.dests();
        let dead = self.dead_letters(None);
        let conn = self.conn()?;
        write_batches(conn, batches, &dests, &dead).await?;
        append_log(conn, log).await?;
        self.buffered = 0;
        Ok(())
    }

    /// Waits for the commit running in the background, taking its connection back.
    async fn wait_pending(&mut self) -> Result<(), MyError> {
        if let Some(task) = self.pending.take() {
            let (conn, result) = task.await.map_err(|e| MyError::Protocol(format!("background commit failed: {e}")))?;
            self.conn = Some(conn);
            result?;
        }
        Ok(())
    }

    async fn open_inner(&mut self) -> Result<Option<Checkpoint>, MyError> {
        let url = self.cfg.url.expose().clone();
        let mut conn = catalog::connect(&url, "sink").await?;
        let db = quote(&self.cfg.checkpoint_database);
        conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS {db}")).await.ctx("create the checkpoint database")?;
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {} (pipeline VARCHAR(64) NOT NULL, sink VARCHAR(16) NOT NULL, \
             position TEXT NULL, state LONGTEXT NOT NULL, updated_at DATETIME(6) NOT NULL, PRIMARY KEY (pipeline, sink)) \
             DEFAULT CHARSET = utf8mb4",
            self.checkpoint_table()
        ))
        .await
        .ctx("create the checkpoint table")?;
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {} (pipeline VARCHAR(64) NOT NULL, sink VARCHAR(16) NOT NULL, \
             source_schema VARCHAR(64) NOT NULL, source_table VARCHAR(64) NOT NULL, reason TEXT NOT NULL, \
             position TEXT NULL, since DATETIME(6) NOT NULL, PRIMARY KEY (pipeline, sink, source_schema, source_table)) \
             DEFAULT CHARSET = utf8mb4",
            quarantine_table(&self.cfg)
        ))
        .await
        .ctx("create the quarantine table")?;
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {}.`dead_letters` (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
             pipeline VARCHAR(64) NOT NULL, sink VARCHAR(16) NOT NULL, source_table VARCHAR(200) NOT NULL, \
             op VARCHAR(8) NOT NULL, `row` JSON NULL, error TEXT NOT NULL, position TEXT NULL, at DATETIME(6) NOT NULL) \
             DEFAULT CHARSET = utf8mb4",
            quote(&self.cfg.checkpoint_database)
        ))
        .await
        .ctx("create the dead-letter table")?;
        // Fencing: one process per sink.
        let mut lock = catalog::connect(&url, "sink (lock)").await?;
        let lock_name = format!("sluice:{}:{}:{}", self.cfg.checkpoint_database, self.pipeline, self.index);
        let started = Instant::now();
        loop {
            let got: Option<i64> =
                lock.exec_first("SELECT GET_LOCK(?, 5)", (&lock_name,)).await.ctx("take the sink's lock")?.flatten();
            if got == Some(1) {
                break;
            }
            if started.elapsed() > FENCE_WAIT {
                return Err(MyError::Retry(format!(
                    "another process holds this sink's lock ({lock_name}): another sluice running pipeline {}? \
                     waiting as a standby",
                    self.pipeline
                )));
            }
            info!(sink = %self.name, "another process writes this target for the same pipeline; waiting as a standby");
        }
        let state: Option<String> = conn
            .exec_first(
                format!("SELECT state FROM {} WHERE pipeline = ? AND sink = ?", self.checkpoint_table()),
                (&self.pipeline, &self.index),
            )
            .await
            .ctx("read the checkpoint")?;
        self.quarantine = quarantined(&mut conn, &self.cfg, &self.pipeline, &self.index)
            .await?
            .into_iter()
            .map(|q| (q.table, q.reason))
            .collect();
        self.quarantined.clear();
        self.targets.clear();
        self.snapshots.clear();
        self.loaders.close().await;
        self.conn = Some(conn);
        self.lock = Some(lock);
        let cp = match state {
            Some(s) => Some(Checkpoint::from_json(&s).map_err(|e| MyError::Setup(format!("stored checkpoint: {e}")))?),
            None => None,
        };
        info!(sink = %self.name, position = ?cp.as_ref().and_then(|c| c.position.as_ref()).map(|p| p.to_string()), "sink opened");
        Ok(cp)
    }

    fn changelog(&self) -> bool {
        self.cfg.mode == "changelog"
    }

    /// Changelog mode: every change and copied row becomes a row to append.
    async fn log_event(&mut self, event: &Event) -> Result<(), MyError> {
        let (schema, rows): (&SchemaRef, Vec<LogRow>) = match event {
            Event::Begin(m) => {
                self.txn = Some(m.clone());
                return Ok(());
            }
            Event::Commit { .. } => {
                self.txn = None;
                return Ok(());
            }
            Event::Change(c) => (&c.table, vec![LogRow::change(&c.table, &c.op, self.txn.as_ref())]),
            Event::Copy(copy) => match &copy.step {
                CopyStep::Rows(rows) => (&copy.table, rows.iter().map(|r| LogRow::copied(&copy.table, r)).collect()),
                CopyStep::Bulk(bulk) => {
                    let rows = bulk.decode(&copy.table).map_err(|e| MyError::Decode(e.to_string()))?;
                    (&copy.table, rows.iter().map(|r| LogRow::copied(&copy.table, r)).collect())
                }
                _ => return Ok(()),
            },
            _ => return Ok(()),
        };
        if self.reconcile(schema).await?.is_some() {
            return Err(MyError::Protocol(format!("changelog table of {} cannot be reconciled", schema.id)));
        }
        let name = self.targets.get(&schema.id).map(|t| t.name.clone()).unwrap_or_default();
        self.buffered += rows.len();
        self.log.extend(rows.into_iter().map(|r| (name.clone(), r)));
        if self.buffered >= MAX_BUFFERED_ROWS {
            self.flush().await?;
        }
        Ok(())
    }

    fn store(&mut self) -> Store {
        Store {
            table: self.checkpoint_table(),
            pipeline: self.pipeline.clone(),
            index: self.index.clone(),
            quarantine_table: quarantine_table(&self.cfg),
            quarantined: std::mem::take(&mut self.quarantined),
        }
    }

    /// Commits in the foreground (used when a transaction is already open).
    async fn commit_inner(&mut self, checkpoint: &Checkpoint) -> Result<(), MyError> {
        self.flush().await?;
        self.begin_tx().await?;
        let store = self.store();
        let r = store_and_commit(self.conn()?, &store, checkpoint).await;
        self.in_tx = false;
        r
    }

    /// Hands the batches and the checkpoint to a background task on this sink's connection, so
    /// the next batch is collected while the target applies this one; the next use of the
    /// connection waits for it.
    async fn commit_in_background(&mut self, checkpoint: Checkpoint, ack: Ack) -> Result<(), MyError> {
        self.wait_pending().await?;
        let mut conn = self.conn.take().ok_or_else(|| MyError::Protocol("sink used before open".into()))?;
        let batches = std::mem::take(&mut self.batches);
        let log = std::mem::take(&mut self.log);
        self.buffered = 0;
        let dests = self.dests();
        let store = self.store();
        let dead = self.dead_letters(checkpoint.position.as_ref());
        self.pending = Some(tokio::spawn(async move {
            let r = async {
                conn.query_drop("START TRANSACTION").await.ctx("start a transaction")?;
                write_batches(&mut conn, batches, &dests, &dead).await?;
                append_log(&mut conn, log).await?;
                store_and_commit(&mut conn, &store, &checkpoint).await
            }
            .await;
            match &r {
                Ok(()) => ack.durable(),
                Err(e) => ack.fail(ConnectorError::msg(e.class(), e.to_string())),
            }
            (conn, r)
        }));
        Ok(())
    }

    async fn write_inner(&mut self, event: &Event) -> Result<(), MyError> {
        if self.changelog() {
            return self.log_event(event).await;
        }
        match event {
            Event::Change(c) => {
                if !self.follow(&c.table).await? {
                    return Ok(());
                }
                if matches!(c.op, Op::Truncate) {
                    self.flush().await?;
                    self.begin_tx().await?;
                    let name = self.targets.get(&c.table.id).map(|t| t.name.clone()).unwrap_or_default();
                    self.conn()?.query_drop(format!("DELETE FROM {name}")).await.ctx(format!("truncate {name}"))?;
                    return Ok(());
                }
                match self.batch_for(&c.table).add(Cow::Borrowed(&c.op)) {
                    Added::Buffered { new_keys } => self.buffered += new_keys,
                    Added::MoveRow { old_key, row } => {
                        let b = self.batch_for(&c.table);
                        b.put(old_key.clone(), NetOp::Delete(old_key));
                        let key = c.table.key_of(&row);
                        b.put(key, NetOp::Upsert(row));
                        self.buffered += 2;
                    }
                    Added::Truncate => {}
                }
            }
            Event::Copy(copy) if !self.follow(&copy.table).await? => {}
            Event::Copy(copy) => match &copy.step {
                CopyStep::Begin { mode, .. } => {
                    if matches!(mode, CopyMode::Snapshot | CopyMode::Replace) {
                        self.flush().await?;
                        self.begin_tx().await?;
                        let name = self.targets.get(&copy.table.id).map(|t| t.name.clone()).unwrap_or_default();
                        self.conn()?.query_drop(format!("DELETE FROM {name}")).await.ctx(format!("empty {name}"))?;
                        if *mode == CopyMode::Snapshot && self.cfg.load_connections > 1 {
                            // The loaders must see the table emptied (loaders.rs).
                            self.conn()?.query_drop("COMMIT").await.ctx(format!("commit emptying {name}"))?;
                            self.in_tx = false;
                            self.snapshots.insert(copy.table.id.clone(), Vec::with_capacity(loaders::LOADER_ROWS * 2));
                        }
                    }
                }
                CopyStep::Rows(rows) if self.snapshots.contains_key(&copy.table.id) => {
                    self.snapshot_rows(&copy.table, rows.iter().cloned()).await?;
                }
                CopyStep::Bulk(bulk) if self.snapshots.contains_key(&copy.table.id) => {
                    let rows = bulk.decode(&copy.table).map_err(|e| MyError::Decode(e.to_string()))?;
                    self.snapshot_rows(&copy.table, rows.into_iter()).await?;
                }
                CopyStep::Rows(rows) => {
                    let b = self.batch_for(&copy.table);
                    let mut n = 0;
                    for r in rows {
                        n += usize::from(b.add_copied(r.clone()));
                    }
                    self.buffered += n;
                }
                CopyStep::Bulk(bulk) => {
                    let rows = bulk.decode(&copy.table).map_err(|e| MyError::Decode(e.to_string()))?;
                    let b = self.batch_for(&copy.table);
                    for r in rows {
                        b.add_copied(r);
                    }
                }
                CopyStep::End => {
                    if let Some(rest) = self.snapshots.remove(&copy.table.id) {
                        self.hand_over(&copy.table, rest).await?;
                        self.loaders.finish().await?;
                    }
                }
                CopyStep::Progress { .. } => {}
            },
            _ => {}
        }
        if self.buffered >= MAX_BUFFERED_ROWS {
            self.flush().await?;
        }
        Ok(())
    }
}

/// Where refused changes go: `<checkpoint_database>.dead_letters`, for this pipeline's sink, with
/// the position of the commit they belong to (when known).
#[derive(Clone)]
struct DeadLetters {
    table: String,
    pipeline: String,
    sink: String,
    position: Option<String>,
}

/// One table's net changes of a batch, in the order they are applied.
struct TableWrites {
    deletes: Vec<Vec<Value>>,
    upserts: std::sync::Arc<Vec<Vec<Value>>>,
    partial: Vec<Vec<Value>>,
}

/// Writes batches into `conn`'s open transaction: per table, deletes, then upserts (plain
/// inserts after deleting the keys when the table has other unique keys), then rows with values
/// the source did not resend. A table's writes the target refuses (a value out of range, a
/// constraint of the target's own) are applied again one change at a time; each refused
/// change goes to the dead-letter table in the same transaction, and the rest are kept.
async fn write_batches(
    conn: &mut Conn,
    batches: Vec<KeyedBatch>,
    dests: &HashMap<TableId, Dest>,
    dead: &DeadLetters,
) -> Result<(), MyError> {
    for batch in batches {
        let schema = batch.schema().clone();
        let Some(dest) = dests.get(&schema.id) else {
            return Err(MyError::Protocol(format!("no target for {}", schema.id)));
        };
        let w = TableWrites::of(dest, &schema, batch.into_ops());
        write_table(conn, dest, &schema, w, dead).await?;
    }
    Ok(())
}

impl TableWrites {
    /// A table's net changes, sorted into the statements that apply them.
    fn of(dest: &Dest, schema: &SchemaRef, ops: impl IntoIterator<Item = NetOp>) -> TableWrites {
        let keys = schema.key_indexes();
        let (mut deletes, mut upserts, mut partial) = (Vec::new(), Vec::new(), Vec::new());
        for op in ops {
            match op {
                NetOp::Delete(k) => deletes.push(k),
                NetOp::Insert(r) | NetOp::Update(r) | NetOp::Upsert(r) => {
                    if r.contains(&Value::Unchanged) {
                        partial.push(r);
                    } else {
                        if dest.other_unique {
                            deletes.push(keys.iter().map(|&i| r[i].clone()).collect());
                        }
                        upserts.push(r);
                    }
                }
            }
        }
        TableWrites { deletes, upserts: std::sync::Arc::new(upserts), partial }
    }
}

/// Applies one table's writes in the open transaction, change by change (refused ones to the
/// dead letters) when the target refuses the batch.
async fn write_table(
    conn: &mut Conn,
    dest: &Dest,
    schema: &SchemaRef,
    w: TableWrites,
    dead: &DeadLetters,
) -> Result<(), MyError> {
    conn.query_drop("SAVEPOINT sluice_write").await.ctx("set a savepoint")?;
    match apply(conn, dest, schema, &w).await {
        Ok(()) => Ok(()),
        Err(e) if refusal(&e) => {
            warn!(table = %schema.id, error = %e, "batch refused by the target; applying it change by change");
            conn.query_drop("ROLLBACK TO SAVEPOINT sluice_write").await.ctx("roll back to the savepoint")?;
            one_by_one(conn, dest, schema, w, dead).await
        }
        Err(e) => Err(e),
    }
}

async fn apply(conn: &mut Conn, dest: &Dest, schema: &SchemaRef, w: &TableWrites) -> Result<(), MyError> {
    let name = &dest.name;
    delete(conn, name, schema, &w.deletes).await?;
    let loaded = dest.loadable
        && !dest.other_unique
        && w.upserts.len() >= load::MIN_ROWS
        && matches!(load::load(conn, name, schema, &w.upserts, &dest.load_ok).await?, load::Loaded::Done);
    if !loaded {
        upsert(conn, name, schema, &w.upserts, dest.other_unique).await?;
    }
    for r in &w.partial {
        update_partial(conn, name, schema, r).await?;
    }
    Ok(())
}

/// Applies `w` one change at a time, each in its own savepoint; the ones the target refuses go
/// to the dead-letter table.
async fn one_by_one(
    conn: &mut Conn,
    dest: &Dest,
    schema: &SchemaRef,
    w: TableWrites,
    dead: &DeadLetters,
) -> Result<(), MyError> {
    let single = |deletes: Vec<Vec<Value>>, upserts: Vec<Vec<Value>>, partial: Vec<Vec<Value>>| TableWrites {
        deletes,
        upserts: std::sync::Arc::new(upserts),
        partial,
    };
    let keys = schema.key_indexes();
    let mut ops: Vec<(&'static str, TableWrites)> = Vec::new();
    // Deletes of keys that an upsert writes again (tables with other unique keys) travel with it.
    let rewritten: std::collections::HashSet<Vec<Value>> = match dest.other_unique {
        true => w.upserts.iter().map(|r| keys.iter().map(|&i| r[i].clone()).collect()).collect(),
        false => Default::default(),
    };
    for k in w.deletes.into_iter().filter(|k| !rewritten.contains(k)) {
        ops.push(("delete", single(vec![k], Vec::new(), Vec::new())));
    }
    for r in w.upserts.iter().cloned() {
        let deletes = if dest.other_unique { vec![keys.iter().map(|&i| r[i].clone()).collect()] } else { Vec::new() };
        ops.push(("upsert", single(deletes, vec![r], Vec::new())));
    }
    for r in w.partial {
        ops.push(("update", single(Vec::new(), Vec::new(), vec![r])));
    }
    for (kind, op) in ops {
        conn.query_drop("SAVEPOINT sluice_row").await.ctx("set a savepoint")?;
        match apply(conn, dest, schema, &op).await {
            Ok(()) => {}
            Err(e) if refusal(&e) => {
                conn.query_drop("ROLLBACK TO SAVEPOINT sluice_row").await.ctx("roll back to the savepoint")?;
                let row = match (op.upserts.first(), op.partial.first(), op.deletes.first()) {
                    (Some(r), _, _) | (_, Some(r), _) => sluice_core::json::row_json(schema, r),
                    (_, _, Some(k)) => {
                        let names = schema.columns.iter().filter(|c| c.key).map(|c| c.name.clone());
                        serde_json::Value::Object(names.zip(k.iter().map(sluice_core::json::value_json)).collect())
                    }
                    _ => serde_json::Value::Null,
                };
                warn!(table = %schema.id, op = kind, error = %e, "change sent to the dead-letter table");
                conn.exec_drop(
                    format!(
                        "INSERT INTO {} (pipeline, sink, source_table, op, `row`, error, position, at) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6))",
                        dead.table
                    ),
                    (
                        &dead.pipeline,
                        &dead.sink,
                        schema.id.to_string(),
                        kind,
                        row.to_string(),
                        e.to_string(),
                        &dead.position,
                    ),
                )
                .await
                .ctx("write a dead letter")?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether the target refused the data itself (retrying cannot help; other changes can go on):
/// SQLSTATE class 22 (data exception: out of range, too long, bad value) or 23 (integrity
/// constraint), a failed CHECK constraint, invalid JSON, or a value Sluice cannot encode.
fn refusal(e: &MyError) -> bool {
    match e {
        MyError::Decode(_) => true,
        MyError::Client { source: mysql_async::Error::Server(s), .. } => {
            s.state.starts_with("22") || s.state.starts_with("23") || [3819, 4025, 3140, 1265].contains(&s.code)
        }
        _ => false,
    }
}

fn bind(v: &Value, c: &sluice_core::ColumnSchema, table: &TableId) -> Result<mysql_async::Value, MyError> {
    encode::param(v, c).map_err(|e| MyError::Decode(format!("{table}.{}: {e}", c.name)))
}

async fn delete(conn: &mut Conn, name: &str, schema: &SchemaRef, keys: &[Vec<Value>]) -> Result<(), MyError> {
    let kcols: Vec<&sluice_core::ColumnSchema> = schema.columns.iter().filter(|c| c.key).collect();
    let list = kcols.iter().map(|c| quote(&c.name)).collect::<Vec<_>>().join(", ");
    let per = ROWS_PER_STATEMENT.min(60_000 / kcols.len().max(1));
    for chunk in keys.chunks(per) {
        // A one-column key as a plain IN list: row constructors are not always used for index
        // lookups.
        let sql = if kcols.len() == 1 {
            format!("DELETE FROM {name} WHERE {list} IN ({})", vec!["?"; chunk.len()].join(", "))
        } else {
            let tuple = format!("({})", vec!["?"; kcols.len()].join(", "));
            format!("DELETE FROM {name} WHERE ({list}) IN ({})", vec![tuple; chunk.len()].join(", "))
        };
        let mut params = Vec::with_capacity(chunk.len() * kcols.len());
        for k in chunk {
            for (v, c) in k.iter().zip(&kcols) {
                params.push(bind(v, c, &schema.id)?);
            }
        }
        conn.exec_drop(sql, params).await.ctx(format!("delete from {name}"))?;
    }
    Ok(())
}

async fn upsert(
    conn: &mut Conn,
    name: &str,
    schema: &SchemaRef,
    rows: &[Vec<Value>],
    plain: bool,
) -> Result<(), MyError> {
    let cols = &schema.columns;
    let list = cols.iter().map(|c| quote(&c.name)).collect::<Vec<_>>().join(", ");
    let update = cols
        .iter()
        .filter(|c| !c.key)
        .map(|c| format!("{0} = VALUES({0})", quote(&c.name)))
        .collect::<Vec<_>>()
        .join(", ");
    let tail = match (plain, update.is_empty()) {
        (true, _) => String::new(),
        (false, true) => {
            let k = cols.iter().find(|c| c.key).map(|c| quote(&c.name)).unwrap_or_default();
            format!(" ON DUPLICATE KEY UPDATE {k} = {k}")
        }
        (false, false) => format!(" ON DUPLICATE KEY UPDATE {update}"),
    };
    let per = ROWS_PER_STATEMENT.min(60_000 / cols.len().max(1));
    let tuple = format!("({})", vec!["?"; cols.len()].join(", "));
    for chunk in rows.chunks(per) {
        let sql = format!("INSERT INTO {name} ({list}) VALUES {}{tail}", vec![tuple.as_str(); chunk.len()].join(", "));
        let mut params = Vec::with_capacity(chunk.len() * cols.len());
        for r in chunk {
            for (v, c) in r.iter().zip(cols) {
                params.push(bind(v, c, &schema.id)?);
            }
        }
        conn.exec_drop(sql, params).await.ctx(format!("write into {name}"))?;
    }
    Ok(())
}

/// A row some of whose values the source did not resend: only the others are set.
async fn update_partial(conn: &mut Conn, name: &str, schema: &SchemaRef, row: &[Value]) -> Result<(), MyError> {
    let mut sets = Vec::new();
    let mut params = Vec::new();
    for (v, c) in row.iter().zip(&schema.columns) {
        if !c.key && *v != Value::Unchanged {
            sets.push(format!("{} = ?", quote(&c.name)));
            params.push(bind(v, c, &schema.id)?);
        }
    }
    if sets.is_empty() {
        return Ok(());
    }
    let mut conds = Vec::new();
    for (v, c) in row.iter().zip(&schema.columns).filter(|(_, c)| c.key) {
        conds.push(format!("{} = ?", quote(&c.name)));
        params.push(bind(v, c, &schema.id)?);
    }
    let sql = format!("UPDATE {name} SET {} WHERE {}", sets.join(", "), conds.join(" AND "));
    conn.exec_drop(sql, params).await.ctx(format!("update {name}"))
}

/// One row of a changelog table.
struct LogRow {
    op: &'static str,
    before: Option<String>,
    after: Option<String>,
    source_table: String,
    position: Option<String>,
    xid: Option<u64>,
    commit_ts: Option<mysql_async::Value>,
}

impl LogRow {
    fn change(schema: &sluice_core::TableSchema, op: &Op, txn: Option<&sluice_core::TxnMeta>) -> LogRow {
        let json = |r: &sluice_core::Row| Some(sluice_core::json::row_json(schema, r).to_string());
        let (kind, before, after) = match op {
            Op::Insert { after } => ("c", None, json(after)),
            Op::Update { before, after } => ("u", before.as_ref().and_then(json), json(after)),
            Op::Delete { before } => ("d", json(before), None),
            Op::Truncate => ("t", None, None),
        };
        LogRow {
            op: kind,
            before,
            after,
            source_table: schema.id.to_string(),
            position: txn.map(|m| m.position.to_string()),
            xid: txn.map(|m| m.xid),
            commit_ts: txn.and_then(|m| {
                let ts = sluice_core::Value::TimestampTz(sluice_core::Timestamp::from_micros(m.commit_ts_micros));
                encode::param(&ts, &sluice_core::ColumnSchema::new("commit_ts", sluice_core::DataType::TimestampTz, ""))
                    .ok()
            }),
        }
    }

    fn copied(schema: &sluice_core::TableSchema, row: &sluice_core::Row) -> LogRow {
        LogRow {
            op: "r",
            before: None,
            after: Some(sluice_core::json::row_json(schema, row).to_string()),
            source_table: schema.id.to_string(),
            position: None,
            xid: None,
            commit_ts: None,
        }
    }
}

/// Appends log rows in order: one multi-row insert per run of rows for the same table.
async fn append_log(conn: &mut Conn, log: Vec<(String, LogRow)>) -> Result<(), MyError> {
    let mut i = 0;
    while i < log.len() {
        let name = log[i].0.clone();
        let mut j = i;
        while j < log.len() && log[j].0 == name && j - i < ROWS_PER_STATEMENT {
            j += 1;
        }
        let run = &log[i..j];
        let sql = format!(
            "INSERT INTO {name} (op, `before`, `after`, source_table, position, xid, commit_ts) VALUES {}",
            vec!["(?, ?, ?, ?, ?, ?, ?)"; run.len()].join(", ")
        );
        let mut params: Vec<mysql_async::Value> = Vec::with_capacity(run.len() * 7);
        for (_, r) in run {
            params.push(r.op.into());
            params.push(r.before.clone().into());
            params.push(r.after.clone().into());
            params.push(r.source_table.clone().into());
            params.push(r.position.clone().into());
            params.push(r.xid.into());
            params.push(r.commit_ts.clone().unwrap_or(mysql_async::Value::NULL));
        }
        conn.exec_drop(sql, params).await.ctx(format!("append to {name}"))?;
        i = j;
    }
    Ok(())
}

/// Where a sink's checkpoint row lives.
#[derive(Clone)]
struct Store {
    table: String,
    pipeline: String,
    index: String,
    /// `<checkpoint_database>.quarantine`
    quarantine_table: String,
    /// Tables put in quarantine since the last commit
    quarantined: Vec<(TableId, String)>,
}

/// Stores `checkpoint` in `conn`'s open transaction and commits it. Refuses to move the
/// stored position backwards (another process wrote this sink since).
async fn store_and_commit(conn: &mut Conn, store: &Store, checkpoint: &Checkpoint) -> Result<(), MyError> {
    let Store { table, pipeline, index, quarantine_table, quarantined } = store;
    let new_position = checkpoint.position.as_ref().map(|p| serde_json::to_string(p).unwrap_or_default());
    // Locked only when the row exists: a locking read of a missing row takes a gap lock, and two
    // pipelines storing their first checkpoints at once would then deadlock on their inserts.
    let exists: Option<i64> = conn
        .exec_first(format!("SELECT 1 FROM {table} WHERE pipeline = ? AND sink = ?"), (pipeline, index))
        .await
        .ctx("look for the stored checkpoint")?;
    let stored: Option<Option<String>> = match exists {
        Some(_) => conn
            .exec_first(
                format!("SELECT position FROM {table} WHERE pipeline = ? AND sink = ? FOR UPDATE"),
                (pipeline, index),
            )
            .await
            .ctx("read the stored checkpoint")?,
        None => None,
    };
    let parse = |s: &str| serde_json::from_str::<Position>(s).ok();
    if let (Some(old), Some(new)) =
        (stored.flatten().as_deref().and_then(parse), new_position.as_deref().and_then(parse))
    {
        if old != new && old.includes(&new) {
            let _ = conn.query_drop("ROLLBACK").await;
            return Err(MyError::Setup(format!(
                "the checkpoint of pipeline {pipeline:?} (sink {index}) is at {old}, past this process's {new}: \
                 another sluice process has been writing this target; this one stops so the replica never moves \
                 backwards"
            )));
        }
    }
    conn.exec_drop(
        format!(
            "INSERT INTO {table} (pipeline, sink, position, state, updated_at) VALUES (?, ?, ?, ?, UTC_TIMESTAMP(6)) \
             ON DUPLICATE KEY UPDATE position = VALUES(position), state = VALUES(state), updated_at = VALUES(updated_at)"
        ),
        (pipeline, index, new_position.clone(), checkpoint.to_json()),
    )
    .await
    .ctx("store the checkpoint")?;
    for (t, reason) in quarantined {
        conn.exec_drop(
            format!(
                "INSERT INTO {quarantine_table} (pipeline, sink, source_schema, source_table, reason, position, since) \
                 VALUES (?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(6)) \
                 ON DUPLICATE KEY UPDATE reason = VALUES(reason), position = VALUES(position), since = VALUES(since)"
            ),
            (pipeline, index, &t.schema, &t.name, reason, &new_position),
        )
        .await
        .ctx("record a table in quarantine")?;
    }
    sluice_core::crash_point("sink.before_commit");
    conn.query_drop("COMMIT").await.ctx("commit")?;
    sluice_core::crash_point("sink.after_commit");
    Ok(())
}

/// One change to a target table's columns.
#[derive(Debug, PartialEq)]
enum Change {
    Add(sluice_core::ColumnSchema),
    Widen(sluice_core::ColumnSchema),
    Drop(String),
    /// Column name and its type spelling now: made nullable (a column the source no longer has)
    Nullable(String, String),
    /// From, to: the source renamed a column
    Rename(String, String),
}

/// The column changes that bring a target table (`existing`: name, type spelling, nullable
/// (`YES`/`NO`), without a default) in line with `schema` under `policy`, or why the table must
/// go to quarantine. `seen` holds the source's columns as this sink last saw them since it
/// started (`None`: first sight); `target` the target's columns as logical types, read only on
/// first sight.
fn plan_changes(
    schema: &sluice_core::TableSchema,
    existing: &[(String, String, String, bool)],
    seen: Option<&[sluice_core::ColumnSchema]>,
    target: &[sluice_core::ColumnSchema],
    policy: SchemaChanges,
) -> Result<Vec<Change>, String> {
    let freeze = |what: String| format!("{what} (schema_changes = \"freeze\")");
    let mut plan = Vec::new();
    // Renames, as MySQL's binlog carries no column identity: a column this sink saw that the
    // source no longer has, and a source column the target lacks at the same position with the
    // same type.
    let mut renamed: Vec<(String, String)> = Vec::new();
    if policy == SchemaChanges::Follow {
        for (i, e) in existing.iter().enumerate() {
            let Some(old) = seen.and_then(|cols| cols.iter().find(|o| o.name == e.0)) else { continue };
            if schema.column_index(&e.0).is_some() {
                continue;
            }
            let Some(c) = schema.columns.get(i) else { continue };
            if !existing.iter().any(|x| x.0 == c.name) && old.same_type(c) {
                renamed.push((e.0.clone(), c.name.clone()));
                plan.push(Change::Rename(e.0.clone(), c.name.clone()));
            }
        }
    }
    for c in &schema.columns {
        if renamed.iter().any(|(_, to)| *to == c.name) {
            continue;
        }
        let Some((_, spelling, _, _)) = existing.iter().find(|e| e.0 == c.name) else {
            if policy == SchemaChanges::Freeze {
                return Err(freeze(format!("column {} was added on the source", c.name)));
            }
            // Added columns are nullable: rows written before hold no value for them.
            let mut c = c.clone();
            c.nullable = true;
            plan.push(Change::Add(c));
            continue;
        };
        // The type the target column has, as a logical type: the source's before this shape
        // (seen while running), or the target's own on first sight.
        let before = match seen {
            Some(cols) => cols.iter().find(|o| o.name == c.name),
            None => target.iter().find(|o| o.name == c.name && o.data_type != c.data_type),
        };
        let Some(before) = before.filter(|b| !b.same_type(c)) else { continue };
        let to = encode::column_type(c, &schema.dialect);
        if policy == SchemaChanges::Freeze {
            return Err(freeze(format!("column {} changed type from {spelling} to {to}", c.name)));
        }
        if !before.widens_to(c) {
            if seen.is_none() {
                // First sight: the target's spelling may read back as another logical type
                // than the source's; only a clear widening is acted on.
                continue;
            }
            return Err(format!(
                "column {} changed type from {} to {to}, which may not hold every value the replica has",
                c.name, before.native_type
            ));
        }
        let mut widened = c.clone();
        widened.nullable = existing.iter().any(|e| e.0 == c.name && e.2 == "YES");
        plan.push(Change::Widen(widened));
    }
    for (name, spelling, nullable, no_default) in existing {
        if schema.column_index(name).is_some() || renamed.iter().any(|(from, _)| from == name) {
            continue;
        }
        let was_seen = seen.is_some_and(|cols| cols.iter().any(|o| o.name == *name));
        let not_null = nullable != "YES";
        match (was_seen, policy) {
            (true, SchemaChanges::Freeze) => return Err(freeze(format!("column {name} was dropped on the source"))),
            (true, SchemaChanges::Follow) => plan.push(Change::Drop(name.clone())),
            // Kept, NULL in rows written from now on; a column of the replica's own (or one dropped
            // while Sluice was stopped) is left alone unless rows could not be written without it.
            _ if not_null && *no_default => plan.push(Change::Nullable(name.clone(), spelling.clone())),
            _ => {}
        }
    }
    Ok(plan)
}

/// `<checkpoint_database>.quarantine`.
fn quarantine_table(cfg: &MySqlSinkConfig) -> String {
    format!("{}.`quarantine`", quote(&cfg.checkpoint_database))
}

/// A table in quarantine, as recorded.
pub(crate) struct Quarantined {
    pub table: TableId,
    pub reason: String,
    pub since: String,
    pub position: Option<String>,
}

/// The tables in quarantine for `pipeline`'s sink `index`.
async fn quarantined(
    conn: &mut Conn,
    cfg: &MySqlSinkConfig,
    pipeline: &str,
    index: &str,
) -> Result<Vec<Quarantined>, MyError> {
    let rows: Vec<(String, String, String, String, Option<String>)> = conn
        .exec(
            format!(
                "SELECT source_schema, source_table, reason, DATE_FORMAT(since, '%Y-%m-%dT%H:%i:%s.%fZ'), position \
                 FROM {} WHERE pipeline = ? AND sink = ? ORDER BY source_schema, source_table",
                quarantine_table(cfg)
            ),
            (pipeline, index),
        )
        .await
        .ctx("read the tables in quarantine")?;
    Ok(rows
        .into_iter()
        .map(|(schema, table, reason, since, position)| Quarantined {
            table: TableId::new(schema, table),
            reason,
            since,
            position,
        })
        .collect())
}

/// Every table the `index`-th sink of `pipeline` holds, with its state (`sluice tables`).
pub async fn tables(
    cfg: &MySqlSinkConfig,
    pipeline: &str,
    index: usize,
) -> Result<Vec<sluice_core::SinkTable>, MyError> {
    let mut conn = catalog::connect(cfg.url.expose(), &format!("sink[{index}]")).await?;
    let Some(cp) = stored(&mut conn, cfg, pipeline, index).await? else { return Ok(Vec::new()) };
    let quarantined = quarantined(&mut conn, cfg, pipeline, &index.to_string()).await?;
    let quarantined = quarantined.into_iter().map(|q| (q.table, q.reason, q.since, q.position));
    Ok(sluice_core::SinkTable::list(Some(&cp), quarantined))
}

/// The stored checkpoint of `pipeline`'s sink `index`, if the checkpoint table exists and holds
/// one.
async fn stored(
    conn: &mut Conn,
    cfg: &MySqlSinkConfig,
    pipeline: &str,
    index: usize,
) -> Result<Option<Checkpoint>, MyError> {
    let exists: Option<String> = conn
        .exec_first(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'quarantine'",
            (&cfg.checkpoint_database,),
        )
        .await
        .ctx("look for the checkpoint tables")?;
    if exists.is_none() {
        return Ok(None);
    }
    let state: Option<String> = conn
        .exec_first(
            format!(
                "SELECT state FROM {}.`checkpoints` WHERE pipeline = ? AND sink = ?",
                quote(&cfg.checkpoint_database)
            ),
            (pipeline, index.to_string()),
        )
        .await
        .ctx("read the checkpoint")?;
    state.map(|s| Checkpoint::from_json(&s).map_err(|e| MyError::Setup(format!("stored checkpoint: {e}")))).transpose()
}

/// Takes `table` out of quarantine in the `index`-th sink of `pipeline`: the sink forgets it
/// copied the table, so the next start copies it again. Refuses while the pipeline runs against
/// the sink (it holds the sink's lock). Returns whether the table was in quarantine.
pub async fn release(cfg: &MySqlSinkConfig, pipeline: &str, index: usize, table: &TableId) -> Result<bool, MyError> {
    let mut conn = catalog::connect(cfg.url.expose(), &format!("sink[{index}]")).await?;
    let Some(mut cp) = stored(&mut conn, cfg, pipeline, index).await? else { return Ok(false) };
    let lock_name = format!("sluice:{}:{pipeline}:{index}", cfg.checkpoint_database);
    let got: Option<i64> =
        conn.exec_first("SELECT GET_LOCK(?, 0)", (&lock_name,)).await.ctx("take the sink's lock")?.flatten();
    if got != Some(1) {
        return Err(MyError::Setup(format!(
            "pipeline {pipeline:?} is running against sink[{index}]; stop it, release the table, start it again"
        )));
    }
    conn.query_drop("START TRANSACTION").await.ctx("start a transaction")?;
    let deleted = conn
        .exec_iter(
            format!(
                "DELETE FROM {} WHERE pipeline = ? AND sink = ? AND source_schema = ? AND source_table = ?",
                quarantine_table(cfg)
            ),
            (pipeline, index.to_string(), &table.schema, &table.name),
        )
        .await
        .ctx("release the table")?
        .affected_rows();
    if deleted > 0 {
        cp.tables.remove(table);
        conn.exec_drop(
            format!(
                "UPDATE {}.`checkpoints` SET state = ? WHERE pipeline = ? AND sink = ?",
                quote(&cfg.checkpoint_database)
            ),
            (cp.to_json(), pipeline, index.to_string()),
        )
        .await
        .ctx("forget the released table's copy")?;
    }
    conn.query_drop("COMMIT").await.ctx("commit")?;
    let _ = conn.exec_drop("SELECT RELEASE_LOCK(?)", (&lock_name,)).await;
    Ok(deleted > 0)
}

#[async_trait]
impl Sink for MySqlSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn batch_policy(&self) -> BatchPolicy {
        BatchPolicy {
            max_rows: self.cfg.batch.max_rows,
            max_delay: Duration::from_millis(self.cfg.batch.max_delay_ms),
            commit_when_idle: false,
        }
    }

    async fn open(&mut self, _ctx: SinkContext) -> Result<Option<Checkpoint>, ConnectorError> {
        Ok(self.open_inner().await?)
    }

    async fn write(&mut self, event: &Event) -> Result<(), ConnectorError> {
        Ok(self.write_inner(event).await?)
    }

    async fn commit(&mut self, checkpoint: Checkpoint, ack: Ack) -> Result<(), ConnectorError> {
        if !self.in_tx {
            return Ok(self.commit_in_background(checkpoint, ack).await?);
        }
        match self.commit_inner(&checkpoint).await {
            Ok(()) => {
                ack.durable();
                Ok(())
            }
            Err(e) => {
                let e: ConnectorError = e.into();
                ack.fail(ConnectorError::msg(e.class(), e.to_string()));
                Err(e)
            }
        }
    }

    async fn close(&mut self) -> Result<(), ConnectorError> {
        let settled = self.wait_pending().await;
        if let Some(mut c) = self.conn.take() {
            if self.in_tx {
                let _ = c.query_drop("ROLLBACK").await;
            }
            let _ = c.disconnect().await;
        }
        if let Some(l) = self.lock.take() {
            let _ = l.disconnect().await;
        }
        self.loaders.close().await;
        self.snapshots.clear();
        self.batches.clear();
        Ok(settled?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::{ColumnSchema, DataType, TableSchema};

    fn schema(cols: Vec<ColumnSchema>) -> TableSchema {
        TableSchema { id: TableId::new("app", "t"), columns: cols, version: 1, dialect: "mysql".into() }
    }

    fn col(name: &str, t: DataType, native: &str) -> ColumnSchema {
        ColumnSchema::new(name, t, native)
    }

    fn existing(cols: &[(&str, &str, bool)]) -> Vec<(String, String, String, bool)> {
        cols.iter()
            .map(|(n, t, null)| (n.to_string(), t.to_string(), if *null { "YES" } else { "NO" }.into(), true))
            .collect()
    }

    #[test]
    fn each_policy_plans_its_changes() {
        let id = col("id", DataType::Int32, "int(11)").key();
        let before = vec![id.clone(), col("n", DataType::Int32, "int(11)"), col("gone", DataType::Text, "text")];
        let target = existing(&[("id", "int(11)", false), ("n", "int(11)", true), ("gone", "text", false)]);
        // n widened to bigint, gone dropped, added added (another type than gone: the same type at the
        // same place would read as a rename).
        let now =
            schema(vec![id.clone(), col("n", DataType::Int64, "bigint(20)"), col("added", DataType::Int32, "int(11)")]);
        let follow = plan_changes(&now, &target, Some(&before), &[], SchemaChanges::Follow).unwrap();
        assert!(matches!(&follow[0], Change::Widen(c) if c.name == "n" && c.nullable));
        assert!(matches!(&follow[1], Change::Add(c) if c.name == "added" && c.nullable));
        assert_eq!(follow[2], Change::Drop("gone".into()));
        let add_only = plan_changes(&now, &target, Some(&before), &[], SchemaChanges::AddOnly).unwrap();
        assert_eq!(add_only[2], Change::Nullable("gone".into(), "text".into()), "kept, nullable");
        let frozen = plan_changes(&now, &target, Some(&before), &[], SchemaChanges::Freeze).unwrap_err();
        assert!(frozen.contains("column n changed type from int(11) to bigint(20)"), "{frozen}");

        // Narrowing while running: quarantine under every policy.
        let narrowed = schema(vec![id.clone(), col("n", DataType::Int16, "smallint(6)"), before[2].clone()]);
        for p in [SchemaChanges::Follow, SchemaChanges::AddOnly] {
            let why = plan_changes(&narrowed, &target, Some(&before), &[], p).unwrap_err();
            assert!(why.contains("may not hold every value"), "{why}");
        }
        // First sight: a narrower source type is left alone (the target holds wider values
        // already); a wider one is followed; a column of the replica's own is not dropped.
        let first = plan_changes(&narrowed, &target, None, &before, SchemaChanges::Follow).unwrap();
        assert!(first.is_empty(), "{first:?}");
        let own = existing(&[
            ("id", "int(11)", false),
            ("n", "int(11)", true),
            ("gone", "text", true),
            ("mine", "int", true),
        ]);
        let first = plan_changes(&now, &own, None, &before, SchemaChanges::Follow).unwrap();
        assert!(matches!(&first[0], Change::Widen(c) if c.name == "n"));
        assert!(!first.iter().any(|c| matches!(c, Change::Drop(_))), "{first:?}");

        // A rename: same position, same type, under follow; add_only adds the new name.
        let renamed = schema(vec![id.clone(), col("count", DataType::Int32, "int(11)"), before[2].clone()]);
        let plan = plan_changes(&renamed, &target, Some(&before), &[], SchemaChanges::Follow).unwrap();
        assert_eq!(plan, vec![Change::Rename("n".into(), "count".into())]);
        let plan = plan_changes(&renamed, &target, Some(&before), &[], SchemaChanges::AddOnly).unwrap();
        assert!(matches!(&plan[0], Change::Add(c) if c.name == "count"), "{plan:?}");
    }
}
