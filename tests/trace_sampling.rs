//! Head sampling: a ratio of root spans is kept (within a statistical tolerance) and children
//! follow their parent's decision; with `OTEL_TRACES_SAMPLER=traceidratio` (not parent-based), a
//! caller's sampled flag does not decide, nor does the flag of the trace that enqueued a task.

#[path = "support/otlp.rs"]
mod otlp;

use std::collections::HashMap;
use std::time::Duration;

use obs_runtime::config::Config;
use obs_runtime::trace::RemoteContext;
use obs_runtime::traced_span;

#[traced_span("root")]
fn root(i: u32) -> u32 {
    child(i) + 1
}

#[traced_span("child")]
fn child(i: u32) -> u32 {
    i
}

#[traced_span("failing")]
fn failing() -> Result<(), String> {
    Err("declined".into())
}

#[test]
fn ratio_sampling_keeps_whole_traces() {
    let (receiver, url) = otlp::Receiver::start();
    let env = |name: &str| match name {
        "OTEL_TRACES_SAMPLER" => Some("traceidratio".to_owned()),
        "OTEL_TRACES_SAMPLER_ARG" => Some("0.1".to_owned()),
        _ => None,
    };
    let config = Config::from_vars(env).unwrap().traces_endpoint(url);
    let guard = obs_runtime::init(config).unwrap();
    let n = 8_000u32;
    for i in 0..n {
        assert_eq!(root(i), i + 1);
    }
    // Traces continued from callers, half of them sampled by the caller, half not.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut callers = HashMap::new();
    for i in 0..4_000u32 {
        let trace_id = format!("{:016x}{:016x}", next(), next());
        let sampled = i % 2 == 0;
        let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-{}", if sampled { "01" } else { "00" });
        RemoteContext::from_headers(&traceparent, None).unwrap().in_scope(|| root(i));
        callers.insert(trace_id, sampled);
    }
    // Failing roots in callers' traces: the ones our sampler drops are kept for their error,
    // still children of the caller's span.
    for _ in 0..200 {
        let traceparent = format!("00-{:016x}{:016x}-00f067aa0ba902b7-01", next(), next());
        RemoteContext::from_headers(&traceparent, None).unwrap().in_scope(failing).unwrap_err();
    }
    // Tasks enqueued by sampled requests: not parent-based, their own trace ids decide too.
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    for _ in 0..2_000 {
        let traceparent = format!("00-{:016x}{:016x}-00f067aa0ba902b7-01", next(), next());
        let task =
            obs_runtime::task::Task::new("job").enqueued_from(RemoteContext::from_headers(&traceparent, None).unwrap());
        rt.block_on(task.run(async { Ok::<(), String>(()) })).unwrap();
    }
    assert!(guard.shutdown());
    let spans = receiver.wait_for(1, Duration::from_secs(5));
    // Binomial(2000, 0.1): mean 200, standard deviation 13.4; 5 deviations either way.
    let tasks = spans.iter().filter(|s| s.name == "task.job").count() as f64;
    assert!((200.0 - 67.0..=200.0 + 67.0).contains(&tasks), "kept {tasks} of 2000 tasks of sampled traces");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let failed: Vec<_> = spans.iter().filter(|s| s.name == "failing").collect();
    assert_eq!(failed.len(), 200, "every failing root is exported, sampled or kept for its error");
    assert!(failed.iter().all(|s| hex(&s.parent_span_id) == "00f067aa0ba902b7"), "in the caller's trace");
    let kept = failed.iter().filter(|s| s.attributes.iter().any(|kv| kv.key == "obs.sampling.kept")).count();
    assert!(kept > 100, "most by tail keeping: {kept}");
    let (roots, continued): (Vec<_>, Vec<_>) =
        spans.iter().filter(|s| s.name == "root").partition(|s| !callers.contains_key(&hex(&s.trace_id)));
    // Not parent-based: the trace id decides, at the same ratio, whatever the caller's flag said.
    let by_caller = |flag: bool| continued.iter().filter(|s| callers[&hex(&s.trace_id)] == flag).count() as f64;
    // Binomial(2000, 0.1) each: mean 200, standard deviation 13.4; 5 deviations either way.
    for flag in [true, false] {
        let kept = by_caller(flag);
        assert!((200.0 - 67.0..=200.0 + 67.0).contains(&kept), "kept {kept} of 2000 with the caller's flag {flag}");
    }
    let children: Vec<_> = spans.iter().filter(|s| s.name == "child").collect();
    // Binomial(8000, 0.1): mean 800, standard deviation 26.8; 5 deviations either way.
    let kept = roots.len() as f64;
    assert!((800.0 - 134.0..=800.0 + 134.0).contains(&kept), "kept {kept} of {n} roots at ratio 0.1");
    // A local parent decides: every kept root has its child, and no child is kept without its root.
    assert_eq!(children.len(), roots.len() + continued.len());
    for c in &children {
        assert!(roots.iter().chain(&continued).any(|r| r.span_id == c.parent_span_id && r.trace_id == c.trace_id));
    }
}
