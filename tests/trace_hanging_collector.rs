//! A collector that accepts connections and never answers: instrumented calls keep returning,
//! the queue stays bounded and drops are counted, and shutdown returns within its deadline.

use std::time::{Duration, Instant};

use obs_runtime::config::{Config, Sampler};
use obs_runtime::testing::value;
use obs_runtime::traced_span;

#[traced_span("busy.work", fields(i))]
fn work(i: u64) -> u64 {
    i * 2
}

#[test]
fn a_hanging_collector_never_blocks_the_service() {
    let url = format!("http://{}/v1/traces", obs_tests::peers::hanging_server());
    let config = Config::from_vars(|_| None)
        .unwrap()
        .traces_endpoint(url)
        .sampler(Sampler::AlwaysOn)
        .queue_capacity(64)
        .export_timeout(Duration::from_secs(30))
        .shutdown_timeout(Duration::from_millis(500));
    let guard = obs_runtime::init(config).unwrap();

    let n = 20_000u64;
    let mut sum = 0;
    for i in 0..n {
        sum += work(i);
    }
    assert_eq!(sum, n * (n - 1));
    // The exporter holds at most one batch (512) in its hanging request and the queue 64 more:
    // everything else was dropped, and counted, instead of piling up in memory.
    let dropped = value("obs_spans_dropped_total", &[("reason", "queue_full")]).unwrap_or(0.0);
    assert!(dropped >= (n - 64 - 512) as f64, "dropped {dropped}");

    let start = Instant::now();
    let flushed = guard.shutdown();
    let took = start.elapsed();
    assert!(!flushed, "the hanging export cannot have completed");
    // The deadline is 0.5 s; the bound leaves room for a loaded CI machine, and is far below the
    // 30 s export timeout the shutdown would otherwise wait for.
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
}
