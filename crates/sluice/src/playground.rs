//! `sluice playground`: a local source and replica, a TPC-C-like schema with sample data, a
//! live workload, and a view of the replica following it. Everything lives in temporary
//! directories and stops on Ctrl-C (or after `--duration`).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sluice_playground::scenario::{create_sample, digest, workload_txn, Rng, TABLES};
use sluice_playground::PgServer;
use tokio::sync::watch;
use tokio_postgres::Client;

/// Command-line options of `sluice playground`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Stop by itself after this many seconds (default: run until Ctrl-C)
    #[arg(long)]
    pub duration: Option<u64>,
    /// Workload transactions per second
    #[arg(long, default_value_t = 50)]
    pub rate: u32,
    /// The source database: `postgres`, or `mysql` (a MariaDB server; the replica is then
    /// PostgreSQL)
    #[arg(long, default_value = "postgres")]
    pub source: String,
    /// The replica of a PostgreSQL source: `duckdb` (a DuckDB file, queried live next to the
    /// lag; the default) or `postgres` (a second PostgreSQL server). A MariaDB source's replica
    /// is PostgreSQL.
    #[arg(long)]
    pub sink: Option<String>,
}

/// The playground's replica by default: DuckDB when this build has it.
#[cfg(feature = "duckdb")]
const DEFAULT_SINK: &str = "duckdb";
#[cfg(not(feature = "duckdb"))]
const DEFAULT_SINK: &str = "postgres";

/// Where the playground's replica is, and how it is read.
enum Replica {
    Postgres(Client),
    #[cfg(feature = "duckdb")]
    DuckDb(std::path::PathBuf),
}

/// Per table, a column the live view sums (a figure the workload keeps changing).
const SUMS: &[(&str, &str)] = &[
    ("warehouse", "w_ytd"),
    ("district", "d_ytd"),
    ("customer", "c_balance"),
    ("item", "i_price"),
    ("orders", "o_ol_cnt"),
    ("order_line", "ol_amount"),
];

/// Row count and the table's sum, as text, per table of [`SUMS`] (`None` where the database
/// has no such table yet).
async fn figures(replica: &Replica) -> Vec<Option<(String, String)>> {
    let sql = |prefix: &str| {
        SUMS.iter()
            .map(|(t, c)| {
                format!(
                    "SELECT '{t}', CAST(count(*) AS VARCHAR), CAST(coalesce(sum({c}), 0) AS VARCHAR) FROM {prefix}{t}"
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
    };
    let rows: Vec<Vec<Option<String>>> = match replica {
        Replica::Postgres(c) => return pg_figures(c).await,
        #[cfg(feature = "duckdb")]
        Replica::DuckDb(path) => {
            let (path, sql) = (path.display().to_string(), sql("public."));
            if !std::path::Path::new(&path).exists() {
                return SUMS.iter().map(|_| None).collect();
            }
            match tokio::task::spawn_blocking(move || sluice_duckdb::query::values(&path, &sql, Duration::from_secs(5)))
                .await
            {
                Ok(Ok(rows)) => rows,
                _ => return SUMS.iter().map(|_| None).collect(),
            }
        }
    };
    per_table(rows)
}

/// [`figures`] of a PostgreSQL database, one query per table (some may not exist yet).
async fn pg_figures(c: &Client) -> Vec<Option<(String, String)>> {
    let mut out = Vec::new();
    for (t, col) in SUMS {
        let q = format!("SELECT '{t}', count(*)::text, coalesce(sum({col}), 0)::text FROM {t}");
        if let Ok(r) = c.query_one(&q, &[]).await {
            out.push((0..3).map(|i| r.get::<_, Option<String>>(i)).collect());
        }
    }
    per_table(out)
}

fn per_table(rows: Vec<Vec<Option<String>>>) -> Vec<Option<(String, String)>> {
    SUMS.iter()
        .map(|(t, _)| {
            rows.iter()
                .find(|r| r.first().and_then(|v| v.as_deref()) == Some(t))
                .and_then(|r| Some((r.get(1)?.clone()?, r.get(2)?.clone()?)))
        })
        .collect()
}

async fn connect(server: &PgServer, db: &str) -> anyhow::Result<Client> {
    server.connect(db).await.map_err(anyhow::Error::msg)
}

/// Runs the playground until `stop` (Ctrl-C) or `args.duration`.
pub async fn run(args: Args, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    match (args.source.as_str(), args.sink.as_deref()) {
        ("postgres", _) => run_postgres(args, stop).await,
        ("mysql", None | Some("postgres")) => run_mysql(args, stop).await,
        ("mysql", Some(other)) => bail!("--sink {other}: the MariaDB playground's replica is PostgreSQL"),
        (other, _) => bail!("--source {other}: expected postgres or mysql"),
    }
}

async fn run_postgres(args: Args, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    let (duck, pg) = match args.sink.as_deref().unwrap_or(DEFAULT_SINK) {
        "postgres" => (false, true),
        #[cfg(feature = "duckdb")]
        "duckdb" => (true, false),
        other => bail!("--sink {other}: expected duckdb or postgres (this build has: {DEFAULT_SINK}, postgres)"),
    };
    println!(
        "Starting a source PostgreSQL server{} in temporary directories...",
        if pg { " and a target one" } else { " and a DuckDB replica" }
    );
    let source = PgServer::start().map_err(anyhow::Error::msg)?;
    let target = if pg { Some(PgServer::start().map_err(anyhow::Error::msg)?) } else { None };
    let files = tempfile::tempdir().context("a temporary directory for the DuckDB replica")?;
    let src_url = source.create_database("app").await.map_err(anyhow::Error::msg)?;
    let src = connect(&source, "app").await?;
    create_sample(&src).await.context("create the sample schema and data")?;
    let (sink_toml, replica) = match &target {
        Some(target) => {
            let dst_url = target.create_database("replica").await.map_err(anyhow::Error::msg)?;
            println!("source: {src_url}\ntarget: {dst_url}");
            (
                format!("type = \"postgres\"\nurl = \"{dst_url}\"\nmode = \"replica\""),
                Replica::Postgres(connect(target, "replica").await?),
            )
        }
        None => {
            let path = files.path().join("replica.duckdb");
            println!("source: {src_url}\nreplica: {} (query it: sluice query PIPELINE.toml \"SQL\")", path.display());
            let _ = duck;
            #[cfg(feature = "duckdb")]
            let replica = Replica::DuckDb(path.clone());
            #[cfg(not(feature = "duckdb"))]
            let replica: Replica = unreachable!("--sink duckdb was refused above");
            (
                format!(
                    "type = \"duckdb\"\npath = \"{}\"\nmode = \"replica\"\nbuffer = {{ flush_time_s = 0.2 }}",
                    path.display()
                ),
                replica,
            )
        }
    };

    let toml = format!(
        "name = \"playground\"\n\n[source]\ntype = \"postgres\"\nurl = \"{src_url}\"\ntables = [\"public.*\"]\n\
         snapshot = \"initial\"\n\n[[sink]]\n{sink_toml}\n"
    );
    let cfg = crate::parse(&toml, &|_| None).context("playground pipeline config")?;
    println!("pipeline:\n{toml}");

    let (pipe_stop_tx, pipe_stop_rx) = watch::channel(false);
    let pipeline = crate::start(&cfg, pipe_stop_rx);
    let handle = pipeline.handle.clone();
    let pipeline = pipeline.task;

    let (work_stop_tx, work_stop_rx) = watch::channel(false);
    let rate = args.rate.max(1);
    let mut work_client = connect(&source, "app").await?;
    let workload = tokio::spawn(async move {
        let mut rng = Rng::new(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64),
        );
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        let mut done: u64 = 0;
        while !*work_stop_rx.borrow() {
            tick.tick().await;
            workload_txn(&mut work_client, &mut rng).await?;
            done += 1;
        }
        Ok::<u64, tokio_postgres::Error>(done)
    });

    let started = Instant::now();
    let deadline = args.duration.map(|s| started + Duration::from_secs(s));
    let tty = std::io::stdout().is_terminal();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        if pipeline.is_finished() || workload.is_finished() {
            break;
        }
        show(&src, &replica, &handle, started, tty).await?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    let _ = work_stop_tx.send(true);
    let txns = match workload.await.context("workload task")? {
        Ok(n) => n,
        Err(e) => {
            let _ = pipe_stop_tx.send(true);
            let _ = pipeline.await;
            return Err(anyhow::Error::new(e).context("workload failed"));
        }
    };
    println!("\nWorkload stopped after {txns} transactions; waiting for the replica to converge...");
    let converge_deadline = Instant::now() + Duration::from_secs(60);
    let converged = loop {
        let same = match &replica {
            Replica::Postgres(dst) => {
                let mut same = true;
                for (t, key) in TABLES {
                    if digest(&src, t, key).await? != digest(dst, t, key).await.unwrap_or_default() {
                        same = false;
                    }
                }
                same
            }
            #[cfg(feature = "duckdb")]
            Replica::DuckDb(_) => pg_figures(&src).await == figures(&replica).await,
        };
        if same {
            break true;
        }
        if Instant::now() > converge_deadline || pipeline.is_finished() {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    show(&src, &replica, &handle, started, false).await?;
    let _ = pipe_stop_tx.send(true);
    match pipeline.await.context("pipeline task")? {
        Ok(()) => {}
        Err(e) => bail!("pipeline failed: {}", crate::chain(&e)),
    }
    let how = match &replica {
        Replica::Postgres(_) => "row counts and content digests match",
        #[cfg(feature = "duckdb")]
        Replica::DuckDb(_) => "row counts and the sum of a column per table match, read in DuckDB",
    };
    drop((src, replica));
    drop((source, target, files));
    if converged {
        println!("Replica is identical to the source ({how}). Servers stopped.");
        Ok(())
    } else {
        bail!("replica did not converge within 60s")
    }
}

async fn show(
    src: &Client,
    replica: &Replica,
    handle: &sluice_runtime::PipelineHandle,
    started: Instant,
    redraw: bool,
) -> anyhow::Result<()> {
    let mut out = String::new();
    if redraw {
        out.push_str("\x1b[2J\x1b[H");
    }
    let lag: Option<i64> = src
        .query_one(
            "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = 'sluice_playground'",
            &[],
        )
        .await
        .ok()
        .and_then(|r| r.get(0));
    let status = handle.status();
    let sink = status.sinks.first();
    let kind = match replica {
        Replica::Postgres(_) => "PostgreSQL",
        #[cfg(feature = "duckdb")]
        Replica::DuckDb(_) => "DuckDB",
    };
    out.push_str(&format!(
        "sluice playground (PostgreSQL -> {kind})  t={:>4}s  slot lag: {}  replica lag: {}  {:.0} rows/s   (Ctrl-C to stop)\n",
        started.elapsed().as_secs(),
        lag.map_or("slot not created yet".to_string(), |b| format!("{b} bytes of WAL")),
        sink.and_then(|s| s.lag_ms).map_or("-".to_string(), |ms| format!("{ms} ms")),
        sink.map_or(0.0, |s| s.rows_per_sec),
    ));
    out.push_str(&format!(
        "{:<12} {:>10} {:>10} {:>8}   {:>16} {:>16}\n",
        "table",
        "source",
        "replica",
        "behind",
        "sum (source)",
        format!("sum ({kind})")
    ));
    let (s, r) = (pg_figures(src).await, figures(replica).await);
    for (((t, col), s), r) in SUMS.iter().zip(s).zip(r) {
        let (sc, ss) = s.unwrap_or_else(|| ("-".into(), "-".into()));
        let (rc, rs) = r.unwrap_or_else(|| ("-".into(), "-".into()));
        let behind = match (sc.parse::<i64>(), rc.parse::<i64>()) {
            (Ok(a), Ok(b)) => (a - b).to_string(),
            _ => "-".into(),
        };
        out.push_str(&format!("{t:<12} {sc:>10} {rc:>10} {behind:>8}   {:>16} {:>16}  ({col})\n", ss, rs));
    }
    print!("{out}");
    Ok(())
}

/// `--source mysql`: a MariaDB source with the same schema and workload (written through the
/// `mariadb` client), replicated into PostgreSQL.
async fn run_mysql(args: Args, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    use sluice_playground::mysql_scenario::{workload_txn as my_txn, CHECKSUMS, SAMPLE};
    use std::io::Write;

    println!("Starting a MariaDB source and a PostgreSQL target in temporary directories...");
    let source = sluice_playground::MariaDbServer::start().map_err(anyhow::Error::msg)?;
    let target = PgServer::start().map_err(anyhow::Error::msg)?;
    let src_url = source.create_database("app").map_err(anyhow::Error::msg)?;
    let dst_url = target.create_database("replica").await.map_err(anyhow::Error::msg)?;
    source.cli("app", SAMPLE).map_err(anyhow::Error::msg).context("create the sample schema and data")?;
    let dst = connect(&target, "replica").await?;
    println!("source: {src_url}\ntarget: {dst_url}");
    let toml = format!(
        "name = \"playground\"\n\n[source]\ntype = \"mysql\"\nurl = \"{src_url}\"\ntables = [\"app.*\"]\n\
         snapshot = \"initial\"\n\n[[sink]]\ntype = \"postgres\"\nurl = \"{dst_url}\"\nmode = \"replica\"\n"
    );
    let cfg = crate::parse(&toml, &|_| None).context("playground pipeline config")?;
    println!("pipeline:\n{toml}");
    let (pipe_stop_tx, pipe_stop_rx) = watch::channel(false);
    let pipeline = crate::start(&cfg, pipe_stop_rx);
    let handle = pipeline.handle.clone();
    let pipeline = pipeline.task;

    // The workload: one mariadb client fed transactions at the rate asked for.
    let mut client = std::process::Command::new("mariadb")
        .args(["--no-defaults", "--batch", "--user=root", "--default-character-set=utf8mb4", "--database=app"])
        .arg(format!("--socket={}", source.socket().display()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("start the mariadb client for the workload")?;
    let mut stdin = client.stdin.take().context("the mariadb client's input")?;
    let (work_stop_tx, work_stop_rx) = std::sync::mpsc::channel::<()>();
    let rate = args.rate.max(1);
    let workload = std::thread::spawn(move || -> std::io::Result<u64> {
        let mut rng = Rng::new(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64),
        );
        let mut done = 0u64;
        while work_stop_rx.try_recv().is_err() {
            stdin.write_all(my_txn(&mut rng).as_bytes())?;
            done += 1;
            std::thread::sleep(Duration::from_secs_f64(1.0 / rate as f64));
        }
        Ok(done)
    });

    let counts = |sql_suffix: &'static str| {
        let src = &source;
        move || -> anyhow::Result<Vec<String>> {
            let q: Vec<String> = CHECKSUMS
                .iter()
                .map(|(t, c)| format!("SELECT COUNT(*), COALESCE(SUM({c}), 0){sql_suffix} FROM {t}"))
                .collect();
            q.iter().map(|q| src.cli("app", q).map(|s| s.trim().to_string()).map_err(anyhow::Error::msg)).collect()
        }
    };
    let src_sums = counts("");
    let dst_sums = || async {
        let mut out = Vec::new();
        for (t, c) in CHECKSUMS {
            let r = dst
                .query_one(&format!("SELECT count(*)::text, coalesce(sum({c}), 0)::text FROM app.{t}"), &[])
                .await
                .ok();
            out.push(r.map(|r| format!("{}\t{}", r.get::<_, String>(0), r.get::<_, String>(1))).unwrap_or_default());
        }
        out
    };
    let started = Instant::now();
    let deadline = args.duration.map(|s| started + Duration::from_secs(s));
    let tty = std::io::stdout().is_terminal();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let show_mysql = |src: &[String], dst: &[String], redraw: bool| {
        let mut out = String::new();
        if redraw {
            out.push_str("\x1b[2J\x1b[H");
        }
        let status = handle.status();
        let sink = status.sinks.first();
        out.push_str(&format!(
            "sluice playground (MariaDB -> PostgreSQL)  t={:>4}s  replica lag: {}  {:.0} rows/s   (Ctrl-C to stop)\n",
            started.elapsed().as_secs(),
            sink.and_then(|s| s.lag_ms).map_or("-".to_string(), |ms| format!("{ms} ms")),
            sink.map_or(0.0, |s| s.rows_per_sec),
        ));
        out.push_str(&format!("{:<12} {:>10} {:>10}\n", "table", "source", "replica"));
        for (i, (t, _)) in CHECKSUMS.iter().enumerate() {
            let n = |v: Option<&String>| v.and_then(|s| s.split('\t').next().map(str::to_string)).unwrap_or("-".into());
            out.push_str(&format!("{t:<12} {:>10} {:>10}\n", n(src.get(i)), n(dst.get(i))));
        }
        print!("{out}");
    };
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        if pipeline.is_finished() || workload.is_finished() {
            break;
        }
        show_mysql(&src_sums()?, &dst_sums().await, tty);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    let _ = work_stop_tx.send(());
    let txns = workload.join().map_err(|_| anyhow::anyhow!("workload thread panicked"))?.context("workload")?;
    let status = client.wait().context("the workload client")?;
    if !status.success() {
        let _ = pipe_stop_tx.send(true);
        let _ = pipeline.await;
        bail!("the workload client failed ({status})");
    }
    println!("\nWorkload stopped after {txns} transactions; waiting for the replica to converge...");
    let converge_deadline = Instant::now() + Duration::from_secs(60);
    let converged = loop {
        if src_sums()? == dst_sums().await {
            break true;
        }
        if Instant::now() > converge_deadline || pipeline.is_finished() {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    show_mysql(&src_sums()?, &dst_sums().await, false);
    let _ = pipe_stop_tx.send(true);
    match pipeline.await.context("pipeline task")? {
        Ok(()) => {}
        Err(e) => bail!("pipeline failed: {}", crate::chain(&e)),
    }
    drop(dst);
    drop((source, target));
    if converged {
        println!("Replica is identical to the source (row counts and column sums match). Servers stopped.");
        Ok(())
    } else {
        bail!("replica did not converge within 60s")
    }
}
