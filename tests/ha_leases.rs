//! Several instances sharing pipelines through leases on a shared store (the Postgres store
//! and the DynamoDB store, the same tests for both), against real PostgreSQL and MariaDB
//! sources, a real Kinesis emulator as the sink and the store's real server:
//! - three instances share two Postgres pipelines and a MySQL one pipeline by pipeline, and
//!   two DynamoDB Streams pipelines shard by shard: one on DynamoDB Local (one shard), one on a
//!   stream of four shards served by `support::streams`, which splits shards during the test
//!   (children are read only after their parent, across instances);
//!   a loop of 30 SIGKILLs over random instances (each restarted at once, so it steals its
//!   share back) under a live workload loses no change, keeps per-key order once duplicates
//!   are removed, every takeover completes within the lease duration plus a few seconds, and
//!   the leases end evenly spread;
//! - a holder paused (SIGSTOP) past its lease, or cut off from the store, is taken over;
//!   resumed or reconnected, it stores nothing more, stops its copy and says why, and the
//!   stored position never moves backward.
//!
//! Shard leases of a paused or cut-off instance: `ha_shards.rs`; the harness: `ha/`.

mod ha;
mod support;

use std::time::{Duration, Instant};

use ha::*;
use support::{http_get, Rng};

async fn kills_under_load_lose_nothing_and_take_over_in_time(store: StoreKind) {
    let prefix = format!("ha_{}_kill", store.tag());
    // Two Postgres pipelines, a MySQL one and a DynamoDB Streams one over three instances,
    // and a DynamoDB stream of four shards spread shard by shard.
    let mut cluster = Cluster::new(&prefix, store, 2, true, true)
        .await
        .with_spread_stream(&prefix, 4)
        .await;
    cluster.start(3);
    cluster.wait_all_running(Duration::from_secs(60));
    // One whole pipeline each, the four shards two, one and one, the single shard of DynamoDB
    // Local somewhere, once stealing has evened it out.
    cluster.wait_even_spread();

    let load = cluster.start_workload();
    let mut rng = Rng::seeded();
    let mut takeovers = Vec::new();
    for kill in 0..30 {
        if kill % 8 == 4 {
            // A shard splits: its children wait for it to be read to its end, wherever.
            let (_, server) = cluster.spread.as_ref().unwrap();
            server.split();
            cluster.wait_all_running(Duration::from_secs(30));
        }
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1200))).await;
        let victim = rng.below(3) as usize;
        let mut held: Vec<String> = cluster
            .runners()
            .into_iter()
            .filter(|(_, i)| *i == victim)
            .map(|(p, _)| p)
            .collect();
        held.extend(cluster.shards_held()[victim].clone());
        let killed_at = Instant::now();
        cluster.instances[victim].child.kill().unwrap();
        cluster.instances[victim].child.wait().unwrap();
        cluster.instances[victim] = cluster.spawn();
        if !held.is_empty() {
            cluster.wait_all_running(TAKEOVER_LIMIT);
            takeovers.push(killed_at.elapsed());
        }
    }
    let written = load.finish().await;
    cluster.wait_even_spread();
    let (spread, server) = cluster.spread.clone().unwrap();
    let shards: Vec<usize> = cluster
        .shards_held_of(&spread)
        .iter()
        .map(Vec::len)
        .collect();
    // The rows of the split shards are deleted by their holders once read to their ends.
    let mut open = server.open_shards();
    open.sort();
    let by = Instant::now() + Duration::from_secs(15);
    loop {
        let mut rows: Vec<String> = cluster
            .lease_rows()
            .await
            .into_iter()
            .filter_map(|key| {
                Some(
                    key.strip_prefix(&format!("partition/{spread}/"))?
                        .to_owned(),
                )
            })
            .collect();
        rows.sort();
        if rows == open || Instant::now() > by {
            assert_eq!(rows, open, "the lease rows of {spread}'s shards");
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let total: usize = written.values().map(Vec::len).sum();
    let duplicates = check_delivery(&cluster, &written).await;
    takeovers.sort();
    eprintln!(
        "{store:?} store: {total} changes, {duplicates} duplicates, {} takeovers: median {:?}, max {:?}; shards held at the end {shards:?}",
        takeovers.len(),
        takeovers[takeovers.len() / 2],
        takeovers.last().unwrap()
    );
    assert!(
        takeovers.len() >= 5,
        "too few kills hit a holder: {}",
        takeovers.len()
    );
    assert!(total > 1000, "the workload wrote only {total} changes");
}

async fn a_cut_off_holder_stores_nothing_after_a_takeover(store: StoreKind, cut_off: CutOff) {
    let prefix = match cut_off {
        CutOff::Paused => format!("ha_{}_pause", store.tag()),
        CutOff::StoreUnreachable => format!("ha_{}_cut", store.tag()),
    };
    let mut cluster = Cluster::new(&prefix, store, 1, false, false).await;
    let pipeline = cluster.pipelines[0].clone();
    let (target, _) = store.through(0);
    let proxy = support::kinesis::TcpProxy::start(&target).await;
    let (_, through_proxy) = store.through(proxy.port);
    let first = cluster.spawn_with_store(&through_proxy);
    cluster.instances.push(first);
    cluster.wait_all_running(Duration::from_secs(60));
    cluster.start(1);
    // The second instance sees the lease held and stands by.
    cluster.wait_standby(1);

    let load = cluster.start_workload();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cut_off.begin(&cluster.instances[0].child, &proxy);
    let paused_at = Instant::now();
    let at_pause = stored_lsn(&cluster, &pipeline).await;
    cluster.wait_runner(&pipeline, 1, TAKEOVER_LIMIT);
    let took = paused_at.elapsed();
    // The new holder advances the stored position.
    let advanced_by = Instant::now() + Duration::from_secs(20);
    let before_resume = loop {
        let now = stored_lsn(&cluster, &pipeline).await;
        if now > at_pause {
            break now;
        }
        assert!(
            Instant::now() < advanced_by,
            "the new holder stores nothing"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("{store:?} store: takeover from a holder cut off ({cut_off:?}) after {took:?}");

    cut_off.end(&cluster.instances[0].child, &proxy);
    // The resumed instance finds out, stops its copy, and the position never goes back.
    let mut last = before_resume;
    let watch_until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < watch_until {
        let now = stored_lsn(&cluster, &pipeline).await;
        assert!(
            now >= last,
            "the stored position moved backward: {last:?} -> {now:?}"
        );
        last = now;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let written = load.finish().await;
    let resumed = statuses(cluster.instances[0].port);
    assert_eq!(resumed[0]["state"], "standby", "{resumed:?}");
    assert_eq!(resumed[0]["lease"]["held_here"], false);
    let metrics = http_get(cluster.instances[0].port, "/metrics").unwrap().1;
    let lost = format!("cdc_bridge_lease_lost_total{{pipeline=\"{pipeline}\"}} 1");
    assert!(metrics.contains(&lost), "{metrics}");
    // `cdc-bridge status` asked of either instance says who runs the pipeline.
    let holder = statuses(cluster.instances[1].port)[0]["lease"]["holder"]
        .as_str()
        .unwrap()
        .to_owned();
    let on_resumed = cluster.status_command(0);
    assert!(on_resumed.contains("standby"), "{on_resumed}");
    assert!(
        on_resumed.contains(&format!("lease: held by {holder} (epoch 2)")),
        "{on_resumed}"
    );
    let on_holder = cluster.status_command(1);
    assert!(on_holder.contains("streaming"), "{on_holder}");
    assert!(
        on_holder.contains(&format!("lease: held here as {holder} (epoch 2)")),
        "{on_holder}"
    );
    let log = cluster.log();
    assert!(log.contains("lost the pipeline's lease"), "{log}");
    if cut_off == CutOff::StoreUnreachable {
        // It stopped its copy on its own, before another instance could take over.
        assert!(log.contains("not renewed for"), "{log}");
    }
    assert!(
        !log.contains("backward"),
        "a regression was attempted:\n{log}"
    );
    check_delivery(&cluster, &written).await;
    assert_eq!(
        cluster.runners()[&pipeline],
        1,
        "the new holder keeps running"
    );
}

/// An orderly stop (SIGTERM) releases the holder's leases after its last checkpoint: the
/// instance standing by starts the pipeline within a round (at most a second), long before the
/// lease (here 10 s) would have expired.
async fn a_stopped_holder_hands_its_pipeline_over_at_once(store: StoreKind) {
    let prefix = format!("ha_{}_handoff", store.tag());
    let mut cluster = Cluster::with_lease(&prefix, store, 1, false, false, 10_000).await;
    let pipeline = cluster.pipelines[0].clone();
    cluster.start(1);
    cluster.wait_all_running(Duration::from_secs(60));
    cluster.start(1);
    cluster.wait_standby(1);
    let stopped_at = Instant::now();
    support::terminate(&cluster.instances[0].child);
    let status = cluster.instances[0].child.wait().unwrap();
    assert!(status.success(), "{}", cluster.ws.log_tail());
    cluster.wait_runner(&pipeline, 1, Duration::from_secs(7));
    eprintln!(
        "{store:?} store: handover after SIGTERM in {:?}",
        stopped_at.elapsed()
    );
    assert!(cluster.log().contains("released the lease"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_a_stopped_holder_hands_its_pipeline_over_at_once() {
    a_stopped_holder_hands_its_pipeline_over_at_once(StoreKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_store_a_stopped_holder_hands_its_pipeline_over_at_once() {
    a_stopped_holder_hands_its_pipeline_over_at_once(StoreKind::Dynamodb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_kills_under_load_lose_nothing_and_take_over_in_time() {
    kills_under_load_lose_nothing_and_take_over_in_time(StoreKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_store_kills_under_load_lose_nothing_and_take_over_in_time() {
    kills_under_load_lose_nothing_and_take_over_in_time(StoreKind::Dynamodb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_a_paused_holder_stores_nothing_after_a_takeover() {
    a_cut_off_holder_stores_nothing_after_a_takeover(StoreKind::Postgres, CutOff::Paused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_store_a_paused_holder_stores_nothing_after_a_takeover() {
    a_cut_off_holder_stores_nothing_after_a_takeover(StoreKind::Dynamodb, CutOff::Paused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_a_holder_cut_off_from_the_store_stores_nothing_after_a_takeover() {
    let cut_off = CutOff::StoreUnreachable;
    a_cut_off_holder_stores_nothing_after_a_takeover(StoreKind::Postgres, cut_off).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_store_a_holder_cut_off_from_the_store_stores_nothing_after_a_takeover() {
    let cut_off = CutOff::StoreUnreachable;
    a_cut_off_holder_stores_nothing_after_a_takeover(StoreKind::Dynamodb, cut_off).await;
}
