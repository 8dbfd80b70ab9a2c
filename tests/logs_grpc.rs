//! Log records over OTLP/gRPC (feature `grpc`, `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`): they reach a
//! tonic server implementing the official `LogsService` from `opentelemetry-proto`, scrubbed as on
//! the console, with the export headers as metadata and the spans' resource; a collector that
//! answers `UNAVAILABLE` twice gets the batch at the third attempt, nothing dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use obs_runtime::config::Config;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::logs::v1::LogRecord;

/// Each request with its `x-scope-orgid` metadata.
type Requests = Arc<Mutex<Vec<(Option<String>, ExportLogsServiceRequest)>>>;

#[derive(Clone, Default)]
struct Collector {
    requests: Requests,
    /// Calls still to refuse with `UNAVAILABLE`.
    refuse: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl LogsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        if self.refuse.load(Ordering::SeqCst) > 0 {
            self.refuse.fetch_sub(1, Ordering::SeqCst);
            return Err(tonic::Status::unavailable("restarting"));
        }
        let tenant = request.metadata().get("x-scope-orgid").and_then(|v| v.to_str().ok()).map(str::to_owned);
        self.requests.lock().unwrap().push((tenant, request.into_inner()));
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

impl Collector {
    fn records(&self) -> Vec<LogRecord> {
        let requests = self.requests.lock().unwrap().clone();
        requests
            .into_iter()
            .flat_map(|(_, r)| r.resource_logs)
            .flat_map(|r| r.scope_logs)
            .flat_map(|s| s.log_records)
            .collect()
    }

    fn wait_for(&self, body: &str) -> LogRecord {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(r) = self.records().into_iter().find(|r| text(r) == body) {
                return r;
            }
            assert!(Instant::now() < deadline, "no record {body:?} reached the collector");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn text(record: &LogRecord) -> String {
    match record.body.as_ref().and_then(|b| b.value.clone()) {
        Some(Value::StringValue(s)) => s,
        other => format!("{other:?}"),
    }
}

fn serve(collector: Collector) -> std::net::SocketAddr {
    // A free port for the collector (its own runtime, on its own thread), as `trace_grpc` does.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(tonic::transport::Server::builder().add_service(LogsServiceServer::new(collector)).serve(addr))
            .unwrap();
    });
    addr
}

#[test]
fn log_records_reach_a_grpc_collector() {
    let collector = Collector::default();
    let addr = serve(collector.clone());
    let endpoint = format!("http://{addr}");
    let config = Config::from_vars(|name| match name {
        "OTEL_LOGS_EXPORTER" => Some("otlp".into()),
        "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("grpc".into()),
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(endpoint.clone()),
        "OTEL_EXPORTER_OTLP_LOGS_HEADERS" => Some("x-scope-orgid=team-grpc".into()),
        "OTEL_BLRP_SCHEDULE_DELAY" => Some("50".into()),
        "OTEL_TRACES_EXPORTER" => Some("none".into()),
        "OTEL_SERVICE_NAME" => Some("shop-grpc".into()),
        "OBS_ENV" => Some("production".into()),
        _ => None,
    })
    .unwrap();
    let guard = obs_runtime::init(config).unwrap();

    tracing::warn!(buyer = "ana@example.org", order = 42, "payment declined for ana@example.org");
    let declined = collector.wait_for("payment declined for [EMAIL]");
    assert_eq!((declined.severity_number, declined.severity_text.as_str()), (13, "WARN"));
    let buyer = declined.attributes.iter().find(|kv| kv.key == "buyer").and_then(|kv| kv.value.clone()?.value);
    assert_eq!(buyer, Some(Value::StringValue("[EMAIL]".into())));
    let (tenant, request) = collector.requests.lock().unwrap()[0].clone();
    assert_eq!(tenant.as_deref(), Some("team-grpc"), "the export headers as metadata");
    let resource = request.resource_logs[0].resource.clone().unwrap();
    assert!(
        resource.attributes.iter().any(|kv| kv.key == "service.name"
            && kv.value.as_ref().and_then(|v| v.value.clone()) == Some(Value::StringValue("shop-grpc".into()))),
        "{resource:?}"
    );

    // UNAVAILABLE twice, then accepted: sent again, nothing dropped, every record counted.
    let dropped = || obs_runtime::testing::value("obs_log_lines_dropped_total", &[]).unwrap_or(0.0);
    let before = dropped();
    collector.refuse.store(2, Ordering::SeqCst);
    tracing::info!("after a collector restart");
    collector.wait_for("after a collector restart");
    assert_eq!(collector.refuse.load(Ordering::SeqCst), 0, "two refusals, then the third attempt");
    assert_eq!(dropped(), before);
    let exported = || obs_runtime::testing::value("obs_log_records_exported_total", &[]).unwrap_or(0.0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while exported() != collector.records().len() as f64 {
        assert!(Instant::now() < deadline, "exported {} for {} received", exported(), collector.records().len());
        std::thread::sleep(Duration::from_millis(20));
    }
    guard.shutdown();
}
