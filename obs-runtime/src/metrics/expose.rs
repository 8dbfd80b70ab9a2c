//! The registry's exposition: Prometheus text (format 0.0.4, the default) or OpenMetrics 1.0.0
//! text, chosen by the scraper's `Accept` header ([`Format::negotiate`]).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use prometheus::core::{Collector, Desc};
use prometheus::proto;

use super::exemplar::Exemplar;
use super::family::Value;
use super::{Family, MetricKind, registry};

/// The `Content-Type` of [`render`]'s output (Prometheus text, format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `Content-Type` of the OpenMetrics exposition ([`Format::OpenMetrics`]).
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An exposition format.
///
/// ```
/// use obs_runtime::metrics::Format;
/// // What Prometheus asks for: OpenMetrics first, the text format as a fallback.
/// let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
///                   text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
/// assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
/// assert_eq!(Format::negotiate(Some("*/*")), Format::Text); // curl
/// let text = Format::OpenMetrics.render();
/// assert!(text.ends_with("# EOF\n"));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4, the default: what [`render`] writes.
    #[default]
    Text,
    /// OpenMetrics 1.0.0 text: a counter's family is named without its `_total` (its samples
    /// keep it), `# EOF` ends the exposition.
    OpenMetrics,
}

impl Format {
    /// The format a scraper's `Accept` header asks for: OpenMetrics when it lists
    /// `application/openmetrics-text` (version 1.0.0, or none) with a weight at least that of
    /// `text/plain`; the text format otherwise, and for a missing or malformed header (a range
    /// whose weight does not parse counts as not asked for).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else { return Format::Text };
        let (mut openmetrics, mut text) = (0.0f32, 0.0f32);
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let (mut q, mut version) = (1.0f32, None);
            for (key, value) in parts.filter_map(|p| p.split_once('=')) {
                match key.trim().to_ascii_lowercase().as_str() {
                    "q" => q = value.trim().parse().ok().filter(|q: &f32| (0.0..=1.0).contains(q)).unwrap_or(0.0),
                    "version" => version = Some(value.trim().trim_matches('"').to_owned()),
                    _ => {}
                }
            }
            match media.as_str() {
                "application/openmetrics-text" if version.as_deref().is_none_or(|v| v == "1.0.0") => {
                    openmetrics = openmetrics.max(q)
                }
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text { Format::OpenMetrics } else { Format::Text }
    }

    /// The response's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }

    /// The exposition of every registered family in this format.
    pub fn render(self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.render_into(&mut out);
        out
    }

    /// [`render`](Self::render) into an existing buffer (appends).
    pub fn render_into(self, out: &mut String) {
        super::run_scrape_hooks();
        let r = registry();
        r.overflow_family();
        let mut families = r.families();
        families.sort_by_key(|f| f.def.name);
        let om = self == Format::OpenMetrics;
        for f in families {
            render_family(f, out, om);
        }
        let extra = r.extra.gather();
        if om {
            for mf in &extra {
                openmetrics_family(mf, out);
            }
            out.push_str("# EOF\n");
        } else if !extra.is_empty() {
            let mut buf = Vec::new();
            match prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &extra, &mut buf) {
                Ok(()) => out.push_str(&String::from_utf8_lossy(&buf)),
                Err(err) => {
                    tracing::error!(%err, "cannot encode the collectors of obs_runtime::metrics::prometheus_registry()")
                }
            }
        }
    }
}

/// The text exposition (format 0.0.4) of every registered family (each with `# HELP` and
/// `# TYPE`, even before its first series), followed by the collectors of
/// [`prometheus_registry`](super::prometheus_registry). [`Format`] has the OpenMetrics one.
pub fn render() -> String {
    Format::Text.render()
}

/// [`render`] into an existing buffer (appends).
pub fn render_into(out: &mut String) {
    Format::Text.render_into(out)
}

/// `# HELP` and `# TYPE` of a family: in OpenMetrics a counter's family drops `_total`, and the
/// help text escapes `"` too. Returns the family's name as written.
fn metadata<'a>(name: &'a str, help: &str, type_name: &str, om: bool, out: &mut String) -> &'a str {
    let family = match (om, type_name) {
        (true, "counter") => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    };
    out.push_str("# HELP ");
    out.push_str(family);
    out.push(' ');
    escape(help, om, out);
    out.push_str("\n# TYPE ");
    out.push_str(family);
    out.push(' ');
    out.push_str(type_name);
    out.push('\n');
    family
}

fn render_family(f: &Family, out: &mut String, om: bool) {
    let def = f.def;
    metadata(def.name, def.help, def.kind.type_name(), om, out);
    // Exemplars are OpenMetrics only, on counters and histogram buckets.
    let exemplars = om && def.kind != MetricKind::Gauge;
    for s in f.snapshot() {
        let exemplar = |i: usize, out: &mut String| {
            if let Some(e) = s.exemplar(i).filter(|_| exemplars) {
                write_exemplar(&e, out);
            }
        };
        match &s.value {
            Value::Int => {
                sample_with(out, def.name, "", def.labels, s.label_values(), None);
                let _ = write!(out, "{}", s.cell().load(Ordering::Relaxed));
                exemplar(0, out);
                out.push('\n');
            }
            Value::Float => {
                sample_with(out, def.name, "", def.labels, s.label_values(), None);
                float(f64::from_bits(s.cell().load(Ordering::Relaxed)), out);
                exemplar(0, out);
                out.push('\n');
            }
            Value::Histogram(h) => {
                let mut cumulative = 0u64;
                let mut le = String::new();
                for (i, c) in h.counts().enumerate() {
                    cumulative += c;
                    le.clear();
                    match h.bounds.get(i) {
                        Some(&b) if om => canonical_float(b, &mut le),
                        Some(&b) => float(b, &mut le),
                        None => le.push_str("+Inf"),
                    }
                    sample_with(out, def.name, "_bucket", def.labels, s.label_values(), Some(("le", &le)));
                    let _ = write!(out, "{cumulative}");
                    exemplar(i, out);
                    out.push('\n');
                }
                sample_with(out, def.name, "_sum", def.labels, s.label_values(), None);
                float(f64::from_bits(s.cell().load(Ordering::Relaxed)), out);
                out.push('\n');
                // The count is the +Inf bucket, so the two always agree within one scrape.
                sample_with(out, def.name, "_count", def.labels, s.label_values(), None);
                let _ = writeln!(out, "{cumulative}");
            }
        }
    }
}

/// ` # {trace_id="…",span_id="…"} value timestamp`, after a sample's value (OpenMetrics 1.0:
/// the ids as Grafana's and Prometheus's exemplar links read them, the time in seconds).
fn write_exemplar(e: &Exemplar, out: &mut String) {
    let _ = write!(out, " # {{trace_id=\"{:032x}\",span_id=\"{:016x}\"}} ", e.trace_id, e.span_id);
    float(e.value, out);
    let _ = write!(out, " {}.{:03}", e.time_ms / 1000, e.time_ms % 1000);
}

/// A sample's name and labels, up to its value: `extra` is the `le` or `quantile` label.
fn sample_with<'a>(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[&str],
    values: impl Iterator<Item = &'a str>,
    extra: Option<(&str, &str)>,
) {
    out.push_str(name);
    out.push_str(suffix);
    if !labels.is_empty() || extra.is_some() {
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
        if let Some((label, value)) = extra {
            if !first {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            out.push_str(value);
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

/// A float as OpenMetrics wants `le` (and `quantile`) values: the spelling of Go's
/// `strconv.FormatFloat(v, 'g', -1, 64)` as the official Python client writes it (`1.0`,
/// `0.005`, `1e-05`, `1e+06`), which its parser requires.
fn canonical_float(v: f64, out: &mut String) {
    if !v.is_finite() {
        return float(v, out);
    }
    // Rust's `Debug` is the shortest round-trip form with `.0` on integers, and switches to an
    // exponent where Python's `repr` does; the exponent is then written Python's way.
    let s = format!("{v:?}");
    let s = match s.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = exp.strip_prefix('-').map_or(("+", exp), |d| ("-", d));
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s,
    };
    // Go writes an exponent from 1e21 down to 1e+06 where Python still writes digits.
    match s.find('.') {
        Some(dot) if v > 0.0 && dot > 6 && !s.contains('e') => {
            let mantissa = format!("{}.{}{}", &s[..1], &s[1..dot], &s[dot + 1..]);
            let _ = write!(out, "{}e+0{}", mantissa.trim_end_matches(['0', '.']), dot - 1);
        }
        _ => out.push_str(&s),
    }
}

/// A family of [`prometheus_registry`](super::prometheus_registry) (process, tokio, build info)
/// in OpenMetrics.
fn openmetrics_family(mf: &proto::MetricFamily, out: &mut String) {
    use proto::MetricType;
    let name = mf.name();
    let type_name = match mf.get_field_type() {
        MetricType::COUNTER => "counter",
        MetricType::GAUGE => "gauge",
        MetricType::HISTOGRAM => "histogram",
        MetricType::SUMMARY => "summary",
        MetricType::UNTYPED => "unknown",
    };
    let family = metadata(name, mf.help(), type_name, true, out);
    for m in mf.get_metric() {
        let names: Vec<&str> = m.get_label().iter().map(|l| l.name()).collect();
        let values = || m.get_label().iter().map(|l| l.value());
        let mut line = |suffix: &str, extra: Option<(&str, &str)>, value: f64| {
            sample_with(out, family, suffix, &names, values(), extra);
            float(value, out);
            out.push('\n');
        };
        match mf.get_field_type() {
            MetricType::COUNTER => line("_total", None, m.get_counter().get_value()),
            MetricType::GAUGE => line("", None, m.get_gauge().get_value()),
            // Only through the protobuf API (the crate's own encoder cannot write these either).
            #[allow(deprecated)]
            MetricType::UNTYPED => line("", None, m.get_untyped().get_value()),
            MetricType::HISTOGRAM => {
                let h = m.get_histogram();
                let mut le = String::new();
                for b in h.get_bucket().iter().filter(|b| b.upper_bound().is_finite()) {
                    le.clear();
                    canonical_float(b.upper_bound(), &mut le);
                    line("_bucket", Some(("le", &le)), b.cumulative_count() as f64);
                }
                line("_bucket", Some(("le", "+Inf")), h.get_sample_count() as f64);
                line("_sum", None, h.get_sample_sum());
                line("_count", None, h.get_sample_count() as f64);
            }
            MetricType::SUMMARY => {
                let s = m.get_summary();
                let mut q = String::new();
                for quantile in s.get_quantile() {
                    q.clear();
                    canonical_float(quantile.quantile(), &mut q);
                    line("", Some(("quantile", &q)), quantile.value());
                }
                line("_sum", None, s.sample_sum());
                line("_count", None, s.sample_count() as f64);
            }
        }
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
                            for (&b, count) in h.bounds.iter().zip(h.counts()) {
                                cumulative += count;
                                let mut pb = proto::Bucket::default();
                                pb.set_upper_bound(b);
                                pb.set_cumulative_count(cumulative);
                                buckets.push(pb);
                            }
                            cumulative += h.counts().last().unwrap_or_default();
                            ph.set_bucket(buckets);
                            ph.set_sample_count(cumulative);
                            ph.set_sample_sum(f64::from_bits(s.cell().load(Ordering::Relaxed)));
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

/// An axum handler serving the exposition in the format the scraper's `Accept` header asks for
/// ([`Format::negotiate`]: OpenMetrics for Prometheus, the text format otherwise), with its
/// content type.
///
/// ```
/// let app: axum::Router = axum::Router::new()
///     .route("/metrics", axum::routing::get(obs_runtime::metrics::metrics_handler));
/// ```
#[cfg(feature = "axum")]
pub async fn metrics_handler(headers: axum::http::HeaderMap) -> impl axum::response::IntoResponse {
    let accept = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    ([(axum::http::header::CONTENT_TYPE, format.content_type())], format.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn le_values_are_spelled_as_the_openmetrics_parser_requires() {
        // Expected: `floatToGoString` of the official Python client (prometheus_client.utils),
        // which its OpenMetrics parser compares `le` and `quantile` values against.
        let cases = [
            (0.005, "0.005"),
            (0.1, "0.1"),
            (1.0, "1.0"),
            (2.5, "2.5"),
            (10.0, "10.0"),
            (1000.0, "1000.0"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (123456.7, "123456.7"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (1e9, "1e+09"),
            (1e15, "1e+015"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e21, "1e+21"),
            (0.0, "0.0"),
            (-1.5, "-1.5"),
            (3e-7, "3e-07"),
            (f64::INFINITY, "+Inf"),
        ];
        for (v, want) in cases {
            let mut out = String::new();
            canonical_float(v, &mut out);
            assert_eq!(out, want, "{v:e}");
        }
    }

    #[test]
    fn the_accept_header_chooses_the_format() {
        let n = |accept| Format::negotiate(Some(accept));
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(n("application/openmetrics-text"), Format::OpenMetrics);
        assert_eq!(n("application/openmetrics-text; version=1.0.0; charset=utf-8"), Format::OpenMetrics);
        assert_eq!(n("text/plain;version=0.0.4;q=0.9,application/openmetrics-text;version=1.0.0;q=0.8"), Format::Text);
        assert_eq!(n("application/openmetrics-text;version=0.0.1"), Format::Text, "only 1.0.0 is written");
        assert_eq!(n("text/plain"), Format::Text);
        assert_eq!(n("*/*"), Format::Text);
        assert_eq!(n("application/openmetrics-text;q=banana"), Format::Text, "a malformed weight asks for nothing");
        assert_eq!(n("application/openmetrics-text;q=0"), Format::Text);
        assert_eq!(n(",,;;=,"), Format::Text);
        assert_eq!(n("APPLICATION/OpenMetrics-Text;Version=\"1.0.0\""), Format::OpenMetrics);
    }

    /// Runs `f` with the thread's span set to `ctx`, as `trace` sets it inside a span.
    fn in_span(ctx: crate::context::Ctx, f: impl FnOnce()) {
        let prev = crate::context::SPAN.with(|c| c.replace(ctx));
        f();
        crate::context::SPAN.with(|c| c.set(prev));
    }

    const SAMPLED: crate::context::Ctx = crate::context::Ctx::new(0xABCD << 64 | 0x1234, 0x77, true, true);

    fn lines_of<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(name)).collect()
    }

    #[test]
    fn a_recording_inside_a_sampled_span_leaves_an_exemplar_in_openmetrics_only() {
        static C: super::super::MetricDef = super::super::MetricDef {
            name: "unit_exemplar_total",
            help: "h",
            kind: MetricKind::Counter,
            labels: &["k"],
            buckets: &[],
            series_cap: 0,
        };
        static G: super::super::MetricDef =
            super::super::MetricDef { name: "unit_exemplar_gauge", kind: MetricKind::Gauge, ..C };
        let (c, g) = (registry().family(&C), registry().family(&G));
        c.series_for(&["unsampled"]).inc();
        in_span(SAMPLED.with_sampled(false), || c.series_for(&["unsampled"]).inc());
        in_span(SAMPLED, || {
            c.series_for(&["sampled"]).inc_by_u64(3);
            g.series_for(&["sampled"]).add_f64(2.0);
        });
        let om = Format::OpenMetrics.render();
        let lines = lines_of(&om, "unit_exemplar_total");
        assert_eq!(lines[0], "unit_exemplar_total{k=\"unsampled\"} 2", "{om}");
        let (sample, exemplar) = lines[1].split_once(" # ").expect("an exemplar");
        assert_eq!(sample, "unit_exemplar_total{k=\"sampled\"} 3");
        let (labels, rest) = exemplar.split_once("} ").unwrap();
        assert_eq!(labels, "{trace_id=\"000000000000abcd0000000000001234\",span_id=\"0000000000000077\"");
        let (value, time) = rest.split_once(' ').unwrap();
        assert_eq!(value, "3");
        let time: f64 = time.parse().unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!((now - time).abs() < 60.0, "a wall-clock time in seconds: {time} vs {now}");
        assert!(!lines_of(&om, "unit_exemplar_gauge").iter().any(|l| l.contains('#')), "no exemplar on a gauge:\n{om}");
        assert!(!render().contains("trace_id"), "the 0.0.4 text format has no exemplars");
    }

    #[test]
    fn a_histogram_exemplar_sits_on_the_bucket_its_value_fell_in() {
        static H: super::super::MetricDef = super::super::MetricDef {
            name: "unit_exemplar_seconds",
            help: "h",
            kind: MetricKind::Histogram,
            labels: &[],
            buckets: &[0.1, 1.0],
            series_cap: 0,
        };
        let s = registry().family(&H).series_for(&[]);
        s.observe(0.05);
        in_span(SAMPLED, || s.observe(0.5));
        let om = Format::OpenMetrics.render();
        let with: Vec<&str> =
            lines_of(&om, "unit_exemplar_seconds").into_iter().filter(|l| l.contains(" # ")).collect();
        assert_eq!(with.len(), 1, "{om}");
        assert!(with[0].starts_with("unit_exemplar_seconds_bucket{le=\"1.0\"} 2 # {trace_id="), "{om}");
        assert!(with[0].contains("} 0.5 "), "{om}");
    }
}
