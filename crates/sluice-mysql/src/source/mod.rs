//! MySQL/MariaDB source: a consistent snapshot, then the row binlog as a replica reads it.
//!
//! ```text
//!  catalog conn ── version, GTID mode, collations, selected tables, columns and keys
//!  fresh start:  snapshot conns ── consistent snapshot at binlog position P ──▶ Copy{snapshot}
//!                                  for every table, before the stream          (snapshot.rs)
//!  binlog conn ── register as replica, dump from P or from what the sinks hold ──▶ Begin,
//!                 Change*, Commit, Heartbeat                                     (stream.rs)
//!  copy conn   ── tables some sink lacks, chunk by chunk while streaming ──▶ Copy{replace|
//!                 resume} between transactions                                 (backfill.rs)
//! ```
//!
//! Progress: a position is the binlog file, the offset after the last transaction delivered,
//! and (when the server has GTIDs) the executed GTID set; a resume prefers the GTIDs, so it
//! survives a failover to another server of the same GTID history. The server keeps no state
//! for Sluice (no slot): the sinks' checkpoints are the only record, and binlogs must be kept
//! long enough for a stopped pipeline to resume (`binlog_expire_logs_seconds`).
//!
//! Errors: a lost connection is transient (the runtime restarts the source from the durable
//! checkpoint); a purged binlog, a missing privilege or a server setting that makes row
//! capture impossible is fatal, with the fix in the message.

mod backfill;
mod snapshot;
mod stream;

use async_trait::async_trait;
use sluice_core::{BinlogPosition, ConnectorError, Event, GtidSet, Position, Resume, Source, SourceContext, TableId};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::catalog::{self, SourceTable};
use crate::config::{GtidMode, MySqlSourceConfig, SnapshotMode};
use crate::error::MyError;
use backfill::CopyJob;
use snapshot::Snapshot;
use stream::Streamer;

pub(crate) use snapshot::master_status;

/// The MySQL/MariaDB source.
pub struct MySqlSource {
    cfg: MySqlSourceConfig,
    server_id: u32,
}

impl MySqlSource {
    /// A source for `cfg` in pipeline `pipeline`.
    pub fn new(cfg: MySqlSourceConfig, pipeline: &str) -> Self {
        let server_id = cfg.server_id(pipeline);
        MySqlSource { cfg, server_id }
    }
}

#[async_trait]
impl Source for MySqlSource {
    async fn run(&mut self, resume: Resume, ctx: SourceContext) -> Result<(), ConnectorError> {
        Ok(self.run_inner(resume, ctx).await?)
    }
}

impl MySqlSource {
    async fn run_inner(&mut self, resume: Resume, ctx: SourceContext) -> Result<(), MyError> {
        let SourceContext { events, confirmed, stop, .. } = ctx;
        let url = self.cfg.url.expose().clone();
        let mut conn = catalog::connect(&url, "source").await?;
        let info = catalog::server_info(&mut conn).await?;
        let gtid = info.gtid && self.cfg.gtid == GtidMode::Auto;
        let tables = self.selected_tables(&mut conn).await?;
        let selected: Vec<TableId> = tables.iter().map(|t| t.id.clone()).collect();
        send(&events, Event::Tables { selected: selected.clone() }).await?;
        let live = resume.live();
        let start = match resume.position() {
            _ if resume.is_fresh() => None,
            Some(Position::MySql(p)) => Some(p),
            Some(other) => {
                return Err(MyError::Setup(format!(
                    "the sinks hold position {other}, which is not a MySQL binlog position: this pipeline's source \
                     changed; give the pipeline a new name to start over"
                )))
            }
            None => None,
        };
        let mut jobs = Vec::new();
        let start = match start {
            Some(mut p) => {
                if !gtid {
                    p.gtids = None;
                }
                // Tables some sink lacks (a snapshot cut short, a table or a sink added) are
                // copied while streaming, into those sinks only (backfill.rs).
                if self.cfg.snapshot != SnapshotMode::Never {
                    for t in &tables {
                        let estimated = (t.estimated_rows > 0).then_some(t.estimated_rows);
                        for (to, after) in resume.copies_needed(&t.id, None) {
                            jobs.push(CopyJob::new(t.id.clone(), to, after, estimated));
                        }
                    }
                }
                send(&events, Event::StreamStart { position: Position::MySql(p.clone()) }).await?;
                p
            }
            None if resume.sinks.iter().any(Option::is_none) => {
                return Err(MyError::Retry(
                    "a sink is down and no sink holds a position yet: waiting for it before taking the snapshot".into(),
                ))
            }
            None if self.cfg.snapshot == SnapshotMode::Never => {
                let (file, pos, executed) = master_status(&mut conn).await?;
                let gtids = current_gtids(&mut conn, &info, gtid, &file, pos, executed).await?;
                let p = BinlogPosition { file, pos, gtids };
                send(&events, Event::StreamStart { position: Position::MySql(p.clone()) }).await?;
                p
            }
            None => match self.snapshot(&url, &info, &tables, live, gtid, &events, &stop).await? {
                Some(p) => p,
                None => return stopped(events, confirmed).await,
            },
        };
        // Resumed copies wait for the stream to replay the binlog up to here (backfill.rs).
        let gate = if jobs.iter().any(|j| j.after.is_some()) {
            let (file, pos, _) = master_status(&mut conn).await?;
            Some((file, pos))
        } else {
            None
        };
        let mut streamer = Streamer::new(
            self.cfg.clone(),
            url.clone(),
            info.clone(),
            self.server_id,
            conn,
            selected.clone(),
            live,
            jobs,
            gate,
            start,
            events,
            confirmed,
            stop,
        );
        match streamer.connect().await {
            Ok(()) => streamer.run().await,
            Err(MyError::Purged(why)) if self.cfg.snapshot == SnapshotMode::WhenNeeded => {
                warn!(reason = %why, "the binlog the sinks need is gone; copying every table again (snapshot = \"when_needed\")");
                let (events, confirmed, stop, conn) = streamer.into_channels();
                let Some(p) = self.snapshot(&url, &info, &tables, live, gtid, &events, &stop).await? else {
                    return stopped(events, confirmed).await;
                };
                let mut streamer = Streamer::new(
                    self.cfg.clone(),
                    url,
                    info,
                    self.server_id,
                    conn,
                    selected,
                    live,
                    Vec::new(),
                    None,
                    p,
                    events,
                    confirmed,
                    stop,
                );
                streamer.connect().await?;
                streamer.run().await
            }
            Err(e) => Err(e),
        }
    }

    /// Takes a consistent snapshot and copies every table into the sinks `live` (replacing what
    /// they hold); returns where the stream continues, or `None` if the pipeline began stopping.
    #[allow(clippy::too_many_arguments)]
    async fn snapshot(
        &self,
        url: &str,
        info: &catalog::ServerInfo,
        tables: &[SourceTable],
        live: sluice_core::SinkSet,
        gtid: bool,
        events: &mpsc::Sender<Event>,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<Option<BinlogPosition>, MyError> {
        let snap = Snapshot::open(url, info, self.cfg.snapshot_connections, gtid).await?;
        let p = snap.position.clone();
        send(events, Event::StreamStart { position: Position::MySql(p.clone()) }).await?;
        let done = snap.copy_all(tables, live, self.cfg.chunk_rows, self.cfg.zero_dates(), events, stop).await?;
        if !done {
            info!("stopped during the snapshot; the next start takes a new one");
            return Ok(None);
        }
        Ok(Some(p))
    }

    /// The selected tables; every one needs a primary key or a unique key over NOT NULL columns.
    async fn selected_tables(&self, conn: &mut mysql_async::Conn) -> Result<Vec<SourceTable>, MyError> {
        let tables = catalog::selected_tables(conn, &self.cfg.filter()).await?;
        if tables.is_empty() {
            return Err(MyError::Setup(format!(
                "source.tables: no table matches {:?} (minus exclude {:?}); check the globs with `sluice check`",
                self.cfg.tables, self.cfg.exclude
            )));
        }
        for t in &tables {
            let cols = catalog::table_columns(conn, &t.id).await?;
            if !cols.iter().any(|c| c.key_pos.is_some()) {
                warn!(table = %t.id, "table has no primary key and no NOT NULL unique key: its changes are matched by every column");
            }
        }
        Ok(tables)
    }
}

/// Ends a run that stopped before streaming: the runtime closes the confirmations once it has
/// drained the sinks.
async fn stopped(
    events: mpsc::Sender<Event>,
    mut confirmed: tokio::sync::watch::Receiver<Option<Position>>,
) -> Result<(), MyError> {
    drop(events);
    while confirmed.changed().await.is_ok() {}
    Ok(())
}

/// The executed GTIDs at `file`:`pos` when GTIDs are tracked.
async fn current_gtids(
    conn: &mut mysql_async::Conn,
    info: &catalog::ServerInfo,
    gtid: bool,
    file: &str,
    pos: u64,
    executed: Option<String>,
) -> Result<Option<GtidSet>, MyError> {
    use mysql_async::prelude::Queryable;
    if !gtid {
        return Ok(None);
    }
    let text = if info.mariadb {
        let g: Option<String> = conn
            .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (file, pos))
            .await
            .map_err(|source| MyError::Client { what: "read the GTID position".into(), source })?;
        g.unwrap_or_default()
    } else {
        executed.unwrap_or_default()
    };
    catalog::gtid_set(&text, info.mariadb).map(Some)
}

/// A position for logs and errors: `file:pos`, and the GTIDs when tracked.
pub(crate) fn describe(p: &BinlogPosition) -> String {
    Position::MySql(p.clone()).to_string()
}

pub(crate) async fn send(events: &mpsc::Sender<Event>, ev: Event) -> Result<(), MyError> {
    events.send(ev).await.map_err(|_| MyError::Protocol("pipeline stopped while the source was sending".into()))
}
