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
    let level = std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "info,tokio_postgres=warn".into());
    cmd.args(["run", config]).env("RUST_LOG", level).stdout(Stdio::null()).stderr(Stdio::from(f));
    match crash_at {
        Some(point) => cmd.env(sluice_core::failpoint::CRASH_AT_ENV, point),
        None => cmd.env_remove(sluice_core::failpoint::CRASH_AT_ENV),
    };
    Sluice { child: cmd.spawn().expect("spawn sluice") }
}

impl Sluice {
    /// Sends SIGTERM and waits for a clean exit.
    pub async fn stop(self, log: &std::path::Path) {
        self.stop_explained(log, async { String::new() }).await
    }

    /// As [`Sluice::stop`]; if it does not exit, the failure shows `explain` (what the servers'
    /// sessions are doing, say).
    pub async fn stop_explained(mut self, log: &std::path::Path, explain: impl std::future::Future<Output = String>) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let explained = explain.await;
                // Where each thread of the hung process is, by its Sluice and lock frames.
                let pid = self.child.id().to_string();
                let stacks = Command::new("gdb")
                    .args(["-p", &pid, "-batch", "-ex", "thread apply all bt"])
                    .output()
                    .map(|o| {
                        String::from_utf8_lossy(&o.stdout)
                            .lines()
                            .filter(|l| {
                                l.starts_with("Thread ")
                                    || l.contains("sluice")
                                    || l.contains("mutex")
                                    || l.contains("futex")
                            })
                            .map(|l| l.chars().take(220).collect::<String>())
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_else(|e| format!("(no gdb: {e})"));
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "sluice did not exit within 60s of SIGTERM\n--- log ---\n{}\n{explained}\n--- threads ---\n{stacks}",
                    log_tail(log)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(status.success(), "exit {status}:\n{}", log_tail(log));
    }
}

pub fn log_tail(log: &std::path::Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    // Per-commit debug lines would crowd out what happened.
    let lines: Vec<&str> = s.lines().filter(|l| !l.contains("durable sink=") && !l.contains("wrote batch")).collect();
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

/// Crashes sluice at each of `points` (name, hit) in turn, then runs it and kills it with
/// SIGKILL three times at random moments drawn from `seed`; returns the sluice left running.
pub async fn crash_then_kill(config: &str, log: &std::path::Path, points: &[(&str, u32)], seed: u64) -> Sluice {
    for (point, hit) in points {
        eprintln!("crash point {point}, hit {hit}");
        crash_there(config, log, point, *hit).await;
    }
    let mut rng = sluice_playground::scenario::Rng::new(seed);
    let mut sluice = spawn(config, log);
    for _ in 0..3 {
        // Deliberately random kill moments, not a wait for a condition.
        tokio::time::sleep(Duration::from_millis(rng.range(300, 2000) as u64)).await;
        if let Ok(Some(status)) = sluice.child.try_wait() {
            panic!("sluice exited by itself ({status}):\n{}", log_tail(log));
        }
        sluice.child.kill().expect("SIGKILL");
        sluice.child.wait().unwrap();
        sluice = spawn(config, log);
    }
    sluice
}
