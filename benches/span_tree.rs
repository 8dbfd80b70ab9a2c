//! Spans at fastrace's cost (issue 20, item 2): fastrace's own comparison shape, one root span
//! with N = 1, 10, 100 and 1,000 children, every span sampled and reported, in one run:
//! - obs: `#[traced_span]` root and children, exported over OTLP/HTTP to a sink on loopback;
//! - fastrace 0.7: `Span::root` + `LocalSpan::enter_with_local_parent`, reported to a reporter
//!   that drops them (fastrace's own benchmark does the same);
//! - tracing + tracing-opentelemetry on the OpenTelemetry SDK's batch pipeline (AlwaysOn), the
//!   same sink.
//!
//! The figure is the caller's time for the whole tree; the report divides it by the spans in it
//! (N + 1). Export happens on background threads in all three, drained after each size.
//!
//! `cargo bench -p obs-benches --bench span_tree`

#[path = "support/http1.rs"]
mod http1;
#[path = "support/measure.rs"]
mod measure;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use obs_runtime::config::{Config, Sampler};
use obs_runtime::traced_span;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::Sampler as SdkSampler;
use tracing_subscriber::layer::SubscriberExt as _;

#[traced_span("child")]
#[inline(never)]
fn obs_child() {
    black_box(());
}

#[traced_span("parent")]
#[inline(never)]
fn obs_tree(n: usize) {
    for _ in 0..n {
        obs_child();
    }
}

#[inline(never)]
fn fastrace_tree(n: usize) {
    use fastrace::prelude::*;
    let root = Span::root("parent", SpanContext::random());
    let _g = root.set_local_parent();
    for _ in 0..n {
        let _child = LocalSpan::enter_with_local_parent("child");
        black_box(());
    }
}

#[inline(never)]
fn tracing_tree(n: usize) {
    let root = tracing::info_span!("parent");
    let _g = root.enter();
    for _ in 0..n {
        let _child = tracing::info_span!("child").entered();
        black_box(());
    }
}

/// Drops what fastrace reports, counting it (the bench checks fastrace did record).
struct DropReporter;

static FASTRACE_REPORTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl fastrace::collector::Reporter for DropReporter {
    fn report(&mut self, spans: Vec<fastrace::prelude::SpanRecord>) {
        FASTRACE_REPORTED.fetch_add(spans.len(), std::sync::atomic::Ordering::Relaxed);
    }
}

const SIZES: [usize; 4] = [1, 10, 100, 1000];

/// Spans exported or dropped so far.
fn obs_handled() -> f64 {
    obs_runtime::testing::value("obs_spans_exported_total", &[]).unwrap_or(0.0)
        + obs_runtime::testing::value("obs_spans_dropped_total", &[("reason", "queue_full")]).unwrap_or(0.0)
}

/// Waits until obs's exporter thread is idle (its counts stop moving).
fn obs_quiet() {
    let mut last = obs_handled();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = obs_handled();
        if now == last {
            return;
        }
        last = now;
    }
}

fn span_tree(c: &mut Criterion) {
    eprintln!("CPU: {}", measure::cpu_model());
    let url = http1::otlp_sink();
    // A queue that holds the largest tree many times over: the bench measures recording, and
    // reports how many spans the exporter thread could not keep up with.
    let config = Config::from_vars(|_| None)
        .unwrap()
        .traces_endpoint(url.clone())
        .sampler(Sampler::AlwaysOn)
        .queue_capacity(1 << 16)
        .logs(false);
    let guard = obs_runtime::init(config).unwrap();
    fastrace::set_reporter(DropReporter, fastrace::collector::Config::default());
    let provider = measure::sdk_provider(&url, SdkSampler::AlwaysOn);
    let otel = tracing::Dispatch::new(
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench"))),
    );

    // One implementation at a time, each given an idle machine: the others' background export
    // is drained first (on two cores it would otherwise take CPU from the next one measured).
    let mut g = c.benchmark_group("span_tree");
    for n in SIZES {
        g.throughput(Throughput::Elements(n as u64 + 1));
        g.bench_with_input(BenchmarkId::new("fastrace", n), &n, |b, &n| b.iter(|| fastrace_tree(n)));
        fastrace::flush();
    }
    tracing::dispatcher::with_default(&otel, || {
        for n in SIZES {
            g.throughput(Throughput::Elements(n as u64 + 1));
            g.bench_with_input(BenchmarkId::new("tracing_opentelemetry", n), &n, |b, &n| b.iter(|| tracing_tree(n)));
            let _ = provider.force_flush();
        }
    });
    for n in SIZES {
        g.throughput(Throughput::Elements(n as u64 + 1));
        g.bench_with_input(BenchmarkId::new("obs", n), &n, |b, &n| b.iter(|| obs_tree(n)));
        obs_quiet();
    }
    g.finish();
    fastrace::flush();
    let _ = provider.shutdown();
    let exported = obs_runtime::testing::value("obs_spans_exported_total", &[]).unwrap_or(0.0);
    let dropped = obs_runtime::testing::value("obs_spans_dropped_total", &[("reason", "queue_full")]).unwrap_or(0.0);
    eprintln!("obs spans exported: {exported}, dropped because the queue was full: {dropped}");
    assert!(exported > 0.0, "obs exported nothing: the bench measured no real pipeline");
    let reported = FASTRACE_REPORTED.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("fastrace spans reported: {reported}");
    assert!(reported > 0, "fastrace reported nothing: the bench measured no real recording");
    drop(guard);
}

fn config() -> Criterion {
    Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = span_tree
}
criterion_main!(benches);
