//! Cost per call of `#[counted]` / `#[timed]` against the `prometheus` crate, and the cost of a
//! scrape of 10,000 and 100,000 series against the `prometheus` crate and `prometheus-client`.
//!
//! Run with `cargo bench -p obs-benches --bench counted`. Every group runs in one process so the
//! ratios between benchmarks are comparable. Before each measurement, the setup checks that the
//! instrumented function really records (so no benchmark measures a no-op) and, for the obs
//! paths, that a call allocates nothing once its series exists.

#[path = "support/measure.rs"]
mod measure;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use obs_runtime::testing::{histogram, value};
use obs_runtime::{counted, metric, timed};
use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

// ---------------------------------------------------------------------------------------------
// Counting allocator
// ---------------------------------------------------------------------------------------------

/// `System`, counting every allocation (`alloc`, `alloc_zeroed`, `realloc`).
struct CountingAlloc;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to `System` unchanged.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Calls made by each allocation check.
const ALLOC_CHECK_CALLS: usize = 10_000;

/// How many allocations `f` performs.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    f();
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

fn report_allocations(what: &str, n: usize) {
    eprintln!("allocations: {what}: {n} in {ALLOC_CHECK_CALLS} calls");
}

// ---------------------------------------------------------------------------------------------
// literal_labels
// ---------------------------------------------------------------------------------------------

#[inline(never)]
fn bare_call(x: u64) -> u64 {
    black_box(x)
}

#[counted(metric = "bench_literal_total", labels(route = "/checkout", status = "ok"))]
#[inline(never)]
fn obs_literal(x: u64) -> u64 {
    black_box(x)
}

#[inline(never)]
fn prometheus_preresolved(counter: &IntCounter, x: u64) -> u64 {
    counter.inc();
    black_box(x)
}

#[inline(never)]
fn prometheus_literal_with_label_values(vec: &IntCounterVec, x: u64) -> u64 {
    vec.with_label_values(&["/checkout", "ok"]).inc();
    black_box(x)
}

fn literal_value() -> f64 {
    value("bench_literal_total", &[("route", "/checkout"), ("status", "ok")]).unwrap_or(0.0)
}

fn literal_labels(c: &mut Criterion) {
    eprintln!("CPU: {}", measure::cpu_model());
    let vec = IntCounterVec::new(Opts::new("prom_literal_total", "baseline"), &["route", "status"]).unwrap();
    let counter = vec.with_label_values(&["/checkout", "ok"]);

    // Sanity: the instrumented function counts, the baselines count.
    let before = literal_value();
    for i in 0..1000 {
        obs_literal(i);
    }
    assert_eq!(literal_value(), before + 1000.0, "#[counted] with literal labels records nothing");
    let before = counter.get();
    for i in 0..1000 {
        prometheus_preresolved(&counter, i);
        prometheus_literal_with_label_values(&vec, i);
    }
    assert_eq!(counter.get(), before + 2000);

    // No allocation per call (the series exists: warmed up above).
    let n = allocations(|| {
        for i in 0..ALLOC_CHECK_CALLS as u64 {
            obs_literal(black_box(i));
        }
    });
    report_allocations("literal_labels/obs_counted", n);
    assert_eq!(n, 0, "#[counted] with literal labels allocates per call");
    let n = allocations(|| {
        for i in 0..ALLOC_CHECK_CALLS as u64 {
            prometheus_preresolved(&counter, black_box(i));
        }
    });
    report_allocations("literal_labels/prometheus_preresolved", n);
    let n = allocations(|| {
        for i in 0..ALLOC_CHECK_CALLS as u64 {
            prometheus_literal_with_label_values(&vec, black_box(i));
        }
    });
    report_allocations("literal_labels/prometheus_with_label_values", n);

    let mut g = c.benchmark_group("literal_labels");
    g.bench_function("bare_call", |b| b.iter(|| bare_call(black_box(42))));
    g.bench_function("obs_counted", |b| b.iter(|| obs_literal(black_box(42))));
    g.bench_function("prometheus_preresolved", |b| b.iter(|| prometheus_preresolved(&counter, black_box(42))));
    g.bench_function("prometheus_with_label_values", |b| {
        b.iter(|| prometheus_literal_with_label_values(&vec, black_box(42)))
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// argument_labels
// ---------------------------------------------------------------------------------------------

/// Distinct id triples the benchmarks cycle over.
const TRIPLES: usize = 64;

/// `(organization_id, event_id, tier_id)`, realistic widths.
fn id_triples() -> [(u64, u64, u64); TRIPLES] {
    std::array::from_fn(|i| {
        let i = i as u64;
        (1_000_000 + i * 7919, 5_000_000_000 + i * 104_729, i % 5)
    })
}

#[inline(never)]
fn bare_args(org: u64, event: u64, tier: u64) -> u64 {
    black_box(org ^ event ^ tier)
}

#[counted(metric = "bench_args_total", labels(organization_id = org, event_id = event, tier_id = tier))]
#[inline(never)]
fn obs_args(org: u64, event: u64, tier: u64) -> u64 {
    black_box(org ^ event ^ tier)
}

#[counted(metric = "bench_outcome_total", labels(organization_id = org), outcome(label = "status"))]
#[inline(never)]
fn obs_outcome(org: u64, fail: bool) -> Result<u64, u64> {
    if fail { Err(black_box(org)) } else { Ok(black_box(org)) }
}

#[inline(never)]
fn prometheus_args_str(vec: &IntCounterVec, org: u64, event: u64, tier: u64, labels: &[&str; 3]) -> u64 {
    vec.with_label_values(labels).inc();
    black_box(org ^ event ^ tier)
}

#[inline(never)]
fn prometheus_args_to_string(vec: &IntCounterVec, org: u64, event: u64, tier: u64) -> u64 {
    vec.with_label_values(&[&org.to_string(), &event.to_string(), &tier.to_string()]).inc();
    black_box(org ^ event ^ tier)
}

fn args_value(t: (u64, u64, u64)) -> f64 {
    let (o, e, r) = (t.0.to_string(), t.1.to_string(), t.2.to_string());
    value("bench_args_total", &[("organization_id", &o), ("event_id", &e), ("tier_id", &r)]).unwrap_or(0.0)
}

fn argument_labels(c: &mut Criterion) {
    let ids = id_triples();
    let strings: Vec<[String; 3]> =
        ids.iter().map(|&(o, e, t)| [o.to_string(), e.to_string(), t.to_string()]).collect();
    let strs: Vec<[&str; 3]> = strings.iter().map(|[o, e, t]| [o.as_str(), e.as_str(), t.as_str()]).collect();
    let vec = IntCounterVec::new(Opts::new("prom_args_total", "baseline"), &["organization_id", "event_id", "tier_id"])
        .unwrap();

    // Sanity and warm-up: every series exists afterwards, and each was counted.
    let rounds = 10;
    let before = args_value(ids[7]);
    for _ in 0..rounds {
        for (i, &(o, e, t)) in ids.iter().enumerate() {
            obs_args(o, e, t);
            prometheus_args_str(&vec, o, e, t, &strs[i]);
            prometheus_args_to_string(&vec, o, e, t);
        }
    }
    assert_eq!(args_value(ids[7]), before + rounds as f64, "#[counted] with argument labels records nothing");
    assert_eq!(obs_runtime::testing::series_count("bench_args_total"), TRIPLES);
    assert_eq!(vec.with_label_values(&strs[7]).get(), 2 * rounds);

    // No allocation per call, every series existing.
    let n = allocations(|| {
        for i in 0..ALLOC_CHECK_CALLS {
            let (o, e, t) = ids[i % TRIPLES];
            obs_args(black_box(o), black_box(e), black_box(t));
        }
    });
    report_allocations("argument_labels/obs_counted", n);
    assert_eq!(n, 0, "#[counted] with u64 argument labels allocates per call");
    // An outcome label between argument labels: the key is completed after the call.
    for (i, ids) in ids.iter().enumerate() {
        let _ = obs_outcome(ids.0, i.is_multiple_of(2));
    }
    let n = allocations(|| {
        for i in 0..ALLOC_CHECK_CALLS {
            let _ = obs_outcome(black_box(ids[i % TRIPLES].0), i.is_multiple_of(2));
        }
    });
    report_allocations("argument_labels/obs_counted_outcome", n);
    assert_eq!(n, 0, "#[counted] with argument and outcome labels allocates per call");
    let n = allocations(|| {
        for i in 0..ALLOC_CHECK_CALLS {
            let (o, e, t) = ids[i % TRIPLES];
            prometheus_args_str(&vec, black_box(o), black_box(e), black_box(t), &strs[i % TRIPLES]);
        }
    });
    report_allocations("argument_labels/prometheus_with_label_values_str", n);
    let n = allocations(|| {
        for i in 0..ALLOC_CHECK_CALLS {
            let (o, e, t) = ids[i % TRIPLES];
            prometheus_args_to_string(&vec, black_box(o), black_box(e), black_box(t));
        }
    });
    report_allocations("argument_labels/prometheus_with_label_values_to_string", n);

    let mut g = c.benchmark_group("argument_labels");
    g.bench_function("bare_call", |b| {
        let mut i = 0usize;
        b.iter(|| {
            let (o, e, t) = ids[i % TRIPLES];
            i = i.wrapping_add(1);
            bare_args(black_box(o), black_box(e), black_box(t))
        })
    });
    g.bench_function("obs_counted", |b| {
        let mut i = 0usize;
        b.iter(|| {
            let (o, e, t) = ids[i % TRIPLES];
            i = i.wrapping_add(1);
            obs_args(black_box(o), black_box(e), black_box(t))
        })
    });
    g.bench_function("obs_counted_outcome", |b| {
        let mut i = 0usize;
        b.iter(|| {
            let (o, _, _) = ids[i % TRIPLES];
            i = i.wrapping_add(1);
            obs_outcome(black_box(o), i.is_multiple_of(2))
        })
    });
    g.bench_function("prometheus_with_label_values_str", |b| {
        let mut i = 0usize;
        b.iter(|| {
            let k = i % TRIPLES;
            let (o, e, t) = ids[k];
            i = i.wrapping_add(1);
            prometheus_args_str(&vec, black_box(o), black_box(e), black_box(t), black_box(&strs[k]))
        })
    });
    g.bench_function("prometheus_with_label_values_to_string", |b| {
        let mut i = 0usize;
        b.iter(|| {
            let (o, e, t) = ids[i % TRIPLES];
            i = i.wrapping_add(1);
            prometheus_args_to_string(&vec, black_box(o), black_box(e), black_box(t))
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// argument_labels_str: the same three labels, the values already strings on both sides
// ---------------------------------------------------------------------------------------------

#[counted(metric = "bench_args_total", labels(organization_id = org, event_id = event, tier_id = tier))]
#[inline(never)]
fn obs_args_str(org: &str, event: &str, tier: &str) -> usize {
    black_box(org.len() ^ event.len() ^ tier.len())
}

#[inline(never)]
fn prometheus_args_strs(vec: &IntCounterVec, org: &str, event: &str, tier: &str) -> usize {
    vec.with_label_values(&[org, event, tier]).inc();
    black_box(org.len() ^ event.len() ^ tier.len())
}

fn argument_labels_str(c: &mut Criterion) {
    let strings: Vec<[String; 3]> =
        id_triples().iter().map(|&(o, e, t)| [o.to_string(), e.to_string(), t.to_string()]).collect();
    let vec =
        IntCounterVec::new(Opts::new("prom_args_str_total", "baseline"), &["organization_id", "event_id", "tier_id"])
            .unwrap();
    let before = args_value(id_triples()[3]);
    for [o, e, t] in &strings {
        obs_args_str(o, e, t);
        prometheus_args_strs(&vec, o, e, t);
    }
    // The same series as the u64 path: "5" and 5 are one label value.
    assert_eq!(args_value(id_triples()[3]), before + 1.0, "#[counted] with &str labels records nothing");
    let n = allocations(|| {
        for i in 0..ALLOC_CHECK_CALLS {
            let [o, e, t] = &strings[i % TRIPLES];
            obs_args_str(black_box(o), black_box(e), black_box(t));
        }
    });
    report_allocations("argument_labels_str/obs_counted", n);
    assert_eq!(n, 0, "#[counted] with &str argument labels allocates per call");

    let mut g = c.benchmark_group("argument_labels_str");
    g.bench_function("obs_counted", |b| {
        let mut i = 0usize;
        b.iter(|| {
            let [o, e, t] = &strings[i % TRIPLES];
            i = i.wrapping_add(1);
            obs_args_str(black_box(o), black_box(e), black_box(t))
        })
    });
    g.bench_function("prometheus_with_label_values", |b| {
        let mut i = 0usize;
        b.iter(|| {
            let [o, e, t] = &strings[i % TRIPLES];
            i = i.wrapping_add(1);
            prometheus_args_strs(&vec, black_box(o), black_box(e), black_box(t))
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// timed
// ---------------------------------------------------------------------------------------------

#[timed(metric = "bench_duration_seconds", labels(route = "/x"))]
#[inline(never)]
fn obs_timed(x: u64) -> u64 {
    black_box(x)
}

#[inline(never)]
fn prometheus_timed(h: &Histogram, x: u64) -> u64 {
    let start = Instant::now();
    let r = black_box(x);
    h.observe(start.elapsed().as_secs_f64());
    r
}

fn timed_count() -> u64 {
    histogram("bench_duration_seconds", &[("route", "/x")]).map_or(0, |h| h.count)
}

fn timed_group(c: &mut Criterion) {
    // Same buckets as the catalog's default (= prometheus' DEFAULT_BUCKETS).
    let vec = HistogramVec::new(HistogramOpts::new("prom_duration_seconds", "baseline"), &["route"]).unwrap();
    let h = vec.with_label_values(&["/x"]);

    let before = timed_count();
    for i in 0..1000 {
        obs_timed(i);
        prometheus_timed(&h, i);
    }
    assert_eq!(timed_count(), before + 1000, "#[timed] records nothing");
    assert_eq!(h.get_sample_count(), 1000);

    let n = allocations(|| {
        for i in 0..ALLOC_CHECK_CALLS as u64 {
            obs_timed(black_box(i));
        }
    });
    report_allocations("timed/obs_timed", n);
    assert_eq!(n, 0, "#[timed] allocates per call");
    let n = allocations(|| {
        for i in 0..ALLOC_CHECK_CALLS as u64 {
            prometheus_timed(&h, black_box(i));
        }
    });
    report_allocations("timed/prometheus_histogram_observe", n);

    let mut g = c.benchmark_group("timed");
    g.bench_function("bare_call", |b| b.iter(|| bare_call(black_box(42))));
    g.bench_function("obs_timed", |b| b.iter(|| obs_timed(black_box(42))));
    g.bench_function("prometheus_histogram_observe", |b| b.iter(|| prometheus_timed(&h, black_box(42))));
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// render_series: 10,000 then 100,000 series of one counter family
// ---------------------------------------------------------------------------------------------

fn sample_lines(text: &str, name: &str) -> usize {
    let prefix = format!("{name}{{");
    text.lines().filter(|l| l.starts_with(&prefix)).count()
}

/// The three registries grow together, from 0 to 10,000 series and then to 100,000; each size
/// is measured in the same run (obs's text and OpenMetrics expositions, the `prometheus` crate's
/// gather + text encoding, `prometheus-client`'s OpenMetrics encoding).
fn render_series(c: &mut Criterion) {
    let registry = Registry::new();
    let vec = IntCounterVec::new(Opts::new("prom_render_total", "baseline"), &["shard", "id"]).unwrap();
    registry.register(Box::new(vec.clone())).unwrap();
    let mut pc_registry = prometheus_client::registry::Registry::default();
    let pc_family = prometheus_client::metrics::family::Family::<
        Vec<(String, String)>,
        prometheus_client::metrics::counter::Counter,
    >::default();
    pc_registry.register("pc_render", "baseline", pc_family.clone());
    let prom_render = || {
        let families = registry.gather();
        let mut buf = Vec::new();
        TextEncoder::new().encode(&families, &mut buf).unwrap();
        buf
    };
    let pc_render = || {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &pc_registry).unwrap();
        out
    };
    let openmetrics = || obs_runtime::metrics::Format::OpenMetrics.render();
    let mut made = 0;
    for size in [10_000usize, 100_000] {
        for i in made..size {
            metric!("bench_render_total", shard = "s", id = i).inc();
            vec.with_label_values(&["s", &i.to_string()]).inc();
            pc_family.get_or_create(&vec![("shard".into(), "s".into()), ("id".into(), i.to_string())]).inc();
        }
        made = size;
        // Each really writes every series.
        assert_eq!(obs_runtime::testing::series_count("bench_render_total"), size);
        let text = obs_runtime::metrics::render();
        assert_eq!(sample_lines(&text, "bench_render_total"), size);
        assert_eq!(sample_lines(&openmetrics(), "bench_render_total"), size);
        assert_eq!(sample_lines(&String::from_utf8(prom_render()).unwrap(), "prom_render_total"), size);
        assert_eq!(sample_lines(&pc_render(), "pc_render_total"), size);
        eprintln!("render: {size} series, obs exposition {} bytes (all families of the process)", text.len());
        let n = allocations(|| drop(black_box(obs_runtime::metrics::render())));
        eprintln!("allocations: render_series/{size}/obs_text: {n} per render");
        let n = allocations(|| drop(black_box(pc_render())));
        eprintln!("allocations: render_series/{size}/prometheus_client_encode: {n} per render");

        let mut g = c.benchmark_group(format!("render_series/{size}"));
        g.sample_size(if size > 10_000 { 10 } else { 30 });
        g.bench_function("obs_text", |b| b.iter(obs_runtime::metrics::render));
        g.bench_function("obs_openmetrics", |b| b.iter(openmetrics));
        g.bench_function("prometheus_gather_encode", |b| b.iter(prom_render));
        g.bench_function("prometheus_client_encode", |b| b.iter(pc_render));
        g.finish();
    }
}

fn config() -> Criterion {
    Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = literal_labels, argument_labels, argument_labels_str, timed_group, render_series
}
criterion_main!(benches);
