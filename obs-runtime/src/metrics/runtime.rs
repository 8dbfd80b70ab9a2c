//! Process, async-runtime and build metrics, read at scrape time (nothing on the request path):
//! collectors in [`prometheus_registry`](super::prometheus_registry), appended to
//! [`render`](super::render)'s output.
//!
//! - **Process** (feature `process`, on by default; Linux): the Prometheus client guidelines'
//!   `process_cpu_seconds_total`, `process_resident_memory_bytes`,
//!   `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
//!   `process_start_time_seconds` and `process_threads`, from the `prometheus` crate's process
//!   collector (procfs). `init` registers it unless `Config::process_metrics(false)`.
//! - **tokio** (feature `tokio`): [`watch_tokio_runtime`] adds a runtime's `tokio_workers`,
//!   `tokio_alive_tasks`, `tokio_global_queue_depth`, `tokio_busy_seconds_total` (all workers'
//!   busy time: `rate(tokio_busy_seconds_total[5m]) / tokio_workers` is the busy ratio) and
//!   `tokio_worker_parks_total`, labelled by `runtime`. Blocking-thread counts need tokio's
//!   unstable metrics (`--cfg tokio_unstable`) and are not exported.
//! - **Build**: `obs_build_info{service_name, service_version, commit, rustc, obs_version} 1`,
//!   registered by `init` (`Config::build_commit` names the commit), for dashboards to mark
//!   deploys.

use prometheus::{IntGaugeVec, Opts};

/// Registers `collector` once per process (a second registration of the same metric names is
/// refused by the registry, which is what a second `init` in a test would do).
fn register(collector: Box<dyn prometheus::core::Collector>) {
    let _ = super::prometheus_registry().register(collector);
}

/// The process collector, once.
#[cfg(all(feature = "process", target_os = "linux"))]
pub(crate) fn register_process() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| register(Box::new(prometheus::process_collector::ProcessCollector::for_self())));
}

/// `obs_build_info`, once (the first `init`'s values).
pub(crate) fn register_build_info(service_name: &str, service_version: Option<&str>, commit: Option<&str>) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let opts = Opts::new(
            "obs_build_info",
            "The running build: 1, labelled by service, version, commit, the Rust compiler and obs's version.",
        );
        let labels = ["service_name", "service_version", "commit", "rustc", "obs_version"];
        let Ok(gauge) = IntGaugeVec::new(opts, &labels) else { return };
        gauge
            .with_label_values(&[
                service_name,
                service_version.unwrap_or(""),
                commit.unwrap_or(""),
                env!("OBS_RUSTC_VERSION"),
                env!("CARGO_PKG_VERSION"),
            ])
            .set(1);
        register(Box::new(gauge));
    });
}

/// Exports `handle`'s runtime metrics at every scrape, labelled `runtime = name` (see the
/// [module](self) documentation). Call it once per runtime, from anywhere, with a name of its
/// own (a second call with the same name is ignored).
///
/// ```
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// obs_runtime::metrics::watch_tokio_runtime("main", rt.handle());
/// assert!(obs_runtime::metrics::render().contains("tokio_workers{runtime=\"main\"} 1"));
/// ```
#[cfg(feature = "tokio")]
pub fn watch_tokio_runtime(name: &str, handle: &tokio::runtime::Handle) {
    match TokioCollector::new(name, handle.metrics()) {
        Ok(c) => register(Box::new(c)),
        Err(e) => tracing::warn!(target: "obs", error = %e, runtime = name, "tokio runtime metrics not exported"),
    }
}

#[cfg(feature = "tokio")]
struct TokioCollector {
    metrics: tokio::runtime::RuntimeMetrics,
    /// The families' descriptions, with `runtime` as a constant label: one collector per
    /// runtime, told apart by the registry.
    descs: Vec<prometheus::core::Desc>,
    name: String,
}

#[cfg(feature = "tokio")]
const TOKIO_FAMILIES: [(&str, &str); 5] = [
    ("tokio_workers", "Worker threads of the tokio runtime."),
    ("tokio_alive_tasks", "Tasks alive in the tokio runtime."),
    ("tokio_global_queue_depth", "Tasks waiting in the tokio runtime's global queue."),
    ("tokio_busy_seconds_total", "Time the tokio runtime's workers spent busy, summed over workers, in seconds."),
    ("tokio_worker_parks_total", "Times the tokio runtime's workers parked (went idle)."),
];

#[cfg(feature = "tokio")]
impl TokioCollector {
    fn opts(name: &str, family: usize) -> Opts {
        let (n, help) = TOKIO_FAMILIES[family];
        Opts::new(n, help).const_label("runtime", name)
    }

    fn new(name: &str, metrics: tokio::runtime::RuntimeMetrics) -> prometheus::Result<Self> {
        let descs = (0..TOKIO_FAMILIES.len())
            .map(|i| prometheus::core::Describer::describe(&Self::opts(name, i)))
            .collect::<prometheus::Result<Vec<_>>>()?;
        Ok(TokioCollector { metrics, descs, name: name.to_owned() })
    }
}

#[cfg(feature = "tokio")]
impl prometheus::core::Collector for TokioCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.descs.iter().collect()
    }

    /// Fresh metrics from the runtime's figures at each scrape: nothing shared between two
    /// scrapes at once.
    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let m = &self.metrics;
        let workers = m.num_workers();
        let busy: f64 = (0..workers).map(|w| m.worker_total_busy_duration(w).as_secs_f64()).sum();
        let parks: u64 = (0..workers).map(|w| m.worker_park_count(w)).sum();
        let mut out = Vec::with_capacity(TOKIO_FAMILIES.len());
        let gauges = [workers as i64, m.num_alive_tasks() as i64, m.global_queue_depth() as i64];
        for (i, value) in gauges.into_iter().enumerate() {
            if let Ok(g) = prometheus::IntGauge::with_opts(Self::opts(&self.name, i)) {
                g.set(value);
                out.extend(prometheus::core::Collector::collect(&g));
            }
        }
        if let Ok(c) = prometheus::Counter::with_opts(Self::opts(&self.name, 3)) {
            c.inc_by(busy);
            out.extend(prometheus::core::Collector::collect(&c));
        }
        if let Ok(c) = prometheus::IntCounter::with_opts(Self::opts(&self.name, 4)) {
            c.inc_by(parks);
            out.extend(prometheus::core::Collector::collect(&c));
        }
        out
    }
}
