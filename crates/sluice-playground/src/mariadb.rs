//! A local MariaDB server for the MySQL-family connectors, started like [`crate::PgServer`]:
//! `mariadb-install-db` into a fresh temporary directory, then `mariadbd --no-defaults` on a
//! free 127.0.0.1 port with the row binlog the source needs (`log_bin`, `binlog_format=ROW`,
//! `binlog_row_image=FULL`, `binlog_row_metadata=FULL`). As root, the server runs as the `mysql`
//! system user. Dropping the handle stops the server and deletes its directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::free_port;

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running MariaDB server owned by the current process.
pub struct MariaDbServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

/// Server settings that differ between uses.
#[derive(Debug, Clone, Default)]
pub struct MariaDbOptions {
    /// Extra `--name=value` options, after the defaults (a later one wins), e.g.
    /// `("binlog_format", "STATEMENT")` or `("gtid_strict_mode", "ON")`.
    pub settings: Vec<(String, String)>,
}

fn find(name: &str, dirs: &[&str]) -> Option<PathBuf> {
    dirs.iter().map(|d| Path::new(d).join(name)).find(|p| p.exists()).or_else(|| {
        let out = Command::new("sh").args(["-c", &format!("command -v {name}")]).output().ok()?;
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        p.exists().then_some(p)
    })
}

fn missing(what: &str) -> String {
    format!("{what} not found. Run `scripts/setup.sh`, or `apt-get install -y mariadb-server mariadb-client`.")
}

/// The `mysql` system user's uid and gid, when we are root (mariadbd will not run as root
/// without being told to).
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 3 && f[0] == "mysql").then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?))).flatten()
    })
}

impl MariaDbServer {
    /// Starts a server with the default settings.
    pub fn start() -> Result<MariaDbServer, String> {
        Self::start_with(MariaDbOptions::default())
    }

    /// Starts a server with `opts`.
    pub fn start_with(opts: MariaDbOptions) -> Result<MariaDbServer, String> {
        let mariadbd = find("mariadbd", &["/usr/sbin", "/usr/bin"]).ok_or_else(|| missing("mariadbd"))?;
        let install =
            find("mariadb-install-db", &["/usr/bin", "/usr/scripts"]).ok_or_else(|| missing("mariadb-install-db"))?;
        let dir = tempfile::Builder::new().prefix("sluice-mariadb-").tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let data = dir.path().join("data");
        fs::create_dir(&data).map_err(|e| format!("create {}: {e}", data.display()))?;
        let user = server_user();
        let _ = fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755));
        if let Some((uid, gid)) = user {
            for p in [dir.path(), data.as_path()] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).map_err(|e| format!("chown {}: {e}", p.display()))?;
            }
        }
        let mut cmd = Command::new(&install);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            // Its own temporary directory: bootstraps running side by side in /tmp have been
            // seen to lose each other's temporary tables.
            .arg(format!("--tmpdir={}", dir.path().display()))
            .stdin(Stdio::null());
        if user.is_some() {
            cmd.arg("--user=mysql");
        }
        let out = cmd.output().map_err(|e| format!("cannot run {}: {e}", install.display()))?;
        if !out.status.success() {
            return Err(format!(
                "mariadb-install-db failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            match launch(&mariadbd, dir.path(), &data, port, user.is_some(), &opts) {
                Ok(child) => return Ok(MariaDbServer { dir, port, child: Some(child) }),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    /// A connection URL for database `db` as `root` (no password).
    pub fn url(&self, db: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs `sql` with the `mariadb` command-line client (batch mode, tab-separated, no column
    /// names) in database `db` (empty: none) and returns what it printed.
    pub fn cli(&self, db: &str, sql: &str) -> Result<String, String> {
        let client = find("mariadb", &["/usr/bin"]).ok_or_else(|| missing("the mariadb client"))?;
        let mut cmd = Command::new(client);
        cmd.args(["--no-defaults", "--batch", "--skip-column-names", "--user=root", "--default-character-set=utf8mb4"])
            .arg(format!("--socket={}", self.socket().display()));
        if !db.is_empty() {
            cmd.arg(format!("--database={db}"));
        }
        let out = cmd.arg("-e").arg(sql).output().map_err(|e| format!("cannot run mariadb: {e}"))?;
        if !out.status.success() {
            return Err(format!("mariadb -e {sql:?}: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates database `name` (utf8mb4) if missing and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        let quoted = format!("`{}`", name.replace('`', "``"));
        self.cli("", &format!("CREATE DATABASE IF NOT EXISTS {quoted} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))?;
        Ok(self.url(name))
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops the server (SIGTERM is its normal shutdown), falling back to a kill.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
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

impl Drop for MariaDbServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn launch(
    mariadbd: &Path,
    dir: &Path,
    data: &Path,
    port: u16,
    as_mysql: bool,
    opts: &MariaDbOptions,
) -> Result<Child, String> {
    let log_path = dir.join("server.log");
    let log = fs::File::create(&log_path).map_err(|e| format!("create log: {e}"))?;
    let mut settings: Vec<(String, String)> = [
        ("datadir", data.display().to_string()),
        ("port", port.to_string()),
        ("bind-address", "127.0.0.1".into()),
        ("socket", dir.join("mysqld.sock").display().to_string()),
        ("pid-file", dir.join("mysqld.pid").display().to_string()),
        ("tmpdir", dir.display().to_string()),
        ("log-bin", "mysql-bin".into()),
        ("binlog-format", "ROW".into()),
        ("binlog-row-image", "FULL".into()),
        ("binlog-row-metadata", "FULL".into()),
        ("server-id", "1".into()),
        ("character-set-server", "utf8mb4".into()),
        ("collation-server", "utf8mb4_general_ci".into()),
        ("skip-name-resolve", "ON".into()),
        ("innodb-buffer-pool-size", "128M".into()),
        ("innodb-flush-log-at-trx-commit", "2".into()),
        ("sync-binlog", "0".into()),
        ("max-connections", "200".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    settings.extend(opts.settings.iter().cloned());
    let mut cmd = Command::new(mariadbd);
    cmd.arg("--no-defaults");
    for (k, v) in &settings {
        cmd.arg(format!("--{}={v}", k.replace('_', "-")));
    }
    if as_mysql {
        cmd.arg("--user=mysql");
    }
    cmd.stdin(Stdio::null()).stdout(log.try_clone().map_err(|e| e.to_string())?).stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start mariadbd: {e}"))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let log = fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("ready for connections") {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("mariadbd exited with {status} on port {port}:\n{log}"));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!("mariadbd not ready after {START_TIMEOUT:?}:\n{log}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
