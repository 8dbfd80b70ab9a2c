//! Per-request cost of obs's outgoing-call middleware, in one run: a keep-alive reqwest client
//! calling an axum server on loopback, both on one current-thread runtime (so that the calling
//! thread does all of the request's work, client and server, and its CPU clock sees it all):
//! - reqwest, bare;
//! - the same client through reqwest-middleware with no middleware (the wrapper's own cost);
//! - with `obs_runtime::client::ClientTelemetry` and its duration histogram, sampled out (ratio 0)
//!   and sampled and exported (AlwaysOn), inside an obs span;
//! - with reqwest-tracing's `TracingMiddleware` (its CLIENT span with the HTTP fields), exported by
//!   tracing-opentelemetry on the OpenTelemetry SDK's batch pipeline (AlwaysOn), inside a
//!   `tracing` span. reqwest-tracing injects `traceparent` only with an `opentelemetry_0_x`
//!   feature, whose newest (0.32) is older than this workspace's OpenTelemetry (0.33): that side
//!   does not inject headers, which makes it slightly cheaper than the same work.
//!
//! Two measures of each: `client_request` is wall-clock time per request; `client_request_cpu`
//! the calling thread's CPU time per request. Both pipelines export over OTLP/HTTP to the same
//! receiver on loopback.

#[path = "support/http1.rs"]
mod http1;
#[path = "support/measure.rs"]
mod measure;
use std::hint::black_box;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use obs_runtime::config::{Config, Sampler};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::Sampler as SdkSampler;
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;

#[obs_runtime::traced_span("bench.call")]
async fn in_obs_span(client: &reqwest_middleware::ClientWithMiddleware, url: &str) -> u16 {
    client.get(url).send().await.unwrap().status().as_u16()
}

fn requests(c: &mut Criterion) {
    eprintln!("CPU: {}", measure::cpu_model());
    let sink = http1::otlp_sink();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let url = rt.block_on(async {
        let app = Router::new().route("/v1/sessions", get(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/sessions?customer=42", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    });
    obs_runtime::metrics::register_catalog(obs_runtime::catalog!());
    let bare = reqwest::Client::new();
    let wrapped = reqwest_middleware::ClientBuilder::new(bare.clone()).build();
    let obs = reqwest_middleware::ClientBuilder::new(bare.clone())
        .with(
            obs_runtime::client::ClientTelemetry::new()
                .duration(obs_runtime::metric_def!("bench_http_client_duration_seconds")),
        )
        .build();
    let traced = reqwest_middleware::ClientBuilder::new(bare.clone())
        .with(reqwest_tracing::TracingMiddleware::<reqwest_tracing::DefaultSpanBackend>::new())
        .build();

    // Each variant, in both measures.
    let both =
        |c: &mut Criterion, name: &str, one: &mut dyn FnMut()| measure::wall_and_cpu(c, "client_request", name, one);
    both(c, "reqwest_bare", &mut || {
        rt.block_on(async { black_box(bare.get(&url).send().await.unwrap().status()) });
    });
    both(c, "reqwest_middleware_empty", &mut || {
        rt.block_on(async { black_box(wrapped.get(&url).send().await.unwrap().status()) });
    });

    let config =
        Config::from_vars(|_| None).unwrap().traces_endpoint(sink.clone()).sampler(Sampler::Ratio(0.0)).logs(false);
    let guard = obs_runtime::init(config).unwrap();
    both(c, "obs_sampled_out", &mut || {
        rt.block_on(async { black_box(in_obs_span(&obs, &url).await) });
    });
    obs_runtime::trace::set_sampler(Sampler::AlwaysOn);
    both(c, "obs_sampled_exported", &mut || {
        rt.block_on(async { black_box(in_obs_span(&obs, &url).await) });
    });
    obs_runtime::trace::set_enabled(false);

    let provider = measure::sdk_provider(&sink, SdkSampler::AlwaysOn);
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")));
    tracing::subscriber::with_default(subscriber, || {
        both(c, "reqwest_tracing_otel_always_on", &mut || {
            rt.block_on(async {
                let call = async { traced.get(&url).send().await.unwrap().status() };
                black_box(call.instrument(tracing::info_span!("bench.call")).await)
            });
        });
    });
    let _ = provider.shutdown();

    let exported = obs_runtime::testing::value("obs_spans_exported_total", &[]).unwrap_or(0.0);
    eprintln!("obs spans exported: {exported}");
    assert!(exported > 0.0, "the sampled benchmark exported nothing: it measured no real pipeline");
    drop(guard);
}

fn config() -> Criterion {
    Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = requests
}
criterion_main!(benches);
