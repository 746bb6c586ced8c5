mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use cli::verify::Verdict;
use milvus_cdc::api::{Access, AllowedHosts};
use milvus_cdc::config::Config;
use milvus_cdc::journal::Journal;
use milvus_cdc::journal::dump::{JournalSnapshot, RowFilter};
use milvus_cdc::task::{Supervisor, TaskSpec};
use tracing::info;

/// Change data capture for Milvus: replays every change of a source Milvus on a target Milvus.
#[derive(Parser)]
#[command(name = "milvus-cdc", version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the appliance: the HTTP API and every task stored in the data dir.
    Serve {
        /// TOML config file; every key has a default that fits the local testbed.
        #[arg(long, env = "MILVUS_CDC_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print a stopped appliance's journal: tasks, source offsets, applied positions, in-flight
    /// batches and staged rows. Opens the journal read-only.
    Dump {
        #[arg(long)]
        data_dir: PathBuf,
        /// Only this task.
        #[arg(long)]
        task: Option<String>,
        /// Only this channel (a physical channel also selects its virtual channels).
        #[arg(long)]
        channel: Option<String>,
        /// Only rows with a timestamp at or after this.
        #[arg(long)]
        from_ts: Option<u64>,
        /// Only rows with a timestamp at or before this.
        #[arg(long)]
        to_ts: Option<u64>,
        /// At most this many journal rows.
        #[arg(long, default_value_t = 1000)]
        max_rows: usize,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Manage the tasks of a running server: list, get, create, pause, resume, skip, delete,
    /// positions.
    Task(cli::task::TaskArgs),
    /// Compare a task's source and target row by row, through the server. Exit status: 0
    /// equal, 1 different, 2 could not tell (as `diff`).
    Verify(cli::verify::VerifyArgs),
    /// The source is gone: fail a task over to its target, and wait until it has. It applies
    /// what its journal holds that can be applied consistently, keeps the rest in a file, and
    /// prints its report. The task never reads again.
    Failover(cli::failover::FailoverArgs),
    /// Both sides up: fence writes on the task's source, wait until its target holds all of it
    /// (RPO 0), pause the task and start its reverse task. Called off, with everything as it
    /// was, when the target does not catch up within `--timeout` seconds.
    Switchover(cli::switchover::SwitchoverArgs),
    /// Put back the rows a repair replaced or deleted (`{data_dir}/repair/TASK/`), upserting
    /// them into a Milvus as they were.
    Reapply(cli::reapply::ReapplyArgs),
    /// Write the man pages or the shell completions into a folder (for packaging).
    #[command(hide = true)]
    Generate(cli::generate::GenerateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Serve { config } => serve(config),
        Command::Dump {
            data_dir,
            task,
            channel,
            from_ts,
            to_ts,
            max_rows,
            json,
        } => {
            let filter = RowFilter {
                task,
                channel,
                from_ts,
                to_ts,
            };
            dump(&data_dir, &filter, max_rows, json)
        }
        Command::Task(args) => cli::task::run(args).map_err(CliError::from),
        Command::Failover(args) => cli::failover::run(args).map_err(CliError::from),
        Command::Switchover(args) => cli::switchover::run(args).map_err(CliError::from),
        Command::Reapply(args) => cli::reapply::run(args).map_err(CliError::from),
        Command::Generate(args) => cli::generate::run(args, Cli::command()).map_err(CliError::from),
        Command::Verify(args) => {
            return match cli::verify::run(args) {
                Ok(Verdict::Equal) => ExitCode::SUCCESS,
                Ok(Verdict::Different) => ExitCode::from(1),
                Ok(Verdict::Incomplete) => ExitCode::from(2),
                Err(err) => {
                    eprintln!("milvus-cdc: {err}");
                    ExitCode::from(2)
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("milvus-cdc: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The server allocates and frees buffers of a few MiB many times a second (fetched messages,
/// journal pages, target calls). By default glibc gives blocks that large back to the kernel
/// when they are freed, and the next one is faulted in again page by page: a fifth of the
/// server's CPU in a catch-up went to page faults. Kept in the heap, they are reused. The
/// process then stays near its peak, which the journal's caches bound; two arenas keep that
/// peak from being held once per thread.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_buffers() {
    // SAFETY: mallopt only changes the allocator's parameters, and no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_buffers() {}

fn dump(
    data_dir: &std::path::Path,
    filter: &RowFilter,
    max_rows: usize,
    json: bool,
) -> Result<(), CliError> {
    let snapshot = JournalSnapshot::open(data_dir)?;
    snapshot.entries(filter, max_rows, TaskSpec::shown, |entry| {
        if json {
            println!("{}", serde_json::to_string(&entry).unwrap_or_default());
        } else {
            println!("{}", entry.line());
        }
    })?;
    Ok(())
}

/// Logs to stderr at `RUST_LOG` (default `info`); the events that carry credentials are
/// dropped whatever it says (`no_credentials_logged`).
fn init_logging(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: log files and JSON stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let text = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(milvus_cdc::model::no_credentials_logged());
    match format {
        LogFormat::Text => registry.with(text).init(),
        LogFormat::Json => registry.with(text.json()).init(),
    }
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Config(#[from] milvus_cdc::config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server stopped: {0}")]
    Http(std::io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Journal(#[from] milvus_cdc::journal::JournalError),
    #[error(transparent)]
    Task(#[from] milvus_cdc::task::TaskError),
    #[error(transparent)]
    Client(#[from] cli::task::ClientError),
    #[error(transparent)]
    Https(#[from] cli::https::HttpsError),
    #[error(transparent)]
    Reapply(#[from] cli::reapply::ReapplyError),
    #[error(transparent)]
    Generate(#[from] cli::generate::GenerateError),
}

fn serve(config_path: Option<PathBuf>) -> Result<(), CliError> {
    keep_freed_buffers();
    let mut config = match &config_path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    config.resolve_pulsar_token(std::env::var("MILVUS_CDC_PULSAR_TOKEN").ok())?;
    let token = config.api_token(std::env::var("MILVUS_CDC_API_TOKEN").ok())?;
    // Certificates are read before anything starts, so a bad file is the one error printed.
    let tls = match config.api_tls()? {
        Some((cert, key)) => Some(cli::https::server_config(cert, key)?),
        None => None,
    };
    config.check_ca_files()?;
    let runtime = tokio::runtime::Runtime::new().map_err(CliError::Runtime)?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| CliError::Listen { addr: config.listen, source })?;
        let data_dir = std::path::absolute(&config.data_dir).unwrap_or(config.data_dir.clone());
        let journal = std::sync::Arc::new(Journal::open(&data_dir)?);
        if let Some(reserve) = config.journal.disk_reserve_bytes {
            journal.set_disk_reserve(reserve);
        }
        let supervisor = Supervisor::new(journal.clone(), config.clone(), tokio::runtime::Handle::current());
        match &config.group {
            // The group places the tasks: the owner loop starts this member's share.
            Some(group) => {
                let group = milvus_cdc::group::Group::connect(group).await.map_err(milvus_cdc::task::TaskError::from)?;
                supervisor.join_group(std::sync::Arc::new(group));
            }
            None => supervisor.resume_all()?,
        }
        supervisor.start_sampling(std::time::Duration::from_secs(5));
        let scheme = if tls.is_some() { "https" } else { "http" };
        println!("milvus-cdc listening on {scheme}://{} with journal {}", config.listen, journal.path().display());
        info!(listen = %config.listen, scheme, journal = %journal.path().display(), "serving");
        // The bound address, not the configured one: port 0 picks a free port.
        let listen = listener.local_addr().unwrap_or(config.listen);
        let access = Access { token, hosts: AllowedHosts::new(listen, &config.api.allowed_hosts) };
        let app = milvus_cdc::api::router(supervisor.clone(), access);
        let stopped = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { if let Some(t) = term.as_mut() { t.recv().await; } else { std::future::pending::<()>().await } } => {}
            }
        };
        let served = match tls {
            // The peer address is logged with every refused token.
            None => axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
                .with_graceful_shutdown(stopped)
                .await
                .map_err(CliError::Http),
            Some(tls) => serve_https(listener, app, tls, stopped).await,
        };
        let stopping = supervisor.clone();
        tokio::task::spawn_blocking(move || stopping.shutdown()).await.ok();
        supervisor.leave_group().await;
        served
    })
}

/// The API over TLS (axum's own server speaks plain HTTP only), stopped as gracefully.
async fn serve_https(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: std::sync::Arc<rustls::ServerConfig>,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), CliError> {
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        stopped.await;
        // Requests in flight may finish, for a while: an idle client must not hold it open.
        stopper.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
    });
    let listener = listener.into_std().map_err(CliError::Http)?;
    axum_server::from_tcp_rustls(
        listener,
        axum_server::tls_rustls::RustlsConfig::from_config(tls),
    )
    .map_err(CliError::Http)?
    .handle(handle)
    .serve(app.into_make_service_with_connect_info::<std::net::SocketAddr>())
    .await
    .map_err(CliError::Http)
}
