//! A Pyroscope that accepts connections and never answers: the service keeps running, profiles
//! that cannot be pushed are dropped and counted instead of piling up, and shutdown returns
//! within its deadline rather than waiting for the push (or for the next upload tick).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use obs_runtime::config::Config;
use obs_runtime::testing::value;

#[inline(never)]
fn spin(stop: &AtomicBool) -> u64 {
    let mut x = 7u64;
    while !stop.load(Ordering::Relaxed) {
        x = std::hint::black_box(x.rotate_left(9) ^ x.wrapping_mul(31));
    }
    x
}

#[test]
fn a_hanging_pyroscope_costs_profiles_not_the_service() {
    let url = format!("http://{}", obs_tests::peers::hanging_server());
    let config = Config::from_vars(|_| None)
        .unwrap()
        .spans_file(std::env::temp_dir().join(format!("obs-pyroscope-down-{}.jsonl", std::process::id())))
        .pyroscope(Some(&url))
        .profiling_interval(Duration::from_secs(1))
        .export_timeout(Duration::from_secs(30))
        .shutdown_timeout(Duration::from_millis(800));
    let guard = obs_runtime::init(config).unwrap();

    // Something to sample, so that every window has a profile to push.
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let spinner = std::thread::spawn(move || spin(&s));
    // One push hangs, two wait in the queue, the next windows are dropped.
    let start = Instant::now();
    let mut dropped = 0.0;
    while start.elapsed() < Duration::from_secs(20) && dropped < 1.0 {
        std::thread::sleep(Duration::from_millis(200));
        dropped = value("obs_profiles_dropped_total", &[("reason", "queue_full")]).unwrap_or(0.0);
    }
    assert!(dropped >= 1.0, "no profile counted as dropped in {:?}", start.elapsed());

    let start = Instant::now();
    let flushed = guard.shutdown();
    let took = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    spinner.join().unwrap();
    assert!(!flushed, "the hanging push cannot have completed");
    // The deadline is 0.8 s: the bound leaves room for a loaded machine and is far below the
    // 30 s push timeout, or an upload tick, the shutdown would otherwise wait for.
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
}
