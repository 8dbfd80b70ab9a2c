//! The runtime of `obs`: what the compile-time-checked instrumentation macros call.
//!
//! Declare metrics in `metrics.toml` next to your `Cargo.toml` (format: the `obs-catalog` crate),
//! then instrument functions:
//!
//! ```
//! use obs_runtime::{counted, metric, timed};
//!
//! #[counted(metric = "shop_orders_total", labels(region = region, status = "placed"))]
//! #[timed(metric = "shop_checkout_duration_seconds")]
//! fn place_order(region: &str) { /* … */ }
//!
//! place_order("eu");
//! metric!("shop_revenue_total", currency = "EUR").inc_by(12.5);
//! print!("{}", obs_runtime::metrics::render());
//! ```
//!
//! A metric name or label the catalog does not declare is a compile error:
//!
//! ```compile_fail
//! #[obs_runtime::counted(metric = "shop_order_total")] // did you mean `shop_orders_total`?
//! fn place_order() {}
//! ```
#![warn(missing_docs)]

#[cfg(any(feature = "reqwest-middleware", feature = "http"))]
pub mod client;
pub mod config;
mod context;
#[cfg(feature = "sqlx")]
pub mod db;
#[cfg(feature = "http")]
pub mod http;
pub mod logs;
pub mod metrics;
mod outcome;
#[cfg(feature = "profiling")]
pub mod profile;
#[cfg(not(feature = "profiling"))]
mod profile;
#[cfg(feature = "redis")]
pub mod redis;
pub mod scrub;
pub mod task;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace;
#[cfg(feature = "viewer")]
pub mod viewer;

#[doc(hidden)]
pub mod __private;

#[cfg(test)]
mod architecture;

pub use obs_macros::{Scrub, catalog, counted, metric, metric_def, timed, traced_span};
pub use scrub::Scrub;
pub use trace::export::InitError;

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by [`init`] with observability disabled: the metric macros then record nothing, and the
/// HTTP layer and the task wrapper only pass through.
static OFF: AtomicBool = AtomicBool::new(false);

/// Database queries lasting at least this many µs are logged as slow (`u64::MAX`: none).
#[cfg_attr(not(feature = "sqlx"), allow(dead_code))]
pub(crate) static DB_SLOW_MICROS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1_000_000);

/// Whether [`init`] turned observability off (one relaxed load).
#[inline(always)]
pub(crate) fn is_off() -> bool {
    OFF.load(Ordering::Relaxed)
}

/// Sets up spans from `config` (see [`config::Config::from_env`]); keep the guard alive for the
/// life of the program: dropping it exports what is queued, within the configured deadline.
///
/// With observability disabled (`ENABLE_OBSERVABILITY=false`) this starts no thread and turns
/// everything off: spans, logs, metrics recorded by the macros and by the HTTP and task wrappers
/// (families registered with `metrics::register_catalog` are still listed in `/metrics`, without
/// samples; label expressions are not evaluated). The instrumentation then costs
/// a relaxed atomic load per macro; the HTTP layer only keeps the request id (the `X-Request-ID`
/// header and the `RequestId` extension handlers may rely on).
pub fn init(config: config::Config) -> Result<ObsGuard, InitError> {
    if trace::pipeline().is_some() {
        return Err(InitError::AlreadyInitialized);
    }
    // A second `init` (allowed after a disabled one, which installs nothing) decides anew.
    OFF.store(!config.enabled, Ordering::Relaxed);
    if config.enabled {
        metrics::clock::calibrate();
    }
    if !config.enabled {
        trace::set_gate(false);
        return Ok(ObsGuard { deadline: config.shutdown_timeout, active: false });
    }
    let subscriber = config.logs || config.tracing_spans.is_some();
    if subscriber && tracing::dispatcher::has_been_set() {
        return Err(InitError::SubscriberAlreadySet);
    }
    scrub::set_rules(config.scrub.clone());
    trace::Pipeline::install(&config)?;
    #[cfg(all(feature = "process", target_os = "linux"))]
    if config.process_metrics {
        metrics::runtime::register_process();
    }
    metrics::runtime::register_build_info(
        &config.service_name,
        config.service_version.as_deref(),
        config.build_commit.as_deref(),
    );
    if let Some(otlp) = config.otlp_logs.as_ref().filter(|_| config.logs) {
        logs::otlp::start(otlp, logs::otlp::resource(&trace::export::resource(&config)));
    }
    if subscriber {
        install_subscriber(&config)?;
    }
    trace::configure(&config);
    #[cfg(feature = "viewer")]
    if config.viewer.on {
        viewer::start(&config);
    }
    DB_SLOW_MICROS.store(
        config.db_slow_query.map_or(u64::MAX, |d| d.as_micros().clamp(1, u64::MAX as u128 - 1) as u64),
        Ordering::Relaxed,
    );
    #[cfg(feature = "pyroscope")]
    start_continuous_profiling(&config);
    warn_about_settings(&config);
    trace::set_gate(true);
    Ok(ObsGuard { deadline: config.shutdown_timeout, active: true })
}

/// The global `tracing` subscriber: the log layer and the bridge, each with its filter.
fn install_subscriber(config: &config::Config) -> Result<(), InitError> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    let logs = config.logs.then(|| {
        let mut layer = logs::LogLayer::new(config.log_format);
        if !config.console_logs {
            layer = layer.without_console();
        } else if let Some(w) = &config.log_writer {
            layer = layer.shared_writer(w.0.clone());
        } else if config.environment == config::Environment::Development {
            // A short program's lines then come in order with its own output; elsewhere a
            // thread of its own writes them, so that a slow stream never holds a request.
            layer = layer.synchronous();
        }
        layer.with_filter(config.log_filter.clone())
    });
    let bridge = config.tracing_spans.clone().map(|f| trace::bridge::BridgeLayer.with_filter(f));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(logs).with(bridge))
        .map_err(|_| InitError::SubscriberAlreadySet)
}

/// Continuous profiles to Pyroscope, when configured (a warning says why not, if it cannot).
#[cfg(feature = "pyroscope")]
fn start_continuous_profiling(config: &config::Config) {
    if config.profiling.continuous
        && let Some(url) = config.profiling.pyroscope.as_deref()
    {
        if !url.starts_with("http://") {
            tracing::warn!(target: "obs", url, "continuous profiling is off: the Pyroscope address must be http://");
        } else if !profile::start(Some(profile::push::continuous(config, url))) {
            tracing::warn!(target: "obs", "continuous profiling is off: a profile was taken before `init`");
        }
    }
}

/// Said once, at start: settings that are allowed but probably not meant.
fn warn_about_settings(config: &config::Config) {
    if config.profiling.endpoints
        && config.profiling.token.is_none()
        && config.environment != config::Environment::Development
    {
        tracing::warn!(
            target: "obs",
            "the profiling endpoints are on without a token: anyone who reaches them can take CPU profiles; set \
             OBS_PROFILING_TOKEN"
        );
    }
    if !config.environment_named {
        // A production deployment that forgot `OBS_ENV` samples everything, logs at DEBUG and
        // may serve profiles without a token.
        tracing::info!(
            target: "obs",
            sampling_ratio = config.sampling_ratio(),
            profiling_endpoints = config.profiling.endpoints,
            "OBS_ENV is not set: development defaults apply; set OBS_ENV=production (or staging) in deployments"
        );
    }
    #[cfg(not(feature = "pyroscope"))]
    if config.profiling.continuous && config.profiling.pyroscope.is_some() {
        tracing::warn!(
            target: "obs",
            "continuous profiling is off: a Pyroscope address is set, but obs-runtime was built without its \
             `pyroscope` feature"
        );
    }
}

/// Flushes and stops the span pipeline when dropped, within the configured shutdown deadline.
#[must_use = "dropping the guard at once stops the export of spans"]
pub struct ObsGuard {
    deadline: std::time::Duration,
    active: bool,
}

impl ObsGuard {
    /// Stops now; `true` if everything queued was handed to the backend within the deadline.
    pub fn shutdown(mut self) -> bool {
        self.stop()
    }

    fn stop(&mut self) -> bool {
        if !std::mem::replace(&mut self.active, false) {
            return true;
        }
        trace::set_gate(false);
        let start = std::time::Instant::now();
        // Log lines first (local and quick), so that a collector that is down and takes the
        // whole deadline does not cost the last lines; with at most a third of the deadline, so
        // that a blocked stdout does not cost the spans.
        let share = self.deadline / 3;
        let out = logs::Writer::flush(logs::Stream::Stdout, share);
        let err = logs::Writer::flush(logs::Stream::Stderr, share.saturating_sub(start.elapsed()));
        // Log records over OTLP, in the same third.
        let records = logs::otlp::shutdown(share.saturating_sub(start.elapsed()));
        let left = self.deadline.saturating_sub(start.elapsed());
        // The profiler's last window and the spans are pushed side by side, in the same deadline.
        #[cfg(feature = "profiling")]
        let profiler = profile::shutdown_begin(start + self.deadline);
        // A tenth of the deadline is kept for the last flush: a collector that never answers must
        // not cost the line saying what was lost.
        let spans = trace::pipeline().is_none_or(|p| p.shutdown(left.saturating_sub(self.deadline / 10)));
        #[cfg(feature = "profiling")]
        let spans = profile::shutdown_wait(profiler, start + self.deadline) && spans;
        // Then what is left, and what the shutdown itself logged (a failed export, a refused
        // push), in the rest of the deadline.
        let out_last = logs::Writer::flush(logs::Stream::Stdout, self.deadline.saturating_sub(start.elapsed()));
        let err_last = logs::Writer::flush(logs::Stream::Stderr, self.deadline.saturating_sub(start.elapsed()));
        // A stream still blocked: what it holds is lost with the process, and counted.
        if !out_last {
            logs::Writer::abandon(logs::Stream::Stdout);
        }
        if !err_last {
            logs::Writer::abandon(logs::Stream::Stderr);
        }
        spans && out && err && records && out_last && err_last
    }
}

impl Drop for ObsGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::config;

    #[test]
    fn span_level_follows_the_environment_and_verbose_directives() {
        use crate::trace::Level::{Debug, Info, Trace};
        let level = |env: &str, rust_log: Option<&str>| {
            let config = config::Config::from_vars(|k| match k {
                "OBS_ENV" => Some(env.to_owned()),
                "RUST_LOG" => rust_log.map(str::to_owned),
                _ => None,
            })
            .unwrap();
            crate::trace::span_min_level(&config)
        };
        assert_eq!(level("development", None), Debug);
        assert_eq!(level("production", None), Info);
        // Quieter logs keep info spans.
        assert_eq!(level("production", Some("warn")), Info);
        assert_eq!(level("development", Some("error")), Debug);
        // A verbose directive, for any target, records spans of its level.
        assert_eq!(level("production", Some("debug")), Debug);
        assert_eq!(level("production", Some("info,revel=trace")), Trace);
        assert_eq!(level("development", Some("trace")), Trace);
    }
}
