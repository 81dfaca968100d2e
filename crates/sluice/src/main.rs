use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice_config::PipelineConfig;
use tokio::sync::watch;

/// Sluice: capture row changes from operational databases and deliver them, in one binary.
#[derive(Parser)]
#[command(name = "sluice", version, about, long_about = None)]
struct Cli {
    /// Log lines on stderr: `text` (coloured only when stderr is a terminal and NO_COLOR is
    /// unset) or `json` (one object per line, for log collectors). RUST_LOG sets the levels.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a pipeline in the foreground until SIGINT/SIGTERM, then flush, commit and exit.
    Run {
        /// Pipeline file (TOML)
        pipeline: PathBuf,
    },
    /// Validate a pipeline file and run preflight checks against its servers.
    Check {
        /// Pipeline file (TOML)
        pipeline: PathBuf,
    },
    /// Start a local source and replica with sample data and a workload, and watch the replica
    /// follow. Needs only the PostgreSQL server packages (scripts/setup.sh installs them).
    Playground(sluice::playground::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Run { pipeline } => run(pipeline, cli.log_format).await,
            Cmd::Check { pipeline } => check(pipeline).await,
            Cmd::Playground(args) => match sluice::playground::run(args, stop_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            },
        }
    })
}

fn init_logs(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_postgres=warn"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().with_current_span(false).init(),
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            logs.with_ansi(colour).init()
        }
    }
}

/// A watch that turns true on SIGINT or SIGTERM.
fn stop_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            eprintln!("error: cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        let _ = tx.send(true);
    });
    rx
}

fn load(path: &Path) -> Result<PipelineConfig, ExitCode> {
    sluice::load(path).map_err(|e| {
        eprintln!("error: {}: {e}", path.display());
        ExitCode::from(2)
    })
}

async fn run(path: PathBuf, logs: LogFormat) -> ExitCode {
    // With JSON logs, the final error is a log line too, so collectors see it.
    let fail = |message: String| {
        match logs {
            LogFormat::Json => tracing::error!(error = %message, "pipeline failed"),
            LogFormat::Text => eprintln!("error: {message}"),
        }
        ExitCode::FAILURE
    };
    let cfg = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let running = sluice::start(&cfg, stop_signal());
    tokio::spawn(sluice::progress::render(running.handle.clone()));
    match running.task.await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => fail(sluice::chain(&e)),
        Err(e) => fail(format!("the pipeline task failed: {e}")),
    }
}

async fn check(path: PathBuf) -> ExitCode {
    let cfg = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    println!("ok    config: {} is valid", path.display());
    let mut results = cfg.source.check(&cfg.name).await;
    for (i, s) in cfg.sinks.iter().enumerate() {
        results.extend(s.check(&format!("sink[{i}]")).await);
    }
    let mut failed = 0;
    for r in &results {
        let detail = if r.detail.is_empty() { String::new() } else { format!("  ({})", r.detail) };
        if r.ok {
            println!("ok    {}{detail}", r.name);
        } else {
            failed += 1;
            println!("FAIL  {}: {}", r.name, r.detail);
        }
    }
    if failed > 0 {
        println!("{failed} check(s) failed");
        ExitCode::FAILURE
    } else {
        println!("all checks passed");
        ExitCode::SUCCESS
    }
}
