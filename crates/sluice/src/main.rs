use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice_config::PipelineConfig;
use tokio::sync::watch;

// mimalloc: per-thread heaps. With glibc's allocator a third of a drain's CPU went to malloc and
// free contending on arenas across tokio's threads (BENCHMARKS.md).
// (`--features system-alloc` builds with the system allocator instead, for heap profilers such
// as heaptrack that watch malloc.)
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// List each sink's tables and their state (copied, copying, quarantined and why); with
    /// --release, take a quarantined table out of quarantine (the pipeline must be stopped; the
    /// table is copied again when it starts).
    Tables {
        /// Pipeline file (TOML)
        pipeline: PathBuf,
        /// A quarantined table to release, as schema.table
        #[arg(long, value_name = "SCHEMA.TABLE")]
        release: Option<String>,
        /// Only this sink (its index in the file), for --release
        #[arg(long)]
        sink: Option<usize>,
    },
    /// Run SQL against what a sink wrote (a DuckDB file), also while the pipeline runs: the
    /// query reads between the sink's commits.
    Query {
        /// Pipeline file (TOML)
        pipeline: PathBuf,
        /// The SQL, e.g. "SELECT count(*) FROM public.orders"
        sql: String,
        /// The sink to query (its index in the file); default: the first that can be queried
        #[arg(long)]
        sink: Option<usize>,
    },
    /// Turn other tools' configurations into a pipeline file.
    #[command(subcommand)]
    Import(ImportCmd),
    /// Start a local source and replica with sample data and a workload, and watch the replica
    /// follow. Needs only the PostgreSQL server packages (scripts/setup.sh installs them).
    Playground(sluice::playground::Args),
    /// Serve the built-in Schema Registry (Confluent's REST API, Avro) until SIGINT/SIGTERM.
    #[cfg(feature = "registry")]
    Registry {
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: String,
        /// Directory that keeps the registry's schemas across restarts
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
    },
}

#[derive(Subcommand)]
enum ImportCmd {
    /// Kafka Connect connector configurations (.properties, or the REST API's JSON): the
    /// Snowflake sink, Debezium MySQL/MariaDB and PostgreSQL sources, the JDBC sinks. Prints the
    /// pipeline (or writes it to --output) and lists, on stderr and in the file, every property
    /// it could not map.
    KafkaConnect {
        /// Connector files: at most one source, any number of sinks
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write the pipeline here instead of stdout
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

/// mimalloc keeps memory it no longer needs mapped for reuse: by default whole arenas are
/// committed up front and freed pages are returned to the OS only after a delay. For a process
/// whose working set is small and churns (a drain), that nearly doubled peak RSS (the drain
/// benchmark's 114-122 MB; 48 MB with both off, at the same speed; BENCHMARKS.md). The options
/// must be set before mimalloc maps its first arena, so this runs as an ELF constructor, before
/// the Rust runtime allocates anything; it allocates nothing itself. A MIMALLOC_* variable in
/// the environment still wins.
#[cfg(all(not(feature = "system-alloc"), target_os = "linux"))]
#[used]
#[link_section = ".init_array"]
static TUNE_ALLOCATOR: extern "C" fn() = tune_allocator;

#[cfg(all(not(feature = "system-alloc"), target_os = "linux"))]
extern "C" fn tune_allocator() {
    extern "C" {
        fn getenv(name: *const std::ffi::c_char) -> *mut std::ffi::c_char;
    }
    // mimalloc 2's mi_option_e: 4 = arena_eager_commit, 15 = purge_delay.
    for (option, name) in [(4, c"MIMALLOC_ARENA_EAGER_COMMIT"), (15, c"MIMALLOC_PURGE_DELAY")] {
        // SAFETY: getenv reads the environment the loader set up; mi_option_set writes a global
        // option of the allocator. Constructors run on the main thread before any other exists.
        unsafe {
            if getenv(name.as_ptr()).is_null() {
                libmimalloc_sys::mi_option_set(option, 0);
            }
        }
    }
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
            Cmd::Tables { pipeline, release, sink } => tables(pipeline, release, sink).await,
            Cmd::Query { pipeline, sql, sink } => query(pipeline, sql, sink).await,
            #[cfg(feature = "registry")]
            Cmd::Registry { listen, data } => registry(listen, data).await,
            Cmd::Import(ImportCmd::KafkaConnect { files, output }) => import_kafka_connect(files, output),
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

#[cfg(feature = "registry")]
async fn registry(listen: String, data: PathBuf) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error: cannot listen on {listen}: {e} (is another registry running there? pick another --listen)"
            );
            return ExitCode::FAILURE;
        }
    };
    let mut stop = stop_signal();
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    match sluice_registry::serve(listener, &data, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
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
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = watch::channel(false);
    // Installed before returning (not in the task), so a signal that comes at once is caught.
    let handlers = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = handlers else {
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

async fn query(path: PathBuf, sql: String, only: Option<usize>) -> ExitCode {
    let cfg = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut last = None;
    for (i, s) in cfg.sinks.iter().enumerate().filter(|(i, _)| only.is_none_or(|o| o == *i)) {
        match s.query(&sql).await {
            Ok(table) => {
                println!("{table}");
                return ExitCode::SUCCESS;
            }
            Err(e) => last = Some(format!("sink[{i}]: {e}")),
        }
    }
    eprintln!("error: {}", last.unwrap_or_else(|| "the pipeline has no such sink".into()));
    ExitCode::FAILURE
}

async fn tables(path: PathBuf, release: Option<String>, only: Option<usize>) -> ExitCode {
    let cfg = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let sinks = cfg.sinks.iter().enumerate().filter(|(i, _)| only.is_none_or(|o| o == *i));
    if let Some(name) = release {
        let Some((schema, table)) = name.split_once('.') else {
            eprintln!("error: --release {name:?}: name the table as schema.table");
            return ExitCode::from(2);
        };
        let table = sluice_core::TableId::new(schema, table);
        let mut released = 0;
        for (i, s) in sinks {
            match s.release(&cfg.name, i, &table).await {
                Ok(true) => {
                    println!("sink[{i}]: {table} released; it is copied again when the pipeline starts");
                    released += 1;
                }
                Ok(false) => println!("sink[{i}]: {table} is not in quarantine"),
                Err(e) => {
                    eprintln!("error: sink[{i}]: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        return if released > 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    for (i, s) in sinks {
        println!("sink[{i}] {}", s.describe());
        match s.tables(&cfg.name, i).await {
            Ok(list) if list.is_empty() => println!("  (no tables yet)"),
            Ok(list) => {
                let width = list.iter().map(|t| t.table.to_string().len()).max().unwrap_or(0);
                for t in list {
                    println!("  {:width$}  {}", t.table.to_string(), t.state);
                }
            }
            Err(e) => {
                eprintln!("error: sink[{i}]: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
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

fn import_kafka_connect(files: Vec<PathBuf>, output: Option<PathBuf>) -> ExitCode {
    let mut connectors = Vec::new();
    for f in &files {
        let parsed = std::fs::read_to_string(f)
            .map_err(|e| format!("{}: {e}", f.display()))
            .and_then(|text| sluice::import::Connector::parse(&f.display().to_string(), &text));
        match parsed {
            Ok(c) => connectors.push(c),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let imported = match sluice::import::import(connectors) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The file must be one Sluice accepts, with the secrets it references set.
    let placeholder = |var: &str| imported.env.iter().any(|e| e == var).then(|| "secret".to_string());
    if let Err(e) = sluice::parse(&imported.toml, &placeholder) {
        eprintln!("warning: the imported pipeline needs editing before it runs: {e}");
    }
    match &output {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &imported.toml) {
                eprintln!("error: write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            eprintln!("wrote {}", path.display());
        }
        None => print!("{}", imported.toml),
    }
    if imported.unmapped.is_empty() {
        eprintln!("every property was mapped");
    } else {
        eprintln!(
            "{} properties not mapped (review them; also listed at the top of the file):",
            imported.unmapped.len()
        );
        for u in &imported.unmapped {
            eprintln!("  {u}");
        }
    }
    if !imported.env.is_empty() {
        eprintln!("set these in the environment before `sluice run`: {}", imported.env.join(", "));
    }
    ExitCode::SUCCESS
}
