//! Named crash points for deterministic crash tests.
//!
//! `SLUICE_CRASH_AT=<name>[:<n>]` makes the process abort, as abruptly as a SIGKILL, the `n`-th
//! time (default: the first) execution passes [`crash_point`]`(<name>)`. Unset, a crash point
//! costs one relaxed atomic load. The names are listed in `docs/ARCHITECTURE.md`.
//!
//! The `fail` crate was considered: its actions (panic, return, sleep) cannot end the process
//! from inside a tokio task, which is what a crash test needs, so this module does only that.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

/// Environment variable naming the crash point to arm.
pub const CRASH_AT_ENV: &str = "SLUICE_CRASH_AT";

static CHECKED: AtomicBool = AtomicBool::new(false);
static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn armed() -> &'static Option<(String, u64)> {
    ARMED.get_or_init(|| {
        let v = std::env::var(CRASH_AT_ENV).ok()?;
        let (name, n) = match v.rsplit_once(':') {
            Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
            None => (v, 1),
        };
        Some((name, n.max(1)))
    })
}

/// Aborts the process here if `SLUICE_CRASH_AT` names this point and this is the chosen hit.
pub fn crash_point(name: &str) {
    if CHECKED.load(Ordering::Relaxed) && ARMED.get().is_some_and(Option::is_none) {
        return;
    }
    CHECKED.store(true, Ordering::Relaxed);
    if let Some((armed_name, at)) = armed() {
        if armed_name == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *at {
            eprintln!("crash point {name} reached (hit {at}): aborting as {CRASH_AT_ENV} asks");
            std::process::abort();
        }
    }
}
