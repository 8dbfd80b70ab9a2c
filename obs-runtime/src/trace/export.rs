//! The bounded queue of finished spans and the thread that exports them.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_queue::ArrayQueue;
use opentelemetry::InstrumentationScope;
use opentelemetry::trace::{Event, SpanContext, SpanId, SpanKind, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};

use super::Recording;
use crate::config::Config;
use crate::metrics::{MetricDef, MetricKind, Series};

pub(crate) static DROPPED_DEF: MetricDef = MetricDef {
    name: "obs_spans_dropped_total",
    help: "Finished spans not exported. reason: queue_full (the export queue was full) | export_failed (the backend refused or was unreachable).",
    kind: MetricKind::Counter,
    labels: &["reason"],
    buckets: &[],
    series_cap: 0,
};

pub(crate) static EXPORTED_DEF: MetricDef = MetricDef {
    name: "obs_spans_exported_total",
    help: "Spans the backend accepted.",
    kind: MetricKind::Counter,
    labels: &[],
    buckets: &[],
    series_cap: 0,
};

/// How many spans go in one export request.
const BATCH: usize = 512;
/// How often the exporter looks at the queue when nobody wakes it, while spans come in; once a
/// wake finds the queue empty, it sleeps until the next span.
const INTERVAL: Duration = Duration::from_millis(200);

pub(crate) struct Pipeline {
    queue: ArrayQueue<(Recording, Instant)>,
    /// Wake the exporter early once this many spans wait.
    wake_at: usize,
    exporter: Thread,
    /// The exporter sleeps without a timeout: the next span wakes it.
    idle: AtomicBool,
    shutdown: AtomicBool,
    done: Mutex<Option<mpsc::Receiver<()>>>,
    dropped_full: &'static Series,
}

static PIPELINE: OnceLock<Pipeline> = OnceLock::new();

pub(crate) fn pipeline() -> Option<&'static Pipeline> {
    PIPELINE.get()
}

/// Queues a finished span; never blocks: a full queue drops it and counts the drop.
#[inline]
pub(crate) fn submit(r: Recording) {
    let Some(p) = PIPELINE.get() else { return };
    match p.queue.push((r, Instant::now())) {
        Ok(()) => {
            // Pairs with the fence the exporter runs between raising `idle` and its last look at
            // the queue: either it sees this span, or this sees `idle`.
            fence(Ordering::SeqCst);
            if p.queue.len() >= p.wake_at || (p.idle.load(Ordering::Relaxed) && p.idle.swap(false, Ordering::Relaxed)) {
                p.exporter.unpark();
            }
        }
        Err(_) => p.dropped_full.inc(),
    }
}

/// Why `init` failed.
#[derive(Debug)]
pub enum InitError {
    /// `init` already ran in this process.
    AlreadyInitialized,
    /// The exporter could not be built.
    Exporter(String),
    /// Another global `tracing` subscriber is installed: add [`LogLayer`](crate::logs::LogLayer)
    /// to it and turn [`Config::logs`](crate::config::Config::logs) off.
    SubscriberAlreadySet,
}

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InitError::AlreadyInitialized => f.write_str("obs is already initialised in this process"),
            InitError::Exporter(e) => write!(f, "cannot build the OTLP span exporter: {e}"),
            InitError::SubscriberAlreadySet => f.write_str(
                "a global tracing subscriber is already installed: add obs_runtime::logs::LogLayer to it and \
                 call Config::logs(false)",
            ),
        }
    }
}

impl std::error::Error for InitError {}

impl Pipeline {
    pub(crate) fn install(config: &Config) -> Result<(), InitError> {
        if PIPELINE.get().is_some() {
            return Err(InitError::AlreadyInitialized);
        }
        let endpoint = config.traces_endpoint.clone();
        let headers: Vec<(String, String)> =
            config.otlp_headers.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect();
        let spans_file = match &config.spans_file {
            Some(path) => Some(
                SpansFile::open(path.clone(), SPANS_FILE_MAX)
                    .map_err(|e| InitError::Exporter(format!("cannot open the spans file {}: {e}", path.display())))?,
            ),
            None => None,
        };
        let timeout = config.export_timeout;
        let protocol = config.protocol;
        let resource = resource(config);
        let registry = crate::metrics::registry();
        let dropped = registry.family(&DROPPED_DEF);
        let dropped_full = dropped.series_for(&["queue_full"]);
        let dropped_failed = dropped.series_for(&["export_failed"]);
        let exported = registry.family(&EXPORTED_DEF).series_for(&[]);
        let (built_tx, built_rx) = mpsc::channel::<Result<(), String>>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("obs-span-exporter".into())
            .spawn(move || {
                // Built on this thread: the blocking HTTP client must not live inside the
                // application's async runtime.
                let mut exporter = match endpoint {
                    Some(url) => match Exporter::build(url, protocol, timeout, &headers) {
                        Ok(e) => Some(e),
                        Err(e) => {
                            let _ = built_tx.send(Err(e));
                            return;
                        }
                    },
                    None => None,
                };
                if let Some(e) = &mut exporter {
                    e.otlp.set_resource(&resource);
                }
                let _ = built_tx.send(Ok(()));
                let p = loop {
                    if let Some(p) = PIPELINE.get() {
                        break p;
                    }
                    std::thread::park_timeout(Duration::from_millis(1));
                };
                let scope = InstrumentationScope::builder("obs").with_version(env!("CARGO_PKG_VERSION")).build();
                let mut spans_file = spans_file;
                let mut was_empty = false;
                loop {
                    if was_empty {
                        // Nothing came in for a whole interval: sleep until a span (or shutdown)
                        // comes, instead of waking 5 times a second in an idle service.
                        p.idle.store(true, Ordering::Relaxed);
                        fence(Ordering::SeqCst);
                        if p.queue.is_empty() && !p.shutdown.load(Ordering::Acquire) {
                            std::thread::park();
                        }
                        p.idle.store(false, Ordering::Relaxed);
                    } else {
                        std::thread::park_timeout(INTERVAL);
                    }
                    was_empty = p.queue.is_empty();
                    // Re-anchored on each wake, so a suspend or a clock step skews one batch at most.
                    let anchor = (SystemTime::now(), Instant::now());
                    let stopping = p.shutdown.load(Ordering::Acquire);
                    let mut batch = Vec::new();
                    while let Some((r, end)) = p.queue.pop() {
                        batch.push(span_data(r, end, anchor, &scope));
                        if batch.len() == BATCH {
                            send(&exporter, &mut spans_file, std::mem::take(&mut batch), exported, dropped_failed);
                        }
                    }
                    if !batch.is_empty() {
                        send(&exporter, &mut spans_file, batch, exported, dropped_failed);
                    }
                    if stopping {
                        if let Some(e) = &exporter {
                            e.shutdown(timeout);
                        }
                        let _ = done_tx.send(());
                        return;
                    }
                }
            })
            .map_err(|e| InitError::Exporter(format!("cannot start the exporter thread: {e}")))?;
        match built_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(InitError::Exporter(e)),
            Err(_) => return Err(InitError::Exporter("the exporter thread stopped".into())),
        }
        let pipeline = Pipeline {
            queue: ArrayQueue::new(config.queue_capacity),
            wake_at: (config.queue_capacity / 2).clamp(1, BATCH),
            exporter: handle.thread().clone(),
            idle: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            done: Mutex::new(Some(done_rx)),
            dropped_full,
        };
        PIPELINE.set(pipeline).map_err(|_| InitError::AlreadyInitialized)?;
        handle.thread().unpark();
        Ok(())
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    /// Exports what is queued and stops the exporter; returns within `deadline` whatever the
    /// backend does.
    pub(crate) fn shutdown(&self, deadline: Duration) -> bool {
        self.shutdown.store(true, Ordering::Release);
        self.exporter.unpark();
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner()).take();
        done.is_some_and(|rx| rx.recv_timeout(deadline).is_ok())
    }
}

/// The OTLP exporter, and for gRPC the runtime tonic needs (a single-threaded one, on the
/// exporter thread: the application's runtime is never used, nor required).
struct Exporter {
    otlp: opentelemetry_otlp::SpanExporter,
    #[cfg(feature = "grpc")]
    runtime: Option<tokio::runtime::Runtime>,
}

impl Exporter {
    fn build(
        url: String,
        protocol: crate::config::Protocol,
        timeout: Duration,
        headers: &[(String, String)],
    ) -> Result<Exporter, String> {
        use opentelemetry_otlp::WithExportConfig as _;
        // No retries: they would sleep on the one exporter thread while the queue fills; a
        // failed batch is counted and the next one tried.
        let no_retries = opentelemetry_otlp::RetryPolicy::disabled();
        // Set with `Config::traces_endpoint` (the environment is checked earlier): without a TLS
        // client every export would fail.
        if !url.starts_with("http://") {
            return Err(format!(
                "the OTLP endpoint {url:?} is not http://: obs exports without TLS (send to a local collector \
                 that forwards over TLS)"
            ));
        }
        match protocol {
            crate::config::Protocol::HttpProtobuf => {
                use opentelemetry_otlp::WithHttpConfig as _;
                let otlp = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_endpoint(url)
                    // The SDK percent-decodes these values again: keep a `%` a `%`.
                    .with_headers(headers.iter().map(|(k, v)| (k.clone(), v.replace('%', "%25"))).collect())
                    .with_timeout(timeout)
                    .with_retry_policy(no_retries)
                    .build()
                    .map_err(|e| e.to_string())?;
                Ok(Exporter {
                    otlp,
                    #[cfg(feature = "grpc")]
                    runtime: None,
                })
            }
            #[cfg(feature = "grpc")]
            crate::config::Protocol::Grpc => {
                use opentelemetry_otlp::WithTonicConfig as _;
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start the gRPC exporter's runtime: {e}"))?;
                let _entered = runtime.enter();
                let otlp = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(url)
                    .with_metadata(metadata(headers)?)
                    .with_timeout(timeout)
                    .with_retry_policy(no_retries)
                    .build()
                    .map_err(|e| e.to_string())?;
                drop(_entered);
                Ok(Exporter { otlp, runtime: Some(runtime) })
            }
        }
    }

    fn export(&self, batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        #[cfg(feature = "grpc")]
        if let Some(rt) = &self.runtime {
            return rt.block_on(self.otlp.export(batch));
        }
        // The blocking HTTP client completes the request inside the first poll.
        futures_executor::block_on(self.otlp.export(batch))
    }

    fn shutdown(&self, timeout: Duration) {
        #[cfg(feature = "grpc")]
        let _entered = self.runtime.as_ref().map(|rt| rt.enter());
        let _ = self.otlp.shutdown_with_timeout(timeout);
    }
}

/// The export headers as gRPC metadata.
#[cfg(feature = "grpc")]
fn metadata(headers: &[(String, String)]) -> Result<opentelemetry_otlp::tonic_types::metadata::MetadataMap, String> {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("OTLP header {k:?}: {e}"))?;
        let value = http::HeaderValue::from_str(v).map_err(|e| format!("OTLP header {k:?}: {e}"))?;
        map.append(name, value);
    }
    Ok(opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(map))
}

/// A spans file grows to this size, then moves to `<name>.1` (replacing it) and starts again:
/// a development process left running never fills the disk (at most twice this).
const SPANS_FILE_MAX: u64 = 64 << 20;

/// The spans file of development (no collector): JSON lines, rotated at a size.
struct SpansFile {
    path: std::path::PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    size: u64,
    max: u64,
}

impl SpansFile {
    fn open(path: std::path::PathBuf, max: u64) -> std::io::Result<SpansFile> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(SpansFile { path, out: std::io::BufWriter::new(file), size, max })
    }

    fn write(&mut self, batch: &[SpanData]) -> std::io::Result<()> {
        use std::io::Write as _;
        for s in batch {
            let line = json_line(s);
            self.out.write_all(line.as_bytes())?;
            self.out.write_all(b"\n")?;
            self.size += line.len() as u64 + 1;
        }
        self.out.flush()?;
        if self.size >= self.max {
            self.rotate();
        }
        Ok(())
    }

    /// Moves the file to `<name>.1` and starts a new one. If that fails, writing goes on in the
    /// file as it was (put back if it was moved), and the next attempt comes at the next
    /// `max` bytes, not at every batch.
    fn rotate(&mut self) {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        let rotated =
            std::fs::rename(&self.path, &old).and_then(|()| match SpansFile::open(self.path.clone(), self.max) {
                Ok(new) => {
                    *self = new;
                    Ok(())
                }
                Err(e) => {
                    let _ = std::fs::rename(&old, &self.path);
                    Err(e)
                }
            });
        if let Err(error) = rotated {
            self.size = 0;
            tracing::warn!(target: "obs", %error, path = %self.path.display(), "cannot rotate the spans file: it keeps growing");
        }
    }
}

fn send(
    exporter: &Option<Exporter>,
    file: &mut Option<SpansFile>,
    batch: Vec<SpanData>,
    exported: &'static Series,
    failed: &'static Series,
) {
    let n = batch.len() as u64;
    if let Some(f) = file {
        match f.write(&batch) {
            Ok(()) => exported.inc_by_u64(n),
            Err(err) => {
                failed.inc_by_u64(n);
                tracing::debug!(%err, "cannot write spans to the spans file");
            }
        }
        return;
    }
    let Some(e) = exporter else { return };
    // Failures are counted every time and logged when they start (a warning, at most once a
    // minute, so that a flapping backend does not flood the logs) and when they end.
    static FAILING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    static LAST_WARNING: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    static FAILED_BATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    use std::sync::atomic::Ordering::Relaxed;
    match e.export(batch) {
        Ok(()) => {
            exported.inc_by_u64(n);
            if FAILING.swap(false, Relaxed) {
                let batches = FAILED_BATCHES.swap(0, Relaxed);
                tracing::info!(target: "obs", failed_batches = batches, "span export works again");
            }
        }
        Err(err) => {
            failed.inc_by_u64(n);
            FAILED_BATCHES.fetch_add(1, Relaxed);
            let started = !FAILING.swap(true, Relaxed);
            let mut last = LAST_WARNING.lock().unwrap_or_else(|p| p.into_inner());
            let quiet = last.is_some_and(|t| t.elapsed() < Duration::from_secs(60));
            if started && !quiet {
                *last = Some(std::time::Instant::now());
                tracing::warn!(target: "obs", %err, spans = n, "span export failed; spans are dropped (obs_spans_dropped_total) until the backend answers");
            } else {
                tracing::debug!(target: "obs", %err, spans = n, "span export failed");
            }
        }
    }
}

fn resource(config: &Config) -> Resource {
    use opentelemetry::KeyValue;
    let mut attrs: Vec<KeyValue> =
        config.resource_attributes.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())).collect();
    attrs.push(KeyValue::new("deployment.environment", config.environment.as_str()));
    if let Some(v) = &config.service_version {
        attrs.push(KeyValue::new("service.version", v.clone()));
    }
    Resource::builder_empty().with_attributes(attrs).with_service_name(config.service_name.clone()).build()
}

fn span_data(r: Recording, end: Instant, anchor: (SystemTime, Instant), scope: &InstrumentationScope) -> SpanData {
    let at = |t: Instant| match t.checked_duration_since(anchor.1) {
        Some(d) => anchor.0 + d,
        None => anchor.0 - anchor.1.duration_since(t),
    };
    let mut links = SpanLinks::default();
    links.links = r
        .links
        .iter()
        .map(|l| {
            let flags = if l.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
            opentelemetry::trace::Link::with_context(SpanContext::new(
                TraceId::from(l.trace_id),
                SpanId::from(l.span_id),
                flags,
                true,
                TraceState::default(),
            ))
        })
        .collect();
    let mut events = SpanEvents::default();
    events.events = r.events.into_iter().map(|(name, t, attrs)| Event::new(name, at(t), attrs, 0)).collect();
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(r.ctx.trace_id),
            SpanId::from(r.ctx.span_id),
            TraceFlags::SAMPLED,
            false,
            r.trace_state.as_deref().and_then(|ts| ts.parse().ok()).unwrap_or_default(),
        ),
        parent_span_id: SpanId::from(r.parent_span_id),
        parent_span_is_remote: r.parent_remote,
        span_kind: if r.server { SpanKind::Server } else { SpanKind::Internal },
        name: Cow::Borrowed(r.name),
        start_time: at(r.start),
        end_time: at(end),
        attributes: r.attributes,
        dropped_attributes_count: r.dropped_attributes,
        events,
        links,
        status: r.status,
        instrumentation_scope: scope.clone(),
    }
}

/// One span as a JSON object on one line (the development spans file).
fn json_line(s: &SpanData) -> String {
    use opentelemetry::Value;
    use std::fmt::Write as _;
    fn string(out: &mut String, v: &str) {
        out.push('"');
        for c in v.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
    fn value(out: &mut String, v: &Value) {
        match v {
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::I64(i) => {
                let _ = write!(out, "{i}");
            }
            Value::F64(f) if f.is_finite() => {
                let _ = write!(out, "{f}");
            }
            other => string(out, other.as_str().as_ref()),
        }
    }
    let nanos = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut out = String::with_capacity(256);
    out.push_str("{\"name\":");
    string(&mut out, &s.name);
    let _ = write!(
        out,
        ",\"trace_id\":\"{}\",\"span_id\":\"{}\",\"parent_span_id\":\"{}\",\"start_unix_nano\":{},\"duration_ns\":{}",
        s.span_context.trace_id(),
        s.span_context.span_id(),
        s.parent_span_id,
        nanos(s.start_time),
        nanos(s.end_time).saturating_sub(nanos(s.start_time)),
    );
    out.push_str(",\"status\":");
    match &s.status {
        opentelemetry::trace::Status::Error { description } => {
            out.push_str("{\"error\":");
            string(&mut out, description);
            out.push('}');
        }
        opentelemetry::trace::Status::Ok => out.push_str("\"ok\""),
        opentelemetry::trace::Status::Unset => out.push_str("\"unset\""),
    }
    out.push_str(",\"attributes\":{");
    for (i, kv) in s.attributes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(&mut out, kv.key.as_str());
        out.push(':');
        value(&mut out, &kv.value);
    }
    out.push_str("}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spans_file_moves_aside_at_its_size_limit() {
        let dir = std::env::temp_dir().join(format!("obs-spans-rotate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("spans.jsonl");
        let scope = InstrumentationScope::builder("obs").build();
        let span = |i: u64| {
            let r = Recording {
                ctx: super::super::Ctx { trace_id: 1, span_id: i, sampled: true },
                parent_span_id: 0,
                name: "rotate.me",
                start: Instant::now(),
                attributes: Vec::new(),
                dropped_attributes: 0,
                status: opentelemetry::trace::Status::Unset,
                events: Vec::new(),
                links: Vec::new(),
                trace_state: None,
                server: false,
                parent_remote: false,
            };
            span_data(r, Instant::now(), (SystemTime::now(), Instant::now()), &scope)
        };
        let mut file = SpansFile::open(path.clone(), 1000).unwrap();
        let mut written = 0;
        while !dir.join("spans.jsonl.1").exists() {
            file.write(&[span(written + 1)]).unwrap();
            written += 1;
            assert!(written < 100, "no rotation after {written} spans");
        }
        let old = std::fs::read_to_string(dir.join("spans.jsonl.1")).unwrap();
        assert!(old.len() >= 1000 && old.lines().count() as u64 == written, "every line moved: {}", old.len());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "a new file is started");
        file.write(&[span(1000)]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        // Reopened, the size so far counts.
        let again = SpansFile::open(path.clone(), 1000).unwrap();
        assert!(again.size > 0);
        // A rotation that cannot happen (`.1` is a directory): the spans go on into the file.
        let blocked = dir.join("blocked.jsonl");
        std::fs::create_dir_all(dir.join("blocked.jsonl.1/x")).unwrap();
        let mut file = SpansFile::open(blocked.clone(), 1000).unwrap();
        for i in 0..30 {
            file.write(&[span(i + 1)]).expect("written, whatever the rotation");
        }
        assert_eq!(std::fs::read_to_string(&blocked).unwrap().lines().count(), 30);
        assert!(file.size < 1000, "the next attempt waits for another limit's worth");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_https_endpoint_is_refused_at_init() {
        let e = Exporter::build(
            "https://tempo.example.org/v1/traces".into(),
            crate::config::Protocol::HttpProtobuf,
            Duration::from_secs(1),
            &[],
        )
        .err()
        .expect("refused");
        assert!(e.contains("is not http://: obs exports without TLS"), "{e}");
        assert!(
            Exporter::build(
                "http://127.0.0.1:9/v1/traces".into(),
                crate::config::Protocol::HttpProtobuf,
                Duration::from_secs(1),
                &[],
            )
            .is_ok()
        );
    }
}
