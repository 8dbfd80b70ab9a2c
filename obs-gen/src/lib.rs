//! Files generated from a metric catalog, committed under `deploy/` and checked for staleness by
//! a test. So far: the metrics reference (markdown). Dashboards and alert rules follow (issue 7).

use std::fmt::Write as _;

use obs_catalog::{Catalog, Kind, ValueKind};

/// The metrics reference: one section per metric, in catalog order, with its type, unit, labels
/// (and the value domains its help lists), buckets and series cap, and the PromQL a dashboard
/// would start from.
pub fn metrics_reference(catalog: &Catalog, title: &str, source: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {title}\n");
    let _ = writeln!(
        out,
        "Generated from `{source}` by `cargo run -p obs-gen`; do not edit (a test fails when this file is stale).\n"
    );
    let _ = writeln!(out, "| metric | type | labels | help |");
    let _ = writeln!(out, "|---|---|---|---|");
    for m in catalog.metrics() {
        let labels = if m.labels.is_empty() { "—".to_owned() } else { m.labels.join(", ") };
        let _ = writeln!(
            out,
            "| [`{}`](#{}) | {} | {} | {} |",
            m.name,
            m.name,
            kind(m.kind, m.value),
            labels,
            cell(&m.help)
        );
    }
    for m in catalog.metrics() {
        let _ = writeln!(out, "\n## `{}`\n", m.name);
        let _ = writeln!(out, "{}\n", m.help);
        let _ = writeln!(out, "- type: {}", kind(m.kind, m.value));
        if let Some(unit) = &m.unit {
            let _ = writeln!(out, "- unit: {unit}");
        }
        if !m.labels.is_empty() {
            let _ =
                writeln!(out, "- labels: {}", m.labels.iter().map(|l| format!("`{l}`")).collect::<Vec<_>>().join(", "));
        }
        if !m.buckets.is_empty() {
            let b: Vec<String> = m.buckets.iter().map(|b| b.to_string()).collect();
            let _ = writeln!(out, "- buckets: {}", b.join(", "));
        }
        if let Some(cap) = m.series_cap {
            let _ = writeln!(out, "- series cap: {cap} (past it, new label combinations go to `__overflow__`)");
        }
        let _ = writeln!(out, "- query: `{}`", query(m.kind, &m.name, &m.labels));
    }
    out
}

fn kind(k: Kind, v: ValueKind) -> &'static str {
    match (k, v) {
        (Kind::Counter, ValueKind::Float) => "counter (float)",
        (Kind::Counter, _) => "counter",
        (Kind::Gauge, _) => "gauge",
        (Kind::Histogram, _) => "histogram",
    }
}

/// The query a panel of this metric would start from: a rate for counters, a quantile for
/// histograms, the value for gauges.
fn query(k: Kind, name: &str, labels: &[String]) -> String {
    let by = |extra: &str| {
        let mut l: Vec<&str> = labels.iter().map(String::as_str).collect();
        if !extra.is_empty() {
            l.push(extra);
        }
        if l.is_empty() { String::new() } else { format!(" by ({})", l.join(", ")) }
    };
    match k {
        Kind::Counter => format!("sum{}(rate({name}[5m]))", by("")),
        Kind::Gauge => format!("sum{}({name})", by("")),
        Kind::Histogram => format!("histogram_quantile(0.95, sum{}(rate({name}_bucket[5m])))", by("le")),
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}
