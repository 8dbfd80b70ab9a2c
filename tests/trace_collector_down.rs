//! No collector at all (connection refused): instrumented calls keep returning, failed exports
//! are counted as drops, nothing piles up, and shutdown returns within its deadline.

#[path = "support/capture.rs"]
mod capture;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use obs_runtime::config::{Config, Sampler};
use obs_runtime::testing::value;
use obs_runtime::traced_span;

#[traced_span("lonely.work", fields(i))]
fn work(i: u64) -> u64 {
    i + 1
}

fn dropped(reason: &str) -> f64 {
    value("obs_spans_dropped_total", &[("reason", reason)]).unwrap_or(0.0)
}

#[test]
fn a_collector_that_is_down_costs_the_service_nothing_but_the_spans() {
    // A port that was just free: nothing listens there, so every connection is refused.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let captured = capture::Captured::default();
    // One batch's retries give up after 1 s (OTEL_BSP_EXPORT_TIMEOUT), so that some do here.
    let config = Config::from_vars(|name| (name == "OTEL_BSP_EXPORT_TIMEOUT").then(|| "1000".into()))
        .unwrap()
        .traces_endpoint(format!("http://127.0.0.1:{port}/v1/traces"))
        .sampler(Sampler::AlwaysOn)
        .queue_capacity(256)
        .shutdown_timeout(Duration::from_millis(500))
        .log_writer(captured.writer());
    let guard = obs_runtime::init(config).unwrap();

    let n = 5_000u64;
    let mut sum = 0;
    for round in 0..5 {
        for i in 0..n / 5 {
            sum += work(round * (n / 5) + i);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(sum, n * (n + 1) / 2);

    // The outage is in the logs once, as a warning, not once per batch or attempt.
    let text = captured.text();
    let warnings = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["level"] == "WARN" && l["message"].as_str().is_some_and(|m| m.starts_with("span export failed")))
        .collect::<Vec<_>>();
    assert_eq!(warnings.len(), 1, "{text}");
    assert_eq!(warnings[0]["reason"], "unreachable", "a refused connection says so");

    let start = Instant::now();
    guard.shutdown();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    // Every span is accounted for as a drop: unreachable (retried with backoff until the batch's
    // time ran out), refused by the full queue meanwhile, or still queued at shutdown.
    assert!(dropped("unreachable") > 0.0, "no failed export was counted");
    assert_eq!(dropped("export_failed"), 0.0);
    assert_eq!(dropped("unreachable") + dropped("queue_full") + dropped("shutdown"), n as f64);
    assert_eq!(value("obs_spans_exported_total", &[]).unwrap_or(0.0), 0.0);
}
