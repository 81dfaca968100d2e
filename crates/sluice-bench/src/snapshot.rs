//! Benchmark 2: the initial snapshot of one large table into an empty replica, against two
//! baselines between the same two servers: a single-stream
//! `COPY ... TO STDOUT (FORMAT binary) | COPY ... FROM STDIN (FORMAT binary)` pipe into a table
//! of the same shape without its key, the primary key built afterwards (timed); and pgcopydb's
//! `copy data --table-jobs 2 --index-jobs 2` (table data, then the key) into the table created
//! without its key.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::common::{
    bench_server, connect, copied, digest, exec, median, perf_start, perf_stop, pgcopydb, print_log, run_ok,
    until_true, SluiceProc,
};

#[derive(clap::Args)]
pub struct Args {
    /// Rows in the table
    #[arg(long, default_value_t = 5_000_000)]
    rows: i64,
    /// Repetitions (fresh target databases each); medians are reported
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Extra TOML lines for the sink, e.g. 'snapshot_connections = 1'
    #[arg(long, default_value = "")]
    sink_extra: String,
    /// Also time a text-format COPY pipe (key built after), to see what the format costs the
    /// servers
    #[arg(long)]
    text_pipe: bool,
}

const TABLE: &str = "CREATE TABLE t (id bigint PRIMARY KEY, a int NOT NULL, b text NOT NULL, c timestamptz NOT NULL, d numeric(12,2) NOT NULL)";
const TABLE_NO_KEY: &str = "CREATE TABLE t (id bigint NOT NULL, a int NOT NULL, b text NOT NULL, c timestamptz NOT NULL, d numeric(12,2) NOT NULL)";

pub async fn run(a: Args) -> anyhow::Result<()> {
    let source = bench_server()?;
    let target = bench_server()?;
    let src_url = source.create_database("bench").await.map_err(anyhow::Error::msg)?;
    let src = connect(&src_url).await?;
    exec(&src, TABLE).await?;
    exec(
        &src,
        &format!(
            "INSERT INTO t SELECT g, g % 100000, md5(g::text) || md5((g + 1)::text), now(), (g % 100000) / 100.0 \
         FROM generate_series(1, {}) g",
            a.rows
        ),
    )
    .await?;
    exec(&src, "VACUUM ANALYZE t").await?;
    let want = digest(&src, "t").await?;
    let bindir = sluice_playground::pg_bindir().map_err(anyhow::Error::msg)?;
    let psql = bindir.join("psql");
    let (mut copy_times, mut sluice_times, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    let (mut pgcopydb_times, mut pgcopydb_exact) = (Vec::new(), true);
    for run in 0..a.runs {
        let (copy, _, copy_secs) = pipe(&target, &format!("copy{run}"), &psql, &src_url, " (FORMAT binary)").await?;
        eprintln!("binary COPY pipe, key built after: {copy_secs:.2}s");
        if a.text_pipe {
            let (_, load, total) = pipe(&target, &format!("text{run}"), &psql, &src_url, "").await?;
            eprintln!("text COPY pipe: {load:.2}s, key built after: {total:.2}s");
        }

        let peer_url = target.create_database(&format!("pgcopydb{run}")).await.map_err(anyhow::Error::msg)?;
        let peer = connect(&peer_url).await?;
        let work = tempfile::tempdir()?;
        let dir = work.path().join("pgcopydb").display().to_string();
        // The schema without its indexes and constraints, as `pgcopydb copy schema`'s pre-data
        // part leaves it; `copy data` builds the key.
        exec(&peer, TABLE_NO_KEY).await?;
        let t = Instant::now();
        run_ok(
            pgcopydb(work.path())?.args([
                "copy",
                "data",
                "--source",
                &src_url,
                "--target",
                &peer_url,
                "--table-jobs",
                "2",
                "--index-jobs",
                "2",
                "--dir",
                &dir,
            ]),
            "pgcopydb copy data",
        )?;
        let peer_secs = t.elapsed().as_secs_f64();
        let exact = digest(&peer, "t").await.map(|d| d == want).unwrap_or(false);
        eprintln!(
            "pgcopydb copy data: {peer_secs:.2}s{}",
            if exact { "" } else { " (its copy DIFFERS from the source)" }
        );
        pgcopydb_exact &= exact;
        pgcopydb_times.push(peer_secs);

        let replica_url = target.create_database(&format!("replica{run}")).await.map_err(anyhow::Error::msg)?;
        let replica = connect(&replica_url).await?;
        let dir = tempfile::tempdir()?;
        let toml = format!(
            "name = \"snap{run}\"\n[source]\ntype = \"postgres\"\nurl = \"{src_url}\"\ntables = [\"public.t\"]\n\n\
             [[sink]]\ntype = \"postgres\"\nurl = \"{replica_url}\"\n{}\n",
            a.sink_extra
        );
        let t = Instant::now();
        let mut proc = SluiceProc::start(&dir, &toml)?;
        let perf = perf_start(&proc)?;
        until_true(&replica, &copied(&["t"]), Duration::from_secs(3600), || proc.check_alive()).await?;
        let sluice_secs = t.elapsed().as_secs_f64();
        perf_stop(perf)?;
        rss.push(proc.peak_rss_mb());
        let cpu = proc.cpu_secs();
        let log = proc.log.clone();
        proc.stop()?;
        print_log(&log, &["INFO", "WARN"]);
        eprintln!("sluice snapshot: {sluice_secs:.2}s, sluice used {cpu:.2} CPU s");
        if digest(&replica, "t").await? != want || digest(&copy, "t").await? != want {
            bail!("a copy differs from the source");
        }
        exec(&src, &format!("SELECT pg_drop_replication_slot('sluice_snap{run}')")).await?;
        copy_times.push(copy_secs);
        sluice_times.push(sluice_secs);
    }
    let rows = a.rows as f64;
    let copy = rows / median(copy_times);
    let sluice = rows / median(sluice_times);
    let peer = rows / median(pgcopydb_times);
    println!(
        "bench=snapshot rows={} runs={} sluice_rows_per_s={sluice:.0} copy_rows_per_s={copy:.0} pgcopydb_rows_per_s={peer:.0} \
         ratio_vs_copy={:.2} ratio_vs_pgcopydb={:.2} pgcopydb_exact={pgcopydb_exact} sluice_peak_rss_mb={:.1}",
        a.rows,
        a.runs,
        sluice / copy,
        sluice / peer,
        median(rss)
    );
    Ok(())
}

/// `COPY t TO STDOUT{options} | COPY t FROM STDIN{options}` with psql from the source into a new
/// database `db` on `target`, into the table without its key, built afterwards. Returns a client
/// of that database, the seconds the rows took and the seconds with the key.
async fn pipe(
    target: &sluice_playground::PgServer,
    db: &str,
    psql: &std::path::Path,
    src_url: &str,
    options: &str,
) -> anyhow::Result<(tokio_postgres::Client, f64, f64)> {
    let url = target.create_database(db).await.map_err(anyhow::Error::msg)?;
    let client = connect(&url).await?;
    exec(&client, TABLE_NO_KEY).await?;
    let t = Instant::now();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{p}' -X -q -d '{src_url}' -c 'COPY t TO STDOUT{options}' | '{p}' -X -q -d '{url}' -c 'COPY t FROM STDIN{options}'",
            p = psql.display()
        ))
        .status()
        .context("run the COPY pipe")?;
    if !status.success() {
        bail!("COPY pipe{options} failed: {status}");
    }
    let load = t.elapsed().as_secs_f64();
    exec(&client, "ALTER TABLE t ADD PRIMARY KEY (id)").await?;
    Ok((client, load, t.elapsed().as_secs_f64()))
}
