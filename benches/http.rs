//! The HTTP layer's added latency per request, in one run, on an in-process `oneshot` per
//! request: the same axum app
//! - without any layer;
//! - with `ObsLayer` (request id, server span sampled at 10 % and exported, request context,
//!   request metrics, access line to a sink), and without its access line;
//! - with tower-http's `TraceLayer` + `SetRequestId`/`PropagateRequestId` as they come: their span
//!   and events are at DEBUG, so under the production INFO filter they record nothing (no span,
//!   no line, no metric: not the same work);
//! - with the same outcome as `ObsLayer` wired by hand from the crates a user would pick: that
//!   `TraceLayer` at INFO (server span and a line per response), tracing-subscriber's JSON lines
//!   to a sink, tracing-opentelemetry on the SDK's batch pipeline (parent-based 10 % ratio), and
//!   a prometheus counter and histogram per method, route and status through `with_label_values`.
//!
//! Both pipelines export over OTLP/HTTP to the same receiver on loopback.
//!
//! Then (group `http_request_profiled`) the cost of profile labels on a sampled request: every
//! request sampled, before any profile was taken, and after one (labels on: each poll runs under
//! the endpoint's frame; span ids, which need continuous profiling, stay off here).

#[path = "support/http1.rs"]
mod http1;
#[path = "support/measure.rs"]
mod measure;
use std::hint::black_box;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request as AxumRequest, State};
use axum::http::{HeaderName, Request};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use obs_runtime::config::{Config, Sampler};
use obs_runtime::http::ObsLayer;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::Sampler as SdkSampler;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use tower::ServiceExt as _;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;

fn routes() -> Router {
    Router::new().route("/events/{id}", get(|| async { "ok" }))
}

fn request() -> Request<Body> {
    Request::get("/events/42").header("user-agent", "bench/1.0").body(Body::empty()).unwrap()
}

fn http_layer(c: &mut Criterion) {
    eprintln!("CPU: {}", measure::cpu_model());
    // Spans sampled at 10 % (the production default) and exported to nowhere that answers; log
    // lines (access log) go to a sink.
    // Production profile: INFO logs (tower-http's DEBUG events are filtered, the access line is
    // written), 10 % sampling.
    let url = http1::otlp_sink();
    let config = Config::from_vars(|v| (v == "OBS_ENV").then(|| "production".into()))
        .unwrap()
        .traces_endpoint(url.clone())
        .sampler(Sampler::Ratio(0.1))
        .log_writer(|line| {
            black_box(line.len());
        });
    let _guard = obs_runtime::init(config).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let bare = routes();
    let obs = routes().layer(ObsLayer::new().request_metrics(
        obs_runtime::metric_def!("bench_http_requests_total"),
        obs_runtime::metric_def!("bench_http_request_duration_seconds"),
    ));
    let quiet = routes().layer(ObsLayer::new().access_log(false).request_metrics(
        obs_runtime::metric_def!("bench_http_requests_total"),
        obs_runtime::metric_def!("bench_http_request_duration_seconds"),
    ));
    let x_request_id = HeaderName::from_static("x-request-id");
    let tower_http = routes()
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestIdLayer::new(x_request_id.clone(), MakeRequestUuid));
    let metrics = HandMetrics::new();
    let by_hand = routes()
        .route_layer(from_fn_with_state(metrics.clone(), HandMetrics::record))
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(tracing::Level::INFO))
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid));
    let sampler = SdkSampler::ParentBased(Box::new(SdkSampler::TraceIdRatioBased(0.1)));
    let provider = measure::sdk_provider(&url, sampler);
    let hand_subscriber = || {
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().json().with_writer(std::io::sink))
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")))
            .with(LevelFilter::INFO)
    };

    let mut g = c.benchmark_group("http_request");
    g.bench_function("bare", |b| b.iter(|| rt.block_on(bare.clone().oneshot(request())).unwrap()));
    g.bench_function("obs_layer", |b| b.iter(|| rt.block_on(obs.clone().oneshot(request())).unwrap()));
    g.bench_function("obs_layer_no_access_log", |b| b.iter(|| rt.block_on(quiet.clone().oneshot(request())).unwrap()));
    g.bench_function("tower_http_trace_and_request_id", |b| {
        b.iter(|| rt.block_on(tower_http.clone().oneshot(request())).unwrap())
    });
    // The runtime polls on this thread, so the thread's default subscriber is the one in use.
    tracing::subscriber::with_default(hand_subscriber(), || {
        g.bench_function("by_hand_tower_http_tracing_otel_prometheus", |b| {
            b.iter(|| rt.block_on(by_hand.clone().oneshot(request())).unwrap())
        });
    });
    g.finish();
    let _ = provider.shutdown();

    // Every request sampled: first with profiling never used in the process, then after a
    // profile was taken (labels stay on; the sampler itself is idle again).
    obs_runtime::trace::set_sampler(Sampler::AlwaysOn);
    let mut g = c.benchmark_group("http_request_profiled");
    g.bench_function("sampled_no_profiling_yet", |b| b.iter(|| rt.block_on(quiet.clone().oneshot(request())).unwrap()));
    let profile =
        obs_runtime::profile::take(obs_runtime::profile::ProfileRequest::new(std::time::Duration::from_secs(1)))
            .expect("a profile");
    assert!(profile.samples() < u64::MAX);
    // Requests bound after the profile get their endpoint's slot.
    let labelled = routes().layer(ObsLayer::new().access_log(false).request_metrics(
        obs_runtime::metric_def!("bench_http_requests_total"),
        obs_runtime::metric_def!("bench_http_request_duration_seconds"),
    ));
    g.bench_function("sampled_profile_labels", |b| {
        b.iter(|| rt.block_on(labelled.clone().oneshot(request())).unwrap())
    });
    g.finish();
    let counted = metrics.requests.with_label_values(&["GET", "/events/{id}", "200"]).get();
    assert!(counted > 0, "the hand-wired metrics recorded nothing: the comparison measured no real work");
}

/// Request metrics the way a user of the `prometheus` crate writes them: a counter and a
/// histogram, labelled per method, route template and status.
#[derive(Clone)]
struct HandMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HandMetrics {
    fn new() -> Self {
        let registry = prometheus::Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("hand_http_requests_total", "HTTP requests."),
            &["method", "endpoint", "status_code"],
        )
        .unwrap();
        let duration = HistogramVec::new(
            HistogramOpts::new("hand_http_request_duration_seconds", "HTTP request duration.")
                .buckets(vec![0.001, 0.01, 0.1, 1.0]),
            &["method", "endpoint"],
        )
        .unwrap();
        registry.register(Box::new(requests.clone())).unwrap();
        registry.register(Box::new(duration.clone())).unwrap();
        HandMetrics { requests, duration }
    }

    async fn record(State(m): State<HandMetrics>, path: MatchedPath, req: AxumRequest, next: Next) -> Response {
        let start = Instant::now();
        let method = req.method().clone();
        let response = next.run(req).await;
        let status = response.status();
        m.requests.with_label_values(&[method.as_str(), path.as_str(), status.as_str()]).inc();
        m.duration.with_label_values(&[method.as_str(), path.as_str()]).observe(start.elapsed().as_secs_f64());
        response
    }
}

criterion_group!(benches, http_layer);
criterion_main!(benches);
