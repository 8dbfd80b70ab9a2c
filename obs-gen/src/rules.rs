//! Prometheus rule files: the service's recording rules and alerts, then the alerts on obs's own
//! telemetry pipeline that every service gets.

use std::fmt::Write as _;

use crate::spec::{Alert, Monitoring, Severity};

/// The alerts on the telemetry pipeline itself, for the service scraped as `job`.
pub fn pipeline_alerts(job: &str) -> Vec<Alert> {
    let alert = |name: &str, severity, expr: String, for_: Option<&str>, summary: &str, description: &str| Alert {
        name: name.to_owned(),
        severity,
        expr,
        for_: for_.map(str::to_owned),
        summary: summary.to_owned(),
        description: description.to_owned(),
    };
    vec![
        alert(
            "ObsTargetDown",
            Severity::Critical,
            format!(r#"up{{job="{job}"}} == 0"#),
            Some("2m"),
            "Prometheus cannot scrape {{ $labels.instance }}",
            "The /metrics endpoint of {{ $labels.job }} at {{ $labels.instance }} has not answered for 2 minutes: the service is down or unreachable, and its metrics and alerts are blind.",
        ),
        alert(
            "ObsSpansDropped",
            Severity::Warning,
            format!(r#"sum by (instance, reason) (rate(obs_spans_dropped_total{{job="{job}"}}[10m])) > 0"#),
            Some("15m"),
            "{{ $labels.instance }} drops spans ({{ $labels.reason }})",
            "{{ $value | humanize }} spans/s are not exported (reason {{ $labels.reason }}): the trace backend is down or slower than the service produces spans. Traces are incomplete; the service itself is not slowed.",
        ),
        alert(
            "ObsLogLinesDropped",
            Severity::Warning,
            format!(r#"sum by (instance) (rate(obs_log_lines_dropped_total{{job="{job}"}}[10m])) > 0"#),
            Some("10m"),
            "{{ $labels.instance }} drops log lines",
            "{{ $value | humanize }} log lines/s are dropped because the output (stdout or stderr) is slower than the service writes: logs in Loki are incomplete.",
        ),
        alert(
            "ObsMetricSeriesCapReached",
            Severity::Warning,
            format!(r#"sum by (instance, metric) (increase(obs_metric_overflow_total{{job="{job}"}}[1h])) > 0"#),
            None,
            "{{ $labels.metric }} reached its series cap",
            "{{ $value | humanize }} recordings of {{ $labels.metric }} went to its __overflow__ series in the last hour: a label has more values than the catalog's series_cap allows.",
        ),
    ]
}

/// The rule file for `m`.
pub fn rule_file(m: &Monitoring, source: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Generated from {source} by `cargo run -p obs-gen`; do not edit.");
    let _ = writeln!(out, "# Checked by `promtool check rules` and unit-tested in deploy/prometheus/tests/.");
    let _ = writeln!(out, "groups:");
    if !m.recording.is_empty() {
        let _ = writeln!(out, "  - name: {}.recording\n    rules:", m.job);
        for r in &m.recording {
            let _ = writeln!(out, "      - record: {}\n        expr: {}", r.record, quote(&r.expr));
        }
    }
    let groups =
        [(format!("{}.alerts", m.job), m.alert.clone()), (format!("{}.telemetry", m.job), pipeline_alerts(&m.job))];
    for (name, alerts) in groups {
        if alerts.is_empty() {
            continue;
        }
        let _ = writeln!(out, "  - name: {name}\n    rules:");
        for a in &alerts {
            let _ = writeln!(out, "      - alert: {}\n        expr: {}", a.name, quote(&a.expr));
            if let Some(f) = &a.for_ {
                let _ = writeln!(out, "        for: {f}");
            }
            let _ = writeln!(out, "        labels:\n          severity: {}", a.severity.as_str());
            let _ = writeln!(out, "        annotations:");
            let _ = writeln!(out, "          summary: {}", quote(&a.summary));
            let _ = writeln!(out, "          description: {}", quote(&a.description));
            let _ = writeln!(out, "          runbook_url: {}", quote(&format!("{}/{}.md", m.runbook_base, a.name)));
        }
    }
    out
}

/// A single-quoted YAML scalar: nothing is escaped but the quote itself, so PromQL and Go
/// templates read as written.
fn quote(s: &str) -> String {
    assert!(!s.contains(['\n', '\r']), "validated: one line: {s}");
    format!("'{}'", s.replace('\'', "''"))
}
