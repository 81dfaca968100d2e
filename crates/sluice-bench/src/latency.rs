//! Benchmark 3: commit-to-visible latency under a steady insert workload.
//!
//! Each source row records `clock_timestamp()` when written; the replica table has one more
//! column, filled by `clock_timestamp()` when Sluice writes the row. Both servers share this
//! machine's clock, so the difference is the per-change latency (the target value is taken
//! just before Sluice's commit, which follows within the same round trip). PostgreSQL's native
//! logical replication runs in the same run into a second database on the target server (its
//! apply worker fills the extra column the same way), for reference.

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::common::{copied, exec, until_true, Pair, SluiceProc};

#[derive(clap::Args)]
pub struct Args {
    /// Rows per second
    #[arg(long, default_value_t = 5000)]
    rate: u32,
    /// Rows per source transaction
    #[arg(long, default_value_t = 10)]
    rows_per_txn: u32,
    /// Duration of the workload in seconds
    #[arg(long, default_value_t = 60)]
    secs: u64,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let pair = Pair::start().await?;
    let (src, replica) = (&pair.src, &pair.replica);
    exec(src, "CREATE TABLE lat (id bigserial PRIMARY KEY, payload text NOT NULL, t_src timestamptz NOT NULL DEFAULT clock_timestamp())").await?;
    replica
        .batch_execute(
            "CREATE TABLE lat (id bigint PRIMARY KEY, payload text NOT NULL, t_src timestamptz NOT NULL, \
             t_dst timestamptz NOT NULL DEFAULT clock_timestamp())",
        )
        .await?;
    let native_url = pair.target().create_database("native").await.map_err(anyhow::Error::msg)?;
    let native = crate::common::connect(&native_url).await?;
    native
        .batch_execute(
            "CREATE TABLE lat (id bigint PRIMARY KEY, payload text NOT NULL, t_src timestamptz NOT NULL, \
             t_dst timestamptz NOT NULL DEFAULT clock_timestamp())",
        )
        .await?;
    exec(src, "CREATE PUBLICATION native_pub FOR TABLE lat").await?;
    native
        .batch_execute(&format!(
            "CREATE SUBSCRIPTION native_sub CONNECTION 'host=127.0.0.1 port={} dbname=bench user=postgres' \
             PUBLICATION native_pub WITH (copy_data = false)",
            pair.source_port()
        ))
        .await?;
    let dir = tempfile::tempdir()?;
    let toml = pair.pipeline("lat", "\"public.lat\"", "");
    let mut proc = SluiceProc::start(&dir, &toml)?;
    until_true(replica, &copied(&["lat"]), Duration::from_secs(60), || proc.check_alive()).await?;

    let txns_per_s = (a.rate / a.rows_per_txn.max(1)).max(1);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / txns_per_s as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let insert = src
        .prepare(&format!(
            "INSERT INTO lat (payload) SELECT 'payload-' || g FROM generate_series(1, {}) g",
            a.rows_per_txn
        ))
        .await?;
    let started = Instant::now();
    let mut sent: i64 = 0;
    while started.elapsed() < Duration::from_secs(a.secs) {
        tick.tick().await;
        src.execute(&insert, &[]).await?;
        sent += a.rows_per_txn as i64;
    }
    let achieved = sent as f64 / started.elapsed().as_secs_f64();
    until_true(replica, &format!("SELECT count(*) = {sent} FROM lat"), Duration::from_secs(120), || proc.check_alive())
        .await?;
    until_true(&native, &format!("SELECT count(*) = {sent} FROM lat"), Duration::from_secs(120), || Ok(())).await?;
    let rss = proc.peak_rss_mb();
    proc.stop()?;
    let (p50, p99, max) = percentiles(replica).await?;
    let (n50, n99, nmax) = percentiles(&native).await?;
    if p50 < 0.0 || n50 < 0.0 {
        bail!("negative latency: the clocks disagree");
    }
    println!(
        "bench=latency rows={sent} target_rows_per_s={} achieved_rows_per_s={achieved:.0} rows_per_txn={} p50_ms={p50:.1} \
         p99_ms={p99:.1} max_ms={max:.1} native_p50_ms={n50:.1} native_p99_ms={n99:.1} native_max_ms={nmax:.1} \
         p99_ratio_vs_native={:.2} sluice_peak_rss_mb={rss:.1}",
        a.rate,
        a.rows_per_txn,
        p99 / n99
    );
    Ok(())
}

/// p50, p99 and max of the commit-to-visible latency in ms of the `lat` rows of a database.
async fn percentiles(db: &tokio_postgres::Client) -> anyhow::Result<(f64, f64, f64)> {
    let row = db
        .query_one(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms) \
             FROM (SELECT extract(epoch FROM t_dst - t_src)::float8 * 1000 AS ms FROM lat) l",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1), row.get(2)))
}
