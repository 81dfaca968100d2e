//! DuckDB benchmarks.
//!
//! `duckdb-load`: one table of the snapshot benchmark's shape loaded from PostgreSQL into a new
//! DuckDB file, by Sluice (`sluice run` until the copy is committed) and, in the same run, by dlt
//! (`sql_database` source with its fastest backend, connectorx, into dlt's duckdb destination).
//! Both files are checked with DuckDB's Python package (row count and sums).
//!
//! `parquet-load`: the same table into Parquet files in a local directory, by Sluice's parquet
//! sink and by dlt's filesystem destination (`loader_file_format="parquet"`), both read back
//! with DuckDB's Python package.
//!
//! `duckdb-drain`: a backlog of updates written while nothing consumes it, drained by Sluice
//! into a DuckDB replica and, in the same run from its own slot, into a PostgreSQL replica. Done
//! is a marker row committed after the backlog, visible in the replica.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::common::{bench_server, connect, copied, exec, median, perf_start, perf_stop, until_true, SluiceProc};

const TABLE: &str = "CREATE TABLE t (id bigint PRIMARY KEY, a int NOT NULL, b text NOT NULL, c timestamptz NOT NULL, d numeric(12,2) NOT NULL)";

/// Where a load goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Target {
    DuckDb,
    Parquet,
}

#[derive(clap::Args)]
pub struct LoadArgs {
    /// Rows in the table
    #[arg(long, default_value_t = 5_000_000)]
    rows: i64,
    /// Repetitions; medians are reported
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Extra TOML lines for the sink
    #[arg(long, default_value = "")]
    sink_extra: String,
}

/// `count(*)`, `sum(a)`, `sum(d)` of a table in a DuckDB file, read by DuckDB's Python package.
fn duck_figures(path: &std::path::Path, table: &str) -> anyhow::Result<String> {
    let script = "import sys, duckdb\nc = duckdb.connect(sys.argv[1], read_only=True)\n\
                  print('|'.join(str(v) for v in c.execute(f'SELECT count(*), sum(a), sum(d) FROM {sys.argv[2]}').fetchone()))";
    let out = Command::new("python3").args(["-c", script]).arg(path).arg(table).output()?;
    if !out.status.success() {
        bail!("read {table} in {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `count(*)`, `sum(a)`, `sum(d)` over the Parquet files under `dir`, read by DuckDB's Python
/// package.
fn parquet_figures(dir: &std::path::Path) -> anyhow::Result<String> {
    let script = "import sys, duckdb\nprint('|'.join(str(v) for v in duckdb.execute(\n\
                  f\"SELECT count(*), sum(a), CAST(sum(d) AS DECIMAL(38,2)) FROM read_parquet('{sys.argv[1]}/**/*.parquet', union_by_name = true)\").fetchone()))";
    let out = Command::new("python3").args(["-c", script]).arg(dir).output()?;
    if !out.status.success() {
        bail!("read the Parquet files in {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether the parquet sink's checkpoint under `dir` has the copy of its table committed.
fn copied_in_parquet(dir: &std::path::Path, pipeline: &str) -> bool {
    std::fs::read_to_string(dir.join("_sluice").join(format!("{pipeline}-0")).join("checkpoint.json"))
        .is_ok_and(|s| s.contains("\"copied\""))
}

/// Whether `sluice query` on `config` finds the copy of `table` committed.
fn copied_in_duckdb(config: &std::path::Path) -> bool {
    let Ok(bin) = crate::common::sluice_bin() else { return false };
    Command::new(bin)
        .arg("query")
        .arg(config)
        .arg("SELECT count(*) AS done FROM sluice.checkpoints WHERE CAST(state AS VARCHAR) LIKE '%\"copied\"%'")
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("| 1 "))
        .unwrap_or(false)
}

pub async fn load(a: LoadArgs, target: Target) -> anyhow::Result<()> {
    let source = bench_server()?;
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
    let want: String =
        src.query_one("SELECT count(*)::text || '|' || sum(a)::text || '|' || sum(d)::text FROM t", &[]).await?.get(0);
    let (mut dlt_times, mut sluice_times, mut rss, mut cpus) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..a.runs {
        let dir = tempfile::tempdir()?;
        // dlt, its fastest backend.
        let dlt_file = dir.path().join("dlt.duckdb");
        let dlt_lake = dir.path().join("dlt_lake");
        // SQLAlchemy's name for the scheme.
        let dlt_url = src_url.replacen("postgres://", "postgresql+psycopg2://", 1);
        let (destination, run_args) = match target {
            Target::DuckDb => (format!("dlt.destinations.duckdb('{}')", dlt_file.display()), ""),
            Target::Parquet => (
                format!("dlt.destinations.filesystem('file://{}')", dlt_lake.display()),
                "loader_file_format='parquet'",
            ),
        };
        let script = format!(
            "import dlt\nfrom dlt.sources.sql_database import sql_database\n\
             src = sql_database(credentials='{dlt_url}', table_names=['t'], backend='connectorx')\n\
             p = dlt.pipeline(pipeline_name='bench{run}', destination={destination}, dataset_name='bench', \
             pipelines_dir='{}')\n\
             p.run(src, {run_args})\n",
            dir.path().join("dlt_pipelines").display()
        );
        let t = Instant::now();
        let out = Command::new("python3")
            .args(["-c", &script])
            .env("DLT_DATA_DIR", dir.path().join("dlt_data"))
            .env("RUNTIME__LOG_LEVEL", "WARNING")
            .output()
            .context("run dlt")?;
        let dlt_secs = t.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!("dlt failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        eprintln!("dlt (connectorx): {dlt_secs:.2}s");
        let got = match target {
            Target::DuckDb => duck_figures(&dlt_file, "bench.t")?,
            Target::Parquet => parquet_figures(&dlt_lake.join("bench").join("t"))?,
        };
        if got != want {
            bail!("dlt's copy differs from the source: {got} vs {want}");
        }

        // Sluice.
        let file = dir.path().join("loaded.duckdb");
        let lake = dir.path().join("lake");
        let sink = match target {
            Target::DuckDb => format!("type = \"duckdb\"\npath = \"{}\"", file.display()),
            Target::Parquet => format!("type = \"parquet\"\nurl = \"{}\"", lake.display()),
        };
        let toml = format!(
            "name = \"load{run}\"\n[source]\ntype = \"postgres\"\nurl = \"{src_url}\"\ntables = [\"public.t\"]\n\n\
             [[sink]]\n{sink}\n{}\n",
            a.sink_extra
        );
        let t = Instant::now();
        let mut proc = SluiceProc::start(&dir, &toml)?;
        let perf = perf_start(&proc)?;
        let config = dir.path().join("pipeline.toml");
        let started = Instant::now();
        loop {
            proc.check_alive()?;
            let done = match target {
                Target::DuckDb => copied_in_duckdb(&config),
                Target::Parquet => copied_in_parquet(&lake, &format!("load{run}")),
            };
            if done {
                break;
            }
            if started.elapsed() > Duration::from_secs(3600) {
                bail!("sluice did not copy the table within an hour");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let sluice_secs = t.elapsed().as_secs_f64();
        perf_stop(perf)?;
        rss.push(proc.peak_rss_mb());
        cpus.push(proc.cpu_secs());
        proc.stop()?;
        eprintln!("sluice: {sluice_secs:.2}s, {:.1} CPU s, peak RSS {:.1} MB", cpus[run], rss[run]);
        let got = match target {
            Target::DuckDb => duck_figures(&file, "public.t")?,
            Target::Parquet => parquet_figures(&lake.join("table=public.t"))?,
        };
        if got != want {
            bail!("Sluice's copy differs from the source: {got} vs {want}");
        }
        exec(&src, &format!("SELECT pg_drop_replication_slot('sluice_load{run}')")).await?;
        dlt_times.push(dlt_secs);
        sluice_times.push(sluice_secs);
    }
    let rows = a.rows as f64;
    let (dlt, sluice) = (rows / median(dlt_times), rows / median(sluice_times));
    println!(
        "bench={}-load rows={} runs={} sluice_rows_per_s={sluice:.0} dlt_rows_per_s={dlt:.0} ratio_vs_dlt={:.2} \
         sluice_peak_rss_mb={:.1}",
        if target == Target::DuckDb { "duckdb" } else { "parquet" },
        a.rows,
        a.runs,
        sluice / dlt,
        median(rss)
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct DrainArgs {
    /// Rows in the table
    #[arg(long, default_value_t = 1_000_000)]
    rows: i64,
    /// Updates in the backlog (transactions of 1,000 rows)
    #[arg(long, default_value_t = 1_000_000)]
    updates: i64,
    /// Repetitions; medians are reported
    #[arg(long, default_value_t = 1)]
    runs: usize,
}

pub async fn drain(a: DrainArgs) -> anyhow::Result<()> {
    let (mut duck, mut pg, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..a.runs {
        let source = bench_server()?;
        let target = bench_server()?;
        let src_url = source.create_database("bench").await.map_err(anyhow::Error::msg)?;
        let replica_url = target.create_database("replica").await.map_err(anyhow::Error::msg)?;
        let (src, replica) = (connect(&src_url).await?, connect(&replica_url).await?);
        exec(&src, TABLE).await?;
        exec(&src, "CREATE TABLE marker (id int PRIMARY KEY, at timestamptz NOT NULL)").await?;
        exec(
            &src,
            &format!(
                "INSERT INTO t SELECT g, g % 100000, md5(g::text), now(), (g % 100000) / 100.0 FROM generate_series(1, {}) g",
                a.rows
            ),
        )
        .await?;
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("replica.duckdb");
        let tables = "tables = [\"public.t\", \"public.marker\"]";
        let duck_toml = format!(
            "name = \"dd{run}\"\n[source]\ntype = \"postgres\"\nurl = \"{src_url}\"\n{tables}\n\n\
             [[sink]]\ntype = \"duckdb\"\npath = \"{}\"\n",
            file.display()
        );
        let pg_toml = format!(
            "name = \"dp{run}\"\n[source]\ntype = \"postgres\"\nurl = \"{src_url}\"\n{tables}\n\n\
             [[sink]]\ntype = \"postgres\"\nurl = \"{replica_url}\"\n"
        );
        let ddir = tempfile::tempdir()?;
        let pdir = tempfile::tempdir()?;
        // Both copy the table, then stop before the backlog.
        let mut first = SluiceProc::start(&ddir, &duck_toml)?;
        let config = ddir.path().join("pipeline.toml");
        while !copied_in_duckdb(&config) {
            first.check_alive()?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        first.stop()?;
        let mut first = SluiceProc::start(&pdir, &pg_toml)?;
        until_true(&replica, &copied(&["t", "marker"]), Duration::from_secs(600), || first.check_alive()).await?;
        first.stop()?;

        let t = Instant::now();
        exec(
            &src,
            &format!(
                "DO $$ DECLARE i bigint := 0; BEGIN WHILE i < {u} LOOP \
                   UPDATE t SET a = a + 1, d = d + 1 WHERE id > i % {n} AND id <= i % {n} + 1000; \
                   COMMIT; i := i + 1000; END LOOP; END $$",
                u = a.updates,
                n = a.rows
            ),
        )
        .await?;
        exec(&src, "INSERT INTO marker VALUES (1, now())").await?;
        eprintln!("backlog written in {:.1}s", t.elapsed().as_secs_f64());

        let t = Instant::now();
        let mut proc = SluiceProc::start(&ddir, &duck_toml)?;
        loop {
            proc.check_alive()?;
            let out = Command::new(crate::common::sluice_bin()?)
                .arg("query")
                .arg(&config)
                .arg("SELECT count(*) AS m FROM public.marker")
                .output()?;
            if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("| 1 ") {
                break;
            }
            if t.elapsed() > Duration::from_secs(1800) {
                bail!("the DuckDB replica did not drain the backlog in 30 minutes");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let duck_secs = t.elapsed().as_secs_f64();
        rss.push(proc.peak_rss_mb());
        eprintln!("sluice -> duckdb: {duck_secs:.2}s, {:.1} CPU s, peak RSS {:.1} MB", proc.cpu_secs(), rss[run]);
        proc.stop()?;

        let t = Instant::now();
        let mut proc = SluiceProc::start(&pdir, &pg_toml)?;
        until_true(&replica, "SELECT EXISTS (SELECT 1 FROM marker WHERE id = 1)", Duration::from_secs(1800), || {
            proc.check_alive()
        })
        .await?;
        let pg_secs = t.elapsed().as_secs_f64();
        eprintln!("sluice -> postgres: {pg_secs:.2}s, {:.1} CPU s", proc.cpu_secs());
        proc.stop()?;

        let want: String = src
            .query_one("SELECT count(*)::text || '|' || sum(a)::text || '|' || sum(d)::text FROM t", &[])
            .await?
            .get(0);
        let got = duck_figures(&file, "public.t")?;
        if got != want {
            bail!("the DuckDB replica differs from the source: {got} vs {want}");
        }
        duck.push(duck_secs);
        pg.push(pg_secs);
    }
    let n = a.updates as f64;
    let (d, p) = (n / median(duck), n / median(pg));
    println!(
        "bench=duckdb-drain updates={} runs={} duckdb_rows_per_s={d:.0} postgres_rows_per_s={p:.0} ratio_vs_postgres={:.2} \
         duckdb_peak_rss_mb={:.1}",
        a.updates,
        a.runs,
        d / p,
        median(rss)
    );
    Ok(())
}
