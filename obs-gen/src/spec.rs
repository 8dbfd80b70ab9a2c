//! The monitoring file (`monitoring.toml` beside the catalog): recording rules, alerts and
//! dashboards, validated against the catalog before anything is generated.

use std::collections::BTreeSet;
use std::path::Path;

use obs_catalog::{Catalog, Kind};
use serde::Deserialize;

use crate::promql::Known;
use crate::slo;

/// A validated monitoring file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    /// Alerts link to `<runbook_base>/<AlertName>.md`.
    pub runbook_base: String,
    /// The Prometheus job scraping the service.
    pub job: String,
    /// Reduced real scrapes of the exporters the dashboards and alerts also read (paths
    /// relative to the monitoring file): their metric and label names are known too.
    #[serde(default)]
    pub exporters: Vec<String>,
    /// Recording rules, in order.
    #[serde(default)]
    pub recording: Vec<Recording>,
    /// Alerts, in order.
    #[serde(default)]
    pub alert: Vec<Alert>,
    /// Dashboards, in order.
    #[serde(default)]
    pub dashboard: Vec<Dashboard>,
    /// Service-level objectives, in order: each generates its recording rules, burn-rate
    /// alerts, panels on the SLO dashboard and promtool tests ([`crate::slo`]).
    #[serde(default)]
    pub objective: Vec<Objective>,
}

/// A recording rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recording {
    /// The series it records (`level:metric:operations`).
    pub record: String,
    /// Its PromQL.
    pub expr: String,
}

/// How urgent an alert is; Alertmanager routes on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Pages someone.
    Critical,
    /// Goes to email or chat.
    Warning,
}

impl Severity {
    /// The `severity` label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
        }
    }
}

/// An alerting rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// `CamelCase` name; also the runbook's file name.
    pub name: String,
    /// Routing severity.
    pub severity: Severity,
    /// The condition.
    pub expr: String,
    /// How long the condition must hold (`5m`), if at all.
    #[serde(rename = "for")]
    pub for_: Option<String>,
    /// One line.
    pub summary: String,
    /// What is happening, with the value.
    pub description: String,
    /// Labels besides `severity` (the generated objective alerts' `objective`).
    #[serde(skip)]
    pub labels: Vec<(String, String)>,
}

/// A service-level objective: the share of good events a service promises over a window.
/// Either a success objective (a counter `metric`, its failed events selected by `errors`) or a
/// latency objective (a histogram `metric`, good events faster than `threshold`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    /// `snake_case`; names its recording rules (`slo:<name>:…`) and, in CamelCase, its alerts.
    pub name: String,
    /// What is promised, in one line of plain text (alerts and the dashboard quote it).
    pub description: String,
    /// The share of good events, strictly between 0 and 1 (`0.995` for 99.5 %).
    pub target: f64,
    /// The window the target holds over (`28d`), a Prometheus duration.
    pub window: String,
    /// A catalog counter (success) or histogram (latency).
    pub metric: String,
    /// Label matchers selecting the events that count (`endpoint="/checkout"`); all by default.
    #[serde(default)]
    pub selector: String,
    /// Success objective: label matchers selecting the failed events (`status_code=~"5.."`).
    pub errors: Option<String>,
    /// Latency objective: the bucket bound, in seconds, a good event is at most.
    pub threshold: Option<f64>,
}

/// A dashboard.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dashboard {
    /// Grafana uid (at most 40 characters).
    pub uid: String,
    /// Title.
    pub title: String,
    /// Tags (the job is added).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Labels offered as filters.
    #[serde(default)]
    pub variables: Vec<String>,
    /// Panels, laid out two per row.
    pub panels: Vec<Panel>,
}

/// How a panel shows its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PanelKind {
    /// Lines over time.
    Timeseries,
    /// One big number.
    Stat,
    /// Rows of an instant query.
    Table,
}

/// A panel: either a catalog `metric` (the query follows from its type) or an `expr`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Panel {
    /// A catalog metric.
    pub metric: Option<String>,
    /// A PromQL expression (needs a `title`).
    pub expr: Option<String>,
    /// Labels to split a metric's series by.
    #[serde(default)]
    pub by: Vec<String>,
    /// Title (a metric panel defaults to one built from the metric).
    pub title: Option<String>,
    /// Grafana unit (a metric panel defaults to one from the catalog).
    pub unit: Option<String>,
    /// Panel type (default: a time series; a label-less gauge is a stat).
    pub kind: Option<PanelKind>,
}

/// The series names the runtime and Prometheus add to every service.
pub fn base_known(catalog: &Catalog) -> Known {
    let mut known = Known::default();
    for m in catalog.metrics() {
        match m.kind {
            Kind::Histogram => known.add_histogram(&m.name, &m.labels),
            _ => known.add(&m.name, m.labels.iter().cloned()),
        }
    }
    for def in obs_runtime::metrics::runtime_families() {
        known.add(def.name, def.labels.iter().copied());
    }
    for (name, labels) in obs_runtime::metrics::RUNTIME_SERIES {
        known.add(name, labels.iter().copied());
    }
    // Written by Prometheus for every target and rule.
    for name in ["up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"] {
        known.add(name, std::iter::empty::<String>());
    }
    known.add("ALERTS", ["alertname", "alertstate", "severity"]);
    known
}

/// Adds the series of an exposition (a scrape, or a fixture reduced from one) with the labels
/// their samples carry.
pub fn add_scrape(known: &mut Known, scrape: &str) {
    for line in scrape.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        let mut labels = Vec::new();
        if line[name_end..].starts_with('{') {
            // `a="x",b="y"`: names are what precedes each `="` outside a quoted value.
            let body = &line[name_end + 1..];
            let (mut in_value, mut escaped, mut start) = (false, false, 0);
            for (i, c) in body.char_indices() {
                match (in_value, escaped, c) {
                    (true, true, _) => escaped = false,
                    (true, false, '\\') => escaped = true,
                    (true, false, '"') => {
                        in_value = false;
                        start = i + 1;
                    }
                    (false, _, '=') => {
                        labels.push(body[start..i].trim_start_matches(',').trim().to_owned());
                    }
                    (false, _, '"') => in_value = true,
                    (false, _, '}') => break,
                    _ => {}
                }
            }
        }
        known.add(name, labels);
    }
}

impl Monitoring {
    /// Reads `path` and checks it against `catalog`; every problem is reported.
    pub fn load(path: &Path, catalog: &Catalog) -> Result<(Monitoring, Known), String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let m: Monitoring = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut known = base_known(catalog);
        let mut problems = Vec::new();
        let dir = path.parent().unwrap_or(Path::new("."));
        for e in &m.exporters {
            match std::fs::read_to_string(dir.join(e)) {
                Ok(scrape) => add_scrape(&mut known, &scrape),
                Err(err) => problems.push(format!("exporter scrape `{e}`: {err}")),
            }
        }
        m.check_job(&mut problems);
        // Recording rules and alerts share one namespace.
        let mut names = BTreeSet::new();
        for r in &m.recording {
            r.check(&mut known, &mut names, &mut problems);
        }
        for a in &m.alert {
            a.check(&known, &mut names, &mut problems);
        }
        let mut objectives = BTreeSet::new();
        for o in &m.objective {
            o.check(catalog, &mut known, &mut names, &mut objectives, &mut problems);
        }
        let mut uids = BTreeSet::new();
        for d in &m.dashboard {
            d.check(&m.job, catalog, &known, &mut uids, &mut problems);
        }
        if problems.is_empty() {
            Ok((m, known))
        } else {
            Err(format!("{}:\n  {}", path.display(), problems.join("\n  ")))
        }
    }

    /// Checks the job name is one Prometheus accepts.
    fn check_job(&self, problems: &mut Vec<String>) {
        if self.job.is_empty()
            || self.job.len() > 30
            || !self.job.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            problems.push(format!("job `{}`: the Prometheus job name, 1 to 30 letters, digits, `_` and `-`", self.job));
        }
    }
}

impl Recording {
    /// Checks the rule's name and query, then adds the series it records to `known`.
    fn check(&self, known: &mut Known, names: &mut BTreeSet<String>, problems: &mut Vec<String>) {
        let first_ok = self.record.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
        if !first_ok
            || !self.record.contains(':')
            || !self.record.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            problems.push(format!("recording rule `{}`: name it level:metric:operations", self.record));
        }
        for p in known.check(&self.expr) {
            problems.push(format!("recording rule `{}`: {p}", self.record));
        }
        if self.expr.contains(['\n', '\r']) {
            problems.push(format!("recording rule `{}`: write `expr` on one line", self.record));
        }
        // What the rule's result may be filtered or grouped by: the labels it keeps.
        let labels = known.recorded_labels(&self.expr);
        known.add_recorded(&self.record, labels);
        if !names.insert(self.record.clone()) {
            problems.push(format!("recording rule `{}` is defined twice", self.record));
        }
    }
}

impl Alert {
    /// Checks the alert's name, `for`, query and one-line texts.
    fn check(&self, known: &Known, names: &mut BTreeSet<String>, problems: &mut Vec<String>) {
        let camel = self.name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && self.name.chars().all(|c| c.is_ascii_alphanumeric());
        if !camel {
            problems.push(format!("alert `{}`: name it in CamelCase (it is also the runbook's file name)", self.name));
        }
        if !names.insert(self.name.clone()) {
            problems.push(format!("alert `{}` is defined twice", self.name));
        }
        if let Some(d) = &self.for_
            && !is_duration(d)
        {
            problems.push(format!("alert `{}`: `for = \"{d}\"` is not a duration such as `5m`", self.name));
        }
        for p in known.check(&self.expr) {
            problems.push(format!("alert `{}`: {p}", self.name));
        }
        for (field, text) in [("summary", &self.summary), ("description", &self.description), ("expr", &self.expr)] {
            if text.contains(['\n', '\r']) {
                problems.push(format!("alert `{}`: write `{field}` on one line", self.name));
            }
        }
    }
}

impl Objective {
    /// Checks the objective (name, target, window, texts, and its metric, kind, labels and
    /// threshold against the catalog), then the recording rules and alerts it generates, as
    /// declared ones are checked: they join `known` and `names`. `seen` holds the objective
    /// names so far.
    fn check(
        &self,
        catalog: &Catalog,
        known: &mut Known,
        names: &mut BTreeSet<String>,
        seen: &mut BTreeSet<String>,
        problems: &mut Vec<String>,
    ) {
        let at = format!("objective `{}`", self.name);
        let before = problems.len();
        let snake = self.name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && self.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !snake {
            problems.push(format!("{at}: name it in snake_case (it names the objective's recording rules and alerts)"));
        }
        if !seen.insert(self.name.clone()) {
            problems.push(format!("{at} is defined twice"));
        }
        self.check_target(&at, problems);
        self.check_window(&at, problems);
        let texts = [
            ("description", Some(&self.description)),
            ("selector", Some(&self.selector)),
            ("errors", self.errors.as_ref()),
        ];
        for (field, text) in texts {
            if text.is_some_and(|t| t.contains(['\n', '\r'])) {
                problems.push(format!("{at}: write `{field}` on one line"));
            }
        }
        if self.description.contains("{{") {
            problems.push(format!("{at}: `description` is plain text, not a template (no `{{{{`)"));
        }
        self.check_metric(&at, catalog, known, problems);
        if problems.len() > before {
            return;
        }
        if let Err(e) = self.test_labels() {
            problems.push(format!("{at}: {e}"));
        }
        // What it generates passes the checks of declared rules, in a namespace shared with them.
        let mut generated = Vec::new();
        for r in self.recording_rules() {
            r.check(known, names, &mut generated);
        }
        for a in self.alerts() {
            a.check(known, names, &mut generated);
        }
        problems.extend(generated.into_iter().map(|p| format!("{at}: {p}")));
    }

    /// The target is a share strictly between 0 and 1 that leaves the page something to catch.
    fn check_target(&self, at: &str, problems: &mut Vec<String>) {
        let t = self.target;
        if !(t > 0.0 && t < 1.0) {
            problems.push(format!(
                "{at}: `target = {t}` is a share of good events, strictly between 0 and 1 (0.995 for 99.5 %)"
            ));
        } else if 6.0 * (1.0 - t) >= 1.0 {
            problems.push(format!(
                "{at}: `target = {t}`: the page fires on 6 times the error budget, more than every event when the budget is above 1/6; the target must be above 5/6 (0.834 or more)"
            ));
        }
    }

    /// The window is a duration longer than the alerts' longest look-back (3 days).
    fn check_window(&self, at: &str, problems: &mut Vec<String>) {
        let w = &self.window;
        match duration_seconds(w) {
            None => problems.push(format!("{at}: `window = \"{w}\"` is not a duration such as `28d`")),
            Some(s) if s <= 3.0 * 86400.0 => problems.push(format!(
                "{at}: `window = \"{w}\"` must be longer than 3 days, the ticket's longest window (`28d` is usual)"
            )),
            Some(_) => {}
        }
    }

    /// The metric is in the catalog, of the kind the objective needs (a counter for `errors`,
    /// a histogram for `threshold`), with the labels the matchers name and, for a latency
    /// objective, the threshold among its bucket bounds.
    fn check_metric(&self, at: &str, catalog: &Catalog, known: &Known, problems: &mut Vec<String>) {
        let name = &self.metric;
        let Some(metric) = catalog.get(name) else {
            let hint = catalog.suggest(name).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
            problems.push(format!("{at}: `{name}` is not in the catalog{hint}"));
            return;
        };
        let kind = metric.kind.as_str();
        let series = match (&self.errors, self.threshold) {
            (Some(_), Some(_)) | (None, None) => {
                problems.push(format!(
                    "{at}: give either `errors` (a success objective, on a counter) or `threshold` (a latency objective, on a histogram)"
                ));
                return;
            }
            (Some(errors), None) => {
                if metric.kind != Kind::Counter {
                    problems.push(format!(
                        "{at}: `errors` makes a success objective, on a counter, and `{name}` is a {kind} (a latency objective on a histogram gives `threshold`)"
                    ));
                    return;
                }
                if errors.trim().is_empty() {
                    problems.push(format!(
                        "{at}: `errors` selects the failed events: give its label matchers (`status_code=~\"5..\"`)"
                    ));
                }
                check_matchers(at, "errors", name, errors, known, problems);
                name.clone()
            }
            (None, Some(threshold)) => {
                if metric.kind != Kind::Histogram {
                    problems.push(format!(
                        "{at}: `threshold` makes a latency objective, on a histogram, and `{name}` is a {kind} (a success objective on a counter gives `errors`)"
                    ));
                    return;
                }
                if !metric.buckets.contains(&threshold) {
                    let bounds: Vec<String> = metric.buckets.iter().map(|b| b.to_string()).collect();
                    problems.push(format!(
                        "{at}: `threshold = {threshold}` is not a bucket bound of `{name}` ({}): good events are counted by the bucket `le=\"<threshold>\"`",
                        bounds.join(", ")
                    ));
                }
                // Not the buckets': `le` is the threshold's.
                format!("{name}_count")
            }
        };
        check_matchers(at, "selector", &series, &self.selector, known, problems);
    }
}

/// Checks `text` is label matchers only, of labels `series` has.
fn check_matchers(at: &str, field: &str, series: &str, text: &str, known: &Known, problems: &mut Vec<String>) {
    if let Err(e) = slo::matchers(text) {
        problems.push(format!("{at}: `{field}`: {e}"));
        return;
    }
    if !text.trim().is_empty() {
        for p in known.check(&format!("{series}{{{text}}}")) {
            problems.push(format!("{at}: `{field}`: {p}"));
        }
    }
}

impl Dashboard {
    /// Checks the dashboard's uid (against `uids`, the ones seen so far), variables and panels.
    fn check(
        &self,
        job: &str,
        catalog: &Catalog,
        known: &Known,
        uids: &mut BTreeSet<String>,
        problems: &mut Vec<String>,
    ) {
        let at = format!("dashboard `{}`", self.uid);
        let uid_ok = !self.uid.is_empty()
            && self.uid.len() <= 40
            && self.uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if self.uid == format!("{job}-telemetry") {
            problems.push(format!("{at}: this uid is the generated telemetry-pipeline dashboard's"));
        }
        if self.uid == format!("{job}-slo") {
            problems.push(format!("{at}: this uid is the generated service-level objectives dashboard's"));
        }
        if !uid_ok || !uids.insert(self.uid.clone()) {
            problems.push(format!("{at}: uids are unique, 1 to 40 letters, digits, `-` or `_`"));
        }
        for v in &self.variables {
            if !catalog.metrics().iter().any(|m| m.labels.contains(v)) {
                problems.push(format!("{at}: variable `{v}` is not a label of any catalog metric"));
            }
        }
        for (i, p) in self.panels.iter().enumerate() {
            p.check(&format!("{at}, panel {}", i + 1), catalog, known, problems);
        }
    }
}

impl Panel {
    /// Checks the panel has a `metric` (in the catalog, with its `by` labels) or an `expr`
    /// (with a `title`, a known query and no `by`); `at` names it in the problems.
    fn check(&self, at: &str, catalog: &Catalog, known: &Known, problems: &mut Vec<String>) {
        match (&self.metric, &self.expr) {
            (Some(name), None) => match catalog.get(name) {
                Some(metric) => {
                    for l in &self.by {
                        if !metric.labels.contains(l) {
                            problems.push(format!("{at}: `{name}` has no label `{l}`"));
                        }
                    }
                }
                None => {
                    let hint = catalog.suggest(name).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
                    problems.push(format!("{at}: `{name}` is not in the catalog{hint}"));
                }
            },
            (None, Some(expr)) => {
                if self.title.is_none() {
                    problems.push(format!("{at}: a panel with an `expr` needs a `title`"));
                }
                if !self.by.is_empty() {
                    problems.push(format!("{at}: `by` applies to `metric` panels; group inside the `expr`"));
                }
                for e in known.check(expr) {
                    problems.push(format!("{at}: {e}"));
                }
            }
            _ => problems.push(format!("{at}: give either `metric` or `expr`")),
        }
    }
}

/// A Prometheus duration: `<number><unit>` parts with units in decreasing order, each at most
/// once (`1h30m`, `90s`, `500ms`).
fn is_duration(s: &str) -> bool {
    duration_seconds(s).is_some()
}

/// A Prometheus duration in seconds, if `s` is one (see [`is_duration`]).
pub fn duration_seconds(s: &str) -> Option<f64> {
    const UNITS: [(&str, f64); 7] = [
        ("y", 365.0 * 86400.0),
        ("w", 7.0 * 86400.0),
        ("d", 86400.0),
        ("h", 3600.0),
        ("m", 60.0),
        ("s", 1.0),
        ("ms", 0.001),
    ];
    let mut rest = s;
    let (mut next, mut total) = (0, 0.0);
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        // `ms` before `m`: the longest unit that matches.
        let i = [6, 0, 1, 2, 3, 4, 5].into_iter().find(|&i| rest.starts_with(UNITS[i].0))?;
        if i < next {
            return None;
        }
        next = i + 1;
        total += n * UNITS[i].1;
        rest = &rest[UNITS[i].0.len()..];
    }
    (!s.is_empty()).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::{Known, add_scrape};
    #[test]
    fn a_scrape_adds_its_series_with_their_label_names() {
        let mut known = Known::default();
        add_scrape(
            &mut known,
            "# HELP node_load1 x\nnode_load1 0.5\npg_stat_activity_count{datname=\"a,b=\\\"c\",state=\"idle\"} 1\n",
        );
        assert!(known.labels("node_load1").is_some());
        let labels: Vec<&str> = known.labels("pg_stat_activity_count").unwrap().iter().map(String::as_str).collect();
        assert_eq!(labels, ["datname", "instance", "job", "state"]);
    }

    #[test]
    fn durations_follow_prometheus() {
        for ok in ["5m", "1h30m", "90s", "500ms", "1d12h", "2w"] {
            assert!(super::is_duration(ok), "{ok}");
        }
        for bad in ["", "5", "5 minutes", "5s1m", "1h1h", "m", "1.5h"] {
            assert!(!super::is_duration(bad), "{bad}");
        }
        assert_eq!(super::duration_seconds("28d"), Some(28.0 * 86400.0));
        assert_eq!(super::duration_seconds("1h30m"), Some(5400.0));
    }
}
