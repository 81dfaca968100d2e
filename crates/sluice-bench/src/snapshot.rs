//! Benchmark 2: the initial snapshot of one large table into an empty replica, against
//! `COPY ... TO STDOUT (FORMAT binary) | COPY ... FROM STDIN (FORMAT binary)` between the same
//! two servers, into a table of the same shape (with its primary key).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::common::{bench_server, connect, copied, digest, exec, median, until_true, SluiceProc};

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
}

const TABLE: &str = "CREATE TABLE t (id bigint PRIMARY KEY, a int NOT NULL, b text NOT NULL, c timestamptz NOT NULL, d numeric(12,2) NOT NULL)";

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
    for run in 0..a.runs {
        let copy_url = target.create_database(&format!("copy{run}")).await.map_err(anyhow::Error::msg)?;
        let copy = connect(&copy_url).await?;
        exec(&copy, TABLE).await?;
        let t = Instant::now();
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "'{p}' -X -q -d '{src_url}' -c 'COPY t TO STDOUT (FORMAT binary)' | '{p}' -X -q -d '{copy_url}' -c 'COPY t FROM STDIN (FORMAT binary)'",
                p = psql.display()
            ))
            .status()
            .context("run the COPY pipe")?;
        let copy_secs = t.elapsed().as_secs_f64();
        if !status.success() {
            bail!("COPY pipe failed: {status}");
        }
        eprintln!("binary COPY pipe: {copy_secs:.2}s");

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
        until_true(&replica, &copied(&["t"]), Duration::from_secs(3600), || proc.check_alive()).await?;
        let sluice_secs = t.elapsed().as_secs_f64();
        rss.push(proc.peak_rss_mb());
        let cpu = proc.cpu_secs();
        proc.stop()?;
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
    println!(
        "bench=snapshot rows={} runs={} sluice_rows_per_s={sluice:.0} copy_rows_per_s={copy:.0} ratio_vs_copy={:.2} sluice_peak_rss_mb={:.1}",
        a.rows,
        a.runs,
        sluice / copy,
        median(rss)
    );
    Ok(())
}
