//! The sample service of the fault-injection suite (`tests/export_faults.rs`): configured from
//! the environment like any service (`OTEL_*`), it finishes spans at a bounded rate, shuts down,
//! and writes what obs counted to the file `FAULT_REPORT` names, as one JSON object.
//!
//! `FAULT_ROUNDS` rounds of `FAULT_PER_ROUND` spans, `FAULT_PAUSE_MS` apart; with
//! `FAULT_STOP_FILE`, rounds go on (up to `FAULT_ROUNDS`) until that file exists.

use std::time::{Duration, Instant};

use obs_runtime::config::Config;
use obs_runtime::testing::value;

#[obs_runtime::traced_span("fault.work", fields(i))]
fn work(i: u64) -> u64 {
    i.wrapping_mul(31)
}

fn number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Resident memory in KiB (Linux), 0 elsewhere.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4)
}

fn main() {
    let config = Config::from_env().unwrap_or_else(|e| {
        eprintln!("fault_service: {e}");
        std::process::exit(2);
    });
    let guard = obs_runtime::init(config).expect("init");
    let (rounds, per_round, pause) =
        (number("FAULT_ROUNDS", 30), number("FAULT_PER_ROUND", 200), number("FAULT_PAUSE_MS", 100));
    let mut produced = 0u64;
    let mut checksum = 0u64;
    let mut rss_mid = 0;
    let started = Instant::now();
    let stop_file = std::env::var_os("FAULT_STOP_FILE").map(std::path::PathBuf::from);
    for round in 0..rounds {
        if stop_file.as_ref().is_some_and(|f| f.exists()) {
            break;
        }
        for i in 0..per_round {
            checksum = checksum.wrapping_add(work(i));
            produced += 1;
        }
        if round == rounds / 2 || (stop_file.is_some() && round == 10) {
            rss_mid = rss_kib();
        }
        std::thread::sleep(Duration::from_millis(pause));
    }
    let run_ms = started.elapsed().as_millis() as u64;
    let stop = Instant::now();
    let flushed = guard.shutdown();
    let shutdown_ms = stop.elapsed().as_millis() as u64;
    let dropped = |reason: &str| value("obs_spans_dropped_total", &[("reason", reason)]).unwrap_or(0.0) as u64;
    let reasons =
        ["queue_full", "rejected", "throttled", "unavailable", "timeout", "unreachable", "shutdown", "export_failed"];
    let report = serde_json::json!({
        "produced": produced,
        "exported": value("obs_spans_exported_total", &[]).unwrap_or(0.0) as u64,
        "dropped": reasons.iter().map(|r| (r.to_string(), serde_json::json!(dropped(r)))).collect::<serde_json::Map<_, _>>(),
        "flushed": flushed,
        "run_ms": run_ms,
        "shutdown_ms": shutdown_ms,
        "rss_mid_kib": rss_mid,
        "rss_end_kib": rss_kib(),
        "checksum": checksum,
    });
    let path = std::env::var("FAULT_REPORT").expect("FAULT_REPORT");
    std::fs::write(path, report.to_string()).expect("the report");
}
