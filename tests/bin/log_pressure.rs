//! The sample service of `tests/log_pressure.rs`: logs to a standard output the test stops
//! reading, then (mode `recover`) reads again, or (mode `exit`) exits while it is still blocked.
//! Reports what obs counted as one JSON line on standard error.
//!
//! `recover`: `PRESSURE_LINES` lines at once; "blocked" on stderr; waits for a line on stdin; then
//! logs until 50 lines in a row were taken (none dropped), and shuts down.
//! `exit`: `PRESSURE_LINES` lines at once, then shuts down (deadline 500 ms) and exits.
//! `interleave`: `PRESSURE_LINES` times a log line and a `println!` of its own, then exits.

use std::io::BufRead;

use obs_runtime::config::Config;
use obs_runtime::testing::value;

fn dropped() -> u64 {
    value("obs_log_lines_dropped_total", &[]).unwrap_or(0.0) as u64
}

fn main() {
    let mode = std::env::args().nth(1).expect("recover or exit");
    let config = Config::from_env().expect("config").shutdown_timeout(std::time::Duration::from_millis(500));
    let guard = obs_runtime::init(config).expect("init");
    let lines: u64 = std::env::var("PRESSURE_LINES").ok().and_then(|v| v.parse().ok()).unwrap_or(40_000);
    if mode == "interleave" {
        for i in 0..lines {
            tracing::info!(i, "log line");
            println!("own output {i}");
        }
        guard.shutdown();
        return;
    }
    let padding = "x".repeat(150);
    let mut produced = 0u64;
    for i in 0..lines {
        tracing::info!(i, padding, "pressure line");
        produced += 1;
    }
    if mode == "recover" {
        eprintln!("blocked");
        let mut go = String::new();
        std::io::stdin().lock().read_line(&mut go).unwrap();
        // Until the output takes lines again: 50 in a row not dropped.
        let mut in_a_row = 0;
        let mut i = lines;
        while in_a_row < 50 {
            let before = dropped();
            tracing::info!(i, padding, "pressure line");
            produced += 1;
            i += 1;
            in_a_row = if dropped() == before { in_a_row + 1 } else { 0 };
            std::thread::sleep(std::time::Duration::from_millis(1));
            assert!(i < lines + 1_000_000, "the output never took lines again");
        }
    }
    let flushed = guard.shutdown();
    eprintln!("{}", serde_json::json!({ "produced": produced, "dropped": dropped(), "flushed": flushed }));
}
