//! The Kinesis sink against kinesalite: every event read back from every shard, each on the
//! shard its partition key hashes to, in source order per key; per-record failures and
//! throttled calls injected by our own interceptor; a 30 s outage through a TCP proxy; the
//! record-size policies; KPL aggregation, also across a shard split and merge as a KCL
//! consumer sees it.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cdc_bridge::checkpoint::CheckpointStore;
use cdc_bridge::config::{BatchConfig, BufferConfig};
use cdc_bridge::pipeline::{self, PipelineSettings};
use cdc_bridge::shutdown::ShutdownTrigger;
use cdc_bridge::sinks::kinesis::{self, hash_key, KinesisSink, AGGREGATE_MAGIC};
use cdc_bridge::sources::generator::{GeneratorConfig, GeneratorSource};
use cdc_bridge::telemetry::Telemetry;
use support::kinesis::{
    create_stream, endpoint, kcl_user_records, open_shards, read_all, read_at_least, sink_config,
    stream_name, wait_active, FaultInterceptor, Faults, ReadRecord, TcpProxy,
};
use support::{stderr, Workspace};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The generator's `seq` of a record (its source position).
fn seq(data: &[u8]) -> u64 {
    let value: serde_json::Value = serde_json::from_slice(data).expect("a JSON record");
    value["source"]["position"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Checks shard routing and per-key order; returns the seqs per partition key in stream order.
fn check_routing_and_order(records: &[ReadRecord]) -> HashMap<String, Vec<u64>> {
    let mut by_key: HashMap<String, Vec<u64>> = HashMap::new();
    let mut shard_of_key: HashMap<&str, &str> = HashMap::new();
    for r in records {
        let hash = hash_key(&r.partition_key);
        assert!(
            (r.shard_start..=r.shard_end).contains(&hash),
            "record of key {} is on shard {}, which does not own its hash",
            r.partition_key,
            r.shard_id
        );
        assert_eq!(
            *shard_of_key.entry(&r.partition_key).or_insert(&r.shard_id),
            r.shard_id
        );
        by_key
            .entry(r.partition_key.clone())
            .or_default()
            .push(seq(&r.data));
    }
    for (key, seqs) in &by_key {
        assert!(
            seqs.windows(2).all(|w| w[0] <= w[1]),
            "key {key} out of source order: {seqs:?}"
        );
    }
    by_key
}

/// Every seq in 1..=count appears; returns how many records were duplicates.
fn assert_complete(by_key: &HashMap<String, Vec<u64>>, count: u64) -> usize {
    let all: Vec<u64> = by_key.values().flatten().copied().collect();
    let distinct: BTreeSet<u64> = all.iter().copied().collect();
    let expected: BTreeSet<u64> = (1..=count).collect();
    let missing: Vec<_> = expected.difference(&distinct).take(10).collect();
    assert!(missing.is_empty(), "missing events, e.g. {missing:?}");
    assert_eq!(distinct.len() as u64, count, "no event beyond {count}");
    all.len() - distinct.len()
}

#[test]
fn every_event_lands_on_the_shard_of_its_key_in_source_order() {
    let rt = runtime();
    let client = rt.block_on(support::kinesis::client());
    let stream = stream_name("e2e");
    rt.block_on(create_stream(&client, &stream, 4));
    let ws = Workspace::new();
    let config = ws.config(&format!(
        "[[pipeline]]\nname = \"kinesis-e2e\"\n[pipeline.source]\nkind = \"generator\"\ncount = 3000\nkeys = 60\n\
         [pipeline.sink]\nkind = \"kinesis\"\nstream = \"{stream}\"\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\n\
         [pipeline.batch]\nlinger_ms = 5\n",
        endpoint()
    ));
    let check = ws.run(&["check", "--config", config.to_str().unwrap()]);
    let check_out = String::from_utf8_lossy(&check.stdout).into_owned() + &stderr(&check);
    assert!(check.status.success(), "{check_out}");
    assert!(
        check_out.contains(&format!(
            "stream {stream} is ACTIVE with 4 open shard(s): up to 4000 records/s"
        )),
        "{check_out}"
    );

    let output = ws.run(&["run", "--config", config.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let records = rt.block_on(read_at_least(
        &client,
        &stream,
        3000,
        Duration::from_secs(30),
    ));
    let by_key = check_routing_and_order(&records);
    assert_eq!(
        assert_complete(&by_key, 3000),
        0,
        "no duplicates without faults"
    );
    assert_eq!(by_key.len(), 60);
    let shards: BTreeSet<&str> = records.iter().map(|r| r.shard_id.as_str()).collect();
    assert_eq!(shards.len(), 4, "keys spread over all shards");
    for r in &records {
        // What Redshift streaming ingestion needs: one plain UTF-8 JSON object per record.
        assert!(r.data.len() <= 1024 * 1024);
        assert!(!r.data.starts_with(&AGGREGATE_MAGIC));
        let value: serde_json::Value =
            serde_json::from_str(std::str::from_utf8(&r.data).expect("UTF-8")).unwrap();
        assert!(value.is_object());
        let id = &value["key"]["id"];
        assert_eq!(r.partition_key, format!("generator.items:{{\"id\":{id}}}"));
    }
}

fn settings(name: &str, buffer_bytes: u32) -> PipelineSettings {
    let batch = BatchConfig {
        linger_ms: 5,
        max_events: 200.try_into().unwrap(),
        ..BatchConfig::default()
    };
    PipelineSettings {
        name: name.into(),
        batch,
        buffer: BufferConfig {
            max_events: 2000.try_into().unwrap(),
            max_bytes: buffer_bytes.try_into().unwrap(),
        },
    }
}

fn generator(toml_text: &str) -> Box<GeneratorSource> {
    let config: GeneratorConfig = toml::from_str(toml_text).unwrap();
    Box::new(GeneratorSource::new(config))
}

#[test]
fn per_record_failures_and_throttled_calls_keep_every_key_in_order() {
    let rt = runtime();
    rt.block_on(async {
        let client = support::kinesis::client().await;
        let stream = stream_name("faults");
        create_stream(&client, &stream, 3).await;
        let faults = Arc::new(Faults::default());
        faults.fail_every_nth_record.store(3, Ordering::SeqCst);
        faults.throttle_calls.lock().unwrap().extend([0, 4, 5, 10]);
        let (config, stream_ref) = sink_config(
            &stream,
            "max_records_per_call = 40\nlinger_ms = 2\nshard_pacing = true",
        );
        let interceptor = FaultInterceptor(faults.clone());
        let sink = KinesisSink::connect_with(&config, &stream_ref, |b| b.interceptor(interceptor))
            .await
            .unwrap();
        let stats = sink.stats();
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(CheckpointStore::open(dir.path()).unwrap());
        let trigger = ShutdownTrigger::new();
        let telemetry = Telemetry::new();
        let summary = pipeline::run_observed(
            &settings("faults", 1 << 20),
            generator("count = 4000\nkeys = 25"),
            Box::new(sink),
            store,
            trigger.subscribe(),
            telemetry.probe("faults"),
        )
        .await
        .expect("the pipeline completes despite the faults");
        assert_eq!(summary.events_delivered, 4000);
        assert!(faults.records_failed.load(Ordering::SeqCst) > 100);
        let retried = stats.retried.load(Ordering::SeqCst);
        assert!(retried > 100);
        // The operator sees the same retries: records rejected one by one, and the records
        // of the throttled calls.
        let metrics = telemetry.render();
        let series = |reason: &str| {
            let name = format!(
                "cdc_bridge_sink_retries_total{{pipeline=\"faults\",reason=\"{reason}\"}} "
            );
            metrics
                .lines()
                .find_map(|line| line.strip_prefix(name.as_str())?.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {reason} series in\n{metrics}"))
        };
        assert_eq!(series("rejected"), retried);
        assert!(series("call_failed") >= 4, "four calls were throttled");

        let records = read_at_least(&client, &stream, 4000, Duration::from_secs(30)).await;
        let by_key = check_routing_and_order(&records);
        // Failed records never reached the emulator: retries add no duplicates.
        assert_eq!(assert_complete(&by_key, 4000), 0);
        // Per key, each event exactly once and in order.
        for seqs in by_key.values() {
            assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        }
    });
}

/// Resident memory of this test process (nextest runs each test in its own process).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
fn a_30_second_outage_holds_the_source_back_and_loses_nothing() {
    let rt = runtime();
    rt.block_on(async {
        let client = support::kinesis::client().await;
        let stream = stream_name("outage");
        create_stream(&client, &stream, 2).await;
        let target = endpoint().trim_start_matches("http://").to_owned();
        let proxy = TcpProxy::start(&target).await;
        let (mut config, stream_ref) = sink_config(&stream, "");
        config.endpoint_url = Some(proxy.url());
        let sink = KinesisSink::connect(&config, &stream_ref).await.unwrap();
        let stats = sink.stats();
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(CheckpointStore::open(dir.path()).unwrap());
        let trigger = ShutdownTrigger::new();
        // An endless source, as fast as the sink allows.
        let shutdown = trigger.subscribe();
        let run = tokio::spawn(async move {
            let settings = settings("outage", 4 << 20);
            let source = generator("keys = 100\npayload_bytes = 512");
            pipeline::run(&settings, source, Box::new(sink), store, shutdown).await
        });
        let accepted = || stats.events_accepted.load(Ordering::SeqCst);
        let wait_for = |n: u64| async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while accepted() < n {
                assert!(
                    Instant::now() < deadline,
                    "stuck at {} accepted events",
                    accepted()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        wait_for(3000).await;

        proxy.cut();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (frozen, rss_at_cut) = (accepted(), rss_bytes());
        let mut peak = rss_at_cut;
        for _ in 0..28 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            peak = peak.max(rss_bytes());
        }
        assert_eq!(
            accepted(),
            frozen,
            "nothing is accepted while the endpoint is unreachable"
        );
        assert!(
            peak < rss_at_cut + (64 << 20),
            "memory grew by {} MiB during the outage",
            (peak - rss_at_cut) >> 20
        );
        proxy.restore();
        wait_for(frozen + 5000).await;
        trigger.trigger();
        let summary = run
            .await
            .unwrap()
            .expect("the pipeline recovers and stops cleanly");

        let records = read_at_least(
            &client,
            &stream,
            summary.events_delivered as usize,
            Duration::from_secs(30),
        )
        .await;
        let by_key = check_routing_and_order(&records);
        let max_seq = by_key.values().flatten().copied().max().unwrap();
        assert!(max_seq >= frozen + 5000);
        // Calls cut mid-flight may have been stored and are sent again: duplicates, never gaps.
        let duplicates = assert_complete(&by_key, max_seq);
        eprintln!("{} records, {duplicates} duplicates", records.len());
    });
}

#[test]
fn oversized_records_fail_or_go_to_the_dead_letter_file() {
    let rt = runtime();
    let client = rt.block_on(support::kinesis::client());
    let stream = stream_name("oversize");
    rt.block_on(create_stream(&client, &stream, 1));
    let ws = Workspace::new();
    let body = |name: &str, extra: &str| {
        format!(
            "[[pipeline]]\nname = \"{name}\"\n[pipeline.source]\nkind = \"generator\"\ncount = 10\nkeys = 10\npayload_bytes = 5000\n\
             [pipeline.sink]\nkind = \"kinesis\"\nstream = \"{stream}\"\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\nmax_record_bytes = 2000\n{extra}\n",
            endpoint()
        )
    };
    // Every row carries a 5,000-byte payload, over the 2,000-byte limit.
    let failing = ws.config(&body("kinesis-oversize-fail", ""));
    let output = ws.run(&["run", "--config", failing.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output)
            .contains("table generator.items at position 1 exceeds the limit of 2000 bytes")
            && !stderr(&output).contains("\"id\""),
        "{}",
        stderr(&output)
    );

    let dead_letter = ws.config(&body(
        "kinesis-oversize-dl",
        "oversize = \"dead_letter\"\ndead_letter_path = \"dead/oversize.jsonl\"",
    ));
    let output = ws.run(&["run", "--config", dead_letter.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let lines = std::fs::read_to_string(ws.path("dead/oversize.jsonl")).unwrap();
    assert_eq!(
        lines.lines().count(),
        10,
        "every oversized event is kept aside"
    );
    assert!(lines.contains(&format!("\"destination\":\"{stream}\"")));
    assert_eq!(
        ws.stored_seq("kinesis-oversize-dl"),
        10,
        "and the pipeline went on"
    );
    assert!(
        rt.block_on(read_all(&client, &stream)).is_empty(),
        "nothing oversized was sent"
    );
}

#[test]
fn aggregated_records_deaggregate_to_exactly_the_events_sent() {
    let rt = runtime();
    let client = rt.block_on(support::kinesis::client());
    let stream = stream_name("aggregated");
    rt.block_on(create_stream(&client, &stream, 2));
    let ws = Workspace::new();
    let config = ws.config(&format!(
        "[[pipeline]]\nname = \"kinesis-agg\"\n[pipeline.source]\nkind = \"generator\"\ncount = 2000\nkeys = 40\n\
         [pipeline.sink]\nkind = \"kinesis\"\nstream = \"{stream}\"\nendpoint_url = \"{}\"\nregion = \"us-east-1\"\naggregation = true\n",
        endpoint()
    ));
    let output = ws.run(&["run", "--config", config.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let records = rt.block_on(read_all(&client, &stream));
    assert!(
        records.len() < 2000 / 4,
        "{} Kinesis records for 2000 events",
        records.len()
    );
    let mut events = Vec::new();
    for r in &records {
        let inner = if r.data.starts_with(&AGGREGATE_MAGIC) {
            kinesis::deaggregate(&r.data).expect("a valid aggregated record")
        } else {
            vec![(r.partition_key.clone(), r.data.clone())]
        };
        for (key, data) in inner {
            // Each user record sits on the shard its own key hashes to.
            events.push(ReadRecord {
                partition_key: key,
                data,
                ..r.clone()
            });
        }
    }
    let by_key = check_routing_and_order(&events);
    assert_eq!(assert_complete(&by_key, 2000), 0);
}

/// A split and then a merge while aggregates are written: the shard map the sink groups
/// records by is stale for a moment each time, and an aggregate that lands on a shard whose
/// range does not hold all its keys is discarded whole by KCL. Every event must still reach a
/// KCL consumer, in order per key.
#[test]
fn a_split_and_a_merge_during_a_run_lose_nothing_for_a_kcl_consumer() {
    let rt = runtime();
    rt.block_on(async {
        let client = support::kinesis::client().await;
        let stream = stream_name("reshard");
        create_stream(&client, &stream, 2).await;
        // A long linger: many events per aggregate, so that one aggregate holds keys of
        // both halves of a split shard.
        let (config, stream_ref) = sink_config(&stream, "aggregation = true\nlinger_ms = 50");
        let sink = KinesisSink::connect(&config, &stream_ref).await.unwrap();
        let stats = sink.stats();
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(CheckpointStore::open(dir.path()).unwrap());
        let trigger = ShutdownTrigger::new();
        let count = 12_000;
        let shutdown = trigger.subscribe();
        let run = tokio::spawn(async move {
            let source = generator(&format!("count = {count}\nkeys = 100\nrate_per_sec = 1500"));
            pipeline::run(&settings("reshard", 4 << 20), source, Box::new(sink), store, shutdown)
                .await
        });
        let accepted = || stats.events_accepted.load(Ordering::SeqCst);
        let wait_for = |n: u64| async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while accepted() < n {
                assert!(Instant::now() < deadline, "stuck at {} events", accepted());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };

        wait_for(count / 4).await;
        let shards = open_shards(&client, &stream).await;
        let (parent, start, end) = &shards[0];
        client
            .split_shard()
            .stream_name(&stream)
            .shard_to_split(parent)
            .new_starting_hash_key((start + (end - start) / 2).to_string())
            .send()
            .await
            .expect("split shard");
        wait_active(&client, &stream).await;
        let split_at = accepted();
        assert!(split_at < count / 2, "the split came too late to matter");

        wait_for(count / 2).await;
        let shards = open_shards(&client, &stream).await;
        assert_eq!(shards.len(), 3);
        // The upper child of the split and the original second shard.
        client
            .merge_shards()
            .stream_name(&stream)
            .shard_to_merge(&shards[1].0)
            .adjacent_shard_to_merge(&shards[2].0)
            .send()
            .await
            .expect("merge shards");
        wait_active(&client, &stream).await;
        let merge_at = accepted();
        assert!(merge_at < count * 3 / 4, "the merge came too late to matter");

        let summary = run.await.unwrap().expect("the pipeline completes");
        assert_eq!(summary.events_delivered, count);

        let records = read_all(&client, &stream).await;
        let written: BTreeSet<&str> = records.iter().map(|r| r.shard_id.as_str()).collect();
        assert_eq!(written.len(), 5, "records on the 2 first shards, 2 children and the merged one");
        let (events, discarded) = kcl_user_records(&records);
        let misrouted = stats.misrouted.load(Ordering::SeqCst);
        eprintln!(
            "{} Kinesis records, {discarded} aggregates discarded by the consumer, {misrouted} sent again",
            records.len(),
        );
        let mut by_key: HashMap<String, Vec<u64>> = HashMap::new();
        for e in &events {
            by_key.entry(e.partition_key.clone()).or_default().push(seq(&e.data));
        }
        for (key, seqs) in &by_key {
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "key {key} out of source order: {seqs:?}"
            );
        }
        assert_eq!(assert_complete(&by_key, count), 0, "no duplicates");
        assert!(
            discarded > 0,
            "no aggregate landed on a shard that does not hold its keys: the split was not exercised"
        );
        // Exactly those were sent again: the merge, which only widens ranges, costs nothing.
        assert_eq!(misrouted as usize, discarded);
    });
}

/// generator -> kinesis on `stream`, for the error cases.
fn small_config(ws: &Workspace, stream: &str, extra: &str) -> String {
    ws.config(&format!(
        "[[pipeline]]\nname = \"kinesis-errors\"\n[pipeline.source]\nkind = \"generator\"\ncount = 5\n\
         [pipeline.sink]\nkind = \"kinesis\"\nstream = \"{stream}\"\nendpoint_url = \"{}\"\n{extra}\n",
        endpoint()
    ))
    .to_str()
    .unwrap()
    .to_owned()
}

#[test]
fn a_missing_stream_stops_with_its_name_and_the_fix() {
    let ws = Workspace::new();
    let config = small_config(&ws, "no-such-stream", "region = \"us-east-1\"");
    let output = ws.run(&["run", "--config", &config]);
    assert_eq!(output.status.code(), Some(1));
    let expected = "stream \"no-such-stream\" does not exist in region us-east-1 (ResourceNotFoundException): create it";
    assert!(stderr(&output).contains(expected), "{}", stderr(&output));
    let check = ws.run(&["check", "--config", &config]);
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stdout).contains(expected));
    assert_eq!(ws.stored_seq("kinesis-errors"), 0, "nothing acknowledged");
}

#[test]
fn missing_credentials_or_region_say_how_to_provide_them() {
    let ws = Workspace::new();
    let config = small_config(&ws, "any-stream", "region = \"us-east-1\"");
    let no_aws_files = [
        ("AWS_CONFIG_FILE", "/nonexistent/aws-config"),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials",
        ),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let output = ws
        .command(&["run", "--config", &config])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .envs(no_aws_files)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("no usable AWS credentials")
            && stderr(&output)
                .contains("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE"),
        "{}",
        stderr(&output)
    );

    let config = small_config(&ws, "any-stream", "");
    let output = ws
        .command(&["run", "--config", &config])
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .envs(no_aws_files)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("no AWS region: set `region` in the sink, AWS_REGION"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn access_denied_stops_the_pipeline_with_the_permissions_it_needs() {
    let rt = runtime();
    rt.block_on(async {
        let client = support::kinesis::client().await;
        let stream = stream_name("denied");
        create_stream(&client, &stream, 1).await;
        let faults = Arc::new(Faults::default());
        faults.deny_calls.lock().unwrap().insert(2);
        let (config, stream_ref) = sink_config(
            &stream,
            "max_records_per_call = 10\nmax_concurrent_calls = 1",
        );
        let interceptor = FaultInterceptor(faults.clone());
        let sink = KinesisSink::connect_with(&config, &stream_ref, |b| b.interceptor(interceptor))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(CheckpointStore::open(dir.path()).unwrap());
        let trigger = ShutdownTrigger::new();
        let err = pipeline::run(
            &settings("denied", 1 << 20),
            generator("count = 100\nkeys = 100"),
            Box::new(sink),
            store.clone(),
            trigger.subscribe(),
        )
        .await
        .expect_err("access denied stops the pipeline");
        assert_eq!(err.disposition(), cdc_bridge::error::Disposition::Fatal);
        let message = cdc_bridge::error::report(&err);
        assert!(
            message.contains(&format!(
                "access to stream \"{stream}\" denied (AccessDeniedException"
            )) && message.contains("kinesis:PutRecords"),
            "{message}"
        );
        // The calls before the refused one were written; nothing was acknowledged beyond them.
        let stored: usize = store
            .load("denied")
            .unwrap()
            .get("")
            .map_or(0, |p| p.token.parse().unwrap());
        let in_stream = read_all(&client, &stream).await.len();
        assert!(in_stream < 100, "the pipeline stopped at the refused call");
        assert!(
            stored <= in_stream,
            "stored {stored} but only {in_stream} written"
        );
    });
}
