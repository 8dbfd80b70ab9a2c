//! Prometheus rule files: the service's recording rules and alerts, a group per service-level
//! objective (its error ratios, then its burn-rate alerts: rules of a group are evaluated in
//! order, so the alerts read this evaluation's ratios), then the alerts on obs's own telemetry
//! pipeline that every service gets.

use std::fmt::Write as _;

use crate::spec::{Alert, Monitoring, Recording, Severity};

/// The alerts on the telemetry pipeline itself, for the service scraped as `job`.
pub fn pipeline_alerts(job: &str) -> Vec<Alert> {
    let alert = |name: &str, severity, expr: String, for_: Option<&str>, summary: &str, description: &str| Alert {
        name: name.to_owned(),
        severity,
        expr,
        for_: for_.map(str::to_owned),
        summary: summary.to_owned(),
        description: description.to_owned(),
        labels: Vec::new(),
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
        write_recording(&mut out, &m.recording);
    }
    if !m.alert.is_empty() {
        let _ = writeln!(out, "  - name: {}.alerts\n    rules:", m.job);
        write_alerts(&mut out, &m.alert, &m.runbook_base);
    }
    for o in &m.objective {
        let _ = writeln!(out, "  - name: {}.slo.{}\n    rules:", m.job, o.name);
        write_recording(&mut out, &o.recording_rules());
        write_alerts(&mut out, &o.alerts(), &m.runbook_base);
    }
    let _ = writeln!(out, "  - name: {}.telemetry\n    rules:", m.job);
    write_alerts(&mut out, &pipeline_alerts(&m.job), &m.runbook_base);
    out
}

/// The entries of a group's `rules` for recording rules.
fn write_recording(out: &mut String, rules: &[Recording]) {
    for r in rules {
        let _ = writeln!(out, "      - record: {}\n        expr: {}", r.record, quote(&r.expr));
    }
}

/// The entries of a group's `rules` for alerts, each linking to `<runbook_base>/<name>.md`.
fn write_alerts(out: &mut String, alerts: &[Alert], runbook_base: &str) {
    for a in alerts {
        let _ = writeln!(out, "      - alert: {}\n        expr: {}", a.name, quote(&a.expr));
        if let Some(f) = &a.for_ {
            let _ = writeln!(out, "        for: {f}");
        }
        let _ = writeln!(out, "        labels:\n          severity: {}", a.severity.as_str());
        for (l, v) in &a.labels {
            let _ = writeln!(out, "          {l}: {}", quote(v));
        }
        let _ = writeln!(out, "        annotations:");
        let _ = writeln!(out, "          summary: {}", quote(&a.summary));
        let _ = writeln!(out, "          description: {}", quote(&a.description));
        let _ = writeln!(out, "          runbook_url: {}", quote(&format!("{runbook_base}/{}.md", a.name)));
    }
}

/// A single-quoted YAML scalar: nothing is escaped but the quote itself, so PromQL and Go
/// templates read as written.
fn quote(s: &str) -> String {
    assert!(!s.contains(['\n', '\r']), "validated: one line: {s}");
    format!("'{}'", s.replace('\'', "''"))
}
