//! Traces the head sampler dropped are kept after all when their root fails or is slow: the root
//! span alone, marked with the reason. Nothing else of a dropped trace is recorded.

#[path = "support/otlp.rs"]
mod otlp;

use std::time::Duration;

use obs_runtime::config::{Config, Sampler};
use obs_runtime::traced_span;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

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
    assert!(guard.shutdown());

    let spans = receiver.wait_for(6, Duration::from_secs(5));
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
