//! Just enough of PromQL to know what an expression refers to: the metric names, the labels in
//! its selectors and in `by`/`without`/`on`/`ignoring`, and the functions it calls. Used to check
//! every generated query against the catalog; it is not a parser (Prometheus and promtool check
//! the syntax).

use std::collections::{BTreeMap, BTreeSet};

/// What an expression refers to.
#[derive(Debug, Default, PartialEq)]
pub struct Refs {
    /// Metric names, in order of appearance.
    pub metrics: Vec<String>,
    /// Labels matched in a selector, with the metric the selector names (if it names one).
    pub matchers: Vec<(Option<String>, String)>,
    /// Labels in `by`, `without`, `on`, `ignoring`, `group_left` and `group_right` lists.
    pub grouping: Vec<String>,
    /// The labels of `by` lists only.
    pub by: Vec<String>,
    /// The labels of `without` lists only.
    pub without: Vec<String>,
    /// Whether it matches vectors with `on`, `ignoring`, `group_left` or `group_right`.
    pub matching: bool,
    /// Functions and aggregations called.
    pub functions: Vec<String>,
}

const AGGREGATIONS: &[&str] =
    &["sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile"];

const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_avg",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_sum",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "ln",
    "log2",
    "log10",
    "minute",
    "month",
    "predict_linear",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sort",
    "sort_desc",
    "sqrt",
    "time",
    "timestamp",
    "vector",
    "year",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "quantile_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "last_over_time",
    "present_over_time",
];

const GROUPING: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "inf", "nan"];

/// Lists what `expr` refers to; an error names the first character it cannot read.
pub fn refs(expr: &str) -> Result<Refs, String> {
    let mut s = Scan { expr, b: expr.as_bytes(), i: 0 };
    let mut r = Refs::default();
    while let Some(&c) = s.b.get(s.i) {
        match c {
            c if c.is_ascii_whitespace() => s.i += 1,
            b'"' | b'\'' | b'`' => s.i = skip_string(s.b, s.i)?,
            b'[' => match expr[s.i..].find(']') {
                Some(end) => s.i += end + 1,
                None => return Err(format!("unclosed `[` at {}", s.i)),
            },
            b'{' => s.selector(None, &mut r)?,
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => s.word(&mut r)?,
            c if c.is_ascii_digit() || c == b'.' => s.skip_while(|c| c.is_ascii_alphanumeric() || c == b'.'),
            b'$' => {
                s.i += 1;
                s.ident();
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'=' | b'!' | b'<' | b'>' | b'(' | b')' | b',' => s.i += 1,
            _ => {
                let i = s.i;
                return Err(format!("unexpected `{}` at {i} in `{expr}`", &expr[i..].chars().next().unwrap_or(' ')));
            }
        }
    }
    Ok(r)
}

/// An expression being read by [`refs`], and the index of the next byte to read.
struct Scan<'a> {
    expr: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    /// Moves past the bytes `keep` accepts.
    fn skip_while(&mut self, keep: impl Fn(u8) -> bool) {
        while self.i < self.b.len() && keep(self.b[self.i]) {
            self.i += 1;
        }
    }

    /// Moves past whitespace.
    fn skip_ws(&mut self) {
        self.skip_while(|c| c.is_ascii_whitespace());
    }

    /// Reads a name (letters, digits, `_` and `:`); empty if there is none.
    fn ident(&mut self) -> &'a str {
        let start = self.i;
        self.skip_while(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':');
        &self.expr[start..self.i]
    }

    /// Reads a word: a grouping keyword with its label list, `offset` with its duration, an
    /// operator keyword, a function or aggregation, or a metric name with its selector if any.
    fn word(&mut self, r: &mut Refs) -> Result<(), String> {
        let word = self.ident().to_owned();
        let mut j = self.i;
        while j < self.b.len() && self.b[j].is_ascii_whitespace() {
            j += 1;
        }
        let next = self.b.get(j).copied();
        if GROUPING.contains(&word.as_str()) {
            if !matches!(word.as_str(), "by" | "without") {
                r.matching = true;
            }
            if next == Some(b'(') {
                self.i = j + 1;
                self.grouping(&word, r)?;
            }
        } else if word == "offset" {
            self.i = j;
            self.skip_while(|c| c.is_ascii_alphanumeric() || c == b'-');
        } else if KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
        } else if AGGREGATIONS.contains(&word.as_str()) || next == Some(b'(') {
            r.functions.push(word);
        } else if next == Some(b'{') {
            // The selector that follows names this metric.
            self.i = j;
            r.metrics.push(word.clone());
            self.selector(Some(word), r)?;
        } else {
            r.metrics.push(word);
        }
        Ok(())
    }

    /// Reads a selector from its `{` to its `}`: each matcher's label, with the `metric` it
    /// selects (if the selector follows a metric name).
    fn selector(&mut self, metric: Option<String>, r: &mut Refs) -> Result<(), String> {
        let (b, expr) = (self.b, self.expr);
        self.i += 1;
        loop {
            self.skip_ws();
            if self.i >= b.len() {
                return Err("unclosed `{`".into());
            }
            if b[self.i] == b'}' {
                self.i += 1;
                return Ok(());
            }
            let label = self.ident();
            if label.is_empty() {
                return Err(format!("expected a label name at {} in `{expr}`", self.i));
            }
            r.matchers.push((metric.clone(), label.to_owned()));
            self.skip_ws();
            self.skip_while(|c| matches!(c, b'=' | b'!' | b'~'));
            self.skip_ws();
            if self.i >= b.len() || !matches!(b[self.i], b'"' | b'\'' | b'`') {
                return Err(format!("expected a quoted value for label `{label}` in `{expr}`"));
            }
            self.i = skip_string(b, self.i)?;
            self.skip_ws();
            if self.i < b.len() && b[self.i] == b',' {
                self.i += 1;
            }
        }
    }

    /// Reads the labels of `word (…)` (`by`, `on`, …), from after its `(` to its `)`.
    fn grouping(&mut self, word: &str, r: &mut Refs) -> Result<(), String> {
        let expr = self.expr;
        loop {
            self.skip_ws();
            match self.b.get(self.i) {
                None => return Err(format!("unclosed `{word} (` in `{expr}`")),
                Some(b')') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b',') => self.i += 1,
                Some(_) => {
                    let label = self.ident();
                    if label.is_empty() {
                        return Err(format!("expected a label name in `{word} (..)` of `{expr}`"));
                    }
                    r.grouping.push(label.to_owned());
                    match word {
                        "by" => r.by.push(label.to_owned()),
                        "without" => r.without.push(label.to_owned()),
                        _ => {}
                    }
                }
            }
        }
    }
}

fn skip_string(b: &[u8], start: usize) -> Result<usize, String> {
    let quote = b[start];
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == b'\\' && quote != b'`' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            return Ok(i + 1);
        }
        i += 1;
    }
    Err(format!("unclosed string at {start}"))
}

/// The series names a query may use, each with its labels.
#[derive(Debug, Default, Clone)]
pub struct Known {
    series: BTreeMap<String, BTreeSet<String>>,
}

/// Labels every scraped series carries.
const TARGET_LABELS: &[&str] = &["job", "instance"];

impl Known {
    /// Adds a series name and its labels (`job` and `instance` are implied).
    pub fn add(&mut self, name: &str, labels: impl IntoIterator<Item = impl Into<String>>) {
        let entry = self.series.entry(name.to_owned()).or_default();
        entry.extend(labels.into_iter().map(Into::into));
        entry.extend(TARGET_LABELS.iter().map(|l| l.to_string()));
    }

    /// Adds a series written by a recording rule, with exactly the labels it keeps (no target
    /// labels are implied: an aggregation removes them).
    pub fn add_recorded(&mut self, name: &str, labels: impl IntoIterator<Item = impl Into<String>>) {
        let entry = self.series.entry(name.to_owned()).or_default();
        entry.extend(labels.into_iter().map(Into::into));
    }

    /// The labels a recording rule's result keeps: those of its `by`, or its metrics' labels
    /// less those of its `without`, or, without aggregation, its metrics' labels.
    pub fn recorded_labels(&self, expr: &str) -> Vec<String> {
        let Ok(r) = refs(expr) else { return Vec::new() };
        let source: BTreeSet<String> = r.metrics.iter().filter_map(|m| self.series.get(m)).flatten().cloned().collect();
        let keeps_input = |f: &String| matches!(f.as_str(), "topk" | "bottomk" | "limitk");
        let aggregates = r.functions.iter().any(|f| AGGREGATIONS.contains(&f.as_str()) && !keeps_input(f));
        if r.matching || r.functions.iter().any(keeps_input) || !aggregates {
            // Vector matching, label-keeping aggregations or none at all: what the inputs carry
            // (and what `group_left` adds), without trying to be exact.
            source.into_iter().chain(r.grouping).collect::<BTreeSet<_>>().into_iter().collect()
        } else if !r.by.is_empty() {
            r.by.into_iter().filter(|l| l != "le").collect()
        } else if !r.without.is_empty() {
            source.into_iter().filter(|l| l != "le" && !r.without.contains(l)).collect()
        } else {
            Vec::new()
        }
    }

    /// Adds a histogram family: its `_bucket` (with `le`), `_sum` and `_count` series.
    pub fn add_histogram(&mut self, name: &str, labels: &[String]) {
        self.add(&format!("{name}_bucket"), labels.iter().cloned().chain(["le".to_owned()]));
        self.add(&format!("{name}_sum"), labels.iter().cloned());
        self.add(&format!("{name}_count"), labels.iter().cloned());
    }

    /// The labels of `name`, if it is known.
    pub fn labels(&self, name: &str) -> Option<&BTreeSet<String>> {
        self.series.get(name)
    }

    /// Every problem with `expr`: a metric, label or function that does not exist.
    pub fn check(&self, expr: &str) -> Vec<String> {
        let refs = match refs(expr) {
            Ok(r) => r,
            Err(e) => return vec![e],
        };
        let mut problems = Vec::new();
        let mut all_labels: BTreeSet<&str> = TARGET_LABELS.iter().copied().collect();
        for m in &refs.metrics {
            match self.series.get(m) {
                Some(labels) => all_labels.extend(labels.iter().map(String::as_str)),
                None => {
                    let hint = obs_catalog::suggest(m, self.series.keys().map(String::as_str))
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    problems.push(format!("unknown metric `{m}`{hint}"));
                }
            }
        }
        for f in &refs.functions {
            if !AGGREGATIONS.contains(&f.as_str()) && !FUNCTIONS.contains(&f.as_str()) {
                problems.push(format!("unknown function `{f}`"));
            }
        }
        for (metric, label) in &refs.matchers {
            let ok = match metric.as_deref().and_then(|m| self.series.get(m)) {
                Some(labels) => labels.contains(label),
                None => metric.is_some() || all_labels.contains(label.as_str()),
            };
            if !ok {
                let on = metric.as_deref().map(|m| format!(" of `{m}`")).unwrap_or_default();
                problems.push(format!("unknown label `{label}`{on}"));
            }
        }
        for label in &refs.grouping {
            if !all_labels.contains(label.as_str()) {
                problems.push(format!("`{label}` is not a label of any metric in the expression"));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Known {
        let mut k = Known::default();
        k.add("revel_payments_total", ["organization_id", "status"]);
        k.add_histogram("revel_api_request_duration_seconds", &["endpoint".to_owned()]);
        k
    }

    #[test]
    fn reads_selectors_groupings_and_functions() {
        let r = refs(
            r#"histogram_quantile(0.95, sum by (endpoint, le) (rate(revel_api_request_duration_seconds_bucket{endpoint=~"/a|{b}"}[$__rate_interval])))"#,
        )
        .unwrap();
        assert_eq!(r.metrics, ["revel_api_request_duration_seconds_bucket"]);
        assert_eq!(r.grouping, ["endpoint", "le"]);
        assert_eq!(r.by, ["endpoint", "le"]);
        assert_eq!(r.functions, ["histogram_quantile", "sum", "rate"]);
        assert_eq!(r.matchers, [(Some("revel_api_request_duration_seconds_bucket".to_owned()), "endpoint".to_owned())]);
    }

    #[test]
    fn accepts_catalog_queries() {
        let k = known();
        for q in [
            r#"sum(rate(revel_payments_total{status="succeeded"}[5m])) / sum(rate(revel_payments_total[5m]))"#,
            r#"(sum(rate(revel_payments_total{status=~"fail.*"}[5m])) or vector(0)) > bool 0.5"#,
            r#"sum(revel_payments_total) by (organization_id) offset 1h"#,
            r#"topk(10, sum without (instance) (increase(revel_payments_total{organization_id=~"$organization_id"}[$__range])))"#,
            "revel_api_request_duration_seconds_count / on (endpoint, job) revel_api_request_duration_seconds_sum",
        ] {
            assert_eq!(k.check(q), Vec::<String>::new(), "{q}");
        }
    }

    #[test]
    fn rejects_unknown_metrics_labels_and_functions() {
        let k = known();
        assert_eq!(
            k.check("sum(rate(revel_payment_total[5m]))"),
            ["unknown metric `revel_payment_total` (did you mean `revel_payments_total`?)"]
        );
        assert_eq!(k.check(r#"revel_payments_total{state="x"}"#), ["unknown label `state` of `revel_payments_total`"]);
        assert_eq!(
            k.check("sum by (currency) (revel_payments_total)"),
            ["`currency` is not a label of any metric in the expression"]
        );
        assert_eq!(k.check("rat(revel_payments_total[5m])"), ["unknown function `rat`"]);
        // `le` exists only on the buckets.
        assert_eq!(
            k.check("sum by (le) (revel_api_request_duration_seconds_count)"),
            ["`le` is not a label of any metric in the expression"]
        );
        assert!(k.check(r#"revel_payments_total{status="x""#)[0].contains("unclosed"));
    }

    #[test]
    fn recorded_series_keep_only_what_the_rule_keeps() {
        let mut k = known();
        assert_eq!(k.recorded_labels("sum(rate(revel_payments_total[5m]))"), Vec::<String>::new());
        assert_eq!(k.recorded_labels("sum by (status, le) (revel_payments_total)"), ["status"]);
        assert_eq!(
            k.recorded_labels("sum without (instance, status) (revel_payments_total)"),
            ["job", "organization_id"]
        );
        assert_eq!(
            k.recorded_labels("rate(revel_payments_total[5m])"),
            ["instance", "job", "organization_id", "status"]
        );
        k.add_recorded("revel:payments:rate5m", k.recorded_labels("sum(rate(revel_payments_total[5m]))"));
        // An aggregation dropped `job`: filtering on it would match nothing.
        assert_eq!(
            k.check(r#"revel:payments:rate5m{job="revel"} > 1"#),
            ["unknown label `job` of `revel:payments:rate5m`"]
        );
    }
}
