//! Telemetry: what the daemon tells its operators while it runs, beside the log.
//!
//! Data flow: [`Telemetry`] owns one Prometheus registry and the metric families
//! ([`families`]); every pipeline gets one [`PipelineProbe`], shared by its supervisor, its
//! pipeline driver, its source and its sink. They count into metric handles made once per
//! pipeline (a hot path pays an atomic add), and keep the facts that are read rather than
//! counted (state, the oldest change not yet delivered, the last event, the stored position,
//! snapshot progress) in the probe. A reader (`/metrics`, `/status`, `/readyz` in [`http`])
//! first turns those facts into gauges ([`Telemetry::refresh`]), then answers.
//!
//! Without `http_listen` nothing reads the registry: the probes then skip the per-event and
//! per-batch counts ([`Telemetry::without_metrics`]) and keep only what the log uses (states,
//! snapshot progress).
//!
//! Errors: telemetry never stops a pipeline. A listener that cannot bind is a startup error
//! (the operator asked for it); a failed source-side measurement (a slot query) is logged at
//! debug and tried again later.

mod families;
pub mod http;
mod measuring;
mod probe;
mod progress;
mod status;

use std::sync::{Arc, Mutex};

use prometheus::{Encoder as _, Registry, TextEncoder};

pub use families::Families;
pub use measuring::Measuring;
pub(crate) use probe::OpCounts;
pub use probe::{PipelineProbe, PipelineState, SnapshotTable};
pub use progress::TerminalProgress;
pub use status::{LeaseStatus, PipelineStatus, Readiness};

/// Every pipeline's probe and the registry their metrics are in.
pub struct Telemetry {
    registry: Registry,
    families: Arc<Families>,
    pipelines: Mutex<Vec<Arc<PipelineProbe>>>,
    /// Whether probes count events and batches (off when nothing will read them).
    counting: bool,
    /// Snapshot progress bars, when the log goes to a terminal.
    terminal: Option<Arc<TerminalProgress>>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// Telemetry whose metrics are read (`/metrics`).
    pub fn new() -> Self {
        Self::with_counting(true)
    }

    /// Telemetry nobody scrapes: pipelines skip counting their events and batches.
    pub fn without_metrics() -> Self {
        Self::with_counting(false)
    }

    fn with_counting(counting: bool) -> Self {
        let registry = Registry::new();
        let families = Arc::new(Families::register(&registry));
        #[cfg(target_os = "linux")]
        {
            // The process's CPU seconds, resident and virtual memory, open files; read from
            // /proc when scraped.
            let process = prometheus::process_collector::ProcessCollector::for_self();
            registry
                .register(Box::new(process))
                .expect("registered once, into a new registry");
        }
        Telemetry {
            registry,
            families,
            pipelines: Mutex::new(Vec::new()),
            counting,
            terminal: None,
        }
    }

    /// Draws snapshot progress bars there too (set before the first probe is made).
    pub fn with_terminal(mut self, terminal: Option<Arc<TerminalProgress>>) -> Self {
        self.terminal = terminal;
        self
    }

    /// The probe of pipeline `name`, made on first use.
    pub fn probe(&self, name: &str) -> Arc<PipelineProbe> {
        let mut pipelines = self.pipelines.lock().expect("not poisoned");
        if let Some(probe) = pipelines.iter().find(|p| &*p.name == name) {
            return probe.clone();
        }
        let probe = Arc::new(PipelineProbe::new(
            name.into(),
            self.families.clone(),
            self.counting,
            self.terminal.clone(),
        ));
        pipelines.push(probe.clone());
        probe
    }

    fn probes(&self) -> Vec<Arc<PipelineProbe>> {
        self.pipelines.lock().expect("not poisoned").clone()
    }

    /// Turns what the probes hold into gauges (lag, time since the last event, state).
    pub fn refresh(&self) {
        for probe in self.probes() {
            probe.refresh();
        }
    }

    /// The Prometheus text exposition of every metric, refreshed.
    pub fn render(&self) -> String {
        self.refresh();
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .expect("the text encoder writes to a Vec");
        String::from_utf8(text).expect("the text format is UTF-8")
    }

    /// Each pipeline's state, position, lag and snapshot progress.
    pub fn status(&self) -> Vec<PipelineStatus> {
        self.probes().iter().map(|p| p.status()).collect()
    }

    /// Ready when every pipeline is snapshotting or streaming; else the reasons.
    pub fn readiness(&self) -> Readiness {
        Readiness::of(&self.status())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::envelope::Op;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn lag_is_the_age_of_the_oldest_change_not_acknowledged() {
        let telemetry = Telemetry::new();
        let probe = telemetry.probe("p");
        let lag = "cdc_bridge_lag_seconds{pipeline=\"p\"}";
        assert_eq!(sample(&telemetry.render(), lag), Some(0.0));
        probe.set_oldest_pending_commit(probe::unix_ms() - 7_000);
        let shown = sample(&telemetry.render(), lag).unwrap();
        assert!((7.0..8.0).contains(&shown), "{shown}");
        probe.set_oldest_pending_commit(0);
        assert_eq!(sample(&telemetry.render(), lag), Some(0.0));
    }

    #[test]
    fn counts_by_operation_and_batch_latencies_reach_the_exposition() {
        let telemetry = Telemetry::new();
        let probe = telemetry.probe("p");
        let mut ops = OpCounts::default();
        for op in [Op::Insert, Op::Insert, Op::Delete] {
            ops.add(op);
        }
        probe.read_batch(&ops);
        probe.delivered(&ops, Duration::from_millis(30), probe::unix_ms() - 2_000);
        let text = telemetry.render();
        let series = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("{s} in\n{text}"));
        assert_eq!(
            series("cdc_bridge_events_read_total{op=\"insert\",pipeline=\"p\"}"),
            2.0
        );
        assert_eq!(
            series("cdc_bridge_events_delivered_total{op=\"delete\",pipeline=\"p\"}"),
            1.0
        );
        assert_eq!(
            series("cdc_bridge_events_delivered_total{op=\"update\",pipeline=\"p\"}"),
            0.0
        );
        assert_eq!(
            series("cdc_bridge_batches_delivered_total{pipeline=\"p\"}"),
            1.0
        );
        assert_eq!(
            series("cdc_bridge_batch_delivery_seconds_bucket{pipeline=\"p\",le=\"0.025\"}"),
            0.0
        );
        assert_eq!(
            series("cdc_bridge_batch_delivery_seconds_bucket{pipeline=\"p\",le=\"0.05\"}"),
            1.0
        );
        assert_eq!(
            series("cdc_bridge_end_to_end_latency_seconds_bucket{pipeline=\"p\",le=\"1\"}"),
            0.0
        );
        assert_eq!(
            series("cdc_bridge_end_to_end_latency_seconds_bucket{pipeline=\"p\",le=\"2.5\"}"),
            1.0
        );
        assert_eq!(
            series("cdc_bridge_pipeline_state{pipeline=\"p\",state=\"starting\"}"),
            1.0
        );
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
    }

    #[test]
    fn without_metrics_nothing_is_counted_but_states_and_snapshots_are_kept() {
        let telemetry = Telemetry::without_metrics();
        let probe = telemetry.probe("p");
        let mut ops = OpCounts::default();
        ops.add(Op::Insert);
        probe.delivered(&ops, Duration::from_millis(1), 0);
        probe.snapshot_started(&[("s.t".into(), Some(10))]);
        probe.snapshot_rows("s.t", 4);
        probe.streaming();
        let status = &telemetry.status()[0];
        assert_eq!(status.events_delivered, 0);
        assert_eq!(status.state, "streaming");
        let table = &status.snapshot.as_ref().unwrap().tables[0];
        assert_eq!((table.rows_copied, table.rows_estimated), (4, Some(10)));
    }

    #[test]
    fn ready_only_when_every_pipeline_snapshots_or_streams() {
        let telemetry = Telemetry::new();
        let (a, b) = (telemetry.probe("a"), telemetry.probe("b"));
        a.snapshotting();
        b.streaming();
        assert_eq!(telemetry.readiness(), Readiness::Ready);
        b.failed("sink failed: broker down".into(), "transient", true);
        a.finished();
        assert_eq!(
            telemetry.readiness(),
            Readiness::NotReady(vec![
                "pipeline b: backing_off: sink failed: broker down".into()
            ])
        );
        b.starting();
        assert_eq!(
            telemetry.readiness(),
            Readiness::NotReady(vec!["pipeline b: starting".into()])
        );
    }

    #[test]
    fn snapshot_progress_has_a_rate_and_an_eta_and_counts_tables_left() {
        let telemetry = Telemetry::new();
        let probe = telemetry.probe("p");
        probe.snapshot_started(&[("s.a".into(), Some(1000)), ("s.b".into(), None)]);
        probe.snapshot_rows("s.a", 100);
        std::thread::sleep(Duration::from_millis(50));
        probe.snapshot_rows("s.a", 100);
        let status = telemetry.status().remove(0);
        let snapshot = status.snapshot.unwrap();
        assert_eq!(snapshot.tables_remaining, 2);
        let a = &snapshot.tables[0];
        assert_eq!(a.rows_copied, 200);
        assert!(a.rows_per_second > 0.0);
        assert!(a.eta_seconds.unwrap() > 0.0);
        assert_eq!(snapshot.tables[1].eta_seconds, None, "no estimate, no ETA");
        probe.snapshot_table_done("s.a");
        let text = telemetry.render();
        assert_eq!(
            sample(
                &text,
                "cdc_bridge_snapshot_tables_remaining{pipeline=\"p\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "cdc_bridge_snapshot_rows_copied_total{pipeline=\"p\",table=\"s.a\"}"
            ),
            Some(200.0)
        );
        assert_eq!(
            sample(
                &text,
                "cdc_bridge_snapshot_rows_estimated{pipeline=\"p\",table=\"s.b\"}"
            ),
            Some(-1.0)
        );
    }
}
