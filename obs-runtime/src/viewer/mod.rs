//! A telemetry viewer served by the service itself, for development: recent traces as
//! waterfalls with their log lines, the metrics catalog with in-process charts, a live log tail
//! and CPU flamegraphs, at `/debug/obs`, with no Grafana, Tempo, Loki or Prometheus needed.
//!
//! [`init`](crate::init) starts recording when the viewer is on (`OBS_VIEWER`: on in
//! development, off elsewhere; outside development it also needs `OBS_VIEWER_TOKEN`); mount
//! [`router`] next to your routes. What it keeps is bounded (the newest traces, failed and slow
//! ones longer; the newest log lines; five minutes of each series): at most about 16 MiB of
//! traces, 2 MiB of log lines and 9 MiB of metric histories. Built without the `viewer` feature,
//! nothing of it is compiled.
//!
//! Pages are plain HTML with a little script (no build step, no CDN: it works offline); every
//! page's data is also JSON under `/debug/obs/api/`:
//!
//! | page | JSON |
//! |---|---|
//! | `/debug/obs`: traces, searchable by span name, status, duration, request id | `/debug/obs/api/traces` |
//! | `/debug/obs/traces/{trace id}`: the waterfall, attributes, events, links, log lines | `/debug/obs/api/traces/{trace id}` |
//! | `/debug/obs/metrics`: HTTP endpoints, every family and series, charted | `/debug/obs/api/metrics` |
//! | `/debug/obs/logs`: the live tail, by level, request id and trace id | `/debug/obs/api/logs` |
//! | `/debug/obs/profile`: a CPU profile's flamegraph (feature `profiling`) | `/debug/obs/api/profile.svg?seconds=10` |
//!
//! ```no_run
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = obs_runtime::config::Config::from_env()?;
//! let viewer = config.viewer();
//! let _guard = obs_runtime::init(config)?;
//! let app: axum::Router = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "hello" }))
//!     .merge(obs_runtime::viewer::router(viewer));
//! # Ok(()) }
//! ```
//!
//! Mount it outside the HTTP layer (as above, or merged around the layered service) so that the
//! page's own polling is not traced and logged as traffic.

mod http;
mod page;
mod series;
mod store;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub use crate::config::viewer::Settings;
pub use http::router;

use crate::trace::encode::Batch;

/// Whether [`init`](crate::init) turned recording on.
static ON: AtomicBool = AtomicBool::new(false);
/// A root lasting this long pins its trace (`OBS_TRACES_KEEP_SLOW_MS`, else 2 s).
static SLOW_NS: AtomicU64 = AtomicU64::new(2_000_000_000);

static TRACES: Mutex<Option<store::Traces>> = Mutex::new(None);
static LINES: Mutex<Option<store::Lines>> = Mutex::new(None);

/// Starts recording (from `init`, when the viewer is on): the span exporter and the log layer
/// hand it copies through their taps (they know nothing of the viewer).
pub(crate) fn start(config: &crate::config::Config) {
    // Off (`OBS_TRACES_KEEP_SLOW_MS=0`): no trace is pinned for slowness.
    let slow = config.keep_slow_traces.map_or(u64::MAX, |d| d.as_nanos().min(u64::MAX as u128) as u64);
    SLOW_NS.store(slow, Ordering::Relaxed);
    store::lock(&TRACES).get_or_insert_with(Default::default);
    store::lock(&LINES).get_or_insert_with(Default::default);
    series::start();
    let _ = crate::trace::export::SPAN_TAP.set(spans);
    let _ = crate::logs::LINE_TAP.set(log_line);
    ON.store(true, Ordering::Release);
}

/// Whether the viewer records.
pub(crate) fn recording() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Keeps a copy of a batch's spans (on the exporter thread, before the batch is sent).
fn spans(batch: &Batch) {
    let slow = SLOW_NS.load(Ordering::Relaxed);
    let copies: Vec<_> = batch.spans.iter().map(|(r, end)| store::ViewSpan::of(r, *end, batch.anchor)).collect();
    if let Some(t) = store::lock(&TRACES).as_mut() {
        for s in copies {
            t.insert(s, slow);
        }
    }
}

/// Keeps a copy of a log line as written (scrubbed).
fn log_line(line: &[u8]) {
    let line = store::line(line);
    if let Some(l) = store::lock(&LINES).as_mut() {
        l.push(line);
    }
}
