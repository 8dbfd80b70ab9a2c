//! The HTTP layer's added latency per request, in one run: the same axum app without any layer,
//! with `ObsLayer` (request id, server span, context, metrics, access log to a sink), and with
//! tower-http's `TraceLayer` + `SetRequestId`/`PropagateRequestId` layers (what a user would
//! otherwise reach for), on an in-process `oneshot` per request.

use std::hint::black_box;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderName, Request};
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use obs_runtime::config::{Config, Sampler};
use obs_runtime::http::ObsLayer;
use tower::ServiceExt as _;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

fn routes() -> Router {
    Router::new().route("/events/{id}", get(|| async { "ok" }))
}

fn request() -> Request<Body> {
    Request::get("/events/42").header("user-agent", "bench/1.0").body(Body::empty()).unwrap()
}

fn http_layer(c: &mut Criterion) {
    // Spans sampled at 10 % (the production default) and exported to nowhere that answers; log
    // lines (access log) go to a sink.
    // Production profile: INFO logs (tower-http's DEBUG events are filtered, the access line is
    // written), 10 % sampling.
    let config = Config::from_vars(|v| (v == "OBS_ENV").then(|| "production".into()))
        .unwrap()
        .traces_endpoint("http://127.0.0.1:9/v1/traces")
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
        .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid));

    let mut g = c.benchmark_group("http_request");
    g.bench_function("bare", |b| b.iter(|| rt.block_on(bare.clone().oneshot(request())).unwrap()));
    g.bench_function("obs_layer", |b| b.iter(|| rt.block_on(obs.clone().oneshot(request())).unwrap()));
    g.bench_function("obs_layer_no_access_log", |b| b.iter(|| rt.block_on(quiet.clone().oneshot(request())).unwrap()));
    g.bench_function("tower_http_trace_and_request_id", |b| {
        b.iter(|| rt.block_on(tower_http.clone().oneshot(request())).unwrap())
    });
    g.finish();
}

criterion_group!(benches, http_layer);
criterion_main!(benches);
