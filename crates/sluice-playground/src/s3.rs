//! An S3-compatible server for tests: moto's server (PyPI `moto[s3]`, installed by
//! scripts/setup.sh), in memory, on a free loopback port, stopped on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::kafka::{stop_group, tail, wait_ready};
use crate::server::free_port;

/// The access key and secret the server takes (moto checks no signatures; any pair works).
pub const S3_ACCESS_KEY: &str = "sluice-test";
/// See [`S3_ACCESS_KEY`].
pub const S3_SECRET_KEY: &str = "sluice-test-secret";

/// A running S3 server owned by this process.
pub struct S3Server {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

/// moto's launcher, from Python's scripts directory.
fn moto_server() -> Result<PathBuf, String> {
    let missing =
        "moto_server not found. Run `scripts/setup.sh`, or `python3 -m pip install 'moto[s3]' flask flask-cors boto3`.";
    let out = Command::new("python3")
        .args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"])
        .output()
        .map_err(|e| format!("cannot run python3 to find moto_server: {e}"))?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("moto_server");
    if out.status.success() && path.exists() {
        Ok(path)
    } else {
        Err(missing.into())
    }
}

impl S3Server {
    /// Starts the server.
    pub fn start() -> Result<S3Server, String> {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::Builder::new().prefix("sluice-s3-").tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let log = dir.path().join("s3.log");
        let bin = moto_server()?;
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let out = std::fs::File::create(&log).map_err(|e| format!("s3 log: {e}"))?;
            let err = out.try_clone().map_err(|e| format!("s3 log: {e}"))?;
            let mut child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .process_group(0)
                .spawn()
                .map_err(|e| format!("cannot start moto_server: {e}"))?;
            match wait_ready(&mut child, port) {
                Ok(()) => return Ok(S3Server { port, child: Some(child), dir }),
                Err(e) => {
                    last = format!("moto_server: {e}:\n{}", tail(&log, 20));
                    stop_group(child);
                }
            }
        }
        Err(last)
    }

    /// `http://127.0.0.1:PORT`, for `endpoint` and `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (an unsigned `PUT /bucket`, which moto takes).
    pub fn create_bucket(&self, bucket: &str) -> Result<(), String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| format!("connect to S3: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        write!(
            s,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .map_err(|e| format!("create bucket {bucket}: {e}"))?;
        let mut reply = String::new();
        s.read_to_string(&mut reply).map_err(|e| format!("create bucket {bucket}: {e}"))?;
        let status = reply.lines().next().unwrap_or_default();
        if status.contains(" 200") {
            Ok(())
        } else {
            Err(format!("create bucket {bucket}: {status}"))
        }
    }

    /// The last `lines` lines of the server's output.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.dir.path().join("s3.log"), lines)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_group(child);
        }
    }
}
