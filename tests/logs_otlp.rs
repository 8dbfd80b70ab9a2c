//! Log records over OTLP/HTTP (`OTEL_LOGS_EXPORTER=otlp`), as a service configures them from the
//! environment, checked at a receiver that decodes each request with the official
//! `opentelemetry-proto` types: severity, body and attributes scrubbed as on the console, the
//! span's trace and span ids, the spans' resource, the tenant header; `console` off means
//! nothing on the console. Then the collector refuses for a moment: the batch is sent again
//! and nothing is lost; then it refuses for good: lines are dropped and counted once the export
//! budget is spent, and logging goes on.

use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use obs_runtime::config::Config;
use obs_runtime::traced_span;
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message as _;

type Received = Arc<Mutex<Vec<(String, Option<String>, ExportLogsServiceRequest)>>>;

/// A receiver answering 200 to every `POST`, keeping (path, tenant, decoded request); while
/// `refuse` is above 0 it answers 503 instead and counts it down (`usize::MAX`: for good).
fn receiver() -> (Received, String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received: Received = Arc::default();
    let refuse = Arc::new(AtomicUsize::new(0));
    let (shared, refusing) = (received.clone(), refuse.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (shared, refusing) = (shared.clone(), refusing.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                while let Ok(Some(req)) = obs_tests::peers::read_request(&mut reader) {
                    let left = refusing.load(Ordering::SeqCst);
                    if left > 0 {
                        if left != usize::MAX {
                            refusing.fetch_sub(1, Ordering::SeqCst);
                        }
                        let _ = write!(conn, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
                        continue;
                    }
                    let request = ExportLogsServiceRequest::decode(&req.body[..]).expect("an ExportLogsServiceRequest");
                    let tenant = req.header("x-scope-orgid").map(str::to_owned);
                    shared.lock().unwrap().push((req.path.clone(), tenant, request));
                    let reply = ExportLogsServiceResponse::default().encode_to_vec();
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
                        reply.len()
                    );
                    let _ = conn.write_all(&reply);
                }
            });
        }
    });
    (received, url, refuse)
}

fn records(received: &Received) -> Vec<LogRecord> {
    received
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(_, _, r)| r.resource_logs.iter())
        .flat_map(|r| r.scope_logs.iter())
        .flat_map(|s| s.log_records.iter().cloned())
        .collect()
}

fn text(record: &LogRecord) -> String {
    match record.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn attr(record: &LogRecord, key: &str) -> Option<Value> {
    record.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone()?.value)
}

#[traced_span("checkout")]
fn checkout(buyer: &str) {
    tracing::warn!(buyer, order = 42, "payment declined for {buyer}");
}

#[test]
fn log_records_reach_the_collector_scrubbed_with_their_span() {
    let (received, url, refuse) = receiver();
    let console = Arc::new(Mutex::new(Vec::<u8>::new()));
    let vars = |k: &str| match k {
        "OTEL_LOGS_EXPORTER" => Some("otlp".to_owned()),
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(url.clone()),
        "OTEL_EXPORTER_OTLP_LOGS_HEADERS" => Some("x-scope-orgid=team-a".to_owned()),
        "OTEL_BLRP_SCHEDULE_DELAY" => Some("50".to_owned()),
        "OTEL_BLRP_MAX_QUEUE_SIZE" => Some("100".to_owned()),
        // Room for two retries (0.5 s and 1 s at most); retries give up after 5 s when the
        // collector refuses for good.
        "OTEL_BLRP_EXPORT_TIMEOUT" => Some("5000".to_owned()),
        "OTEL_SERVICE_NAME" => Some("shop".to_owned()),
        _ => None,
    };
    let sink = console.clone();
    let config = Config::from_vars(vars)
        .unwrap()
        .spans_file(std::env::temp_dir().join(format!("obs-logs-otlp-{}.jsonl", std::process::id())))
        .log_writer(move |line| sink.lock().unwrap().extend_from_slice(line));
    let guard = obs_runtime::init(config).unwrap();

    checkout("ana@example.org");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !records(&received).iter().any(|r| text(r).starts_with("payment declined")) {
        assert!(std::time::Instant::now() < deadline, "no record reached the collector");
        std::thread::sleep(Duration::from_millis(20));
    }
    let all = records(&received);
    let declined = all.iter().find(|r| text(r).starts_with("payment declined")).unwrap();
    assert_eq!(text(declined), "payment declined for [EMAIL]", "the body scrubbed as on the console");
    assert_eq!((declined.severity_number, declined.severity_text.as_str()), (13, "WARN"));
    assert_eq!(attr(declined, "buyer"), Some(Value::StringValue("[EMAIL]".into())));
    assert_eq!(attr(declined, "order"), Some(Value::IntValue(42)));
    assert_eq!((declined.trace_id.len(), declined.span_id.len()), (16, 8), "the span's ids");
    assert!(declined.time_unix_nano > 1_600_000_000_000_000_000);
    // Cloned: a guard bound here would hold the receiver's lock to the end of the test.
    let (path, tenant, request) = received.lock().unwrap()[0].clone();
    assert_eq!(path, "/v1/logs");
    assert_eq!(tenant.as_deref(), Some("team-a"));
    let resource = request.resource_logs[0].resource.as_ref().unwrap();
    assert!(
        resource.attributes.iter().any(|kv| kv.key == "service.name"
            && kv.value.as_ref().and_then(|v| v.value.clone()) == Some(Value::StringValue("shop".into()))),
        "{resource:?}"
    );
    assert!(console.lock().unwrap().is_empty(), "OTEL_LOGS_EXPORTER=otlp: nothing on the console");

    // A lone line, once the exporter is idle: sent after the schedule delay, not held until a
    // batch fills.
    tracing::info!("a lone line");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !records(&received).iter().any(|r| text(r) == "a lone line") {
        assert!(std::time::Instant::now() < deadline, "a lone line waits for a full batch");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Every record the collector took is counted as exported.
    let exported = || obs_runtime::testing::value("obs_log_records_exported_total", &[]).unwrap_or(0.0);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while exported() != records(&received).len() as f64 {
        assert!(
            std::time::Instant::now() < deadline,
            "exported {} for {} received",
            exported(),
            records(&received).len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The collector refuses twice (503), then takes the batch: sent again, nothing dropped.
    let dropped = || obs_runtime::testing::value("obs_log_lines_dropped_total", &[]).unwrap_or(0.0);
    let before = dropped();
    refuse.store(2, Ordering::SeqCst);
    tracing::info!("a line the collector refuses twice");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !records(&received).iter().any(|r| text(r) == "a line the collector refuses twice") {
        assert!(std::time::Instant::now() < deadline, "the refused batch was not sent again");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(refuse.load(Ordering::SeqCst), 0, "two refusals, then the third attempt");
    assert_eq!(dropped(), before, "nothing dropped");

    // The collector refuses for good: each line is dropped and counted, and logging goes on.
    refuse.store(usize::MAX, Ordering::SeqCst);
    let before = dropped();
    for i in 0..500 {
        tracing::info!(i, "while the collector refuses");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while dropped() < before + 500.0 {
        assert!(std::time::Instant::now() < deadline, "dropped {} of 500", dropped() - before);
        std::thread::sleep(Duration::from_millis(20));
    }
    let (trace_id, span_id) = (declined.trace_id.clone(), declined.span_id.clone());
    guard.shutdown();
    // The record's ids are those of the span it was written in, as exported.
    let spans_file = std::env::temp_dir().join(format!("obs-logs-otlp-{}.jsonl", std::process::id()));
    let text = std::fs::read_to_string(&spans_file).unwrap();
    let _ = std::fs::remove_file(&spans_file);
    let spans: Vec<opentelemetry_proto::tonic::trace::v1::Span> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>(l)
                .unwrap()
        })
        .flat_map(|r| r.resource_spans)
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect();
    let span = spans.iter().find(|s| s.name == "checkout").expect("the checkout span");
    assert_eq!((&span.trace_id, &span.span_id), (&trace_id, &span_id));
}
