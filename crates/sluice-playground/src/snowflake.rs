//! A Snowflake stand-in for tests: fakesnow's server (Snowflake's client REST protocol over
//! DuckDB; installed by scripts/setup.sh into `.deps/fakesnow`), wrapped by
//! `python/fakesnow_server.py` to answer what a sink needs and fakesnow lacks (session ids,
//! named transactions, `SHOW TRANSACTIONS`, `SYSTEM$ABORT_TRANSACTION`/`SESSION`). In memory, on
//! a free loopback port the server binds itself, stopped on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use crate::kafka::{stop_group, tail};

/// How long the server may take to start (Python imports DuckDB and fakesnow first).
const START_TIMEOUT: Duration = Duration::from_secs(60);

const WRAPPER: &str = include_str!("../python/fakesnow_server.py");

/// A running fakesnow server owned by this process.
pub struct SnowflakeServer {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

/// The Python of `.deps/fakesnow` (or `SLUICE_FAKESNOW_PYTHON`).
pub fn fakesnow_python() -> Result<PathBuf, String> {
    let path = std::env::var_os("SLUICE_FAKESNOW_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../.deps/fakesnow/bin/python")));
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: run scripts/setup.sh (it installs fakesnow 0.12.1 and snowflake-connector-python into .deps/fakesnow)",
            path.display()
        ))
    }
}

impl SnowflakeServer {
    /// Starts the server.
    pub fn start() -> Result<SnowflakeServer, String> {
        use std::os::unix::process::CommandExt;
        let dir =
            tempfile::Builder::new().prefix("sluice-fakesnow-").tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let script = dir.path().join("fakesnow_server.py");
        std::fs::write(&script, WRAPPER).map_err(|e| format!("write {}: {e}", script.display()))?;
        let log = dir.path().join("fakesnow.log");
        let python = fakesnow_python()?;
        let out = std::fs::File::create(&log).map_err(|e| format!("fakesnow log: {e}"))?;
        let err = out.try_clone().map_err(|e| format!("fakesnow log: {e}"))?;
        let port_file = dir.path().join("port");
        // fakesnow keeps its stage files under TMPDIR: in the server's own directory, they go
        // when it does.
        let mut child = Command::new(&python)
            .arg(&script)
            .arg(&port_file)
            .env("TMPDIR", dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start fakesnow: {e}"))?;
        // The server binds a free port itself and names it: no other process can be on it.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(port) = std::fs::read_to_string(&port_file).ok().and_then(|p| p.trim().parse().ok()) {
                return Ok(SnowflakeServer { port, child: Some(child), dir });
            }
            let failed = match child.try_wait() {
                Ok(Some(status)) => Some(format!("exited at start ({status})")),
                _ if Instant::now() > deadline => Some(format!("named no port within {START_TIMEOUT:?}")),
                _ => None,
            };
            if let Some(why) = failed {
                let why = format!("fakesnow: {why}:\n{}", tail(&log, 20));
                stop_group(child);
                return Err(why);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `http://127.0.0.1:PORT`, for the sink's `url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The last `lines` lines of the server's output.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.dir.path().join("fakesnow.log"), lines)
    }
}

impl Drop for SnowflakeServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_group(child);
        }
    }
}
