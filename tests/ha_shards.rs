//! Pipelines spread shard by shard over instances sharing a store (both stores, the same
//! tests): an instance paused past its shard leases, or cut off from the store, loses its
//! shards to another; resumed or reconnected, it stores nothing more for them, says so, no
//! shard's stored position moves backward, and the shards spread evenly again. (The kill loop
//! with shards that split is in `ha_leases.rs`.)

mod ha;
mod support;

use std::time::{Duration, Instant};

use ha::*;
use support::http_get;

/// Shard leases are fenced like pipeline leases: an instance paused past its leases, or cut
/// off from the store, loses its shards to the other; resumed, it stores nothing more for
/// them, says so, no shard's stored position moves backward, and the shards spread evenly
/// again.
async fn a_cut_off_instance_stores_nothing_for_the_shards_taken_over(
    store: StoreKind,
    cut_off: CutOff,
) {
    let prefix = match cut_off {
        CutOff::Paused => format!("ha_{}_spause", store.tag()),
        CutOff::StoreUnreachable => format!("ha_{}_scut", store.tag()),
    };
    let mut cluster = Cluster::new(&prefix, store, 0, false, false)
        .await
        .with_spread_stream(&prefix, 2)
        .await;
    let pipeline = cluster.spread.clone().unwrap().0;
    let (target, _) = store.through(0);
    let proxy = support::kinesis::TcpProxy::start(&target).await;
    let (_, through_proxy) = store.through(proxy.port);
    let first = cluster.spawn_with_store(&through_proxy);
    cluster.instances.push(first);
    cluster.wait_all_running(Duration::from_secs(60));
    cluster.start(1);
    // One shard each, once the second instance has stolen its share.
    cluster.wait_even_spread();
    let paused_shard = cluster.shards_held_of(&pipeline)[0][0].clone();

    let load = cluster.start_workload();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cut_off.begin(&cluster.instances[0].child, &proxy);
    let paused_at = Instant::now();
    let at_pause = stored_shards(&cluster, &pipeline);
    let by = paused_at + TAKEOVER_LIMIT;
    while cluster.shards_held_of(&pipeline)[1].len() < 2 {
        assert!(
            Instant::now() < by,
            "no takeover\n{}",
            cluster.ws.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = paused_at.elapsed();
    let advanced_by = Instant::now() + Duration::from_secs(20);
    while stored_shards(&cluster, &pipeline).get(&paused_shard) <= at_pause.get(&paused_shard) {
        assert!(
            Instant::now() < advanced_by,
            "the new holder stores nothing for {paused_shard}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("{store:?} store: shard {paused_shard} taken over from an instance cut off ({cut_off:?}) after {took:?}");

    cut_off.end(&cluster.instances[0].child, &proxy);
    let mut last = stored_shards(&cluster, &pipeline);
    let watch_until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < watch_until {
        let now = stored_shards(&cluster, &pipeline);
        for (shard, seq) in &last {
            assert!(
                now.get(shard) >= Some(seq),
                "the stored position of {shard} moved backward: {seq} -> {:?}",
                now.get(shard)
            );
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let written = load.finish().await;
    // The resumed instance lost its shard, then steals one back toward an even share.
    cluster.wait_even_spread();
    let metrics = http_get(cluster.instances[0].port, "/metrics").unwrap().1;
    let lost = format!("cdc_bridge_lease_lost_total{{pipeline=\"{pipeline}\"}}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with(&lost) && !l.ends_with(" 0")),
        "{metrics}"
    );
    let on_resumed = cluster.status_command(0);
    assert!(
        on_resumed.contains("spread over the instances; 1 partition(s) held here as"),
        "{on_resumed}"
    );
    let log = cluster.log();
    assert!(log.contains("lost a partition's lease"), "{log}");
    assert!(
        !log.contains("backward"),
        "a regression was attempted:\n{log}"
    );
    check_delivery(&cluster, &written).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_a_paused_instance_stores_nothing_for_the_shards_taken_over() {
    let cut_off = CutOff::Paused;
    a_cut_off_instance_stores_nothing_for_the_shards_taken_over(StoreKind::Postgres, cut_off).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_store_a_paused_instance_stores_nothing_for_the_shards_taken_over() {
    let cut_off = CutOff::Paused;
    a_cut_off_instance_stores_nothing_for_the_shards_taken_over(StoreKind::Dynamodb, cut_off).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_an_instance_cut_off_from_the_store_stores_nothing_for_the_shards_taken_over(
) {
    let cut_off = CutOff::StoreUnreachable;
    a_cut_off_instance_stores_nothing_for_the_shards_taken_over(StoreKind::Postgres, cut_off).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_store_an_instance_cut_off_from_the_store_stores_nothing_for_the_shards_taken_over(
) {
    let cut_off = CutOff::StoreUnreachable;
    a_cut_off_instance_stores_nothing_for_the_shards_taken_over(StoreKind::Dynamodb, cut_off).await;
}
