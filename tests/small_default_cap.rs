//! A process whose default series cap is tiny: several families overflow, and the overflow
//! counter (itself a family) must keep counting them all instead of overflowing into itself.
//! Its own test binary, because the default cap is process-wide.

use obs_runtime::metric;
use obs_runtime::testing::value;

#[test]
fn many_families_overflowing_with_a_tiny_default_cap() {
    obs_runtime::metrics::set_default_series_cap(1);
    obs_runtime::metrics::register_catalog(obs_runtime::catalog!());
    for i in 0..3 {
        metric!("lib_loans_total", branch_id = i, channel = "desk").inc();
        metric!("lib_returns_total", branch_id = i, status = "late").inc();
        metric!("lib_calls_total", function = i).inc();
        metric!("lib_fines_total", currency = i).inc_by(1.0);
    }
    for m in ["lib_loans_total", "lib_returns_total", "lib_calls_total", "lib_fines_total"] {
        assert_eq!(value("obs_metric_overflow_total", &[("metric", m)]), Some(2.0), "{m}");
        assert_eq!(obs_runtime::testing::series_count(m), 1, "{m}");
    }
    // A literal call site past the cap is counted on every call, not once.
    for _ in 0..5 {
        metric!("lib_calls_total", function = "literal").inc();
    }
    assert_eq!(value("obs_metric_overflow_total", &[("metric", "lib_calls_total")]), Some(7.0));
    assert_eq!(value("lib_calls_total", &[("function", "__overflow__")]), Some(7.0));
    assert!(obs_runtime::metrics::render().contains("obs_metric_overflow_total{metric=\"lib_fines_total\"} 2\n"));
}
