//! Development without a collector: spans go, as OTLP JSON lines, to a local file; `init` says that
//! development defaults apply when `OBS_ENV` is not set.

#[path = "support/capture.rs"]
mod capture;

use obs_runtime::config::Config;
use obs_runtime::traced_span;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

#[traced_span("ticket.checkout", fields(tier_id = tier, note = "quote \" and\nnewline"), err)]
fn checkout(tier: u64) -> Result<u64, String> {
    lock(tier);
    if tier == 0 { Err("sold out".into()) } else { Ok(tier) }
}

#[traced_span("ticket.lock_tier")]
fn lock(tier: u64) -> u64 {
    tier
}

#[test]
fn spans_land_in_a_json_lines_file() {
    let path = std::env::temp_dir().join(format!("obs-spans-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let logs = capture::Captured::default();
    let config = Config::from_vars(|_| None).unwrap().spans_file(&path).log_writer(logs.writer());
    let guard = obs_runtime::init(config).unwrap();
    let first = logs.text().lines().next().map(str::to_owned).unwrap_or_default();
    assert!(
        first.contains(r#""level":"INFO""#)
            && first.contains("OBS_ENV is not set: development defaults")
            && first.contains(r#""sampling_ratio":1.0"#),
        "{first}"
    );
    checkout(4).unwrap();
    checkout(0).unwrap_err();
    assert!(guard.shutdown());
    let text = std::fs::read_to_string(&path).unwrap();
    // OTLP JSON, one ExportTraceServiceRequest per line (the Collector's file exporter format),
    // read back with the official types.
    let requests: Vec<ExportTraceServiceRequest> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert!(!requests.is_empty());
    let resource = requests[0].resource_spans[0].resource.as_ref().unwrap();
    let service = resource.attributes.iter().find(|kv| kv.key == "service.name").unwrap();
    assert!(format!("{:?}", service.value).contains("StringValue"), "{service:?}");
    let scope = requests[0].resource_spans[0].scope_spans[0].scope.as_ref().unwrap();
    assert_eq!(scope.name, "obs");
    let spans: Vec<&Span> =
        requests.iter().flat_map(|r| &r.resource_spans).flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).collect();
    assert_eq!(spans.len(), 4, "{text}");
    let attr = |s: &Span, k: &str| s.attributes.iter().find(|kv| kv.key == k).and_then(|kv| kv.value.clone()?.value);
    let failed = spans
        .iter()
        .find(|s| s.name == "ticket.checkout" && attr(s, "tier_id") == Some(AnyValue::IntValue(0)))
        .unwrap();
    let status = failed.status.as_ref().unwrap();
    assert_eq!((status.code, status.message.as_str()), (StatusCode::Error as i32, "sold out"));
    assert_eq!(failed.events[0].name, "exception");
    assert_eq!(attr(failed, "note"), Some(AnyValue::StringValue("quote \" and\nnewline".into())));
    assert_eq!(failed.kind, SpanKind::Internal as i32);
    let child = spans.iter().find(|s| s.name == "ticket.lock_tier" && s.trace_id == failed.trace_id).unwrap();
    assert_eq!(child.parent_span_id, failed.span_id);
    assert_eq!((failed.trace_id.len(), failed.span_id.len()), (16, 8));
    assert!(failed.parent_span_id.is_empty(), "a root has no parent (not sixteen zeros)");
    assert!(failed.end_time_unix_nano >= failed.start_time_unix_nano && failed.start_time_unix_nano > 0);
    // The wire form of OTLP JSON: ids in hex, 64-bit times as strings, enums as numbers.
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let span = &first["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(span["traceId"].as_str().map(str::len), Some(32), "{span}");
    assert!(span["startTimeUnixNano"].is_string(), "{span}");
    assert!(span["kind"].is_number(), "{span}");
    let _ = std::fs::remove_file(&path);
}
