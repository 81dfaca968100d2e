//! The consistent snapshot of a fresh start.
//!
//! ```text
//!  leader conn ── START TRANSACTION WITH CONSISTENT SNAPSHOT ──▶ binlog position P
//!                 (MariaDB: binlog_snapshot_file/position, no lock; MySQL: a brief
//!                  FLUSH TABLES WITH READ LOCK around it and SHOW MASTER STATUS)
//!  worker conns ── the same snapshot: MariaDB checks each one's snapshot position equals P
//!                  (a worker that saw a later commit is dropped); MySQL opens them under the lock
//!  per table, one after the other: Copy Begin, then every worker reads primary-key ranges
//!                 ──▶ Copy Rows (typed, bounded budget in flight) ──▶ Copy End
//! ```
//! The stream then starts at P, so the copies hold exactly the transactions before it.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use sluice_core::{
    BinlogPosition, Copy, CopyMode, CopyStep, Date, Decimal, Event, Hold, Interval, SchemaRef, SinkSet, TableSchema,
    Text, Timestamp, Value,
};
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{debug, info};

use super::send;
use crate::binlog::ty;
use crate::catalog::{self, qualified, quote, ServerInfo, SourceTable};
use crate::error::{Ctx, MyError};
use crate::rows::{Charset, ColumnPlan, ZeroDates};

/// Blocks of copied rows that may be in the pipeline at once.
const BLOCKS_IN_FLIGHT: usize = 16;

/// Connections holding one consistent snapshot, and the binlog position it corresponds to.
pub(super) struct Snapshot {
    conns: Vec<Conn>,
    /// Where the stream continues
    pub position: BinlogPosition,
}

impl Snapshot {
    /// Opens `want` connections on one snapshot.
    pub(super) async fn open(url: &str, info: &ServerInfo, want: usize, gtid: bool) -> Result<Snapshot, MyError> {
        if info.mariadb {
            Self::open_mariadb(url, want, gtid).await
        } else {
            Self::open_mysql(url, want, gtid).await
        }
    }

    async fn open_mariadb(url: &str, want: usize, gtid: bool) -> Result<Snapshot, MyError> {
        let mut leader = catalog::connect(url, "source (snapshot)").await?;
        let (file, pos) = start_mariadb(&mut leader).await?;
        let gtids = if gtid {
            let g: Option<String> = leader
                .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (&file, pos))
                .await
                .ctx("read the GTID position of the snapshot")?;
            Some(catalog::gtid_set(&g.unwrap_or_default(), true)?)
        } else {
            None
        };
        let mut conns = vec![leader];
        // Workers join the snapshot when theirs lies at the same binlog position: no commit
        // happened in between, so they see exactly the same rows. A busy server may never give
        // that; the snapshot then runs on fewer connections.
        for _ in 1..want {
            let mut joined = false;
            for _ in 0..5 {
                let mut c = catalog::connect(url, "source (snapshot)").await?;
                if start_mariadb(&mut c).await? == (file.clone(), pos) {
                    conns.push(c);
                    joined = true;
                    break;
                }
                let _ = c.disconnect().await;
            }
            if !joined {
                debug!("a snapshot worker could not join the snapshot (the source is busy); continuing with fewer");
                break;
            }
        }
        Ok(Snapshot { conns, position: BinlogPosition { file, pos, gtids } })
    }

    async fn open_mysql(url: &str, want: usize, gtid: bool) -> Result<Snapshot, MyError> {
        let mut conns = Vec::with_capacity(want);
        for _ in 0..want {
            conns.push(catalog::connect(url, "source (snapshot)").await?);
        }
        // The lock only spans opening the snapshots and reading the position: milliseconds.
        conns[0].query_drop("FLUSH TABLES WITH READ LOCK").await.map_err(|e| {
            MyError::Setup(format!(
                "a consistent snapshot of MySQL needs a brief global read lock, which failed ({e}); grant it with \
                 GRANT RELOAD ON *.* TO <user>, or set source.snapshot = \"never\""
            ))
        })?;
        let mut result = Ok(());
        for c in conns.iter_mut() {
            if let Err(e) = start_txn(c).await {
                result = Err(e);
                break;
            }
        }
        let status = match result {
            Ok(()) => master_status(&mut conns[0]).await,
            Err(e) => Err(e),
        };
        let unlock = conns[0].query_drop("UNLOCK TABLES").await.ctx("release the global read lock");
        let (file, pos, executed) = status?;
        unlock?;
        let gtids = match (gtid, executed) {
            (true, Some(g)) => Some(catalog::gtid_set(&g, false)?),
            _ => None,
        };
        Ok(Snapshot { conns, position: BinlogPosition { file, pos, gtids } })
    }

    /// Copies every table to the sinks `to`, table after table, each read by all connections
    /// in parallel. Returns `false` if the pipeline began stopping first.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn copy_all(
        mut self,
        tables: &[SourceTable],
        to: SinkSet,
        chunk_rows: usize,
        zero: ZeroDates,
        events: &mpsc::Sender<Event>,
        stop: &watch::Receiver<bool>,
    ) -> Result<bool, MyError> {
        let budget = Arc::new(Semaphore::new(BLOCKS_IN_FLIGHT));
        info!(connections = self.conns.len(), at = %super::describe(&self.position), "snapshot started");
        for t in tables {
            if *stop.borrow() {
                return Ok(false);
            }
            let started = Instant::now();
            let cols = catalog::table_columns(&mut self.conns[0], &t.id).await?;
            let (schema, plans) = catalog::schema_from_info(&t.id, &cols, zero == ZeroDates::Null);
            let schema: SchemaRef = Arc::new(schema);
            let plans = Arc::new(plans);
            let estimated_rows = (t.estimated_rows > 0).then_some(t.estimated_rows);
            let begin = CopyStep::Begin { mode: CopyMode::Snapshot, source_id: None, estimated_rows };
            send(events, Event::Copy(Copy::new(to, schema.clone(), begin))).await?;
            let workers = self.conns.len();
            let ranges = key_ranges(&mut self.conns[0], &schema, workers).await?;
            let queue = Arc::new(std::sync::Mutex::new(ranges));
            let mut tasks = Vec::new();
            for conn in std::mem::take(&mut self.conns) {
                let job = RangeJob {
                    schema: schema.clone(),
                    plans: plans.clone(),
                    queue: queue.clone(),
                    to,
                    chunk_rows,
                    zero,
                    budget: budget.clone(),
                    events: events.clone(),
                };
                tasks.push(tokio::spawn(job.run(conn)));
            }
            let mut rows = 0u64;
            let mut first_err = None;
            for task in tasks {
                match task.await {
                    Ok(Ok((conn, n))) => {
                        rows += n;
                        self.conns.push(conn);
                    }
                    Ok(Err(e)) => {
                        first_err.get_or_insert(e);
                    }
                    Err(e) => {
                        first_err.get_or_insert(MyError::Protocol(format!("snapshot worker failed: {e}")));
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
            send(events, Event::Copy(Copy::new(to, schema.clone(), CopyStep::End))).await?;
            info!(table = %t.id, rows, secs = started.elapsed().as_secs_f64(), "table copied");
        }
        for mut c in self.conns {
            let _ = c.query_drop("COMMIT").await;
            let _ = c.disconnect().await;
        }
        Ok(true)
    }
}

pub(super) async fn start_txn(c: &mut Conn) -> Result<(), MyError> {
    c.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ").await.ctx("set isolation level")?;
    c.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY").await.ctx("start the snapshot")
}

/// Starts a consistent snapshot on MariaDB and returns its binlog coordinate, which MariaDB
/// keeps fixed for the transaction.
pub(super) async fn start_mariadb(c: &mut Conn) -> Result<(String, u64), MyError> {
    start_txn(c).await?;
    let rows: Vec<(String, String)> =
        c.query("SHOW STATUS LIKE 'binlog_snapshot_%'").await.ctx("read the snapshot's binlog position")?;
    let get = |k: &str| rows.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone());
    match (get("binlog_snapshot_file"), get("binlog_snapshot_position")) {
        (Some(f), Some(p)) if !f.is_empty() => {
            Ok((f, p.parse().map_err(|_| MyError::Protocol(format!("binlog_snapshot_position {p:?}")))?))
        }
        _ => Err(MyError::Setup(
            "the server reports no binlog_snapshot_file: the binary log is off; set log_bin (and binlog_format=ROW) \
             and restart the server"
                .into(),
        )),
    }
}

/// `SHOW MASTER STATUS` (`SHOW BINARY LOG STATUS` on MySQL 8.4+): file, position, executed GTIDs.
pub(crate) async fn master_status(c: &mut Conn) -> Result<(String, u64, Option<String>), MyError> {
    let mut result = c.query_iter("SHOW MASTER STATUS").await;
    if result.is_err() {
        drop(result);
        result = c.query_iter("SHOW BINARY LOG STATUS").await;
    }
    let mut result = result.ctx("read the binlog position (needs REPLICATION CLIENT)")?;
    let row = result.next().await.ctx("read the binlog position")?;
    drop(result);
    let Some(row) = row else {
        return Err(MyError::Setup(
            "the binary log is off on the source; set log_bin, binlog_format=ROW and binlog_row_image=FULL and \
             restart the server"
                .into(),
        ));
    };
    let file: String = row.get(0).unwrap_or_default();
    let pos: u64 = row.get(1).unwrap_or(4);
    let gtids: Option<String> = row.get_opt(4).and_then(Result::ok);
    Ok((file, pos, gtids.map(|g| g.replace(['\n', ' '], ""))))
}

/// A range of the first key column, `[from, to)`; unbounded ends are `None`.
#[derive(Debug, Clone)]
struct KeyRange {
    from: Option<i128>,
    to: Option<i128>,
}

/// Splits a table with a single integer key into ranges for the workers (four per worker, so
/// a skewed range does not leave the others idle); any other table is one range.
async fn key_ranges(c: &mut Conn, schema: &SchemaRef, workers: usize) -> Result<Vec<KeyRange>, MyError> {
    let keys = schema.key_indexes();
    let whole = vec![KeyRange { from: None, to: None }];
    if keys.len() != 1 || workers < 2 {
        return Ok(whole);
    }
    let k = &schema.columns[keys[0]];
    if !matches!(
        k.data_type,
        sluice_core::DataType::Int8
            | sluice_core::DataType::Int16
            | sluice_core::DataType::Int32
            | sluice_core::DataType::Int64
            | sluice_core::DataType::UInt8
            | sluice_core::DataType::UInt16
            | sluice_core::DataType::UInt32
            | sluice_core::DataType::UInt64
    ) {
        return Ok(whole);
    }
    let col = quote(&k.name);
    let sql = format!("SELECT CAST(MIN({col}) AS CHAR), CAST(MAX({col}) AS CHAR) FROM {}", qualified(&schema.id));
    let row: Option<(Option<String>, Option<String>)> =
        c.query_first(sql).await.ctx(format!("key range of {}", schema.id))?;
    let Some((Some(lo), Some(hi))) = row else {
        return Ok(whole);
    };
    let (Ok(lo), Ok(hi)) = (lo.parse::<i128>(), hi.parse::<i128>()) else {
        return Ok(whole);
    };
    let parts = (workers * 4) as i128;
    let span = (hi - lo + 1).max(1);
    if span < parts * 2 {
        return Ok(whole);
    }
    let step = span / parts;
    let mut ranges = Vec::new();
    let mut from = None;
    for i in 1..parts {
        let to = lo + step * i;
        ranges.push(KeyRange { from, to: Some(to) });
        from = Some(to);
    }
    ranges.push(KeyRange { from, to: None });
    Ok(ranges)
}

struct RangeJob {
    schema: SchemaRef,
    plans: Arc<Vec<ColumnPlan>>,
    queue: Arc<std::sync::Mutex<Vec<KeyRange>>>,
    to: SinkSet,
    chunk_rows: usize,
    zero: ZeroDates,
    budget: Arc<Semaphore>,
    events: mpsc::Sender<Event>,
}

impl RangeJob {
    /// Reads ranges from the queue until it is empty; returns the connection and the rows read.
    async fn run(self, mut conn: Conn) -> Result<(Conn, u64), MyError> {
        let mut total = 0;
        let list = self.schema.columns.iter().map(|c| quote(&c.name)).collect::<Vec<_>>().join(", ");
        let key = self.schema.key_indexes().iter().map(|&i| quote(&self.schema.columns[i].name)).collect::<Vec<_>>();
        let order = key.join(", ");
        loop {
            let next = self.queue.lock().map_err(|_| MyError::Protocol("snapshot queue poisoned".into()))?.pop();
            let Some(range) = next else { break };
            let mut conds = Vec::new();
            let mut params: Vec<mysql_async::Value> = Vec::new();
            if let Some(f) = range.from {
                conds.push(format!("{} >= ?", key[0]));
                params.push(int_param(f));
            }
            if let Some(t) = range.to {
                conds.push(format!("{} < ?", key[0]));
                params.push(int_param(t));
            }
            let filter = if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) };
            let order = if order.is_empty() { String::new() } else { format!(" ORDER BY {order}") };
            let sql = format!("SELECT {list} FROM {}{filter}{order}", qualified(&self.schema.id));
            let what = format!("snapshot of {}", self.schema.id);
            let mut result = conn.exec_iter(sql, params).await.ctx(what.clone())?;
            let mut block = Vec::with_capacity(self.chunk_rows.min(65_536));
            while let Some(row) = result.next().await.ctx(what.clone())? {
                block.push(row_from_protocol(row, &self.schema, &self.plans, self.zero)?);
                if block.len() >= self.chunk_rows {
                    total += block.len() as u64;
                    self.emit(std::mem::take(&mut block)).await?;
                }
            }
            drop(result);
            if !block.is_empty() {
                total += block.len() as u64;
                self.emit(block).await?;
            }
        }
        Ok((conn, total))
    }

    async fn emit(&self, rows: Vec<Vec<Value>>) -> Result<(), MyError> {
        let permit = self
            .budget
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| MyError::Protocol("snapshot budget closed".into()))?;
        let mut copy = Copy::new(self.to, self.schema.clone(), CopyStep::Rows(rows));
        copy.hold = Hold(Some(Arc::new(permit)));
        send(&self.events, Event::Copy(copy)).await?;
        sluice_core::crash_point("snapshot.mid_table");
        Ok(())
    }
}

/// A result row of `schema`'s columns (read with `plans`) as values.
pub(super) fn row_from_protocol(
    row: mysql_async::Row,
    schema: &TableSchema,
    plans: &[ColumnPlan],
    zero: ZeroDates,
) -> Result<Vec<Value>, MyError> {
    let values = row.unwrap();
    let mut out = Vec::with_capacity(values.len());
    for (i, (v, p)) in values.into_iter().zip(plans.iter()).enumerate() {
        out.push(
            from_protocol(v, p, zero)
                .map_err(|e| MyError::Decode(format!("{}.{}: {e}", schema.id, schema.columns[i].name)))?,
        );
    }
    Ok(out)
}

fn int_param(v: i128) -> mysql_async::Value {
    match i64::try_from(v) {
        Ok(i) => mysql_async::Value::Int(i),
        Err(_) => mysql_async::Value::UInt(v.clamp(0, u64::MAX as i128) as u64),
    }
}

/// A value of the binary result protocol as the column's logical type, matching what the
/// binlog decoder gives for the same column.
pub(crate) fn from_protocol(v: mysql_async::Value, p: &ColumnPlan, zero: ZeroDates) -> Result<Value, String> {
    use mysql_async::Value as M;
    Ok(match (v, p.ty) {
        (M::NULL, _) => Value::Null,
        (M::Int(i), _) if p.unsigned => Value::UInt(i as u64),
        (M::Int(i), _) => Value::Int(i),
        (M::UInt(u), _) if p.unsigned => Value::UInt(u),
        (M::UInt(u), _) => Value::Int(u as i64),
        (M::Float(f), _) => Value::Float32(f),
        (M::Double(d), ty::FLOAT) => Value::Float32(d as f32),
        (M::Double(d), _) => Value::Float64(d),
        (M::Date(y, m, d, h, mi, s, us), t) => {
            let date = Date::from_ymd(y as i64, m as u32, d as u32);
            let micros = ((h as i64) * 3600 + (mi as i64) * 60 + s as i64) * 1_000_000 + us as i64;
            let date = match (date, zero) {
                (Some(d), _) => Some((d, micros)),
                (None, ZeroDates::Null) => None,
                (None, ZeroDates::Sentinel(d)) => Some((d, 0)),
            };
            match (date, t) {
                (None, _) => Value::Null,
                (Some((d, _)), ty::DATE | ty::NEWDATE) => Value::Date(d),
                (Some((d, us)), ty::TIMESTAMP | ty::TIMESTAMP2) => {
                    Value::TimestampTz(Timestamp::from_date_time(d.0 as i64, us))
                }
                (Some((d, us)), _) => Value::Timestamp(Timestamp::from_date_time(d.0 as i64, us)),
            }
        }
        (M::Time(neg, days, h, mi, s, us), _) => {
            let micros = (((days as i64) * 24 + h as i64) * 3600 + (mi as i64) * 60 + s as i64) * 1_000_000 + us as i64;
            Value::Interval(Interval { months: 0, days: 0, micros: if neg { -micros } else { micros } })
        }
        (M::Bytes(b), t) => match t {
            ty::NEWDECIMAL | ty::DECIMAL => Value::Decimal(Decimal::from_text(text(b)?).map_err(|e| e.0)?),
            ty::BIT => {
                if p.meta == 1 {
                    Value::Bool(b.last().is_some_and(|x| x & 1 != 0))
                } else {
                    let bytes = (p.meta >> 8) as usize + usize::from(p.meta & 0xff != 0);
                    let mut v = vec![0u8; bytes.saturating_sub(b.len())];
                    v.extend_from_slice(&b);
                    Value::Bytes(Bytes::from(v))
                }
            }
            ty::ENUM => Value::Enum(text(b)?),
            ty::SET => Value::Text(text(b)?),
            ty::JSON => Value::Json(text(b)?),
            ty::GEOMETRY => {
                Value::Bytes(Bytes::copy_from_slice(b.get(4..).ok_or("geometry value shorter than its SRID")?))
            }
            ty::YEAR => Value::Int(std::str::from_utf8(&b).ok().and_then(|s| s.parse().ok()).unwrap_or(0)),
            _ => match &p.charset {
                Charset::Binary => {
                    let mut v = b;
                    if let Some(n) = p.fixed_binary {
                        v.resize(n.max(v.len()), 0);
                    }
                    Value::Bytes(Bytes::from(v))
                }
                // The connection's character set is utf8mb4: the server converted the text.
                _ if p.json_text => Value::Json(text(b)?),
                _ => Value::Text(text(b)?),
            },
        },
    })
}

fn text(b: Vec<u8>) -> Result<Text, String> {
    Text::from_utf8(Bytes::from(b)).map_err(|e| e.0)
}
