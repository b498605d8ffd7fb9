//! The `kinesis` sink: change events to an Amazon Kinesis data stream, one record per event
//! (or KPL-aggregated), partitioned by the row's identity.
//!
//! Flow per batch: each event -> its format's preparation (the Avro format registers the
//! table's schemas, named after the stream) -> partition key (`partition_key.rs`, the row's
//! identity whatever the format) and formatted data -> size
//! policy ([`RecordLimit`]) -> the [`worker`] task, which fills PutRecords calls (at most 500
//! records and 5 MiB, after a short linger), keeps a few calls in flight, retries rejected
//! records in order per key (`scheduler.rs`), and resolves the batch's [`Delivery`] once every
//! record of the batch is accepted. The SDK's own retries are off.
//!
//! Errors ([`KinesisSinkError`]): throttling, service failures and timeouts are retried with
//! backoff until `retry_timeout_ms`, then fail the batch (transient: the pipeline restarts from
//! its checkpoint); a missing stream, refused credentials or access, and records the service
//! refuses stop the pipeline with a message that names the stream and the fix.

mod aggregate;
mod client;
mod config;
mod error;
mod partition_key;
mod scheduler;
mod shards;
mod worker;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::types::StreamStatus;
use tokio::sync::{mpsc, oneshot};

pub use aggregate::{aggregate, deaggregate, DeaggregateError, MAGIC as AGGREGATE_MAGIC};
pub use client::{client, sdk_config};
pub use config::{KinesisSinkConfig, StreamRef};
pub use error::KinesisSinkError;
pub use partition_key::{hash_key, partition_key};
pub use shards::{ShardMap, ShardRange};
pub use worker::Stats;

use crate::check::Finding;
use crate::error::BoxError;
use crate::format::{format_for, Format};
use crate::sink::{delivered, Batch, Delivery, Sink};
use crate::sinks::oversize::RecordLimit;
use crate::telemetry::PipelineProbe;
use client::{call_failure, region_of, CallFailure};
use config::MAX_BYTES_PER_CALL;
use scheduler::{CallLimits, Record};
use worker::{Submission, Worker, WorkerSettings};

pub struct KinesisSink {
    submissions: mpsc::Sender<Submission>,
    failure: Arc<Mutex<Option<KinesisSinkError>>>,
    worker: tokio::task::JoinHandle<()>,
    stats: Arc<Stats>,
    format: Box<dyn Format>,
    limit: RecordLimit,
    stream_name: String,
}

impl KinesisSink {
    /// Connects with the standard AWS configuration and checks that the stream is ACTIVE.
    pub async fn connect(config: &KinesisSinkConfig, stream: &StreamRef) -> Result<Self, BoxError> {
        Self::connect_with(config, stream, |builder| builder).await
    }

    /// [`KinesisSink::connect`], with a hook to adjust the client (tests add interceptors).
    pub async fn connect_with(
        config: &KinesisSinkConfig,
        stream: &StreamRef,
        customize: impl FnOnce(aws_sdk_kinesis::config::Builder) -> aws_sdk_kinesis::config::Builder,
    ) -> Result<Self, BoxError> {
        let sdk = sdk_config(config, stream).await?;
        let region = region_of(&sdk);
        let client = client(&sdk, customize);
        let summary = describe(&client, stream, &region).await?;
        if summary.status != StreamStatus::Active {
            return Err(KinesisSinkError::NotActive {
                stream: stream.display_name().to_owned(),
                status: summary.status.as_str().to_owned(),
            }
            .into());
        }
        let shards = if config.aggregation || config.shard_pacing {
            ShardMap::load(&client, stream).await.map_err(|err| {
                match call_failure(&err, stream.display_name(), &region) {
                    CallFailure::Stop(err) => err,
                    CallFailure::Retry(message) => KinesisSinkError::Unavailable {
                        stream: stream.display_name().to_owned(),
                        message,
                    },
                }
            })?
        } else {
            ShardMap::default()
        };
        let limit = RecordLimit::new(
            config.max_record_bytes,
            config.oversize,
            config.dead_letter_path.as_deref(),
        )?;
        let settings = WorkerSettings {
            stream: stream.clone(),
            region,
            limits: CallLimits {
                records: config.max_records_per_call.get(),
                bytes: MAX_BYTES_PER_CALL,
                record_bytes: config.max_record_bytes,
            },
            linger: Duration::from_millis(config.linger_ms),
            max_concurrent_calls: config.max_concurrent_calls.get(),
            aggregation: config.aggregation,
            pacing: config.shard_pacing,
            retry_timeout: Duration::from_millis(config.retry_timeout_ms),
        };
        let stats = Arc::new(Stats::default());
        let failure = Arc::new(Mutex::new(None));
        let (submissions, receiver) = mpsc::channel(16);
        let worker = Worker::new(client, settings, shards, stats.clone(), failure.clone());
        tracing::info!(stream = %stream.display_name(), shards = summary.open_shards, aggregation = config.aggregation, "Kinesis sink ready");
        Ok(KinesisSink {
            submissions,
            failure,
            worker: tokio::spawn(worker.run(receiver)),
            stats,
            format: format_for(&config.format),
            limit,
            stream_name: stream.display_name().to_owned(),
        })
    }

    /// Counters of calls and records since the sink started.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }
}

impl Drop for KinesisSink {
    fn drop(&mut self) {
        self.worker.abort();
    }
}

#[async_trait]
impl Sink for KinesisSink {
    fn observe(&mut self, probe: Arc<PipelineProbe>) {
        self.limit.observe(probe.clone());
        let _ = self.stats.probe.set(probe);
    }

    async fn submit(&mut self, batch: Arc<Batch>) -> Result<Delivery, BoxError> {
        let mut records = Vec::with_capacity(batch.events.len());
        for event in &batch.events {
            let key = partition_key(event);
            if let Some(preparing) = self.format.prepare(event, &self.stream_name, false) {
                preparing.await?;
            }
            let mut data = Vec::with_capacity(512);
            self.format.encode_value(event, &mut data)?;
            if !self
                .limit
                .admit(event, data.len() + key.len(), &self.stream_name)?
            {
                continue;
            }
            records.push(Record {
                partition_key: key,
                data,
                table: event.qualified_table(),
                position: event.source.position.to_string(),
            });
        }
        self.limit.sync()?;
        if records.is_empty() {
            return Ok(delivered());
        }
        let (done, outcome) = oneshot::channel();
        let submission = Submission {
            batch: batch.id,
            records,
            done,
        };
        if self.submissions.send(submission).await.is_err() {
            return Err(stop_reason(&self.failure).into());
        }
        let failure = self.failure.clone();
        Ok(Box::pin(async move {
            match outcome.await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(stop_reason(&failure).into()),
            }
        }))
    }
}

/// Why the sender task stopped: its recorded failure, if it had one.
fn stop_reason(failure: &Mutex<Option<KinesisSinkError>>) -> KinesisSinkError {
    failure
        .lock()
        .expect("not poisoned")
        .clone()
        .unwrap_or_else(|| KinesisSinkError::Stopped("the sender task ended".into()))
}

/// What `DescribeStreamSummary` says about the stream.
struct Summary {
    status: StreamStatus,
    open_shards: i32,
    retention_hours: i32,
    encryption: Option<String>,
}

async fn describe(
    client: &aws_sdk_kinesis::Client,
    stream: &StreamRef,
    region: &str,
) -> Result<Summary, KinesisSinkError> {
    let request = client.describe_stream_summary();
    let request = match stream {
        StreamRef::Name(name) => request.stream_name(name),
        StreamRef::Arn { arn, .. } => request.stream_arn(arn),
    };
    let output = request.send().await.map_err(|err| {
        match call_failure(&err, stream.display_name(), region) {
            CallFailure::Stop(err) => err,
            CallFailure::Retry(message) => KinesisSinkError::Unavailable {
                stream: stream.display_name().to_owned(),
                message,
            },
        }
    })?;
    let summary = output.stream_description_summary();
    Ok(Summary {
        status: summary.map_or(StreamStatus::Creating, |s| s.stream_status().clone()),
        open_shards: summary.map_or(0, |s| s.open_shard_count()),
        retention_hours: summary.map_or(0, |s| s.retention_period_hours()),
        encryption: summary
            .and_then(|s| s.encryption_type())
            .map(|e| e.as_str().to_owned()),
    })
}

/// `cdc-bridge check` for this sink: credentials, the stream's state, shards and throughput.
pub async fn check(config: &KinesisSinkConfig, stream: &StreamRef) -> Vec<Finding> {
    let sdk = match sdk_config(config, stream).await {
        Ok(sdk) => sdk,
        Err(err) => return vec![Finding::fail(err.to_string())],
    };
    let region = region_of(&sdk);
    let client = client(&sdk, |b| b);
    let summary = match describe(&client, stream, &region).await {
        Ok(summary) => summary,
        Err(err) => return vec![Finding::fail(err.to_string())],
    };
    let name = stream.display_name();
    let mut findings = vec![Finding::ok(format!(
        "credentials can describe stream {name} in {region}"
    ))];
    if summary.status == StreamStatus::Active {
        let shards = summary.open_shards;
        findings.push(Finding::ok(format!(
            "stream {name} is ACTIVE with {shards} open shard(s): up to {} records/s and {} MiB/s of writes; retention {} h; encryption {}",
            i64::from(shards) * 1000,
            shards,
            summary.retention_hours,
            summary.encryption.as_deref().unwrap_or("NONE"),
        )));
    } else {
        findings.push(Finding::fail(
            KinesisSinkError::NotActive {
                stream: name.to_owned(),
                status: summary.status.as_str().to_owned(),
            }
            .to_string(),
        ));
    }
    if config.aggregation {
        findings.push(Finding::warn(
            "aggregation = true: KCL and Lambda de-aggregate these records; Redshift streaming ingestion cannot parse them",
        ));
    }
    findings
}
