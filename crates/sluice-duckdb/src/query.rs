//! `sluice query PIPELINE.toml "SQL"`: runs SQL against a DuckDB sink's file while the pipeline
//! runs. The sink holds the file only while it writes a batch, so the query opens it read-only
//! between batches (waiting while a batch is being written) and lets go when done.

use std::time::{Duration, Instant};

use duckdb::{AccessMode, Config, Connection};

use crate::db::{Ctx, DbError};

/// Opens `path` read-only, waiting up to `wait` while a writer holds it.
fn open_read_only(path: &str, wait: Duration) -> Result<Connection, DbError> {
    let started = Instant::now();
    loop {
        let config = Config::default().access_mode(AccessMode::ReadOnly).ctx("configure")?;
        match Connection::open_with_flags(path, config).ctx(format!("open {path} read-only")) {
            Ok(c) => return Ok(c),
            Err(e) if e.locked() && started.elapsed() < wait => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e),
        }
    }
}

/// Runs `sql` on the file at `path` and returns its result as a text table.
pub fn query(path: &str, sql: &str, wait: Duration) -> Result<String, DbError> {
    if !std::path::Path::new(path).exists() {
        return Err(DbError {
            what: format!("the DuckDB file {path} does not exist (yet): the pipeline creates it with its first commit"),
            source: duckdb::Error::InvalidPath(path.into()),
        });
    }
    let claim = crate::db::Claim::take(path, wait)?;
    let conn = open_read_only(path, wait)?;
    let mut stmt = conn.prepare(sql).ctx("prepare the query")?;
    let batches: Vec<duckdb::arrow::record_batch::RecordBatch> = stmt.query_arrow([]).ctx("run the query")?.collect();
    let text = duckdb::arrow::util::pretty::pretty_format_batches(&batches)
        .map(|t| t.to_string())
        .unwrap_or_else(|e| format!("(cannot print the result: {e})"));
    drop(stmt);
    let _ = conn.close();
    drop(claim);
    Ok(text)
}

/// Runs `sql` on the file at `path` and returns its rows with every value as text (`None` for
/// NULL), for programs that read a live replica (the playground).
pub fn values(path: &str, sql: &str, wait: Duration) -> Result<Vec<Vec<Option<String>>>, DbError> {
    use duckdb::arrow::array::Array;
    use duckdb::arrow::util::display::{ArrayFormatter, FormatOptions};
    let claim = crate::db::Claim::take(path, wait)?;
    let conn = open_read_only(path, wait)?;
    let mut stmt = conn.prepare(sql).ctx("prepare the query")?;
    let batches: Vec<duckdb::arrow::record_batch::RecordBatch> = stmt.query_arrow([]).ctx("run the query")?.collect();
    let mut rows = Vec::new();
    let options = FormatOptions::default();
    for b in &batches {
        let formatters: Vec<ArrayFormatter<'_>> =
            b.columns().iter().filter_map(|c| ArrayFormatter::try_new(c.as_ref(), &options).ok()).collect();
        for i in 0..b.num_rows() {
            rows.push(
                b.columns()
                    .iter()
                    .zip(&formatters)
                    .map(|(c, f)| (!c.is_null(i)).then(|| f.value(i).to_string()))
                    .collect(),
            );
        }
    }
    drop(stmt);
    let _ = conn.close();
    drop(claim);
    Ok(rows)
}
