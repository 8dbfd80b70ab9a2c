//! Grafana 11 dashboards (schema version 39), one JSON file each.
//!
//! A panel naming a catalog metric gets the query its type calls for: a per-second rate for a
//! counter, the value for a gauge, p50/p95/p99 for a histogram. Every query goes to the data
//! source chosen in the dashboard's `datasource` variable.

use obs_catalog::{Catalog, Kind, Metric};
use serde_json::{Value, json};

use crate::slo::{Burn, PAGE, TICKET, decimal, percent};
use crate::spec::{Dashboard, Monitoring, Objective, Panel, PanelKind};

const SCHEMA_VERSION: u32 = 39;

/// The telemetry-pipeline dashboard every service gets.
pub fn pipeline_dashboard(job: &str) -> Dashboard {
    let expr = |expr: String, title: &str, unit: Option<&str>, kind: Option<PanelKind>| Panel {
        metric: None,
        expr: Some(expr),
        by: Vec::new(),
        title: Some(title.to_owned()),
        unit: unit.map(str::to_owned),
        kind,
    };
    let rate = |family: &str, by: &[&str], title: &str| {
        expr(
            format!(
                "sum{} (rate({family}{{job=\"{job}\"}}[$__rate_interval]))",
                if by.is_empty() { String::new() } else { format!(" by ({})", by.join(", ")) }
            ),
            title,
            Some("ops"),
            None,
        )
    };
    Dashboard {
        uid: format!("{job}-telemetry"),
        title: format!("{} / Telemetry pipeline", capitalised(job)),
        tags: vec!["operations".into(), "obs".into()],
        variables: Vec::new(),
        panels: vec![
            expr(format!("up{{job=\"{job}\"}}"), "Scrape target up (alert: 0 for 2 min)", None, Some(PanelKind::Stat)),
            rate("obs_spans_exported_total", &[], "Spans exported per second"),
            rate("obs_spans_dropped_total", &["reason"], "Spans dropped per second, by reason (alert: > 0 for 15 min)"),
            rate("obs_log_lines_dropped_total", &[], "Log lines dropped per second (alert: > 0 for 10 min)"),
            rate("obs_metric_overflow_total", &["metric"], "Recordings past a series cap, by metric"),
            rate("obs_profiles_dropped_total", &["reason"], "Continuous profiles not pushed, by reason"),
            expr(format!("scrape_samples_scraped{{job=\"{job}\"}}"), "Samples per scrape", Some("short"), None),
            expr(format!("scrape_duration_seconds{{job=\"{job}\"}}"), "Scrape duration", Some("s"), None),
        ],
    }
}

/// Every dashboard of `m`, then the pipeline one and, with objectives, the SLO one, as
/// `(file name, JSON text)`.
pub fn dashboards(m: &Monitoring, catalog: &Catalog) -> Vec<(String, String)> {
    let text = |json: &Value| serde_json::to_string_pretty(json).expect("JSON") + "\n";
    let mut out: Vec<(String, String)> = m
        .dashboard
        .iter()
        .cloned()
        .chain([pipeline_dashboard(&m.job)])
        .map(|d| (format!("{}.json", d.uid), text(&dashboard(&d, &m.job, catalog))))
        .collect();
    if let Some(slo) = slo_dashboard(m) {
        out.push((format!("{}.json", slo["uid"].as_str().expect("uid")), text(&slo)));
    }
    out
}

/// The service-level objectives dashboard, if `m` has objectives: for each, two rows of two
/// panels: the SLI over its window against the target, the error budget remaining
/// (`1 - error ratio / budget`, below 0 when overspent), the SLI over time with the target, and
/// the burn rates the alerts read.
pub fn slo_dashboard(m: &Monitoring) -> Option<Value> {
    if m.objective.is_empty() {
        return None;
    }
    let ds = datasource();
    let mut panels = Vec::new();
    for (i, o) in m.objective.iter().enumerate() {
        let y = i as u32 * 16;
        for (j, (content, extra)) in slo_panels(o).into_iter().enumerate() {
            let (x, dy) = ((j % 2) as u32 * 12, (j / 2) as u32 * 8);
            let mut p = panel_json(content, (i * 4 + j + 1) as u32, x, y + dy, &ds);
            for (key, value) in extra {
                p["fieldConfig"]["defaults"][key] = value;
            }
            panels.push(p);
        }
    }
    let mut d = frame(
        &format!("{}-slo", m.job),
        &format!("{} / Service-level objectives", capitalised(&m.job)),
        &["operations".to_owned(), "slo".to_owned()],
        &m.job,
        vec![datasource_variable()],
        panels,
    );
    // Budgets are spent over weeks.
    d["time"] = json!({ "from": "now-7d", "to": "now" });
    d["refresh"] = json!("1m");
    Some(d)
}

/// `page above 14.4 over 1h and 6 over 6h, ticket above 3 over 1d and 1 over 3d`.
fn burn_legend() -> String {
    let pairs = |burns: &[Burn]| {
        burns.iter().map(|b| format!("{} over {}", decimal(b.factor), b.long)).collect::<Vec<_>>().join(" and ")
    };
    format!("page above {}, ticket above {}", pairs(&PAGE), pairs(&TICKET))
}

/// An objective's four panels, each with the `fieldConfig.defaults` it adds (thresholds,
/// decimals).
fn slo_panels(o: &Objective) -> Vec<(PanelContent, Vec<(&'static str, Value)>)> {
    let window = o.ratio(&o.window);
    let budget = decimal(o.budget());
    let target = percent(o.target);
    let steps = |s: &[(&str, Option<f64>)]| {
        let steps: Vec<Value> = s.iter().map(|(color, value)| json!({ "color": color, "value": value })).collect();
        ("thresholds", json!({ "mode": "absolute", "steps": steps }))
    };
    let content = |title: String, kind, unit: &str, targets: Vec<(String, String)>| PanelContent {
        targets,
        title,
        unit: unit.to_owned(),
        kind,
        description: format!("{} Objective `{}`: {target} over {}.", o.description.trim(), o.name, o.window),
    };
    vec![
        (
            content(
                format!("{}: SLI over {} (objective {target})", o.name, o.window),
                PanelKind::Stat,
                "percentunit",
                vec![(format!("1 - {window}"), "SLI".to_owned())],
            ),
            vec![steps(&[("red", None), ("green", Some(o.target))]), ("decimals", json!(3))],
        ),
        (
            content(
                format!("{}: error budget remaining over {}", o.name, o.window),
                PanelKind::Stat,
                "percentunit",
                vec![(format!("1 - {window} / {budget}"), "budget remaining".to_owned())],
            ),
            vec![steps(&[("red", None), ("orange", Some(0.0)), ("green", Some(0.25))]), ("decimals", json!(1))],
        ),
        (
            content(
                format!("{}: SLI over {} and the objective", o.name, o.window),
                PanelKind::Timeseries,
                "percentunit",
                vec![
                    (format!("1 - {window}"), "SLI".to_owned()),
                    (format!("vector({})", decimal(o.target)), format!("objective {target}")),
                ],
            ),
            vec![("decimals", json!(3))],
        ),
        (
            content(
                format!("{}: burn rate ({})", o.name, burn_legend()),
                PanelKind::Timeseries,
                "short",
                PAGE.iter()
                    .chain(&TICKET)
                    .map(|b| (format!("{} / {budget}", o.ratio(b.long)), b.long.to_owned()))
                    .collect(),
            ),
            vec![
                steps(&[
                    ("green", None),
                    ("yellow", Some(TICKET[1].factor)),
                    ("orange", Some(PAGE[1].factor)),
                    ("red", Some(PAGE[0].factor)),
                ]),
                ("custom", json!({ "thresholdsStyle": { "mode": "line" } })),
            ],
        ),
    ]
}

/// Where every query goes: the data source chosen in the `datasource` variable.
fn datasource() -> Value {
    json!({ "type": "prometheus", "uid": "${datasource}" })
}

/// The `datasource` variable, first of every dashboard.
fn datasource_variable() -> Value {
    json!({
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
    })
}

fn dashboard(d: &Dashboard, job: &str, catalog: &Catalog) -> Value {
    let ds = datasource();
    let mut variables = vec![datasource_variable()];
    for v in &d.variables {
        // Values come from the first panel metric carrying the label, else from any series.
        let source = d
            .panels
            .iter()
            .filter_map(|p| p.metric.as_deref().and_then(|n| catalog.get(n)))
            .find(|m| m.labels.contains(v))
            .or_else(|| catalog.metrics().iter().find(|m| m.labels.contains(v)))
            .map(series_name)
            .expect("validated: some metric has the label");
        let query = format!("label_values({source}{{job=\"{job}\"}}, {v})");
        variables.push(json!({
            "name": v,
            "label": v,
            "type": "query",
            "datasource": ds,
            "definition": query,
            "query": { "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery" },
            "refresh": 2,
            "includeAll": true,
            "multi": true,
            "allValue": ".*",
            "current": { "text": "All", "value": "$__all" },
            "sort": 1,
            "hide": 0,
        }));
    }
    let mut panels = Vec::new();
    for (i, p) in d.panels.iter().enumerate() {
        let (x, y) = ((i % 2) as u32 * 12, (i / 2) as u32 * 8);
        panels.push(panel(p, (i + 1) as u32, x, y, &d.variables, job, catalog, &ds));
    }
    frame(&d.uid, &d.title, &d.tags, job, variables, panels)
}

/// A dashboard around its `variables` and `panels`, tagged with the job then `tags`, linking to
/// the job's other dashboards.
fn frame(uid: &str, title: &str, tags: &[String], job: &str, variables: Vec<Value>, panels: Vec<Value>) -> Value {
    let mut all_tags = vec![job.to_owned()];
    all_tags.extend(tags.iter().cloned());
    json!({
        "uid": uid,
        "title": title,
        "description": format!("Generated by obs-gen from the {job} catalog; edit monitoring.toml, not this file."),
        "tags": all_tags,
        "editable": false,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "timezone": "browser",
        "time": { "from": "now-6h", "to": "now" },
        "refresh": "30s",
        "annotations": { "list": [] },
        "links": [{
            "title": format!("{} dashboards", capitalised(job)),
            "type": "dashboards",
            "tags": [job],
            "asDropdown": true,
            "includeVars": true,
            "keepTime": true,
        }],
        "templating": { "list": variables },
        "panels": panels,
    })
}

/// One panel's JSON, with its id and its place (`x`, `y`) on the grid.
#[allow(clippy::too_many_arguments)]
fn panel(p: &Panel, id: u32, x: u32, y: u32, variables: &[String], job: &str, catalog: &Catalog, ds: &Value) -> Value {
    let metric = p.metric.as_deref().map(|n| catalog.get(n).expect("validated"));
    let content = match metric {
        Some(m) => metric_content(p, m, variables, job),
        None => expr_content(p),
    };
    let kind = content.kind;
    let mut v = panel_json(content, id, x, y, ds);
    // Exemplars (trace ids the OpenMetrics exposition attaches to counters and histogram
    // buckets): shown on a counter's or histogram's time series, once (the p50/p95/p99 queries
    // read the same buckets); the data source links their `trace_id` to Tempo.
    if kind == PanelKind::Timeseries && metric.is_some_and(|m| m.kind != Kind::Gauge) {
        v["targets"][0]["exemplar"] = json!(true);
    }
    v
}

/// A panel's JSON from its content, with its id and its place (`x`, `y`) on the grid.
fn panel_json(content: PanelContent, id: u32, x: u32, y: u32, ds: &Value) -> Value {
    let kind = content.kind;
    let mut v = json!({
        "id": id,
        "type": match kind { PanelKind::Timeseries => "timeseries", PanelKind::Stat => "stat", PanelKind::Table => "table" },
        "title": content.title,
        "description": content.description,
        "datasource": ds,
        "gridPos": { "h": 8, "w": 12, "x": x, "y": y },
        "fieldConfig": { "defaults": { "unit": content.unit }, "overrides": [] },
        "targets": targets_json(content.targets, kind, ds),
    });
    v["options"] = options(kind);
    v
}

/// What a panel shows, before it is laid out as JSON.
struct PanelContent {
    /// (expr, legend) pairs.
    targets: Vec<(String, String)>,
    title: String,
    unit: String,
    kind: PanelKind,
    description: String,
}

/// The content of a panel naming a catalog metric: the queries its type calls for, and a
/// title, unit and panel type from the metric unless the panel gives its own.
fn metric_content(p: &Panel, m: &Metric, variables: &[String], job: &str) -> PanelContent {
    let (title, unit) = match m.kind {
        Kind::Counter => (
            p.title.clone().unwrap_or_else(|| format!("{} per second{}", sentence(short_name(m)), by_words(&p.by))),
            p.unit.clone().unwrap_or_else(|| "ops".into()),
        ),
        Kind::Gauge => (
            p.title.clone().unwrap_or_else(|| format!("{}{}", sentence(short_name(m)), by_words(&p.by))),
            p.unit.clone().unwrap_or_else(|| unit_of(m)),
        ),
        Kind::Histogram => (
            p.title.clone().unwrap_or_else(|| format!("{}, p50/p95/p99{}", sentence(short_name(m)), by_words(&p.by))),
            p.unit.clone().unwrap_or_else(|| unit_of(m)),
        ),
    };
    let kind = p.kind.unwrap_or(if m.kind == Kind::Gauge && p.by.is_empty() {
        PanelKind::Stat
    } else {
        PanelKind::Timeseries
    });
    PanelContent {
        targets: metric_targets(p, m, &selector(m, variables, job)),
        title,
        unit,
        kind,
        description: format!("{} (`{}`, {})", m.help, m.name, m.kind.as_str()),
    }
}

/// The (expr, legend) pairs of a metric panel: a per-second rate for a counter, the value for
/// a gauge, p50/p95/p99 for a histogram, split by the panel's `by` labels.
fn metric_targets(p: &Panel, m: &Metric, selector: &str) -> Vec<(String, String)> {
    let by = |extra: &[&str]| {
        let labels: Vec<&str> = p.by.iter().map(String::as_str).chain(extra.iter().copied()).collect();
        if labels.is_empty() { String::new() } else { format!(" by ({})", labels.join(", ")) }
    };
    let legend = |prefix: &str| {
        let mut parts: Vec<String> = p.by.iter().map(|l| format!("{{{{{l}}}}}")).collect();
        if !prefix.is_empty() {
            parts.insert(0, prefix.to_owned());
        }
        if parts.is_empty() { short_name(m).to_owned() } else { parts.join(" ") }
    };
    match m.kind {
        Kind::Counter => {
            vec![(format!("sum{} (rate({}{selector}[$__rate_interval]))", by(&[]), m.name), legend(""))]
        }
        Kind::Gauge => {
            // Ratios average across instances; amounts add up.
            let ratio = p.unit.as_deref() == Some("percentunit");
            let agg = if ratio { "avg" } else { "sum" };
            vec![(format!("{agg}{} ({}{selector})", by(&[]), m.name), legend(""))]
        }
        Kind::Histogram => ["0.5", "0.95", "0.99"]
            .into_iter()
            .map(|q| {
                let pct = &q[2..];
                let pct = if pct.len() == 1 { format!("{pct}0") } else { pct.to_owned() };
                (
                    format!(
                        "histogram_quantile({q}, sum{} (rate({}_bucket{selector}[$__rate_interval])))",
                        by(&["le"]),
                        m.name
                    ),
                    legend(&format!("p{pct}")),
                )
            })
            .collect(),
    }
}

/// The content of a panel given as an `expr`: its one query, untitled legend, `short` unit.
fn expr_content(p: &Panel) -> PanelContent {
    PanelContent {
        targets: vec![(p.expr.clone().expect("validated"), String::new())],
        title: p.title.clone().expect("validated"),
        unit: p.unit.clone().unwrap_or_else(|| "short".into()),
        kind: p.kind.unwrap_or(PanelKind::Timeseries),
        description: String::new(),
    }
}

/// The panel's `targets`: one per (expr, legend) pair, instant tables or ranges.
fn targets_json(targets: Vec<(String, String)>, kind: PanelKind, ds: &Value) -> Vec<Value> {
    let refs = ["A", "B", "C", "D"];
    targets
        .into_iter()
        .zip(refs)
        .map(|((expr, legend), ref_id)| {
            let mut t = json!({ "refId": ref_id, "datasource": ds, "expr": expr, "legendFormat": if legend.is_empty() { "__auto".to_owned() } else { legend } });
            match kind {
                PanelKind::Table => {
                    t["instant"] = json!(true);
                    t["format"] = json!("table");
                }
                _ => t["range"] = json!(true),
            }
            t
        })
        .collect()
}

/// The panel type's display `options`.
fn options(kind: PanelKind) -> Value {
    match kind {
        PanelKind::Timeseries => json!({
            "legend": { "displayMode": "list", "placement": "bottom", "showLegend": true },
            "tooltip": { "mode": "multi", "sort": "desc" },
        }),
        PanelKind::Stat => json!({
            "reduceOptions": { "calcs": ["lastNotNull"], "fields": "", "values": false },
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "auto",
        }),
        PanelKind::Table => json!({ "showHeader": true }),
    }
}

/// `{job="…", label=~"$label", …}` for the dashboard variables the metric carries.
fn selector(m: &Metric, variables: &[String], job: &str) -> String {
    let mut matchers = vec![format!("job=\"{job}\"")];
    for v in variables {
        if m.labels.contains(v) {
            matchers.push(format!("{v}=~\"${v}\""));
        }
    }
    format!("{{{}}}", matchers.join(", "))
}

fn series_name(m: &Metric) -> String {
    match m.kind {
        Kind::Histogram => format!("{}_count", m.name),
        _ => m.name.clone(),
    }
}

fn unit_of(m: &Metric) -> String {
    match m.unit.as_deref() {
        Some("seconds") => "s".into(),
        Some("bytes") => "bytes".into(),
        _ => "short".into(),
    }
}

/// `revel_tickets_sold_total` → `tickets sold`.
fn short_name(m: &Metric) -> &str {
    let name = m.name.split_once('_').map_or(m.name.as_str(), |(_, rest)| rest);
    let name = name.strip_suffix("_total").unwrap_or(name);
    name.strip_suffix("_seconds").or_else(|| name.strip_suffix("_bytes")).unwrap_or(name)
}

fn sentence(s: &str) -> String {
    capitalised(&s.replace('_', " "))
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

fn by_words(by: &[String]) -> String {
    if by.is_empty() { String::new() } else { format!(", by {}", by.join(", ").replace('_', " ")) }
}
