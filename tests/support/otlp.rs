//! A minimal OTLP/HTTP receiver on loopback: decodes each export request with the official
//! `opentelemetry-proto` types and keeps it.

use std::io::{BufReader, Write};

// Included by path, so that the crates that include this file (Revel's tests too) need nothing else.
#[allow(dead_code)]
#[path = "peers.rs"]
mod peers;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

#[derive(Clone, Default)]
pub struct Receiver {
    pub requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    pub paths: Arc<Mutex<Vec<String>>>,
    /// The `x-scope-orgid` header of each request (the tenant of a multi-tenant backend).
    pub tenants: Arc<Mutex<Vec<Option<String>>>>,
}

impl Receiver {
    /// Starts listening; returns the receiver and its `http://127.0.0.1:PORT/v1/traces` URL.
    pub fn start() -> (Receiver, String) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let r = Receiver::default();
        let shared = r.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &shared);
                });
            }
        });
        (r, url)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| r.resource_spans.iter())
            .flat_map(|rs| rs.scope_spans.iter())
            .flat_map(|ss| ss.spans.iter().cloned())
            .collect()
    }

    /// Waits until `n` spans arrived (or the timeout).
    #[allow(dead_code)] // not every test binary waits
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Span> {
        let start = Instant::now();
        loop {
            let spans = self.spans();
            if spans.len() >= n || start.elapsed() > timeout {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn serve(conn: TcpStream, shared: &Receiver) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    while let Some(req) = peers::read_request(&mut reader)? {
        let request = ExportTraceServiceRequest::decode(&req.body[..]).expect("an OTLP ExportTraceServiceRequest");
        shared.requests.lock().unwrap().push(request);
        shared.tenants.lock().unwrap().push(req.header("x-scope-orgid").map(str::to_owned));
        shared.paths.lock().unwrap().push(req.path);
        let reply = ExportTraceServiceResponse::default().encode_to_vec();
        write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
            reply.len()
        )?;
        conn.write_all(&reply)?;
    }
    Ok(())
}

/// A span attribute's value, as decoded.
#[allow(dead_code)] // not every test binary reads attributes
pub fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a opentelemetry_proto::tonic::common::v1::any_value::Value> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

/// A string attribute.
#[allow(dead_code)]
pub fn string(span: &Span, key: &str) -> Option<String> {
    match attr(span, key) {
        Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

/// An integer attribute.
#[allow(dead_code)]
pub fn int(span: &Span, key: &str) -> Option<i64> {
    match attr(span, key) {
        Some(opentelemetry_proto::tonic::common::v1::any_value::Value::IntValue(i)) => Some(*i),
        _ => None,
    }
}
