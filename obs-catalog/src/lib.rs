//! The metric catalog of `obs`: one `metrics.toml` per application, the single source of truth
//! for every metric family the application may emit.
//!
//! This crate parses and validates the catalog. It is used at compile time by `obs-macros` (so a
//! typo in a metric or label name is a compile error) and by the generators of dashboards, alert
//! rules and documentation. It has no runtime role: the macros turn the entries they use into
//! static definitions for `obs-runtime`.
//!
//! # Format
//!
//! ```toml
//! # Each metric is a table under `metrics`, named after the metric.
//! [metrics.shop_orders_total]
//! type = "counter"                       # counter | gauge | histogram
//! help = "Orders placed."
//! labels = ["region", "status"]           # optional, default none
//! series_cap = 500                        # optional: at most this many label combinations
//!
//! [metrics.shop_revenue_total]
//! type = "counter"
//! help = "Revenue, in the currency's major unit."
//! labels = ["currency"]
//! value = "float"                         # counters count integers unless they say float
//!
//! [metrics.shop_checkout_duration_seconds]
//! type = "histogram"
//! help = "Time to complete a checkout."
//! unit = "seconds"                        # optional; the name must end in `_<unit>`
//! buckets = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]   # optional, strictly increasing
//!
//! # Optional: where the team's Grafana is, so that the PromQL the macros write into each
//! # instrumented function's documentation links to Grafana's Explore.
//! [links]
//! grafana = "https://grafana.example.com"
//! prometheus_datasource = "prometheus"    # the datasource's uid (default "prometheus")
//! ```
//!
//! ```
//! let catalog = obs_catalog::Catalog::parse(r#"
//!     [metrics.shop_orders_total]
//!     type = "counter"
//!     help = "Orders placed."
//!     labels = ["region"]
//! "#, "metrics.toml".as_ref()).unwrap();
//! assert_eq!(catalog.get("shop_orders_total").unwrap().labels, ["region"]);
//! assert_eq!(catalog.suggest("shop_order_total"), Some("shop_orders_total"));
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// The largest `series_cap` a catalog may declare.
pub const MAX_SERIES_CAP: usize = 1_000_000;

/// Buckets of a histogram that declares none (seconds; the Prometheus client defaults).
pub const DEFAULT_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A monotonically increasing count; the name ends in `_total`.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Observations sorted into cumulative buckets, with their sum and count.
    Histogram,
}

impl Kind {
    /// The name used in the catalog and in the exposition's `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a counter counts: whole numbers (the default) or amounts such as revenue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// `u64`, incremented atomically.
    Integer,
    /// `f64`.
    Float,
}

/// What the runtime records for a metric: its kind with the counter's value type folded in.
/// The one mapping from (`kind`, `value`) used by the macros (the runtime's `MetricKind` and
/// handle types have these names), `obs-gen` and the documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Recorded {
    /// An integer counter.
    Counter,
    /// A counter of amounts (`value = "float"`).
    FloatCounter,
    /// A gauge.
    Gauge,
    /// A histogram.
    Histogram,
}

impl Recorded {
    /// The name of the runtime's variant, handle type and kind marker (`FloatCounter`, …).
    pub fn type_name(self) -> &'static str {
        match self {
            Recorded::Counter => "Counter",
            Recorded::FloatCounter => "FloatCounter",
            Recorded::Gauge => "Gauge",
            Recorded::Histogram => "Histogram",
        }
    }

    /// How a person would say it: `counter (float)` for a float counter, else the kind.
    pub fn describe(self) -> &'static str {
        match self {
            Recorded::Counter => "counter",
            Recorded::FloatCounter => "counter (float)",
            Recorded::Gauge => "gauge",
            Recorded::Histogram => "histogram",
        }
    }
}

/// The label names obs's integrations fill (the HTTP layer's `method`, the database wrapper's
/// `query_type`, …): `metric_def!` types these with the runtime's markers of the same name
/// (`obs_runtime::metrics::label`, checked equal by a test there), any other as a type of its
/// own that no integration accepts.
pub const INTEGRATION_LABELS: &[&str] = &[
    "method",
    "endpoint",
    "status_code",
    "server",
    "status_class",
    "query_type",
    "db_system",
    "status",
    "state",
    "command",
    "cache",
    "result",
    "task_name",
    "queue_name",
];

/// A line and column in the catalog file, both starting at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

/// One validated metric family of the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// The family name, e.g. `revel_tickets_sold_total`.
    pub name: String,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The `# HELP` text.
    pub help: String,
    /// Label names, in the order of the exposition.
    pub labels: Vec<String>,
    /// Optional unit (`seconds`, `bytes`, …); the name carries it as a suffix.
    pub unit: Option<String>,
    /// Upper bounds of a histogram's buckets (without `+Inf`); empty for other kinds.
    pub buckets: Vec<f64>,
    /// Per-metric limit of label combinations; `None` takes the runtime's default.
    pub series_cap: Option<usize>,
    /// Integer or float (always float for gauges and histograms).
    pub value: ValueKind,
    /// Where the metric's table starts in the file.
    pub position: Position,
}

impl Metric {
    /// The PromQL a panel or an investigation starts from, by every label: a counter's
    /// per-second rate, a gauge's sum, a histogram's 95th percentile.
    ///
    /// ```
    /// let source = r#"
    /// [metrics.shop_orders_total]
    /// type = "counter"
    /// help = "Orders."
    /// labels = ["region"]
    /// "#;
    /// let catalog = obs_catalog::Catalog::parse(source, std::path::Path::new("m.toml")).unwrap();
    /// let orders = catalog.get("shop_orders_total").unwrap();
    /// assert_eq!(orders.base_query(), "sum by (region)(rate(shop_orders_total[5m]))");
    /// ```
    pub fn base_query(&self) -> String {
        let by = |extra: &str| {
            let mut l: Vec<&str> = self.labels.iter().map(String::as_str).collect();
            if !extra.is_empty() {
                l.push(extra);
            }
            if l.is_empty() { String::new() } else { format!(" by ({})", l.join(", ")) }
        };
        let name = &self.name;
        match self.kind {
            Kind::Counter => format!("sum{}(rate({name}[5m]))", by("")),
            Kind::Gauge => format!("sum{}({name})", by("")),
            Kind::Histogram => format!("histogram_quantile(0.95, sum{}(rate({name}_bucket[5m])))", by("le")),
        }
    }

    /// What the runtime records: the kind, with `value` for counters.
    pub fn recorded(&self) -> Recorded {
        match (self.kind, self.value) {
            (Kind::Counter, ValueKind::Integer) => Recorded::Counter,
            (Kind::Counter, ValueKind::Float) => Recorded::FloatCounter,
            (Kind::Gauge, _) => Recorded::Gauge,
            (Kind::Histogram, _) => Recorded::Histogram,
        }
    }
}

/// A parsed and validated catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    path: PathBuf,
    metrics: Vec<Metric>,
    links: Links,
}

/// Where the team's tools are (`[links]` in the catalog), for links in generated documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Links {
    /// Grafana's base URL (`http://` or `https://`, without a trailing `/`), if given.
    pub grafana: Option<String>,
    /// The uid of Grafana's Prometheus datasource (default `prometheus`).
    pub prometheus_datasource: String,
}

impl Links {
    /// Grafana's Explore on `expr` over the last hour, if Grafana's URL is given.
    ///
    /// ```
    /// let catalog = obs_catalog::Catalog::parse(
    ///     "[links]\ngrafana = \"https://grafana.example.com/\"\n",
    ///     std::path::Path::new("metrics.toml"),
    /// )
    /// .unwrap();
    /// let url = catalog.links().explore("sum(rate(x_total[5m]))").unwrap();
    /// assert!(url.starts_with("https://grafana.example.com/explore?schemaVersion=1&panes="));
    /// assert!(url.contains("sum%28rate%28x_total%5B5m%5D%29%29"));
    /// ```
    pub fn explore(&self, expr: &str) -> Option<String> {
        let base = self.grafana.as_deref()?;
        let uid = json_string(&self.prometheus_datasource);
        let panes = format!(
            r#"{{"a":{{"datasource":{uid},"queries":[{{"refId":"A","expr":{},"datasource":{{"type":"prometheus","uid":{uid}}}}}],"range":{{"from":"now-1h","to":"now"}}}}}}"#,
            json_string(expr)
        );
        Some(format!("{base}/explore?schemaVersion=1&panes={}&orgId=1", percent_encode(&panes)))
    }
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Every byte but the unreserved ones (`A-Z a-z 0-9 - . _ ~`) as `%XX`: a URL's query value.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Catalog {
    /// Reads and validates the catalog at `path`.
    pub fn load(path: &Path) -> Result<Catalog, CatalogError> {
        match std::fs::read_to_string(path) {
            Ok(source) => Catalog::parse(&source, path),
            Err(err) => Err(CatalogError {
                path: path.to_owned(),
                problems: vec![Problem {
                    position: None,
                    metric: None,
                    message: format!("cannot read the metrics catalog: {err}"),
                }],
            }),
        }
    }

    /// Parses and validates catalog text; `path` is only used in error messages.
    ///
    /// Every problem found is reported, not just the first.
    pub fn parse(source: &str, path: &Path) -> Result<Catalog, CatalogError> {
        let mut problems = Vec::new();
        let raw: RawCatalog = match toml::from_str(source) {
            Ok(raw) => raw,
            Err(err) => {
                let position = err.span().map(|span| position_of(source, span.start));
                let message = err.message().trim_end().to_owned();
                return Err(CatalogError {
                    path: path.to_owned(),
                    problems: vec![Problem { position, metric: None, message }],
                });
            }
        };
        let mut entries: Vec<_> = raw.metrics.into_iter().collect();
        // The map sorts by name; the file's order is the one a reader expects.
        entries.sort_by_key(|(name, _)| name.span().start);
        let mut metrics = Vec::with_capacity(entries.len());
        for (name, body) in entries {
            if let Some(metric) = validate(source, name, body, &mut problems) {
                metrics.push(metric);
            }
        }
        let links = links(source, raw.links, &mut problems);
        if problems.is_empty() {
            Ok(Catalog { path: path.to_owned(), metrics, links })
        } else {
            Err(CatalogError { path: path.to_owned(), problems })
        }
    }

    /// The file the catalog was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All metrics, in file order.
    pub fn metrics(&self) -> &[Metric] {
        &self.metrics
    }

    /// Where the team's tools are (`[links]`).
    pub fn links(&self) -> &Links {
        &self.links
    }

    /// The metric named `name`.
    pub fn get(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().find(|m| m.name == name)
    }

    /// The catalog name closest to `name`, if one is close enough to be a likely typo.
    pub fn suggest(&self, name: &str) -> Option<&str> {
        suggest(name, self.metrics.iter().map(|m| m.name.as_str()))
    }
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Why a catalog was rejected: every problem found, each with its position.
#[derive(Debug, Clone)]
pub struct CatalogError {
    /// The catalog file.
    pub path: PathBuf,
    /// What is wrong, in file order.
    pub problems: Vec<Problem>,
}

/// One problem in a catalog.
#[derive(Debug, Clone)]
pub struct Problem {
    /// Where, if known.
    pub position: Option<Position>,
    /// The metric concerned, if any.
    pub metric: Option<String>,
    /// What is wrong and what is expected.
    pub message: String,
}

impl CatalogError {
    /// Formats the problems with `path` shown as given (e.g. relative to the manifest directory).
    pub fn display_with_path<'a>(&'a self, path: &'a Path) -> impl fmt::Display + 'a {
        struct D<'a>(&'a CatalogError, &'a Path);
        impl fmt::Display for D<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for (i, p) in self.0.problems.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    write!(f, "{}", self.1.display())?;
                    if let Some(pos) = p.position {
                        write!(f, ":{}:{}", pos.line, pos.column)?;
                    }
                    f.write_str(": ")?;
                    if let Some(m) = &p.metric {
                        write!(f, "metric `{m}`: ")?;
                    }
                    f.write_str(&p.message)?;
                }
                Ok(())
            }
        }
        D(self, path)
    }
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.display_with_path(&self.path).fmt(f)
    }
}

impl std::error::Error for CatalogError {}

/// Whether `name` is a valid Prometheus metric name (`[a-zA-Z_][a-zA-Z0-9_]*`; colons are kept for
/// recording rules and rejected here).
pub fn is_valid_metric_name(name: &str) -> bool {
    is_identifier(name)
}

/// Whether `name` is a valid Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn is_valid_label_name(name: &str) -> bool {
    is_identifier(name)
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    #[serde(default)]
    metrics: BTreeMap<Spanned<String>, Spanned<RawMetric>>,
    links: Option<RawLinks>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLinks {
    grafana: Option<Spanned<String>>,
    prometheus_datasource: Option<Spanned<String>>,
}

/// `[links]`, checked: Grafana's URL is `http(s)://`, the datasource uid is not empty.
fn links(source: &str, raw: Option<RawLinks>, problems: &mut Vec<Problem>) -> Links {
    let Some(raw) = raw else { return Links { grafana: None, prometheus_datasource: "prometheus".into() } };
    let mut problem = |at: std::ops::Range<usize>, message: String| {
        problems.push(Problem { position: Some(position_of(source, at.start)), metric: None, message })
    };
    let grafana = raw.grafana.and_then(|g| {
        let url = g.get_ref().trim().trim_end_matches('/').to_owned();
        if url.starts_with("http://") || url.starts_with("https://") {
            Some(url)
        } else {
            problem(g.span(), format!("links.grafana: expected an http:// or https:// URL, found {:?}", g.get_ref()));
            None
        }
    });
    let prometheus_datasource = match raw.prometheus_datasource {
        Some(uid) if uid.get_ref().trim().is_empty() => {
            problem(uid.span(), "links.prometheus_datasource: expected a datasource uid, e.g. \"prometheus\"".into());
            String::new()
        }
        Some(uid) => uid.into_inner().trim().to_owned(),
        None => "prometheus".into(),
    };
    Links { grafana, prometheus_datasource }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetric {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    help: Spanned<String>,
    #[serde(default)]
    labels: Vec<Spanned<String>>,
    unit: Option<Spanned<String>>,
    buckets: Option<Spanned<Vec<Spanned<f64>>>>,
    series_cap: Option<Spanned<i64>>,
    value: Option<Spanned<String>>,
}

fn position_of(source: &str, offset: usize) -> Position {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Position { line, column: source[line_start..offset].chars().count() + 1 }
}

/// Validates one metric table of the catalog. Every problem goes to `problems` (in the order of
/// the checks below, which is the order they are reported in); the metric is returned only if
/// its table has none.
fn validate(
    source: &str,
    name: Spanned<String>,
    body: Spanned<RawMetric>,
    problems: &mut Vec<Problem>,
) -> Option<Metric> {
    let before = problems.len();
    let name_at = name.span().start;
    let name = name.into_inner();
    let body_at = body.span().start;
    let RawMetric { kind, help, labels, unit, buckets, series_cap, value } = body.into_inner();

    let mut check = MetricCheck { source, name: &name, name_at, problems };
    check.name_chars();
    let kind_value = check.kind(&kind);
    check.help(&help);
    check.name_suffix(kind_value);
    check.labels(&labels, kind_value);
    if let Some(unit) = &unit {
        check.unit(unit);
    }
    let bucket_values = check.buckets(buckets.as_ref(), kind_value);
    let cap = check.series_cap(series_cap.as_ref());
    let value_kind = check.value(value.as_ref(), kind_value);

    if problems.len() != before {
        return None;
    }
    Some(Metric {
        name,
        kind: kind_value?,
        help: help.into_inner(),
        labels: labels.into_iter().map(Spanned::into_inner).collect(),
        unit: unit.map(Spanned::into_inner),
        buckets: bucket_values,
        series_cap: cap,
        value: value_kind,
        position: position_of(source, body_at.min(name_at)),
    })
}

/// The checks of one metric table, each adding its problems to the catalog's list.
struct MetricCheck<'a> {
    source: &'a str,
    /// The metric's name, as written in the table's header.
    name: &'a str,
    /// Where the name starts in `source`.
    name_at: usize,
    problems: &'a mut Vec<Problem>,
}

impl MetricCheck<'_> {
    /// Records a problem of this metric at byte `offset` of the source.
    fn problem(&mut self, offset: usize, message: String) {
        self.problems.push(Problem {
            position: Some(position_of(self.source, offset)),
            metric: Some(self.name.to_owned()),
            message,
        })
    }

    /// Checks the characters of the metric's name.
    fn name_chars(&mut self) {
        if !is_valid_metric_name(self.name) {
            self.problem(
                self.name_at,
                "invalid metric name: expected letters, digits and `_`, not starting with a digit \
                 (colons are reserved for recording rules)"
                    .into(),
            );
        }
    }

    /// Reads `type`; `None` (with a problem, and a suggestion if one is close) if it is unknown.
    fn kind(&mut self, kind: &Spanned<String>) -> Option<Kind> {
        match kind.get_ref().as_str() {
            "counter" => Some(Kind::Counter),
            "gauge" => Some(Kind::Gauge),
            "histogram" => Some(Kind::Histogram),
            other => {
                let hint = suggest(other, ["counter", "gauge", "histogram"])
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                self.problem(
                    kind.span().start,
                    format!("unknown type `{other}`: expected `counter`, `gauge` or `histogram`{hint}"),
                );
                None
            }
        }
    }

    /// Checks `help` is not blank.
    fn help(&mut self, help: &Spanned<String>) {
        if help.get_ref().trim().is_empty() {
            self.problem(help.span().start, "`help` must not be empty".into());
        }
    }

    /// Checks the suffixes the kind requires or forbids (`_total`, `_bucket`, `_count`, `_sum`).
    fn name_suffix(&mut self, kind: Option<Kind>) {
        let (name, name_at) = (self.name, self.name_at);
        match kind {
            Some(Kind::Counter) if !name.ends_with("_total") => self.problem(
                name_at,
                format!("a counter's name must end in `_total` (e.g. `{}_total`)", name.trim_end_matches('_')),
            ),
            Some(Kind::Gauge | Kind::Histogram) if name.ends_with("_total") => self.problem(
                name_at,
                format!(
                    "only counters may end in `_total` (promtool rejects a {} so named): e.g. `{}`",
                    kind.map_or("", Kind::as_str),
                    name.trim_end_matches("_total")
                ),
            ),
            Some(Kind::Histogram) => {
                for suffix in ["_bucket", "_count", "_sum"] {
                    if name.ends_with(suffix) {
                        self.problem(
                            name_at,
                            format!("a histogram's name must not end in `{suffix}`: the exposition adds it"),
                        );
                    }
                }
            }
            _ => {}
        }
    }

    /// Checks each label name (valid, not reserved) and that none is repeated.
    fn labels(&mut self, labels: &[Spanned<String>], kind: Option<Kind>) {
        let mut seen: Vec<&str> = Vec::new();
        for label in labels {
            let l = label.get_ref().as_str();
            let at = label.span().start;
            if !is_valid_label_name(l) {
                self.problem(
                    at,
                    format!("invalid label name `{l}`: expected letters, digits and `_`, not starting with a digit"),
                );
            } else if l.starts_with("__") {
                self.problem(
                    at,
                    format!("label name `{l}` is reserved: names starting with `__` are internal to Prometheus"),
                );
            } else if kind == Some(Kind::Histogram) && l == "le" {
                self.problem(at, "label name `le` is reserved in a histogram: it holds the bucket bounds".into());
            } else if l == "quantile" {
                self.problem(at, "label name `quantile` is reserved for summaries".into());
            }
            if seen.contains(&l) {
                self.problem(at, format!("duplicate label `{l}`"));
            }
            seen.push(l);
        }
    }

    /// Checks the unit's spelling and that the name ends in it.
    fn unit(&mut self, unit: &Spanned<String>) {
        let u = unit.get_ref();
        if !is_identifier(u) || u.chars().any(|c| c.is_ascii_uppercase()) {
            self.problem(
                unit.span().start,
                format!("invalid unit `{u}`: expected lowercase letters, digits and `_` (e.g. `seconds`)"),
            );
        } else {
            let base = self.name.strip_suffix("_total").unwrap_or(self.name);
            if !base.ends_with(&format!("_{u}")) {
                self.problem(
                    self.name_at,
                    format!("the name must carry its unit as a suffix: `_{u}` (or `_{u}_total` for a counter)"),
                );
            }
        }
    }

    /// Checks `buckets` and returns the bounds: those given, the defaults for a histogram that
    /// gives none, else none.
    fn buckets(&mut self, buckets: Option<&Spanned<Vec<Spanned<f64>>>>, kind: Option<Kind>) -> Vec<f64> {
        let mut bucket_values = Vec::new();
        match (buckets, kind) {
            (Some(b), Some(k)) if k != Kind::Histogram => {
                self.problem(b.span().start, format!("`buckets` only applies to histograms, and this is a {k}"));
            }
            (Some(b), _) => {
                if b.get_ref().is_empty() {
                    self.problem(b.span().start, "`buckets` must not be empty (leave it out for the defaults)".into());
                }
                let mut previous: Option<f64> = None;
                for bound in b.get_ref() {
                    let v = *bound.get_ref();
                    if !v.is_finite() {
                        self.problem(bound.span().start, "bucket bounds must be finite: `+Inf` is always added".into());
                    } else if let Some(p) = previous.filter(|&p| v <= p) {
                        self.problem(
                            bound.span().start,
                            format!("buckets must be strictly increasing: {v} follows {p}"),
                        );
                    }
                    previous = Some(v);
                    bucket_values.push(v);
                }
            }
            (None, Some(Kind::Histogram)) => bucket_values = DEFAULT_BUCKETS.to_vec(),
            (None, _) => {}
        }
        bucket_values
    }

    /// Checks `series_cap` is within 1..=[`MAX_SERIES_CAP`]; `None` if absent or out of range.
    fn series_cap(&mut self, series_cap: Option<&Spanned<i64>>) -> Option<usize> {
        match series_cap {
            Some(cap) if *cap.get_ref() < 1 => {
                self.problem(cap.span().start, "`series_cap` must be at least 1".into());
                None
            }
            Some(cap) if *cap.get_ref() > MAX_SERIES_CAP as i64 => {
                self.problem(
                    cap.span().start,
                    format!(
                        "`series_cap` must be at most {MAX_SERIES_CAP} (each family's lookup table is allocated up front)"
                    ),
                );
                None
            }
            Some(cap) => Some(*cap.get_ref() as usize),
            None => None,
        }
    }

    /// Reads `value` (counters only); counters default to integers, the rest are float.
    fn value(&mut self, value: Option<&Spanned<String>>, kind: Option<Kind>) -> ValueKind {
        match (value, kind) {
            (None, _) => {
                if kind == Some(Kind::Counter) {
                    ValueKind::Integer
                } else {
                    ValueKind::Float
                }
            }
            (Some(v), Some(Kind::Counter)) => match v.get_ref().as_str() {
                "integer" => ValueKind::Integer,
                "float" => ValueKind::Float,
                other => {
                    self.problem(v.span().start, format!("unknown value `{other}`: expected `integer` or `float`"));
                    ValueKind::Integer
                }
            },
            (Some(v), _) => {
                self.problem(
                    v.span().start,
                    "`value` only applies to counters (gauges and histograms are float)".into(),
                );
                ValueKind::Float
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(src: &str) -> Vec<String> {
        match Catalog::parse(src, Path::new("m.toml")) {
            Ok(_) => vec![],
            Err(e) => e.to_string().lines().map(str::to_owned).collect(),
        }
    }

    #[test]
    fn valid_catalog_keeps_file_order_and_defaults() {
        let c = Catalog::parse(
            r#"
[metrics.zz_total]
type = "counter"
help = "z"
[metrics.aa_seconds]
type = "histogram"
help = "a"
unit = "seconds"
[metrics.mm_amount_total]
type = "counter"
help = "m"
value = "float"
series_cap = 10
"#,
            Path::new("m.toml"),
        )
        .unwrap();
        let names: Vec<_> = c.metrics().iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["zz_total", "aa_seconds", "mm_amount_total"]);
        assert_eq!(c.get("aa_seconds").unwrap().buckets, DEFAULT_BUCKETS);
        assert_eq!(c.get("zz_total").unwrap().value, ValueKind::Integer);
        assert_eq!(c.get("mm_amount_total").unwrap().value, ValueKind::Float);
        assert_eq!(c.get("mm_amount_total").unwrap().series_cap, Some(10));
        assert_eq!(c.get("zz_total").unwrap().position, Position { line: 2, column: 1 });
    }

    #[test]
    fn every_problem_is_reported_with_metric_and_position() {
        let p = problems(
            r#"[metrics.orders]
type = "counter"
help = "x"
labels = ["a", "a", "__x", "9z"]

[metrics.lat_seconds]
type = "histogram"
help = "x"
labels = ["le"]
buckets = [0.1, 0.5, 0.5, 0.2]
"#,
        );
        assert_eq!(
            p,
            [
                "m.toml:1:10: metric `orders`: a counter's name must end in `_total` (e.g. `orders_total`)",
                "m.toml:4:16: metric `orders`: duplicate label `a`",
                "m.toml:4:21: metric `orders`: label name `__x` is reserved: names starting with `__` are internal to Prometheus",
                "m.toml:4:28: metric `orders`: invalid label name `9z`: expected letters, digits and `_`, not starting with a digit",
                "m.toml:9:11: metric `lat_seconds`: label name `le` is reserved in a histogram: it holds the bucket bounds",
                "m.toml:10:22: metric `lat_seconds`: buckets must be strictly increasing: 0.5 follows 0.5",
                "m.toml:10:27: metric `lat_seconds`: buckets must be strictly increasing: 0.2 follows 0.5",
            ]
        );
    }

    #[test]
    fn kind_specific_rules() {
        let p = problems(
            r#"[metrics.a_total]
type = "histgram"
help = ""
[metrics.b]
type = "gauge"
help = "b"
buckets = [1]
value = "float"
[metrics.c_bucket]
type = "histogram"
help = "c"
series_cap = 0
[metrics.d_ms_total]
type = "counter"
help = "d"
unit = "seconds"
[metrics."bad-name"]
type = "gauge"
help = "x"
[metrics.members_total]
type = "gauge"
help = "x"
[metrics.huge_total]
type = "counter"
help = "x"
labels = ["a"]
series_cap = 2000000
"#,
        );
        assert_eq!(
            p,
            [
                "m.toml:2:8: metric `a_total`: unknown type `histgram`: expected `counter`, `gauge` or `histogram` (did you mean `histogram`?)",
                "m.toml:3:8: metric `a_total`: `help` must not be empty",
                "m.toml:7:11: metric `b`: `buckets` only applies to histograms, and this is a gauge",
                "m.toml:8:9: metric `b`: `value` only applies to counters (gauges and histograms are float)",
                "m.toml:9:10: metric `c_bucket`: a histogram's name must not end in `_bucket`: the exposition adds it",
                "m.toml:12:14: metric `c_bucket`: `series_cap` must be at least 1",
                "m.toml:13:10: metric `d_ms_total`: the name must carry its unit as a suffix: `_seconds` (or `_seconds_total` for a counter)",
                "m.toml:17:10: metric `bad-name`: invalid metric name: expected letters, digits and `_`, not starting with a digit (colons are reserved for recording rules)",
                "m.toml:20:10: metric `members_total`: only counters may end in `_total` (promtool rejects a gauge so named): e.g. `members`",
                "m.toml:27:14: metric `huge_total`: `series_cap` must be at most 1000000 (each family's lookup table is allocated up front)",
            ]
        );
    }

    #[test]
    fn syntax_and_schema_errors_have_positions() {
        assert_eq!(problems("[metrics.a_total\n"), ["m.toml:1:17: unclosed table, expected `]`"]);
        let p = problems("[metrics.a_total]\ntype = \"counter\"\nhelp = \"x\"\nlabelz = []\n");
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("m.toml:4:1: unknown field `labelz`"), "{p:?}");
        let p = problems("[metrics.a_total]\ntype = \"counter\"\n");
        assert!(p[0].contains("missing field `help`"), "{p:?}");
    }

    #[test]
    fn suggestions() {
        let names = ["revel_tickets_sold_total", "revel_tickets_cancelled_total"];
        assert_eq!(suggest("revel_ticket_sold_total", names), Some("revel_tickets_sold_total"));
        assert_eq!(suggest("something_else", names), None);
    }

    #[test]
    fn links_are_checked_and_explore_urls_carry_the_query() {
        let bad = Catalog::parse(
            "[links]\ngrafana = \"grafana.local\"\nprometheus_datasource = \" \"\n",
            Path::new("m.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(bad.contains("m.toml:2:11: links.grafana: expected an http:// or https:// URL"), "{bad}");
        assert!(bad.contains("links.prometheus_datasource: expected a datasource uid"), "{bad}");
        let unknown = Catalog::parse("[links]\ngrafna = \"http://g\"\n", Path::new("m.toml")).unwrap_err().to_string();
        assert!(unknown.contains("grafna"), "{unknown}");

        let none = Catalog::parse("", Path::new("m.toml")).unwrap();
        assert_eq!(none.links().explore("up"), None, "no Grafana, no link");
        let c = Catalog::parse(
            "[links]\ngrafana = \"http://g:3000/\"\nprometheus_datasource = \"prom\"\n",
            Path::new("m.toml"),
        )
        .unwrap();
        let url = c.links().explore("sum(rate(a_total{x=\"y\"}[5m]))").unwrap();
        let (base, query) = url.split_once('?').unwrap();
        assert_eq!(base, "http://g:3000/explore");
        let panes = query.split('&').find_map(|kv| kv.strip_prefix("panes=")).unwrap();
        let decoded: Vec<u8> = {
            let b = panes.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' {
                    out.push(u8::from_str_radix(&panes[i + 1..i + 3], 16).unwrap());
                    i += 3;
                } else {
                    out.push(b[i]);
                    i += 1;
                }
            }
            out
        };
        let decoded = String::from_utf8(decoded).unwrap();
        assert_eq!(
            decoded,
            r#"{"a":{"datasource":"prom","queries":[{"refId":"A","expr":"sum(rate(a_total{x=\"y\"}[5m]))","datasource":{"type":"prometheus","uid":"prom"}}],"range":{"from":"now-1h","to":"now"}}}"#
        );
    }
}
