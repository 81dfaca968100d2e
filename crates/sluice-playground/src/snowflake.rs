//! A Snowflake stand-in for tests: fakesnow's server (Snowflake's client REST protocol over
//! DuckDB; installed by scripts/setup.sh into `.deps/fakesnow`), wrapped by
//! `python/fakesnow_server.py` to answer what a sink needs and fakesnow lacks (session ids,
//! named transactions, `SHOW TRANSACTIONS`, `SYSTEM$ABORT_TRANSACTION`/`SESSION`). In memory, on
//! a free loopback port, stopped on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::kafka::{stop_group, tail, wait_ready};
use crate::server::free_port;

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
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let out = std::fs::File::create(&log).map_err(|e| format!("fakesnow log: {e}"))?;
            let err = out.try_clone().map_err(|e| format!("fakesnow log: {e}"))?;
            // fakesnow keeps its stage files under TMPDIR: in the server's own directory, they go
            // when it does.
            let mut child = Command::new(&python)
                .arg(&script)
                .arg(port.to_string())
                .env("TMPDIR", dir.path())
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .process_group(0)
                .spawn()
                .map_err(|e| format!("cannot start fakesnow: {e}"))?;
            match wait_ready(&mut child, port) {
                Ok(()) => return Ok(SnowflakeServer { port, child: Some(child), dir }),
                Err(e) => {
                    last = format!("fakesnow: {e}:\n{}", tail(&log, 20));
                    stop_group(child);
                }
            }
        }
        Err(last)
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
