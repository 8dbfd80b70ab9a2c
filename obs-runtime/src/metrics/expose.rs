//! Prometheus text exposition (format 0.0.4) of the registry.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use prometheus::core::{Collector, Desc};
use prometheus::proto;

use super::family::Value;
use super::{Family, MetricKind, registry};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The text exposition of every registered family (each with `# HELP` and `# TYPE`, even before
/// its first series), followed by the collectors of [`prometheus_registry`](super::prometheus_registry).
pub fn render() -> String {
    let mut out = String::with_capacity(16 * 1024);
    render_into(&mut out);
    out
}

/// [`render`] into an existing buffer (appends).
pub fn render_into(out: &mut String) {
    super::run_scrape_hooks();
    let r = registry();
    r.overflow_family();
    let mut families = r.families();
    families.sort_by_key(|f| f.def.name);
    for f in families {
        render_family(f, out);
    }
    let extra = r.extra.gather();
    if !extra.is_empty() {
        let mut buf = Vec::new();
        match prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &extra, &mut buf) {
            Ok(()) => out.push_str(&String::from_utf8_lossy(&buf)),
            Err(err) => {
                tracing::error!(%err, "cannot encode the collectors of obs_runtime::metrics::prometheus_registry()")
            }
        }
    }
}

fn render_family(f: &Family, out: &mut String) {
    let def = f.def;
    out.push_str("# HELP ");
    out.push_str(def.name);
    out.push(' ');
    escape(def.help, false, out);
    out.push_str("\n# TYPE ");
    out.push_str(def.name);
    out.push(' ');
    out.push_str(def.kind.type_name());
    out.push('\n');
    for s in f.snapshot() {
        match &s.value {
            Value::Int(v) => {
                sample(out, def.name, "", def.labels, s.label_values(), None);
                let _ = writeln!(out, "{}", v.load(Ordering::Relaxed));
            }
            Value::Float(v) => {
                sample(out, def.name, "", def.labels, s.label_values(), None);
                float(f64::from_bits(v.load(Ordering::Relaxed)), out);
                out.push('\n');
            }
            Value::Histogram(h) => {
                let mut cumulative = 0u64;
                let mut le = String::new();
                for (i, c) in h.counts.iter().enumerate() {
                    cumulative += c.load(Ordering::Relaxed);
                    le.clear();
                    match h.bounds.get(i) {
                        Some(&b) => float(b, &mut le),
                        None => le.push_str("+Inf"),
                    }
                    sample(out, def.name, "_bucket", def.labels, s.label_values(), Some(&le));
                    let _ = writeln!(out, "{cumulative}");
                }
                sample(out, def.name, "_sum", def.labels, s.label_values(), None);
                float(f64::from_bits(h.sum.load(Ordering::Relaxed)), out);
                out.push('\n');
                // The count is the +Inf bucket, so the two always agree within one scrape.
                sample(out, def.name, "_count", def.labels, s.label_values(), None);
                let _ = writeln!(out, "{cumulative}");
            }
        }
    }
}

fn sample<'a>(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[&str],
    values: impl Iterator<Item = &'a str>,
    le: Option<&str>,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        for (l, v) in labels.iter().zip(values) {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(l);
            out.push_str("=\"");
            escape(v, true, out);
            out.push('"');
        }
        if let Some(le) = le {
            if !first {
                out.push(',');
            }
            out.push_str("le=\"");
            out.push_str(le);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
}

/// Escapes `\`, newline and (in label values) `"`, as the text format requires.
fn escape(s: &str, quote: bool, out: &mut String) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// Go's `strconv.FormatFloat(v, 'g', -1, 64)` spelling for the special values; Rust's shortest
/// round-trip form otherwise, which Prometheus parses.
fn float(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// The obs registry as a [`prometheus::core::Collector`], to serve obs families from a
/// `prometheus::Registry` you already expose.
///
/// ```
/// let r = prometheus::Registry::new();
/// r.register(Box::new(obs_runtime::metrics::ObsCollector::new())).unwrap();
/// ```
pub struct ObsCollector {
    descs: Vec<Desc>,
}

impl ObsCollector {
    /// A collector of every family registered now or later. Its descriptors (which
    /// `prometheus::Registry` checks for clashes) cover the families registered now; like any
    /// `prometheus` collector, it leaves out families that have no series yet.
    pub fn new() -> ObsCollector {
        let descs = registry()
            .families()
            .into_iter()
            .filter_map(|f| {
                let labels = f.def.labels.iter().map(|l| l.to_string()).collect();
                Desc::new(f.def.name.into(), f.def.help.into(), labels, Default::default()).ok()
            })
            .collect();
        ObsCollector { descs }
    }
}

impl Default for ObsCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector for ObsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        super::run_scrape_hooks();
        let mut out = Vec::new();
        for f in registry().families() {
            let series = f.snapshot();
            if series.is_empty() {
                continue;
            }
            let mut mf = proto::MetricFamily::default();
            mf.set_name(f.def.name.into());
            mf.set_help(f.def.help.into());
            mf.set_field_type(match f.def.kind {
                MetricKind::Counter | MetricKind::FloatCounter => proto::MetricType::COUNTER,
                MetricKind::Gauge => proto::MetricType::GAUGE,
                MetricKind::Histogram => proto::MetricType::HISTOGRAM,
            });
            let metrics = series
                .into_iter()
                .map(|s| {
                    let labels = f
                        .def
                        .labels
                        .iter()
                        .zip(s.label_values())
                        .map(|(n, v)| {
                            let mut p = proto::LabelPair::default();
                            p.set_name(n.to_string());
                            p.set_value(v.to_string());
                            p
                        })
                        .collect();
                    let mut m = proto::Metric::from_label(labels);
                    match (&s.value, f.def.kind) {
                        (Value::Histogram(h), _) => {
                            let mut ph = proto::Histogram::default();
                            let mut cumulative = 0;
                            let mut buckets = Vec::with_capacity(h.bounds.len());
                            for (i, &b) in h.bounds.iter().enumerate() {
                                cumulative += h.counts[i].load(Ordering::Relaxed);
                                let mut pb = proto::Bucket::default();
                                pb.set_upper_bound(b);
                                pb.set_cumulative_count(cumulative);
                                buckets.push(pb);
                            }
                            cumulative += h.counts[h.bounds.len()].load(Ordering::Relaxed);
                            ph.set_bucket(buckets);
                            ph.set_sample_count(cumulative);
                            ph.set_sample_sum(f64::from_bits(h.sum.load(Ordering::Relaxed)));
                            m.set_histogram(ph);
                        }
                        (_, MetricKind::Gauge) => {
                            let mut g = proto::Gauge::default();
                            g.set_value(s.get().unwrap_or_default());
                            m.set_gauge(g);
                        }
                        _ => {
                            let mut c = proto::Counter::default();
                            c.set_value(s.get().unwrap_or_default());
                            m.set_counter(c);
                        }
                    }
                    m
                })
                .collect();
            mf.set_metric(metrics);
            out.push(mf);
        }
        out
    }
}

/// An axum handler serving [`render`] with the exposition's content type.
///
/// ```
/// let app: axum::Router = axum::Router::new()
///     .route("/metrics", axum::routing::get(obs_runtime::metrics::metrics_handler));
/// ```
#[cfg(feature = "axum")]
pub async fn metrics_handler() -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], render())
}
