//! The process, tokio and build metrics in the exposition, with plausible values: what a
//! "System Health" dashboard and a deploy marker read.

#[path = "support/capture.rs"]
mod capture;

use std::collections::HashMap;

/// `name{labels} value` lines of the exposition, by series.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| v.parse().ok().map(|v| (k.to_owned(), v))))
        .collect()
}

#[test]
fn process_runtime_and_build_families_with_plausible_values() {
    let (_captured, config) = capture::config("http://127.0.0.1:9/v1/traces".into());
    let config = config.service_name("runtime-test").service_version("9.9.9").build_commit(Some("abc1234"));
    let guard = obs_runtime::init(config).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    obs_runtime::metrics::watch_tokio_runtime("main", rt.handle());
    // A second runtime, told apart by its name.
    let side = tokio::runtime::Builder::new_current_thread().build().unwrap();
    obs_runtime::metrics::watch_tokio_runtime("side", side.handle());
    // Work on the runtime: its workers are busy for a while, one task stays alive.
    rt.block_on(async {
        let mut handles = Vec::new();
        for i in 0..50u64 {
            handles.push(tokio::spawn(async move { (0..20_000u64).fold(i, |a, b| a.wrapping_mul(31) ^ b) }));
        }
        for h in handles {
            h.await.unwrap();
        }
    });
    let parked = rt.spawn(std::future::pending::<()>());

    let text = obs_runtime::metrics::render();
    let s = samples(&text);
    let get = |k: &str| *s.get(k).unwrap_or_else(|| panic!("no {k} in\n{text}"));
    // Process (Linux): the client guidelines' names.
    assert!(get("process_resident_memory_bytes") > 1e6, "{text}");
    assert!(get("process_virtual_memory_bytes") >= get("process_resident_memory_bytes"));
    assert!(get("process_cpu_seconds_total") >= 0.0);
    assert!(get("process_open_fds") >= 3.0);
    assert!(get("process_max_fds") >= get("process_open_fds"));
    assert!(get("process_threads") >= 3.0, "the runtime's two workers and this thread");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let started = get("process_start_time_seconds");
    assert!(started <= now && now - started < 3600.0, "started {started}, now {now}");
    // tokio: the runtime watched, read at scrape time.
    assert_eq!(get(r#"tokio_workers{runtime="main"}"#), 2.0);
    assert_eq!(get(r#"tokio_workers{runtime="side"}"#), 1.0);
    assert!(get(r#"tokio_alive_tasks{runtime="main"}"#) >= 1.0, "the pending task");
    assert!(get(r#"tokio_global_queue_depth{runtime="main"}"#) >= 0.0);
    assert!(get(r#"tokio_busy_seconds_total{runtime="main"}"#) > 0.0, "{text}");
    assert!(get(r#"tokio_worker_parks_total{runtime="main"}"#) >= 1.0);
    // Build info: one series, 1.
    let build = text.lines().find(|l| l.starts_with("obs_build_info{")).expect("obs_build_info");
    for part in [r#"service_name="runtime-test""#, r#"service_version="9.9.9""#, r#"commit="abc1234""#, "rustc=\"1."] {
        assert!(build.contains(part), "{build}");
    }
    assert!(build.ends_with(" 1"), "{build}");
    // What obs-gen checks queries against is what is exported, labels included.
    for (name, labels) in obs_runtime::metrics::RUNTIME_SERIES {
        let line = text.lines().find(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")));
        let line = line.unwrap_or_else(|| panic!("RUNTIME_SERIES lists {name}, not exported:\n{text}"));
        for l in *labels {
            assert!(line.contains(&format!("{l}=\"")), "{name} without its label {l}: {line}");
        }
    }
    parked.abort();
    drop(rt);
    drop(guard);
}
