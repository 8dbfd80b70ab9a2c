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
struct Collector(
    Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    Arc<Mutex<Vec<Option<String>>>>,
    /// Each request's metadata.
    Arc<Mutex<Vec<tonic::metadata::MetadataMap>>>,
);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let tenant = request.metadata().get("x-scope-orgid").and_then(|v| v.to_str().ok()).map(str::to_owned);
        self.1.lock().unwrap().push(tenant);
        self.2.lock().unwrap().push(request.metadata().clone());
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
    let collector = Collector::default();
    let addr = serve(collector.clone());
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

    // The server may still be starting: the first batches can fail, later ones must arrive (the
    // bound is for a loaded machine; it ends as soon as one arrives).
    let deadline = Instant::now() + Duration::from_secs(30);
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

/// A collector on a runtime of its own; its address.
fn serve<T: TraceService>(collector: T) -> std::net::SocketAddr {
    // A free port for the collector (its own runtime, on its own thread).
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(tonic::transport::Server::builder().add_service(TraceServiceServer::new(collector)).serve(addr))
            .unwrap();
    });
    addr
}

/// A TCP proxy that can freeze the connections open at a moment: they stay open, take what the
/// client sends and pass nothing on, either way (a collector, or a proxy, gone silent). Later
/// connections pass.
struct Proxy {
    addr: std::net::SocketAddr,
    connections: Arc<std::sync::atomic::AtomicU64>,
    frozen_below: Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    fn start(target: std::net::SocketAddr) -> Proxy {
        use std::sync::atomic::{AtomicU64, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (connections, frozen_below) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (count, frozen) = (connections.clone(), frozen_below.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let id = count.fetch_add(1, Ordering::SeqCst);
                let Ok(upstream) = std::net::TcpStream::connect(target) else { continue };
                for (mut from, mut to) in
                    [(client.try_clone().unwrap(), upstream.try_clone().unwrap()), (upstream, client)]
                {
                    let frozen = frozen.clone();
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            // Frozen: swallowed (the socket stays open, nothing comes back).
                            if id < frozen.load(Ordering::SeqCst) {
                                continue;
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        Proxy { addr, connections, frozen_below }
    }

    fn freeze_open_connections(&self) {
        use std::sync::atomic::Ordering;
        self.frozen_below.store(self.connections.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

fn fault_service(endpoint: &str, vars: &[(&str, &str)]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_obs-fault-service"));
    cmd.env_clear()
        .env("OBS_ENV", "production")
        .env("OTEL_TRACES_SAMPLER", "always_on")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "1000")
        .env("OBS_PROFILING", "false");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

/// A connection that goes silent is abandoned (HTTP/2 keepalive, export deadline) and the next
/// export connects again; headers are sent once each, over gRPC as over HTTP, with the export
/// deadline as `grpc-timeout`; every span is accounted for.
#[test]
fn grpc_recovers_from_a_silent_connection() {
    let collector = Collector::default();
    let proxy = Proxy::start(serve(collector.clone()));
    let dir = std::env::temp_dir().join(format!("obs-grpc-silent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (report, stop) = (dir.join("report.json"), dir.join("stop"));
    let child = fault_service(
        &format!("http://{}", proxy.addr),
        &[
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-scope-orgid=first,x-scope-orgid=tenant-b"),
            ("FAULT_ROUNDS", "100000"),
            ("FAULT_PAUSE_MS", "100"),
            ("FAULT_STOP_FILE", stop.to_str().unwrap()),
            ("FAULT_REPORT", report.to_str().unwrap()),
        ],
    )
    .stdout(std::process::Stdio::null())
    .spawn()
    .unwrap();
    // Killed if the test fails before it asks the service to stop.
    struct KillOnDrop(Option<std::process::Child>);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            if let Some(mut c) = self.0.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let mut child = KillOnDrop(Some(child));
    let arrived = || collector.0.lock().unwrap().len();
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait("no export arrived", &|| arrived() > 0);
    proxy.freeze_open_connections();
    let frozen = proxy.frozen_below.load(std::sync::atomic::Ordering::SeqCst);
    let frozen_at = Instant::now();
    // Exports on the silent connection time out; the keepalive ping goes unanswered and the
    // connection is dropped; the next export connects again. (A request already past the proxy
    // when it froze may still reach the collector: only a new connection shows recovery.)
    wait("no new connection after the connection went silent", &|| {
        proxy.connections.load(std::sync::atomic::Ordering::SeqCst) > frozen
    });
    let reconnected = arrived();
    wait("no export through the new connection", &|| arrived() > reconnected);
    let recovered_in = frozen_at.elapsed();
    std::fs::write(&stop, b"").unwrap();
    assert!(child.0.take().unwrap().wait().unwrap().success());
    eprintln!("recovered {recovered_in:?} after the connection went silent");

    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let dropped: u64 = report["dropped"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(report["produced"].as_u64().unwrap(), report["exported"].as_u64().unwrap() + dropped, "{report}");
    let received: usize = collector
        .0
        .lock()
        .unwrap()
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    // What obs counted as exported arrived; a batch given up on (on the silent connection: a
    // deadline, or the connection closed under it) may have arrived too: the collector got it,
    // the answer was lost.
    let exported = report["exported"].as_u64().unwrap();
    let given_up = report["dropped"]["timeout"].as_u64().unwrap() + report["dropped"]["unavailable"].as_u64().unwrap();
    assert!((exported..=exported + given_up).contains(&(received as u64)), "{received} received: {report}");
    for metadata in collector.2.lock().unwrap().iter() {
        let tenants: Vec<_> =
            metadata.get_all("x-scope-orgid").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        assert_eq!(tenants, ["tenant-b"], "one value, the last one, as over HTTP");
        assert!(metadata.get("grpc-timeout").is_some(), "the export deadline is sent: {metadata:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// In development (DEBUG logs), the exporter's own gRPC traffic (tonic and h2 reconnecting to a
/// collector that is not there) stays out of the service's logs; obs's warning says what failed.
#[test]
fn the_exporters_own_traffic_stays_out_of_the_logs() {
    let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir = std::env::temp_dir().join(format!("obs-grpc-quiet-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("report.json");
    let out = fault_service(
        &format!("http://{refused}"),
        &[("OBS_ENV", "development"), ("FAULT_ROUNDS", "10"), ("FAULT_REPORT", report.to_str().unwrap())],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let foreign: Vec<_> = lines.iter().filter(|l| !l["target"].as_str().unwrap_or("").starts_with("obs")).collect();
    assert!(foreign.is_empty(), "lines of the exporter's libraries: {foreign:#?}");
    assert!(lines.iter().any(|l| l["level"] == "WARN" && l["reason"].is_string()), "obs's own warning: {lines:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A collector that answers every export UNAVAILABLE.
#[derive(Clone, Default)]
struct Unavailable(Arc<std::sync::atomic::AtomicU64>);

#[tonic::async_trait]
impl TraceService for Unavailable {
    async fn export(
        &self,
        _request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err(tonic::Status::unavailable("overloaded"))
    }
}

/// At shutdown each queued batch gets one attempt over gRPC too (the SDK's retries would sleep
/// past the deadline): the last pass ends in time, and every span is counted by its real reason.
#[test]
fn grpc_shutdown_makes_one_attempt_per_batch() {
    let collector = Unavailable::default();
    let addr = serve(collector.clone());
    let dir = std::env::temp_dir().join(format!("obs-grpc-unavailable-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("report.json");
    // Enough spans to fill the queue (4096): eight batches wait at shutdown.
    let vars = [("FAULT_ROUNDS", "10"), ("FAULT_PER_ROUND", "2000"), ("FAULT_REPORT", report.to_str().unwrap())];
    let out = fault_service(&format!("http://{addr}"), &vars).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert!(collector.0.load(std::sync::atomic::Ordering::SeqCst) > 0);
    assert_eq!(report["flushed"], true, "the last pass ended within the deadline: {report}");
    assert_eq!(report["dropped"]["shutdown"], 0, "{report}");
    let dropped: u64 = report["dropped"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(report["produced"].as_u64().unwrap(), dropped, "{report}");
    assert!(report["dropped"]["unavailable"].as_u64().unwrap() > 0, "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}
