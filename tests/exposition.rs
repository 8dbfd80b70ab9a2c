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

#[test]
fn openmetrics_names_counter_families_without_total_and_ends_with_eof() {
    metrics::register_catalog(catalog!());
    // Not the families of the test above, which runs at the same time.
    metric!("lib_book_size_bytes").observe(5e5);
    metric!("lib_fines_total", currency = "EUR").inc_by(2.5);
    let om = metrics::Format::OpenMetrics.render();
    let text = metrics::render();
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert_eq!(om.matches("# EOF").count(), 1);
    for def in catalog!() {
        let (family, kind) = match def.kind.type_name() {
            "counter" => (def.name.strip_suffix("_total").expect("catalog counters end in _total"), "counter"),
            other => (def.name, other),
        };
        assert!(om.contains(&format!("# TYPE {family} {kind}\n")), "{family}: {om}");
        assert!(om.contains(&format!("# HELP {family} ")), "{family}: {om}");
    }
    // `le` as the OpenMetrics parser wants it (Go's spelling).
    for line in [
        "lib_book_size_bytes_bucket{le=\"1000.0\"} 0\n",
        "lib_book_size_bytes_bucket{le=\"1e+06\"} 1\n",
        "lib_book_size_bytes_bucket{le=\"1e+09\"} 1\n",
        "lib_book_size_bytes_bucket{le=\"+Inf\"} 1\n",
    ] {
        assert!(om.contains(line), "{line:?} missing from {om}");
    }
    assert!(om.contains("lib_fines_total{currency=\"EUR\"} 2.5\n"), "{om}");
    // Otherwise the samples are the text format's (of this test's families: the test above
    // records into its own at the same time).
    let ours = |l: &&str| l.starts_with("lib_book_size_bytes") || l.starts_with("lib_fines_total");
    let text_samples: Vec<&str> = text.lines().filter(ours).filter(|l| !l.contains("le=")).collect();
    assert_eq!(text_samples.len(), 3, "{text}");
    for line in text_samples {
        assert!(om.lines().any(|l| l == line), "{line:?} missing from the OpenMetrics exposition");
    }
}
