//! MariaDB benchmarks: the drain of a binlog backlog (Sluice vs MariaDB's own replication) and
//! the initial copy (Sluice vs `mariadb-dump | mariadb`), each against its baseline in the same
//! run, on servers the playground starts.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sluice_playground::{MariaDbOptions, MariaDbServer};

use crate::common::{median, perf_start, perf_stop, proc_cpu_secs, SluiceProc};

const TABLES: &str = "CREATE TABLE t (id BIGINT PRIMARY KEY, a INT NOT NULL, b VARCHAR(64) NOT NULL, \
                      c DATETIME(6) NOT NULL, d DECIMAL(12,2) NOT NULL); \
                      CREATE TABLE marker (id INT PRIMARY KEY, at DATETIME(6) NOT NULL)";

const BACKLOG: &str = "DELIMITER //
CREATE PROCEDURE backlog(n_ins BIGINT, n_upd BIGINT, n_del BIGINT)
BEGIN
  DECLARE i BIGINT DEFAULT 0;
  WHILE i < n_ins DO
    INSERT INTO t SELECT i + seq, (i + seq) % 100000, MD5(i + seq), NOW(6), ((i + seq) % 100000) / 100
      FROM seq_1_to_1000 WHERE i + seq <= n_ins;
    COMMIT;
    SET i = i + 1000;
  END WHILE;
  SET i = 0;
  WHILE i < n_upd DO
    UPDATE t SET a = a + 1, c = NOW(6), d = d + 1 WHERE id > i AND id <= LEAST(i + 1000, n_upd);
    COMMIT;
    SET i = i + 1000;
  END WHILE;
  SET i = 0;
  WHILE i < n_del DO
    DELETE FROM t WHERE id > n_ins - n_del + i AND id <= LEAST(n_ins - n_del + i + 1000, n_ins);
    COMMIT;
    SET i = i + 1000;
  END WHILE;
END//
DELIMITER ;";

#[derive(clap::Args)]
pub struct DrainArgs {
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
    /// Extra lines for the sink section of the Sluice pipeline
    #[arg(long, default_value = "")]
    sink_extra: String,
    /// Sluice's target: `mariadb` (a database on the replica server) or `postgres` (a
    /// PostgreSQL server: the cross-engine drain)
    #[arg(long, default_value = "mariadb")]
    target: String,
}

fn server(id: u32) -> anyhow::Result<MariaDbServer> {
    MariaDbServer::start_with(MariaDbOptions {
        settings: vec![
            ("server-id".into(), id.to_string()),
            ("innodb-buffer-pool-size".into(), "512M".into()),
            ("innodb-log-file-size".into(), "512M".into()),
        ],
    })
    .map_err(|e| anyhow::anyhow!(e))
}

fn cli(s: &MariaDbServer, db: &str, sql: &str) -> anyhow::Result<String> {
    s.cli(db, sql).map_err(|e| anyhow::anyhow!(e))
}

/// Waits until `sql` prints `want` (trimmed), polling; returns the seconds since `from`.
fn until(s: &MariaDbServer, db: &str, sql: &str, want: &str, from: Instant, limit: Duration) -> anyhow::Result<f64> {
    loop {
        if cli(s, db, sql).map(|o| o.trim() == want).unwrap_or(false) {
            return Ok(from.elapsed().as_secs_f64());
        }
        if from.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for `{sql}` to print {want}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const DIGEST: &str = "SELECT COUNT(*), COALESCE(SUM(CRC32(CONCAT_WS('|', id, a, b, c, d))), 0) FROM t";

pub async fn drain(a: DrainArgs) -> anyhow::Result<()> {
    let changes = (a.inserts + a.updates + a.deletes) as f64;
    let (mut native, mut sluice, mut rss, mut cpu) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 0..a.runs {
        let src = server(1)?;
        let dst = server(2)?;
        src.create_database("app").map_err(|e| anyhow::anyhow!(e))?;
        dst.create_database("app").map_err(|e| anyhow::anyhow!(e))?;
        let target = dst.create_database("sluice_replica").map_err(|e| anyhow::anyhow!(e))?;
        cli(&src, "app", TABLES)?;
        cli(&dst, "app", TABLES)?;
        cli(&src, "app", BACKLOG)?;
        let status = cli(&src, "", "SHOW MASTER STATUS")?;
        let mut f = status.split('\t');
        let (file, pos) = (f.next().unwrap_or_default().to_string(), f.next().unwrap_or("4").trim().to_string());
        // Both consumers start at the same binlog position, before the backlog.
        cli(
            &dst,
            "",
            &format!(
                "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='root', MASTER_PASSWORD='', \
                 MASTER_LOG_FILE='{file}', MASTER_LOG_POS={pos}, MASTER_USE_GTID=no",
                src.port()
            ),
        )?;
        let dir = tempfile::tempdir()?;
        // The cross-engine variant writes to PostgreSQL instead.
        let pg = match a.target.as_str() {
            "postgres" => {
                let server = crate::common::bench_server()?;
                let url = server.create_database("replica").await.map_err(anyhow::Error::msg)?;
                let client = crate::common::connect(&url).await?;
                Some((server, url, client))
            }
            "mariadb" => None,
            other => bail!("--target {other}: expected mariadb or postgres"),
        };
        let (sink_type, sink_url) = match &pg {
            Some((_, url, _)) => ("postgres", url.clone()),
            None => ("mysql", target.clone()),
        };
        let toml = format!(
            "name = \"bench\"\n[source]\ntype = \"mysql\"\nurl = \"{}\"\ntables = [\"app.*\"]\nsnapshot = \"never\"\n\n\
             [[sink]]\ntype = \"{sink_type}\"\nurl = \"{sink_url}\"\n{}\n",
            src.url("app"),
            a.sink_extra
        );
        let p = SluiceProc::start(&dir, &toml)?;
        let started = Instant::now();
        loop {
            let done = match &pg {
                Some((_, _, c)) => c.query_opt("SELECT 1 FROM sluice.checkpoints", &[]).await.ok().flatten().is_some(),
                None => {
                    cli(&dst, "", "SELECT COUNT(*) FROM sluice.checkpoints").map(|o| o.trim() == "1").unwrap_or(false)
                }
            };
            if done {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("sluice wrote no checkpoint within 60s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        p.stop()?;

        let t0 = Instant::now();
        cli(&src, "app", &format!("CALL backlog({}, {}, {})", a.inserts, a.updates, a.deletes))?;
        cli(&src, "app", "INSERT INTO marker VALUES (1, NOW(6))")?;
        eprintln!("run {run}: backlog of {changes} changes written in {:.1}s", t0.elapsed().as_secs_f64());

        let t = Instant::now();
        cli(&dst, "", "START SLAVE")?;
        let n = until(&dst, "app", "SELECT COUNT(*) FROM marker", "1", t, Duration::from_secs(1800))?;
        cli(&dst, "", "STOP SLAVE")?;
        eprintln!("run {run}: native replication {n:.2}s ({:.0} changes/s)", changes / n);

        let dst_cpu = || dst.pid().map_or(0.0, |p| proc_cpu_secs(p as i32));
        let src_cpu = || src.pid().map_or(0.0, |p| proc_cpu_secs(p as i32));
        let (dst0, src0) = (dst_cpu(), src_cpu());
        let t = Instant::now();
        let mut p = SluiceProc::start(&dir, &toml)?;
        let perf = perf_start(&p)?;
        let s = loop {
            p.check_alive()?;
            let done = match &pg {
                Some((_, _, c)) => c.query_opt("SELECT 1 FROM app.marker", &[]).await.ok().flatten().is_some(),
                None => {
                    cli(&dst, "sluice_replica", "SELECT COUNT(*) FROM marker").map(|o| o.trim() == "1").unwrap_or(false)
                }
            };
            if done {
                break t.elapsed().as_secs_f64();
            }
            if t.elapsed() > Duration::from_secs(1800) {
                bail!("sluice did not drain within 30 minutes");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        perf_stop(perf)?;
        rss.push(p.peak_rss_mb());
        cpu.push(p.cpu_secs());
        p.stop()?;
        eprintln!(
            "run {run}: sluice {s:.2}s ({:.0} changes/s); cpu: sluice {:.1}s, target server {:.1}s, source server {:.1}s",
            changes / s,
            cpu.last().copied().unwrap_or(0.0),
            dst_cpu() - dst0,
            src_cpu() - src0
        );

        let want = cli(&src, "app", DIGEST)?;
        let mut replicas = vec![("app", "native replica")];
        if pg.is_none() {
            replicas.push(("sluice_replica", "sluice replica"));
        }
        for (db, who) in replicas {
            let got = cli(&dst, db, DIGEST)?;
            if got != want {
                bail!("{who} differs from the source: {got:?} vs {want:?}");
            }
        }
        if let Some((_, _, c)) = &pg {
            // Same digest in PostgreSQL: count, and a sum over the rows' text forms.
            let want_rows = cli(&src, "app", "SELECT COUNT(*), COALESCE(SUM(a), 0), COALESCE(SUM(d), 0) FROM t")?;
            let r = c
                .query_one(
                    "SELECT count(*)::text, coalesce(sum(a), 0)::text, coalesce(sum(d), 0)::text FROM app.t",
                    &[],
                )
                .await?;
            let got = format!("{}\t{}\t{}\n", r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, String>(2));
            if got != want_rows {
                bail!("the PostgreSQL replica differs from the source: {got:?} vs {want_rows:?}");
            }
        }
        native.push(n);
        sluice.push(s);
    }
    let (n, s) = (median(native), median(sluice));
    println!(
        "mysql_drain target={} changes={changes} native_s={n:.2} sluice_s={s:.2} native_changes_per_s={:.0} \
         sluice_changes_per_s={:.0} ratio_vs_native={:.2} sluice_peak_rss_mb={:.1} sluice_cpu_s={:.1}",
        a.target,
        changes / n,
        changes / s,
        n / s,
        median(rss),
        median(cpu),
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct SnapshotArgs {
    /// Rows in the table
    #[arg(long, default_value_t = 5_000_000)]
    rows: i64,
    /// Repetitions (fresh servers each); medians are reported
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Extra lines for the source section of the Sluice pipeline
    #[arg(long, default_value = "")]
    source_extra: String,
    /// Extra lines for the sink section of the Sluice pipeline
    #[arg(long, default_value = "")]
    sink_extra: String,
}

pub async fn snapshot(a: SnapshotArgs) -> anyhow::Result<()> {
    let (mut dump, mut sluice, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..a.runs {
        let src = server(1)?;
        let dst = server(2)?;
        src.create_database("app").map_err(|e| anyhow::anyhow!(e))?;
        dst.create_database("app").map_err(|e| anyhow::anyhow!(e))?;
        let target = dst.create_database("sluice_replica").map_err(|e| anyhow::anyhow!(e))?;
        cli(&src, "app", TABLES)?;
        let t0 = Instant::now();
        let mut i = 0;
        while i < a.rows {
            let n = (a.rows - i).min(1_000_000);
            cli(
                &src,
                "app",
                &format!(
                    "INSERT INTO t SELECT {i} + seq, ({i} + seq) % 100000, MD5({i} + seq), NOW(6), (({i} + seq) % 100000) / 100 \
                     FROM seq_1_to_{n}"
                ),
            )?;
            i += n;
        }
        eprintln!("run {run}: {} rows loaded in {:.1}s", a.rows, t0.elapsed().as_secs_f64());

        // Baseline: mariadb-dump piped into the mariadb client, the usual way to copy a database.
        let t = Instant::now();
        let mut dumper = Command::new("mariadb-dump")
            .args(["--no-defaults", "--user=root", "--single-transaction", "--quick", "app", "t"])
            .arg(format!("--socket={}", src.socket().display()))
            .stdout(Stdio::piped())
            .spawn()
            .context("run mariadb-dump")?;
        let loader = Command::new("mariadb")
            .args(["--no-defaults", "--user=root", "app"])
            .arg(format!("--socket={}", dst.socket().display()))
            .stdin(dumper.stdout.take().context("dump output")?)
            .status()
            .context("run mariadb")?;
        let dumped = dumper.wait()?;
        if !loader.success() || !dumped.success() {
            bail!("mariadb-dump | mariadb failed ({dumped}, {loader})");
        }
        let d = t.elapsed().as_secs_f64();
        eprintln!("run {run}: mariadb-dump | mariadb {d:.2}s ({:.0} rows/s)", a.rows as f64 / d);

        let dir = tempfile::tempdir()?;
        let toml = format!(
            "name = \"bench\"\n[source]\ntype = \"mysql\"\nurl = \"{}\"\ntables = [\"app.t\"]\n{}\n\n\
             [[sink]]\ntype = \"mysql\"\nurl = \"{target}\"\n{}\n",
            src.url("app"),
            a.source_extra,
            a.sink_extra
        );
        let dst_cpu = || dst.pid().map_or(0.0, |p| proc_cpu_secs(p as i32));
        let src_cpu = || src.pid().map_or(0.0, |p| proc_cpu_secs(p as i32));
        let (dst0, src0) = (dst_cpu(), src_cpu());
        let t = Instant::now();
        let mut p = SluiceProc::start(&dir, &toml)?;
        let perf = perf_start(&p)?;
        let copied = "SELECT COUNT(*) FROM sluice.checkpoints WHERE state LIKE '%\"copied\"%'";
        let s = loop {
            p.check_alive()?;
            if cli(&dst, "", copied).map(|o| o.trim() == "1").unwrap_or(false) {
                break t.elapsed().as_secs_f64();
            }
            if t.elapsed() > Duration::from_secs(1800) {
                bail!("sluice did not copy within 30 minutes");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        perf_stop(perf)?;
        rss.push(p.peak_rss_mb());
        let cpu = p.cpu_secs();
        p.stop()?;
        eprintln!(
            "run {run}: sluice {s:.2}s ({:.0} rows/s); cpu: sluice {cpu:.1}s, target server {:.1}s, source server {:.1}s",
            a.rows as f64 / s,
            dst_cpu() - dst0,
            src_cpu() - src0
        );
        let want = cli(&src, "app", DIGEST)?;
        for (db, who) in [("app", "dump copy"), ("sluice_replica", "sluice copy")] {
            let got = cli(&dst, db, DIGEST)?;
            if got != want {
                bail!("{who} differs from the source: {got:?} vs {want:?}");
            }
        }
        dump.push(d);
        sluice.push(s);
    }
    let (d, s) = (median(dump), median(sluice));
    println!(
        "mysql_snapshot rows={} dump_s={d:.2} sluice_s={s:.2} dump_rows_per_s={:.0} sluice_rows_per_s={:.0} \
         ratio_vs_dump={:.2} sluice_peak_rss_mb={:.1}",
        a.rows,
        a.rows as f64 / d,
        a.rows as f64 / s,
        d / s,
        median(rss)
    );
    Ok(())
}
