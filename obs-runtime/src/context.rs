//! The context bound to a request or task (`request_id`, `endpoint`, `task_name`, …): scrubbed
//! once when bound, rendered once per log format (`logs::context`), and made current on the
//! polling thread for each poll of the request's or task's future, the way our span context is.
//! Cheaper than a `tracing` span per request (no registry slot, no subscriber calls on every
//! poll). Below `trace` and `logs`, which both carry it: spans swap it in with their future,
//! log lines render it. The ids of the span a thread is in are here too, for the same reason
//! (`trace` sets them, `logs` and `metrics` read them).

use std::cell::{Cell, RefCell};
use std::sync::{Arc, Mutex};

use crate::scrub::{KeyClass, REDACTED, classify_static, scrub_text};

/// Fields with their scrubbed values, and their renderings (made on first use).
pub(crate) struct Bound {
    pub(crate) inner: Mutex<Inner>,
    /// The profile label of the work running in this context (`crate::profile`); 0 for none.
    /// Changes once when a route becomes known after the context was bound (`http::ObsLayer::wrap`).
    profile_slot: std::sync::atomic::AtomicU8,
    /// The W3C `baggage` the request arrived with, passed on to its outgoing calls (never
    /// rendered: baggage is the caller's, not telemetry).
    baggage: std::sync::OnceLock<Arc<str>>,
}

/// The values live one after another in one string: binding a request's context costs a few
/// allocations, not one per field (this runs for every request).
pub(crate) struct Inner {
    /// The scrubbed values (a number as its digits).
    pub(crate) text: String,
    pub(crate) fields: Vec<Field>,
    pub(crate) json: Option<Arc<str>>,
    pub(crate) pretty: Option<Arc<str>>,
}

pub(crate) struct Field {
    pub(crate) key: &'static str,
    /// Rendered without quotes in JSON.
    pub(crate) number: bool,
    /// Where the value is in `text`.
    pub(crate) range: std::ops::Range<usize>,
}

/// A field value: text (scrubbed when bound), a number, or text the program itself wrote (a
/// method, a route template, an address): redacted by its key like any other, but not scanned
/// as free text.
#[derive(Clone, Copy)]
pub(crate) enum Value<'a> {
    Text(&'a str),
    Uint(u64),
    Plain(&'a str),
}

impl Value<'_> {
    /// About as long as its rendering.
    fn len(&self) -> usize {
        match self {
            Value::Text(t) | Value::Plain(t) => t.len(),
            Value::Uint(_) => 20,
        }
    }
}

impl Bound {
    /// A context of `fields` (those present), whose CPU samples carry the profile label of
    /// `slot` ([`crate::profile::slot_for`]).
    pub(crate) fn labeled(fields: &[(&'static str, Option<Value<'_>>)], profile_slot: u8) -> Arc<Bound> {
        let present = || fields.iter().filter_map(|(k, v)| Some((*k, (*v)?)));
        let mut text = String::with_capacity(present().map(|(_, v)| v.len()).sum());
        // Room for one more (the user id, often known only inside the handler).
        let mut list = Vec::with_capacity(fields.len() + 1);
        for (key, value) in present() {
            list.push(push_scrubbed(&mut text, key, value));
        }
        Arc::new(Bound {
            inner: Mutex::new(Inner { text, fields: list, json: None, pretty: None }),
            profile_slot: profile_slot.into(),
            baggage: std::sync::OnceLock::new(),
        })
    }

    /// The profile label slot (0: none).
    pub(crate) fn profile_slot(&self) -> u8 {
        self.profile_slot.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets the baggage to pass on (once, when the request starts).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn set_baggage(&self, baggage: Arc<str>) {
        let _ = self.baggage.set(baggage);
    }

    /// The baggage to pass on, if any.
    pub(crate) fn baggage(&self) -> Option<&Arc<str>> {
        self.baggage.get()
    }

    /// Changes the profile label slot (the route of a request became known).
    #[cfg_attr(not(feature = "axum"), allow(dead_code))]
    pub(crate) fn set_profile_slot(&self, slot: u8) {
        self.profile_slot.store(slot, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sets (or replaces) a field.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn set(&self, key: &'static str, value: Value<'_>) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Inner { text, fields, json, pretty } = &mut *inner;
        match fields.iter().position(|f| f.key == key) {
            Some(i) => {
                // Replaced (rare), in its place: the other values are copied into a fresh string,
                // so that setting a field again and again does not grow it.
                let old = std::mem::take(text);
                for (_, f) in fields.iter_mut().enumerate().filter(|(j, _)| *j != i) {
                    let start = text.len();
                    text.push_str(&old[f.range.clone()]);
                    f.range = start..text.len();
                }
                fields[i] = push_scrubbed(text, key, value);
            }
            None => fields.push(push_scrubbed(text, key, value)),
        }
        *json = None;
        *pretty = None;
    }
}

/// A key JSON and the pretty format take as it is.
fn plain_key(key: &str) -> bool {
    key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Appends `value`, scrubbed for `key`, to `text`; returns the field.
/// The longest a context field's value gets, in bytes: a 60 KB path (or user id, or task id)
/// must not make every line of its request 60 KB. Cut at a character boundary, marked with `…`.
pub(crate) const MAX_FIELD: usize = 2048;

fn push_scrubbed(text: &mut String, key: &'static str, value: Value<'_>) -> Field {
    debug_assert!(plain_key(key), "context keys are rendered without escaping");
    let start = text.len();
    let number = match value {
        Value::Text(t) => {
            match classify_static(key) {
                KeyClass::Redact => text.push_str(REDACTED),
                KeyClass::Keep => text.push_str(t),
                KeyClass::Text => text.push_str(&scrub_text(t)),
            }
            false
        }
        Value::Plain(t) => {
            text.push_str(if classify_static(key) == KeyClass::Redact { REDACTED } else { t });
            false
        }
        Value::Uint(n) => {
            text.push_str(itoa::Buffer::new().format(n));
            true
        }
    };
    if text.len() - start > MAX_FIELD {
        let mut end = start + MAX_FIELD;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    Field { key, number, range: start..text.len() }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Bound>>> = const { RefCell::new(None) };
}

/// Makes `ctx` the thread's current context; returns the previous one (to restore).
pub(crate) fn swap(ctx: Option<Arc<Bound>>) -> Option<Arc<Bound>> {
    CURRENT.with(|c| c.replace(ctx))
}

/// `f` of the thread's current context, without cloning it.
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&Arc<Bound>>) -> R) -> R {
    CURRENT.with(|c| f(c.borrow().as_ref()))
}

/// The thread's current context.
pub(crate) fn current() -> Option<Arc<Bound>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// The ids of the span a thread is in; `trace_id == 0` outside any span.
///
/// Its flags are a word, not two `bool`s: a `bool` gives `Option<Ctx>` (and the `Result` inside
/// `LocalKey::with`) a niche for its tag, and LLVM then copied the context around that byte with
/// overlapping 16-byte moves, whose reads stalled on store forwarding: half of an unsampled span's
/// time on an AMD EPYC (docs/design/overhead.md). Without a niche or padding, a copy is two
/// aligned 16-byte moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ctx {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    /// Bit 0: sampled; bit 1: W3C level 2's `random` flag (set for trace ids drawn here, as
    /// received for a caller's).
    flags: u64,
}

// The comment above, checked at compile time: two 16-byte moves copy it, and it has no niche
// (an `Option` needs room for a tag of its own). A `bool` or an enum among the fields fails the
// second; nothing at run time would, the spans would only get slower.
const _: () = assert!(std::mem::size_of::<Ctx>() == 32, "Ctx is no longer 32 bytes");
const _: () = assert!(
    std::mem::size_of::<Option<Ctx>>() > std::mem::size_of::<Ctx>(),
    "Ctx has a niche: see the comment on the struct"
);

impl Ctx {
    pub(crate) const NONE: Ctx = Ctx::new(0, 0, false, false);

    pub(crate) const fn new(trace_id: u128, span_id: u64, sampled: bool, random: bool) -> Ctx {
        Ctx { trace_id, span_id, flags: sampled as u64 | (random as u64) << 1 }
    }

    /// Whether the trace is sampled (exported).
    #[inline]
    pub(crate) const fn sampled(&self) -> bool {
        self.flags & 1 != 0
    }

    /// Whether the trace id is random (W3C level 2).
    #[inline]
    pub(crate) const fn random(&self) -> bool {
        self.flags & 2 != 0
    }

    /// The same ids, sampled or not.
    pub(crate) const fn with_sampled(self, sampled: bool) -> Ctx {
        Ctx::new(self.trace_id, self.span_id, sampled, self.random())
    }
}

thread_local! {
    /// The span the thread is in (`trace` swaps it in and out). Here, below `trace`, because
    /// `metrics` reads it too: a recording inside a sampled span keeps the span's ids as an
    /// exemplar.
    pub(crate) static SPAN: Cell<Ctx> = const { Cell::new(Ctx::NONE) };
}

/// The trace and span ids of the thread's span if it is sampled (its trace is exported): what a
/// metric recorded now links to as its exemplar.
#[inline(always)]
pub(crate) fn sampled_span() -> Option<SpanIds> {
    let c = SPAN.with(Cell::get);
    c.sampled().then_some(SpanIds { trace_id: c.trace_id, span_id: c.span_id })
}

/// A span's ids, for an exemplar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SpanIds {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
}

thread_local! {
    /// This thread does obs's own export work: events of the libraries it uses (tonic, h2,
    /// hyper, reqwest reconnecting or failing) stay out of the logs, whatever the filter says.
    /// obs's own lines (target `obs…`: an export warning) still go through.
    static EXPORTER_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as one of obs's exporter threads.
pub(crate) fn exporter_thread() {
    EXPORTER_THREAD.with(|t| t.set(true));
}

/// Whether the calling thread is one of obs's exporter threads.
pub(crate) fn is_exporter_thread() -> bool {
    EXPORTER_THREAD.with(Cell::get)
}
