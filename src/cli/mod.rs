//! The command line: `run`, `check`, `status`, `checkpoints` and `snapshot`, and their exit
//! statuses.
//!
//! Exit status 0: success (also after SIGINT/SIGTERM with in-flight batches delivered and the
//! checkpoint stored); 2: a configuration error (named by its key path); 1: any other failure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, LogFormat};
use crate::daemon;
use crate::error::report;
use crate::shutdown::ShutdownTrigger;
use crate::telemetry::{http, Telemetry, TerminalProgress};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

mod checkpoints;
mod status;

use checkpoints::{checkpoints, print_stored, CheckpointsAction};

#[derive(Debug, Parser)]
#[command(
    name = "cdc-bridge",
    version,
    about = "Change-data-capture replication daemon"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the pipelines of a configuration until they finish or SIGINT/SIGTERM.
    Run {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Run only this pipeline.
        #[arg(long, value_name = "NAME")]
        pipeline: Option<String>,
    },
    /// Validate a configuration (and, where connectors support it, their prerequisites).
    Check {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Show each pipeline's state, lag and position: the running daemon's `/status` (at its
    /// `http_listen`), or the stored positions when no daemon answers.
    Status {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Copy tables again while a pipeline streams (an incremental snapshot): the request goes
    /// to the source, and the pipeline serves it when it reads it, now or when it next runs.
    Snapshot {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long, value_name = "NAME")]
        pipeline: String,
        /// A table to copy (`schema.table`); repeat for several.
        #[arg(long = "table", value_name = "TABLE", required = true)]
        tables: Vec<String>,
    },
    /// List stored checkpoints, reset those of one pipeline, or export and import them.
    Checkpoints {
        #[arg(long, value_name = "FILE", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: Option<CheckpointsAction>,
    },
}

const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

/// Parses the command line, runs the command, and returns the process's exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` sets up its log once it has read `log_format` from its configuration.
    if !matches!(cli.command, Command::Run { .. }) {
        init_logging(LogFormat::Text, None);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            return failure(
                EXIT_RUNTIME,
                &format!("cannot start the async runtime: {err}"),
            )
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Run { config, pipeline } => run(&config, pipeline.as_deref()).await,
            Command::Check { config } => check(&config).await,
            Command::Status { config } => status::show(&config).await,
            Command::Checkpoints { config, action } => checkpoints(config.as_deref(), action).await,
            Command::Snapshot {
                config,
                pipeline,
                tables,
            } => snapshot(&config, &pipeline, &tables).await,
        }
    })
}

/// Logs to standard error, through the progress bars' writer when there are bars.
fn init_logging(format: LogFormat, bars: Option<Arc<TerminalProgress>>) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CDC_BRIDGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colors = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let writer = match bars {
        Some(bars) => BoxMakeWriter::new(move || bars.log_writer()),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false);
    match format {
        LogFormat::Text => log.with_ansi(colors).init(),
        // One object per line: timestamp, level, fields (message included), span-free.
        LogFormat::Json => log.json().flatten_event(true).init(),
    }
}

fn failure(code: u8, message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

fn config_failure(path: &Path, err: &ConfigError) -> ExitCode {
    let message = match err {
        ConfigError::Invalid { .. } => format!("configuration {}: {}", path.display(), report(err)),
        _ => report(err),
    };
    failure(EXIT_CONFIG, &message)
}

async fn run(path: &Path, only: Option<&str>) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(err) => {
            init_logging(LogFormat::Text, None);
            return config_failure(path, &err);
        }
    };
    let bars = match config.daemon.log_format {
        LogFormat::Text => TerminalProgress::on_stderr().map(Arc::new),
        LogFormat::Json => None,
    };
    init_logging(config.daemon.log_format, bars.clone());
    let plans = match daemon::plan(&config, only) {
        Ok(plans) => plans,
        Err(err) => return config_failure(path, &err),
    };
    let store = match daemon::StoreSpec::parse(&config.daemon) {
        Ok(spec) => spec,
        Err(err) => return config_failure(path, &err),
    };
    let store = match store.open().await {
        Ok(store) => store,
        Err(err) => return failure(EXIT_RUNTIME, &report(&err)),
    };
    let telemetry = match config.daemon.http_listen {
        Some(_) => Telemetry::new(),
        None => Telemetry::without_metrics(),
    };
    let telemetry = Arc::new(telemetry.with_terminal(bars));
    let endpoints = match config.daemon.http_listen {
        None => None,
        Some(addr) => match http::bind(addr).await {
            Ok(listener) => {
                let address = listener.local_addr().map_or(addr, |a| a);
                tracing::info!(%address, "serving /metrics, /healthz, /readyz and /status");
                Some(tokio::spawn(http::serve(listener, telemetry.clone())))
            }
            Err(err) => return failure(EXIT_RUNTIME, &err.to_string()),
        },
    };
    let trigger = ShutdownTrigger::new();
    let shutdown = trigger.subscribe();
    tokio::spawn(forward_signals(trigger));
    let outcome = daemon::run(plans, store, &config.daemon.leases, shutdown, &telemetry).await;
    if let Some(endpoints) = endpoints {
        endpoints.abort();
    }
    if outcome.failed.is_empty() {
        return ExitCode::SUCCESS;
    }
    for (name, err) in &outcome.failed {
        match config.daemon.log_format {
            LogFormat::Text => eprintln!("error: pipeline {name}: {}", report(err)),
            // Every line of a JSON log is JSON.
            LogFormat::Json => {
                tracing::error!(pipeline = %name, error = %report(err), "pipeline failed")
            }
        }
    }
    ExitCode::from(EXIT_RUNTIME)
}

/// First SIGINT/SIGTERM: orderly shutdown. Second: exit at once (safe: at-least-once resume).
async fn forward_signals(trigger: ShutdownTrigger) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL (safe: it resumes from the checkpoint)");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!(
        "shutting down: no more reading; delivering in-flight batches and storing the checkpoint"
    );
    trigger.trigger();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::warn!(
        "second signal: exiting now; the next run resumes from the last stored checkpoint"
    );
    std::process::exit(i32::from(EXIT_RUNTIME));
}

async fn check(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(err) => return config_failure(path, &err),
    };
    let plans = match daemon::plan(&config, None) {
        Ok(plans) => plans,
        Err(err) => return config_failure(path, &err),
    };
    let mut failed = false;
    for plan in &plans {
        println!(
            "pipeline {}: {} -> {}: configuration ok",
            plan.settings.name,
            plan.source.kind(),
            plan.sink.kind()
        );
        let source = plan
            .source
            .check()
            .await
            .into_iter()
            .map(|f| ("source:", f));
        let sink = plan.sink.check().await.into_iter().map(|f| ("sink:  ", f));
        for (side, finding) in source.chain(sink) {
            failed |= finding.level == crate::check::Level::Fail;
            println!("  {side} {finding}");
        }
    }
    if failed {
        ExitCode::from(EXIT_RUNTIME)
    } else {
        ExitCode::SUCCESS
    }
}

async fn snapshot(path: &Path, pipeline: &str, tables: &[String]) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(err) => return config_failure(path, &err),
    };
    let plans = match daemon::plan(&config, Some(pipeline)) {
        Ok(plans) => plans,
        Err(err) => return config_failure(path, &err),
    };
    let Some(plan) = plans.first() else {
        return failure(EXIT_CONFIG, &format!("no pipeline is named {pipeline:?}"));
    };
    match plan.source.request_snapshot(pipeline, tables).await {
        Ok(()) => {
            println!(
                "pipeline {pipeline}: snapshot of {} requested; the pipeline copies it while streaming (progress: cdc-bridge status)",
                tables.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(err) => failure(EXIT_RUNTIME, &format!("pipeline {pipeline}: {err}")),
    }
}
