//! Files generated from a metric catalog and its monitoring file, committed under `deploy/` and
//! checked for staleness by a test: the metrics reference (markdown), the Prometheus rule file
//! (recording rules and alerts, and those of the service-level objectives), the Grafana
//! dashboards and the objectives' promtool unit tests.
//!
//! Every metric and label a query names is checked against the catalog ([`promql::Known`]), so
//! a renamed metric fails generation instead of leaving an empty panel or an alert that never
//! fires.

pub mod dashboards;
pub mod promql;
pub mod rules;
pub mod slo;
pub mod spec;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use obs_catalog::Catalog;

/// Revel's rule file, relative to the repository root.
pub const RULES_FILE: &str = "deploy/prometheus/rules/revel.rules.yml";
/// Revel's dashboards directory (one `<uid>.json` each), relative to the repository root.
pub const DASHBOARDS_DIR: &str = "deploy/grafana/dashboards";
/// Revel's metrics reference, relative to the repository root.
pub const REFERENCE_FILE: &str = "deploy/metrics.md";
/// The promtool unit tests of Revel's service-level objectives, relative to the repository root.
pub const SLO_TESTS_FILE: &str = "deploy/prometheus/tests/revel-slo.test.yml";

/// What to generate from, and where to.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The metric catalog (`metrics.toml`).
    pub catalog: PathBuf,
    /// The monitoring file (`monitoring.toml`).
    pub monitoring: PathBuf,
    /// The deploy directory: files go to `metrics.md`, `prometheus/rules/<job>.rules.yml`,
    /// `prometheus/tests/<job>-slo.test.yml` (with objectives) and `grafana/dashboards/<uid>.json`
    /// under it.
    pub out_dir: PathBuf,
    /// How the sources are named in the generated files' headers.
    pub catalog_label: String,
    /// How the monitoring file is named in the generated files' headers.
    pub monitoring_label: String,
}

impl Sources {
    /// The reference service's files in this repository, relative to its top directory.
    pub fn revel() -> Sources {
        Sources {
            catalog: "examples/revel/metrics.toml".into(),
            monitoring: "examples/revel/monitoring.toml".into(),
            out_dir: "deploy".into(),
            catalog_label: "examples/revel/metrics.toml".into(),
            monitoring_label: "examples/revel/monitoring.toml".into(),
        }
    }
}

/// Every file generated from `sources` (whose relative paths start at `root`), as `(path, content)`
/// with `path` under `sources.out_dir`.
pub fn generate(root: &Path, sources: &Sources) -> Result<Vec<(PathBuf, String)>, String> {
    let catalog = obs_catalog::Catalog::load(&root.join(&sources.catalog)).map_err(|e| e.to_string())?;
    let (monitoring, known) = spec::Monitoring::load(&root.join(&sources.monitoring), &catalog)?;
    // What obs-gen adds on its own must pass the same check.
    let mut problems = Vec::new();
    for a in rules::pipeline_alerts(&monitoring.job) {
        problems.extend(known.check(&a.expr).into_iter().map(|p| format!("alert {}: {p}", a.name)));
    }
    for p in dashboards::pipeline_dashboard(&monitoring.job).panels {
        problems.extend(known.check(p.expr.as_deref().unwrap_or_default()));
    }
    if let Some(d) = dashboards::slo_dashboard(&monitoring) {
        for p in d["panels"].as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_default();
                problems.extend(known.check(expr).into_iter().map(|e| format!("SLO dashboard: `{expr}`: {e}")));
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    let job = &monitoring.job;
    let title = format!("{}{} metrics reference", job[..1].to_uppercase(), &job[1..]);
    let out = &sources.out_dir;
    let source = format!("{} and {}", sources.monitoring_label, sources.catalog_label);
    let mut files = vec![
        (out.join("metrics.md"), metrics_reference(&catalog, &title, &sources.catalog_label)),
        (out.join(format!("prometheus/rules/{job}.rules.yml")), rules::rule_file(&monitoring, &source)),
    ];
    if !monitoring.objective.is_empty() {
        let rules = format!("../rules/{job}.rules.yml");
        files.push((
            out.join(format!("prometheus/tests/{job}-slo.test.yml")),
            slo::unit_tests(&monitoring, &rules, &source),
        ));
    }
    for (name, text) in dashboards::dashboards(&monitoring, &catalog) {
        files.push((out.join("grafana/dashboards").join(name), text));
    }
    Ok(files)
}

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
            m.recorded().describe(),
            labels,
            cell(&m.help)
        );
    }
    for m in catalog.metrics() {
        let _ = writeln!(out, "\n## `{}`\n", m.name);
        let _ = writeln!(out, "{}\n", m.help);
        let _ = writeln!(out, "- type: {}", m.recorded().describe());
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
        let _ = writeln!(out, "- query: `{}`", m.base_query());
    }
    out
}

/// The query a panel of this metric would start from: a rate for counters, a quantile for
/// histograms, the value for gauges.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}
