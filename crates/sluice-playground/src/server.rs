//! Local database servers, started from the binaries installed on this machine.
//!
//! [`PgServer::start`] runs `initdb` and `postgres` from the local PostgreSQL installation in a
//! fresh temporary directory, listening on a free 127.0.0.1 port with `wal_level=logical`.
//! PostgreSQL refuses to run as root, so when we are root the server runs as the unprivileged
//! `postgres` system user (or `nobody`). Dropping the handle stops the server and deletes its
//! directory, also when a test panics. Errors say what is missing and how to install it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running PostgreSQL server owned by the current process.
pub struct PgServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
    /// pg_hba.conf was replaced, so the test's own connections go over the Unix socket.
    over_socket: bool,
}

/// Server settings that differ between tests.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `wal_level`: `logical` for sources, `replica` to test preflight checks.
    pub wal_level: String,
    /// Extra `-c name=value` settings.
    pub settings: Vec<(String, String)>,
    /// Files written into the data directory before start (name, contents), readable only by
    /// the server: certificates and keys for `ssl_cert_file` and friends.
    pub data_files: Vec<(String, Vec<u8>)>,
    /// A replacement pg_hba.conf. The server then also trusts its Unix socket, which
    /// [`PgServer::connect`] uses.
    pub hba: Option<String>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions { wal_level: "logical".into(), settings: Vec::new(), data_files: Vec::new(), hba: None }
    }
}

/// Directory holding `postgres`, `initdb` and `pg_ctl`: the newest under /usr/lib/postgresql,
/// else `pg_config --bindir`, else wherever `postgres` is on PATH.
pub fn pg_bindir() -> Result<PathBuf, String> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("postgres").exists() {
            return Ok(dir);
        }
    }
    if let Ok(out) = Command::new("sh").args(["-c", "command -v postgres"]).output() {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if let Some(dir) = p.parent().filter(|d| d.join("initdb").exists()) {
            return Ok(dir.to_path_buf());
        }
    }
    Err("PostgreSQL server binaries (postgres, initdb) not found. Run `scripts/setup.sh`, or \
         `apt-get install -y postgresql`."
        .into())
}

/// uid and gid of the user to run the server as, when we are root.
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    for wanted in ["postgres", "nobody"] {
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() > 3 && f[0] == wanted {
                if let (Ok(uid), Ok(gid)) = (f[2].parse(), f[3].parse()) {
                    return Some((uid, gid));
                }
            }
        }
    }
    Some((65534, 65534))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

impl PgServer {
    /// Starts a server with `wal_level=logical`.
    pub fn start() -> Result<PgServer, String> {
        Self::start_with(PgOptions::default())
    }

    /// Starts a server with the given options.
    pub fn start_with(opts: PgOptions) -> Result<PgServer, String> {
        let bindir = pg_bindir()?;
        let user = server_user();
        let dir = tempfile::Builder::new()
            .prefix("sluice-pg-")
            .tempdir()
            .map_err(|e| format!("cannot create temp dir: {e}"))?;
        let data = dir.path().join("data");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", dir.path().display()))?;
        }
        let _ = fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755));
        let mut initdb = Command::new(bindir.join("initdb"));
        initdb
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"])
            .current_dir(dir.path());
        as_user(&mut initdb, user);
        let out = initdb.output().map_err(|e| format!("cannot run initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let mut files = opts.data_files.clone();
        if let Some(hba) = &opts.hba {
            files.push(("pg_hba.conf".into(), format!("local all all trust\n{hba}\n").into_bytes()));
        }
        for (name, contents) in files {
            let path = data.join(&name);
            fs::write(&path, contents).map_err(|e| format!("write {}: {e}", path.display()))?;
            let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o600));
            if let Some((uid, gid)) = user {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(|e| format!("chown {}: {e}", path.display()))?;
            }
        }
        let over_socket = opts.hba.is_some();
        let mut last_err = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            match Self::launch(&bindir, dir.path(), &data, port, user, &opts) {
                Ok(child) => return Ok(PgServer { dir, port, child: Some(child), over_socket }),
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    fn launch(
        bindir: &Path,
        dir: &Path,
        data: &Path,
        port: u16,
        user: Option<(u32, u32)>,
        opts: &PgOptions,
    ) -> Result<Child, String> {
        let log_path = dir.join("server.log");
        let log = fs::File::create(&log_path).map_err(|e| format!("create log: {e}"))?;
        if let Some((uid, gid)) = user {
            let _ = std::os::unix::fs::chown(&log_path, Some(uid), Some(gid));
        }
        let mut cmd = Command::new(bindir.join("postgres"));
        cmd.arg("-D").arg(data).args(["-p", &port.to_string(), "-k"]).arg(dir);
        let mut settings: Vec<(String, String)> = vec![
            ("listen_addresses".into(), "127.0.0.1".into()),
            ("wal_level".into(), opts.wal_level.clone()),
            ("max_wal_senders".into(), "10".into()),
            ("max_replication_slots".into(), "10".into()),
            ("fsync".into(), "off".into()),
            ("full_page_writes".into(), "off".into()),
            ("shared_buffers".into(), "128MB".into()),
            ("max_connections".into(), "100".into()),
            ("wal_sender_timeout".into(), "30s".into()),
        ];
        settings.extend(opts.settings.iter().cloned());
        for (k, v) in settings {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        cmd.stdin(Stdio::null()).stdout(log.try_clone().map_err(|e| e.to_string())?).stderr(log).current_dir(dir);
        as_user(&mut cmd, user);
        // Own process group, so a Ctrl-C aimed at the playground reaches us, not the server.
        cmd.process_group(0);
        let mut child = cmd.spawn().map_err(|e| format!("cannot start postgres: {e}"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            if log.contains("ready to accept connections") {
                return Ok(child);
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("postgres exited with {status} on port {port}:\n{}", tail(&log, 30)));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!("postgres not ready after {START_TIMEOUT:?}:\n{}", tail(&log, 30)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for database `db` as the superuser `postgres`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The last `lines` lines of the server log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default(), lines)
    }

    /// A connection string for database `db` as `postgres` over the server's Unix socket.
    pub fn socket_url(&self, db: &str) -> String {
        format!("host={} port={} user=postgres dbname={db}", self.dir.path().display(), self.port)
    }

    /// Connects to `db` (over TCP, or over the Unix socket when pg_hba.conf was replaced),
    /// driving the connection on the current tokio runtime.
    pub async fn connect(&self, db: &str) -> Result<tokio_postgres::Client, String> {
        let url = if self.over_socket { self.socket_url(db) } else { self.url(db) };
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("connect to {}: {e}\nserver log:\n{}", self.url(db), self.log_tail(20)))?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// Creates database `name` (if missing) and returns its URL.
    pub async fn create_database(&self, name: &str) -> Result<String, String> {
        let c = self.connect("postgres").await?;
        let exists = c
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await
            .map_err(|e| format!("look up database {name}: {e}"))?
            .is_some();
        if !exists {
            c.batch_execute(&format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\"")))
                .await
                .map_err(|e| format!("create database {name}: {e}"))?;
        }
        Ok(self.url(name))
    }

    /// Stops the server now (fast shutdown, falling back to a kill).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as libc::pid_t;
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(pid, libc::SIGQUIT) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid).env("HOME", "/tmp");
    }
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
