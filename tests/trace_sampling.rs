//! Head sampling: a ratio of root spans is kept (within a statistical tolerance) and children
//! follow their parent's decision; a refused export is counted, not retried forever.

#[path = "support/otlp.rs"]
mod otlp;

use std::time::Duration;

use obs_runtime::config::{Config, Sampler};
use obs_runtime::traced_span;

#[traced_span("root")]
fn root(i: u32) -> u32 {
    child(i) + 1
}

#[traced_span("child")]
fn child(i: u32) -> u32 {
    i
}

#[test]
fn ratio_sampling_keeps_whole_traces() {
    let (receiver, url) = otlp::Receiver::start();
    let config = Config::from_vars(|_| None).unwrap().traces_endpoint(url).sampler(Sampler::Ratio(0.1));
    let guard = obs_runtime::init(config).unwrap();
    let n = 8_000u32;
    for i in 0..n {
        assert_eq!(root(i), i + 1);
    }
    assert!(guard.shutdown());
    let spans = receiver.wait_for(1, Duration::from_secs(5));
    let roots: Vec<_> = spans.iter().filter(|s| s.name == "root").collect();
    let children: Vec<_> = spans.iter().filter(|s| s.name == "child").collect();
    // Binomial(8000, 0.1): mean 800, standard deviation 26.8; 5 deviations either way.
    let kept = roots.len() as f64;
    assert!((800.0 - 134.0..=800.0 + 134.0).contains(&kept), "kept {kept} of {n} roots at ratio 0.1");
    // Parent-based: every kept root has its child, and no child is kept without its root.
    assert_eq!(children.len(), roots.len());
    for c in &children {
        assert!(roots.iter().any(|r| r.span_id == c.parent_span_id && r.trace_id == c.trace_id));
    }
}
