//! Per-call cost of a span, in one run: a bare call; `#[traced_span]` disabled, sampled out, at
//! ratio 0.1, sampled and exported; `#[tracing::instrument]` through obs's `tracing` bridge
//! (`OBS_TRACING_SPANS`) inside a sampled obs span (exported) and inside an unsampled one; and
//! `#[tracing::instrument]` with tracing-opentelemetry on the OpenTelemetry SDK's batch pipeline
//! (AlwaysOn, ratio 0.1, AlwaysOff). Both pipelines export over OTLP/HTTP to the same receiver on
//! loopback.

#[path = "support/http1.rs"]
mod http1;
#[path = "support/measure.rs"]
mod measure;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use obs_runtime::config::{Config, Sampler};
use obs_runtime::traced_span;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::Sampler as SdkSampler;
use tracing_subscriber::layer::SubscriberExt as _;

#[inline(never)]
fn bare(x: u64) -> u64 {
    black_box(x)
}

#[traced_span("bench.span")]
#[inline(never)]
fn obs_span(x: u64) -> u64 {
    black_box(x)
}

#[tracing::instrument(name = "bench.span", skip_all)]
#[inline(never)]
fn tracing_span(x: u64) -> u64 {
    black_box(x)
}

/// Runs `f` inside an obs span (a root: sampled or not as the sampler says).
#[traced_span("bench.root")]
#[inline(never)]
fn in_root(f: impl FnOnce()) {
    f()
}

fn spans(c: &mut Criterion) {
    let url = http1::otlp_sink();
    let mut g = c.benchmark_group("span");
    g.bench_function("bare_call", |b| b.iter(|| bare(black_box(7))));
    // Before `init`: observability off.
    g.bench_function("obs_disabled", |b| b.iter(|| obs_span(black_box(7))));

    // Ratio 0: every root sampled out, but watched (the default keeps failed or slow roots).
    // No log layer: the subscriber `init` installs holds the bridge alone (for `tracing_span`).
    let bridged: tracing_subscriber::filter::Targets = "tracing=info".parse().unwrap();
    let config = Config::from_vars(|_| None)
        .unwrap()
        .traces_endpoint(url.clone())
        .sampler(Sampler::Ratio(0.0))
        .logs(false)
        .tracing_spans(Some(bridged));
    let guard = obs_runtime::init(config).unwrap();
    g.bench_function("obs_sampled_out", |b| b.iter(|| obs_span(black_box(7))));
    obs_runtime::trace::set_sampler(Sampler::AlwaysOff);
    g.bench_function("obs_sampled_out_unwatched", |b| b.iter(|| obs_span(black_box(7))));
    obs_runtime::trace::set_sampler(Sampler::Ratio(0.1));
    g.bench_function("obs_ratio_0.1", |b| b.iter(|| obs_span(black_box(7))));
    obs_runtime::trace::set_sampler(Sampler::AlwaysOn);
    g.bench_function("obs_sampled_exported", |b| b.iter(|| obs_span(black_box(7))));
    // `#[tracing::instrument]` bridged: inside a sampled obs span, each call one exported span.
    in_root(|| {
        g.bench_function("tracing_bridged_exported", |b| b.iter(|| tracing_span(black_box(7))));
    });
    obs_runtime::trace::set_sampler(Sampler::AlwaysOff);
    in_root(|| {
        g.bench_function("tracing_bridged_unsampled", |b| b.iter(|| tracing_span(black_box(7))));
    });
    obs_runtime::trace::set_enabled(false);

    for (name, sampler) in [
        ("tracing_otel_always_on", SdkSampler::AlwaysOn),
        ("tracing_otel_ratio_0.1", SdkSampler::ParentBased(Box::new(SdkSampler::TraceIdRatioBased(0.1)))),
        ("tracing_otel_always_off", SdkSampler::AlwaysOff),
    ] {
        let provider = measure::sdk_provider(&url, sampler);
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")));
        tracing::subscriber::with_default(subscriber, || {
            g.bench_function(name, |b| b.iter(|| tracing_span(black_box(7))));
        });
        let _ = provider.shutdown();
    }
    g.finish();

    let exported = obs_runtime::testing::value("obs_spans_exported_total", &[]).unwrap_or(0.0);
    let dropped = obs_runtime::testing::value("obs_spans_dropped_total", &[("reason", "queue_full")]).unwrap_or(0.0);
    eprintln!("obs spans exported: {exported}, dropped because the queue was full: {dropped}");
    assert!(exported > 0.0, "the sampled benchmark exported nothing: it measured no real pipeline");
    drop(guard);
}

fn config() -> Criterion {
    Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = spans
}
criterion_main!(benches);
