//! Per-call cost of a span, in one run: a bare call; `#[traced_span]` disabled, sampled out, at
//! ratio 0.1, sampled and exported; `#[tracing::instrument]` through obs's `tracing` bridge
//! (`OBS_TRACING_SPANS`) inside a sampled obs span (exported) and inside an unsampled one; and
//! `#[tracing::instrument]` with tracing-opentelemetry on the OpenTelemetry SDK's batch pipeline
//! (AlwaysOn, ratio 0.1, AlwaysOff). Both pipelines export over OTLP/HTTP to the same receiver on
//! loopback.
//!
//! Then the exemplar's cost (group `exemplar`): `#[counted]` and `#[timed]` outside any span,
//! inside an unsampled span (no exemplar) and inside a sampled one (each call keeps its span's
//! ids as the series' exemplar).

#[path = "support/http1.rs"]
mod http1;
#[path = "support/measure.rs"]
mod measure;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use obs_runtime::config::{Config, Sampler, SamplingRule};
use obs_runtime::{counted, timed, traced_span};
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

#[counted(metric = "bench_literal_total", labels(route = "/exemplar", status = "ok"))]
#[inline(never)]
fn counted_call(x: u64) -> u64 {
    black_box(x)
}

#[timed(metric = "bench_duration_seconds", labels(route = "/exemplar"))]
#[inline(never)]
fn timed_call(x: u64) -> u64 {
    black_box(x)
}

/// The OpenMetrics sample lines of `name` with `route="/exemplar"`.
fn exemplar_lines(name: &str) -> Vec<String> {
    obs_runtime::metrics::Format::OpenMetrics
        .render()
        .lines()
        .filter(|l| l.starts_with(name) && l.contains("route=\"/exemplar\""))
        .map(str::to_owned)
        .collect()
}

/// `#[counted]`/`#[timed]` outside any span, in an unsampled span and in a sampled one.
fn exemplars(c: &mut Criterion) {
    let mut g = c.benchmark_group("exemplar");
    g.bench_function("counted_outside_span", |b| b.iter(|| counted_call(black_box(7))));
    g.bench_function("timed_outside_span", |b| b.iter(|| timed_call(black_box(7))));
    obs_runtime::trace::set_sampler(Sampler::AlwaysOff);
    in_root(|| {
        g.bench_function("counted_in_unsampled_span", |b| b.iter(|| counted_call(black_box(7))));
        g.bench_function("timed_in_unsampled_span", |b| b.iter(|| timed_call(black_box(7))));
    });
    let lines = exemplar_lines("bench_");
    // Filtered out (`cargo bench -- 'span/'`): nothing ran, nothing to check.
    if obs_runtime::testing::series_count("bench_literal_total") == 0 {
        return;
    }
    assert!(
        lines.len() > 2 && lines.iter().all(|l| !l.contains(" # {")),
        "an exemplar without a sampled span: {lines:?}"
    );
    obs_runtime::trace::set_sampler(Sampler::AlwaysOn);
    in_root(|| {
        g.bench_function("counted_in_sampled_span", |b| b.iter(|| counted_call(black_box(7))));
        g.bench_function("timed_in_sampled_span", |b| b.iter(|| timed_call(black_box(7))));
    });
    g.finish();
    let counted = exemplar_lines("bench_literal_total");
    assert!(counted[0].contains(" # {trace_id=\""), "no exemplar after the sampled calls: {counted:?}");
    assert_eq!(
        exemplar_lines("bench_duration_seconds_bucket").iter().filter(|l| l.contains(" # {trace_id=")).count(),
        1,
        "the timed calls' exemplar is on the bucket they fell in"
    );
}

fn spans(c: &mut Criterion) {
    eprintln!("CPU: {}", measure::cpu_model());
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
    // The same with sampling rules as Revel's and a name rule that matches no span here: the
    // site's decision is cached, the sampler's ratio applies.
    obs_runtime::trace::set_sampling_rules([
        SamplingRule::route("/healthz").never(),
        SamplingRule::route("/metrics").never(),
        SamplingRule::route("/events/{event}/tiers/{tier}/checkout").method("POST").always(),
        SamplingRule::name("report.*").ratio(0.01),
    ]);
    g.bench_function("obs_sampled_out_with_rules", |b| b.iter(|| obs_span(black_box(7))));
    obs_runtime::trace::set_sampling_rules([]);
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
    g.finish();
    exemplars(c);
    obs_runtime::trace::set_enabled(false);
    let mut g = c.benchmark_group("span");

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
