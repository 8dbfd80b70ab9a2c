//! Observability overhead under load, in one run on one machine: three Revel processes, one with
//! `ENABLE_OBSERVABILITY=false`, two with the production profile (10 % sampling, INFO JSON logs,
//! metrics, spans exported over OTLP/HTTP to a local receiver), without and with continuous CPU
//! profiling (100 Hz, pushed every 10 s to the same local receiver); the same request mix against
//! each, alternating. Reports per-request latency (criterion, sequential, keep-alive), then throughput
//! and p50/p99 latency with concurrent clients.
//!
//! `cargo bench -p revel --bench load`

mod support {
    pub mod client;
}
use std::io::{Read, Write};
use std::time::Duration;

use support::client::{Conn, Server, http1, load, machine, one_request, start};

use criterion::Criterion;

/// CPU time (user + system) a process has used so far, in µs (Linux `/proc`; 0 elsewhere).
fn cpu_us(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    machine::stat_cpu_us(&stat).map_or(0.0, |(_, us)| us)
}

fn quantile(sorted: &[u64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q) as usize] as f64 / 1000.0
}

fn main() {
    let sink = http1::otlp_sink();
    let pyroscope = sink.trim_end_matches("/v1/traces").to_owned();
    // `REVEL_BENCH_ENV="RUST_LOG=off,OTEL_TRACES_SAMPLER=always_off"` adds variables to the
    // production processes, to see what each part costs.
    let extra: &'static str = Box::leak(std::env::var("REVEL_BENCH_ENV").unwrap_or_default().into_boxed_str());
    let production = |profiling: bool| -> Vec<(&'static str, String)> {
        let mut env: Vec<(&'static str, String)> = vec![
            ("OBS_ENV", "production".to_owned()),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", sink.clone()),
            ("OTEL_SERVICE_NAME", "revel-bench".to_owned()),
            ("OBS_PROFILING", profiling.to_string()),
            // The sink answers Pyroscope's push API like any other POST.
            ("PYROSCOPE_SERVER_ADDRESS", pyroscope.clone()),
            ("OBS_PROFILING_ENDPOINTS", "true".to_owned()),
        ];
        env.extend(extra.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k, v.to_owned())));
        env
    };
    let configurations = [
        ("observability disabled", vec![("ENABLE_OBSERVABILITY", "false".to_owned())]),
        ("production, no profiling", production(false)),
        ("production + profiling", production(true)),
    ];
    let started: Vec<(&str, Server)> = configurations
        .iter()
        .map(|(name, env)| {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            (*name, start(&env))
        })
        .collect();

    // Sequential latency, one keep-alive connection each (criterion).
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    let mut g = c.benchmark_group("revel_request");
    for (name, server) in &started {
        let mut conn = Conn::open(server.addr);
        let mut i = 0u64;
        g.bench_function(*name, |b| {
            b.iter(|| {
                i += 1;
                one_request(&mut conn, i)
            })
        });
    }
    g.finish();

    // Throughput and tail latency with concurrent clients. `REVEL_BENCH_FLAMEGRAPH=dir` writes a
    // flamegraph of each production process, taken during its first round: where the overhead goes.
    let flamegraphs = std::env::var_os("REVEL_BENCH_FLAMEGRAPH").map(std::path::PathBuf::from);
    let summary = concurrent(
        "simulated services answering at once (the worst case: the service's own work only)",
        &started,
        8,
        5,
        flamegraphs.as_deref(),
    );
    println!("production vs disabled:             {} (target: under 5 % each)", versus(&summary, 1, 0));
    println!("profiling on vs off (production):   {}", versus(&summary, 2, 1));
    println!("production + profiling vs disabled: {}", versus(&summary, 2, 0));
    drop(started);

    // The same, with the simulated services' default latencies (Stripe 40 ms, LLM 400 ms, email
    // 20 ms, PDF 10 ms; no failures), as a service that waits for its backends.
    let realistic = |env: &[(&'static str, String)]| {
        let mut env = env.to_vec();
        for (svc, ms) in [("STRIPE", "40"), ("LLM", "400"), ("EMAIL", "20"), ("PDF", "10")] {
            env.push((Box::leak(format!("REVEL_{svc}_LATENCY_MS").into_boxed_str()), ms.to_owned()));
        }
        env
    };
    let waiting: Vec<(&str, Server)> = [
        ("observability disabled", realistic(&configurations[0].1)),
        ("production + profiling", realistic(&configurations[2].1)),
    ]
    .iter()
    .map(|(name, env)| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        (*name, start(&env))
    })
    .collect();
    let summary = concurrent("simulated services with their default latencies", &waiting, 64, 3, None);
    println!("production + profiling vs disabled: {} (target: under 5 % each)", versus(&summary, 1, 0));
}

/// `(req/s median, p99 ms, server CPU µs/req)` of `a` relative to `b`.
fn versus(summary: &[(f64, f64, f64)], a: usize, b: usize) -> String {
    let (x, y) = (summary[a], summary[b]);
    format!(
        "throughput {:+.1} %, p99 {:+.1} %, CPU {:+.1} µs/req",
        (x.0 / y.0 - 1.0) * 100.0,
        (x.1 / y.1 - 1.0) * 100.0,
        x.2 - y.2
    )
}

/// `clients` keep-alive clients against each server in turn, `rounds` rounds of 3 s; prints a
/// table and returns `(req/s median, p99 ms, server CPU µs/req)` per server.
fn concurrent(
    title: &str,
    started: &[(&str, Server)],
    clients: usize,
    rounds: usize,
    flamegraphs: Option<&std::path::Path>,
) -> Vec<(f64, f64, f64)> {
    let n = started.len();
    let mut results: Vec<(Vec<f64>, Vec<u64>)> = vec![(Vec::new(), Vec::new()); n];
    // Server CPU (µs) and requests served during the load, per configuration.
    let mut cpu = vec![(0.0, 0usize); n];
    for round in 0..rounds {
        // Each round starts at the next configuration: a server's background work left from its
        // round (queued tasks, the exporter's last batch) lands in the next one's, so a fixed
        // order would always charge it to the same neighbour.
        for k in (0..n).map(|i| (i + round) % n) {
            let (name, server) = &started[k];
            let pid = server.child.id();
            let grab = match (flamegraphs, round, k) {
                (Some(dir), 0, 1..) => {
                    let (addr, file) = (server.addr, dir.join(format!("{}.svg", name.replace([' ', ',', '+'], "_"))));
                    Some(std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_millis(500));
                        let mut c = Conn::open(addr);
                        let req = "GET /debug/pprof/flamegraph?seconds=2&frequency=997 HTTP/1.1\r\nhost: revel\r\n\r\n";
                        c.writer.write_all(req.as_bytes()).unwrap();
                        let (_, length) = http1::read_head(&mut c.reader).expect("a response");
                        let mut svg = vec![0; length];
                        c.reader.read_exact(&mut svg).unwrap();
                        std::fs::write(&file, svg).unwrap();
                        eprintln!("flamegraph: {}", file.display());
                    }))
                }
                _ => None,
            };
            let before = cpu_us(pid);
            let (rps, lat) = load(server.addr, clients, Duration::from_secs(3));
            cpu[k].0 += cpu_us(pid) - before;
            cpu[k].1 += lat.len();
            results[k].0.push(rps);
            results[k].1.extend(lat);
            if let Some(g) = grab {
                g.join().unwrap();
            }
        }
    }
    println!("\n{title}: {clients} keep-alive clients, {rounds} alternating rounds of 3 s per configuration");
    println!(
        "{:<26} {:>12} {:>10} {:>10} {:>16}",
        "configuration", "req/s (med)", "p50 ms", "p99 ms", "server CPU µs/req"
    );
    let mut summary = Vec::new();
    for (k, (name, _)) in started.iter().enumerate() {
        let (rps, lat) = &mut results[k];
        rps.sort_by(f64::total_cmp);
        lat.sort_unstable();
        let med = rps[rps.len() / 2];
        let cpu_per_req = cpu[k].0 / cpu[k].1.max(1) as f64;
        println!(
            "{:<26} {:>12.0} {:>10.3} {:>10.3} {:>16.1}",
            name,
            med,
            quantile(lat, 0.5),
            quantile(lat, 0.99),
            cpu_per_req
        );
        summary.push((med, quantile(lat, 0.99), cpu_per_req));
    }
    summary
}
