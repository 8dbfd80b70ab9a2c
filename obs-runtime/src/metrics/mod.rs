//! Catalog-driven Prometheus metrics: the process-wide registry and its text exposition.
//!
//! Metric families are declared in the application's `metrics.toml` and used through the
//! compile-time-checked macros ([`counted`](crate::counted), [`timed`](crate::timed),
//! [`metric!`](crate::metric)). This module holds what runs: one process-wide registry, created on
//! first use, and its [text exposition](render).
//!
//! ```
//! // Register the whole catalog at start-up, so every family shows HELP and TYPE at once.
//! obs_runtime::metrics::register_catalog(obs_runtime::catalog!());
//! let text = obs_runtime::metrics::render();
//! assert!(text.contains("# TYPE obs_metric_overflow_total counter"));
//! ```
//!
//! # Series cap
//! Each family holds at most `series_cap` label combinations (per metric in the catalog, else
//! [`set_default_series_cap`], default [`DEFAULT_SERIES_CAP`]). Past it, new combinations are
//! recorded in one overflow series whose labels are all
//! [`"__overflow__"`](OVERFLOW_LABEL_VALUE), a warning is logged once per family, and
//! `obs_metric_overflow_total{metric="…"}` counts the calls that went there (each call of an
//! instrumented function or `metric!`; a handle kept from `metric!` counts once, when taken). A
//! label flood therefore cannot grow memory without bound.

pub(crate) mod clock;
pub(crate) mod def;
mod exemplar;
mod expose;
pub(crate) mod family;
pub(crate) mod handle;
pub(crate) mod key;
pub(crate) mod own;
pub(crate) mod runtime;
#[cfg(feature = "tokio")]
pub use runtime::watch_tokio_runtime;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, RwLock};

pub use def::{Def, Exactly, FilledBy, Fills, by, kind, label};
#[cfg(feature = "axum")]
pub use expose::metrics_handler;
pub use expose::{CONTENT_TYPE, Format, OPENMETRICS_CONTENT_TYPE, ObsCollector, render, render_into};
pub use family::OVERFLOW_LABEL_VALUE;
pub(crate) use family::{Family, KeyBuf, Series};
pub use handle::{Counter, FloatCounter, Gauge, Histogram};

/// Series cap of a family whose catalog entry sets none, unless changed with
/// [`set_default_series_cap`].
pub const DEFAULT_SERIES_CAP: usize = 2000;

/// What a family records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// An integer counter.
    Counter,
    /// A counter of amounts (`value = "float"` in the catalog).
    FloatCounter,
    /// A value that goes up and down.
    Gauge,
    /// Observations in cumulative buckets.
    Histogram,
}

impl MetricKind {
    /// The exposition's `# TYPE`.
    pub fn type_name(self) -> &'static str {
        match self {
            MetricKind::Counter | MetricKind::FloatCounter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// The static definition of a metric family, as the catalog declares it.
///
/// The macros emit these from `metrics.toml`; [`catalog!`](crate::catalog) gives all of them.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricDef {
    /// Family name.
    pub name: &'static str,
    /// `# HELP` text.
    pub help: &'static str,
    /// What it records.
    pub kind: MetricKind,
    /// Label names, in order.
    pub labels: &'static [&'static str],
    /// Histogram bucket upper bounds (without `+Inf`); empty otherwise.
    pub buckets: &'static [f64],
    /// Series cap; `0` takes the default.
    pub series_cap: usize,
}

/// The families obs itself exports, whatever the catalog: spans exported and dropped, log lines
/// dropped, recordings past a series cap, continuous profiles dropped. Dashboards and alert rules on the telemetry pipeline
/// are written against these (`obs-gen` generates them).
///
/// ```
/// let names: Vec<_> = obs_runtime::metrics::runtime_families().iter().map(|d| d.name).collect();
/// assert!(names.contains(&"obs_spans_dropped_total"));
/// ```
pub fn runtime_families() -> [&'static MetricDef; 6] {
    [
        &own::SPANS_EXPORTED,
        &own::SPANS_DROPPED,
        &own::LOG_LINES_DROPPED,
        &own::LOG_RECORDS_EXPORTED,
        &own::OVERFLOW,
        &own::PROFILES_DROPPED,
    ]
}

/// The process, tokio and build-info series obs exports besides the catalog and
/// [`runtime_families`], each with its labels: what a dashboard or an alert over them may name
/// (`obs-gen` checks queries against it). Process series are there on Linux with the `process`
/// feature, tokio series for each runtime given to `watch_tokio_runtime` (feature `tokio`).
///
/// ```
/// assert!(obs_runtime::metrics::RUNTIME_SERIES.iter().any(|(name, _)| *name == "process_resident_memory_bytes"));
/// ```
pub const RUNTIME_SERIES: &[(&str, &[&str])] = &[
    ("process_cpu_seconds_total", &[]),
    ("process_resident_memory_bytes", &[]),
    ("process_virtual_memory_bytes", &[]),
    ("process_open_fds", &[]),
    ("process_max_fds", &[]),
    ("process_start_time_seconds", &[]),
    ("process_threads", &[]),
    ("tokio_workers", &["runtime"]),
    ("tokio_alive_tasks", &["runtime"]),
    ("tokio_global_queue_depth", &["runtime"]),
    ("tokio_busy_seconds_total", &["runtime"]),
    ("tokio_worker_parks_total", &["runtime"]),
    ("obs_build_info", &["service_name", "service_version", "commit", "rustc", "obs_version"]),
];

/// The largest series cap (a family's lookup table is allocated up front, 16 bytes per series).
pub const MAX_SERIES_CAP: usize = 1_000_000;

impl MetricDef {
    /// Whether series recorded under `other` fit this family: same kind, labels and buckets
    /// (help text and cap may differ, e.g. between two versions of a catalog).
    fn compatible(&self, other: &MetricDef) -> bool {
        self.kind == other.kind && self.labels == other.labels && self.buckets == other.buckets
    }
}

pub(crate) struct Registry {
    families: RwLock<(Vec<&'static Family>, HashMap<&'static str, &'static Family>)>,
    /// Definitions that clashed with a registered family, by address: kept apart, never exposed.
    detached: RwLock<HashMap<usize, &'static Family>>,
    default_cap: AtomicUsize,
    overflow: OnceLock<&'static Family>,
    extra: prometheus::Registry,
}

pub(crate) fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry {
        families: RwLock::new((Vec::new(), HashMap::new())),
        detached: RwLock::new(HashMap::new()),
        default_cap: AtomicUsize::new(DEFAULT_SERIES_CAP),
        overflow: OnceLock::new(),
        extra: prometheus::Registry::new(),
    })
}

impl Registry {
    pub(crate) fn overflow_family(&self) -> &'static Family {
        self.overflow.get_or_init(|| self.family(&own::OVERFLOW))
    }

    /// The family for `def`, registered on first use.
    pub(crate) fn family(&self, def: &'static MetricDef) -> &'static Family {
        if let Some(f) = self.families.read().unwrap_or_else(|e| e.into_inner()).1.get(def.name) {
            if std::ptr::eq(f.def, def) || f.def.compatible(def) {
                return f;
            }
            return self.detached(def, f.def);
        }
        let mut guard = self.families.write().unwrap_or_else(|e| e.into_inner());
        let (list, by_name) = &mut *guard;
        if let Some(f) = by_name.get(def.name) {
            if f.def.compatible(def) {
                return f;
            }
            let registered = f.def;
            drop(guard);
            return self.detached(def, registered);
        }
        let f: &'static Family = Box::leak(Box::new(Family::new(def, self.default_cap.load(Ordering::Relaxed))));
        if def.labels.is_empty() {
            // A family without labels has its one series from the start, at zero.
            f.series(&KeyBuf::new());
        }
        list.push(f);
        by_name.insert(def.name, f);
        f
    }

    #[cold]
    fn detached(&self, def: &'static MetricDef, registered: &MetricDef) -> &'static Family {
        let key = def as *const MetricDef as usize;
        if let Some(f) = self.detached.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return f;
        }
        let mut map = self.detached.write().unwrap_or_else(|e| e.into_inner());
        map.entry(key).or_insert_with(|| {
            tracing::error!(
                metric = def.name,
                registered = ?registered,
                conflicting = ?def,
                "two definitions of one metric with different kinds, labels or buckets (are two crates using \
                 different catalogs?); the later one is recorded but not exposed"
            );
            Box::leak(Box::new(Family::new(def, self.default_cap.load(Ordering::Relaxed))))
        })
    }

    pub(crate) fn families(&self) -> Vec<&'static Family> {
        self.families.read().unwrap_or_else(|e| e.into_inner()).0.clone()
    }
}

/// The request counters and duration histograms HTTP layers record into (what the viewer's
/// endpoints table reads).
static HTTP_SERVER: RwLock<Vec<(&'static Family, &'static Family)>> = RwLock::new(Vec::new());

/// Notes a pair of families an HTTP layer records requests into.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn note_http_server(requests: &'static Family, duration: &'static Family) {
    let mut f = HTTP_SERVER.write().unwrap_or_else(|e| e.into_inner());
    if !f.iter().any(|(r, d)| std::ptr::eq(*r, requests) && std::ptr::eq(*d, duration)) {
        f.push((requests, duration));
    }
}

/// The pairs noted by [`note_http_server`].
#[cfg_attr(not(feature = "viewer"), allow(dead_code))]
pub(crate) fn http_server_families() -> Vec<(&'static Family, &'static Family)> {
    HTTP_SERVER.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Registers every family of a catalog, so each shows `# HELP` and `# TYPE` from start-up.
///
/// Families are otherwise registered on first use. Idempotent.
pub fn register_catalog(defs: &'static [MetricDef]) {
    let r = registry();
    r.overflow_family();
    for def in defs {
        r.family(def);
    }
}

/// Sets the series cap of families whose catalog entry sets none; applies to families
/// registered afterwards, so call it before [`register_catalog`].
///
/// # Panics
/// If `cap` is 0 or above [`MAX_SERIES_CAP`].
pub fn set_default_series_cap(cap: usize) {
    assert!(
        (1..=MAX_SERIES_CAP).contains(&cap),
        "the default series cap must be within 1..={MAX_SERIES_CAP}, not {cap}"
    );
    registry().default_cap.store(cap, Ordering::Relaxed);
}

/// The registered family named `name`.
#[cfg(feature = "testing")]
pub(crate) fn family(name: &str) -> Option<&'static Family> {
    registry().families.read().unwrap_or_else(|e| e.into_inner()).1.get(name).copied()
}

/// A `prometheus` registry whose collectors are appended to [`render`]'s output: register your own
/// `prometheus` metrics (or process collectors) here to serve them on the same endpoint.
pub fn prometheus_registry() -> &'static prometheus::Registry {
    &registry().extra
}

type ScrapeHook = Box<dyn Fn() -> bool + Send + Sync>;

/// Gauges read at scrape time (a pool's connections): each hook sets its series before the
/// families are rendered, and is dropped once it returns `false` (its source is gone).
static SCRAPE_HOOKS: std::sync::Mutex<Vec<ScrapeHook>> = std::sync::Mutex::new(Vec::new());

#[cfg_attr(not(feature = "sqlx"), allow(dead_code))]
pub(crate) fn on_scrape(hook: impl Fn() -> bool + Send + Sync + 'static) {
    SCRAPE_HOOKS.lock().unwrap_or_else(|e| e.into_inner()).push(Box::new(hook));
}

pub(crate) fn run_scrape_hooks() {
    SCRAPE_HOOKS.lock().unwrap_or_else(|e| e.into_inner()).retain(|hook| hook());
}

/// For a wrapper that fills a catalog metric's labels from values of its own (the HTTP layer,
/// the task wrapper): which of its values fills each label of `def`, decided once, when the
/// wrapper is configured.
///
/// # Panics
/// If `def` has more labels than `N`, or a label none of `allowed` fills: a configuration
/// mistake `who` reports at start-up.
pub(crate) fn label_slots<S: Copy, const N: usize>(
    def: &MetricDef,
    who: &str,
    allowed: &[(&str, S)],
    none: S,
) -> [S; N] {
    assert!(def.labels.len() <= N, "`{}` has more labels than {who} can fill", def.name);
    let mut out = [none; N];
    for (i, label) in def.labels.iter().enumerate() {
        out[i] = allowed.iter().find(|(n, _)| n == label).map(|(_, s)| *s).unwrap_or_else(|| {
            panic!(
                "{who} cannot fill label `{label}` of `{}`: it fills {}",
                def.name,
                allowed.iter().map(|(n, _)| format!("`{n}`")).collect::<Vec<_>>().join(", ")
            )
        });
    }
    out
}

/// The series of `family` whose labels are filled, slot by slot, by `value`.
pub(crate) fn series_by_slots<'v, S: Copy>(
    family: &'static Family,
    slots: &[S],
    value: impl Fn(S) -> &'v str,
) -> &'static Series {
    family.series_of(slots.iter().take(family.def().labels.len()).map(|s| value(*s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    static A: MetricDef = MetricDef {
        name: "unit_conflict_total",
        help: "first",
        kind: MetricKind::Counter,
        labels: &["a"],
        buckets: &[],
        series_cap: 0,
    };
    static A_OTHER_HELP: MetricDef = MetricDef { help: "second wording", series_cap: 7, ..A };
    static A_OTHER_LABELS: MetricDef = MetricDef { labels: &["b"], ..A };

    #[test]
    fn compatible_definitions_share_a_family_and_others_are_kept_apart() {
        let r = registry();
        let f = r.family(&A);
        assert!(std::ptr::eq(f, r.family(&A_OTHER_HELP)), "help and cap may differ between catalogs");
        let apart = r.family(&A_OTHER_LABELS);
        assert!(!std::ptr::eq(f, apart));
        assert!(std::ptr::eq(apart, r.family(&A_OTHER_LABELS)), "the detached family is reused");
        apart.series_for(&["x"]).inc();
        f.series_for(&["y"]).inc();
        let text = render();
        assert!(text.contains("unit_conflict_total{a=\"y\"} 1\n"), "{text}");
        assert!(!text.contains("b=\"x\""), "a conflicting definition is not exposed:\n{text}");
        assert_eq!(text.matches("# TYPE unit_conflict_total ").count(), 1);
    }

    #[test]
    fn help_text_is_escaped() {
        static H: MetricDef = MetricDef {
            name: "unit_help_escaping_total",
            help: "a \\ backslash\nand a newline",
            kind: MetricKind::Counter,
            labels: &[],
            buckets: &[],
            series_cap: 0,
        };
        registry().family(&H);
        let text = render();
        assert!(text.contains("# HELP unit_help_escaping_total a \\\\ backslash\\nand a newline\n"), "{text}");
        assert!(text.contains("unit_help_escaping_total 0\n"), "{text}");
    }
}
