//! The real `sluice` binary as a child process: started with a crash point armed, stopped by
//! SIGTERM, its log read back.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sluice_testkit::wait_for;

pub struct Sluice {
    pub child: Child,
}

pub fn spawn(config: &str, log: &std::path::Path) -> Sluice {
    spawn_with(config, log, None)
}

/// Runs `sluice run`, with the crash point `crash_at` (`name:hit`) armed if given.
pub fn spawn_with(config: &str, log: &std::path::Path, crash_at: Option<&str>) -> Sluice {
    let f = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(["run", config]).env("RUST_LOG", "info,tokio_postgres=warn").stdout(Stdio::null()).stderr(Stdio::from(f));
    match crash_at {
        Some(point) => cmd.env(sluice_core::failpoint::CRASH_AT_ENV, point),
        None => cmd.env_remove(sluice_core::failpoint::CRASH_AT_ENV),
    };
    Sluice { child: cmd.spawn().expect("spawn sluice") }
}

impl Sluice {
    /// Sends SIGTERM and waits for a clean exit.
    pub async fn stop(mut self, log: &std::path::Path) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let child = &mut self.child;
        let status = wait_for("sluice to exit after SIGTERM", Duration::from_secs(60), || {
            let s = child.try_wait().unwrap();
            async move { s }
        })
        .await;
        assert!(status.success(), "exit {status}:\n{}", log_tail(log));
    }
}

pub fn log_tail(log: &std::path::Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Runs sluice with `point` armed until it aborts there.
pub async fn crash_there(config: &str, log: &std::path::Path, point: &str, hit: u32) {
    let armed = format!("{point}:{hit}");
    let mut sluice = spawn_with(config, log, Some(&armed));
    let child = &mut sluice.child;
    let status = tokio::time::timeout(
        Duration::from_secs(120),
        wait_for(&format!("sluice to crash at {point}"), Duration::from_secs(120), || {
            let s = child.try_wait().unwrap();
            async move { s }
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("crash point {armed} was never reached:\n{}", log_tail(log)));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGABRT), "expected an abort at {armed}, got {status}:\n{}", log_tail(log));
    assert!(
        std::fs::read_to_string(log).unwrap().contains(&format!("crash point {point} reached")),
        "{}",
        log_tail(log)
    );
}
