//! The committed generated files match the catalog and the monitoring file: editing
//! `metrics.toml` or `monitoring.toml` without running `cargo run -p obs-gen` fails here. Then
//! what was generated is checked for what Grafana, Prometheus and the runbooks need.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn generated_files_are_up_to_date() {
    let root = root();
    let files = obs_gen::generate(&root, &obs_gen::Sources::revel()).unwrap();
    for (path, expected) in &files {
        let committed = std::fs::read_to_string(root.join(path)).unwrap_or_default();
        assert!(
            &committed == expected,
            "{} is stale: run `cargo run -p obs-gen` and commit the result",
            path.display()
        );
    }
    // No dashboard is left over from a panel set that no longer exists.
    for entry in std::fs::read_dir(root.join(obs_gen::DASHBOARDS_DIR)).unwrap() {
        let path = entry.unwrap().path();
        let rel = path.strip_prefix(&root).unwrap();
        assert!(files.iter().any(|(p, _)| p == rel), "{} is not generated any more: remove it", path.display());
    }
    let catalog = obs_catalog::Catalog::load(&root.join("examples/revel/metrics.toml")).unwrap();
    let reference = std::fs::read_to_string(root.join(obs_gen::REFERENCE_FILE)).unwrap();
    for m in catalog.metrics() {
        assert!(reference.contains(&format!("\n## `{}`\n", m.name)), "{} missing from the reference", m.name);
    }
}

fn dashboards() -> Vec<(PathBuf, serde_json::Value)> {
    let dir = root().join(obs_gen::DASHBOARDS_DIR);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let v = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The business dashboards of the original design and the operational ones are all there, each
/// a Grafana 11 dashboard: uid, title, schema version, panels with unique ids that do not overlap,
/// and queries on the data source variable.
#[test]
fn dashboards_are_grafana_dashboards() {
    let all = dashboards();
    let uids: Vec<&str> = all.iter().map(|(_, d)| d["uid"].as_str().unwrap()).collect();
    for want in [
        "revel-revenue",
        "revel-events",
        "revel-users",
        "revel-questionnaires",
        "revel-payments",
        "revel-email",
        "revel-requests",
        "revel-tasks",
        "revel-telemetry",
        "revel-slo",
    ] {
        assert!(uids.contains(&want), "no dashboard {want}: {uids:?}");
    }
    assert_eq!(uids.iter().collect::<BTreeSet<_>>().len(), uids.len(), "duplicate uid");
    for (path, d) in &all {
        let at = path.display();
        assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()), "{at}: title");
        assert_eq!(d["schemaVersion"], 39, "{at}: Grafana 11.1 writes schema version 39");
        let panels = d["panels"].as_array().unwrap_or_else(|| panic!("{at}: panels"));
        assert!(!panels.is_empty(), "{at}: no panel");
        let mut ids = BTreeSet::new();
        let mut cells = BTreeSet::new();
        for p in panels {
            let id = p["id"].as_u64().unwrap_or_else(|| panic!("{at}: panel without an integer id"));
            assert!(ids.insert(id), "{at}: two panels share id {id}");
            assert!(["timeseries", "stat", "table"].contains(&p["type"].as_str().unwrap()), "{at}: panel type");
            let g = &p["gridPos"];
            let (x, y, w, h) = (
                g["x"].as_u64().unwrap(),
                g["y"].as_u64().unwrap(),
                g["w"].as_u64().unwrap(),
                g["h"].as_u64().unwrap(),
            );
            assert!(x + w <= 24, "{at}: panel {id} is wider than the grid");
            for cx in x..x + w {
                for cy in y..y + h {
                    assert!(cells.insert((cx, cy)), "{at}: panel {id} overlaps another");
                }
            }
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{at}: panel {id} has no query");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{at}: panel {id}");
                assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{at}: panel {id}");
            }
        }
        let vars: Vec<&str> =
            d["templating"]["list"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
        assert_eq!(vars.first(), Some(&"datasource"), "{at}");
    }
}

/// The latency and rate panels show exemplars (once per panel), linked to Tempo by the Prometheus
/// data source's `exemplarTraceIdDestinations`; gauges have none to show.
#[test]
fn counter_and_histogram_panels_show_exemplars_linked_to_tempo() {
    let requests = dashboards().into_iter().find(|(p, _)| p.ends_with("revel-requests.json")).unwrap().1;
    let mut with = 0;
    for p in requests["panels"].as_array().unwrap() {
        let targets = p["targets"].as_array().unwrap();
        let flagged = targets.iter().filter(|t| t["exemplar"] == true).count();
        let title = p["title"].as_str().unwrap();
        // The panels of a catalog counter or histogram; the ratio panels are PromQL of their own.
        if title.starts_with("Requests per second") || title.starts_with("Latency") {
            assert_eq!(flagged, 1, "panel {title}: exemplars on its first query only");
            assert_eq!(targets[0]["exemplar"], true, "panel {title}");
            with += 1;
        } else if title.contains("ratio") {
            assert_eq!(flagged, 0, "panel {title}");
        }
        assert!(flagged <= 1, "panel {title}");
    }
    assert_eq!(with, 4, "the request rate and latency panels show exemplars");
    let datasources =
        std::fs::read_to_string(root().join("deploy/grafana/provisioning/datasources/datasources.yaml")).unwrap();
    let prometheus =
        &datasources[datasources.find("type: prometheus").unwrap()..datasources.find("type: loki").unwrap()];
    assert!(
        prometheus.contains("exemplarTraceIdDestinations:\n        - name: trace_id\n          datasourceUid: tempo"),
        "{prometheus}"
    );
}

/// Every panel query (and every variable query) names only catalog metrics (or obs's own,
/// Prometheus's, and the recording rules'), with labels they carry, and dashboard variables
/// that exist.
#[test]
fn every_query_uses_catalog_metrics_and_labels() {
    let root = root();
    let catalog = obs_catalog::Catalog::load(&root.join("examples/revel/metrics.toml")).unwrap();
    let (_, known) = obs_gen::spec::Monitoring::load(&root.join("examples/revel/monitoring.toml"), &catalog).unwrap();
    let mut metrics_seen = BTreeSet::new();
    for (path, d) in dashboards() {
        let vars: BTreeSet<String> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .collect();
        let mut queries: Vec<String> = d["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["query"]["query"].as_str())
            .map(|q| {
                // label_values(<selector>, <label>): the selector is a query, the label one of its.
                let inner = q.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')).unwrap();
                let (selector, label) = inner.rsplit_once(", ").unwrap();
                format!("sum by ({label}) ({selector})")
            })
            .collect();
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                queries.push(t["expr"].as_str().unwrap().to_owned());
            }
        }
        for q in queries {
            let problems = known.check(&q);
            assert!(problems.is_empty(), "{}: `{q}`: {problems:?}", path.display());
            for var in q.split('$').skip(1) {
                let name: String = var.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                assert!(
                    name.starts_with("__") || vars.contains(&name),
                    "{}: `${name}` is not a variable",
                    path.display()
                );
            }
            metrics_seen.extend(obs_gen::promql::refs(&q).unwrap().metrics);
        }
    }
    // And the dashboards show every catalog family, one way or another.
    for m in catalog.metrics() {
        let shown = metrics_seen
            .iter()
            .any(|s| s == &m.name || s.strip_prefix(m.name.as_str()).is_some_and(|r| r.starts_with('_')));
        assert!(shown, "no dashboard shows {}", m.name);
    }
}

/// Each alert (the declared ones, obs's own and those generated for the objectives) has a
/// runbook page listed in the runbooks' index, and promtool unit tests in which it fires and in
/// which it does not.
#[test]
fn every_alert_has_a_runbook_and_unit_tests() {
    let root = root();
    let rules = std::fs::read_to_string(root.join(obs_gen::RULES_FILE)).unwrap();
    let tests = std::fs::read_dir(root.join("deploy/prometheus/tests"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let index = std::fs::read_to_string(root.join("docs/runbooks/README.md")).unwrap();
    let alerts: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).collect();
    assert!(alerts.len() >= 11, "{alerts:?}");
    assert!(alerts.contains(&"CheckoutLatencyErrorBudgetBurnSlow"), "{alerts:?}");
    for a in alerts {
        let page = root.join("docs/runbooks").join(format!("{a}.md"));
        assert!(page.exists(), "no runbook {}", page.display());
        assert!(
            index.contains(&format!("| {a} | ")) && index.contains(&format!("[page]({a}.md)")),
            "{a}: not in docs/runbooks/README.md"
        );
        assert!(rules.contains(&format!("/docs/runbooks/{a}.md'")), "{a}: runbook_url");
        // A case where it fires lists it in exp_alerts; a case where it must not fire has
        // `alertname: A` followed by an empty `exp_alerts: []`.
        let named = tests.matches(&format!("alertname: {a}\n")).count();
        let silent = tests.matches(&format!("alertname: {a}\n        exp_alerts: []")).count();
        assert!(silent >= 1, "{a}: no promtool test where it stays silent");
        assert!(named > silent, "{a}: no promtool test where it fires");
    }
}

/// CI runs every promtool test file: tests/e2e/prometheus.sh names each file of
/// deploy/prometheus/tests/ (the hand-written one and the objectives' generated one).
#[test]
fn every_promtool_test_file_runs_in_ci() {
    let root = root();
    let script = std::fs::read_to_string(root.join("tests/e2e/prometheus.sh")).unwrap();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root.join("deploy/prometheus/tests")).unwrap() {
        let path = entry.unwrap().path();
        let rel = path.strip_prefix(&root).unwrap().display().to_string();
        assert!(script.contains(&format!("promtool test rules {rel}\n")), "tests/e2e/prometheus.sh does not run {rel}");
        files.push(rel);
    }
    assert!(files.iter().any(|f| f == obs_gen::SLO_TESTS_FILE), "{files:?}");
}
