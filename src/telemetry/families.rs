//! The metric families: every name, its help text and its labels, in one place (the README's
//! metric table follows this file).
//!
//! Labels are bounded: `pipeline` (one per configured pipeline), `op` (five values), `state`
//! (six), `disposition` (three), `table` (the tables a pipeline is configured with),
//! `partition` (the source's checkpoint partitions: one for Postgres and MySQL, one per open
//! shard for DynamoDB Streams, removed when the shard ends), `reason` and `policy` (a few fixed
//! words each).

use prometheus::core::Collector;
use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// Latencies from a millisecond to a minute.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Checkpoint commits: an fsync, from half a millisecond to a second.
const COMMIT_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

pub struct Families {
    pub events_read: IntCounterVec,
    pub events_delivered: IntCounterVec,
    pub batches_delivered: IntCounterVec,
    pub batch_delivery_seconds: HistogramVec,
    pub end_to_end_seconds: HistogramVec,
    pub checkpoint_commit_seconds: HistogramVec,
    pub backpressure_wait_seconds: HistogramVec,
    pub run_failures: IntCounterVec,
    pub state: IntGaugeVec,
    pub lag_seconds: GaugeVec,
    pub seconds_since_last_event: GaugeVec,
    pub seconds_since_last_heartbeat: GaugeVec,
    pub buffer_bytes: IntGaugeVec,
    pub source_lag_bytes: IntGaugeVec,
    pub source_retained_bytes: IntGaugeVec,
    pub source_wal_status: IntGaugeVec,
    pub partition_age_seconds: GaugeVec,
    pub sink_retries: IntCounterVec,
    pub sink_delivery_errors: IntCounterVec,
    pub oversize_events: IntCounterVec,
    pub snapshot_rows_copied: IntCounterVec,
    pub snapshot_rows_estimated: IntGaugeVec,
    pub snapshot_tables_remaining: IntGaugeVec,
    pub lease_held: IntGaugeVec,
    pub lease_acquired: IntCounterVec,
    pub lease_lost: IntCounterVec,
    pub info: Gauge,
}

/// Registers `family` (made from constant, valid names: failures are programming errors).
fn registered<F: Collector + Clone + 'static>(registry: &Registry, family: F) -> F {
    registry
        .register(Box::new(family.clone()))
        .expect("registered once");
    family
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let family = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
    registered(registry, family)
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let family = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric");
    registered(registry, family)
}

fn float_gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let family = GaugeVec::new(Opts::new(name, help), labels).expect("a valid metric");
    registered(registry, family)
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    let family = HistogramVec::new(opts, labels).expect("a valid metric");
    registered(registry, family)
}

impl Families {
    pub fn register(r: &Registry) -> Self {
        let info = Gauge::with_opts(
            Opts::new("cdc_bridge_build_info", "The daemon's version (always 1).")
                .const_label("version", env!("CARGO_PKG_VERSION")),
        )
        .expect("a valid metric");
        r.register(Box::new(info.clone())).expect("registered once");
        info.set(1.0);
        let p = &["pipeline"];
        Families {
            events_read: counter(r, "cdc_bridge_events_read_total", "Change events the pipeline took from its source into a batch for the sink.", &["pipeline", "op"]),
            events_delivered: counter(r, "cdc_bridge_events_delivered_total", "Change events the sink acknowledged.", &["pipeline", "op"]),
            batches_delivered: counter(r, "cdc_bridge_batches_delivered_total", "Batches the sink acknowledged.", p),
            batch_delivery_seconds: histogram(r, "cdc_bridge_batch_delivery_seconds", "From handing a batch to the sink to its acknowledgement.", LATENCY_BUCKETS, p),
            end_to_end_seconds: histogram(r, "cdc_bridge_end_to_end_latency_seconds", "From the source's commit of a batch's earliest change to the sink's acknowledgement of the batch (one sample per batch).", LATENCY_BUCKETS, p),
            checkpoint_commit_seconds: histogram(r, "cdc_bridge_checkpoint_commit_seconds", "Durable commits of stored positions (one fsync each).", COMMIT_BUCKETS, p),
            backpressure_wait_seconds: histogram(r, "cdc_bridge_backpressure_wait_seconds", "Waits of the source for room in the pipeline's queue or memory budget (only waits that happened; the sum is the total time waited).", LATENCY_BUCKETS, p),
            run_failures: counter(r, "cdc_bridge_pipeline_failures_total", "Runs of the pipeline that ended in an error, by the error's disposition: transient (restarted after a backoff), fatal or data (stopped).", &["pipeline", "disposition"]),
            state: gauge(r, "cdc_bridge_pipeline_state", "1 for the pipeline's current state (starting, snapshotting, streaming, backing_off, stopped, finished, standby), 0 for the others.", &["pipeline", "state"]),
            lag_seconds: float_gauge(r, "cdc_bridge_lag_seconds", "How far behind the source the sink is: the age (since its commit) of the oldest change read and not yet acknowledged; 0 when every change read is acknowledged.", p),
            seconds_since_last_event: float_gauge(r, "cdc_bridge_seconds_since_last_event", "Time since the pipeline last took a change event from its source (-1 before the first).", p),
            seconds_since_last_heartbeat: float_gauge(r, "cdc_bridge_seconds_since_last_heartbeat", "Time since the source last heard from its server without a change (a keepalive, a heartbeat, an empty poll; -1 before the first).", p),
            buffer_bytes: gauge(r, "cdc_bridge_buffer_bytes", "Bytes of the pipeline's memory budget (buffer.max_bytes) held by changes read and not yet acknowledged.", p),
            source_lag_bytes: gauge(r, "cdc_bridge_source_lag_bytes", "Bytes the server has written past the position the pipeline stored (Postgres: pg_current_wal_lsn() - the slot's confirmed_flush_lsn; MySQL/MariaDB: the binlog after the stored file and offset).", p),
            source_retained_bytes: gauge(r, "cdc_bridge_source_retained_bytes", "Log the server keeps for this pipeline (Postgres: WAL from the slot's restart_lsn).", p),
            source_wal_status: gauge(r, "cdc_bridge_source_wal_status", "1 for the replication slot's wal_status (reserved, extended, unreserved, lost), 0 for the others (Postgres).", &["pipeline", "status"]),
            partition_age_seconds: float_gauge(r, "cdc_bridge_partition_record_age_seconds", "Age of the last record read from a source partition when it was read (DynamoDB Streams: per shard).", &["pipeline", "partition"]),
            sink_retries: counter(r, "cdc_bridge_sink_retries_total", "Records the sink sent again, by reason (Kinesis: rejected for throttling or a service failure, call_failed for a whole call, misrouted for an aggregate after a reshard).", &["pipeline", "reason"]),
            sink_delivery_errors: counter(r, "cdc_bridge_sink_delivery_errors_total", "Records whose delivery failed (Kafka: a failed delivery report); their batch fails and the pipeline restarts from its checkpoint.", p),
            oversize_events: counter(r, "cdc_bridge_oversize_events_total", "Events over the sink's record size limit set aside, by the policy applied (dead_letter; with fail the pipeline stops instead).", &["pipeline", "policy"]),
            snapshot_rows_copied: counter(r, "cdc_bridge_snapshot_rows_copied_total", "Rows copied by the initial snapshot.", &["pipeline", "table"]),
            snapshot_rows_estimated: gauge(r, "cdc_bridge_snapshot_rows_estimated", "The server's estimate of a table's rows when its snapshot began.", &["pipeline", "table"]),
            snapshot_tables_remaining: gauge(r, "cdc_bridge_snapshot_tables_remaining", "Tables the running snapshot has not finished yet.", p),
            lease_held: gauge(r, "cdc_bridge_lease_held", "With a shared store: 1 while this instance holds the pipeline's lease (and runs it), 0 while another instance does.", p),
            lease_acquired: counter(r, "cdc_bridge_lease_acquired_total", "Times this instance took the pipeline's lease (free, expired, or taken over to even out the share).", p),
            lease_lost: counter(r, "cdc_bridge_lease_lost_total", "Times this instance found the pipeline's lease taken over by another instance (or could not renew it in time) and stopped its copy.", p),
            info,
        }
    }
}
