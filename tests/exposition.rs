//! The text exposition: HELP/TYPE for every family from start-up, escaping, and agreement with
//! the `prometheus` crate's own encoder.

use obs_runtime::metrics;
use obs_runtime::{catalog, metric};

#[test]
fn exposition_matches_the_prometheus_crate_and_escapes_label_values() {
    metrics::register_catalog(catalog!());
    let text = metrics::render();
    // Every family of the catalog shows HELP and TYPE before any recording.
    for def in catalog!() {
        assert!(text.contains(&format!("# HELP {} ", def.name)), "{} has no HELP:\n{text}", def.name);
        assert!(text.contains(&format!("# TYPE {} {}\n", def.name, def.kind.type_name())), "{text}");
    }
    assert!(text.contains("lib_uptime_total 0\n"), "{text}");

    let awkward = ["quote\"d", "back\\slash", "new\nline"];
    for v in awkward {
        metric!("lib_loans_total", branch_id = v, channel = "ünïcödé ✓").inc();
    }
    metric!("lib_pages_scanned").observe(42.0);
    let text = metrics::render();
    assert!(text.contains(r#"lib_loans_total{branch_id="quote\"d",channel="ünïcödé ✓"} 1"#), "{text}");
    assert!(text.contains(r#"lib_loans_total{branch_id="back\\slash",channel="ünïcödé ✓"} 1"#), "{text}");
    assert!(text.contains(r#"lib_loans_total{branch_id="new\nline",channel="ünïcödé ✓"} 1"#), "{text}");
    // Histogram buckets are cumulative, end in +Inf, and come with _sum and _count.
    for line in [
        "lib_pages_scanned_bucket{le=\"10\"} 0",
        "lib_pages_scanned_bucket{le=\"100\"} 1",
        "lib_pages_scanned_bucket{le=\"1000\"} 1",
        "lib_pages_scanned_bucket{le=\"+Inf\"} 1",
        "lib_pages_scanned_sum 42",
        "lib_pages_scanned_count 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }

    // The same families through the prometheus crate's registry and TextEncoder.
    let r = prometheus::Registry::new();
    r.register(Box::new(metrics::ObsCollector::new())).unwrap();
    let mut reference = Vec::new();
    prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &r.gather(), &mut reference).unwrap();
    let reference = String::from_utf8(reference).unwrap();
    for line in reference.lines().filter(|l| !l.starts_with('#')) {
        assert!(text.lines().any(|l| l == line), "line of the prometheus crate's encoding missing from ours: {line:?}");
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(reference.lines().any(|l| l == line), "our line is not in the prometheus crate's encoding: {line:?}");
    }
}
