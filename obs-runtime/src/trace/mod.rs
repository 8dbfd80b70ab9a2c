//! Spans: our own lean pipeline, exported with the OpenTelemetry SDK's OTLP exporter.
//!
//! A span's context lives in a thread-local while it is entered; a sampled span records into a
//! value on the caller's stack (or in the instrumented future) and, when it ends, moves into a
//! bounded lock-free queue. An exporter thread turns queued spans into `SpanData` and sends them
//! with `opentelemetry-otlp`. Nothing on the request path waits for the network, allocates for a
//! span without fields, or takes a lock (see `docs/design/tracing.md`).

pub(crate) mod bridge;
pub(crate) mod encode;
pub(crate) mod export;
mod propagation;
mod resource;
pub(crate) mod sampling;
pub(crate) mod site;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use opentelemetry::trace::Status;
use opentelemetry::{KeyValue, Value};

pub(crate) use export::{Pipeline, pipeline};
pub(crate) use propagation::baggage_attributes;
pub use propagation::{
    InRemote, RemoteContext, baggage, outgoing_headers, traceparent, tracestate, with_current_context,
};
pub(crate) use site::{Entered, Instrumented, InstrumentedCheck, InstrumentedResult, Kind, Level, SpanSite, SpanState};

/// Spans of a level below this are not started: the environment's minimum level while spans are
/// enabled, `u8::MAX` while they are off (before `init`, with `ENABLE_OBSERVABILITY=false`, after
/// shutdown). One load decides, so a disabled span costs almost nothing.
static GATE: AtomicU8 = AtomicU8::new(u8::MAX);

pub(crate) fn set_gate(enabled: bool) {
    GATE.store(if enabled { MIN_LEVEL.load(Ordering::Relaxed) } else { u8::MAX }, Ordering::Relaxed);
}
/// Root spans whose trace id, read as explained in [`sampled`], falls below this are sampled.
static THRESHOLD: AtomicU64 = AtomicU64::new(0);

// The span a thread is in lives in `context` (below `metrics`, which reads it for exemplars).
pub(crate) use crate::context::{Ctx, SPAN as CURRENT};

thread_local! {
    static RNG: Cell<u64> = const { Cell::new(0) };
    /// A context the next root span links to (a background task's origin).
    static PENDING_LINK: Cell<Option<Ctx>> = const { Cell::new(None) };
}

/// A fast per-thread generator (splitmix64), seeded from the OS-random `RandomState`.
fn next_u64() -> u64 {
    let [x] = next_u64s();
    x
}

/// `N` draws of [`next_u64`] for one look-up of the thread's state (a new root's trace and span
/// ids).
#[inline(always)]
fn next_u64s<const N: usize>() -> [u64; N] {
    RNG.with(|r| {
        let mut x = r.get();
        if x == 0 {
            x = seed();
        }
        let out = std::array::from_fn(|_| {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        });
        r.set(x);
        out
    })
}

#[cold]
fn seed() -> u64 {
    use std::hash::BuildHasher as _;
    std::collections::hash_map::RandomState::new().hash_one(std::thread::current().id()) | 1
}

/// 128 random bits (request ids).
pub(crate) fn random_u128() -> u128 {
    ((next_u64() as u128) << 64) | next_u64() as u128
}

/// A random (version 4) UUID, `8-4-4-4-12` lower-case hex digits.
pub(crate) fn uuid_v4() -> String {
    let r = random_u128();
    let r = (r & !(0xF000u128 << 64) | (0x4000u128 << 64)) & !(0xC000u128 << 48) | (0x8000u128 << 48);
    let hex = format!("{r:032x}");
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// Makes `tracestate` the thread's current one; returns the previous one.
pub(crate) fn swap_tracestate(tracestate: Option<std::sync::Arc<str>>) -> Option<std::sync::Arc<str>> {
    propagation::TRACESTATE.with(|t| t.replace(tracestate))
}

fn new_span_id() -> u64 {
    loop {
        let id = next_u64();
        if id != 0 {
            return id;
        }
    }
}

/// The head decision for a new trace: the low 64 bits of the trace id against the threshold, as
/// OpenTelemetry's `TraceIdRatioBased` does, so services sharing a ratio agree.
#[inline]
fn sampled(trace_id: u128) -> bool {
    ((trace_id as u64) >> 1) < THRESHOLD.load(Ordering::Relaxed)
}

pub(crate) fn threshold_for(ratio: f64) -> u64 {
    if ratio >= 1.0 { u64::MAX } else { (ratio.max(0.0) * (1u64 << 63) as f64) as u64 }
}

/// A sampled span being recorded.
pub(crate) struct Recording {
    pub(crate) ctx: Ctx,
    pub(crate) parent_span_id: u64,
    pub(crate) name: &'static str,
    pub(crate) start: Instant,
    pub(crate) attributes: Vec<KeyValue>,
    pub(crate) dropped_attributes: u32,
    pub(crate) status: Status,
    pub(crate) events: Vec<(std::borrow::Cow<'static, str>, Instant, Vec<KeyValue>)>,
    /// Spans of other traces this one follows from (trace id, span id, sampled).
    pub(crate) links: Vec<Ctx>,
    /// The W3C `tracestate` the trace arrived with.
    pub(crate) trace_state: Option<std::sync::Arc<str>>,
    /// The call site's (`#[traced_span(.., kind = "client")]`; the HTTP layer's server spans,
    /// database client spans, task producer and consumer spans).
    pub(crate) kind: Kind,
    /// Whether the parent came from another process (`traceparent`).
    pub(crate) parent_remote: bool,
    /// Its polls spell its id for the profiler (`SpanState::mark_profiled`).
    pub(crate) profiled: bool,
}

/// The environment's minimum span level (debug in development, info elsewhere).
static MIN_LEVEL: AtomicU8 = AtomicU8::new(Level::Debug as u8);

/// `repr(u8)`: the variant is a byte of its own. As a niche (the compiler's choice, in a 16-byte
/// field of `Active`), testing for `Off` read 16 bytes just written as two 8-byte stores, which
/// stalled on store forwarding: two thirds of the caller's time in an unsampled span on an AMD
/// EPYC (docs/design/overhead.md).
#[repr(u8)]
enum State {
    /// Observability off, or the span already ended.
    Off,
    /// Not sampled: only its ids are propagated.
    Unsampled(Ctx),
    /// Sampled or watched. `ManuallyDrop` so that `State` has no drop glue: a disabled span then
    /// costs no call at its end; `SpanState`'s `Drop` submits or drops it.
    Held(ManuallyDrop<Active>),
}

/// What a span records into. It stays in the span's own state (the caller's frame or the
/// instrumented future); nothing else points to it. `record` from inside the body goes through
/// the thread's `PENDING` buffer, which the span drains when it is left.
pub(crate) enum Active {
    /// A sampled span.
    Rec(Recording),
    /// The root of a trace the head sampler dropped, watched for an error or a long duration.
    Tail(TailRoot),
}

impl Active {
    fn ctx(&self) -> Ctx {
        match self {
            Active::Rec(r) => r.ctx,
            Active::Tail(t) => t.ctx,
        }
    }

    fn fail(&mut self, message: String, kind: &'static str) {
        match self {
            Active::Rec(r) => r.fail(message, kind),
            Active::Tail(t) => t.error = Some((message, kind)),
        }
    }

    fn finish(self) {
        match self {
            Active::Rec(r) => export::submit(r),
            Active::Tail(t) => t.finish(),
        }
    }
}

/// An unsampled root span, watched for an error or a long duration (a coarse clock: a few ns).
pub(crate) struct TailRoot {
    ctx: Ctx,
    name: &'static str,
    start_ms: u64,
    /// The error and its type.
    error: Option<(String, &'static str)>,
    /// The trace a background task's root links to.
    link: Option<Ctx>,
    /// Attributes set once the root is known to be kept (see [`SpanState::kept_by_tail`]).
    attributes: Vec<KeyValue>,
    kind: Kind,
    /// The caller's span, for a root of this service in a caller's trace (a sampler that is not
    /// parent-based decided it); 0 for a trace that starts here.
    parent: u64,
    /// A span of this root asked to keep the trace (a slow query run by the root itself).
    keep_asked: bool,
}

use crate::config::{Limits, MAX_ATTRIBUTES};

static ATTRIBUTE_LIMIT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(MAX_ATTRIBUTES);
static VALUE_LENGTH_LIMIT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(usize::MAX);
static EVENT_LIMIT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(MAX_ATTRIBUTES);
static LINK_LIMIT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(MAX_ATTRIBUTES);
static EVENT_ATTRIBUTE_LIMIT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(MAX_ATTRIBUTES);

/// Whether W3C Trace Context is read from incoming requests (`OTEL_PROPAGATORS`).
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn propagating() -> bool {
    propagation::PROPAGATE.load(Ordering::Relaxed)
}

/// Turns W3C Trace Context on the wire on or off (at `init`).
pub(crate) fn set_propagation(trace_context: bool, baggage: bool) {
    propagation::PROPAGATE.store(trace_context, Ordering::Relaxed);
    propagation::BAGGAGE.store(baggage, Ordering::Relaxed);
}

/// The valid W3C `baggage` of a request's header fields, if baggage is passed on.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn incoming_baggage<'a>(fields: impl IntoIterator<Item = &'a str>) -> Option<std::sync::Arc<str>> {
    if !propagation::BAGGAGE.load(Ordering::Relaxed) {
        return None;
    }
    propagation::valid_baggage(fields)
}

/// Applies the limits (at `init`).
pub(crate) fn set_limits(limits: Limits) {
    ATTRIBUTE_LIMIT.store(limits.attributes.min(MAX_ATTRIBUTES), Ordering::Relaxed);
    VALUE_LENGTH_LIMIT.store(limits.value_length, Ordering::Relaxed);
    EVENT_LIMIT.store(limits.events.min(MAX_ATTRIBUTES), Ordering::Relaxed);
    LINK_LIMIT.store(limits.links.min(MAX_ATTRIBUTES), Ordering::Relaxed);
    EVENT_ATTRIBUTE_LIMIT.store(limits.event_attributes.min(MAX_ATTRIBUTES), Ordering::Relaxed);
}

/// `value` within the value length limit: strings (and strings in arrays) cut at a character
/// boundary.
fn limited(value: Value) -> Value {
    let max = VALUE_LENGTH_LIMIT.load(Ordering::Relaxed);
    if max == usize::MAX {
        return value;
    }
    let cut = |s: &str| -> Option<String> {
        if s.len() <= max {
            return None;
        }
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        Some(s[..end].to_owned())
    };
    match value {
        Value::String(s) => match cut(s.as_str()) {
            Some(short) => Value::String(short.into()),
            None => Value::String(s),
        },
        Value::Array(opentelemetry::Array::String(items)) => Value::Array(opentelemetry::Array::String(
            items.into_iter().map(|s| cut(s.as_str()).map(Into::into).unwrap_or(s)).collect(),
        )),
        other => other,
    }
}

/// Attributes `record` added on this thread and not yet taken by their span (bounded).
const MAX_PENDING: usize = 1024;

thread_local! {
    /// `(span id, attribute)` from `record`, taken by the span when it is left.
    static PENDING: RefCell<Vec<(u64, KeyValue)>> = const { RefCell::new(Vec::new()) };
}

/// Whether unsampled roots are watched (head sampling below 100 %, tail keeping on).
static TAIL_WATCH: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Whether tail keeping is configured at all (errors or slow), for `set_sampler`.
static TAIL_CONFIGURED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Whether a watched root that failed is kept.
static TAIL_KEEP_ERRORS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Unsampled roots lasting at least this many ms are kept; `u64::MAX` keeps none for slowness.
static TAIL_SLOW_MS: AtomicU64 = AtomicU64::new(u64::MAX);

/// Traces a span inside them asked to keep (a slow database query): the low 64 bits of their
/// trace ids, written round robin. A watched root looks its trace up when it ends. A slot is
/// freed by the root that finds it; one whose root is elsewhere (a caller's process) is overwritten
/// later. A false match keeps one more trace, which is harmless.
static KEEP_ASKED: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];
/// Slots written so far (the next one to write, modulo 64); 0 until a span first asks, so that
/// roots skip the lookup entirely in a service whose queries are never slow.
static KEEP_ASKED_NEXT: AtomicU64 = AtomicU64::new(0);

/// Asks the watched root of `trace_id` to keep its trace when it ends, with the reason
/// `slow_query`.
#[cfg_attr(not(feature = "sqlx"), allow(dead_code))]
fn ask_keep(trace_id: u128) {
    let low = (trace_id as u64).max(1);
    let slot = KEEP_ASKED_NEXT.fetch_add(1, Ordering::Relaxed) as usize % KEEP_ASKED.len();
    KEEP_ASKED[slot].store(low, Ordering::Relaxed);
}

/// Whether a span of `trace_id` asked to keep it; `take` frees its slot.
fn keep_asked(trace_id: u128, take: bool) -> bool {
    if KEEP_ASKED_NEXT.load(Ordering::Relaxed) == 0 {
        return false;
    }
    let low = (trace_id as u64).max(1);
    let mut found = false;
    for slot in &KEEP_ASKED {
        if slot.load(Ordering::Relaxed) == low {
            found = true;
            if !take {
                break;
            }
            let _ = slot.compare_exchange(low, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
    found
}

/// Milliseconds of a coarse monotonic clock: reading it costs a few ns (the precise clock costs
/// about 33 ns on the reference machine), its resolution is a few ms.
#[inline]
fn coarse_ms() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid clock id and a valid out pointer.
        if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } == 0 {
            return ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000;
        }
    }
    static ANCHOR: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    ANCHOR.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl SpanState {
    /// Starts a span as a child of the thread's current one (or a new trace).
    #[inline]
    pub fn start(site: &'static SpanSite) -> SpanState {
        if (site.level as u8) < GATE.load(Ordering::Relaxed) {
            return SpanState(State::Off);
        }
        Self::start_enabled(site, None)
    }

    /// Starts the HTTP layer's server span: sampling rules may match its route and method.
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn start_http(site: &'static SpanSite, http: &sampling::Http<'_>) -> SpanState {
        if (site.level as u8) < GATE.load(Ordering::Relaxed) {
            return SpanState(State::Off);
        }
        Self::start_enabled(site, Some(http))
    }

    #[inline(never)]
    fn start_enabled(site: &'static SpanSite, http: Option<&sampling::Http<'_>>) -> SpanState {
        let parent = CURRENT.with(Cell::get);
        // The first span of this service in a caller's trace, under a sampler that is not
        // parent-based: ours decides, as for a trace that starts here.
        let decides_here = parent.trace_id == 0
            || (!PARENT_BASED.load(Ordering::Relaxed) && propagation::IN_REMOTE.with(Cell::get) == parent.span_id);
        // A new trace's ids are drawn together; a child's span id alone.
        let (drawn_trace, drawn_span) = if parent.trace_id == 0 {
            let [hi, lo, span] = next_u64s();
            ((hi as u128) << 64 | lo as u128, span)
        } else {
            (0, next_u64())
        };
        let (trace_id, sampled) = if parent.trace_id == 0 {
            let t = if drawn_trace == 0 { 1 } else { drawn_trace };
            // A background task's root follows the trace that enqueued it, as a child follows
            // its parent under a parent-based sampler: behind the link of every sampled request
            // is its task's trace, and tasks are sampled at the requests' ratio, not at its square.
            let follows = match PENDING_LINK.with(Cell::get) {
                Some(link) if link.trace_id != 0 && PARENT_BASED.load(Ordering::Relaxed) => Some(link.sampled()),
                _ => None,
            };
            (t, follows.unwrap_or_else(|| sampling::decide(t, site, http)))
        } else if decides_here {
            (parent.trace_id, sampling::decide(parent.trace_id, site, http))
        } else {
            (parent.trace_id, parent.sampled())
        };
        // A trace that starts here has a random id; a caller's keeps the flag it came with.
        let random = parent.trace_id == 0 || parent.random();
        let ctx = Ctx::new(trace_id, if drawn_span == 0 { new_span_id() } else { drawn_span }, sampled, random);
        if !sampled {
            if decides_here && TAIL_WATCH.load(Ordering::Relaxed) {
                return SpanState(State::Held(ManuallyDrop::new(Active::Tail(TailRoot {
                    ctx,
                    name: site.name,
                    start_ms: coarse_ms(),
                    error: None,
                    link: PENDING_LINK.with(Cell::get),
                    attributes: Vec::new(),
                    kind: site.kind,
                    parent: parent.span_id,
                    keep_asked: false,
                }))));
            }
            return SpanState(State::Unsampled(ctx));
        }
        let link = if parent.trace_id == 0 { PENDING_LINK.with(|l| l.take()) } else { None };
        SpanState(State::Held(ManuallyDrop::new(Active::Rec(Recording {
            ctx,
            parent_span_id: parent.span_id,
            name: site.name,
            start: Instant::now(),
            attributes: Vec::new(),
            dropped_attributes: 0,
            status: Status::Unset,
            events: Vec::new(),
            links: link.into_iter().take(LINK_LIMIT.load(Ordering::Relaxed)).collect(),
            trace_state: if link.is_none() { propagation::TRACESTATE.with(|t| t.borrow().clone()) } else { None },
            kind: site.kind,
            parent_remote: parent.trace_id != 0 && propagation::IN_REMOTE.with(Cell::get) == parent.span_id,
            profiled: false,
        }))))
    }

    /// Whether attributes set now are kept.
    #[inline]
    pub fn is_recording(&self) -> bool {
        matches!(&self.0, State::Held(a) if matches!(**a, Active::Rec(_)))
    }

    /// Sets an attribute (only when recording; check [`is_recording`](Self::is_recording) before
    /// computing an expensive value). On an unsampled root that is going to be kept after all
    /// (see `kept_by_tail`), the attribute is kept too.
    pub fn set_attribute(&mut self, key: &'static str, value: impl Into<Value>) {
        let State::Held(a) = &mut self.0 else { return };
        match &mut **a {
            Active::Rec(r) => r.push_attribute(KeyValue::new(key, crate::scrub::attribute(key, value.into()))),
            Active::Tail(t)
                if t.attributes.len() < ATTRIBUTE_LIMIT.load(Ordering::Relaxed) && t.keep_reason().is_some() =>
            {
                t.attributes.push(KeyValue::new(key, limited(crate::scrub::attribute(key, value.into()))))
            }
            Active::Tail(_) => {}
        }
    }

    /// [`set_attribute`](Self::set_attribute) for a value obs made itself and knows to be clean
    /// (a database span's literal-free text, a system name): not scanned again.
    #[cfg_attr(not(feature = "sqlx"), allow(dead_code))]
    pub(crate) fn set_clean_attribute(&mut self, key: &'static str, value: impl Into<Value>) {
        let State::Held(a) = &mut self.0 else { return };
        match &mut **a {
            Active::Rec(r) => r.push_attribute(KeyValue::new(key, value.into())),
            Active::Tail(t)
                if t.attributes.len() < ATTRIBUTE_LIMIT.load(Ordering::Relaxed) && t.keep_reason().is_some() =>
            {
                t.attributes.push(KeyValue::new(key, limited(value.into())))
            }
            Active::Tail(_) => {}
        }
    }

    /// Adds an attribute already scrubbed (a bridged `tracing` field), when recording.
    pub(crate) fn push_clean(&mut self, kv: KeyValue) {
        if let State::Held(a) = &mut self.0
            && let Active::Rec(r) = &mut **a
        {
            r.push_attribute(kv);
        }
    }

    /// Adds an event (a bridged `tracing` event: its message and its scrubbed fields), when
    /// recording and under the event limit.
    pub(crate) fn add_event(&mut self, name: std::borrow::Cow<'static, str>, mut attributes: Vec<KeyValue>) {
        if let State::Held(a) = &mut self.0
            && let Active::Rec(r) = &mut **a
            && r.events.len() < EVENT_LIMIT.load(Ordering::Relaxed)
        {
            attributes.truncate(EVENT_ATTRIBUTE_LIMIT.load(Ordering::Relaxed));
            let attributes = attributes.into_iter().map(|kv| KeyValue::new(kv.key, limited(kv.value))).collect();
            r.events.push((name, Instant::now(), attributes));
        }
    }

    /// A sampled span that is never exported (for unit tests of what spans record).
    #[cfg(test)]
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn test_recording() -> SpanState {
        SpanState(State::Held(ManuallyDrop::new(Active::Rec(Recording {
            ctx: Ctx::new(1, 1, true, true),
            parent_span_id: 0,
            name: "test",
            start: Instant::now(),
            attributes: Vec::new(),
            dropped_attributes: 0,
            status: Status::Unset,
            events: Vec::new(),
            links: Vec::new(),
            trace_state: None,
            kind: Kind::Internal,
            parent_remote: false,
            profiled: false,
        }))))
    }

    /// The attributes recorded so far (unit tests).
    #[cfg(test)]
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn test_attributes(&self) -> Vec<KeyValue> {
        match &self.0 {
            State::Held(a) => match &**a {
                Active::Rec(r) => r.attributes.clone(),
                Active::Tail(t) => t.attributes.clone(),
            },
            _ => Vec::new(),
        }
    }

    /// Sets an attribute holding an id the framework generated or validated (a request id): not
    /// scanned as free text, where a run of hex digits can pass for a card number and break the
    /// join between logs and traces. The value is still redacted if its key is sensitive.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn set_id_attribute(&mut self, key: &'static str, value: Value) {
        let State::Held(a) = &mut self.0 else { return };
        let value = match crate::scrub::classify_static(key) {
            crate::scrub::KeyClass::Redact => Value::from(crate::scrub::REDACTED),
            _ => value,
        };
        match &mut **a {
            Active::Rec(r) => r.push_attribute(KeyValue::new(key, value)),
            Active::Tail(t)
                if t.attributes.len() < ATTRIBUTE_LIMIT.load(Ordering::Relaxed) && t.keep_reason().is_some() =>
            {
                t.attributes.push(KeyValue::new(key, limited(value)))
            }
            Active::Tail(_) => {}
        }
    }

    /// Whether this is an unsampled root that would be kept if it ended now (it failed, or it is
    /// slow): the HTTP layer and the task wrapper then add the attributes they skipped at the
    /// start, so that a kept root is as searchable as a sampled one.
    pub(crate) fn kept_by_tail(&self) -> bool {
        matches!(&self.0, State::Held(a) if matches!(&**a, Active::Tail(t) if t.keep_reason().is_some()))
    }

    /// Asks the root of this span's trace to keep it under the tail rule even though it was
    /// not sampled, as a slow database query does (`obs.sampling.kept = "slow_query"` on the
    /// root). Only the root is kept, as for an error or a slow root: the children of an unsampled
    /// trace were not recorded. Nothing to do for a sampled span, whose trace is exported anyway,
    /// or when tail keeping is off.
    #[cfg_attr(not(feature = "sqlx"), allow(dead_code))]
    pub(crate) fn keep_trace(&mut self) {
        // Only where slow traces are kept at all (`keep_slow_traces(None)` keeps none).
        if !TAIL_WATCH.load(Ordering::Relaxed) || TAIL_SLOW_MS.load(Ordering::Relaxed) == u64::MAX {
            return;
        }
        match &mut self.0 {
            State::Unsampled(c) => ask_keep(c.trace_id),
            State::Held(a) => {
                if let Active::Tail(t) = &mut **a {
                    t.keep_asked = true;
                }
            }
            State::Off => {}
        }
    }

    /// The ids a metric recorded for this span may keep as its exemplar: those of a sampled span,
    /// or of an unsampled root that is kept (it failed, or it is slow), so that exemplars only
    /// point to exported traces. Ask when the outcome is known (after [`fail_with`](Self::fail_with)).
    pub(crate) fn exemplar_ids(&self) -> Option<crate::context::SpanIds> {
        match &self.0 {
            State::Held(a) => match &**a {
                Active::Rec(r) => Some(r.ctx),
                // Not from the table of asks (a slot another trace may take before this root
                // ends): an exemplar must never name a root that is not exported.
                Active::Tail(t) => t.kept_for_sure().then_some(t.ctx),
            },
            _ => None,
        }
        .map(|c| crate::context::SpanIds { trace_id: c.trace_id, span_id: c.span_id })
    }

    pub(crate) fn finish(&mut self) {
        let State::Held(a) = &mut self.0 else { return };
        // A watched root that is not kept (nearly all of them) is dropped where it is: moving the
        // 208-byte state out to finish it cost a quarter of a sampled-out root on an AMD EPYC.
        if let Active::Tail(t) = &mut **a
            && t.kept_at_end().is_none()
        {
            // SAFETY: dropped once: the state is `Off` from here on (and `State` has no drop
            // glue, so the assignment drops nothing).
            unsafe { ManuallyDrop::drop(a) };
            self.0 = State::Off;
            return;
        }
        if let State::Held(a) = std::mem::replace(&mut self.0, State::Off) {
            ManuallyDrop::into_inner(a).finish();
        }
    }

    /// Enters the span on this thread until the returned guard drops, which also ends it.
    #[inline]
    pub fn enter(&mut self) -> Entered<'_> {
        if let State::Off = self.0 {
            // Kept tiny: this is all a disabled span costs, inlined into the caller.
            return Entered { state: self, prev: Prev::NOT_ENTERED, was_panicking: false };
        }
        self.enter_enabled()
    }

    #[inline(never)]
    fn enter_enabled(&mut self) -> Entered<'_> {
        let prev = self.swap_in();
        let was_panicking = prev.entered && std::thread::panicking();
        Entered { state: self, prev, was_panicking }
    }

    /// Makes the span current on this thread.
    #[inline]
    pub(crate) fn swap_in(&self) -> Prev {
        let ctx = match &self.0 {
            State::Off => return Prev::NOT_ENTERED,
            State::Unsampled(c) => *c,
            State::Held(a) => a.ctx(),
        };
        Prev { ctx: CURRENT.with(|c| c.replace(ctx)), entered: true }
    }

    /// Undoes `swap_in`, and takes what `record` left for this span.
    #[inline]
    pub(crate) fn swap_out(&mut self, prev: Prev) {
        if !prev.entered {
            return;
        }
        CURRENT.with(|c| c.set(prev.ctx));
        if let State::Held(a) = &mut self.0
            && let Active::Rec(r) = &mut **a
        {
            r.take_pending();
        }
    }

    /// Marks the span failed with `out`'s error, if any.
    #[inline]
    pub fn record_result<R: crate::outcome::TracedResult + ?Sized>(&mut self, out: &R) {
        if let State::Held(a) = &mut self.0
            && let Some(e) = out.traced_error()
        {
            a.fail(e.to_string(), out.traced_error_type());
        }
    }

    /// Marks the span failed with the text `error` gives, computed only if the span records it.
    #[inline]
    pub fn fail_with(&mut self, error: impl FnOnce() -> String) {
        self.fail_typed("error", error)
    }

    /// As [`fail_with`](Self::fail_with), with the error's type (`exception.type`).
    #[inline]
    pub fn fail_typed(&mut self, kind: &'static str, error: impl FnOnce() -> String) {
        if let State::Held(a) = &mut self.0 {
            a.fail(error(), kind);
        }
    }
}

/// What a thread had entered before a span was entered, if the span was entered (a span off is
/// not). A struct with its own flag: it replaced an `Option<Ctx>` while `Ctx` still had `bool`
/// flags, whose niche held the tag and made LLVM copy the context with overlapping moves that
/// stalled on store forwarding (docs/design/overhead.md). `Ctx` has no niche now, so an `Option`
/// would also carry its own tag; the figures in overhead.md were measured with this struct.
#[derive(Clone, Copy)]
pub(crate) struct Prev {
    ctx: Ctx,
    entered: bool,
}

impl Prev {
    const NOT_ENTERED: Prev = Prev { ctx: Ctx::NONE, entered: false };

    /// This, leaving "not entered" in its place (what is restored is restored once).
    fn take(&mut self) -> Prev {
        std::mem::replace(self, Prev::NOT_ENTERED)
    }
}

impl TailRoot {
    /// Why the root is kept if it ends now, if it is.
    fn keep_reason(&self) -> Option<(&'static str, u64)> {
        let elapsed = coarse_ms().saturating_sub(self.start_ms);
        if self.error.is_some() && TAIL_KEEP_ERRORS.load(Ordering::Relaxed) {
            Some(("error", elapsed))
        } else if elapsed >= TAIL_SLOW_MS.load(Ordering::Relaxed) {
            Some(("slow", elapsed))
        } else if self.keep_asked || keep_asked(self.ctx.trace_id, false) {
            Some(("slow_query", elapsed))
        } else {
            None
        }
    }

    /// Whether the root is kept if it ends now, for a reason that cannot go away before it does:
    /// its error, its duration, or an ask it holds itself.
    fn kept_for_sure(&self) -> bool {
        let elapsed = coarse_ms().saturating_sub(self.start_ms);
        (self.error.is_some() && TAIL_KEEP_ERRORS.load(Ordering::Relaxed))
            || elapsed >= TAIL_SLOW_MS.load(Ordering::Relaxed)
            || self.keep_asked
    }

    /// Why the root is kept now that it ends, if it is; frees the slot a span of its trace took
    /// in the table of asks, whatever else keeps it.
    #[inline]
    fn kept_at_end(&mut self) -> Option<(&'static str, u64)> {
        self.keep_asked |= keep_asked(self.ctx.trace_id, true);
        self.keep_reason()
    }

    /// Keeps the root after all if it failed or was slow, as one span marked with the reason
    /// (the slot in the table of asks was freed by [`kept_at_end`](Self::kept_at_end), whose
    /// answer this repeats: an error, a duration and an ask held by the root only stay).
    fn finish(self) {
        let Some((reason, elapsed)) = self.keep_reason() else { return };
        let end = Instant::now();
        let mut attributes = self.attributes;
        attributes.push(KeyValue::new("obs.sampling.kept", reason));
        let mut r = Recording {
            ctx: self.ctx.with_sampled(true),
            parent_span_id: self.parent,
            name: self.name,
            start: end.checked_sub(std::time::Duration::from_millis(elapsed)).unwrap_or(end),
            attributes,
            dropped_attributes: 0,
            status: Status::Unset,
            events: Vec::new(),
            links: self.link.into_iter().take(LINK_LIMIT.load(Ordering::Relaxed)).collect(),
            trace_state: None,
            kind: self.kind,
            parent_remote: self.parent != 0,
            profiled: false,
        };
        if let Some((e, kind)) = self.error {
            r.fail(e, kind);
        }
        export::submit(r);
    }
}

impl Drop for SpanState {
    #[inline]
    fn drop(&mut self) {
        if let State::Held(_) = self.0 {
            self.finish_outlined();
        }
    }
}

impl SpanState {
    #[inline(never)]
    fn finish_outlined(&mut self) {
        self.finish();
    }
}

impl Recording {
    /// Marks the span failed, with an `exception` event carrying the error's type and message
    /// (OpenTelemetry's exception conventions).
    fn fail(&mut self, message: String, kind: &'static str) {
        let message = match crate::scrub::scrub_text(&message) {
            std::borrow::Cow::Borrowed(_) => message,
            std::borrow::Cow::Owned(scrubbed) => scrubbed,
        };
        if self.events.len() < EVENT_LIMIT.load(Ordering::Relaxed) {
            let mut attributes = vec![
                KeyValue::new("exception.type", limited(Value::from(kind))),
                KeyValue::new("exception.message", limited(Value::from(message.clone()))),
            ];
            attributes.truncate(EVENT_ATTRIBUTE_LIMIT.load(Ordering::Relaxed));
            self.events.push(("exception".into(), Instant::now(), attributes));
        }
        self.status = Status::error(message);
    }

    #[inline]
    fn take_pending(&mut self) {
        let id = self.ctx.span_id;
        PENDING.with(|p| {
            let Ok(mut p) = p.try_borrow_mut() else { return };
            if p.is_empty() {
                return;
            }
            let mut i = 0;
            while i < p.len() {
                if p[i].0 == id {
                    let (_, kv) = p.swap_remove(i);
                    self.push_attribute(kv);
                } else {
                    i += 1;
                }
            }
        });
    }

    fn push_attribute(&mut self, kv: KeyValue) {
        if self.attributes.len() < ATTRIBUTE_LIMIT.load(Ordering::Relaxed) {
            self.attributes.push(KeyValue::new(kv.key, limited(kv.value)));
        } else {
            self.dropped_attributes += 1;
        }
    }
}

impl Entered<'_> {
    /// Marks the span failed with `out`'s error, if any (the `err` option).
    #[inline]
    pub fn record_result<R: crate::outcome::TracedResult + ?Sized>(&mut self, out: &R) {
        self.state.record_result(out)
    }

    /// Marks the span failed with the text `error` gives, computed only if the span records it.
    #[inline]
    pub fn fail_with(&mut self, error: impl FnOnce() -> String) {
        self.state.fail_with(error)
    }

    /// As [`fail_with`](Self::fail_with), with the error's type (`exception.type`).
    #[inline]
    pub fn fail_typed(&mut self, kind: &'static str, error: impl FnOnce() -> String) {
        self.state.fail_typed(kind, error)
    }
}

impl Drop for Entered<'_> {
    #[inline]
    fn drop(&mut self) {
        // `prev` is not entered exactly when the span was off at `enter`: no need to look at the state.
        if !self.prev.entered {
            return;
        }
        self.leave();
    }
}

impl Entered<'_> {
    #[inline(never)]
    fn leave(&mut self) {
        self.state.swap_out(self.prev.take());
        if std::thread::panicking() && !self.was_panicking {
            self.state.mark_panicked();
        }
        self.state.finish();
    }
}

impl SpanState {
    /// Marks the span failed with `message` (scrubbed before export), an error of type `kind`
    /// (`exception.type`).
    pub(crate) fn set_error(&mut self, message: String, kind: &'static str) {
        if let State::Held(a) = &mut self.0 {
            a.fail(message, kind);
        }
    }

    /// Runs `f` inside this span, with `bound` as the log context and `tracestate` as the trace
    /// state, all restored afterwards (also when `f` panics): what the HTTP layer and the task
    /// wrapper do around each poll and their closing log line.
    pub(crate) fn run_in<R>(
        &mut self,
        bound: Option<std::sync::Arc<crate::context::Bound>>,
        tracestate: Option<std::sync::Arc<str>>,
        f: impl FnOnce() -> R,
    ) -> R {
        struct Restore<'a> {
            span: &'a mut SpanState,
            prev: Prev,
            prev_ts: Option<std::sync::Arc<str>>,
            prev_bound: Option<std::sync::Arc<crate::context::Bound>>,
        }
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                swap_tracestate(self.prev_ts.take());
                self.span.swap_out(self.prev.take());
                crate::context::swap(self.prev_bound.take());
            }
        }
        let slot = bound.as_ref().map_or(0, |b| b.profile_slot());
        let profiled = self.spelled_span();
        let prev_bound = crate::context::swap(bound);
        let prev = self.swap_in();
        let prev_ts = swap_tracestate(tracestate);
        let _restore = Restore { span: self, prev, prev_ts, prev_bound };
        // CPU samples taken in `f` carry the endpoint or task name (a frame of its own), and
        // those of a sampled span its id (sixteen frames).
        match profiled {
            Some(id) => crate::profile::in_span(id, || crate::profile::in_slot(slot, f)),
            None => crate::profile::in_slot(slot, f),
        }
    }

    /// The id this span's polls spell for the profiler: a span [marked](Self::mark_profiled).
    #[inline]
    fn spelled_span(&self) -> Option<u64> {
        match &self.0 {
            State::Held(a) => match &**a {
                Active::Rec(r) if r.profiled => Some(r.ctx.span_id),
                _ => None,
            },
            _ => None,
        }
    }

    /// Marks a local root (the HTTP server span, a task's span; the first span of its trace in
    /// this process) as having a span profile, while continuous profiling is on: its polls then
    /// spell its id for the profiler, which puts it on the CPU samples taken in them
    /// (Pyroscope's span profiles; child spans' samples carry their root's, as Pyroscope's own
    /// integrations do), and it gets the `pyroscope.profile.id` attribute Grafana's
    /// traces-to-profiles looks for. Decided once, when the span starts.
    pub(crate) fn mark_profiled(&mut self) {
        if !crate::profile::span_ids_on() {
            return;
        }
        let State::Held(a) = &mut self.0 else { return };
        let Active::Rec(r) = &mut **a else { return };
        if r.parent_span_id != 0 && !r.parent_remote {
            return;
        }
        r.profiled = true;
        let id = r.ctx.span_id;
        self.set_clean_attribute("pyroscope.profile.id", format!("{id:016x}"));
    }

    /// Renames the span (the HTTP layer learns the route template after the request started;
    /// a database span is named by its query).
    #[cfg_attr(not(any(feature = "axum", feature = "sqlx", feature = "redis")), allow(dead_code))]
    pub(crate) fn rename(&mut self, name: &'static str) {
        if let State::Held(a) = &mut self.0 {
            match &mut **a {
                Active::Rec(r) => r.name = name,
                Active::Tail(t) => t.name = name,
            }
        }
    }

    fn mark_panicked(&mut self) {
        if let State::Held(a) = &mut self.0 {
            a.fail("panicked".into(), "panic");
        }
    }
}

impl<F> Instrumented<F> {
    /// `inner` inside `state` (started by the caller, at the `async fn`'s first poll).
    pub fn new(state: SpanState, inner: F) -> Self {
        Instrumented { inner: ManuallyDrop::new(inner), state }
    }

    /// Also marks the span failed when the output is an `Err` (the `err` option).
    pub fn record_errors(self) -> InstrumentedResult<F> {
        InstrumentedResult(self)
    }

    /// Calls `check` with the span and the output before the span ends (a `Result` output's
    /// error, without the `err` option).
    pub fn check_output<G: FnMut(&mut SpanState, &F::Output)>(self, check: G) -> InstrumentedCheck<F, G>
    where
        F: Future,
    {
        InstrumentedCheck(self, check)
    }
}

/// Leaves the span after a poll, even when the poll panics (and then marks the span failed).
struct Exit<'a> {
    state: &'a mut SpanState,
    prev: Prev,
    was_panicking: bool,
}

impl Drop for Exit<'_> {
    /// Leaves the span, whether the poll returned or panicked.
    fn drop(&mut self) {
        self.state.swap_out(self.prev.take());
        if std::thread::panicking() && !self.was_panicking {
            self.state.mark_panicked();
        }
    }
}

impl<F: Future> Instrumented<F> {
    /// Polls inside the span; on completion, `on_ready` sees the output, then the span ends.
    fn poll_with(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        on_ready: impl FnOnce(&mut SpanState, &F::Output),
    ) -> Poll<F::Output> {
        // SAFETY: `inner` is structurally pinned: never moved out, dropped in place only in
        // `Drop`; `state` is not pinned.
        let Instrumented { inner, state } = unsafe { self.get_unchecked_mut() };
        let inner = unsafe { Pin::new_unchecked(&mut **inner) };
        let prev = state.swap_in();
        let was_panicking = prev.entered && std::thread::panicking();
        let exit = Exit { state: &mut *state, prev, was_panicking };
        let poll = inner.poll(cx);
        drop(exit);
        if let Poll::Ready(out) = &poll {
            on_ready(state, out);
            state.finish();
        }
        poll
    }
}

impl<F: Future> Future for Instrumented<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.poll_with(cx, |_, _| {})
    }
}

impl<F: Future> Future for InstrumentedResult<F>
where
    F::Output: crate::outcome::TracedResult,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: structural pinning of the only field.
        let inner = unsafe { self.map_unchecked_mut(|s| &mut s.0) };
        inner.poll_with(cx, |state, out| state.record_result(out))
    }
}

impl<F: Future, G: FnMut(&mut SpanState, &F::Output)> Future for InstrumentedCheck<F, G> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the first field is structurally pinned, the second is not (never pinned: it is
        // only called through `&mut`), and neither is moved out.
        let this = unsafe { self.get_unchecked_mut() };
        let inner = unsafe { Pin::new_unchecked(&mut this.0) };
        let check = &mut this.1;
        inner.poll_with(cx, |state, out| check(state, out))
    }
}

impl<F> Drop for Instrumented<F> {
    fn drop(&mut self) {
        // Cancelled or completed: drop the inner future inside the span (its own spans end
        // first), then end this one.
        let prev = self.state.swap_in();
        // SAFETY: dropped exactly once, here; never used again.
        unsafe { ManuallyDrop::drop(&mut self.inner) };
        self.state.swap_out(prev);
        self.state.finish();
    }
}

/// Adds an attribute to the current span, if it is sampled: for values known only inside the body.
/// The value is converted (and scrubbed) only then.
///
/// ```
/// #[obs_runtime::traced_span("ticket.checkout")]
/// fn checkout(tier: u64, buyer: &str) -> u64 {
///     let price = tier * 500;
///     obs_runtime::trace::record("ticket.price_cents", price);
///     obs_runtime::trace::record("ticket.buyer", buyer); // an email in it becomes [EMAIL]
///     price
/// }
/// # checkout(3, "ana");
/// ```
pub fn record(key: &'static str, value: impl AttributeValue) {
    let current = CURRENT.with(Cell::get);
    if !current.sampled() {
        return;
    }
    // Converted before the buffer is borrowed: a conversion may itself record.
    let kv = KeyValue::new(key, crate::scrub::attribute(key, value.into_value()));
    PENDING.with(|p| {
        if let Ok(mut p) = p.try_borrow_mut()
            && p.len() < MAX_PENDING
        {
            p.push((current.span_id, kv));
        }
    });
}

/// A value [`record`] takes: integers of any width (an unsigned one past `i64::MAX` keeps its
/// digits, as a string), floats, booleans, strings (`&str`, `String`, `Cow<str>`,
/// `Arc<str>`), or an OpenTelemetry [`Value`].
pub trait AttributeValue {
    /// The OpenTelemetry value.
    fn into_value(self) -> Value;
}

macro_rules! attribute_values {
    ($($t:ty => |$v:ident| $e:expr),* $(,)?) => {$(
        impl AttributeValue for $t {
            #[inline]
            fn into_value(self) -> Value {
                let $v = self;
                $e
            }
        }
    )*};
}
attribute_values!(
    i8 => |v| Value::I64(v.into()), i16 => |v| Value::I64(v.into()), i32 => |v| Value::I64(v.into()),
    i64 => |v| Value::I64(v), isize => |v| Value::I64(v as i64),
    u8 => |v| Value::I64(v.into()), u16 => |v| Value::I64(v.into()), u32 => |v| Value::I64(v.into()),
    u64 => |v| i64::try_from(v).map_or_else(|_| v.to_string().into(), Value::I64),
    usize => |v| i64::try_from(v).map_or_else(|_| v.to_string().into(), Value::I64),
    f32 => |v| Value::F64(v.into()), f64 => |v| Value::F64(v), bool => |v| Value::Bool(v),
    String => |v| v.into(), &String => |v| v.clone().into(), &str => |v| v.to_owned().into(),
    std::borrow::Cow<'_, str> => |v| v.into_owned().into(), std::sync::Arc<str> => |v| Value::String(v.into()),
    Value => |v| v, opentelemetry::StringValue => |v| Value::String(v),
);

/// Whether a remote parent's sampled flag decides (`Config::parent_based`).
static PARENT_BASED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Takes trace's settings from `config` (at `init`): sampling, tail keeping, limits,
/// propagation and the lowest span level.
pub(crate) fn configure(config: &crate::config::Config) {
    let tail = config.keep_error_traces || config.keep_slow_traces.is_some();
    TAIL_CONFIGURED.store(tail, Ordering::Relaxed);
    sampling::set_rules(&config.sampling_rules);
    set_sampler(config.sampler);
    PARENT_BASED.store(config.parent_based, Ordering::Relaxed);
    set_limits(config.limits);
    set_propagation(config.propagate, config.baggage);
    propagation::set_baggage_attributes(&config.baggage_attributes);
    TAIL_KEEP_ERRORS.store(config.keep_error_traces, Ordering::Relaxed);
    let slow_ms = match config.keep_slow_traces {
        // Rounded up: a sub-millisecond threshold must not keep every root.
        Some(d) => d.as_micros().div_ceil(1000).clamp(1, u64::MAX as u128 - 1) as u64,
        None => u64::MAX,
    };
    TAIL_SLOW_MS.store(slow_ms, Ordering::Relaxed);
    MIN_LEVEL.store(span_min_level(config) as u8, Ordering::Relaxed);
}

/// The lowest level of span recorded: debug in development, info elsewhere,
/// or lower when a `RUST_LOG` directive asks for more (`revel=trace` records `level = "trace"`
/// spans). A quieter `RUST_LOG` does not turn spans off: traces do not depend on log volume.
pub(crate) fn span_min_level(config: &crate::config::Config) -> Level {
    use tracing::level_filters::LevelFilter;
    let by_environment =
        if config.environment == crate::config::Environment::Development { Level::Debug } else { Level::Info };
    let filter = &config.log_filter;
    let levels = filter.default_level().into_iter().chain(filter.iter().map(|(_, level)| level));
    // `LevelFilter` orders OFF < ERROR < … < TRACE: the most verbose directive is the maximum.
    match levels.max() {
        Some(LevelFilter::TRACE) => Level::Trace,
        Some(LevelFilter::DEBUG) => by_environment.min(Level::Debug),
        _ => by_environment,
    }
}

/// Changes the head sampler at run time (e.g. to sample everything while investigating).
pub fn set_sampler(sampler: crate::config::Sampler) {
    THRESHOLD.store(threshold_for(sampler.ratio()), Ordering::Relaxed);
    SAMPLER_OFF.store(sampler == crate::config::Sampler::AlwaysOff, Ordering::Relaxed);
    refresh_tail_watch();
}

/// The sampler is `AlwaysOff`: no root is watched for tail keeping either.
static SAMPLER_OFF: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Replaces the sampling rules at run time (see [`Config::sampling_rules`]; none: the sampler
/// alone decides).
///
/// ```
/// use obs_runtime::config::SamplingRule;
/// obs_runtime::trace::set_sampling_rules([SamplingRule::route("/healthz").never()]);
/// obs_runtime::trace::set_sampling_rules([]);
/// ```
///
/// [`Config::sampling_rules`]: crate::config::Config::sampling_rules
pub fn set_sampling_rules(rules: impl IntoIterator<Item = crate::config::SamplingRule>) {
    sampling::set_rules(&rules.into_iter().collect::<Vec<_>>());
    refresh_tail_watch();
}

/// Tail keeping only matters where roots may be dropped at the head: by the sampler's ratio, or
/// by a rule (never under `AlwaysOff`, which keeps nothing).
fn refresh_tail_watch() {
    let partial = THRESHOLD.load(Ordering::Relaxed) != u64::MAX || sampling::may_drop();
    let watch = partial && !SAMPLER_OFF.load(Ordering::Relaxed) && TAIL_CONFIGURED.load(Ordering::Relaxed);
    TAIL_WATCH.store(watch, Ordering::Relaxed);
}

/// Turns span recording off (a kill switch) or back on after [`init`](crate::init); macros then
/// cost one relaxed load when off. Has no effect before `init` or after its guard dropped.
pub fn set_enabled(on: bool) {
    set_gate(on && pipeline().is_some_and(|p| !p.is_shut_down()));
}

/// The trace and span ids of the current span, for log lines.
#[inline]
pub(crate) fn current_ids() -> Option<(u128, u64)> {
    let c = CURRENT.with(Cell::get);
    (c.trace_id != 0).then_some((c.trace_id, c.span_id))
}

/// The current trace id (32 hex digits), for log correlation; `None` outside any span.
pub fn current_trace_id() -> Option<String> {
    let c = CURRENT.with(Cell::get);
    (c.trace_id != 0).then(|| format!("{:032x}", c.trace_id))
}

/// The current span id (16 hex digits); `None` outside any span.
pub fn current_span_id() -> Option<String> {
    let c = CURRENT.with(Cell::get);
    (c.trace_id != 0).then(|| format!("{:016x}", c.span_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_matches_ratio() {
        assert_eq!(threshold_for(1.0), u64::MAX);
        assert_eq!(threshold_for(0.0), 0);
        let n = 200_000;
        THRESHOLD.store(threshold_for(0.1), Ordering::Relaxed);
        let hits = (0..n).filter(|_| sampled(((next_u64() as u128) << 64) | next_u64() as u128)).count();
        THRESHOLD.store(u64::MAX, Ordering::Relaxed);
        let p = hits as f64 / n as f64;
        // 5 standard deviations of a binomial(200000, 0.1): 0.0034.
        assert!((p - 0.1).abs() < 0.0034, "{p}");
    }

    #[test]
    fn attribute_values_keep_their_type_and_big_unsigned_ones_their_digits() {
        assert_eq!(7u32.into_value(), Value::I64(7));
        assert_eq!(7u64.into_value(), Value::I64(7));
        assert_eq!(u64::MAX.into_value(), Value::from("18446744073709551615".to_owned()));
        assert_eq!((-3i8).into_value(), Value::I64(-3));
        assert_eq!(1.5f32.into_value(), Value::F64(1.5));
        let local = String::from("not static");
        assert_eq!(local.as_str().into_value(), Value::from("not static".to_owned()));
        assert_eq!(std::sync::Arc::<str>::from("shared").into_value(), Value::from("shared"));
        assert_eq!(true.into_value(), Value::Bool(true));
    }
}
