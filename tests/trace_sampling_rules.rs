//! Sampling rules (`OBS_TRACES_SAMPLING_RULES`), as a service configures them from the
//! environment, checked at an OTLP receiver built from the official proto types: health checks
//! never sampled, every checkout sampled, rules by span name, the rest at the sampler's ratio
//! (0 here); a failed root a rule drops still kept for its error; a caller's sampled trace
//! still followed (parent-based). Both ways of mounting the HTTP layer: around each route (the
//! route known at the start) and around the router (the path matched against the template).

#[path = "support/otlp.rs"]
mod otlp;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use obs_runtime::config::Config;
use obs_runtime::http::ObsLayer;
use obs_runtime::traced_span;
use tower::ServiceExt as _;

#[traced_span("job.important")]
fn important_job() {}

#[traced_span("report.daily")]
fn daily_report() {}

#[traced_span("other.work")]
fn other_work() {}

fn routes() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/events/{event}", get(|| async { "event" }))
        .route("/events/{event}/tiers/{tier}/checkout", post(|| async { "paid" }))
        .route("/fail", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
}

fn request(method: &str, uri: &str) -> Request<Body> {
    Request::builder().method(method).uri(uri).body(Body::empty()).unwrap()
}

#[test]
fn rules_decide_before_the_ratio_and_compose_with_tail_keeping() {
    let (receiver, url) = otlp::Receiver::start();
    let vars: BTreeMap<&str, String> = [
        ("OTEL_TRACES_SAMPLER_ARG", "0".to_owned()),
        (
            "OBS_TRACES_SAMPLING_RULES",
            "route=/healthz never; route=/fail never; method=POST route=/events/{event}/tiers/{tier}/checkout always; \
             name=job.* always; name=report.* never"
                .to_owned(),
        ),
    ]
    .into();
    let config = Config::from_vars(|k| vars.get(k).cloned()).unwrap().traces_endpoint(url);
    let guard = obs_runtime::init(config).unwrap();

    let per_route = routes().layer(ObsLayer::new());
    let around_router = ObsLayer::new().wrap(routes());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for _ in 0..10 {
        for (method, uri) in [
            ("GET", "/healthz"),
            ("GET", "/events/7"),
            ("POST", "/events/7/tiers/2/checkout"),
            ("GET", "/events/7/tiers/2/checkout"),
        ] {
            rt.block_on(per_route.clone().oneshot(request(method, uri))).unwrap();
            rt.block_on(around_router.clone().oneshot(request(method, uri))).unwrap();
        }
        important_job();
        daily_report();
        other_work();
    }
    rt.block_on(per_route.clone().oneshot(request("GET", "/fail"))).unwrap();
    // A caller that sampled its trace: followed, whatever the rules say.
    let caller = Request::get("/healthz")
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .body(Body::empty())
        .unwrap();
    rt.block_on(around_router.clone().oneshot(caller)).unwrap();
    assert!(guard.shutdown());

    let spans = receiver.wait_for(1, Duration::from_secs(10));
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for s in &spans {
        *names.entry(s.name.clone()).or_default() += 1;
    }
    assert_eq!(names.get("POST /events/{event}/tiers/{tier}/checkout"), Some(&20), "every checkout: {names:?}");
    assert_eq!(names.get("job.important"), Some(&10), "{names:?}");
    let healthz: Vec<_> = spans.iter().filter(|s| s.name == "GET /healthz").collect();
    assert_eq!(healthz.len(), 1, "only the caller's sampled trace: {names:?}");
    assert_eq!(hex(&healthz[0].trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    let failed: Vec<_> = spans.iter().filter(|s| s.name == "GET /fail").collect();
    assert_eq!(failed.len(), 1, "a failed root a rule dropped is kept for its error: {names:?}");
    assert_eq!(otlp::string(failed[0], "obs.sampling.kept").as_deref(), Some("error"));
    for dropped in ["report.daily", "other.work", "GET /events/{event}", "GET /events/{event}/tiers/{tier}/checkout"] {
        assert_eq!(names.get(dropped), None, "{dropped}: never, or the ratio 0: {names:?}");
    }
    assert_eq!(spans.len(), 32, "{names:?}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
