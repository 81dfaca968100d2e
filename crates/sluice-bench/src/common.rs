//! Servers, the sluice child process and measurements shared by the benchmarks.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sluice_playground::{PgOptions, PgServer};
use tokio_postgres::Client;

/// Server settings for benchmarks: the same for Sluice and for every baseline.
pub fn bench_server() -> anyhow::Result<PgServer> {
    bench_server_with("256MB")
}

/// [`bench_server`] with another `logical_decoding_work_mem`.
pub fn bench_server_with(decoding_mem: &str) -> anyhow::Result<PgServer> {
    let mut settings = vec![
        ("shared_buffers", "512MB"),
        ("max_wal_size", "16GB"),
        ("checkpoint_timeout", "1h"),
        ("wal_buffers", "64MB"),
        ("max_worker_processes", "16"),
        ("max_logical_replication_workers", "8"),
        ("logical_decoding_work_mem", decoding_mem),
    ];
    // BENCH_STATEMENTS=1 loads pg_stat_statements, for `top_statements` (profiling only: it
    // costs the servers a little).
    if std::env::var("BENCH_STATEMENTS").is_ok() {
        settings.push(("shared_preload_libraries", "pg_stat_statements"));
    }
    PgServer::start_with(PgOptions {
        wal_level: "logical".into(),
        settings: settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    })
    .map_err(anyhow::Error::msg)
}

/// A source server with database `bench` and a target server with database `replica`.
pub struct Pair {
    /// Held so the servers live as long as the pair; dropping stops them.
    _source: PgServer,
    _target: PgServer,
    pub src_url: String,
    pub replica_url: String,
    pub src: Client,
    pub replica: Client,
}

impl Pair {
    pub async fn start() -> anyhow::Result<Pair> {
        Self::start_with("256MB").await
    }

    /// [`Pair::start`] with the source's `logical_decoding_work_mem`.
    pub async fn start_with(decoding_mem: &str) -> anyhow::Result<Pair> {
        let source = bench_server_with(decoding_mem)?;
        let target = bench_server()?;
        let src_url = source.create_database("bench").await.map_err(anyhow::Error::msg)?;
        let replica_url = target.create_database("replica").await.map_err(anyhow::Error::msg)?;
        let src = connect(&src_url).await?;
        let replica = connect(&replica_url).await?;
        Ok(Pair { _source: source, _target: target, src_url, replica_url, src, replica })
    }

    /// The target server (for more databases on it).
    pub fn target(&self) -> &PgServer {
        &self._target
    }

    /// The source server's port.
    pub fn source_port(&self) -> u16 {
        self._source.port()
    }

    /// Pipeline TOML from `bench` to `replica` for the given tables.
    pub fn pipeline(&self, name: &str, tables: &str, sink_extra: &str) -> String {
        format!(
            "name = \"{name}\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\ntables = [{tables}]\n\n\
             [[sink]]\ntype = \"postgres\"\nurl = \"{}\"\n{sink_extra}\n",
            self.src_url, self.replica_url
        )
    }
}

pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let (c, conn) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.with_context(|| format!("connect {url}"))?;
    tokio::spawn(conn);
    Ok(c)
}

/// The release `sluice` binary next to this one, or BENCH_SLUICE_BIN (to compare builds).
pub fn sluice_bin() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("BENCH_SLUICE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let me = std::env::current_exe()?;
    let bin = me.with_file_name("sluice");
    if !bin.exists() {
        bail!("{} not found; run the bench/ scripts, which build it", bin.display());
    }
    Ok(bin)
}

/// A running `sluice run` child.
pub struct SluiceProc {
    pub child: Child,
    pub log: PathBuf,
}

impl SluiceProc {
    pub fn start(dir: &tempfile::TempDir, toml: &str) -> anyhow::Result<SluiceProc> {
        let level = std::env::var("BENCH_SLUICE_LOG").unwrap_or_else(|_| "warn".into());
        SluiceProc::start_named(dir, "pipeline", toml, &level)
    }

    /// Starts `sluice run` on `toml`, written to `DIR/NAME.toml`, logging at `level` to
    /// `DIR/NAME.log` (several pipelines can share one directory).
    pub fn start_named(dir: &tempfile::TempDir, name: &str, toml: &str, level: &str) -> anyhow::Result<SluiceProc> {
        let config = dir.path().join(format!("{name}.toml"));
        std::fs::write(&config, toml)?;
        let log = dir.path().join(if name == "pipeline" { "sluice.log".to_string() } else { format!("{name}.log") });
        // BENCH_SLUICE_WRAP runs sluice under a profiler, e.g. "valgrind --tool=callgrind".
        let wrap = std::env::var("BENCH_SLUICE_WRAP").unwrap_or_default();
        let mut words = wrap.split_whitespace();
        let mut cmd = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(sluice_bin()?);
                c
            }
            None => Command::new(sluice_bin()?),
        };
        let child = cmd
            .arg("run")
            .arg(&config)
            .env("RUST_LOG", level)
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(&log)?))
            .spawn()
            .context("start sluice")?;
        Ok(SluiceProc { child, log })
    }

    /// Peak resident memory so far, in MB (VmHWM).
    pub fn peak_rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// CPU seconds (user + system) used so far.
    pub fn cpu_secs(&self) -> f64 {
        proc_cpu_secs(self.child.id() as i32)
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("sluice exited with {status}:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("sluice did not stop within 120s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("sluice exited early with {status}:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
        Ok(())
    }
}

impl Drop for SluiceProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True once every table in `tables` (schema public) is durably copied into the replica: its
/// primary key is added in the transaction that records the copy, in every release, so builds
/// can be compared.
pub fn copied(tables: &[&str]) -> String {
    let list = tables.iter().map(|t| format!("to_regclass('public.{t}')")).collect::<Vec<_>>().join(", ");
    format!(
        "SELECT EXISTS (SELECT 1 FROM sluice.checkpoints) AND (SELECT count(*) FROM pg_index \
         WHERE indrelid IN ({list}) AND indisprimary) = {}",
        tables.len()
    )
}

/// Polls `q` (one row, one bool column) every 20 ms until true; returns the elapsed time.
pub async fn until_true(
    client: &Client,
    q: &str,
    timeout: Duration,
    mut alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if let Ok(row) = client.query_one(q, &[]).await {
            if row.get::<_, Option<bool>>(0) == Some(true) {
                return Ok(started.elapsed());
            }
        }
        alive()?;
        if started.elapsed() > timeout {
            bail!("condition not met within {timeout:?}: {q}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Content digest of a table ordered by `id`.
pub async fn digest(client: &Client, table: &str) -> anyhow::Result<String> {
    Ok(client
        .query_one(&format!("SELECT coalesce(md5(string_agg(r::text, '|' ORDER BY id)), '') FROM {table} r"), &[])
        .await
        .with_context(|| format!("digest {table}"))?
        .get(0))
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    v[v.len() / 2]
}

/// Runs `sql`, with the server's message (not just "db error") on failure.
pub async fn exec(client: &Client, sql: &str) -> anyhow::Result<()> {
    client.batch_execute(sql).await.map_err(|e| {
        let msg = e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_string());
        anyhow::anyhow!("{msg}\n  in: {}", sql.chars().take(200).collect::<String>())
    })
}

/// CPU seconds (user + system) a process has used, 0 when it is gone.
pub fn proc_cpu_secs(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    match (f.get(11).and_then(|x| x.parse::<f64>().ok()), f.get(12).and_then(|x| x.parse::<f64>().ok())) {
        (Some(u), Some(s)) if hz > 0.0 => (u + s) / hz,
        _ => 0.0,
    }
}

/// With BENCH_STATEMENTS set: prints the statements that took the most time in `client`'s
/// database, then resets the counters.
pub async fn top_statements(client: &Client, label: &str) {
    if std::env::var("BENCH_STATEMENTS").is_err() {
        return;
    }
    let _ = client.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").await;
    let rows = client
        .query(
            "SELECT round(total_exec_time)::bigint, calls, rows, left(regexp_replace(query, '\\s+', ' ', 'g'), 140) \
             FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             ORDER BY total_exec_time DESC LIMIT 12",
            &[],
        )
        .await;
    match rows {
        Ok(rows) => {
            eprintln!("{label}: top statements (ms, calls, rows, query)");
            for r in rows {
                eprintln!(
                    "  {:>8} {:>8} {:>9}  {}",
                    r.get::<_, i64>(0),
                    r.get::<_, i64>(1),
                    r.get::<_, i64>(2),
                    r.get::<_, String>(3)
                );
            }
        }
        Err(e) => eprintln!("{label}: pg_stat_statements unavailable: {e}"),
    }
    let _ = client.batch_execute("SELECT pg_stat_statements_reset()").await;
}

/// CPU seconds of the server processes `query` names by pid.
pub async fn backend_cpu_secs(client: &Client, query: &str) -> f64 {
    match client.query(query, &[]).await {
        Ok(rows) => rows.iter().filter_map(|r| r.get::<_, Option<i32>>(0)).map(proc_cpu_secs).sum(),
        Err(_) => 0.0,
    }
}

/// With BENCH_SLUICE_LOG set (a log level), prints the lines of sluice's log at `path` that
/// contain any of `words`, to show when each step happened.
pub fn print_log(path: &std::path::Path, words: &[&str]) {
    if std::env::var("BENCH_SLUICE_LOG").is_err() {
        return;
    }
    let log = std::fs::read_to_string(path).unwrap_or_default();
    for l in log.lines().filter(|l| words.iter().any(|w| l.contains(w))) {
        eprintln!("  sluice log: {l}");
    }
}

/// BENCH_PERF=FILE records a CPU profile of sluice while it works (perf record -p).
pub fn perf_start(p: &SluiceProc) -> anyhow::Result<Option<std::process::Child>> {
    let Ok(out) = std::env::var("BENCH_PERF") else { return Ok(None) };
    let child = Command::new("perf")
        .args(["record", "-F", "999", "-g", "-o", &out, "-p", &p.child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start perf")?;
    Ok(Some(child))
}

pub fn perf_stop(perf: Option<std::process::Child>) -> anyhow::Result<()> {
    if let Some(mut perf) = perf {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(perf.id() as i32, libc::SIGINT) };
        perf.wait()?;
    }
    Ok(())
}

/// A `pgcopydb` command (Debian's, installed by bench/peers.sh) whose files all land in `dir`:
/// pgcopydb 0.10 writes under `/tmp/pgcopydb` and the home directory whatever `--dir` says, so
/// HOME, TMPDIR and XDG_* point into `dir` too; the PostgreSQL binaries it calls (`pg_dump`,
/// `pg_restore`) come first on PATH.
pub fn pgcopydb(dir: &std::path::Path) -> anyhow::Result<std::process::Command> {
    let bindir = sluice_playground::pg_bindir().map_err(anyhow::Error::msg)?;
    let path = format!("{}:{}", bindir.display(), std::env::var("PATH").unwrap_or_default());
    let mut c = std::process::Command::new("pgcopydb");
    c.env("PATH", path)
        .env("HOME", dir)
        .env("TMPDIR", dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_RUNTIME_DIR", dir.join("run"));
    Ok(c)
}

/// Runs `cmd`, failing with its output when it fails.
pub fn run_ok(cmd: &mut std::process::Command, what: &str) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("run {what}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
