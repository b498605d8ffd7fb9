//! Kinesis test helpers against kinesalite: create a stream, read every shard back, and two
//! fault injectors of our own (the emulator never fails single records): an SDK interceptor
//! that makes chosen records or calls fail, and a TCP proxy that can cut the connection.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::interceptors::{
    BeforeTransmitInterceptorContextMut, FinalizerInterceptorContextMut,
};
use aws_sdk_kinesis::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_kinesis::operation::put_records::{PutRecordsError, PutRecordsOutput};
use aws_sdk_kinesis::types::{PutRecordsResultEntry, ShardIteratorType};
use aws_sdk_kinesis::Client;
use aws_smithy_runtime_api::client::interceptors::context;
use aws_smithy_runtime_api::client::orchestrator::OrchestratorError;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use aws_smithy_types::error::ErrorMetadata;
use cdc_bridge::sinks::kinesis::{self, KinesisSinkConfig, StreamRef};

pub fn endpoint() -> String {
    std::env::var("CDC_BRIDGE_KINESIS_ENDPOINT")
        .expect("CDC_BRIDGE_KINESIS_ENDPOINT is not set: run the tests with scripts/test.sh")
}

/// A unique stream name per test run (the emulator outlives tests).
pub fn stream_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

pub fn sink_config(stream: &str, extra: &str) -> (KinesisSinkConfig, StreamRef) {
    let config: KinesisSinkConfig = toml::from_str(&format!(
        "stream = {stream:?}\nendpoint_url = {:?}\nregion = \"us-east-1\"\n{extra}",
        endpoint()
    ))
    .expect("sink config");
    let stream = config.validate("sink").expect("valid sink config");
    (config, stream)
}

pub async fn client() -> Client {
    let (config, stream) = sink_config("any", "");
    let sdk = kinesis::sdk_config(&config, &stream)
        .await
        .expect("sdk config");
    kinesis::client(&sdk, |b| b)
}

/// Creates a stream with `shards` shards and waits until it is ACTIVE.
pub async fn create_stream(client: &Client, name: &str, shards: i32) {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .expect("create stream");
    wait_active(client, name).await;
}

/// Waits until the stream is ACTIVE (after a create, split or merge).
pub async fn wait_active(client: &Client, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let summary = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .expect("describe stream");
        let status = summary
            .stream_description_summary()
            .map(|s| s.stream_status().as_str().to_owned());
        if status.as_deref() == Some("ACTIVE") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stream {name} not ACTIVE: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub shard_id: String,
    pub shard_start: u128,
    pub shard_end: u128,
    pub partition_key: String,
    pub data: Vec<u8>,
}

/// Reads every record of every shard, each shard from its start, in order.
pub async fn read_all(client: &Client, stream: &str) -> Vec<ReadRecord> {
    let shards = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .expect("list shards");
    let mut out = Vec::new();
    for shard in shards.shards() {
        let range = shard.hash_key_range().expect("hash range");
        let (start, end) = (
            range.starting_hash_key().parse::<u128>().unwrap(),
            range.ending_hash_key().parse::<u128>().unwrap(),
        );
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .expect("shard iterator")
            .shard_iterator()
            .map(str::to_owned);
        while let Some(it) = iterator {
            let page = client
                .get_records()
                .shard_iterator(it)
                .limit(10_000)
                .send()
                .await
                .expect("get records");
            for r in page.records() {
                out.push(ReadRecord {
                    shard_id: shard.shard_id().to_owned(),
                    shard_start: start,
                    shard_end: end,
                    partition_key: r.partition_key().unwrap_or_default().to_owned(),
                    data: r.data().as_ref().to_vec(),
                });
            }
            let caught_up = page.records().is_empty() || page.millis_behind_latest() == Some(0);
            iterator = page.next_shard_iterator().map(str::to_owned);
            if caught_up && page.records().is_empty() {
                break;
            }
        }
    }
    out
}

/// The open shards of a stream as `(shard id, starting hash key, ending hash key)`, by range.
pub async fn open_shards(client: &Client, stream: &str) -> Vec<(String, u128, u128)> {
    let listing = client
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .expect("list shards");
    let mut open: Vec<(String, u128, u128)> = listing
        .shards()
        .iter()
        .filter(|s| {
            s.sequence_number_range()
                .is_none_or(|r| r.ending_sequence_number().is_none())
        })
        .map(|s| {
            let range = s.hash_key_range().expect("hash range");
            (
                s.shard_id().to_owned(),
                range.starting_hash_key().parse().unwrap(),
                range.ending_hash_key().parse().unwrap(),
            )
        })
        .collect();
    open.sort_by_key(|s| s.1);
    open
}

/// The user records a KCL consumer processes, from records read with [`read_all`] (which
/// lists parent shards before their children, the order KCL processes them in), and how many
/// aggregates it discarded. Aggregates are unpacked the way KCL's de-aggregation does it: an
/// aggregate holding a user record whose partition key hashes outside the hash-key range of
/// the shard it was read from is discarded whole (that is how KCL drops a producer's copy
/// that landed on the wrong shard; the producer must send those records again). Plain
/// records pass as they are.
pub fn kcl_user_records(records: &[ReadRecord]) -> (Vec<ReadRecord>, usize) {
    let mut out = Vec::new();
    let mut discarded = 0;
    for r in records {
        if !r.data.starts_with(&kinesis::AGGREGATE_MAGIC) {
            out.push(r.clone());
            continue;
        }
        let inner = kinesis::deaggregate(&r.data).expect("a valid aggregated record");
        let in_range = |key: &str| (r.shard_start..=r.shard_end).contains(&kinesis::hash_key(key));
        if !inner.iter().all(|(key, _)| in_range(key)) {
            discarded += 1;
            continue;
        }
        out.extend(inner.into_iter().map(|(key, data)| ReadRecord {
            partition_key: key,
            data,
            ..r.clone()
        }));
    }
    (out, discarded)
}

/// Reads until at least `count` records are in the stream, or panics after `timeout`.
pub async fn read_at_least(
    client: &Client,
    stream: &str,
    count: usize,
    timeout: Duration,
) -> Vec<ReadRecord> {
    let deadline = Instant::now() + timeout;
    loop {
        let records = read_all(client, stream).await;
        if records.len() >= count {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {count} records in stream {stream} after {timeout:?}",
            records.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Faults the interceptor injects into PutRecords calls.
#[derive(Default)]
pub struct Faults {
    /// PutRecords calls seen so far.
    pub calls: AtomicU64,
    /// Calls (by number, from 0) that fail as a whole with throttling.
    pub throttle_calls: Mutex<HashSet<u64>>,
    /// Calls that fail as a whole with AccessDeniedException.
    pub deny_calls: Mutex<HashSet<u64>>,
    /// Every n-th record of a call (n > 0) fails with a per-record error, on odd calls.
    pub fail_every_nth_record: AtomicU64,
    /// Records failed so far (per-record and in throttled calls).
    pub records_failed: AtomicU64,
}

/// Which records of the current call were withheld from the emulator.
#[derive(Debug, Clone)]
struct Withheld {
    indexes: Vec<usize>,
    /// The error the whole call answers with, if any.
    call_error: Option<&'static str>,
}

impl Storable for Withheld {
    type Storer = StoreReplace<Self>;
}

/// Makes records or whole PutRecords calls fail: the records are removed from the request
/// before it is signed (so the emulator never stores them; a throttled call goes to a stream
/// that does not exist) and the answer is then edited to report them failed, the way Kinesis
/// reports throttling.
#[derive(Clone)]
pub struct FaultInterceptor(pub Arc<Faults>);

impl std::fmt::Debug for FaultInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FaultInterceptor")
    }
}

const PER_RECORD_CODES: [&str; 3] = [
    "ProvisionedThroughputExceededException",
    "InternalFailure",
    "KMSThrottlingException",
];

impl Intercept for FaultInterceptor {
    fn name(&self) -> &'static str {
        "FaultInterceptor"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_kinesis::error::BoxError> {
        let request = context.request_mut();
        let is_put_records = request
            .headers()
            .get("x-amz-target")
            .is_some_and(|t| t.ends_with(".PutRecords"));
        if !is_put_records {
            return Ok(());
        }
        let call = self.0.calls.fetch_add(1, Ordering::SeqCst);
        let mut body: serde_json::Value =
            serde_json::from_slice(request.body().bytes().expect("in-memory body"))?;
        let records = body["Records"].as_array_mut().expect("Records");
        let call_error = if self.0.deny_calls.lock().unwrap().contains(&call) {
            Some("AccessDeniedException")
        } else if self.0.throttle_calls.lock().unwrap().contains(&call) {
            Some("ProvisionedThroughputExceededException")
        } else {
            None
        };
        let throttled = call_error.is_some();
        let nth = self.0.fail_every_nth_record.load(Ordering::SeqCst) as usize;
        let indexes: Vec<usize> = if throttled {
            (0..records.len()).collect()
        } else if nth > 0 && call % 2 == 1 {
            (0..records.len()).filter(|i| i % nth == nth / 2).collect()
        } else {
            Vec::new()
        };
        if indexes.is_empty() {
            return Ok(());
        }
        self.0
            .records_failed
            .fetch_add(indexes.len() as u64, Ordering::SeqCst);
        if throttled {
            // Send the call where it cannot write anything; its answer is replaced below.
            body["StreamName"] = "cdc-bridge-no-such-stream".into();
        } else {
            let mut i = 0;
            records.retain(|_| {
                i += 1;
                !indexes.contains(&(i - 1))
            });
        }
        let bytes = serde_json::to_vec(&body)?;
        request
            .headers_mut()
            .insert("content-length", bytes.len().to_string());
        *request.body_mut() = SdkBody::from(bytes);
        cfg.interceptor_state().store_put(Withheld {
            indexes,
            call_error,
        });
        Ok(())
    }

    fn modify_before_attempt_completion(
        &self,
        context: &mut FinalizerInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_kinesis::error::BoxError> {
        let Some(withheld) = cfg.load::<Withheld>().cloned() else {
            return Ok(());
        };
        // Only this attempt's answer: a retry is a new call.
        cfg.interceptor_state().unset::<Withheld>();
        let Some(result) = context.output_or_error_mut() else {
            return Ok(());
        };
        if let Some(code) = withheld.call_error {
            let err = PutRecordsError::generic(
                ErrorMetadata::builder()
                    .code(code)
                    .message("injected call failure")
                    .build(),
            );
            *result = Err(OrchestratorError::operation(context::Error::erase(err)));
            return Ok(());
        }
        let Ok(output) = result else {
            return Ok(());
        };
        let output = output
            .downcast_mut::<PutRecordsOutput>()
            .expect("a PutRecords output");
        let mut accepted = std::mem::take(&mut output.records).into_iter();
        let total = accepted.len() + withheld.indexes.len();
        output.records = (0..total)
            .map(|i| match withheld.indexes.iter().position(|&w| w == i) {
                Some(k) => PutRecordsResultEntry::builder()
                    .error_code(PER_RECORD_CODES[k % PER_RECORD_CODES.len()])
                    .error_message("injected failure")
                    .build(),
                None => accepted.next().expect("an accepted record"),
            })
            .collect();
        output.failed_record_count = Some(withheld.indexes.len() as i32);
        Ok(())
    }
}

/// A TCP proxy on 127.0.0.1 that forwards to `target` until it is cut: then it closes every
/// open connection and every new one at once, as an unreachable endpoint would.
pub struct TcpProxy {
    pub port: u16,
    down: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(target: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let target = target.to_owned();
        let (down2, connections2) = (down.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if down2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                connections2.lock().unwrap().push(task);
            }
        });
        TcpProxy {
            port,
            down,
            connections,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
