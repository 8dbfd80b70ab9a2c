//! obs's own families, whatever the catalog: the telemetry pipeline's health. Defined here, where
//! `runtime_families` lists them for dashboards and alerts, and used by the modules that count
//! them (trace, logs, profile): the dependency goes from those modules to `metrics`, not back.

use super::{MetricDef, MetricKind};

pub(crate) static SPANS_EXPORTED: MetricDef = MetricDef {
    name: "obs_spans_exported_total",
    help: "Spans the backend accepted.",
    kind: MetricKind::Counter,
    labels: &[],
    buckets: &[],
    series_cap: 0,
};

pub(crate) static SPANS_DROPPED: MetricDef = MetricDef {
    name: "obs_spans_dropped_total",
    help: "Finished spans not exported, by reason: queue_full (the export queue was full), rejected (the backend refused them for good: 4xx but 429, gRPC INVALID_ARGUMENT, ...), throttled (429 or RESOURCE_EXHAUSTED until the retries ran out), unavailable (502/503/504 or gRPC UNAVAILABLE until the retries ran out), timeout (no answer within the export timeout), unreachable (no connection), shutdown (still queued when shutdown's deadline expired, or finished after it), export_failed (anything else, e.g. the spans file could not be written).",
    kind: MetricKind::Counter,
    labels: &["reason"],
    buckets: &[],
    series_cap: 0,
};

pub(crate) static LOG_RECORDS_EXPORTED: MetricDef = MetricDef {
    name: "obs_log_records_exported_total",
    help: "Log records the collector accepted (OTLP log export, OTEL_LOGS_EXPORTER=otlp).",
    kind: MetricKind::Counter,
    labels: &[],
    buckets: &[],
    series_cap: 0,
};

pub(crate) static LOG_LINES_DROPPED: MetricDef = MetricDef {
    name: "obs_log_lines_dropped_total",
    help: "Log lines not written: the output buffer was full (standard output or error slower than the service), or the stream failed (e.g. a broken pipe); with OTLP log export, records dropped because its queue was full or an export failed.",
    kind: MetricKind::Counter,
    labels: &[],
    buckets: &[],
    series_cap: 0,
};

/// Continuous profiles not pushed (the `pyroscope` feature).
pub(crate) static PROFILES_DROPPED: MetricDef = MetricDef {
    name: "obs_profiles_dropped_total",
    help: "Continuous CPU profiles not pushed to Pyroscope. reason: queue_full (a push was still running) | push_failed (Pyroscope refused or was unreachable).",
    kind: MetricKind::Counter,
    labels: &["reason"],
    buckets: &[],
    series_cap: 0,
};

pub(crate) static OVERFLOW: MetricDef = MetricDef {
    name: "obs_metric_overflow_total",
    help: "Recordings that went to a metric's overflow series because it reached its series cap.",
    kind: MetricKind::Counter,
    labels: &["metric"],
    buckets: &[],
    // One series per metric family: far more than any catalog holds.
    series_cap: 100_000,
};
