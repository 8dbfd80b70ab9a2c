//! Traces the head sampler dropped are kept after all when their root fails or is slow: the root
//! span alone, marked with the reason. Nothing else of a dropped trace is recorded. A kept HTTP
//! server root or task root carries the same attributes as a sampled one.

#[path = "support/otlp.rs"]
mod otlp;

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use obs_runtime::config::{Config, Sampler};
use obs_runtime::task::Task;
use obs_runtime::trace::RemoteContext;
use obs_runtime::traced_span;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use tower::ServiceExt as _;

#[traced_span("request", err)]
fn request(fail: bool, sleep_ms: u64) -> Result<(), String> {
    inner();
    std::thread::sleep(Duration::from_millis(sleep_ms));
    if fail { Err("payment declined".into()) } else { Ok(()) }
}

#[traced_span("inner")]
fn inner() {}

#[traced_span("async.request", err)]
async fn async_request(fail: bool) -> Result<(), String> {
    tokio::task::yield_now().await;
    if fail { Err("async failure".into()) } else { Ok(()) }
}

#[traced_span("panicking.request")]
fn panicking() {
    panic!("boom")
}

#[test]
fn failed_and_slow_roots_of_dropped_traces_are_kept() {
    let (receiver, url) = otlp::Receiver::start();
    let config = Config::from_vars(|_| None)
        .unwrap()
        .traces_endpoint(url)
        .sampler(Sampler::Ratio(0.0))
        .keep_slow_traces(Some(Duration::from_secs(1)));
    let guard = obs_runtime::init(config).unwrap();
    for _ in 0..200 {
        request(false, 0).unwrap();
    }
    for _ in 0..3 {
        request(true, 0).unwrap_err();
    }
    // 1.5 s against a 1 s threshold: no pause of a loaded machine makes a fast root look slow,
    // and a sleep never returns early.
    request(false, 1500).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async_request(true)).unwrap_err();
    rt.block_on(async_request(false)).unwrap();
    assert!(std::panic::catch_unwind(panicking).is_err());
    // An HTTP request answered 503 and a failed task, both roots of dropped traces.
    let app = axum::Router::new()
        .route("/orders/{id}", get(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down") }))
        .route("/orders/{id}/ok", get(|| async { "fine" }))
        .layer(obs_runtime::http::ObsLayer::new());
    for path in ["/orders/7", "/orders/7/ok"] {
        let req = Request::get(path).header("x-request-id", "req-tail").body(Body::empty()).unwrap();
        rt.block_on(app.clone().oneshot(req)).unwrap();
    }
    let origin = RemoteContext::from_headers("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", None).unwrap();
    let task = Task::new("tail_job").id("job-9").queue("mail").retries(2).enqueued_from(origin);
    rt.block_on(task.run(async { Err::<(), _>("smtp refused".to_owned()) })).unwrap_err();
    rt.block_on(Task::new("tail_job").run(async { Ok::<(), String>(()) })).unwrap();
    assert!(guard.shutdown());

    let spans = receiver.wait_for(8, Duration::from_secs(5));
    let attr = |s: &opentelemetry_proto::tonic::trace::v1::Span, key: &str| {
        s.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone()).and_then(|v| v.value)
    };
    let text = |v: &str| Some(Value::StringValue(v.into()));
    let server = spans.iter().find(|s| s.name == "GET /orders/{id}").expect("the failed request's root is kept");
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert_eq!(attr(server, "http.route"), text("/orders/{id}"));
    assert_eq!(attr(server, "http.request.method"), text("GET"));
    assert_eq!(attr(server, "url.path"), text("/orders/7"));
    assert_eq!(attr(server, "http.response.status_code"), Some(Value::IntValue(503)));
    let ids = opentelemetry_proto::tonic::common::v1::ArrayValue {
        values: vec![opentelemetry_proto::tonic::common::v1::AnyValue { value: text("req-tail") }],
    };
    assert_eq!(attr(server, "http.request.header.x-request-id"), Some(Value::ArrayValue(ids)));
    assert_eq!(attr(server, "url.scheme"), text("http"));
    assert_eq!(attr(server, "error.type"), text("503"));
    let task = spans.iter().find(|s| s.name == "task.tail_job").expect("the failed task's root is kept");
    assert_eq!(attr(task, "task.id"), text("job-9"));
    assert_eq!(attr(task, "task.queue"), text("mail"));
    assert_eq!(attr(task, "task.retries"), Some(Value::IntValue(2)));
    assert_eq!(attr(task, "task.status"), text("failure"));
    assert_eq!(task.links.len(), 1, "linked to the request that enqueued it");
    assert_eq!(task.links[0].span_id, vec![0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31]);
    assert!(!spans.iter().any(|s| s.name == "GET /orders/{id}/ok"), "a fast success stays dropped");
    assert_eq!(spans.iter().filter(|s| s.name == "task.tail_job").count(), 1, "the task that succeeded stays dropped");
    let spans: Vec<_> =
        spans.into_iter().filter(|s| !s.name.starts_with("GET ") && !s.name.starts_with("task.")).collect();
    let reason = |s: &opentelemetry_proto::tonic::trace::v1::Span| {
        s.attributes
            .iter()
            .find(|kv| kv.key == "obs.sampling.kept")
            .and_then(|kv| kv.value.clone())
            .and_then(|v| v.value)
    };
    let mut got: Vec<(String, Option<Value>, i32)> =
        spans.iter().map(|s| (s.name.clone(), reason(s), s.status.as_ref().map_or(0, |st| st.code))).collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let err = StatusCode::Error as i32;
    let kept = |r: &str| Some(Value::StringValue(r.into()));
    assert_eq!(
        got,
        [
            ("async.request".into(), kept("error"), err),
            ("panicking.request".into(), kept("error"), err),
            ("request".into(), kept("error"), err),
            ("request".into(), kept("error"), err),
            ("request".into(), kept("error"), err),
            ("request".into(), kept("slow"), 0),
        ]
    );
    let slow = spans.iter().find(|s| reason(s) == kept("slow")).unwrap();
    let took = slow.end_time_unix_nano - slow.start_time_unix_nano;
    assert!(took >= 1_400_000_000, "the kept slow root spans its duration: {took} ns");
    assert!(spans.iter().all(|s| s.parent_span_id.is_empty()), "children of dropped traces are not recorded");
}
