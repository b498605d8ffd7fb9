//! The reader against scripted shard trees, through the same [`StreamsApi`] the AWS client
//! implements (no emulator rolls shards): lineage order across a split, a closed parent,
//! an expired iterator, resume from per-shard checkpoints, trimmed data, a disabled stream.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodbstreams::types::AttributeValue;
use tokio::sync::watch;

use super::*;
use crate::checkpoint::{Checkpoints, Position};
use crate::envelope::{ChangeEvent, Op, Value};
use crate::shutdown::ShutdownTrigger;
use crate::source::{Events, SourceContext};

struct ScriptShard {
    info: ShardInfo,
    records: Vec<StreamRecord>,
    /// Records before this index are trimmed (gone).
    trimmed_before: usize,
}

#[derive(Default)]
struct Script {
    shards: Vec<ScriptShard>,
    status: Option<StreamStatus>,
    /// (shard, record index): the first GetRecords at this point answers ExpiredIterator.
    expire_once: HashSet<(String, usize)>,
    /// (shard, record index): the first GetRecords at this point answers TrimmedDataAccess.
    trim_once: HashSet<(String, usize)>,
    calls: Vec<String>,
    /// Every GetRecords: its iterator and when it came (the test clock).
    reads: Vec<(String, tokio::time::Instant)>,
}

#[derive(Clone, Default)]
struct Scripted(Arc<Mutex<Script>>);

fn record(key: &str, version: u32, seq: u64) -> StreamRecord {
    let image: HashMap<String, AttributeValue> = [
        ("pk".to_owned(), AttributeValue::S(key.into())),
        ("version".to_owned(), AttributeValue::N(version.to_string())),
    ]
    .into();
    StreamRecord {
        sequence_number: format!("{seq:021}"),
        kind: if version == 1 {
            RecordKind::Insert
        } else {
            RecordKind::Modify
        },
        keys: [("pk".to_owned(), AttributeValue::S(key.into()))].into(),
        new_image: Some(image),
        old_image: None,
        created_ms: Some(1_700_000_000_000),
        ttl: false,
    }
}

fn shard(id: &str, parent: Option<&str>, closed: bool, records: Vec<StreamRecord>) -> ScriptShard {
    ScriptShard {
        info: ShardInfo {
            id: id.into(),
            parent: parent.map(Into::into),
            closed,
        },
        records,
        trimmed_before: 0,
    }
}

#[async_trait]
impl StreamsApi for Scripted {
    async fn describe(&self, _arn: &str) -> Result<StreamInfo, ApiError> {
        let script = self.0.lock().unwrap();
        Ok(StreamInfo {
            table: "items".into(),
            status: script.status.unwrap_or(StreamStatus::Enabled),
            view_type: "NEW_AND_OLD_IMAGES".into(),
            shards: script.shards.iter().map(|s| s.info.clone()).collect(),
        })
    }

    async fn iterator(
        &self,
        _arn: &str,
        shard: &str,
        start: &Start,
    ) -> Result<Option<String>, ApiError> {
        let mut script = self.0.lock().unwrap();
        script.calls.push(format!("iterator {shard} {start:?}"));
        let s = script
            .shards
            .iter()
            .find(|s| s.info.id == shard)
            .ok_or_else(|| ApiError::NotFound(shard.into()))?;
        let index = match start {
            Start::TrimHorizon => s.trimmed_before,
            Start::Latest => s.records.len(),
            Start::After(seq) => {
                let at = s
                    .records
                    .iter()
                    .position(|r| &r.sequence_number == seq)
                    .ok_or_else(|| ApiError::Fatal(format!("no record {seq}")))?;
                if at < s.trimmed_before {
                    return Err(ApiError::Trimmed(seq.clone()));
                }
                at + 1
            }
        };
        Ok(Some(format!("{shard}#{index}")))
    }

    async fn records(&self, iterator: &str, _limit: i32) -> Result<Page, ApiError> {
        let mut script = self.0.lock().unwrap();
        script
            .reads
            .push((iterator.to_owned(), tokio::time::Instant::now()));
        let (shard, index) = iterator.split_once('#').unwrap();
        let index: usize = index.parse().unwrap();
        if script.expire_once.remove(&(shard.to_owned(), index)) {
            return Err(ApiError::ExpiredIterator);
        }
        if script.trim_once.remove(&(shard.to_owned(), index)) {
            return Err(ApiError::Trimmed(iterator.to_owned()));
        }
        let s = script.shards.iter().find(|s| s.info.id == shard).unwrap();
        // Two records per call, to page through shards.
        let end = (index + 2).min(s.records.len());
        let records = s.records[index..end].to_vec();
        let next = (!(s.info.closed && end == s.records.len())).then(|| format!("{shard}#{end}"));
        Ok(Page { records, next })
    }
}

fn config(extra: &str) -> DynamoDbConfig {
    toml::from_str(&format!(
        "table = \"items\"\npoll_interval_ms = 200\n{extra}"
    ))
    .unwrap()
}

struct Run {
    events: Vec<ChangeEvent>,
    marks: Vec<(String, String)>,
    forgotten: Vec<String>,
    result: Result<(), String>,
}

/// A source running on a scripted API, with what it emitted so far.
struct Running {
    task: tokio::task::JoinHandle<Result<(), crate::error::BoxError>>,
    rx: crate::source::Queue,
    trigger: ShutdownTrigger,
    out: Run,
}

/// Starts the source after `resume`, reading the partitions `partitions` grants (or all).
fn start(
    api: Scripted,
    config: DynamoDbConfig,
    resume: Checkpoints,
    partitions: Option<Arc<crate::coordination::PartitionLeases>>,
) -> Running {
    let probe = crate::telemetry::PipelineProbe::detached("p");
    let (emit, rx) = crate::source::channel(1000, 1 << 24, probe.clone());
    let trigger = ShutdownTrigger::new();
    let (_stored_tx, stored) = watch::channel(resume.clone());
    let ctx = SourceContext {
        pipeline: "p".into(),
        resume,
        emit,
        stored,
        shutdown: trigger.subscribe(),
        probe,
        leased: false,
        partitions,
    };
    let source = Box::new(DynamoDbSource::with_api(
        config,
        Arc::new(api),
        "arn:scripted",
    ));
    Running {
        task: tokio::spawn(source.run(ctx)),
        rx,
        trigger,
        out: Run {
            events: Vec::new(),
            marks: Vec::new(),
            forgotten: Vec::new(),
            result: Ok(()),
        },
    }
}

impl Running {
    /// Takes what arrives until `until`, or until `events` events arrived in all.
    async fn receive_until(&mut self, events: usize, until: tokio::time::Instant) {
        while self.out.events.len() < events && self.out.receive(&mut self.rx, until).await {}
    }

    /// Lets the reader go on briefly (shards finishing), then stops it.
    async fn stop(mut self) -> Run {
        let settle = tokio::time::Instant::now() + Duration::from_millis(600);
        while self.out.receive(&mut self.rx, settle).await {}
        self.trigger.trigger();
        self.out.result = self
            .task
            .await
            .unwrap()
            .map_err(|e| crate::error::report(&e));
        self.out
    }
}

/// Runs the source until `events` events arrived (or it ended), then stops it.
async fn run(api: Scripted, config: DynamoDbConfig, resume: Checkpoints, events: usize) -> Run {
    let mut running = start(api, config, resume, None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    running.receive_until(events, deadline).await;
    // Fewer events are fine only if the source ended before the deadline.
    assert!(
        running.out.events.len() >= events || tokio::time::Instant::now() < deadline,
        "only {} of {events} events",
        running.out.events.len()
    );
    running.stop().await
}

impl Run {
    /// Takes the next item, if one comes before `until` and the source is still running.
    async fn receive(
        &mut self,
        rx: &mut crate::source::Queue,
        until: tokio::time::Instant,
    ) -> bool {
        tokio::select! {
            item = rx.recv() => match item {
                Some(item) => {
                    match item.events {
                        Events::None => {}
                        Events::One(event) => self.events.push(event),
                        Events::Many(events) => self.events.extend(events),
                    }
                    if let Some(mark) = item.mark { self.marks.push((mark.partition, mark.position.token)); }
                    self.forgotten.extend(item.forget);
                    true
                }
                None => false,
            },
            _ = tokio::time::sleep_until(until) => false,
        }
    }
}

fn versions(events: &[ChangeEvent]) -> BTreeMap<String, Vec<u32>> {
    let mut by_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for event in events {
        let Some(Value::Text(key)) = event.key.get("pk") else {
            panic!("pk")
        };
        let Some(Value::Decimal(v)) = event.after.as_ref().unwrap().get("version") else {
            panic!("version")
        };
        by_key
            .entry(key.clone())
            .or_default()
            .push(v.as_str().parse().unwrap());
    }
    by_key
}

/// A -> (B1, B2) split, B1 -> C; k1 and k2 move across the split.
fn split_tree() -> Scripted {
    let script = Script {
        shards: vec![
            shard(
                "A",
                None,
                true,
                vec![
                    record("k1", 1, 1),
                    record("k2", 1, 2),
                    record("k1", 2, 3),
                    record("k2", 2, 4),
                    record("k1", 3, 5),
                ],
            ),
            shard(
                "B1",
                Some("A"),
                true,
                vec![
                    record("k1", 4, 10),
                    record("k1", 5, 11),
                    record("k1", 6, 12),
                ],
            ),
            shard(
                "B2",
                Some("A"),
                false,
                vec![record("k2", 3, 20), record("k2", 4, 21)],
            ),
            shard("C", Some("B1"), false, vec![record("k1", 7, 30)]),
        ],
        expire_once: [("B1".to_owned(), 2)].into(),
        ..Script::default()
    };
    Scripted(Arc::new(Mutex::new(script)))
}

#[tokio::test]
async fn parents_are_read_to_their_end_before_children_through_a_split() {
    let api = split_tree();
    let out = run(api.clone(), config(""), Checkpoints::new(), 11).await;
    assert_eq!(out.result, Ok(()));
    let by_key = versions(&out.events);
    assert_eq!(
        by_key["k1"],
        [1, 2, 3, 4, 5, 6, 7],
        "per item order across A -> B1 -> C, nothing skipped or repeated"
    );
    assert_eq!(by_key["k2"], [1, 2, 3, 4]);
    // Every event of A comes before any event of its children.
    let shard_of = |e: &ChangeEvent| match &e.source.position {
        crate::envelope::SourcePosition::Dynamodb(position) => position.shard.to_string(),
        other => panic!("not a DynamoDB position: {other:?}"),
    };
    let last_a = out.events.iter().rposition(|e| shard_of(e) == "A").unwrap();
    let first_child = out.events.iter().position(|e| shard_of(e) != "A").unwrap();
    assert!(last_a < first_child);
    // Closed shards are remembered as finished; open ones by sequence number.
    for closed in ["A", "B1"] {
        assert!(
            out.marks
                .contains(&(closed.to_owned(), FINISHED.to_owned())),
            "{closed} finished: {:?}",
            out.marks
        );
    }
    assert!(!out
        .marks
        .iter()
        .any(|(shard, token)| shard == "B2" && token == FINISHED));
    // The expired iterator was renewed after the last record read.
    let calls = api.0.lock().unwrap().calls.clone();
    assert!(
        calls.contains(&format!("iterator B1 After(\"{:021}\")", 11)),
        "{calls:?}"
    );
    assert_eq!(
        out.events[0].source.position.to_string(),
        format!("A:{:021}", 1)
    );
}

/// DynamoDB Streams limits the readers of a shard (two), not its calls per second: a backlog is
/// read page after page, and only an empty page waits `poll_interval_ms`. Paused clock.
#[tokio::test(start_paused = true)]
async fn a_backlog_is_read_without_waiting_between_pages_and_an_idle_shard_is_polled_at_the_interval(
) {
    let backlog = (1..=40).map(|i| record(&format!("k{i}"), 1, i)).collect();
    let api = Scripted(Arc::new(Mutex::new(Script {
        shards: vec![shard("A", None, false, backlog)],
        ..Script::default()
    })));
    let out = run(api.clone(), config(""), Checkpoints::new(), 40).await;
    assert_eq!(out.result, Ok(()));
    assert_eq!(out.events.len(), 40);
    let reads = api.0.lock().unwrap().reads.clone();
    let at = |iterator: &str| {
        reads
            .iter()
            .filter(|(it, _)| it == iterator)
            .map(|(_, t)| *t)
            .collect::<Vec<_>>()
    };
    let (first, last_page) = (at("A#0")[0], at("A#38")[0]);
    assert!(
        last_page - first < Duration::from_millis(50),
        "20 pages took {:?}",
        last_page - first
    );
    let idle = at("A#40");
    assert!(
        idle.len() >= 2,
        "the caught-up shard is polled again: {idle:?}"
    );
    for pair in idle.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(200),
            "an idle shard waits poll_interval_ms between calls: {idle:?}"
        );
    }
}

#[tokio::test]
async fn a_restart_resumes_each_shard_after_its_checkpoint() {
    let resume: Checkpoints = [
        ("A".to_owned(), finished_position()),
        ("B1".to_owned(), seq_position(&format!("{:021}", 10))),
    ]
    .into();
    let out = run(split_tree(), config(""), resume, 5).await;
    assert_eq!(out.result, Ok(()));
    let by_key = versions(&out.events);
    assert_eq!(by_key["k1"], [5, 6, 7], "B1 after its checkpoint, then C");
    assert_eq!(
        by_key["k2"],
        [3, 4],
        "B2 from its start; nothing of the finished A"
    );
}

#[tokio::test]
async fn trimmed_records_stop_the_source_unless_restarting_from_the_oldest() {
    let tree = || {
        let api = split_tree();
        api.0.lock().unwrap().shards[0].trimmed_before = 3;
        api
    };
    let resume: Checkpoints = [("A".to_owned(), seq_position(&format!("{:021}", 1)))].into();
    let out = run(tree(), config(""), resume.clone(), 0).await;
    let err = out.result.unwrap_err();
    assert!(
        err.contains("records of shard A after 000000000000000000001 are gone"),
        "{err}"
    );
    assert!(err.contains("on_trimmed = \"restart_from_oldest\""));
    assert!(out.events.is_empty());

    let out = run(
        tree(),
        config("on_trimmed = \"restart_from_oldest\""),
        resume,
        8,
    )
    .await;
    assert_eq!(out.result, Ok(()));
    let by_key = versions(&out.events);
    assert_eq!(
        by_key["k1"],
        [3, 4, 5, 6, 7],
        "from the oldest record left in A"
    );
    assert_eq!(by_key["k2"], [2, 3, 4]);
}

#[tokio::test]
async fn a_checkpointed_shard_that_aged_out_is_reported_lost() {
    let resume: Checkpoints = [("Z".to_owned(), seq_position("5"))].into();
    let out = run(split_tree(), config(""), resume, 0).await;
    assert!(out
        .result
        .unwrap_err()
        .contains("records of shard Z after 5 are gone"));
}

#[tokio::test]
async fn a_disabled_stream_is_read_to_its_end_then_stops_with_the_fix() {
    let api = Scripted(Arc::new(Mutex::new(Script {
        shards: vec![shard(
            "A",
            None,
            true,
            vec![record("k1", 1, 1), record("k1", 2, 2)],
        )],
        status: Some(StreamStatus::Disabled),
        ..Script::default()
    })));
    let out = run(api, config(""), Checkpoints::new(), 2).await;
    assert_eq!(versions(&out.events)["k1"], [1, 2]);
    let err = out.result.unwrap_err();
    assert!(
        err.contains("stream of table items is disabled")
            && err.contains("reset this pipeline's checkpoints"),
        "{err}"
    );
}

#[tokio::test]
async fn start_latest_skips_the_past_but_reads_new_shards_whole() {
    let api = split_tree();
    let out = run(
        api.clone(),
        config("start = \"latest\""),
        Checkpoints::new(),
        0,
    )
    .await;
    assert_eq!(out.result, Ok(()));
    assert!(
        out.events.is_empty(),
        "nothing from before the start: {:?}",
        versions(&out.events)
    );
    // A shard created after the start is read from its beginning.
    api.0
        .lock()
        .unwrap()
        .shards
        .push(shard("D", Some("B2"), false, vec![record("k9", 1, 40)]));
    api.0.lock().unwrap().shards[2].info.closed = true;
    let calls = api.0.lock().unwrap().calls.clone();
    assert!(
        calls.contains(&"iterator B2 Latest".to_owned()),
        "{calls:?}"
    );
}

#[tokio::test]
async fn end_marks_of_shards_gone_from_the_stream_are_forgotten_and_never_read() {
    let resume: Checkpoints = [
        ("A".to_owned(), finished_position()),
        ("Z1".to_owned(), finished_position()),
        ("Z2".to_owned(), finished_position()),
        ("Z3".to_owned(), seq_position("7")),
    ]
    .into();
    let api = split_tree();
    let out = run(
        api.clone(),
        config("on_trimmed = \"restart_from_oldest\""),
        resume,
        6,
    )
    .await;
    assert_eq!(out.result, Ok(()));
    // Z3 aged out unread (reported lost, then finished): forgotten at the next listing, which
    // B1's end brings before C is read.
    assert_eq!(out.forgotten, ["Z1", "Z2", "Z3"], "A is still listed");
    let by_key = versions(&out.events);
    assert_eq!(by_key["k1"], [4, 5, 6, 7], "nothing of the finished A");
    let calls = api.0.lock().unwrap().calls.clone();
    assert!(
        !calls
            .iter()
            .any(|c| c.contains(" Z") || c.starts_with("iterator A")),
        "{calls:?}"
    );
}

#[tokio::test]
async fn the_last_checkpoint_is_kept_so_that_a_restart_is_not_a_first_start() {
    let api = Scripted(Arc::new(Mutex::new(Script {
        shards: vec![shard("S", None, false, Vec::new())],
        ..Script::default()
    })));
    let resume: Checkpoints = [
        ("Z1".to_owned(), finished_position()),
        ("Z2".to_owned(), finished_position()),
    ]
    .into();
    let out = run(api.clone(), config("start = \"latest\""), resume, 0).await;
    assert_eq!(out.result, Ok(()));
    assert_eq!(out.forgotten, ["Z1"], "Z2 kept");
    let calls = api.0.lock().unwrap().calls.clone();
    assert!(
        calls.contains(&"iterator S TrimHorizon".to_owned()),
        "a restart reads new shards from their start: {calls:?}"
    );
}

#[test]
fn sequence_positions_order_numerically_and_finished_comes_last() {
    let (a, b) = (seq_position("999"), seq_position("1000"));
    assert!(a.rank < b.rank);
    assert!(b.rank < finished_position().rank);
    let _ = Position::from_counter("x", 1);
}

#[tokio::test]
async fn ttl_deletes_are_marked_and_images_follow_the_view() {
    let mut removed = record("k1", 2, 2);
    removed.kind = RecordKind::Remove;
    removed.old_image = removed.new_image.take();
    removed.ttl = true;
    let api = Scripted(Arc::new(Mutex::new(Script {
        shards: vec![shard("A", None, false, vec![record("k1", 1, 1), removed])],
        ..Script::default()
    })));
    let out = run(api, config(""), Checkpoints::new(), 2).await;
    let (insert, delete) = (&out.events[0], &out.events[1]);
    assert_eq!((insert.op, insert.source.ttl_expired), (Op::Insert, false));
    assert_eq!((delete.op, delete.source.ttl_expired), (Op::Delete, true));
    assert!(delete.after.is_none() && delete.before.is_some());
    let mut json = Vec::new();
    crate::format::JsonFormat::write_value(delete, &mut json);
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(json["source"]["ttl_expired"], true);
    assert_eq!(json["source"]["position"], format!("A:{:021}", 2));
}

/// A shard with no checkpoint, read from its trim horizon, whose first read answers "trimmed"
/// (DynamoDB Local does this to a fresh iterator now and then while another reader comes and
/// goes): nothing stored lies behind it, so no record is lost and the source reads the shard
/// from its horizon again instead of stopping.
#[tokio::test]
async fn a_trimmed_answer_before_any_checkpoint_reads_from_the_horizon_again() {
    let script = Script {
        shards: vec![shard(
            "A",
            None,
            false,
            (1..=4).map(|v| record("k", v, u64::from(v))).collect(),
        )],
        trim_once: [("A".to_owned(), 0)].into(),
        ..Script::default()
    };
    let out = run(
        Scripted(Arc::new(Mutex::new(script))),
        config(""),
        Checkpoints::new(),
        4,
    )
    .await;
    assert_eq!(out.result, Ok(()));
    assert_eq!(out.events.len(), 4);
}

/// Spread over instances, a copy reads only the shards granted to it, opens each after the
/// position stored for it (another instance's progress), takes a parent finished elsewhere
/// (its `END` stored) as finished, and offers what could be read next.
#[tokio::test]
async fn a_spread_copy_reads_only_granted_shards_after_their_stored_positions() {
    use crate::checkpoint::{CheckpointStore, Fence, Store};
    use crate::coordination::PartitionLeases;

    let dir = tempfile::tempdir().unwrap();
    let local = CheckpointStore::open(dir.path()).unwrap();
    // Another instance finished A and read B1 up to sequence number 10.
    let stored = Checkpoints::from([
        ("A".to_owned(), finished_position()),
        ("B1".to_owned(), seq_position(&format!("{:021}", 10))),
    ]);
    local.commit("p", &stored).unwrap();
    let store: Arc<dyn Store> = Arc::new(local);
    let leases = Arc::new(PartitionLeases::new("p", store.clone()));
    let fence = |shard: &str| Fence {
        lease: crate::coordination::partition_lease("p", shard),
        owner: "me".into(),
        epoch: 1,
    };
    leases.grant("B2", fence("B2"));

    let mut running = start(split_tree(), config(""), stored, Some(leases.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    running.receive_until(2, deadline).await;
    let offer = leases.offered();
    assert_eq!(
        offer.readable.iter().collect::<Vec<_>>(),
        ["B1", "B2"],
        "A is done: its children are readable"
    );
    assert_eq!(offer.done.iter().collect::<Vec<_>>(), ["A"]);
    assert_eq!(
        versions(&running.out.events)["k2"],
        [3, 4],
        "only B2, the granted shard"
    );

    // B1 is granted: read after its stored position, to its end; then C is offered.
    leases.grant("B1", fence("B1"));
    running.receive_until(4, deadline).await;
    let out = running.stop().await;
    assert_eq!(out.result, Ok(()));
    assert_eq!(
        versions(&out.events)["k1"],
        [5, 6],
        "B1 after sequence number 10; nothing of A or C"
    );
    assert!(
        out.marks.contains(&("B1".to_owned(), FINISHED.to_owned())),
        "{:?}",
        out.marks
    );
    assert!(leases.offered().readable.contains("C"));
}
