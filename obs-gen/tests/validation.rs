//! A monitoring file that does not match its catalog is refused, every problem named.

use std::path::PathBuf;

fn generate(catalog: &str, monitoring: &str) -> Result<Vec<(PathBuf, String)>, String> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("obs-gen-validation-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("metrics.toml"), catalog).unwrap();
    std::fs::write(dir.join("monitoring.toml"), monitoring).unwrap();
    let sources = obs_gen::Sources {
        catalog: "metrics.toml".into(),
        monitoring: "monitoring.toml".into(),
        out_dir: "deploy".into(),
        catalog_label: "metrics.toml".into(),
        monitoring_label: "monitoring.toml".into(),
    };
    let result = obs_gen::generate(&dir, &sources);
    std::fs::remove_dir_all(&dir).unwrap();
    result
}

const CATALOG: &str = r#"
[metrics.shop_orders_total]
type = "counter"
help = "Orders."
labels = ["status"]

[metrics.shop_queue_depth]
type = "gauge"
help = "Waiting."

[metrics.shop_latency_seconds]
type = "histogram"
help = "Latency."
labels = ["route"]
unit = "seconds"
buckets = [0.1, 1]
"#;

#[test]
fn a_valid_file_generates_rules_dashboards_and_the_reference() {
    let files = generate(
        CATALOG,
        r#"
runbook_base = "https://runbooks.example.org"
job = "shop"
[[recording]]
record = "shop:orders_failed:ratio_rate5m"
expr = '(sum(rate(shop_orders_total{status="failed"}[5m])) or vector(0)) / sum(rate(shop_orders_total[5m]))'
[[alert]]
name = "ShopOrdersFailing"
severity = "critical"
expr = 'shop:orders_failed:ratio_rate5m > 0.1'
for = "5m"
summary = "Orders fail"
description = "{{ $value }}"
[[dashboard]]
uid = "shop"
title = "Shop"
panels = [{ metric = "shop_orders_total", by = ["status"] }, { metric = "shop_latency_seconds", by = ["route"] }, { metric = "shop_queue_depth" }]
"#,
    )
    .unwrap();
    let names: Vec<String> = files.iter().map(|(p, _)| p.display().to_string()).collect();
    assert_eq!(
        names,
        [
            "deploy/metrics.md",
            "deploy/prometheus/rules/shop.rules.yml",
            "deploy/grafana/dashboards/shop.json",
            "deploy/grafana/dashboards/shop-telemetry.json"
        ]
    );
    let rules = &files[1].1;
    assert!(rules.contains("- alert: ShopOrdersFailing") && rules.contains("- alert: ObsSpansDropped"), "{rules}");
    assert!(rules.contains("runbook_url: 'https://runbooks.example.org/ShopOrdersFailing.md'"), "{rules}");
    let dash: serde_json::Value = serde_json::from_str(&files[2].1).unwrap();
    let exprs: Vec<&str> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap()))
        .collect();
    // A counter is a rate, a histogram three quantiles, a gauge its value.
    assert_eq!(
        exprs,
        [
            r#"sum by (status) (rate(shop_orders_total{job="shop"}[$__rate_interval]))"#,
            r#"histogram_quantile(0.5, sum by (route, le) (rate(shop_latency_seconds_bucket{job="shop"}[$__rate_interval])))"#,
            r#"histogram_quantile(0.95, sum by (route, le) (rate(shop_latency_seconds_bucket{job="shop"}[$__rate_interval])))"#,
            r#"histogram_quantile(0.99, sum by (route, le) (rate(shop_latency_seconds_bucket{job="shop"}[$__rate_interval])))"#,
            r#"sum (shop_queue_depth{job="shop"})"#,
        ]
    );
    assert_eq!(dash["panels"][2]["type"], "stat", "a gauge without labels is one number");
    assert_eq!(dash["panels"][1]["fieldConfig"]["defaults"]["unit"], "s");
}

#[test]
fn every_mismatch_with_the_catalog_is_reported() {
    let err = generate(
        CATALOG,
        r#"
runbook_base = "https://runbooks.example.org"
job = "shop"
[[recording]]
record = "no_colon"
expr = 'sum(rate(shop_order_total[5m]))'
[[alert]]
name = "lower_case"
severity = "critical"
expr = 'shop_orders_total{state="x"} > 0'
for = "5 minutes"
summary = "s"
description = "d"
[[dashboard]]
uid = "shop"
title = "Shop"
variables = ["tenant"]
panels = [
    { metric = "shop_order_total" },
    { metric = "shop_orders_total", by = ["route"] },
    { expr = 'sum by (route) (shop_orders_total)' },
    { metric = "shop_queue_depth", expr = "shop_queue_depth" },
]
"#,
    )
    .unwrap_err();
    for expected in [
        "recording rule `no_colon`: name it level:metric:operations",
        "recording rule `no_colon`: unknown metric `shop_order_total` (did you mean `shop_orders_total`?)",
        "alert `lower_case`: name it in CamelCase",
        "alert `lower_case`: `for = \"5 minutes\"` is not a duration",
        "alert `lower_case`: unknown label `state` of `shop_orders_total`",
        "dashboard `shop`: variable `tenant` is not a label of any catalog metric",
        "dashboard `shop`, panel 1: `shop_order_total` is not in the catalog (did you mean `shop_orders_total`?)",
        "dashboard `shop`, panel 2: `shop_orders_total` has no label `route`",
        "dashboard `shop`, panel 3: a panel with an `expr` needs a `title`",
        "dashboard `shop`, panel 3: `route` is not a label of any metric in the expression",
        "dashboard `shop`, panel 4: give either `metric` or `expr`",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert_eq!(err.lines().count(), 12, "{err}");
}

#[test]
fn unknown_keys_are_refused() {
    let err = generate(CATALOG, "runbook_base = \"x\"\njob = \"shop\"\n[[alert]]\nname = \"A\"\nseverity = \"page\"\nexpr = \"up\"\nsummary = \"s\"\ndescription = \"d\"\n")
        .unwrap_err();
    assert!(err.contains("unknown variant `page`"), "{err}");
}

/// Two objectives of the small catalog: a success one on a counter, a latency one on a
/// histogram with a regex selector.
const OBJECTIVES: &str = r#"
runbook_base = "https://runbooks.example.org"
job = "shop"
[[objective]]
name = "orders"
description = "Orders go through."
target = 0.99
window = "30d"
metric = "shop_orders_total"
errors = 'status="failed"'
[[objective]]
name = "api_latency"
description = "API routes answer within 1 s."
target = 0.95
window = "7d"
metric = "shop_latency_seconds"
selector = 'route=~"/api/.+"'
threshold = 1
"#;

#[test]
fn objectives_generate_ratios_burn_rate_alerts_a_dashboard_and_promtool_tests() {
    let files = generate(CATALOG, OBJECTIVES).unwrap();
    let file = |name: &str| &files.iter().find(|(p, _)| p.ends_with(name)).unwrap_or_else(|| panic!("no {name}")).1;
    let rules = file("shop.rules.yml");
    // The error ratio over every window an alert reads, and over the objective's own.
    for (i, w) in ["5m", "30m", "1h", "2h", "6h", "1d", "3d", "window"].into_iter().enumerate() {
        let (w, latency_w) = if i == 7 { ("30d", "7d") } else { (w, w) };
        let success = format!(
            "      - record: slo:orders:error_ratio_rate{w}\n        expr: '(sum(rate(shop_orders_total{{status=\"failed\"}}[{w}])) or vector(0)) / (sum(rate(shop_orders_total[{w}])) > 0)'\n"
        );
        assert!(rules.contains(&success), "{w}:\n{rules}");
        let w = latency_w;
        let latency = format!(
            "      - record: slo:api_latency:error_ratio_rate{w}\n        expr: '1 - sum(rate(shop_latency_seconds_bucket{{route=~\"/api/.+\", le=~\"1(\\\\.0)?\"}}[{w}])) / (sum(rate(shop_latency_seconds_count{{route=~\"/api/.+\"}}[{w}])) > 0)'\n"
        );
        assert!(rules.contains(&latency), "{w}:\n{rules}");
    }
    // The SRE workbook's pairs of windows and burn rates, against a budget of 1 %.
    for (name, severity, expr) in [
        (
            "OrdersErrorBudgetBurnFast",
            "critical",
            "(slo:orders:error_ratio_rate1h > (14.4 * 0.01) and slo:orders:error_ratio_rate5m > (14.4 * 0.01)) or (slo:orders:error_ratio_rate6h > (6 * 0.01) and slo:orders:error_ratio_rate30m > (6 * 0.01))",
        ),
        (
            "OrdersErrorBudgetBurnSlow",
            "warning",
            "(slo:orders:error_ratio_rate1d > (3 * 0.01) and slo:orders:error_ratio_rate2h > (3 * 0.01)) or (slo:orders:error_ratio_rate3d > (1 * 0.01) and slo:orders:error_ratio_rate6h > (1 * 0.01))",
        ),
    ] {
        let head = format!(
            "      - alert: {name}\n        expr: '{expr}'\n        labels:\n          severity: {severity}\n          objective: 'orders'\n        annotations:\n"
        );
        assert!(rules.contains(&head), "{name}:\n{rules}");
        assert!(rules.contains(&format!("runbook_url: 'https://runbooks.example.org/{name}.md'")), "{rules}");
    }
    assert!(rules.contains(
        "- alert: ApiLatencyErrorBudgetBurnFast\n        expr: '(slo:api_latency:error_ratio_rate1h > (14.4 * 0.05)"
    ));
    // Rules of one objective in one group, in order: the alerts read this evaluation's ratios.
    let group = &rules
        [rules.find("  - name: shop.slo.orders\n").unwrap()..rules.find("  - name: shop.slo.api_latency\n").unwrap()];
    assert_eq!(group.matches("- record: ").count(), 8);
    assert!(group.find("- record: slo:orders:error_ratio_rate30d").unwrap() < group.find("- alert: ").unwrap());
    let description = "description: 'Orders go through. Objective: 99 % over 30 days, an error budget of 1 % of events. Bad events burn it over the last hour and the last 5 minutes more than 14.4 times as fast as the window allows (2 % of the budget in an hour; all of it in 2.1 days)";
    assert!(rules.contains(description), "{rules}");

    // The dashboard: per objective, the SLI against the target, the budget remaining, the SLI
    // over time and the burn rates.
    let dash: serde_json::Value = serde_json::from_str(file("shop-slo.json")).unwrap();
    assert_eq!(dash["uid"], "shop-slo");
    let panels = dash["panels"].as_array().unwrap();
    assert_eq!(panels.len(), 8);
    let exprs = |i: usize| -> Vec<&str> {
        panels[i]["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap()).collect()
    };
    assert_eq!(exprs(0), ["1 - slo:orders:error_ratio_rate30d"]);
    assert_eq!(panels[0]["fieldConfig"]["defaults"]["thresholds"]["steps"][1]["value"], 0.99);
    assert_eq!(exprs(1), ["1 - slo:orders:error_ratio_rate30d / 0.01"]);
    assert_eq!(panels[1]["fieldConfig"]["defaults"]["unit"], "percentunit");
    assert_eq!(exprs(2), ["1 - slo:orders:error_ratio_rate30d", "vector(0.99)"]);
    assert_eq!(
        exprs(7),
        [
            "slo:api_latency:error_ratio_rate1h / 0.05",
            "slo:api_latency:error_ratio_rate6h / 0.05",
            "slo:api_latency:error_ratio_rate1d / 0.05",
            "slo:api_latency:error_ratio_rate3d / 0.05"
        ]
    );

    // The promtool tests: series a bad and a good event would have, for each objective.
    let tests = file("shop-slo.test.yml");
    assert!(tests.starts_with("# Generated from monitoring.toml and metrics.toml"), "{tests}");
    assert!(tests.contains("rule_files:\n  - ../rules/shop.rules.yml\n"), "{tests}");
    for series in [
        r#"shop_orders_total{job="shop",instance="slo-test",status="failed"}"#,
        r#"shop_orders_total{job="shop",instance="slo-test",status="200"}"#,
        r#"shop_latency_seconds_bucket{job="shop",instance="slo-test",route="/api/0",le="1"}"#,
        r#"shop_latency_seconds_bucket{job="shop",instance="slo-test",route="/api/0",le="+Inf"}"#,
        r#"shop_latency_seconds_count{job="shop",instance="slo-test",route="/api/0"}"#,
    ] {
        assert!(tests.contains(&format!("      - series: '{series}'\n")), "{series}:\n{tests}");
    }
    // A burst of 40 budgets of 1 % is 400 failed orders of 1000 a minute, for 30 minutes, then
    // none; the good ones go on.
    assert!(tests.contains("        values: '0+400x30 12000+0x369'\n"), "{tests}");
    assert!(tests.contains("        values: '0+600x30 19000+1000x369'\n"), "{tests}");
    for alert in ["OrdersErrorBudgetBurnFast", "OrdersErrorBudgetBurnSlow", "ApiLatencyErrorBudgetBurnFast"] {
        assert!(
            tests.contains(&format!("alertname: {alert}\n        exp_alerts:\n          - exp_labels:")),
            "{alert}"
        );
        assert!(tests.contains(&format!("alertname: {alert}\n        exp_alerts: []")), "{alert}");
    }
}

/// promtool (when installed) runs the generated tests against the generated rules: every
/// objective's alerts fire and resolve as its cases say.
#[test]
fn generated_promtool_tests_pass() {
    if std::process::Command::new("promtool").arg("--version").output().is_err() {
        eprintln!("promtool is not installed: skipped (tests/e2e/prometheus.sh runs it)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("obs-gen-promtool-{}", std::process::id()));
    for (path, text) in generate(CATALOG, OBJECTIVES).unwrap() {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let out = std::process::Command::new("promtool")
        .args(["test", "rules"])
        .arg(dir.join("deploy/prometheus/tests/shop-slo.test.yml"))
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && report.contains("SUCCESS"), "{report}");
}

#[test]
fn objectives_that_do_not_match_the_catalog_are_refused() {
    let objective =
        |fields: &str| format!("[[objective]]\ndescription = \"d\"\ntarget = 0.99\nwindow = \"28d\"\n{fields}\n");
    let text = [
        "runbook_base = \"x\"\njob = \"shop\"\n".to_owned(),
        "[[alert]]\nname = \"TakenErrorBudgetBurnFast\"\nseverity = \"critical\"\nexpr = \"up == 0\"\nsummary = \"s\"\ndescription = \"d\"\n".to_owned(),
        objective("name = \"Orders\"\nmetric = \"shop_order_total\"\nerrors = 'status=\"failed\"'"),
        objective("name = \"labels\"\nmetric = \"shop_orders_total\"\nselector = 'route=\"/x\"'\nerrors = 'state=\"failed\"'"),
        objective("name = \"bound\"\nmetric = \"shop_latency_seconds\"\nthreshold = 0.5"),
        objective("name = \"le\"\nmetric = \"shop_latency_seconds\"\nselector = 'le=\"1\"'\nthreshold = 1"),
        objective("name = \"errors_on_histogram\"\nmetric = \"shop_latency_seconds\"\nerrors = 'route=\"/x\"'"),
        objective("name = \"threshold_on_counter\"\nmetric = \"shop_orders_total\"\nthreshold = 1"),
        objective("name = \"both\"\nmetric = \"shop_orders_total\"\nerrors = 'status=\"failed\"'\nthreshold = 1"),
        objective("name = \"neither\"\nmetric = \"shop_orders_total\""),
        objective("name = \"malformed\"\nmetric = \"shop_orders_total\"\nerrors = 'status=failed'"),
        objective("name = \"unselectable\"\nmetric = \"shop_orders_total\"\nselector = 'status=\"ok\"'\nerrors = 'status=\"failed\"'"),
        objective("name = \"taken\"\nmetric = \"shop_orders_total\"\nerrors = 'status=\"failed\"'"),
        objective("name = \"taken\"\nmetric = \"shop_orders_total\"\nerrors = 'status=\"failed\"'"),
    ]
    .concat();
    let text = text
        + "[[objective]]\nname = \"range\"\ndescription = \"d\"\ntarget = 1.5\nwindow = \"28 days\"\nmetric = \"shop_orders_total\"\nerrors = 'status=\"failed\"'\n"
        + "[[objective]]\nname = \"low\"\ndescription = \"{{ $value }}\"\ntarget = 0.8\nwindow = \"2d\"\nmetric = \"shop_orders_total\"\nerrors = 'status=\"failed\"'\n";
    let err = generate(CATALOG, &text).unwrap_err();
    let expected = [
        "objective `Orders`: name it in snake_case",
        "objective `Orders`: `shop_order_total` is not in the catalog (did you mean `shop_orders_total`?)",
        "objective `labels`: `errors`: unknown label `state` of `shop_orders_total`",
        "objective `labels`: `selector`: unknown label `route` of `shop_orders_total`",
        "objective `bound`: `threshold = 0.5` is not a bucket bound of `shop_latency_seconds` (0.1, 1)",
        "objective `le`: `selector`: unknown label `le` of `shop_latency_seconds_count`",
        "objective `errors_on_histogram`: `errors` makes a success objective, on a counter, and `shop_latency_seconds` is a histogram",
        "objective `threshold_on_counter`: `threshold` makes a latency objective, on a histogram, and `shop_orders_total` is a counter",
        "objective `both`: give either `errors` (a success objective, on a counter) or `threshold`",
        "objective `neither`: give either `errors`",
        "objective `malformed`: `errors`: the value of `status` in `status=failed`: expected a quoted value",
        "objective `unselectable`: no value of `status` found that `selector` and `errors` both match: no failed event would be counted (and the generated promtool tests need one)",
        "objective `taken`: alert `TakenErrorBudgetBurnFast` is defined twice",
        "objective `taken` is defined twice",
        "objective `range`: `target = 1.5` is a share of good events, strictly between 0 and 1",
        "objective `range`: `window = \"28 days\"` is not a duration such as `28d`",
        "objective `low`: `target = 0.8`: the page fires on 6 times the error budget, more than every event when the budget is above 1/6; the target must be above 5/6 (0.834 or more)",
        "objective `low`: `window = \"2d\"` must be longer than 3 days",
        "objective `low`: `description` is plain text, not a template",
    ];
    for e in expected {
        assert!(err.contains(e), "missing {e:?} in:\n{err}");
    }
    // The file's name, then one line per problem: nothing else was reported.
    assert_eq!(err.lines().count(), expected.len() + 1, "{err}");
}

#[test]
fn unknown_objective_keys_are_refused() {
    let err = generate(
        CATALOG,
        "runbook_base = \"x\"\njob = \"shop\"\n[[objective]]\nname = \"o\"\ndescription = \"d\"\ntarget = 0.99\nwindow = \"28d\"\nmetric = \"shop_latency_seconds\"\nthresold = 1\n",
    )
    .unwrap_err();
    assert!(err.contains("unknown field `thresold`"), "{err}");
}
