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
}

async fn connect(server: &PgServer, db: &str) -> anyhow::Result<Client> {
    server.connect(db).await.map_err(anyhow::Error::msg)
}

/// Runs the playground until `stop` (Ctrl-C) or `args.duration`.
pub async fn run(args: Args, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    println!("Starting a source and a target PostgreSQL server in temporary directories...");
    let source = PgServer::start().map_err(anyhow::Error::msg)?;
    let target = PgServer::start().map_err(anyhow::Error::msg)?;
    let src_url = source.create_database("app").await.map_err(anyhow::Error::msg)?;
    let dst_url = target.create_database("replica").await.map_err(anyhow::Error::msg)?;
    let src = connect(&source, "app").await?;
    let dst = connect(&target, "replica").await?;
    create_sample(&src).await.context("create the sample schema and data")?;
    println!("source: {src_url}\ntarget: {dst_url}");

    let toml = format!(
        "name = \"playground\"\n\n[source]\ntype = \"postgres\"\nurl = \"{src_url}\"\ntables = [\"public.*\"]\n\
         snapshot = \"initial\"\n\n[[sink]]\ntype = \"postgres\"\nurl = \"{dst_url}\"\nmode = \"replica\"\n"
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
        show(&src, &dst, &handle, started, tty).await?;
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
        let mut same = true;
        for (t, key) in TABLES {
            if digest(&src, t, key).await? != digest(&dst, t, key).await.unwrap_or_default() {
                same = false;
            }
        }
        if same {
            break true;
        }
        if Instant::now() > converge_deadline || pipeline.is_finished() {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    show(&src, &dst, &handle, started, false).await?;
    let _ = pipe_stop_tx.send(true);
    match pipeline.await.context("pipeline task")? {
        Ok(()) => {}
        Err(e) => bail!("pipeline failed: {}", crate::chain(&e)),
    }
    drop((src, dst));
    drop((source, target));
    if converged {
        println!("Replica is identical to the source (row counts and content digests match). Servers stopped.");
        Ok(())
    } else {
        bail!("replica did not converge within 60s")
    }
}

async fn show(
    src: &Client,
    dst: &Client,
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
    out.push_str(&format!(
        "sluice playground  t={:>4}s  slot lag: {}  replica lag: {}  {:.0} rows/s   (Ctrl-C to stop)\n",
        started.elapsed().as_secs(),
        lag.map_or("slot not created yet".to_string(), |b| format!("{b} bytes of WAL")),
        sink.and_then(|s| s.lag_ms).map_or("-".to_string(), |ms| format!("{ms} ms")),
        sink.map_or(0.0, |s| s.rows_per_sec),
    ));
    out.push_str(&format!("{:<12} {:>10} {:>10} {:>10}\n", "table", "source", "replica", "behind"));
    for (t, _) in TABLES {
        let q = format!("SELECT count(*) FROM {t}");
        let s: i64 = src.query_one(&q, &[]).await?.get(0);
        let r: Option<i64> = dst.query_one(&q, &[]).await.ok().map(|r| r.get(0));
        let (rs, behind) = match r {
            Some(r) => (r.to_string(), (s - r).to_string()),
            None => ("-".into(), "-".into()),
        };
        out.push_str(&format!("{t:<12} {s:>10} {rs:>10} {behind:>10}\n"));
    }
    print!("{out}");
    Ok(())
}
