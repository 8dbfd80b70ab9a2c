//! The production profile against observability off, each round on fresh processes and fresh
//! databases, the two configurations alternating which goes first: a check of the load bench
//! (`load.rs`), whose three long-lived processes start in a fixed order. Each round: 1 s of
//! warm-up, then 4 s of eight keep-alive clients, the simulated services answering at once.
//! Prints each round's throughput, the production profile's change per round, their median and
//! mean, and where the server's CPU went per request (its threads, from Linux `/proc`).
//!
//! `cargo bench -p revel --bench fresh` (`REVEL_FRESH_ROUNDS`, default 8, even: as many rounds
//! with each configuration first).

mod support {
    pub mod client;
}
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use support::client::{http1, load, machine, start};

/// CPU time (user + system, µs) of each thread of `pid`, by thread id, with its name.
fn threads(pid: u32) -> HashMap<u32, (String, f64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((name, us)) = machine::stat_cpu_us(&stat) else { continue };
        // Worker threads are numbered (`tokio-rt-worker`, `sqlx-sqlite-worker-3`): one row each kind.
        let name = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-').to_owned();
        out.insert(tid, (name, us));
    }
    out
}

fn main() {
    let rounds: usize = std::env::var("REVEL_FRESH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(8);
    let sink = http1::otlp_sink();
    let configurations: [(&str, Vec<(&str, &str)>); 2] = [
        ("observability disabled", vec![("ENABLE_OBSERVABILITY", "false")]),
        (
            "production profile",
            vec![
                ("OBS_ENV", "production"),
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", sink.as_str()),
                ("OTEL_SERVICE_NAME", "revel-bench"),
                ("OBS_PROFILING", "false"),
            ],
        ),
    ];
    let cpu = machine::cpu_model();
    println!("{cpu}; {rounds} rounds, each configuration on a fresh process and database");
    let mut changes = Vec::new();
    // CPU µs per request by thread kind, summed over rounds, per configuration.
    let mut by_thread: [BTreeMap<String, f64>; 2] = Default::default();
    let mut requests = [0usize; 2];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut rps = [0.0; 2];
        for k in order {
            let server = start(&configurations[k].1);
            load(server.addr, 8, Duration::from_secs(1));
            let pid = server.child.id();
            let before = threads(pid);
            let (r, latencies) = load(server.addr, 8, Duration::from_secs(4));
            let after = threads(pid);
            for (tid, (name, t)) in &after {
                let spent = t - before.get(tid).map_or(0.0, |b| b.1);
                *by_thread[k].entry(name.clone()).or_default() += spent;
            }
            requests[k] += latencies.len();
            rps[k] = r;
        }
        let change = (rps[1] / rps[0] - 1.0) * 100.0;
        let first = if order[0] == 1 { "production first" } else { "disabled first" };
        println!(
            "round {round}: disabled {:>6.0} req/s, production {:>6.0} req/s: {change:+5.1} % ({first})",
            rps[0], rps[1]
        );
        changes.push(change);
    }
    changes.sort_by(f64::total_cmp);
    let n = changes.len();
    let median = if n % 2 == 0 { (changes[n / 2 - 1] + changes[n / 2]) / 2.0 } else { changes[n / 2] };
    let mean = changes.iter().sum::<f64>() / n as f64;
    println!(
        "production vs disabled, throughput: median {median:+.1} %, mean {mean:+.1} %, rounds {:+.1} to {:+.1} %",
        changes[0],
        changes[n - 1]
    );
    println!("server CPU per request, by thread (µs):");
    let names: std::collections::BTreeSet<&String> = by_thread.iter().flat_map(|m| m.keys()).collect();
    for name in names {
        let per = |k: usize| by_thread[k].get(name).copied().unwrap_or(0.0) / requests[k].max(1) as f64;
        if per(0) + per(1) >= 0.5 {
            println!("  {name:<24} disabled {:>7.1}   production {:>7.1}", per(0), per(1));
        }
    }
}
