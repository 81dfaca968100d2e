//! Benchmark 1 (streaming drain) and the huge-transaction memory benchmark.
//!
//! A backlog is written while nothing consumes it; three consumers then drain the same WAL one
//! after another: `pg_recvlogical` with pgoutput into /dev/null (how fast the walsender can hand
//! changes out at all), PostgreSQL's native logical replication (subscription enabled only after
//! the backlog exists), Sluice, and pgcopydb's `follow` (wal2json, its only plugin in 0.10; its slot set up by
//! `pgcopydb stream setup` before the backlog; it does not stop at `--endpos` by itself, so it is
//! stopped once the marker is in). pgcopydb's replica is compared too, and a mismatch reported. "Done" is the moment a marker row, committed after the
//! backlog, is visible in the target: both appliers keep commit order, so everything before it
//! is applied too. The replicas are compared with the source afterwards.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::common::{
    backend_cpu_secs, bench_server, connect, copied, digest, exec, median, perf_start, perf_stop, pgcopydb, print_log,
    run_ok, top_statements, until_true, Pair, SluiceProc,
};

pub(crate) const TABLES: &str = "
CREATE TABLE t (id bigint PRIMARY KEY, a int NOT NULL, b text NOT NULL, c timestamptz NOT NULL, d numeric(12,2) NOT NULL);
CREATE TABLE marker (id int PRIMARY KEY, at timestamptz NOT NULL);
";

pub(crate) const BACKLOG: &str = r#"
CREATE PROCEDURE backlog(n_ins bigint, n_upd bigint, n_del bigint) LANGUAGE plpgsql AS $$
DECLARE i bigint; n int;
BEGIN
  PERFORM setseed(0.42);
  i := 0;
  WHILE i < n_ins LOOP
    n := 1 + floor(random() * 1000)::int;
    INSERT INTO t SELECT g, (g % 100000)::int, md5(g::text) || md5((g + 1)::text), now(), (g % 100000) / 100.0
      FROM generate_series(i + 1, least(i + n, n_ins)) g;
    i := i + n;
    COMMIT;
  END LOOP;
  i := 0;
  WHILE i < n_upd LOOP
    n := 1 + floor(random() * 1000)::int;
    UPDATE t SET a = a + 1, c = now(), d = d + 1 WHERE id > i AND id <= least(i + n, n_upd);
    i := i + n;
    COMMIT;
  END LOOP;
  i := 0;
  WHILE i < n_del LOOP
    n := 1 + floor(random() * 1000)::int;
    DELETE FROM t WHERE id > n_ins - n_del + i AND id <= least(n_ins - n_del + i + n, n_ins);
    i := i + n;
    COMMIT;
  END LOOP;
END $$;
"#;

#[derive(clap::Args)]
pub struct Args {
    /// Rows inserted in the backlog
    #[arg(long, default_value_t = 1_000_000)]
    inserts: i64,
    /// Rows updated in the backlog
    #[arg(long, default_value_t = 1_000_000)]
    updates: i64,
    /// Rows deleted in the backlog
    #[arg(long, default_value_t = 200_000)]
    deletes: i64,
    /// Repetitions (fresh servers each); medians are reported
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Extra lines for the sink section of the Sluice pipeline (e.g. batch settings)
    #[arg(long, default_value = "")]
    sink_extra: String,
    /// Extra lines for the source section of the Sluice pipeline (e.g. encoding = "text")
    #[arg(long, default_value = "")]
    source_extra: String,
    /// Leave pgcopydb out (its `follow` takes minutes on the default backlog)
    #[arg(long)]
    skip_pgcopydb: bool,
}

struct DrainRun {
    ceiling: f64,
    native: f64,
    sluice: f64,
    rss_mb: f64,
    /// pgcopydb's time, and whether its replica equals the source
    pgcopydb: Option<(f64, bool)>,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let changes = (a.inserts + a.updates.min(a.inserts) + a.deletes.min(a.inserts)) as f64;
    let mut runs = Vec::new();
    for i in 0..a.runs {
        let r = once(&a).await?;
        println!(
            "run {}: decode_limit_rows_per_s={:.0} native_rows_per_s={:.0} sluice_rows_per_s={:.0} sluice_peak_rss_mb={:.1}",
            i + 1,
            changes / r.ceiling,
            changes / r.native,
            changes / r.sluice,
            r.rss_mb
        );
        if let Some((secs, exact)) = r.pgcopydb {
            println!("run {}: pgcopydb_rows_per_s={:.0} pgcopydb_exact={exact}", i + 1, changes / secs);
        }
        runs.push(r);
    }
    let ceiling = changes / median(runs.iter().map(|r| r.ceiling).collect());
    let native = changes / median(runs.iter().map(|r| r.native).collect());
    let sluice = changes / median(runs.iter().map(|r| r.sluice).collect());
    let rss = median(runs.iter().map(|r| r.rss_mb).collect());
    println!(
        "bench=drain changes={changes} runs={} sluice_rows_per_s={sluice:.0} native_rows_per_s={native:.0} \
         decode_limit_rows_per_s={ceiling:.0} ratio_vs_native={:.2} ratio_vs_decode_limit={:.2} sluice_peak_rss_mb={rss:.1}",
        a.runs,
        sluice / native,
        sluice / ceiling
    );
    let peer: Vec<f64> = runs.iter().filter_map(|r| r.pgcopydb.map(|p| p.0)).collect();
    if !peer.is_empty() {
        let exact = runs.iter().filter_map(|r| r.pgcopydb).all(|p| p.1);
        let peer = changes / median(peer);
        println!(
            "bench=drain-pgcopydb pgcopydb_rows_per_s={peer:.0} ratio_vs_pgcopydb={:.2} pgcopydb_exact={exact}",
            sluice / peer
        );
    }
    Ok(())
}

async fn once(a: &Args) -> anyhow::Result<DrainRun> {
    let source = bench_server()?;
    let target = bench_server()?;
    let src_url = source.create_database("bench").await.map_err(anyhow::Error::msg)?;
    let replica_url = target.create_database("replica").await.map_err(anyhow::Error::msg)?;
    let native_url = target.create_database("native").await.map_err(anyhow::Error::msg)?;
    let src = connect(&src_url).await?;
    let replica = connect(&replica_url).await?;
    let native = connect(&native_url).await?;
    exec(&src, TABLES).await?;
    exec(&src, BACKLOG).await?;
    exec(&native, TABLES).await?;
    exec(
        &src,
        "CREATE PUBLICATION native_pub FOR TABLE t, marker; CREATE PUBLICATION ceiling_pub FOR TABLE t, marker;",
    )
    .await?;
    // A slot cannot be created in a transaction that has written: its own statement.
    exec(&src, "SELECT pg_create_logical_replication_slot('ceiling', 'pgoutput')").await?;
    native
        .batch_execute(&format!(
            "CREATE SUBSCRIPTION native_sub CONNECTION 'host=127.0.0.1 port={} dbname=bench user=postgres' \
             PUBLICATION native_pub WITH (copy_data = false, enabled = false)",
            source.port()
        ))
        .await
        .context("create subscription")?;

    // Sluice creates its slot and copies the (empty) tables, then stops before the backlog.
    let dir = tempfile::tempdir()?;
    let toml = format!(
        "name = \"bench\"\n[source]\ntype = \"postgres\"\nurl = \"{src_url}\"\ntables = [\"public.t\", \"public.marker\"]\n{}\n\n\
         [[sink]]\ntype = \"postgres\"\nurl = \"{replica_url}\"\n{}\n",
        a.source_extra,
        a.sink_extra
    );
    let mut first = SluiceProc::start(&dir, &toml)?;
    until_true(&replica, &copied(&["t", "marker"]), Duration::from_secs(120), || first.check_alive()).await?;
    first.stop()?;

    // pgcopydb: its slot (wal2json) and the target's replication origin, before the backlog.
    let peer_work = tempfile::tempdir()?;
    let peer_dir = peer_work.path().join("pgcopydb").display().to_string();
    let peer_url = target.create_database("pgcopydb").await.map_err(anyhow::Error::msg)?;
    let peer = connect(&peer_url).await?;
    if !a.skip_pgcopydb {
        exec(&peer, TABLES).await?;
        run_ok(
            pgcopydb(peer_work.path())?
                .args(["stream", "setup", "--source", &src_url, "--target", &peer_url, "--dir", &peer_dir]),
            "pgcopydb stream setup",
        )?;
    }

    let t = Instant::now();
    exec(&src, &format!("CALL backlog({}, {}, {})", a.inserts, a.updates, a.deletes)).await?;
    exec(&src, "INSERT INTO marker VALUES (1, now())").await?;
    let end_lsn: String = src.query_one("SELECT pg_current_wal_lsn()::text", &[]).await?.get(0);
    eprintln!("backlog written in {:.1}s, WAL end {end_lsn}", t.elapsed().as_secs_f64());

    // Ceiling: the walsender decoding into pg_recvlogical, output discarded.
    let bindir = sluice_playground::pg_bindir().map_err(anyhow::Error::msg)?;
    let t = Instant::now();
    let status = Command::new(bindir.join("pg_recvlogical"))
        .args(["-d", &src_url, "--slot", "ceiling", "--start", "--no-loop", "-f", "/dev/null"])
        .arg(format!("--endpos={end_lsn}"))
        .args(["-o", "proto_version=1", "-o", "publication_names=ceiling_pub"])
        .status()
        .context("run pg_recvlogical")?;
    let ceiling = t.elapsed().as_secs_f64();
    if !status.success() {
        bail!("pg_recvlogical failed: {status}");
    }
    eprintln!("decode limit: {ceiling:.2}s");

    // Native logical replication.
    let t = Instant::now();
    exec(&native, "ALTER SUBSCRIPTION native_sub ENABLE").await?;
    until_true(&native, "SELECT EXISTS (SELECT 1 FROM marker WHERE id = 1)", Duration::from_secs(1800), || Ok(()))
        .await?;
    let native_secs = t.elapsed().as_secs_f64();
    let apply_cpu = backend_cpu_secs(&native, "SELECT pid FROM pg_stat_subscription WHERE pid IS NOT NULL").await;
    let sender_cpu =
        backend_cpu_secs(&src, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'native_sub'").await;
    eprintln!("native: apply worker {apply_cpu:.2} CPU s, walsender {sender_cpu:.2} CPU s");
    exec(&native, "ALTER SUBSCRIPTION native_sub DISABLE").await?;
    eprintln!("native: {native_secs:.2}s");
    top_statements(&replica, "before sluice").await;

    // Sluice.
    let t = Instant::now();
    let mut proc = SluiceProc::start(&dir, &toml)?;
    let perf = perf_start(&proc)?;
    until_true(&replica, "SELECT EXISTS (SELECT 1 FROM marker WHERE id = 1)", Duration::from_secs(1800), || {
        proc.check_alive()
    })
    .await?;
    let sluice_secs = t.elapsed().as_secs_f64();
    perf_stop(perf)?;
    let rss_mb = proc.peak_rss_mb();
    let cpu = proc.cpu_secs();
    let apply_cpu =
        backend_cpu_secs(&replica, "SELECT pid FROM pg_stat_activity WHERE application_name = 'sluice'").await;
    let sender_cpu =
        backend_cpu_secs(&src, "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'sluice_bench'").await;
    eprintln!("sluice: target backends {apply_cpu:.2} CPU s, walsender {sender_cpu:.2} CPU s");
    top_statements(&replica, "sluice").await;
    let log = proc.log.clone();
    proc.stop()?;
    eprintln!("sluice: {sluice_secs:.2}s, peak RSS {rss_mb:.1} MB, {cpu:.2} CPU seconds");
    print_log(&log, &["stopped", "batch ready"]);

    let want = digest(&src, "t").await?;
    if digest(&replica, "t").await? != want {
        bail!("the Sluice replica differs from the source");
    }
    if digest(&native, "t").await? != want {
        bail!("the native replica differs from the source");
    }
    exec(&native, "DROP SUBSCRIPTION native_sub").await?;

    // pgcopydb follow, stopped once the marker is in. Its apply waits for the sentinel's apply
    // mode (which `clone --follow` sets after its copy), set here first.
    let mut peer_result = None;
    if !a.skip_pgcopydb {
        run_ok(
            pgcopydb(peer_work.path())?.args(["stream", "sentinel", "set", "apply", "--source", &src_url]),
            "pgcopydb stream sentinel set apply",
        )?;
        let t = Instant::now();
        let mut follow = pgcopydb(peer_work.path())?
            .args([
                "follow",
                "--source",
                &src_url,
                "--target",
                &peer_url,
                "--dir",
                &peer_dir,
                "--resume",
                "--not-consistent",
                "--endpos",
                &end_lsn,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(peer_work.path().join("follow.log"))?)
            .spawn()
            .context("run pgcopydb follow")?;
        let done =
            until_true(&peer, "SELECT EXISTS (SELECT 1 FROM marker WHERE id = 1)", Duration::from_secs(1800), || {
                match follow.try_wait()? {
                    Some(status) if !status.success() => {
                        let log = std::fs::read_to_string(peer_work.path().join("follow.log")).unwrap_or_default();
                        let tail: Vec<&str> = log.lines().rev().take(15).collect();
                        bail!(
                            "pgcopydb follow exited with {status}:\n{}",
                            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                        )
                    }
                    _ => Ok(()),
                }
            })
            .await;
        let secs = t.elapsed().as_secs_f64();
        let _ = follow.kill();
        let _ = follow.wait();
        done?;
        let exact = digest(&peer, "t").await? == want;
        eprintln!("pgcopydb follow: {secs:.2}s{}", if exact { "" } else { " (its replica DIFFERS from the source)" });
        peer_result = Some((secs, exact));
    }
    Ok(DrainRun { ceiling, native: native_secs, sluice: sluice_secs, rss_mb, pgcopydb: peer_result })
}

#[derive(clap::Args)]
pub struct BigTxnArgs {
    /// Rows changed by the single transaction
    #[arg(long, default_value_t = 2_000_000)]
    rows: i64,
    /// The source's logical_decoding_work_mem: past it the server streams the transaction to
    /// Sluice while decoding (protocol 2) or spills it to its own disk (protocol 1)
    #[arg(long, default_value = "256MB")]
    decoding_mem: String,
}

/// Peak RSS while Sluice applies one transaction that updates `rows` rows.
pub async fn big_txn(a: BigTxnArgs) -> anyhow::Result<()> {
    let pair = Pair::start_with(&a.decoding_mem).await?;
    let (src, replica) = (&pair.src, &pair.replica);
    exec(src, TABLES).await?;
    exec(src, &format!(
        "INSERT INTO t SELECT g, g % 1000, md5(g::text) || md5((g + 1)::text), now(), g / 100.0 FROM generate_series(1, {}) g",
        a.rows
    ))
    .await?;
    let dir = tempfile::tempdir()?;
    let toml = pair.pipeline("bench", "\"public.t\", \"public.marker\"", "");
    let mut first = SluiceProc::start(&dir, &toml)?;
    until_true(replica, &copied(&["t", "marker"]), Duration::from_secs(1800), || first.check_alive()).await?;
    first.stop()?;
    exec(src, "UPDATE t SET a = a + 1, c = now()").await?;
    exec(src, "INSERT INTO marker VALUES (1, now())").await?;
    exec(src, "SELECT pg_stat_reset_replication_slot(NULL)").await?;
    let t = Instant::now();
    let mut proc = SluiceProc::start(&dir, &toml)?;
    until_true(replica, "SELECT EXISTS (SELECT 1 FROM marker WHERE id = 1)", Duration::from_secs(1800), || {
        proc.check_alive()
    })
    .await?;
    let secs = t.elapsed().as_secs_f64();
    let rss = proc.peak_rss_mb();
    // What the source did with the transaction: streamed it to Sluice, or spilled it to disk.
    // Read while the walsender is still there (it reports them as it decodes).
    let mut stats = (0i64, 0i64, 0i64);
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let r = src
            .query_one(
                "SELECT coalesce(sum(stream_txns), 0)::bigint, coalesce(sum(spill_txns), 0)::bigint, \
                        coalesce(sum(spill_bytes), 0)::bigint FROM pg_stat_replication_slots",
                &[],
            )
            .await?;
        stats = (r.get(0), r.get(1), r.get(2));
        if stats.0 + stats.1 > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (streamed, spilled, spill_bytes) = stats;
    proc.stop()?;
    if digest(src, "t").await? != digest(replica, "t").await? {
        bail!("the replica differs from the source");
    }
    println!(
        "bench=big_txn rows={} decoding_mem={} sluice_secs={secs:.2} sluice_rows_per_s={:.0} sluice_peak_rss_mb={rss:.1} \
         source_stream_txns={streamed} source_spill_txns={spilled} source_spill_mb={:.0}",
        a.rows,
        a.decoding_mem,
        a.rows as f64 / secs,
        spill_bytes as f64 / 1048576.0
    );
    Ok(())
}
