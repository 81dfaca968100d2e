//! The sink's checkpoint table: one row per (pipeline, sink), written in the same transaction as
//! the data it covers.
//!
//! Columns: `position` (the stream position, as JSON, for people and scripts), `snapshot_done`
//! (no table is being copied), `state` (the whole versioned checkpoint, see
//! `sluice_core::Checkpoint::to_json`) and `updated_at`. Tables written by the first release have
//! no `state` column: it is added, and their rows are read with `Checkpoint::from_v1`.

use sluice_core::{Checkpoint, ConnectorError, ErrorClass, Position, TableId, TableProgress};
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::error::{Ctx, PgError};
use crate::ident::quote_ident;

/// Name of the checkpoint table inside `checkpoint_schema`.
pub const CHECKPOINT_TABLE: &str = "checkpoints";
/// Name of the table inside `checkpoint_schema` holding changes the target refused.
pub const DEAD_LETTER_TABLE: &str = "dead_letters";
/// Name of the table inside `checkpoint_schema` listing tables in quarantine.
pub const QUARANTINE_TABLE: &str = "quarantine";

/// A table in quarantine.
#[derive(Debug, Clone)]
pub(crate) struct Quarantined {
    pub table: TableId,
    pub reason: String,
    /// Source position of the change that put it there
    pub position: Option<String>,
    /// When (RFC 3339)
    pub since: String,
}

/// Where one sink's checkpoint lives.
#[derive(Debug, Clone)]
pub(crate) struct CheckpointStore {
    schema: String,
    pipeline: String,
    sink: String,
}

/// A checkpoint row ready to be written, owning its values (it may run in a background task).
pub(crate) struct CheckpointWrite {
    sql: String,
    /// Reads the stored position and locks the row until the transaction ends.
    lock_sql: String,
    /// The table, for messages
    table: String,
    pipeline: String,
    sink: String,
    position: Option<String>,
    snapshot_done: bool,
    state: String,
    /// Set when other processes write this sink too: the checkpoint is merged into the stored
    /// one (see `Checkpoint::merge_shared`) instead of replacing it.
    shared: Option<Shared>,
}

/// A shared sink's commit: this process's checkpoint and its position before the commit.
struct Shared {
    checkpoint: Checkpoint,
    known: Option<Position>,
}

impl CheckpointWrite {
    /// Makes this a shared sink's write (see [`sluice_core::SinkContext::shared`]): merged into
    /// the stored checkpoint, refused if another process applied one of the partitions this
    /// commit covers past `known` (this process's position before it).
    pub fn shared(mut self, checkpoint: &Checkpoint, known: Option<Position>) -> CheckpointWrite {
        self.shared = Some(Shared { checkpoint: checkpoint.clone(), known });
        self
    }

    /// A shared sink's write: the stored row is locked and merged with, or inserted if there is
    /// none (a concurrent first insert by another process is waited for and then merged with).
    async fn execute_shared(&self, client: &Client, shared: &Shared) -> Result<(), PgError> {
        let lock = format!(
            "SELECT position::text, snapshot_done, state::text FROM {} WHERE pipeline = $1 AND sink = $2 FOR UPDATE",
            self.table
        );
        for _ in 0..3 {
            let row = client.query_opt(&lock, &[&self.pipeline, &self.sink]).await.ctx("read the stored checkpoint")?;
            let Some(r) = row else {
                let insert = self.sql.replace(CONFLICT_UPDATE, "ON CONFLICT (pipeline, sink) DO NOTHING");
                let n = client
                    .execute(&insert, &[&self.pipeline, &self.sink, &self.position, &self.snapshot_done, &self.state])
                    .await
                    .ctx("store checkpoint")?;
                if n == 1 {
                    return Ok(());
                }
                continue; // another process stored its first checkpoint meanwhile
            };
            let stored = parse_row(r.get(0), r.get(1), r.get(2))
                .map_err(|e| PgError::Setup(format!("the stored checkpoint in {} cannot be read: {e}", self.table)))?;
            let merged = shared
                .checkpoint
                .merge_shared(&stored, shared.known.as_ref())
                .map_err(|e| PgError::Retry(e.to_string()))?;
            let position = merged.position.as_ref().and_then(|p| serde_json::to_string(p).ok());
            let done = snapshot_done(&merged);
            client
                .execute(&self.sql, &[&self.pipeline, &self.sink, &position, &done, &merged.to_json()])
                .await
                .ctx("store checkpoint")?;
            return Ok(());
        }
        Err(PgError::Retry(format!("the checkpoint row in {} kept changing under this process", self.table)))
    }

    /// Stores the checkpoint, inside the caller's transaction: [`CheckpointWrite::check`], then
    /// [`CheckpointWrite::store`].
    pub async fn execute(&self, client: &Client) -> Result<(), PgError> {
        self.check(client).await?;
        self.store(client).await
    }

    /// Locks the stored row until the transaction ends and refuses to move the stored position
    /// backwards: a stored position past this one means another sluice process wrote this sink
    /// after this one (fencing's second line, behind the sink's advisory lock). One request, so
    /// it can be pipelined behind `BEGIN`. A shared sink checks in [`CheckpointWrite::store`].
    pub async fn check(&self, client: &Client) -> Result<(), PgError> {
        let (None, Some(new)) = (&self.shared, &self.position) else { return Ok(()) };
        let rows = client
            .query_typed(&self.lock_sql, &[(&self.pipeline, Type::TEXT), (&self.sink, Type::TEXT)])
            .await
            .ctx("read the stored checkpoint")?;
        let stored: Option<String> = rows.first().and_then(|r| r.get(0));
        let parse = |s: &str| serde_json::from_str::<Position>(s).ok();
        if let (Some(old), Some(new)) = (stored.as_deref().and_then(parse), parse(new)) {
            if old != new && old.includes(&new) {
                return Err(PgError::Fenced(format!(
                    "the checkpoint of pipeline {:?} ({}) in {} is at {old}, past this process's {new}: another \
                     sluice process has been writing this target for the same pipeline. This one stops so the \
                     replica never moves backwards; run one process per pipeline (a standby waits for the \
                     slot by itself)",
                    self.pipeline, self.sink, self.table
                )));
            }
        }
        Ok(())
    }

    /// Writes the row (after [`CheckpointWrite::check`] in the same transaction). One request
    /// unless the sink is shared, when the stored row is read, merged with and written.
    pub async fn store(&self, client: &Client) -> Result<(), PgError> {
        if let Some(shared) = &self.shared {
            return self.execute_shared(client, shared).await;
        }
        client
            .query_typed(
                &self.sql,
                &[
                    (&self.pipeline, Type::TEXT),
                    (&self.sink, Type::TEXT),
                    (&self.position, Type::TEXT),
                    (&self.snapshot_done, Type::BOOL),
                    (&self.state, Type::TEXT),
                ],
            )
            .await
            .ctx("store checkpoint")?;
        Ok(())
    }

    /// [`CheckpointWrite::store`] then `COMMIT`, sent together when the store is one request,
    /// so the target does not wait a round trip between them (`join!` polls the store first,
    /// which queues its request before the `COMMIT` is queued). If the server refuses the
    /// store, the transaction is aborted and the `COMMIT` behind it only ends it: nothing is
    /// committed and the store's error is returned. The store cannot fail before its request
    /// is queued: its parameters are text and a boolean bound as TEXT and BOOL.
    pub async fn store_and_commit(&self, client: &Client) -> Result<(), PgError> {
        if self.shared.is_some() {
            self.store(client).await?;
            return client.batch_execute("COMMIT").await.ctx("commit target transaction");
        }
        let (stored, committed) = tokio::join!(biased; self.store(client), client.batch_execute("COMMIT"));
        stored?;
        committed.ctx("commit target transaction")
    }
}

/// How a write replaces the stored row.
const CONFLICT_UPDATE: &str = "ON CONFLICT (pipeline, sink) DO UPDATE SET position = EXCLUDED.position, \
     snapshot_done = EXCLUDED.snapshot_done, state = EXCLUDED.state, updated_at = now()";

/// No table is being copied.
fn snapshot_done(cp: &Checkpoint) -> bool {
    !cp.tables.values().any(|t| matches!(t, TableProgress::Copying { .. }))
}

/// A checkpoint row: the versioned state, or a first-release position and flag.
fn parse_row(
    position: Option<String>,
    snapshot_done: bool,
    state: Option<String>,
) -> Result<Checkpoint, sluice_core::CheckpointError> {
    match &state {
        Some(s) => Checkpoint::from_json(s),
        None => Checkpoint::from_v1(position.as_deref(), snapshot_done),
    }
}

impl CheckpointStore {
    pub fn new(schema: &str, pipeline: &str, sink: &str) -> CheckpointStore {
        CheckpointStore { schema: schema.to_string(), pipeline: pipeline.to_string(), sink: sink.to_string() }
    }

    fn table(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(CHECKPOINT_TABLE))
    }

    /// Whether this sink's tables exist on the target (it ran at least once).
    pub async fn exists(&self, client: &Client) -> Result<bool, PgError> {
        let names = [self.table(), self.quarantine_table()];
        Ok(client
            .query_one("SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL", &[&names[0], &names[1]])
            .await
            .ctx("look up the checkpoint table")?
            .get(0))
    }

    fn quarantine_table(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(QUARANTINE_TABLE))
    }

    /// Records `table` as quarantined (inside the caller's transaction).
    pub async fn quarantine(
        &self,
        client: &Client,
        table: &TableId,
        reason: &str,
        position: Option<&str>,
    ) -> Result<(), PgError> {
        client
            .execute(
                &format!(
                    "INSERT INTO {} (pipeline, sink, source_schema, source_table, reason, position) \
                     VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (pipeline, sink, source_schema, source_table) DO UPDATE SET reason = EXCLUDED.reason, \
                     position = EXCLUDED.position, since = now()",
                    self.quarantine_table()
                ),
                &[&self.pipeline, &self.sink, &table.schema, &table.name, &reason, &position],
            )
            .await
            .ctx(format!("record {table} as quarantined"))?;
        Ok(())
    }

    /// This sink's tables in quarantine.
    pub async fn quarantined(&self, client: &Client) -> Result<Vec<Quarantined>, PgError> {
        let rows = client
            .query(
                &format!(
                    "SELECT source_schema, source_table, reason, position, to_char(since AT TIME ZONE 'UTC', \
                     'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM {} WHERE pipeline = $1 AND sink = $2 ORDER BY 1, 2",
                    self.quarantine_table()
                ),
                &[&self.pipeline, &self.sink],
            )
            .await
            .ctx("read quarantined tables")?;
        Ok(rows
            .iter()
            .map(|r| Quarantined {
                table: TableId::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                reason: r.get(2),
                position: r.get(3),
                since: r.get(4),
            })
            .collect())
    }

    /// Takes `table` out of quarantine and forgets that it was copied, so the next start copies
    /// it again from scratch. Runs in its own transaction; the caller holds the sink's lock.
    /// Returns whether the table was in quarantine.
    pub async fn release(&self, client: &Client, table: &TableId) -> Result<bool, ConnectorError> {
        client.batch_execute("BEGIN").await.ctx("begin")?;
        let deleted = client
            .execute(
                &format!(
                    "DELETE FROM {} WHERE pipeline = $1 AND sink = $2 AND source_schema = $3 AND source_table = $4",
                    self.quarantine_table()
                ),
                &[&self.pipeline, &self.sink, &table.schema, &table.name],
            )
            .await
            .ctx(format!("release {table}"))?;
        if let Some(mut cp) = self.read(client).await? {
            cp.tables.remove(table);
            cp.table_ids.remove(table);
            self.write(&cp).execute(client).await?;
        }
        client.batch_execute("COMMIT").await.ctx("commit the release")?;
        Ok(deleted > 0)
    }

    /// The dead-letter table, qualified.
    pub fn dead_letters(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(DEAD_LETTER_TABLE))
    }

    /// The pipeline name.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// The sink's id in the checkpoint table.
    pub fn sink(&self) -> &str {
        &self.sink
    }

    /// Takes a session lock that only one incarnation of this sink can hold, so a sink being
    /// rebuilt never writes while the connection of the one it replaces is still working (the
    /// server releases the lock when that connection ends). Waits up to `wait`.
    pub async fn fence(&self, client: &Client, wait: std::time::Duration) -> Result<(), PgError> {
        let key = format!("sluice:{}:{}:{}", self.schema, self.pipeline, self.sink);
        let started = std::time::Instant::now();
        let mut waited = false;
        loop {
            let got: bool = client
                .query_one("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", &[&key])
                .await
                .ctx("take the sink's advisory lock")?
                .get(0);
            if got {
                if waited {
                    tracing::info!(pipeline = %self.pipeline, sink = %self.sink, "the other holder released the sink; taking over");
                }
                return Ok(());
            }
            if !waited && !wait.is_zero() {
                tracing::info!(
                    pipeline = %self.pipeline,
                    sink = %self.sink,
                    "another connection holds this sink (an earlier incarnation finishing, or another sluice running \
                     this pipeline); waiting as a standby until it ends"
                );
                waited = true;
            }
            if started.elapsed() >= wait {
                return Err(PgError::Retry(format!(
                    "another connection holds this sink's lock (pipeline {:?}, {}): an earlier incarnation still \
                     finishing, or another sluice running the same pipeline against this target; waiting as a \
                     standby until it ends (see pg_locks where locktype = 'advisory')",
                    self.pipeline, self.sink
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// Creates the checkpoint and dead-letter tables, or brings a first-release checkpoint
    /// table up to date.
    pub async fn prepare(&self, client: &Client) -> Result<(), PgError> {
        // Two sinks opening against one database at once would race in `CREATE .. IF NOT
        // EXISTS` (a unique violation in the catalog): a transaction-scoped lock, keyed by a
        // hash of the schema's name, lets one create and the other find.
        let key = self.schema.bytes().fold(0x5eed_0000_0000_0000_u64, |h, b| h.rotate_left(5) ^ b as u64) as i64;
        client
            .batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock({key}); \
                 CREATE SCHEMA IF NOT EXISTS {schema}; CREATE TABLE IF NOT EXISTS {table} (\
                 pipeline text NOT NULL, sink text NOT NULL, position jsonb, snapshot_done boolean NOT NULL, \
                 updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (pipeline, sink)); \
                 ALTER TABLE {table} ADD COLUMN IF NOT EXISTS state jsonb; \
                 CREATE TABLE IF NOT EXISTS {dead} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
                 pipeline text NOT NULL, sink text NOT NULL, source_table text NOT NULL, op text NOT NULL, \
                 row jsonb, error text NOT NULL, position text, at timestamptz NOT NULL DEFAULT now()); \
                 CREATE TABLE IF NOT EXISTS {quarantine} (pipeline text NOT NULL, sink text NOT NULL, \
                 source_schema text NOT NULL, source_table text NOT NULL, reason text NOT NULL, position text, \
                 since timestamptz NOT NULL DEFAULT now(), \
                 PRIMARY KEY (pipeline, sink, source_schema, source_table)); COMMIT",
                schema = quote_ident(&self.schema),
                table = self.table(),
                dead = self.dead_letters(),
                quarantine = self.quarantine_table(),
            ))
            .await
            .ctx("create checkpoint table")
    }

    /// The stored checkpoint, if any.
    pub async fn read(&self, client: &Client) -> Result<Option<Checkpoint>, ConnectorError> {
        let row = client
            .query_opt(
                &format!(
                    "SELECT position::text, snapshot_done, state::text FROM {} WHERE pipeline = $1 AND sink = $2",
                    self.table()
                ),
                &[&self.pipeline, &self.sink],
            )
            .await
            .ctx("read checkpoint")?;
        let Some(r) = row else { return Ok(None) };
        parse_row(r.get(0), r.get(1), r.get(2)).map(Some).map_err(|e| {
            ConnectorError::new(
                ErrorClass::Fatal,
                format!(
                    "the checkpoint of pipeline {} in {} cannot be read; delete that row to start over",
                    self.pipeline,
                    self.table()
                ),
                e,
            )
        })
    }

    /// The statement that stores `cp`.
    pub fn write(&self, cp: &Checkpoint) -> CheckpointWrite {
        CheckpointWrite {
            sql: format!(
                "INSERT INTO {} (pipeline, sink, position, snapshot_done, state, updated_at) \
                 VALUES ($1, $2, $3::text::jsonb, $4, $5::text::jsonb, now()) {CONFLICT_UPDATE}",
                self.table()
            ),
            lock_sql: format!(
                "SELECT position::text FROM {} WHERE pipeline = $1 AND sink = $2 FOR UPDATE",
                self.table()
            ),
            table: self.table(),
            pipeline: self.pipeline.clone(),
            sink: self.sink.clone(),
            position: cp.position.as_ref().and_then(|p| serde_json::to_string(p).ok()),
            snapshot_done: snapshot_done(cp),
            state: cp.to_json(),
            shared: None,
        }
    }
}
