//! The blocking side: one DuckDB file, opened for a unit of work and released after it, so
//! other processes (`sluice query`, DuckDB's own CLI and clients) can read it between flushes.
//!
//! ```text
//!  Job { steps, checkpoint } ─▶ open (wait while another process holds the file)
//!     BEGIN ─ each step: stage the Arrow batch in a temp table ─ MERGE / INSERT / UPDATE / DELETE
//!           ─ the checkpoint row ─ COMMIT ─▶ release the file
//! ```
//! DuckDB allows one process to write a file at a time (and no reader while it does), so the
//! file stays open only while a job runs. Every step stages its rows with DuckDB's appender (an
//! Arrow batch as it is) and moves them into the table with one set-based statement that casts
//! each column to the table's type.

use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use duckdb::{AccessMode, Config, Connection};
use sluice_core::ColumnSchema;
use tracing::{debug, info};

use crate::types::{column_type, quote, staging_type};

/// How long opening waits for another process to let go of the file.
pub const OPEN_WAIT: Duration = Duration::from_secs(60);

/// Files this process has open. DuckDB's file lock keeps other processes out, but not a second
/// instance in the same process (a sink reopened while its predecessor still lets go, the
/// playground reading its own replica): two instances of one file corrupt each other's view of
/// the write-ahead log. So opening waits here first, as it waits for other processes.
static OPEN: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());
static CLOSED: std::sync::Condvar = std::sync::Condvar::new();

/// The process-wide claim on a file, given back when dropped.
pub(crate) struct Claim(std::path::PathBuf);

impl Claim {
    /// Waits until no other instance in this process has `path` open (up to `wait`).
    pub(crate) fn take(path: &str, wait: Duration) -> Result<Claim, DbError> {
        let key = std::path::absolute(path).unwrap_or_else(|_| path.into());
        let deadline = Instant::now() + wait;
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        while open.contains(&key) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DbError {
                    what: format!("open {path}"),
                    source: duckdb::Error::DuckDBFailure(
                        duckdb::ffi::Error { code: duckdb::ffi::ErrorCode::DatabaseLocked, extended_code: 0 },
                        Some(format!("Could not set lock on file {path}: this process still has it open")),
                    ),
                });
            }
            open = CLOSED.wait_timeout(open, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        open.push(key.clone());
        Ok(Claim(key))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|p| *p != self.0);
        CLOSED.notify_all();
    }
}

/// A DuckDB failure, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("duckdb: {what}: {source}")]
pub struct DbError {
    /// What Sluice was doing
    pub what: String,
    /// DuckDB's error
    #[source]
    pub source: duckdb::Error,
}

impl DbError {
    /// Whether another process holds the file.
    pub fn locked(&self) -> bool {
        let m = self.source.to_string();
        m.contains("Could not set lock on file") || m.contains("Conflicting lock")
    }
}

pub(crate) trait Ctx<T> {
    fn ctx(self, what: impl Into<String>) -> Result<T, DbError>;
}

impl<T> Ctx<T> for Result<T, duckdb::Error> {
    fn ctx(self, what: impl Into<String>) -> Result<T, DbError> {
        self.map_err(|source| DbError { what: what.into(), source })
    }
}

/// One unit of work on a table, inside a job's transaction.
pub enum Step {
    /// Statements run as they are (DDL, emptying a table).
    Sql(String),
    /// Rows inserted into `table` (`batch` holds `columns`, in order).
    Insert { table: String, columns: Vec<ColumnSchema>, batch: RecordBatch },
    /// Rows appended to a table whose columns are exactly the batch's, in order and type (a
    /// consistent snapshot's table, made by the sink): no staging, no casts.
    Append { catalog: String, schema: String, table: String, batch: RecordBatch },
    /// Rows merged into `table` by key: the batch holds `columns` then `_sluice_delete`; a row
    /// marked deleted removes its key, any other replaces or adds the row.
    Merge { table: String, columns: Vec<ColumnSchema>, batch: RecordBatch },
    /// Rows that carry only some columns (the others unchanged on the target): `batch` holds the
    /// key columns, then the sent ones; each target row with the key gets the sent values.
    Update { table: String, keys: Vec<ColumnSchema>, set: Vec<ColumnSchema>, batch: RecordBatch },
    /// A row moved to a new key without resending every value: `batch` holds the old key (as
    /// `_sluice_old_<key>` columns), then the new key and the sent columns.
    Move { table: String, keys: Vec<ColumnSchema>, set: Vec<ColumnSchema>, batch: RecordBatch },
}

/// A unit of work: steps, then (when given) the checkpoint, in one transaction.
pub struct Job {
    pub steps: Vec<Step>,
    /// `(checkpoint table, pipeline, sink, state JSON, position JSON)`
    pub checkpoint: Option<(String, String, String, String, Option<String>)>,
}

/// The file and how to open it.
pub struct Db {
    path: String,
    memory_limit: Option<String>,
    threads: Option<u32>,
    /// The connection, and this process's claim on the file (dropped after it)
    conn: Option<(Connection, Claim)>,
    /// The file's catalog name, once known
    catalog: Option<String>,
}

impl Db {
    pub fn new(path: &str, memory_limit: Option<String>, threads: Option<u32>) -> Db {
        Db { path: path.to_string(), memory_limit, threads, conn: None, catalog: None }
    }

    /// The open connection, opening the file first (waiting up to [`OPEN_WAIT`] while another
    /// process holds it).
    pub fn conn(&mut self) -> Result<&Connection, DbError> {
        if self.conn.is_none() {
            let claim = Claim::take(&self.path, OPEN_WAIT)?;
            let started = Instant::now();
            let mut said = false;
            let conn = loop {
                match self.open_once() {
                    Ok(c) => break c,
                    Err(e) if e.locked() && started.elapsed() < OPEN_WAIT => {
                        if !said {
                            info!(path = %self.path, error = %e.source, "another process holds the DuckDB file; waiting for it");
                            said = true;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => return Err(e),
                }
            };
            self.conn = Some((conn, claim));
        }
        Ok(&self.conn.as_ref().expect("opened above").0)
    }

    fn open_once(&self) -> Result<Connection, DbError> {
        let mut config = Config::default().access_mode(AccessMode::ReadWrite).ctx("configure")?;
        if let Some(m) = &self.memory_limit {
            config = config.max_memory(m).ctx("set memory_limit")?;
        }
        if let Some(t) = self.threads {
            config = config.threads(i64::from(t)).ctx("set threads")?;
        }
        Connection::open_with_flags(&self.path, config).ctx(format!("open {}", self.path))
    }

    /// The name DuckDB gives the file's catalog (after the file's name).
    pub fn catalog(&mut self) -> Result<String, DbError> {
        if self.catalog.is_none() {
            let name: String =
                self.conn()?.query_row("SELECT current_database()", [], |r| r.get(0)).ctx("read the catalog's name")?;
            self.catalog = Some(name);
        }
        Ok(self.catalog.clone().unwrap_or_default())
    }

    /// Whether an error may go away by trying again (the file is held, the disk is full);
    /// errors of the statement itself (binder, catalog, conversion) do not.
    pub fn transient(e: &DbError) -> bool {
        let m = e.source.to_string();
        e.locked() || m.starts_with("IO Error") || m.contains("Out of Memory")
    }

    /// Closes the file (DuckDB checkpoints its write-ahead log into it), so others can open it.
    pub fn release(&mut self) {
        if let Some((c, claim)) = self.conn.take() {
            if let Err((_, e)) = c.close() {
                debug!(error = %e, "closing the DuckDB file");
            }
            drop(claim);
        }
    }

    /// Runs statements outside a job (DDL before a batch, reads).
    pub fn execute(&mut self, sql: &str) -> Result<(), DbError> {
        self.conn()?.execute_batch(sql).ctx(sql.chars().take(200).collect::<String>())
    }

    /// Runs `job` in one transaction; on error nothing of it stays.
    pub fn run(&mut self, job: Job) -> Result<(), DbError> {
        self.conn()?.execute_batch("BEGIN TRANSACTION").ctx("begin")?;
        self.commit_open(job)
    }

    /// Applies `steps` in the transaction already open; nothing commits.
    pub fn apply_open(&mut self, steps: Vec<Step>) -> Result<(), DbError> {
        let conn = self.conn()?;
        let r = apply(conn, Job { steps, checkpoint: None });
        if r.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        r
    }

    /// Completes the open transaction with `job` and commits it; on error nothing of the
    /// transaction stays.
    pub fn commit_open(&mut self, job: Job) -> Result<(), DbError> {
        let conn = self.conn()?;
        let r = apply(conn, job);
        match r {
            Ok(()) => {
                sluice_core::crash_point("sink.before_commit");
                conn.execute_batch("COMMIT").ctx("commit")?;
                sluice_core::crash_point("sink.after_commit");
                Ok(())
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

fn apply(conn: &Connection, job: Job) -> Result<(), DbError> {
    for step in job.steps {
        match step {
            Step::Sql(sql) => conn.execute_batch(&sql).ctx(sql.chars().take(200).collect::<String>())?,
            Step::Insert { table, columns, batch } => {
                stage(conn, &batch)?;
                let names = columns.iter().map(|c| quote(&c.name)).collect::<Vec<_>>().join(", ");
                let values = columns.iter().map(|c| cast("s", c)).collect::<Vec<_>>().join(", ");
                let sql = format!("INSERT INTO {table} ({names}) SELECT {values} FROM temp.main._sluice_stage s");
                conn.execute_batch(&sql).ctx(format!("insert into {table}"))?;
            }
            Step::Append { catalog, schema, table, batch } => {
                let mut app =
                    conn.appender_to_catalog_and_db(&table, &catalog, &schema).ctx(format!("append to {table}"))?;
                app.append_record_batch(batch).ctx(format!("append to {table}"))?;
                app.flush().ctx(format!("append to {table}"))?;
            }
            Step::Merge { table, columns, batch } => {
                stage(conn, &batch)?;
                conn.execute_batch(&merge_sql(&table, &columns)).ctx(format!("merge into {table}"))?;
            }
            Step::Update { table, keys, set, batch } => {
                stage(conn, &batch)?;
                let sets = set.iter().map(|c| format!("{} = {}", quote(&c.name), cast("s", c))).collect::<Vec<_>>();
                let on = key_match(&keys, "s", "");
                let sql =
                    format!("UPDATE {table} AS t SET {} FROM temp.main._sluice_stage s WHERE {on}", sets.join(", "));
                conn.execute_batch(&sql).ctx(format!("update {table}"))?;
            }
            Step::Move { table, keys, set, batch } => {
                stage(conn, &batch)?;
                let sets = set.iter().map(|c| format!("{} = {}", quote(&c.name), cast("s", c))).collect::<Vec<_>>();
                let on = key_match(&keys, "s", "_sluice_old_");
                let sql =
                    format!("UPDATE {table} AS t SET {} FROM temp.main._sluice_stage s WHERE {on}", sets.join(", "));
                conn.execute_batch(&sql).ctx(format!("move a row of {table}"))?;
            }
        }
    }
    if let Some((table, pipeline, sink, state, position)) = job.checkpoint {
        conn.execute(&format!("DELETE FROM {table} WHERE pipeline = ? AND sink = ?"), duckdb::params![pipeline, sink])
            .ctx("clear the checkpoint row")?;
        conn.execute(
            &format!("INSERT INTO {table} (pipeline, sink, position, state, updated_at) VALUES (?, ?, ?, ?, now())"),
            duckdb::params![pipeline, sink, position, state],
        )
        .ctx("store the checkpoint")?;
    }
    Ok(())
}

/// `s."c"` cast to the column's table type.
fn cast(alias: &str, c: &ColumnSchema) -> String {
    format!("CAST({alias}.{} AS {})", quote(&c.name), column_type(c))
}

/// `t."k" = CAST(s."<prefix>k" AS type) AND ...`
fn key_match(keys: &[ColumnSchema], alias: &str, prefix: &str) -> String {
    keys.iter()
        .map(|k| {
            format!(
                "t.{} = CAST({alias}.{} AS {})",
                quote(&k.name),
                quote(&format!("{prefix}{}", k.name)),
                column_type(k)
            )
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Replaces the staging table with one of the batch's shape and appends the batch.
fn stage(conn: &Connection, batch: &RecordBatch) -> Result<(), DbError> {
    let cols: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| format!("{} {}", quote(f.name()), staging_type(f.data_type())))
        .collect();
    conn.execute_batch(&format!("CREATE OR REPLACE TEMP TABLE _sluice_stage ({})", cols.join(", ")))
        .ctx("create the staging table")?;
    let mut app = conn.appender_to_catalog_and_db("_sluice_stage", "temp", "main").ctx("open the staging appender")?;
    app.append_record_batch(batch.clone()).ctx("stage rows")?;
    app.flush().ctx("stage rows")?;
    Ok(())
}

/// One MERGE applying a staged batch: deletes, replacements and inserts by key.
pub(crate) fn merge_sql(table: &str, columns: &[ColumnSchema]) -> String {
    let keys: Vec<ColumnSchema> = columns.iter().filter(|c| c.key).cloned().collect();
    let on = key_match(&keys, "s", "");
    let others: Vec<String> =
        columns.iter().filter(|c| !c.key).map(|c| format!("{} = {}", quote(&c.name), cast("s", c))).collect();
    let names = columns.iter().map(|c| quote(&c.name)).collect::<Vec<_>>().join(", ");
    let values = columns.iter().map(|c| cast("s", c)).collect::<Vec<_>>().join(", ");
    let update =
        if others.is_empty() { String::new() } else { format!(" WHEN MATCHED THEN UPDATE SET {}", others.join(", ")) };
    format!(
        "MERGE INTO {table} AS t USING temp.main._sluice_stage AS s ON ({on}) \
         WHEN MATCHED AND s._sluice_delete THEN DELETE{update} \
         WHEN NOT MATCHED AND NOT s._sluice_delete THEN INSERT ({names}) VALUES ({values})"
    )
}
