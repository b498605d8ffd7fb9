//! `cdc-bridge status`: asks the running daemon for `/status` at its `http_listen` and prints
//! one line per pipeline. When no daemon answers (or none listens), it prints the stored
//! positions instead, saying why; a store another process holds is reported as such.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::header::HOST;
use hyper::Request;
use hyper_util::rt::TokioIo;

use super::{config_failure, failure, print_stored, EXIT_RUNTIME};
use crate::checkpoint::CheckpointError;
use crate::config::Config;
use crate::daemon::StoreSpec;
use crate::error::report;
use crate::telemetry::{LeaseStatus, PipelineStatus};

/// How long the daemon may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn show(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(err) => return config_failure(path, &err),
    };
    let why_stored = match config.daemon.http_listen {
        None => "[daemon] http_listen is not set".to_owned(),
        Some(addr) => match fetch(addr).await {
            Ok(pipelines) => {
                print_table(&pipelines);
                return ExitCode::SUCCESS;
            }
            Err(reason) => format!("no daemon answers at {addr} ({reason})"),
        },
    };
    let spec = match StoreSpec::parse(&config.daemon) {
        Ok(spec) => spec,
        Err(err) => return config_failure(path, &err),
    };
    let stored = match spec.open().await {
        Ok(store) => store.checkpoints().list().await,
        Err(err) => Err(err),
    };
    match stored {
        Ok(stored) => {
            println!("{why_stored}; stored positions:");
            print_stored(&stored);
            ExitCode::SUCCESS
        }
        Err(CheckpointError::Locked { .. }) => failure(
            EXIT_RUNTIME,
            &format!("{why_stored}, and a running daemon holds the checkpoint store: set [daemon] http_listen (and restart it) to see its status"),
        ),
        Err(err) => failure(EXIT_RUNTIME, &report(&err)),
    }
}

async fn fetch(addr: SocketAddr) -> Result<Vec<PipelineStatus>, String> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request = Request::get("/status")
            .header(HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("/status answered {}", response.status()));
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| format!("unexpected /status: {e}"))
    };
    tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .map_err(|_| "no answer within 5 s".to_owned())?
}

fn print_table(pipelines: &[PipelineStatus]) {
    println!(
        "{:<20} {:<12} {:>9} {:>12} {:>12} {:>10} {:<24} SNAPSHOT",
        "PIPELINE", "STATE", "LAG (s)", "LAG (bytes)", "DELIVERED", "IDLE (s)", "POSITION"
    );
    for p in pipelines {
        let lag_bytes = p.lag_bytes.map_or("-".into(), |b| b.to_string());
        let idle = p
            .seconds_since_last_event
            .map_or("-".into(), |s| format!("{s:.1}"));
        // A database source's main position is its unnamed partition; the others hold
        // table copies' progress.
        let position = match (p.stored.get(""), p.stored.len()) {
            (Some(main), _) => main.clone(),
            (None, 0) => "-".to_owned(),
            (None, 1) => p.stored.values().next().cloned().unwrap_or_default(),
            (None, n) => format!("{n} partitions"),
        };
        let snapshot = p.snapshot.as_ref().map_or("-".into(), |s| {
            let copied: u64 = s.tables.iter().map(|t| t.rows_copied).sum();
            format!("{copied} rows, {} tables left", s.tables_remaining)
        });
        println!(
            "{:<20} {:<12} {:>9.1} {:>12} {:>12} {:>10} {:<24} {}",
            p.pipeline,
            p.state,
            p.lag_seconds,
            lag_bytes,
            p.events_delivered,
            idle,
            position,
            snapshot
        );
        if let Some(lease) = &p.lease {
            println!("    lease: {}", lease_line(lease));
        }
        if let Some(error) = &p.error {
            println!("    error: {error}");
        }
    }
}

/// Who runs a pipeline of instances sharing a store.
fn lease_line(lease: &LeaseStatus) -> String {
    if let Some(partitions) = &lease.partitions {
        let holder = lease.holder.as_deref().unwrap_or("this instance");
        return match partitions.len() {
            0 => format!("spread over the instances; no partition held here ({holder})"),
            n => format!(
                "spread over the instances; {n} partition(s) held here as {holder}: {}",
                partitions.join(", ")
            ),
        };
    }
    match (&lease.holder, lease.held_here) {
        (Some(holder), true) => format!("held here as {holder} (epoch {})", lease.epoch),
        (Some(holder), false) => format!("held by {holder} (epoch {})", lease.epoch),
        (None, _) => format!(
            "free (epoch {}): an instance takes it within a round",
            lease.epoch
        ),
    }
}
