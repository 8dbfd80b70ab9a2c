//! A background task's trace follows the sampling decision of the trace that enqueued it under a
//! parent-based sampler (the default): behind the link of every sampled request is its task's
//! trace, and a task of an unsampled request is dropped (unless it fails). A task enqueued
//! outside any trace is sampled at the ratio.

#[path = "support/otlp.rs"]
mod otlp;

use std::time::Duration;

use obs_runtime::config::{Config, Sampler};
use obs_runtime::task::Task;
use obs_runtime::trace::RemoteContext;

#[test]
fn tasks_follow_the_sampling_of_the_trace_that_enqueued_them() {
    let (receiver, url) = otlp::Receiver::start();
    let config = Config::from_vars(|_| None).unwrap().traces_endpoint(url).sampler(Sampler::Ratio(0.1));
    let guard = obs_runtime::init(config).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let n = 1_000;
    for (name, flag) in [("from_sampled", "01"), ("from_unsampled", "00")] {
        for i in 0..n {
            let traceparent = format!("00-{:016x}{:016x}-{:016x}-{flag}", next(), next(), next() | 1);
            let origin = RemoteContext::from_headers(&traceparent, None).unwrap();
            let task = Task::new(name).id(format!("{name}-{i}")).enqueued_from(origin);
            rt.block_on(task.run(async { Ok::<(), String>(()) })).unwrap();
        }
    }
    // A failing task of an unsampled request is still kept, for its error.
    let origin = RemoteContext::from_headers("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", None).unwrap();
    let task = Task::new("failing_from_unsampled").enqueued_from(origin);
    rt.block_on(task.run(async { Err::<(), _>("smtp refused".to_owned()) })).unwrap_err();
    for _ in 0..n {
        rt.block_on(Task::new("unlinked").run(async { Ok::<(), String>(()) })).unwrap();
    }
    assert!(guard.shutdown());
    let spans = receiver.wait_for(n, Duration::from_secs(5));
    let count = |name: &str| spans.iter().filter(|s| s.name == name).count();
    assert_eq!(count("task.from_sampled"), n, "every task of a sampled trace is sampled");
    assert!(
        spans
            .iter()
            .filter(|s| s.name == "task.from_sampled")
            .all(|s| s.links.len() == 1 && s.links[0].trace_id.len() == 16),
        "each linked to the trace that enqueued it"
    );
    assert_eq!(count("task.from_unsampled"), 0, "no task of an unsampled trace is sampled");
    assert_eq!(count("task.failing_from_unsampled"), 1, "a failing one is kept for its error");
    // Binomial(1000, 0.1): mean 100, standard deviation 9.5; 5 deviations either way.
    let unlinked = count("task.unlinked") as f64;
    assert!((100.0 - 48.0..=100.0 + 48.0).contains(&unlinked), "kept {unlinked} of {n} unlinked tasks at ratio 0.1");
}
