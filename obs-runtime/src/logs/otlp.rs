//! Log records over OTLP/HTTP (`OTEL_LOGS_EXPORTER=otlp`, [`Config::otlp_logs`]).
//!
//! The request path does what it does for the console: the line is rendered once (scrubbed,
//! with the request's context and the span's ids), then a copy is queued, with the time, for a
//! thread of its own (a lock and a copy; a full queue drops the line and counts it in
//! `obs_log_lines_dropped_total`). That thread turns each line into an OpenTelemetry log
//! record (severity, body, attributes, trace and span ids; the spans' resource), encodes a batch
//! as the official `opentelemetry-proto` `ExportLogsServiceRequest` and posts it. A batch the
//! collector cannot take for now (429, 502, 503, 504, or the network) is sent again after a
//! backoff (doubling from 0.5 s, jittered, or the collector's `Retry-After`), for as long as
//! `OTEL_BLRP_EXPORT_TIMEOUT` (30 s) allows; any other answer, or the end of that time, drops
//! the batch (counted, a warning when failures start and a line when they stop). Records
//! accepted are counted in `obs_log_records_exported_total`. Nothing waits for the collector but
//! that thread; meanwhile the bounded queue drops what does not fit. At shutdown what is queued
//! is sent within the guard's deadline (one attempt per batch); what is left then is counted as
//! dropped.
//!
//! [`Config::otlp_logs`]: crate::config::Config::otlp_logs

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;

use crate::config::OtlpLogs;
use crate::metrics::Series;

struct Exporter {
    settings: OtlpLogs,
    resource: Resource,
    state: Mutex<State>,
    /// A line came in, or shutdown began.
    more: Condvar,
    /// The queue emptied and nothing is being sent.
    idle: Condvar,
    dropped: &'static Series,
    exported: &'static Series,
}

#[derive(Default)]
struct State {
    /// Lines with their time (ns since the Unix epoch).
    queue: VecDeque<(u64, Vec<u8>)>,
    /// Records taken by the thread and not yet sent or dropped.
    sending: usize,
    /// Shutdown began: send what is queued, then stop.
    stopping: bool,
    /// The thread stopped (after shutdown, or it could not start).
    stopped: bool,
}

static EXPORTER: OnceLock<&'static Exporter> = OnceLock::new();

/// Starts the exporter thread (once per process; `init` calls it).
pub(crate) fn start(settings: &OtlpLogs, resource: Resource) {
    let dropped = crate::metrics::registry().family(&crate::metrics::own::LOG_LINES_DROPPED).series_for(&[]);
    let exported = crate::metrics::registry().family(&crate::metrics::own::LOG_RECORDS_EXPORTED).series_for(&[]);
    let exporter: &'static Exporter = Box::leak(Box::new(Exporter {
        settings: settings.clone(),
        resource,
        state: Mutex::new(State::default()),
        more: Condvar::new(),
        idle: Condvar::new(),
        dropped,
        exported,
    }));
    if EXPORTER.set(exporter).is_err() {
        return;
    }
    let spawned = std::thread::Builder::new().name("obs-otlp-logs".into()).spawn(move || exporter.run());
    if spawned.is_err() {
        exporter.lock().stopped = true;
    }
}

/// Queues a rendered line for export, if OTLP logs are on.
#[inline]
pub(crate) fn enqueue(line: &[u8]) {
    if let Some(e) = EXPORTER.get() {
        e.push(line);
    }
}

/// Sends what is queued and stops the thread, within `deadline`; `true` if nothing was left.
/// What could not be sent is counted as dropped.
pub(crate) fn shutdown(deadline: Duration) -> bool {
    let Some(e) = EXPORTER.get() else { return true };
    let end = Instant::now() + deadline;
    let mut st = e.lock();
    st.stopping = true;
    e.more.notify_all();
    loop {
        let drained = st.queue.is_empty() && st.sending == 0;
        let left = end.saturating_duration_since(Instant::now());
        if drained || st.stopped || left.is_zero() {
            // What is still queued now will not be sent: counted.
            let lost = st.queue.len();
            st.queue.clear();
            e.dropped.inc_by_u64(lost as u64);
            return lost == 0 && st.sending == 0;
        }
        st = e.idle.wait_timeout(st, left).unwrap_or_else(|p| p.into_inner()).0;
    }
}

impl Exporter {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, line: &[u8]) {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let mut st = self.lock();
        if st.stopping || st.stopped || st.queue.len() >= self.settings.queue {
            drop(st);
            self.dropped.inc();
            return;
        }
        st.queue.push_back((now, line.to_vec()));
        // The first line starts the schedule delay (an idle thread sleeps without a timeout); a
        // full batch goes at once.
        if st.queue.len() == 1 || st.queue.len() >= self.settings.batch {
            self.more.notify_one();
        }
    }

    /// The thread: a batch when one is full, or when its first record waited the schedule delay.
    fn run(&self) {
        crate::context::exporter_thread();
        let transport = Transport::build(&self.settings);
        let mut failing = false;
        loop {
            let batch = {
                let mut st = self.lock();
                let mut waited_since = None;
                loop {
                    let full = st.queue.len() >= self.settings.batch;
                    let due = waited_since.is_some_and(|t: Instant| t.elapsed() >= self.settings.delay);
                    if !st.queue.is_empty() && (full || due || st.stopping) {
                        break;
                    }
                    if st.stopping {
                        st.stopped = true;
                        self.idle.notify_all();
                        return;
                    }
                    if st.queue.is_empty() {
                        waited_since = None;
                        st = self.more.wait(st).unwrap_or_else(|p| p.into_inner());
                    } else {
                        let since = *waited_since.get_or_insert_with(Instant::now);
                        let left = self.settings.delay.saturating_sub(since.elapsed());
                        st = self.more.wait_timeout(st, left).unwrap_or_else(|p| p.into_inner()).0;
                    }
                }
                let n = st.queue.len().min(self.settings.batch);
                st.sending = n;
                st.queue.drain(..n).collect::<Vec<_>>()
            };
            let n = batch.len() as u64;
            let result = match &transport {
                Ok(transport) => self.send(transport, batch),
                Err(e) => Err(e.clone()),
            };
            if result.is_ok() {
                self.exported.inc_by_u64(n);
            }
            match result {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(target: "obs", endpoint = %self.settings.endpoint, "log records are exported again");
                }
                Ok(()) => {}
                Err(error) => {
                    self.dropped.inc_by_u64(n);
                    if !failing {
                        failing = true;
                        tracing::warn!(
                            target: "obs",
                            endpoint = %self.settings.endpoint,
                            %error,
                            "log records cannot be exported; they are dropped and counted in obs_log_lines_dropped_total \
                             until the collector answers"
                        );
                    }
                }
            }
            let mut st = self.lock();
            st.sending = 0;
            if st.queue.is_empty() {
                self.idle.notify_all();
            }
        }
    }

    /// Sends a batch, again after a backoff while the collector cannot take it for now, within
    /// the export budget (one attempt once shutdown began).
    fn send(&self, transport: &Transport, batch: Vec<(u64, Vec<u8>)>) -> Result<(), String> {
        let records = batch.iter().map(|(time, line)| record(*time, line)).collect();
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(self.resource.clone()),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "obs".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    log_records: records,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        // Over HTTP, encoded once: a retry sends the same bytes.
        let mut body: Option<bytes::Bytes> = None;
        let started = Instant::now();
        let mut failures = 0;
        loop {
            let outcome = match transport {
                Transport::Http(client) => {
                    self.post(client, body.get_or_insert_with(|| request.encode_to_vec().into()).clone())
                }
                #[cfg(feature = "grpc")]
                Transport::Grpc(grpc) => grpc.export(&request),
            };
            let (error, retry_after) = match outcome {
                Ok(()) => return Ok(()),
                Err(Attempt::Final(e)) => return Err(e),
                Err(Attempt::Retry(e, retry_after)) => (e, retry_after),
            };
            // The span exporter's backoff: doubling from 0.5 s, jittered, at least the
            // collector's `Retry-After` (at most 5 min).
            failures += 1;
            let wait = crate::trace::export::backoff(failures, retry_after);
            if started.elapsed() + wait > self.settings.budget || !self.sleep(wait) {
                return Err(error);
            }
        }
    }

    /// One attempt.
    fn post(&self, client: &reqwest::blocking::Client, body: bytes::Bytes) -> Result<(), Attempt> {
        let mut post = client.post(&self.settings.endpoint).header("content-type", "application/x-protobuf").body(body);
        for (name, value) in &self.settings.headers {
            post = post.header(name.as_str(), value.0.as_str());
        }
        let response = match post.send() {
            Ok(r) => r,
            // A timeout or a connection that failed: the collector may be back soon.
            Err(e) if e.is_timeout() || e.is_connect() || e.is_request() => {
                return Err(Attempt::Retry(e.to_string(), None));
            }
            Err(e) => return Err(Attempt::Final(e.to_string())),
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let error = format!("HTTP {}", status.as_u16());
        if crate::trace::export::retryable_status(status.as_u16()) {
            Err(Attempt::Retry(error, crate::trace::export::retry_after(response.headers())))
        } else {
            Err(Attempt::Final(error))
        }
    }

    /// Waits `d` unless shutdown begins first (`false` then: no more attempts).
    fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        let mut st = self.lock();
        loop {
            if st.stopping {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            st = self.more.wait_timeout(st, until - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// A failed attempt: worth another after a backoff (with the collector's `Retry-After`), or not.
enum Attempt {
    Retry(String, Option<Duration>),
    Final(String),
}

/// How batches travel: OTLP/HTTP with the blocking client, or OTLP/gRPC (feature `grpc`).
enum Transport {
    Http(reqwest::blocking::Client),
    #[cfg(feature = "grpc")]
    Grpc(Box<Grpc>),
}

impl Transport {
    fn build(settings: &OtlpLogs) -> Result<Transport, String> {
        #[cfg(feature = "grpc")]
        if settings.grpc {
            return Grpc::build(settings).map(|g| Transport::Grpc(Box::new(g)));
        }
        reqwest::blocking::Client::builder()
            .timeout(settings.timeout)
            .build()
            .map(Transport::Http)
            .map_err(|e| format!("cannot build the HTTP client: {e}"))
    }
}

/// The official `LogsService` client (`opentelemetry-proto`'s generated tonic stub) on a
/// current-thread runtime of its own, on the exporter thread: the application's runtime is never
/// used. The channel is the span exporter's kind (`grpc_channel`: keepalive, reconnects after a
/// silent connection).
#[cfg(feature = "grpc")]
struct Grpc {
    runtime: tokio::runtime::Runtime,
    client: opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient<
        tonic::transport::Channel,
    >,
    metadata: tonic::metadata::MetadataMap,
    timeout: Duration,
}

#[cfg(feature = "grpc")]
impl Grpc {
    fn build(settings: &OtlpLogs) -> Result<Grpc, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the gRPC log exporter's runtime: {e}"))?;
        let _entered = runtime.enter();
        let timeout = settings.timeout;
        let channel = crate::trace::export::grpc_channel(&settings.endpoint, timeout)?;
        let mut metadata = tonic::metadata::MetadataMap::new();
        for (name, value) in &settings.headers {
            let key = tonic::metadata::MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|e| format!("OTLP header {name:?}: {e}"))?;
            let value = value.0.parse().map_err(|e| format!("OTLP header {name:?}: {e}"))?;
            metadata.insert(key, value);
        }
        let client =
            opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient::new(channel);
        drop(_entered);
        Ok(Grpc { runtime, client, metadata, timeout })
    }

    /// One attempt; OTLP's retryable codes are retried.
    fn export(&self, request: &ExportLogsServiceRequest) -> Result<(), Attempt> {
        let mut call = tonic::Request::new(request.clone());
        *call.metadata_mut() = self.metadata.clone();
        call.set_timeout(self.timeout);
        let mut client = self.client.clone();
        match self.runtime.block_on(client.export(call)) {
            Ok(_) => Ok(()),
            Err(status) => {
                use tonic::Code;
                let error = format!("gRPC {:?}: {}", status.code(), status.message());
                match status.code() {
                    Code::Cancelled
                    | Code::DeadlineExceeded
                    | Code::ResourceExhausted
                    | Code::Aborted
                    | Code::OutOfRange
                    | Code::Unavailable
                    | Code::DataLoss => Err(Attempt::Retry(error, None)),
                    _ => Err(Attempt::Final(error)),
                }
            }
        }
    }
}

/// The log record of a rendered line: the JSON line's `level`, `message`, `trace_id` and
/// `span_id` as the record's severity, body and ids, `timestamp` dropped (the record's time
/// says it), every other field an attribute. A line that is not JSON (the pretty format) is
/// the body as it is.
fn record(time_unix_nano: u64, line: &[u8]) -> LogRecord {
    let text = |s: String| Some(AnyValue { value: Some(any_value::Value::StringValue(s)) });
    let mut record = LogRecord { time_unix_nano, observed_time_unix_nano: time_unix_nano, ..Default::default() };
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice::<serde_json::Value>(line) else {
        record.body = text(String::from_utf8_lossy(line).trim_end().to_owned());
        return record;
    };
    for (key, value) in fields {
        match (key.as_str(), value) {
            ("timestamp", _) => {}
            ("level", serde_json::Value::String(level)) => {
                record.severity_number = severity(&level);
                record.severity_text = level;
            }
            ("message", serde_json::Value::String(message)) => record.body = text(message),
            ("trace_id", serde_json::Value::String(id)) => record.trace_id = unhex(&id).unwrap_or_default(),
            ("span_id", serde_json::Value::String(id)) => {
                record.span_id = unhex(&id).unwrap_or_default();
                record.flags = 1;
            }
            (_, value) => {
                if let Some(value) = any(value) {
                    record.attributes.push(KeyValue { key, value: Some(value), ..Default::default() });
                }
            }
        }
    }
    record
}

/// OpenTelemetry's severity numbers for `tracing`'s levels.
fn severity(level: &str) -> i32 {
    match level {
        "TRACE" => 1,
        "DEBUG" => 5,
        "INFO" => 9,
        "WARN" => 13,
        "ERROR" => 17,
        _ => 0,
    }
}

fn any(value: serde_json::Value) -> Option<AnyValue> {
    use any_value::Value as V;
    let value = match value {
        serde_json::Value::Null => return None,
        serde_json::Value::Bool(b) => V::BoolValue(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => V::IntValue(i),
            None => V::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => V::StringValue(s),
        other => V::StringValue(other.to_string()),
    };
    Some(AnyValue { value: Some(value) })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// The spans' resource, as the proto types carry it.
pub(crate) fn resource(r: &opentelemetry_sdk::Resource) -> Resource {
    let attributes = r
        .iter()
        .map(|(k, v)| {
            let value = match v {
                opentelemetry::Value::Bool(b) => any_value::Value::BoolValue(*b),
                opentelemetry::Value::I64(i) => any_value::Value::IntValue(*i),
                opentelemetry::Value::F64(f) => any_value::Value::DoubleValue(*f),
                other => any_value::Value::StringValue(other.to_string()),
            };
            KeyValue { key: k.to_string(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
        })
        .collect();
    Resource { attributes, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_becomes_a_record() {
        let line = br#"{"timestamp":"2026-12-04T22:00:00.000001Z","level":"WARN","target":"revel::api","message":"paid [EMAIL]","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","status":500,"ratio":0.5,"ok":false,"nested":{"a":1},"none":null}"#;
        let r = record(7, line);
        assert_eq!((r.time_unix_nano, r.severity_number, r.severity_text.as_str()), (7, 13, "WARN"));
        assert_eq!(r.body.unwrap().value, Some(any_value::Value::StringValue("paid [EMAIL]".into())));
        assert_eq!(r.trace_id, unhex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap());
        assert_eq!(r.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        let attr = |k: &str| r.attributes.iter().find(|kv| kv.key == k).and_then(|kv| kv.value.clone()?.value);
        assert_eq!(attr("target"), Some(any_value::Value::StringValue("revel::api".into())));
        assert_eq!(attr("status"), Some(any_value::Value::IntValue(500)));
        assert_eq!(attr("ratio"), Some(any_value::Value::DoubleValue(0.5)));
        assert_eq!(attr("ok"), Some(any_value::Value::BoolValue(false)));
        assert_eq!(attr("nested"), Some(any_value::Value::StringValue(r#"{"a":1}"#.into())));
        assert_eq!(attr("none"), None);
        assert_eq!(attr("timestamp"), None, "the record's time says it");
        let pretty = record(1, b"2026-12-04 INFO revel: started\n");
        assert_eq!(
            pretty.body.unwrap().value,
            Some(any_value::Value::StringValue("2026-12-04 INFO revel: started".into()))
        );
        assert_eq!(unhex("0g"), None);
    }
}
