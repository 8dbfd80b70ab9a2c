//! Contended counters (issue 20, item 5): two threads incrementing one series, and two threads
//! each incrementing its own series of one family, against the `prometheus` crate and
//! OpenTelemetry's bound counter (`opentelemetry` 0.33, `experimental_metrics_bound_instruments`)
//! in the same run.
//!
//! Run with `cargo bench -p obs-benches --bench contended`. Each measurement starts two threads,
//! releases them together and times until both have made `iters` increments: the figure is the
//! time for one increment on each thread at once (lower is better; throughput is 2 / time). The
//! `one_thread` rows make the same increments from one thread, the uncontended reference: a
//! `different_series` row near its `one_thread` row shows no false sharing between series.
//!
//! Before measuring, each variant is checked to count every increment.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use obs_runtime::counted;
use obs_runtime::testing::value;
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider};
use prometheus::{IntCounter, IntCounterVec, Opts};

#[path = "support/measure.rs"]
mod measure;

#[counted(metric = "bench_contended_total", labels(shard = "a"))]
#[inline(never)]
fn obs_a() {}

#[counted(metric = "bench_contended_total", labels(shard = "b"))]
#[inline(never)]
fn obs_b() {}

/// `iters` calls of `a` on one thread and of `b` on another, released together: from the
/// earlier start to the later end, each read on its own thread (so neither the threads' start
/// and exit nor the main thread's scheduling is timed).
fn two_threads(iters: u64, a: &(dyn Fn() + Sync), b: &(dyn Fn() + Sync)) -> Duration {
    let barrier = Barrier::new(2);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let workers: Vec<_> = [a, b]
            .into_iter()
            .map(|f| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        f();
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a worker panicked")).collect()
    });
    let start = spans.iter().map(|s| s.0).min().expect("two workers");
    let end = spans.iter().map(|s| s.1).max().expect("two workers");
    end - start
}

/// The same increments from one thread: `iters` calls of `a` then `iters` of `b`, halved, so
/// that the figure compares with [`two_threads`]'s "one increment on each thread".
fn one_thread(iters: u64, a: &dyn Fn(), b: &dyn Fn()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        a();
    }
    for _ in 0..iters {
        b();
    }
    start.elapsed() / 2
}

/// A `ManualReader` the meter provider owns and the bench still reads.
#[derive(Debug, Clone)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: std::sync::Weak<opentelemetry_sdk::metrics::Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: opentelemetry_sdk::metrics::InstrumentKind) -> opentelemetry_sdk::metrics::Temporality {
        self.0.temporality(kind)
    }
}

/// The sum of the OpenTelemetry counter `name` over its data points, as the reader collects it.
fn otel_sum(reader: &SharedReader, name: &str) -> u64 {
    let mut rm = ResourceMetrics::default();
    reader.collect(&mut rm).expect("collect");
    let mut sum = 0;
    for scope in rm.scope_metrics() {
        for m in scope.metrics().filter(|m| m.name() == name) {
            if let AggregatedMetrics::U64(MetricData::Sum(s)) = m.data() {
                sum += s.data_points().map(|p| p.value()).sum::<u64>();
            }
        }
    }
    sum
}

fn obs_value(shard: &str) -> f64 {
    value("bench_contended_total", &[("shard", shard)]).unwrap_or(0.0)
}

fn contended(c: &mut Criterion) {
    eprintln!(
        "CPU: {}, {} hardware threads",
        measure::cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let vec = IntCounterVec::new(Opts::new("prom_contended_total", "baseline"), &["shard"]).unwrap();
    let (prom_a, prom_b): (IntCounter, IntCounter) = (vec.with_label_values(&["a"]), vec.with_label_values(&["b"]));

    let reader = SharedReader(Arc::new(ManualReader::builder().build()));
    let provider = SdkMeterProvider::builder().with_reader(reader.clone()).build();
    let counter = provider.meter("bench").u64_counter("otel_contended").build();
    let (otel_a, otel_b) = (counter.bind(&[KeyValue::new("shard", "a")]), counter.bind(&[KeyValue::new("shard", "b")]));

    // Every variant counts every increment, from both threads.
    let (before_a, before_b) = (obs_value("a"), obs_value("b"));
    two_threads(1000, &obs_a, &obs_b);
    two_threads(1000, &obs_a, &obs_a);
    assert_eq!((obs_value("a"), obs_value("b")), (before_a + 3000.0, before_b + 1000.0), "obs lost increments");
    two_threads(1000, &|| prom_a.inc(), &|| prom_b.inc());
    two_threads(1000, &|| prom_a.inc(), &|| prom_a.inc());
    assert_eq!((prom_a.get(), prom_b.get()), (3000, 1000), "prometheus lost increments");
    two_threads(1000, &|| otel_a.add(1), &|| otel_b.add(1));
    two_threads(1000, &|| otel_a.add(1), &|| otel_a.add(1));
    let attrs = [KeyValue::new("shard", "a")];
    two_threads(1000, &|| counter.add(1, &attrs), &|| counter.add(1, &attrs));
    assert_eq!(otel_sum(&reader, "otel_contended"), 6000, "the OpenTelemetry counter lost increments");

    let mut g = c.benchmark_group("contended/same_series");
    g.bench_function("obs_counted", |b| b.iter_custom(|n| two_threads(n, &obs_a, &obs_a)));
    g.bench_function("prometheus_int_counter", |b| {
        b.iter_custom(|n| two_threads(n, &|| prom_a.inc(), &|| prom_a.inc()))
    });
    g.bench_function("otel_bound_counter", |b| b.iter_custom(|n| two_threads(n, &|| otel_a.add(1), &|| otel_a.add(1))));
    g.bench_function("otel_counter_add", |b| {
        b.iter_custom(|n| two_threads(n, &|| counter.add(1, black_box(&attrs)), &|| counter.add(1, black_box(&attrs))))
    });
    g.finish();

    let mut g = c.benchmark_group("contended/different_series");
    g.bench_function("obs_counted", |b| b.iter_custom(|n| two_threads(n, &obs_a, &obs_b)));
    g.bench_function("prometheus_int_counter", |b| {
        b.iter_custom(|n| two_threads(n, &|| prom_a.inc(), &|| prom_b.inc()))
    });
    g.bench_function("otel_bound_counter", |b| b.iter_custom(|n| two_threads(n, &|| otel_a.add(1), &|| otel_b.add(1))));
    g.finish();

    let mut g = c.benchmark_group("contended/one_thread");
    g.bench_function("obs_counted", |b| b.iter_custom(|n| one_thread(n, &obs_a, &obs_b)));
    g.bench_function("prometheus_int_counter", |b| {
        b.iter_custom(|n| one_thread(n, &|| prom_a.inc(), &|| prom_b.inc()))
    });
    g.bench_function("otel_bound_counter", |b| b.iter_custom(|n| one_thread(n, &|| otel_a.add(1), &|| otel_b.add(1))));
    g.finish();
}

fn config() -> Criterion {
    Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = contended
}
criterion_main!(benches);
