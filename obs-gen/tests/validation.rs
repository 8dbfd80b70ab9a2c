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
