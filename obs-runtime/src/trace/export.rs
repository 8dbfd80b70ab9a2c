//! The bounded queue of finished spans and the thread that exports them.

use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_queue::ArrayQueue;
#[cfg(feature = "grpc")]
use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::Resource;
#[cfg(feature = "grpc")]
use opentelemetry_sdk::trace::SpanExporter as _;

use super::Recording;
#[cfg(feature = "grpc")]
use super::encode::span_data;
use super::encode::{Batch, Encoder, Envelope};
use crate::config::Config;
use crate::metrics::Series;

/// Why spans were not exported: the `reason` label of `obs_spans_dropped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    QueueFull,
    Rejected,
    Throttled,
    Unavailable,
    Timeout,
    Unreachable,
    Shutdown,
    Failed,
}

impl Reason {
    const ALL: [Reason; 8] = [
        Reason::QueueFull,
        Reason::Rejected,
        Reason::Throttled,
        Reason::Unavailable,
        Reason::Timeout,
        Reason::Unreachable,
        Reason::Shutdown,
        Reason::Failed,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Reason::QueueFull => "queue_full",
            Reason::Rejected => "rejected",
            Reason::Throttled => "throttled",
            Reason::Unavailable => "unavailable",
            Reason::Timeout => "timeout",
            Reason::Unreachable => "unreachable",
            Reason::Shutdown => "shutdown",
            Reason::Failed => "export_failed",
        }
    }

    /// Whether OTLP says to try again (throttling, an unavailable backend, the network).
    fn retryable(self) -> bool {
        matches!(self, Reason::Throttled | Reason::Unavailable | Reason::Timeout | Reason::Unreachable)
    }
}

/// One series of `obs_spans_dropped_total` per reason.
#[derive(Clone, Copy)]
struct Dropped([&'static Series; 8]);

impl Dropped {
    fn new() -> Dropped {
        let family = crate::metrics::registry().family(&crate::metrics::own::SPANS_DROPPED);
        Dropped(Reason::ALL.map(|r| family.series_for(&[r.label()])))
    }

    fn add(&self, reason: Reason, n: u64) {
        if n > 0 {
            self.0[reason as usize].inc_by_u64(n);
        }
    }
}

/// What the exporter thread is holding, for the count at shutdown.
#[derive(Default)]
struct Accounting {
    /// Spans taken from the queue and not yet counted as exported or dropped.
    in_flight: u64,
    /// Shutdown's deadline expired: what the exporter still holds was counted as dropped
    /// (`shutdown`), and it must not count it again.
    abandoned: bool,
}

pub(crate) struct Pipeline {
    queue: ArrayQueue<(Recording, Instant)>,
    /// Wake the exporter early once this many spans wait.
    wake_at: usize,
    exporter: Thread,
    /// A second exporter, woken by the first when it sees a backlog of full batches (OTLP
    /// only: the spans file is written by one thread).
    helper: OnceLock<Thread>,
    /// How many exporter threads have to report done at shutdown.
    workers: std::sync::atomic::AtomicUsize,
    /// The exporter sleeps without a timeout: the next span wakes it.
    idle: AtomicBool,
    shutdown: AtomicBool,
    /// The exporter has made its last pass: a span finished now cannot be exported.
    closed: AtomicBool,
    done: Mutex<Option<mpsc::Receiver<()>>>,
    dropped: Dropped,
    accounting: Mutex<Accounting>,
    retry: std::sync::Arc<Retry>,
}

static PIPELINE: OnceLock<Pipeline> = OnceLock::new();

/// Handed each batch before it is sent (on the exporter thread): the viewer's copy.
#[cfg(feature = "viewer")]
pub(crate) static SPAN_TAP: OnceLock<fn(&Batch)> = OnceLock::new();

pub(crate) fn pipeline() -> Option<&'static Pipeline> {
    PIPELINE.get()
}

/// Queues a finished span; never blocks: a full queue drops it and counts the drop.
#[inline]
pub(crate) fn submit(r: Recording) {
    let Some(p) = PIPELINE.get() else { return };
    if p.closed.load(Ordering::Acquire) {
        // Finished after the exporter's last pass (a span ended while the process exits).
        p.dropped.add(Reason::Shutdown, 1);
        return;
    }
    match p.queue.push((r, Instant::now())) {
        Ok(()) => {
            // Pairs with the fence the exporter runs between raising `idle` and its last look at
            // the queue: either it sees this span, or this sees `idle`.
            fence(Ordering::SeqCst);
            if p.closed.load(Ordering::Acquire) {
                // The exporter's last pass may be over: one span is taken back out and counted
                // (this one or another, each pop is counted once), so none stays uncounted.
                if p.queue.pop().is_some() {
                    p.dropped.add(Reason::Shutdown, 1);
                }
                return;
            }
            if p.queue.len() >= p.wake_at || (p.idle.load(Ordering::Relaxed) && p.idle.swap(false, Ordering::Relaxed)) {
                p.exporter.unpark();
            }
        }
        Err(_) => p.dropped.add(Reason::QueueFull, 1),
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

/// The exporter thread's work until shutdown: every `interval` (or, idle, when a span comes),
/// the queue in batches of `batch_size` to `out`; at shutdown one last pass, then what is left
/// counted as dropped.
fn export_loop(p: &Pipeline, mut out: Sender, batch_size: usize, interval: Duration, timeout: Duration) {
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
            std::thread::park_timeout(interval);
        }
        was_empty = p.queue.is_empty();
        let stopping = p.shutdown.load(Ordering::Acquire);
        // The last pass takes what is queued now; a span finished after it is counted
        // as dropped (`submit`), and one that slipped in between is counted here.
        if stopping {
            p.closed.store(true, Ordering::Release);
        }
        loop {
            // Re-anchored for each batch, so a suspend or a clock step (or a long
            // backoff) skews one batch at most.
            let mut batch = Batch::with_capacity(batch_size.min(p.queue.len()));
            while batch.len() < batch_size
                && let Some(span) = p.queue.pop()
            {
                batch.spans.push(span);
            }
            if batch.len() == 0 {
                break;
            }
            // More full batches wait than this thread sends at once: the helper
            // takes some (on another core, while this one waits for its answer).
            if !stopping
                && p.queue.len() >= batch_size
                && let Some(helper) = p.helper.get()
            {
                helper.unpark();
            }
            // Shutdown may come while this pass drains the queue: from then on, one
            // attempt per batch, without waiting out a backoff.
            out.send(p, batch, stopping || p.shutdown.load(Ordering::Acquire));
        }
        if stopping {
            if let Some(e) = &out.exporter {
                e.shutdown(timeout);
            }
            let late = std::iter::from_fn(|| p.queue.pop()).count() as u64;
            out.dropped.add(Reason::Shutdown, late);
            return;
        }
    }
}

impl Pipeline {
    /// Starts the exporter thread (its loop is [`export_loop`]) and, with an endpoint, its
    /// helper; returns once the exporter is built, with its error if it cannot be.
    ///
    /// Long on purpose: the wiring of the two threads and the channels between them, each value
    /// cloned for the thread that owns it.
    pub(crate) fn install(config: &Config) -> Result<(), InitError> {
        if PIPELINE.get().is_some() {
            return Err(InitError::AlreadyInitialized);
        }
        let endpoint = config.traces_endpoint.clone();
        let headers: Vec<(String, String)> =
            config.otlp_headers.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect();
        let resource = resource(config);
        let spans_file = match &config.spans_file {
            Some(path) => Some(
                SpansFile::open(path.clone(), SPANS_FILE_MAX, Envelope::new(&resource))
                    .map_err(|e| InitError::Exporter(format!("cannot open the spans file {}: {e}", path.display())))?,
            ),
            None => None,
        };
        let timeout = config.export_timeout;
        let protocol = config.protocol;
        let registry = crate::metrics::registry();
        let dropped = Dropped::new();
        let exported = registry.family(&crate::metrics::own::SPANS_EXPORTED).series_for(&[]);
        let batch_size = config.batch_size.clamp(1, config.queue_capacity.max(1));
        let interval = config.schedule_delay;
        let retry = std::sync::Arc::new(Retry::new(config.export_budget));
        let thread_retry = retry.clone();
        let (built_tx, built_rx) = mpsc::channel::<Result<(), String>>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let helper_done = done_tx.clone();
        let helper_endpoint = endpoint.clone();
        let helper_headers = headers.clone();
        let helper_retry = retry.clone();
        let helper_resource = resource.clone();
        let handle = std::thread::Builder::new()
            .name("obs-span-exporter".into())
            .spawn(move || {
                // The exporter's own traffic stays out of the telemetry it exports.
                crate::context::exporter_thread();
                // Built on this thread: the blocking HTTP client must not live inside the
                // application's async runtime.
                let retry = thread_retry;
                let exporter = match endpoint {
                    Some(url) => match Exporter::build(url, protocol, timeout, &headers, retry.clone(), &resource) {
                        Ok(e) => Some(e),
                        Err(e) => {
                            let _ = built_tx.send(Err(e));
                            return;
                        }
                    },
                    None => None,
                };
                let _ = built_tx.send(Ok(()));
                let p = loop {
                    if let Some(p) = PIPELINE.get() {
                        break p;
                    }
                    std::thread::park_timeout(Duration::from_millis(1));
                };
                let out = Sender { exporter, file: spans_file, exported, dropped, retry };
                export_loop(p, out, batch_size, interval, timeout);
                let _ = done_tx.send(());
            })
            .map_err(|e| InitError::Exporter(format!("cannot start the exporter thread: {e}")))?;
        match built_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(InitError::Exporter(e)),
            Err(_) => return Err(InitError::Exporter("the exporter thread stopped".into())),
        }
        let pipeline = Pipeline {
            queue: ArrayQueue::new(config.queue_capacity),
            wake_at: (config.queue_capacity / 2).clamp(1, batch_size),
            exporter: handle.thread().clone(),
            helper: OnceLock::new(),
            workers: std::sync::atomic::AtomicUsize::new(1),
            idle: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            done: Mutex::new(Some(done_rx)),
            dropped,
            accounting: Mutex::new(Accounting::default()),
            retry,
        };
        PIPELINE.set(pipeline).map_err(|_| InitError::AlreadyInitialized)?;
        handle.thread().unpark();
        if let Some(url) = helper_endpoint {
            spawn_helper(
                url,
                protocol,
                timeout,
                helper_headers,
                helper_retry,
                helper_resource,
                batch_size,
                exported,
                dropped,
                helper_done,
            );
        }
        Ok(())
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    /// Exports what is queued and stops the exporter; returns within `deadline` whatever the
    /// backend does. A backoff in progress is cut short (what is queued gets one attempt); what
    /// is still queued or in flight when the deadline expires is counted as dropped
    /// (`shutdown`), so that every span finished is either exported or counted.
    pub(crate) fn shutdown(&self, deadline: Duration) -> bool {
        self.shutdown.store(true, Ordering::Release);
        self.retry.stop();
        self.exporter.unpark();
        if let Some(helper) = self.helper.get() {
            helper.unpark();
        }
        let Some(done) = self.done.lock().unwrap_or_else(|e| e.into_inner()).take() else { return false };
        let end = Instant::now() + deadline;
        let workers = self.workers.load(Ordering::Acquire);
        let all_done = (0..workers).all(|_| done.recv_timeout(end.saturating_duration_since(Instant::now())).is_ok());
        if all_done {
            return true;
        }
        // The exporter is stuck in an export (a collector that never answers): whatever it holds
        // and whatever is queued is lost with the process.
        self.closed.store(true, Ordering::Release);
        let mut accounting = self.accounting.lock().unwrap_or_else(|e| e.into_inner());
        accounting.abandoned = true;
        let lost = std::mem::take(&mut accounting.in_flight) + std::iter::from_fn(|| self.queue.pop()).count() as u64;
        drop(accounting);
        self.dropped.add(Reason::Shutdown, lost);
        if lost > 0 {
            tracing::warn!(
                target: "obs",
                spans = lost,
                deadline_ms = deadline.as_millis() as u64,
                "spans not exported by the shutdown deadline; counted in obs_spans_dropped_total{{reason=\"shutdown\"}}"
            );
        }
        false
    }
}

/// Starts the second exporter: it sleeps until the first sees a backlog of full batches, sends
/// full batches while there is such a backlog, and stops at shutdown (the first exporter makes
/// the last pass). If it cannot start, the first exporter works alone.
#[allow(clippy::too_many_arguments)]
fn spawn_helper(
    url: String,
    protocol: crate::config::Protocol,
    timeout: Duration,
    headers: Vec<(String, String)>,
    retry: std::sync::Arc<Retry>,
    resource: Resource,
    batch_size: usize,
    exported: &'static Series,
    dropped: Dropped,
    done: mpsc::Sender<()>,
) {
    let Some(p) = PIPELINE.get() else { return };
    let spawned = std::thread::Builder::new().name("obs-span-export2".into()).spawn(move || {
        crate::context::exporter_thread();
        let Ok(exporter) = Exporter::build(url, protocol, timeout, &headers, retry.clone(), &resource) else {
            p.workers.fetch_sub(1, Ordering::AcqRel);
            return;
        };
        let mut out = Sender { exporter: Some(exporter), file: None, exported, dropped, retry };
        while !p.shutdown.load(Ordering::Acquire) {
            std::thread::park();
            while !p.shutdown.load(Ordering::Acquire) && p.queue.len() >= batch_size {
                let mut batch = Batch::with_capacity(batch_size);
                while batch.len() < batch_size
                    && let Some(span) = p.queue.pop()
                {
                    batch.spans.push(span);
                }
                if batch.len() == 0 {
                    break;
                }
                out.send(p, batch, false);
            }
        }
        if let Some(e) = &out.exporter {
            e.shutdown(timeout);
        }
        let _ = done.send(());
    });
    if let Ok(handle) = spawned {
        // Counted before it can finish: shutdown waits for it.
        p.workers.fetch_add(1, Ordering::AcqRel);
        let _ = p.helper.set(handle.thread().clone());
    }
}

/// Where batches go: OTLP/HTTP, encoded here straight into the official messages and posted by
/// our client; or OTLP/gRPC through the SDK's exporter, on a runtime of its own.
enum Exporter {
    Http {
        client: RetryingClient,
        url: String,
        encoder: Encoder,
    },
    /// The SDK's gRPC exporter and the runtime tonic needs (a single-threaded one, on the exporter
    /// thread: the application's runtime is never used, nor required).
    #[cfg(feature = "grpc")]
    Grpc {
        otlp: Box<opentelemetry_otlp::SpanExporter>,
        runtime: tokio::runtime::Runtime,
        /// The same channel without the SDK's retries: the last pass at shutdown makes one
        /// attempt per batch, not retries that sleep past the deadline.
        once: Box<opentelemetry_otlp::SpanExporter>,
        scope: InstrumentationScope,
    },
}

impl Exporter {
    fn build(
        url: String,
        protocol: crate::config::Protocol,
        timeout: Duration,
        headers: &[(String, String)],
        retry: std::sync::Arc<Retry>,
        resource: &Resource,
    ) -> Result<Exporter, String> {
        // Set with `Config::traces_endpoint` (the environment is checked earlier): without a TLS
        // client every export would fail.
        if !url.starts_with("http://") {
            return Err(format!(
                "the OTLP endpoint {url:?} is not http://: obs exports without TLS (send to a local collector \
                 that forwards over TLS)"
            ));
        }
        match protocol {
            crate::config::Protocol::HttpProtobuf => Exporter::http(url, timeout, headers, retry, resource),
            #[cfg(feature = "grpc")]
            crate::config::Protocol::Grpc => Exporter::grpc(url, timeout, headers, retry, resource),
        }
    }

    /// OTLP/HTTP through our blocking client, which retries.
    fn http(
        url: String,
        timeout: Duration,
        headers: &[(String, String)],
        retry: std::sync::Arc<Retry>,
        resource: &Resource,
    ) -> Result<Exporter, String> {
        http::Uri::try_from(url.as_str()).map_err(|e| format!("the OTLP endpoint {url:?}: {e}"))?;
        let client = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        // Set by our client on every request: one value each, the same over both protocols.
        let mut headers = headers
            .iter()
            .map(|(k, v)| {
                let name = http::HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("OTLP header {k:?}: {e}"))?;
                let value = http::HeaderValue::from_str(v).map_err(|e| format!("OTLP header {k:?}: {e}"))?;
                Ok((name, value))
            })
            .collect::<Result<Vec<_>, String>>()?;
        // OTLP/HTTP: the exporter says who it is (unless the user's headers say otherwise).
        if !headers.iter().any(|(k, _)| k == http::header::USER_AGENT) {
            let agent = concat!("OTel-OTLP-Exporter-Rust-obs/", env!("CARGO_PKG_VERSION"));
            headers.push((http::header::USER_AGENT, http::HeaderValue::from_static(agent)));
        }
        let client = RetryingClient { inner: client, retry, timeout, headers };
        Ok(Exporter::Http { client, url, encoder: Encoder::new(resource) })
    }

    /// OTLP/gRPC on a tokio runtime of its own, with keepalive; the SDK retries.
    #[cfg(feature = "grpc")]
    fn grpc(
        url: String,
        timeout: Duration,
        headers: &[(String, String)],
        retry: std::sync::Arc<Retry>,
        resource: &Resource,
    ) -> Result<Exporter, String> {
        use opentelemetry_otlp::WithExportConfig as _;
        use opentelemetry_otlp::WithTonicConfig as _;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the gRPC exporter's runtime: {e}"))?;
        let _entered = runtime.enter();
        let channel = grpc_channel(&url, timeout)?;
        let metadata = metadata(headers)?;
        // Runs after the SDK added what it read from the environment itself: our headers
        // replace those of the same name (one value each, as over HTTP), and the export
        // deadline goes to the collector as `grpc-timeout`.
        let interceptor = move |mut req: tonic::Request<()>| {
            for entry in metadata.iter() {
                if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = entry {
                    req.metadata_mut().insert(k.clone(), v.clone());
                }
            }
            req.set_timeout(timeout);
            Ok(req)
        };
        let mut once = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_channel(channel.clone())
            .with_interceptor(interceptor.clone())
            .with_timeout(timeout)
            .with_retry_policy(opentelemetry_otlp::RetryPolicy::disabled())
            .build()
            .map_err(|e| e.to_string())?;
        let mut otlp = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_channel(channel)
            .with_interceptor(interceptor)
            .with_timeout(timeout)
            .with_retry_policy(
                opentelemetry_otlp::RetryPolicy::recommended()
                    .with_initial_delay(Duration::from_millis(500))
                    .with_max_delay(Duration::from_secs(5))
                    .with_max_jitter(Duration::from_millis(250)),
            )
            .build()
            .map_err(|e| e.to_string())?;
        otlp.set_resource(resource);
        once.set_resource(resource);
        // Over gRPC the SDK retries, within the export timeout (our backoff holds for
        // the next batch, in `Sender`).
        drop(retry);
        drop(_entered);
        let scope = InstrumentationScope::builder("obs").with_version(env!("CARGO_PKG_VERSION")).build();
        Ok(Exporter::Grpc { otlp: Box::new(otlp), runtime, once: Box::new(once), scope })
    }

    /// Exports a batch; `last`: the last pass at shutdown (one attempt, no retry).
    fn export(&mut self, batch: Batch, last: bool) -> Result<(), String> {
        match self {
            Exporter::Http { client, url, encoder } => {
                // Over HTTP our client stops retrying at shutdown by itself.
                let _ = last;
                let body = encoder.encode(batch);
                let request = http::Request::post(url.as_str())
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                    .body(bytes::Bytes::from(body))
                    .map_err(|e| format!("cannot build the export request: {e}"))?;
                // The blocking HTTP client completes the request inside the first poll.
                match futures_executor::block_on(client.send(request)) {
                    Ok(response) if response.status().is_success() => Ok(()),
                    Ok(response) => Err(format!("HTTP export failed with status code: {}", response.status().as_u16())),
                    Err(e) => Err(e.to_string()),
                }
            }
            #[cfg(feature = "grpc")]
            Exporter::Grpc { otlp, runtime, once, scope } => {
                let exporter = if last { &*once } else { &*otlp };
                let Batch { spans, anchor } = batch;
                let spans = spans.into_iter().map(|(r, end)| span_data(r, end, anchor, scope)).collect();
                runtime.block_on(exporter.export(spans)).map_err(|e| e.to_string())
            }
        }
    }

    fn is_grpc(&self) -> bool {
        !matches!(self, Exporter::Http { .. })
    }

    fn shutdown(&self, timeout: Duration) {
        #[cfg(feature = "grpc")]
        if let Exporter::Grpc { otlp, runtime, once, .. } = self {
            let _entered = runtime.enter();
            let _ = otlp.shutdown_with_timeout(timeout);
            let _ = once.shutdown_with_timeout(timeout);
        }
        let _ = timeout;
    }
}

/// A channel to an OTLP/gRPC collector (spans and log records), made inside the exporter's own
/// runtime. The SDK's channel has no connect timeout and no HTTP/2 keepalive: a collector (or a
/// proxy) that stops answering on a live connection kept every export on it, failing, for as
/// long as the process ran. Ours pings the peer and drops the connection when a ping goes
/// unanswered; the next export connects again.
#[cfg(feature = "grpc")]
pub(crate) fn grpc_channel(url: &str, timeout: Duration) -> Result<tonic::transport::Channel, String> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("the OTLP endpoint {url:?}: {e}"))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .http2_keep_alive_interval(timeout.max(Duration::from_secs(1)))
        .keep_alive_timeout(timeout)
        .keep_alive_while_idle(true)
        .connect_lazy())
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

/// The spans file of development (no collector): OTLP JSON, one `ExportTraceServiceRequest` per
/// line, as the OpenTelemetry Collector's file exporter writes it (so that its `otlpjsonfile`
/// receiver, or any OTLP JSON tool, reads it); rotated at a size.
struct SpansFile {
    path: std::path::PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    size: u64,
    max: u64,
    envelope: Envelope,
}

impl SpansFile {
    fn open(path: std::path::PathBuf, max: u64, envelope: Envelope) -> std::io::Result<SpansFile> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(SpansFile { path, out: std::io::BufWriter::new(file), size, max, envelope })
    }

    fn write(&mut self, batch: Batch) -> std::io::Result<()> {
        use std::io::Write as _;
        let request = self.envelope.request(batch.into_proto());
        let line = serde_json::to_string(&request).map_err(std::io::Error::other)?;
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.size += line.len() as u64 + 1;
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
        let reopen = || -> std::io::Result<std::fs::File> {
            std::fs::OpenOptions::new().create(true).append(true).open(&self.path)
        };
        let rotated = std::fs::rename(&self.path, &old).and_then(|()| match reopen() {
            Ok(file) => {
                self.out = std::io::BufWriter::new(file);
                self.size = 0;
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

/// Backoff between attempts, shared by the HTTP client's retries and the exporter loop: after a
/// retryable failure nothing is sent before `not_before` (a `Retry-After`, else an exponential
/// delay with jitter), so a throttling collector sees a few requests, not hundreds a second.
/// Shutdown cuts every wait short.
#[derive(Debug)]
pub(crate) struct Retry {
    /// How long one batch may spend in attempts and waits (`OTEL_BSP_EXPORT_TIMEOUT`).
    budget: Duration,
    state: Mutex<RetryState>,
    stopped: Mutex<bool>,
    wake: std::sync::Condvar,
    episode: Mutex<Episode>,
}

#[derive(Debug, Default)]
struct RetryState {
    /// Retryable failures in a row.
    failures: u32,
    not_before: Option<Instant>,
}

/// The first delay after a failure; it doubles up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(500);
const MAX_DELAY: Duration = Duration::from_secs(30);
/// The longest `Retry-After` obeyed (a collector asking for an hour is asked again sooner).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

impl Retry {
    fn new(budget: Duration) -> Retry {
        Retry {
            budget,
            state: Mutex::new(RetryState::default()),
            stopped: Mutex::new(false),
            wake: std::sync::Condvar::new(),
            episode: Mutex::new(Episode::default()),
        }
    }

    /// An attempt failed: the first failure of an episode is a warning (said when the loss
    /// starts, not when a batch's retries run out), the others debug lines.
    fn attempt_failed(&self, f: &Failure) {
        let mut episode = self.episode.lock().unwrap_or_else(|e| e.into_inner());
        if std::mem::replace(&mut episode.failing, true) {
            tracing::debug!(target: "obs", reason = f.reason.label(), error = %f.detail, "span export attempt failed");
            return;
        }
        drop(episode);
        tracing::warn!(
            target: "obs",
            reason = f.reason.label(),
            error = %f.detail,
            retrying = f.reason.retryable(),
            "span export failed; retried with backoff where the backend may recover, spans that cannot wait are dropped \
             (obs_spans_dropped_total)"
        );
    }

    /// Spans of the episode given up.
    fn lost(&self, spans: u64) {
        let mut episode = self.episode.lock().unwrap_or_else(|e| e.into_inner());
        episode.spans += spans;
        episode.batches += 1;
    }

    /// An export succeeded: the episode, if any, ends with a line saying what it cost.
    fn recovered(&self) {
        let mut episode = self.episode.lock().unwrap_or_else(|e| e.into_inner());
        if !episode.failing {
            return;
        }
        let Episode { spans, batches, .. } = std::mem::take(&mut *episode);
        drop(episode);
        tracing::info!(
            target: "obs",
            dropped_spans = spans,
            failed_batches = batches,
            "span export works again (spans dropped meanwhile for a full queue: obs_spans_dropped_total{{reason=\"queue_full\"}})"
        );
    }

    fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }

    fn is_stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps `d` unless shutdown comes first; `false` if it did.
    fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        while !*stopped {
            let now = Instant::now();
            if now >= until {
                return true;
            }
            stopped = self.wake.wait_timeout(stopped, until - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        false
    }

    /// Waits out the backoff in force (at most `limit`, and not past shutdown).
    fn wait_turn(&self, limit: Duration) {
        let not_before = self.state.lock().unwrap_or_else(|e| e.into_inner()).not_before;
        if let Some(wait) = not_before.and_then(|t| t.checked_duration_since(Instant::now())) {
            self.sleep(wait.min(limit));
        }
    }

    fn succeeded(&self) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = RetryState::default();
    }

    /// Records a retryable failure; the delay before the next attempt.
    fn failed(&self, retry_after: Option<Duration>) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.failures = state.failures.saturating_add(1);
        let delay = backoff(state.failures, retry_after);
        state.not_before = Some(Instant::now() + delay);
        delay
    }
}

/// The wait before the next attempt after `failures` retryable failures in a row (the first is
/// 1), for spans and log records alike: [`FIRST_DELAY`] doubling up to [`MAX_DELAY`], jittered.
pub(crate) fn backoff(failures: u32, retry_after: Option<Duration>) -> Duration {
    let exp = FIRST_DELAY.saturating_mul(1 << (failures.max(1) - 1).min(16)).min(MAX_DELAY);
    // Full jitter on the upper half: many instances throttled at once spread out.
    let unit = (super::random_u128() as u64 >> 11) as f64 / (1u64 << 53) as f64;
    let backoff = exp.mul_f64(0.5 + 0.5 * unit);
    // At least what the collector asked for; never less than the backoff (a `Retry-After: 0`,
    // or a date already past by the clocks' difference, must not make a tight loop).
    match retry_after {
        Some(d) => d.min(MAX_RETRY_AFTER).max(backoff),
        None => backoff,
    }
}

/// A failed export, as seen on the wire.
#[derive(Clone, Debug)]
struct Failure {
    reason: Reason,
    /// What happened, for the warning: `HTTP 429 Too Many Requests`, `no answer within 1 s`, …
    detail: String,
    retry_after: Option<Duration>,
}

thread_local! {
    /// The last failure the HTTP client saw on this (the exporter's) thread.
    static LAST_FAILURE: std::cell::RefCell<Option<Failure>> = const { std::cell::RefCell::new(None) };
    /// Spans the collector refused in an accepted request (OTLP partial success), and why.
    static LAST_REJECTED: std::cell::RefCell<Option<(u64, String)>> = const { std::cell::RefCell::new(None) };
}

/// The `partial_success` of an OTLP/HTTP export response: spans refused, and the message.
fn partial_success(body: &[u8]) -> Option<(u64, String)> {
    use prost::Message as _;
    let response = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse::decode(body).ok()?;
    let partial = response.partial_success?;
    (partial.rejected_spans > 0).then_some((partial.rejected_spans as u64, partial.error_message))
}

/// The blocking reqwest client (through `opentelemetry-http`, as the SDK uses it), which also retries as OTLP says (429, 502,
/// 503, 504 and the network; never other statuses), honours `Retry-After`, and tells the
/// exporter what happened, so that drops are counted by reason.
#[derive(Debug)]
struct RetryingClient {
    inner: reqwest::blocking::Client,
    retry: std::sync::Arc<Retry>,
    /// Each attempt's (for the warning's text).
    timeout: Duration,
    /// The export headers, set on every request (replacing any of the same name).
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl RetryingClient {
    /// Sends `request`, retrying as OTLP says; the last attempt's outcome.
    async fn send(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let started = Instant::now();
        let mut request = request;
        for (name, value) in &self.headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        loop {
            // The body is `Bytes`: a retry resends the same encoded batch without copying it.
            let result = opentelemetry_http::HttpClient::send_bytes(&self.inner, request.clone()).await;
            let failure = classify_http(&result, self.timeout);
            LAST_FAILURE.with(|f| *f.borrow_mut() = failure.clone());
            let Some(failure) = failure else {
                self.retry.succeeded();
                if let Ok(response) = &result {
                    LAST_REJECTED.with(|r| *r.borrow_mut() = partial_success(response.body()));
                }
                return result;
            };
            self.retry.attempt_failed(&failure);
            if !failure.reason.retryable() {
                return result;
            }
            let delay = self.retry.failed(failure.retry_after);
            if started.elapsed() + delay > self.retry.budget || self.retry.is_stopped() || !self.retry.sleep(delay) {
                return result;
            }
        }
    }
}

/// `None` for a success (2xx).
fn classify_http(
    result: &Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError>,
    timeout: Duration,
) -> Option<Failure> {
    match result {
        Ok(response) if response.status().is_success() => None,
        Ok(response) => {
            let status = response.status();
            let reason = match status.as_u16() {
                code if !retryable_status(code) => Reason::Rejected,
                429 => Reason::Throttled,
                _ => Reason::Unavailable,
            };
            let retry_after = retry_after(response.headers());
            let mut detail = format!("HTTP {} {}", status.as_u16(), status.canonical_reason().unwrap_or(""));
            if let Some(d) = retry_after {
                detail.push_str(&format!(" (retry after {} s)", d.as_secs_f64()));
            }
            Some(Failure { reason, detail: detail.trim_end().to_owned(), retry_after })
        }
        Err(e) => {
            let (reason, detail) = match e.downcast_ref::<reqwest::Error>() {
                Some(e) if e.is_timeout() => {
                    (Reason::Timeout, format!("no answer within the export timeout ({} ms)", timeout.as_millis()))
                }
                Some(e) if e.is_connect() => (Reason::Unreachable, format!("cannot connect: {}", source_chain(e))),
                Some(e) => (Reason::Unreachable, format!("network error: {}", source_chain(e))),
                None => (Reason::Failed, e.to_string()),
            };
            Some(Failure { reason, detail, retry_after: None })
        }
    }
}

/// The answers of an OTLP/HTTP collector that ask for the request again later: 429 (throttled),
/// 502, 503 and 504 (unavailable). Spans and log records alike.
pub(crate) fn retryable_status(code: u16) -> bool {
    matches!(code, 429 | 502..=504)
}

/// A response's `Retry-After`, in seconds or as an HTTP date.
pub(crate) fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    headers.get(http::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after)
}

/// An error and its causes, `: `-separated (reqwest's own text is only "error sending request").
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

/// A gRPC failure, from the SDK's error text (`… failed with gRPC code: Unavailable: …`).
#[cfg_attr(not(feature = "grpc"), allow(dead_code))]
fn classify_grpc(error: &str) -> Failure {
    let code = error.split("gRPC code: ").nth(1).map(|rest| rest.split(':').next().unwrap_or(rest).trim());
    let reason = match code {
        Some("DeadlineExceeded") => Reason::Timeout,
        Some("Unavailable") => Reason::Unavailable,
        Some("ResourceExhausted") => Reason::Throttled,
        Some("Cancelled" | "Aborted" | "OutOfRange" | "DataLoss") => Reason::Unavailable,
        Some(_) => Reason::Rejected,
        None => Reason::Failed,
    };
    Failure { reason, detail: error.to_owned(), retry_after: None }
}

/// A loss episode: one warning when exports start failing, one line with the count when they
/// work again (OpenTelemetry's guidance for SDK self-diagnostics).
#[derive(Debug, Default)]
struct Episode {
    failing: bool,
    spans: u64,
    batches: u64,
}

/// The exporter thread's side: sends a batch, counts the outcome.
struct Sender {
    exporter: Option<Exporter>,
    file: Option<SpansFile>,
    exported: &'static Series,
    dropped: Dropped,
    retry: std::sync::Arc<Retry>,
}

impl Sender {
    fn send(&mut self, p: &Pipeline, batch: Batch, stopping: bool) {
        let n = batch.len() as u64;
        #[cfg(feature = "viewer")]
        if let Some(tap) = SPAN_TAP.get() {
            tap(&batch);
        }
        {
            let mut accounting = p.accounting.lock().unwrap_or_else(|e| e.into_inner());
            if accounting.abandoned {
                drop(accounting);
                self.dropped.add(Reason::Shutdown, n);
                return;
            }
            accounting.in_flight += n;
        }
        let outcome = self.attempt(batch, stopping);
        // An accepted request may refuse some spans (OTLP partial success): those are dropped.
        let refused = match &outcome {
            Ok(()) => LAST_REJECTED.with(|r| r.borrow_mut().take()).map(|(k, why)| (k.min(n), why)),
            Err(_) => None,
        };
        let mut accounting = p.accounting.lock().unwrap_or_else(|e| e.into_inner());
        if accounting.abandoned {
            // Counted by `shutdown` when its deadline expired.
            return;
        }
        accounting.in_flight -= n;
        drop(accounting);
        match outcome {
            Ok(()) if refused.is_some() => {
                let (k, why) = refused.expect("checked");
                self.exported.inc_by_u64(n - k);
                self.dropped.add(Reason::Rejected, k);
                self.retry.attempt_failed(&Failure {
                    reason: Reason::Rejected,
                    detail: format!("the collector refused {k} of {n} spans: {why}"),
                    retry_after: None,
                });
                self.retry.lost(k);
            }
            Ok(()) => {
                self.exported.inc_by_u64(n);
                self.retry.recovered();
            }
            Err(f) => {
                self.dropped.add(f.reason, n);
                self.retry.lost(n);
                tracing::debug!(target: "obs", reason = f.reason.label(), error = %f.detail, spans = n, "spans dropped");
            }
        }
    }

    fn attempt(&mut self, batch: Batch, stopping: bool) -> Result<(), Failure> {
        if let Some(f) = &mut self.file {
            return f.write(batch).map_err(|e| {
                let f = Failure {
                    reason: Reason::Failed,
                    detail: format!("cannot write the spans file: {e}"),
                    retry_after: None,
                };
                self.retry.attempt_failed(&f);
                f
            });
        }
        let Some(e) = &mut self.exporter else { return Ok(()) };
        // A backoff a previous batch was told is waited out first (the queue meanwhile bounds
        // memory, and counts what it cannot hold); at shutdown, one attempt without waiting.
        if !stopping {
            // Shutdown cuts the wait short; the attempt is made then.
            self.retry.wait_turn(self.retry.budget);
        }
        LAST_FAILURE.with(|f| *f.borrow_mut() = None);
        LAST_REJECTED.with(|r| *r.borrow_mut() = None);
        match e.export(batch, stopping) {
            Ok(()) => {
                // The HTTP client resets the backoff itself; over gRPC it is reset here.
                self.retry.succeeded();
                Ok(())
            }
            Err(err) => {
                let seen = LAST_FAILURE.with(|f| f.borrow_mut().take());
                let failure = match seen {
                    Some(f) => f,
                    None => {
                        let f = match e.is_grpc() {
                            true => classify_grpc(&err),
                            false => Failure { reason: Reason::Failed, detail: err, retry_after: None },
                        };
                        self.retry.attempt_failed(&f);
                        f
                    }
                };
                // Over gRPC the SDK retried within the export timeout; the next batch waits.
                if e.is_grpc() && failure.reason.retryable() {
                    self.retry.failed(None);
                }
                Err(failure)
            }
        }
    }
}

pub(crate) fn resource(config: &Config) -> Resource {
    use opentelemetry::KeyValue;
    let mut attrs = super::resource::detected(&config.resource_attributes);
    attrs.extend(config.resource_attributes.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())));
    attrs.push(KeyValue::new("deployment.environment", config.environment.as_str()));
    if let Some(v) = &config.service_version {
        attrs.push(KeyValue::new("service.version", v.clone()));
    }
    Resource::builder_empty().with_attributes(attrs).with_service_name(config.service_name.clone()).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spans_file_moves_aside_at_its_size_limit() {
        let dir = std::env::temp_dir().join(format!("obs-spans-rotate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("spans.jsonl");
        let span = |i: u64| {
            let r = Recording {
                ctx: super::super::Ctx::new(1, i, true, true),
                parent_span_id: 0,
                name: "rotate.me",
                start: Instant::now(),
                attributes: Vec::new(),
                dropped_attributes: 0,
                status: opentelemetry::trace::Status::Unset,
                events: Vec::new(),
                links: Vec::new(),
                trace_state: None,
                kind: super::super::Kind::Internal,
                parent_remote: false,
                profiled: false,
            };
            Batch { spans: vec![(r, Instant::now())], anchor: (SystemTime::now(), Instant::now()) }
        };
        let resource = || Envelope::new(&Resource::builder_empty().build());
        let mut file = SpansFile::open(path.clone(), 1000, resource()).unwrap();
        let mut written = 0;
        while !dir.join("spans.jsonl.1").exists() {
            file.write(span(written + 1)).unwrap();
            written += 1;
            assert!(written < 100, "no rotation after {written} spans");
        }
        let old = std::fs::read_to_string(dir.join("spans.jsonl.1")).unwrap();
        assert!(old.len() >= 1000 && old.lines().count() as u64 == written, "every line moved: {}", old.len());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "a new file is started");
        file.write(span(1000)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        // Reopened, the size so far counts.
        let again = SpansFile::open(path.clone(), 1000, resource()).unwrap();
        assert!(again.size > 0);
        // A rotation that cannot happen (`.1` is a directory): the spans go on into the file.
        let blocked = dir.join("blocked.jsonl");
        std::fs::create_dir_all(dir.join("blocked.jsonl.1/x")).unwrap();
        let mut file = SpansFile::open(blocked.clone(), 1000, resource()).unwrap();
        for i in 0..30 {
            file.write(span(i + 1)).expect("written, whatever the rotation");
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
            std::sync::Arc::new(Retry::new(Duration::from_secs(1))),
            &Resource::builder_empty().build(),
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
                std::sync::Arc::new(Retry::new(Duration::from_secs(1))),
                &Resource::builder_empty().build(),
            )
            .is_ok()
        );
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(60));
        let d = parse_retry_after(&later).unwrap();
        assert!(d > Duration::from_secs(55) && d <= Duration::from_secs(60), "{d:?}");
        let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(60));
        assert_eq!(parse_retry_after(&past), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn statuses_and_grpc_codes_map_to_reasons_as_otlp_says() {
        let reply = |status: u16, retry_after: Option<&str>| {
            let mut r = http::Response::builder().status(status);
            if let Some(v) = retry_after {
                r = r.header("retry-after", v);
            }
            classify_http(&Ok(r.body(bytes::Bytes::new()).unwrap()), Duration::from_secs(1))
        };
        assert!(reply(200, None).is_none());
        assert!(reply(202, None).is_none());
        let throttled = reply(429, Some("3")).unwrap();
        assert_eq!((throttled.reason, throttled.retry_after), (Reason::Throttled, Some(Duration::from_secs(3))));
        assert_eq!(throttled.detail, "HTTP 429 Too Many Requests (retry after 3 s)");
        for status in [502, 503, 504] {
            assert_eq!(reply(status, None).unwrap().reason, Reason::Unavailable, "{status}");
            assert!(Reason::Unavailable.retryable());
        }
        for status in [400, 401, 403, 404, 413, 500] {
            let f = reply(status, Some("1")).unwrap();
            assert_eq!(f.reason, Reason::Rejected, "{status}");
            assert!(!f.reason.retryable(), "{status} is never retried");
        }
        let grpc =
            |code: &str| classify_grpc(&format!("TonicTracesClient export failed with gRPC code: {code}: details"));
        assert_eq!(grpc("Unavailable").reason, Reason::Unavailable);
        assert_eq!(grpc("DeadlineExceeded").reason, Reason::Timeout);
        assert_eq!(grpc("ResourceExhausted").reason, Reason::Throttled);
        assert_eq!(grpc("InvalidArgument").reason, Reason::Rejected);
        assert_eq!(classify_grpc("something else").reason, Reason::Failed);
    }

    #[test]
    fn backoff_doubles_with_jitter_honours_retry_after_and_stops_at_shutdown() {
        let retry = Retry::new(Duration::from_secs(30));
        let mut previous_max = Duration::ZERO;
        for n in 0..8u32 {
            let d = retry.failed(None);
            let full = FIRST_DELAY.saturating_mul(1 << n).min(MAX_DELAY);
            assert!(d >= full / 2 && d <= full, "failure {n}: {d:?} not in [{:?}, {full:?}]", full / 2);
            previous_max = previous_max.max(d);
        }
        assert!(previous_max <= MAX_DELAY);
        assert!(retry.failed(Some(Duration::from_secs(7))) >= MAX_DELAY / 2, "never less than the backoff");
        retry.succeeded();
        assert_eq!(retry.failed(Some(Duration::from_secs(7))), Duration::from_secs(7));
        assert_eq!(retry.failed(Some(Duration::from_secs(3600))), MAX_RETRY_AFTER);
        retry.succeeded();
        assert!(retry.failed(Some(Duration::ZERO)) >= FIRST_DELAY / 2, "Retry-After: 0 is no tight loop");
        retry.succeeded();
        assert!(retry.failed(None) <= FIRST_DELAY, "a success starts the backoff again");
        // Shutdown cuts a wait short, from another thread.
        let retry = std::sync::Arc::new(retry);
        let stopper = retry.clone();
        let t = std::thread::spawn(move || stopper.stop());
        assert!(!retry.sleep(Duration::from_secs(3600)), "the wait ends at shutdown");
        t.join().unwrap();
        assert!(!retry.sleep(Duration::from_secs(3600)), "and later waits do not start");
    }
}
