//! PostgreSQL source: logical replication with the pgoutput plugin.
//!
//! ```text
//!  catalog client ── publication, slot state, table/key/type lookups, table discovery
//!  replication conn ── CREATE_REPLICATION_SLOT .. EXPORT_SNAPSHOT ──▶ snapshot name
//!  snapshot client ── BEGIN REPEATABLE READ; SET TRANSACTION SNAPSHOT; COPY .. TO STDOUT
//!                      ──▶ Copy{snapshot} per table, all before the stream    (snapshot.rs)
//!  replication conn ── START_REPLICATION SLOT .. LOGICAL <resume> ──▶ XLogData / keepalive
//!                      ──▶ Begin, Change*, Commit, Heartbeat                 (stream.rs)
//!                      ◀── Standby status update (confirmed position from the runtime)
//!  copy client ── emit low watermark; SELECT chunk; emit high watermark
//!                      ──▶ Copy{replace|resume} chunks between transactions          (backfill.rs)
//! ```
//!
//! Progress: the runtime confirms a position only once every sink holds it durably; the source
//! reports it to the server as the slot's flush position, which lets the server recycle WAL.
//! Transactions without changes to the selected tables and keepalives outside a transaction
//! become heartbeats, so an idle publication still advances the slot.
//!
//! Copies: when no sink holds anything, the slot is created with an exported snapshot and every
//! table is copied from it, so the copy holds exactly the transactions before the slot's
//! consistent point. Otherwise only the tables some sink lacks (a table selected later, a sink
//! added later, a copy interrupted by a crash) are copied, chunk by chunk, while the stream runs,
//! with watermarks in the WAL keeping the chunks consistent with it (DBLog's algorithm; see
//! backfill.rs).
//!
//! Errors: connection losses are transient (the runtime reconnects and resumes from the
//! durable checkpoint); a missing slot with a checkpoint, missing tables or privileges are
//! fatal with a fix in the message.

mod backfill;
mod snapshot;
mod spill;
mod stream;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use sluice_core::{ConnectorError, Event, Lsn, Position, Resume, Source, SourceContext, TableId};
use tokio::sync::mpsc;
use tokio_postgres::Client;
use tracing::{debug, info, warn};

use crate::catalog::{self, SourceTable};
use crate::config::{Encoding, PgSourceConfig, SnapshotMode};
use crate::error::{Ctx, PgError};
use crate::ident::{qualified, quote_ident};
use crate::replication::ReplicationConn;
use backfill::CopyJob;
use stream::Streamer;

/// How long to wait for a slot to become free before giving up on this attempt.
const SLOT_WAIT_LIMIT: Duration = Duration::from_secs(60);
/// How often a standby says again that it is waiting for the slot.
const STANDBY_NOTE_EVERY: Duration = Duration::from_secs(60);
/// The prefix of the logical decoding messages Sluice writes (copy watermarks).
pub(crate) const MESSAGE_PREFIX: &str = "sluice";

/// The PostgreSQL source.
pub struct PgSource {
    cfg: PgSourceConfig,
    slot: String,
    publication: String,
}

impl PgSource {
    /// A source for `cfg` in pipeline `pipeline`.
    pub fn new(cfg: PgSourceConfig, pipeline: &str) -> Self {
        let slot = cfg.slot_name(pipeline);
        let publication = cfg.publication_name(pipeline);
        PgSource { cfg, slot, publication }
    }
}

#[async_trait]
impl Source for PgSource {
    async fn run(&mut self, resume: Resume, ctx: SourceContext) -> Result<(), ConnectorError> {
        Ok(self.run_inner(resume, ctx).await?)
    }
}

struct SlotHolder {
    pid: i32,
    silent: Duration,
    application: String,
    client: String,
}

impl SlotHolder {
    fn describe(&self) -> String {
        format!("{} from {}", if self.application.is_empty() { "?" } else { &self.application }, self.client)
    }
}

struct SlotInfo {
    active_pid: Option<i32>,
    plugin: Option<String>,
    confirmed: Option<Lsn>,
}

impl PgSource {
    async fn run_inner(&mut self, resume: Resume, ctx: SourceContext) -> Result<(), PgError> {
        let SourceContext { events, confirmed, stop, accepted, .. } = ctx;
        let url = self.cfg.url.expose().clone();
        let catalog = catalog::connect(&url, "source").await?;
        let mut tables = self.selected_tables(&catalog).await?;
        self.ensure_publication(&catalog, &mut tables).await?;
        send(&events, Event::Tables { selected: tables.iter().map(|t| t.id.clone()).collect() }).await?;

        let mut repl = ReplicationConn::connect(&crate::tls::target(&url, "source")?).await?;
        let slot = self.slot_info(&catalog).await?;
        let copy = self.cfg.snapshot == SnapshotMode::Initial;
        let live = resume.live();

        // A slot nobody has consumed from (a crash before anything became durable) is redone.
        let slot = match slot {
            Some(_) if resume.is_fresh() => {
                info!(slot = %self.slot, "no sink holds anything yet; dropping the slot and starting over");
                self.wait_slot_free(&catalog).await?;
                repl.simple_query(&format!("DROP_REPLICATION_SLOT {} WAIT", quote_ident(&self.slot))).await?;
                None
            }
            s => s,
        };
        let mut jobs = Vec::new();
        // `start` is where streaming resumes; `slot_confirmed` is what the slot already holds as
        // confirmed. Only the latter may be reported until the runtime confirms more: `start`
        // is the meet of the sinks that are up, and a sink that is down may hold less.
        let (start, slot_confirmed) = match slot {
            None if resume.is_fresh() => {
                let (consistent, snapshot_name) = self.create_slot(&mut repl, copy).await?;
                send(&events, Event::StreamStart { position: Position::Pg(consistent) }).await?;
                if copy {
                    let done =
                        snapshot::copy_all(&url, &tables, &snapshot_name, live, &accepted, &events, &stop).await?;
                    if !done {
                        info!("stopped during the snapshot; it continues table by table next time");
                        drop(events);
                        drain_confirmations(confirmed).await;
                        return Ok(());
                    }
                }
                (consistent, consistent)
            }
            None => {
                if let Some(i) = resume.sinks.iter().position(Option::is_none) {
                    return Err(PgError::Retry(format!(
                        "replication slot {} does not exist and sink[{i}] is down: waiting for it, since creating the \
                         slot now could skip changes it has not received",
                        self.slot
                    )));
                }
                if let Some(p) = resume.position() {
                    return Err(PgError::Setup(format!(
                        "replication slot {} is missing on the source, but the sinks hold position {p}: changes since \
                         then are lost. To copy everything again, delete this pipeline's rows from the sinks' \
                         checkpoint tables and run again",
                        self.slot
                    )));
                }
                let (consistent, _) = self.create_slot(&mut repl, false).await?;
                send(&events, Event::StreamStart { position: Position::Pg(consistent) }).await?;
                if copy {
                    jobs = self.copy_jobs(&tables, &resume);
                }
                (consistent, consistent)
            }
            Some(s) => {
                if s.plugin.as_deref() != Some("pgoutput") {
                    return Err(PgError::Setup(format!(
                        "replication slot {} uses plugin {:?}, not pgoutput; drop it or set source.slot to another name",
                        self.slot, s.plugin
                    )));
                }
                if s.active_pid.is_some() {
                    self.wait_slot_free(&catalog).await?;
                }
                let start = match resume.position() {
                    Some(Position::Pg(l)) => l,
                    Some(other) => {
                        return Err(PgError::Setup(format!(
                            "the sinks hold position {other}, which is not a PostgreSQL position: this pipeline's \
                             source changed; give the pipeline a new name to start over"
                        )))
                    }
                    None => s.confirmed.unwrap_or(Lsn(0)),
                };
                send(&events, Event::StreamStart { position: Position::Pg(start) }).await?;
                if copy {
                    jobs = self.copy_jobs(&tables, &resume);
                }
                (start, s.confirmed.unwrap_or(Lsn(0)))
            }
        };
        if !jobs.is_empty() && server_version(&catalog).await? < 140_000 {
            return Err(PgError::Setup(
                "copying tables into sinks that lack them while streaming needs PostgreSQL 14 or newer (logical \
                 decoding messages); upgrade the source, or start the pipeline over with a new name"
                    .into(),
            ));
        }
        for j in &jobs {
            info!(table = %j.table, sinks = ?j.to, after = ?j.after, "table will be copied while streaming");
        }

        let mut streamer = Streamer::new(
            &self.cfg,
            &url,
            &self.slot,
            &self.publication,
            catalog,
            tables,
            jobs,
            live,
            start,
            slot_confirmed,
            events,
            confirmed,
            stop,
        )
        .await?;
        let modern = server_version(streamer.catalog()).await? >= 140_000;
        let binary = modern && self.cfg.encoding == Encoding::Binary && streamer.binary_ok().await?;
        streamer.set_mode(binary, modern);
        repl.start_replication(&format!(
            "START_REPLICATION SLOT {} LOGICAL {} (proto_version '{}', publication_names {}{}{})",
            quote_ident(&self.slot),
            start,
            // Protocol 2 streams a large transaction while it runs (held in a temporary file
            // until it commits, see spill.rs) instead of the source spilling it to its own disk.
            if modern { 2 } else { 1 },
            crate::ident::quote_literal(&quote_ident(&self.publication)),
            if modern { ", messages 'true', streaming 'on'" } else { "" },
            if binary { ", binary 'true'" } else { "" }
        ))
        .await?;
        info!(slot = %self.slot, from = %start, binary, "streaming changes");
        streamer.run(&mut repl).await?;
        repl.terminate().await;
        Ok(())
    }

    /// The selected tables; every one needs a key.
    async fn selected_tables(&self, catalog: &Client) -> Result<Vec<SourceTable>, PgError> {
        let filter = self.cfg.filter();
        let tables = catalog::selected_tables(catalog, &filter).await?;
        if tables.is_empty() {
            return Err(PgError::Setup(format!(
                "source.tables: no table matches {:?} (minus exclude {:?}); check the globs with `sluice check`",
                self.cfg.tables, self.cfg.exclude
            )));
        }
        for t in &tables {
            if t.replica_identity != 'f' && catalog::key_columns(catalog, t.oid).await?.is_empty() {
                return Err(no_key(&t.id));
            }
        }
        Ok(tables)
    }

    fn copy_jobs(&self, tables: &[SourceTable], resume: &Resume) -> Vec<CopyJob> {
        let mut jobs = Vec::new();
        for t in tables {
            for (to, after) in resume.copies_needed(&t.id, Some(&t.identity())) {
                jobs.push(CopyJob::new(t, to, after));
            }
        }
        jobs
    }

    /// Creates the publication, or sets its tables to the selection. Row filters and column
    /// lists a table already has in it (set by the user) are kept, and recorded in `tables` so
    /// copies read the same rows and columns the stream carries.
    async fn ensure_publication(&self, catalog: &Client, tables: &mut [SourceTable]) -> Result<(), PgError> {
        let exists = catalog
            .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&self.publication])
            .await
            .ctx("look up publication")?
            .is_some();
        if exists {
            catalog::publication_filters(catalog, &self.publication, tables).await?;
        }
        let list = tables.iter().map(catalog::publication_entry).collect::<Vec<_>>().join(", ");
        let verb = if exists { "ALTER" } else { "CREATE" };
        // A partitioned table's changes are published as its own (PostgreSQL 13+), so it
        // replicates as one table under its name, whichever partition holds a row.
        let via_root = server_version(catalog).await? >= 130_000;
        let publication = quote_ident(&self.publication);
        let sql = match (exists, via_root) {
            (true, true) => format!(
                "ALTER PUBLICATION {publication} SET TABLE {list}; \
                 ALTER PUBLICATION {publication} SET (publish_via_partition_root = true)"
            ),
            (true, false) => format!("ALTER PUBLICATION {publication} SET TABLE {list}"),
            (false, true) => {
                format!("CREATE PUBLICATION {publication} FOR TABLE {list} WITH (publish_via_partition_root = true)")
            }
            (false, false) => format!("CREATE PUBLICATION {publication} FOR TABLE {list}"),
        };
        catalog.batch_execute(&sql).await.ctx(format!("{verb} PUBLICATION {}", self.publication))?;
        debug!(publication = %self.publication, tables = tables.len(), "publication ready");
        Ok(())
    }

    async fn slot_info(&self, catalog: &Client) -> Result<Option<SlotInfo>, PgError> {
        Ok(catalog
            .query_opt(
                "SELECT active_pid, plugin::text, confirmed_flush_lsn::text FROM pg_replication_slots \
                 WHERE slot_name = $1 AND database = current_database()",
                &[&self.slot],
            )
            .await
            .ctx("look up replication slot")?
            .map(|r| SlotInfo {
                active_pid: r.get(0),
                plugin: r.get(1),
                confirmed: r.get::<_, Option<String>>(2).and_then(|s| s.parse().ok()),
            }))
    }

    /// Waits until no connection holds the slot.
    ///
    /// A holder that keeps sending status updates to the server is alive: another sluice
    /// running this pipeline (a rolling deploy, or a second start by mistake). This instance
    /// then waits as a standby, however long, and takes the slot when the other releases it;
    /// it never terminates a live holder, so two instances cannot take the slot from each other
    /// in a loop. A holder silent for `slot_takeover_secs` (at least three status intervals) is
    /// the connection of a crashed run the server has not noticed yet: it is terminated.
    async fn wait_slot_free(&self, catalog: &Client) -> Result<(), PgError> {
        let silent_limit = Duration::from_secs(self.cfg.slot_takeover_secs)
            .max(Duration::from_millis(self.cfg.status_interval_ms.saturating_mul(3)));
        let started = Instant::now();
        let mut standby_since: Option<Instant> = None;
        let mut last_note = Instant::now();
        loop {
            let Some(holder) = self.slot_holder(catalog).await? else {
                if standby_since.is_some() {
                    info!(slot = %self.slot, "the other holder released the slot; taking over");
                }
                return Ok(());
            };
            if holder.silent < silent_limit {
                if standby_since.is_none() || last_note.elapsed() >= STANDBY_NOTE_EVERY {
                    info!(
                        slot = %self.slot,
                        pid = holder.pid,
                        holder = %holder.describe(),
                        "the replication slot is held by a live connection (another sluice running this pipeline?); \
                         waiting as a standby until it is released"
                    );
                    last_note = Instant::now();
                }
                standby_since.get_or_insert_with(Instant::now);
            } else {
                warn!(
                    slot = %self.slot,
                    pid = holder.pid,
                    silent_secs = holder.silent.as_secs(),
                    "the slot's holder has sent nothing for a while (a crashed run the server has not noticed); \
                     terminating it"
                );
                catalog
                    .execute("SELECT pg_terminate_backend($1)", &[&holder.pid])
                    .await
                    .ctx("terminate slot holder")?;
                if standby_since.is_none() && started.elapsed() > SLOT_WAIT_LIMIT {
                    return Err(PgError::Retry(format!(
                        "replication slot {} stays in use by process {} although it was terminated",
                        self.slot, holder.pid
                    )));
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The connection holding the slot, and how long it has been silent (since its last status
    /// update, or since it connected if it sent none).
    async fn slot_holder(&self, catalog: &Client) -> Result<Option<SlotHolder>, PgError> {
        // to_jsonb: reply_time exists from PostgreSQL 12 on.
        let row = catalog
            .query_opt(
                "SELECT s.active_pid, \
                        extract(epoch FROM now() - coalesce((to_jsonb(r) ->> 'reply_time')::timestamptz, \
                                                            r.backend_start, now()))::float8, \
                        coalesce(r.application_name, ''), coalesce(host(r.client_addr), 'local') \
                 FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid \
                 WHERE s.slot_name = $1 AND s.database = current_database() AND s.active_pid IS NOT NULL",
                &[&self.slot],
            )
            .await
            .ctx("look up the replication slot's holder")?;
        Ok(row.map(|r| SlotHolder {
            pid: r.get(0),
            silent: Duration::from_secs_f64(r.get::<_, f64>(1).max(0.0)),
            application: r.get(2),
            client: r.get(3),
        }))
    }

    /// Creates the slot; with `export`, also returns the name of the snapshot it exported,
    /// which stays importable until this connection runs its next command.
    async fn create_slot(&self, repl: &mut ReplicationConn, export: bool) -> Result<(Lsn, String), PgError> {
        let mode = if export { "EXPORT_SNAPSHOT" } else { "NOEXPORT_SNAPSHOT" };
        let rows = repl
            .simple_query(&format!("CREATE_REPLICATION_SLOT {} LOGICAL pgoutput {mode}", quote_ident(&self.slot)))
            .await?;
        let created = slot_created(&rows)?;
        info!(slot = %self.slot, lsn = %created.0, export, "created replication slot");
        Ok(created)
    }
}

/// The error for a selected table without a key.
pub(crate) fn no_key(id: &TableId) -> PgError {
    PgError::Setup(format!(
        "table {id} has no primary key or replica identity index; add a primary key, or \
         ALTER TABLE {t} REPLICA IDENTITY USING INDEX <unique index>, or ALTER TABLE {t} REPLICA IDENTITY FULL \
         (rows are then matched whole: slow for updates and deletes on a replica), or exclude it in source.exclude",
        t = qualified(id)
    ))
}

async fn server_version(catalog: &Client) -> Result<i32, PgError> {
    let v: String = catalog.query_one("SHOW server_version_num", &[]).await.ctx("read server version")?.get(0);
    Ok(v.parse().unwrap_or(0))
}

fn slot_created(rows: &[Vec<Option<String>>]) -> Result<(Lsn, String), PgError> {
    let row = rows.first().ok_or_else(|| PgError::Protocol("CREATE_REPLICATION_SLOT returned no row".into()))?;
    let lsn = row
        .get(1)
        .and_then(|v| v.as_deref())
        .and_then(|s| s.parse::<Lsn>().ok())
        .ok_or_else(|| PgError::Protocol("CREATE_REPLICATION_SLOT returned no consistent point".into()))?;
    let snapshot = row.get(2).cloned().flatten().unwrap_or_default();
    Ok((lsn, snapshot))
}

/// Waits until the runtime closes the confirmation channel.
async fn drain_confirmations(mut confirmed: tokio::sync::watch::Receiver<Option<Position>>) {
    while confirmed.changed().await.is_ok() {}
}

pub(crate) async fn send(events: &mpsc::Sender<Event>, ev: Event) -> Result<(), PgError> {
    events.send(ev).await.map_err(|_| PgError::Protocol("pipeline stopped while the source was sending".into()))
}
