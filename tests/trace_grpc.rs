//! OTLP over gRPC (feature `grpc`): spans reach a tonic server implementing the official
//! collector service from `opentelemetry-proto`, configured through the standard variables.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use obs_runtime::config::Config;
use obs_runtime::traced_span;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<ExportTraceServiceRequest>>>, Arc<Mutex<Vec<Option<String>>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let tenant = request.metadata().get("x-scope-orgid").and_then(|v| v.to_str().ok()).map(str::to_owned);
        self.1.lock().unwrap().push(tenant);
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[traced_span("stripe.webhook.handle", fields(event_type))]
fn webhook(event_type: &str) -> usize {
    verify(event_type.len())
}

#[traced_span("stripe.signature.verify")]
fn verify(n: usize) -> usize {
    n * 2
}

#[test]
fn spans_reach_a_grpc_collector() {
    // A free port for the collector (its own runtime, on its own thread).
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let collector = Collector::default();
    let server = collector.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(tonic::transport::Server::builder().add_service(TraceServiceServer::new(server)).serve(addr))
            .unwrap();
    });
    let endpoint = format!("http://{addr}");
    let config = Config::from_vars(|name| match name {
        "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("grpc".into()),
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(endpoint.clone()),
        "OTEL_SERVICE_NAME" => Some("revel-grpc".into()),
        "OTEL_EXPORTER_OTLP_HEADERS" => Some("x-scope-orgid=tenant-grpc".into()),
        "OTEL_TRACES_SAMPLER" => Some("always_on".into()),
        "OBS_ENV" => Some("production".into()),
        _ => None,
    })
    .unwrap()
    .logs(false);
    let guard = obs_runtime::init(config).unwrap();

    // The server may still be starting: the first batches can fail, later ones must arrive.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut calls = 0;
    while collector.0.lock().unwrap().is_empty() && Instant::now() < deadline {
        assert_eq!(webhook("checkout.session.completed"), 52);
        calls += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(guard.shutdown(), "flushed within the deadline");
    let requests = collector.0.lock().unwrap();
    assert!(!requests.is_empty(), "nothing arrived over gRPC after {calls} calls");
    let tenants = collector.1.lock().unwrap();
    assert!(tenants.iter().all(|t| t.as_deref() == Some("tenant-grpc")), "OTLP headers as metadata: {tenants:?}");
    let resource = requests[0].resource_spans[0].resource.as_ref().unwrap();
    let service = resource.attributes.iter().find(|kv| kv.key == "service.name").unwrap();
    assert_eq!(service.value.as_ref().unwrap().value, Some(Value::StringValue("revel-grpc".into())));
    let spans: Vec<_> = requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .collect();
    let parent = spans.iter().find(|s| s.name == "stripe.webhook.handle").unwrap();
    let child = spans.iter().find(|s| s.name == "stripe.signature.verify" && s.trace_id == parent.trace_id).unwrap();
    assert_eq!(child.parent_span_id, parent.span_id);
    let event_type = parent.attributes.iter().find(|kv| kv.key == "event_type").unwrap();
    assert_eq!(event_type.value.as_ref().unwrap().value, Some(Value::StringValue("checkout.session.completed".into())));
}
