//! Span export throughput: spans a second the exporter sends to a local OTLP/HTTP receiver with
//! always-on sampling, what is dropped, and spans a second per exporter CPU core (the exporter
//! threads' CPU time, reqwest's I/O thread included, read from `/proc`).
//!
//! `cargo bench -p obs-benches --bench export` (about 30 s). The receiver answers every request
//! at once without decoding it (its own cost is not the exporter's). One producer thread offers
//! spans as fast as it can for `EXPORT_BENCH_SECONDS` (5); the run is repeated 3 times.

#[path = "support/measure.rs"]
mod measure;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use obs_runtime::config::{Config, Sampler};
use obs_runtime::testing::value;

#[obs_runtime::traced_span("bench.export", fields(order_id = i, tier = "vip"))]
fn work(i: u64) -> u64 {
    std::hint::black_box(i)
}

/// A receiver that reads each request and answers 200 with an empty export response.
fn receiver() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = l.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if conn.write_all(reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// CPU seconds of this process's threads whose name starts with one of `prefixes`.
fn thread_cpu(prefixes: &[&str]) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    let mut total = 0.0;
    for task in tasks.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !prefixes.iter().any(|p| name.trim().starts_with(p)) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the command (in parentheses): utime is the 14th field, stime the 15th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 13 {
            total += (f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0)) / ticks;
        }
    }
    total
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: keep that short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let seconds: u64 =
        std::env::var("EXPORT_BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(if quick { 1 } else { 5 });
    let url = receiver();
    let config = Config::from_vars(|_| None).unwrap().traces_endpoint(url).sampler(Sampler::AlwaysOn).logs(false);
    let guard = obs_runtime::init(config).unwrap();
    println!(
        "export throughput; CPU: {} ({} cores)",
        measure::cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let exporter_threads = ["obs-span-export", "reqwest-interna"];
    let exported = || value("obs_spans_exported_total", &[]).unwrap_or(0.0);
    let dropped = || value("obs_spans_dropped_total", &[("reason", "queue_full")]).unwrap_or(0.0);
    let runs = if quick { 1 } else { 3 };
    let mut i = 0u64;
    for run in 1..=runs {
        let (e0, d0, c0) = (exported(), dropped(), thread_cpu(&exporter_threads));
        let start = Instant::now();
        let mut produced = 0u64;
        while start.elapsed() < Duration::from_secs(seconds) {
            for _ in 0..1000 {
                work(i);
                i += 1;
            }
            produced += 1000;
        }
        // What is queued is sent before the run is measured.
        std::thread::sleep(Duration::from_millis(500));
        let elapsed = start.elapsed().as_secs_f64();
        let (e, d, c) = (exported() - e0, dropped() - d0, thread_cpu(&exporter_threads) - c0);
        println!(
            "run {run}: offered {:.0} spans/s, exported {:.0} spans/s, dropped {:.1} %, exporter CPU {:.2} cores, {:.0} spans/s per exporter core",
            produced as f64 / elapsed,
            e / elapsed,
            100.0 * d / produced as f64,
            c / elapsed,
            if c > 0.0 { e / c } else { 0.0 },
        );
    }
    drop(guard);
}
