//! W3C Trace Context: `traceparent` in and out, and links from a background task to the trace
//! that enqueued it.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::{CURRENT, Ctx, PENDING_LINK};

thread_local! {
    /// The `tracestate` of the remote context the thread runs in, passed on unchanged.
    pub(crate) static TRACESTATE: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
    /// The span id of the remote parent the thread runs in (0 outside one): a span started as
    /// its child has a remote parent.
    pub(crate) static IN_REMOTE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The longest `tracestate` passed on (W3C: at least 512 characters must be propagated; a longer
/// one is truncated by whole members).
const MAX_TRACESTATE: usize = 512;
/// Members longer than this go first when a `tracestate` is truncated (W3C).
const LONG_MEMBER: usize = 128;
/// The most list members a `tracestate` may hold (W3C).
const MAX_MEMBERS: usize = 32;
/// The `random` trace flag of W3C Trace Context level 2: the trace id's right 7 bytes are random.
const RANDOM: u8 = 0x02;

/// `key` as W3C defines a `tracestate` key: `simple-key = lcalpha 0*255(lcalpha / DIGIT / "_" /
/// "-" / "*" / "/")`, or `multi-tenant-key = tenant-id "@" system-id` with `tenant-id = (lcalpha /
/// DIGIT) 0*240(…)` and `system-id = lcalpha 0*13(…)`.
fn valid_key(key: &str) -> bool {
    let rest_ok = |s: &[u8]| s.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-*/".contains(c));
    match key.split_once('@') {
        None => {
            let b = key.as_bytes();
            !b.is_empty() && b.len() <= 256 && b[0].is_ascii_lowercase() && rest_ok(&b[1..])
        }
        Some((tenant, system)) => {
            let (t, s) = (tenant.as_bytes(), system.as_bytes());
            !t.is_empty()
                && t.len() <= 241
                && (t[0].is_ascii_lowercase() || t[0].is_ascii_digit())
                && rest_ok(&t[1..])
                && !s.is_empty()
                && s.len() <= 14
                && s[0].is_ascii_lowercase()
                && rest_ok(&s[1..])
        }
    }
}

/// `value = 0*255(chr) nblk-chr`, `chr = %x20 / nblk-chr`, `nblk-chr = %x21-2B / %x2D-3C / %x3E-7E`.
fn valid_value(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && b[b.len() - 1] != b' '
        && b.iter().all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
}

/// The W3C `tracestate` made of `fields` (header fields combine into one list, as RFC 9110 says),
/// if it is valid: `key=value` members (blanks around them and empty members ignored), unique
/// keys, at most 32 members. Longer than 512 characters, it is truncated by whole members:
/// those over 128 characters first, then from the end. `None` for an invalid one (it is not
/// passed on at all) or an empty one.
pub(crate) fn valid_tracestate<'a>(fields: impl IntoIterator<Item = &'a str>) -> Option<Arc<str>> {
    let mut members: Vec<&str> = Vec::new();
    for field in fields {
        for member in field.split(',').map(|m| m.trim_matches([' ', '\t'])).filter(|m| !m.is_empty()) {
            let (key, value) = member.split_once('=')?;
            if !valid_key(key) || !valid_value(value) || members.iter().any(|m| m.split_once('=').unwrap().0 == key) {
                return None;
            }
            members.push(member);
            if members.len() > MAX_MEMBERS {
                return None;
            }
        }
    }
    let length = |m: &[&str]| m.iter().map(|s| s.len()).sum::<usize>() + m.len().saturating_sub(1);
    if length(&members) > MAX_TRACESTATE {
        // Long members go first (their order kept among the rest), then members from the end.
        while length(&members) > MAX_TRACESTATE {
            match members.iter().rposition(|m| m.len() > LONG_MEMBER) {
                Some(i) => members.remove(i),
                None => members.pop().expect("a list longer than 512 has members"),
            };
        }
    }
    (!members.is_empty()).then(|| members.join(",").into())
}

/// A span context that crosses a process or queue boundary, as a W3C `traceparent` (and the
/// vendor `tracestate` that travels with it).
///
/// ```
/// use obs_runtime::trace::RemoteContext;
///
/// let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// let ctx = RemoteContext::from_traceparent(header).unwrap();
/// assert_eq!(ctx.to_traceparent(), header);
/// assert!(ctx.is_sampled());
/// // Malformed headers are not trusted: the request starts a new trace instead.
/// assert_eq!(RemoteContext::from_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), None);
///
/// // `tracestate` is passed on unchanged to outgoing requests (and dropped when malformed).
/// let ctx = ctx.with_tracestate("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
/// assert_eq!(ctx.tracestate(), Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"));
/// ctx.in_scope(|| assert_eq!(obs_runtime::trace::tracestate().as_deref(), ctx.tracestate()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RemoteContext {
    trace_id: u128,
    span_id: u64,
    sampled: bool,
    /// The level 2 `random` flag: the trace id was drawn at random (always, for ours).
    random: bool,
    tracestate: Option<Arc<str>>,
    /// Parsed from a header (the parent is in another process), not taken from this one.
    remote: bool,
    /// The W3C baggage of the request the context was taken in (or given with it).
    baggage: Option<Arc<str>>,
}

impl RemoteContext {
    /// Parses a `traceparent` header; `None` for anything malformed (all-zero ids, upper-case or
    /// non-hex digits, version `ff`, wrong lengths). The `sampled` and level 2 `random` flags are
    /// read; other flags are not passed on.
    pub fn from_traceparent(header: &str) -> Option<RemoteContext> {
        let h = header.trim_matches([' ', '\t']);
        let b = h.as_bytes();
        if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let hex = |s: &str| {
            s.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
                .then(|| u128::from_str_radix(s, 16).ok())
                .flatten()
        };
        let version = hex(&h[0..2])?;
        // Version 00 has exactly four fields; later versions may append more after a '-'.
        if version == 0xff || (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
            return None;
        }
        let trace_id = hex(&h[3..35])?;
        let span_id = hex(&h[36..52])? as u64;
        let flags = hex(&h[53..55])? as u8;
        (trace_id != 0 && span_id != 0).then_some(RemoteContext {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
            random: flags & RANDOM != 0,
            tracestate: None,
            remote: true,
            baggage: None,
        })
    }

    /// Parses the two W3C headers of an incoming request: `traceparent`, and the `tracestate`
    /// that goes with it. A malformed `traceparent` gives `None` (start a new trace); a malformed
    /// `tracestate` is dropped, as the specification asks.
    pub fn from_headers(traceparent: &str, tracestate: Option<&str>) -> Option<RemoteContext> {
        let ctx = Self::from_traceparent(traceparent)?;
        Some(match tracestate {
            Some(ts) => ctx.with_tracestate(ts),
            None => ctx,
        })
    }

    /// Parses every field of the two headers, as a request carries them: one `traceparent` field
    /// (two make the context invalid: a new trace starts), and `tracestate` fields combined into
    /// one list.
    pub fn from_header_fields<'a>(
        traceparent: impl IntoIterator<Item = &'a str>,
        tracestate: impl IntoIterator<Item = &'a str>,
    ) -> Option<RemoteContext> {
        let mut fields = traceparent.into_iter();
        let (Some(one), None) = (fields.next(), fields.next()) else { return None };
        let mut ctx = Self::from_traceparent(one)?;
        ctx.tracestate = valid_tracestate(tracestate);
        Some(ctx)
    }

    /// This context with a `tracestate` header to pass on (dropped if it is not valid W3C
    /// `tracestate`; truncated by whole members past 512 characters).
    pub fn with_tracestate(mut self, header: &str) -> RemoteContext {
        self.tracestate = valid_tracestate([header]);
        self
    }

    /// The `tracestate` to send on, if any.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// With the W3C `baggage` stored with a job (as [`baggage`](Self::baggage) gave it), checked
    /// as an incoming header is (the specification's limits; malformed members dropped, nothing
    /// when `OTEL_PROPAGATORS` leaves baggage out). A task run from it
    /// ([`Task::enqueued_from`](crate::task::Task::enqueued_from)) then has it: readable with
    /// [`baggage`](crate::trace::baggage), the keys of `OBS_BAGGAGE_ATTRIBUTES` on its span and
    /// log lines.
    ///
    /// ```
    /// use obs_runtime::trace::RemoteContext;
    ///
    /// let ctx = RemoteContext::from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    ///     .unwrap()
    ///     .with_baggage("tenant=acme,experiment.id=checkout-v2");
    /// assert_eq!(ctx.baggage(), Some("tenant=acme,experiment.id=checkout-v2"));
    /// ```
    pub fn with_baggage(mut self, header: &str) -> RemoteContext {
        self.baggage = super::incoming_baggage([header]);
        self
    }

    /// The W3C `baggage` of the request this context was taken in ([`current`](Self::current)),
    /// to store with a job next to [`to_traceparent`](Self::to_traceparent).
    pub fn baggage(&self) -> Option<&str> {
        self.baggage.as_deref()
    }

    pub(crate) fn baggage_arc(&self) -> Option<Arc<str>> {
        self.baggage.clone()
    }

    /// The `traceparent` header value.
    pub fn to_traceparent(&self) -> String {
        let flags = self.sampled as u8 | if self.random { RANDOM } else { 0 };
        format!("00-{:032x}-{:016x}-{flags:02x}", self.trace_id, self.span_id)
    }

    /// The context of the current span, to send with an outgoing request (see [`traceparent`])
    /// or to store with a background job; `None` outside any span.
    pub fn current() -> Option<RemoteContext> {
        let c = CURRENT.with(|c| c.get());
        (c.trace_id != 0).then(|| RemoteContext {
            trace_id: c.trace_id,
            span_id: c.span_id,
            sampled: c.sampled(),
            random: c.random(),
            tracestate: TRACESTATE.with(|t| t.borrow().clone()),
            remote: false,
            baggage: crate::context::with_current(|b| b.and_then(|b| b.baggage().cloned())),
        })
    }

    /// Whether the trace is sampled upstream (children follow it).
    pub fn is_sampled(&self) -> bool {
        self.sampled
    }

    /// The trace id as 32 hex digits.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    fn ctx(&self) -> Ctx {
        Ctx::new(self.trace_id, self.span_id, self.sampled, self.random)
    }

    /// Runs `f` as if inside the remote span: spans started in it are its children, in its trace,
    /// following its sampling decision. For a request that arrived with a `traceparent`.
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        let prev = CURRENT.with(|c| c.replace(self.ctx()));
        let prev_state = TRACESTATE.with(|t| t.replace(self.tracestate.clone()));
        let prev_remote = IN_REMOTE.with(|r| r.replace(if self.remote { self.span_id } else { 0 }));
        let _restore = (RestoreCtx(prev), RestoreState(prev_state), RestoreRemote(prev_remote));
        f()
    }

    /// `fut` run as if inside the remote span, on every poll.
    pub fn instrument<F: Future>(self, fut: F) -> InRemote<F> {
        InRemote { inner: fut, ctx: self.ctx(), tracestate: self.tracestate, link: false, remote: self.remote }
    }

    /// Runs `f` so that the next root span it starts (a background task's) begins a new trace
    /// linked to this context (the request that enqueued the task).
    pub fn link_in<R>(&self, f: impl FnOnce() -> R) -> R {
        let prev_ctx = CURRENT.with(|c| c.replace(Ctx::NONE));
        let prev_link = PENDING_LINK.with(|l| l.replace(Some(self.ctx())));
        let prev_state = TRACESTATE.with(|t| t.take());
        let _restore = (RestoreCtx(prev_ctx), RestoreLink(prev_link), RestoreState(prev_state));
        f()
    }

    /// Runs `f` outside any trace: a span it starts begins a new one.
    pub(crate) fn none_in<R>(f: impl FnOnce() -> R) -> R {
        let prev_ctx = CURRENT.with(|c| c.replace(Ctx::NONE));
        let prev_state = TRACESTATE.with(|t| t.take());
        let _restore = (RestoreCtx(prev_ctx), RestoreState(prev_state));
        f()
    }

    /// `fut` run as with [`link_in`](Self::link_in): on every poll outside any trace, the link
    /// pending until the first root span takes it.
    pub fn link_instrument<F: Future>(self, fut: F) -> InRemote<F> {
        InRemote { inner: fut, ctx: self.ctx(), tracestate: None, link: true, remote: true }
    }
}

struct RestoreCtx(Ctx);
impl Drop for RestoreCtx {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

struct RestoreState(Option<Arc<str>>);
impl Drop for RestoreState {
    fn drop(&mut self) {
        let prev = self.0.take();
        TRACESTATE.with(|t| *t.borrow_mut() = prev);
    }
}

struct RestoreRemote(u64);
impl Drop for RestoreRemote {
    fn drop(&mut self) {
        IN_REMOTE.with(|r| r.set(self.0));
    }
}

struct RestoreLink(Option<Ctx>);
impl Drop for RestoreLink {
    fn drop(&mut self) {
        PENDING_LINK.with(|l| l.set(self.0));
    }
}

/// A future run inside a remote context (see [`RemoteContext::instrument`]).
pub struct InRemote<F> {
    inner: F,
    ctx: Ctx,
    tracestate: Option<Arc<str>>,
    link: bool,
    /// Whether the context came from another process (not `with_current_context`).
    remote: bool,
}

impl<F: Future> Future for InRemote<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `inner` is structurally pinned and never moved.
        let this = unsafe { self.get_unchecked_mut() };
        let inner = unsafe { Pin::new_unchecked(&mut this.inner) };
        if !this.link {
            let prev = CURRENT.with(|c| c.replace(this.ctx));
            let prev_state = TRACESTATE.with(|t| t.replace(this.tracestate.clone()));
            let prev_remote = IN_REMOTE.with(|r| r.replace(if this.remote { this.ctx.span_id } else { 0 }));
            let _restore = (RestoreCtx(prev), RestoreState(prev_state), RestoreRemote(prev_remote));
            return inner.poll(cx);
        }
        // A task linked to its origin: outside any trace on every poll, with the link pending
        // until a root span takes it.
        let prev_ctx = CURRENT.with(|c| c.replace(Ctx::NONE));
        let prev_link = PENDING_LINK.with(|l| l.replace(Some(this.ctx)));
        let prev_state = TRACESTATE.with(|t| t.take());
        // Restored even when the poll panics: a link left pending would attach the next root
        // span on this thread (another request's) to this task's origin.
        let restore_link = RestoreLink(prev_link);
        let _restore = (RestoreCtx(prev_ctx), RestoreState(prev_state));
        let poll = inner.poll(cx);
        // Whether a root span took the link during this poll (then later polls need none).
        let taken = PENDING_LINK.with(|l| l.get()).is_none();
        drop(restore_link);
        if taken {
            this.link = false;
            this.ctx = Ctx::NONE;
        }
        poll
    }
}

/// The current span's `traceparent`, for an outgoing HTTP request:
///
/// ```
/// // e.g. with reqwest: `if let Some(tp) = traceparent() { req = req.header("traceparent", tp) }`
/// fn outgoing_headers() -> Vec<(&'static str, String)> {
///     obs_runtime::trace::traceparent().map(|tp| ("traceparent", tp)).into_iter().collect()
/// }
/// assert!(outgoing_headers().is_empty(), "outside any span there is nothing to propagate");
/// ```
pub fn traceparent() -> Option<String> {
    if !PROPAGATE.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    RemoteContext::current().map(|c| c.to_traceparent())
}

/// Whether W3C Baggage is passed on from incoming requests to outgoing ones
/// (`OTEL_PROPAGATORS`, on by default as in OpenTelemetry).
pub(crate) static BAGGAGE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// The baggage keys copied onto spans and log lines (`Config::baggage_attributes`), leaked once
/// at `init` (a few configured names).
static BAGGAGE_ATTRIBUTES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();

pub(crate) fn set_baggage_attributes(keys: &[String]) {
    let _ = BAGGAGE_ATTRIBUTES.set(keys.iter().map(|k| &*Box::leak(k.clone().into_boxed_str())).collect());
}

/// The allow-listed baggage keys present in `baggage`, with their values percent-decoded (not
/// yet scrubbed: the caller's span attribute and log field scrub them).
pub(crate) fn baggage_attributes(baggage: &str) -> Vec<(&'static str, String)> {
    let Some(keys) = BAGGAGE_ATTRIBUTES.get().filter(|k| !k.is_empty()) else { return Vec::new() };
    keys.iter().filter_map(|k| member(baggage, k).map(|v| (*k, v))).collect()
}

/// The value of `key` in a valid baggage list, percent-decoded.
fn member(baggage: &str, key: &str) -> Option<String> {
    baggage.split(',').find_map(|m| {
        let (k, v) = m.split(';').next()?.split_once('=')?;
        (k == key).then(|| crate::scrub::percent_decode(v))
    })
}

/// The value of `key` in the current request's (or task's) W3C baggage, percent-decoded, as the
/// caller sent it: for code that reads a tenant or an experiment id from it. Baggage is
/// whatever the caller put there, so treat it as input.
///
/// ```
/// assert_eq!(obs_runtime::trace::baggage("tenant"), None); // outside any request
/// ```
pub fn baggage(key: &str) -> Option<String> {
    crate::context::current().and_then(|b| b.baggage().and_then(|list| member(list, key)))
}

/// The most list members of a `baggage` passed on, and its longest length (W3C Baggage: at
/// least 64 members and 8192 bytes must be propagated; beyond, members are dropped from the end).
const MAX_BAGGAGE_MEMBERS: usize = 64;
const MAX_BAGGAGE: usize = 8192;

/// The W3C `baggage` made of `fields` (header fields combine into one list), if it is valid:
/// `key=value` members with optional `;property[=value]` parts, keys and property keys HTTP
/// tokens, values `baggage-octet`s (printable ASCII but blank, `"`, `,`, `;` and `\`, so
/// percent-encoded text), blanks around the separators allowed and removed. Members past the
/// 64th or past 8192 bytes are dropped from the end. `None` for an invalid or empty one (it is
/// not passed on at all).
pub(crate) fn valid_baggage<'a>(fields: impl IntoIterator<Item = &'a str>) -> Option<Arc<str>> {
    fn token(s: &str) -> bool {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    }
    fn octets(s: &str) -> bool {
        s.bytes().all(|b| matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E))
    }
    let ows = [' ', '\t'];
    let mut members: Vec<String> = Vec::new();
    for field in fields {
        for member in field.split(',').map(|m| m.trim_matches(ows)).filter(|m| !m.is_empty()) {
            let mut parts = member.split(';').map(|p| p.trim_matches(ows));
            let (key, value) = parts.next()?.split_once('=')?;
            let (key, value) = (key.trim_matches(ows), value.trim_matches(ows));
            if !token(key) || !octets(value) {
                return None;
            }
            let mut normal = format!("{key}={value}");
            for property in parts {
                let ok = match property.split_once('=') {
                    Some((k, v)) => token(k.trim_matches(ows)) && octets(v.trim_matches(ows)),
                    None => token(property),
                };
                if !ok {
                    return None;
                }
                normal.push(';');
                normal.push_str(&property.split('=').map(|p| p.trim_matches(ows)).collect::<Vec<_>>().join("="));
            }
            members.push(normal);
        }
    }
    members.truncate(MAX_BAGGAGE_MEMBERS);
    while members.iter().map(|m| m.len() + 1).sum::<usize>().saturating_sub(1) > MAX_BAGGAGE {
        members.pop();
    }
    (!members.is_empty()).then(|| members.join(",").into())
}

/// Whether W3C Trace Context is read from and written to the wire (`OTEL_PROPAGATORS=none`
/// turns it off: every request starts a trace, outgoing requests carry none).
pub(crate) static PROPAGATE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// The `tracestate` to send with [`traceparent`]: the one the current trace arrived with, if any.
pub fn tracestate() -> Option<String> {
    if CURRENT.with(|c| c.get()).trace_id == 0 || !PROPAGATE.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    TRACESTATE.with(|t| t.borrow().as_deref().map(str::to_owned))
}

/// The W3C headers for an outgoing request made from the current span: `traceparent`, and
/// `tracestate` when the trace carries one; and `baggage` when the request being handled arrived
/// with one (W3C Baggage, `OTEL_PROPAGATORS`). Empty outside any span and request.
///
/// ```
/// # #[obs_runtime::traced_span("payment.stripe_call")]
/// # fn call() {
/// // e.g. with reqwest: for (name, value) in obs_runtime::trace::outgoing_headers() { req = req.header(name, value) }
/// let headers = obs_runtime::trace::outgoing_headers();
/// # let _ = headers;
/// # }
/// # call();
/// assert!(obs_runtime::trace::outgoing_headers().is_empty());
/// ```
pub fn outgoing_headers() -> Vec<(&'static str, String)> {
    let mut headers = Vec::new();
    // The request's baggage, read once: with the span's context when there is one.
    let mut baggage = None;
    if PROPAGATE.load(std::sync::atomic::Ordering::Relaxed)
        && let Some(ctx) = RemoteContext::current()
    {
        headers.push(("traceparent", ctx.to_traceparent()));
        if let Some(ts) = ctx.tracestate {
            headers.push(("tracestate", ts.to_string()));
        }
        baggage = Some(ctx.baggage);
    }
    if BAGGAGE.load(std::sync::atomic::Ordering::Relaxed)
        && let Some(baggage) = baggage.unwrap_or_else(|| crate::context::current().and_then(|b| b.baggage().cloned()))
    {
        headers.push(("baggage", baggage.to_string()));
    }
    headers
}

/// `fut` run in the context of the caller: the current span (its children nest under it, its
/// trace continues) and the `tracing` context (request or task fields on every log line). For
/// work spawned from a request or task, e.g. `tokio::spawn(with_current_context(fut))`; without
/// it, spawned work carries no context at all (never another request's).
pub fn with_current_context<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    use tracing::Instrument as _;
    let inner = match RemoteContext::current() {
        Some(ctx) => Context2::In(ctx.instrument(fut)),
        None => Context2::Plain(fut),
    };
    WithBound { inner, bound: crate::context::current() }.instrument(tracing::Span::current())
}

/// A future run with a log context (the request's or task's fields) current on every poll.
struct WithBound<F> {
    inner: F,
    bound: Option<Arc<crate::context::Bound>>,
}

impl<F: Future> Future for WithBound<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `inner` is structurally pinned and never moved.
        let this = unsafe { self.get_unchecked_mut() };
        let inner = unsafe { Pin::new_unchecked(&mut this.inner) };
        let prev = crate::context::swap(this.bound.clone());
        struct Restore(Option<Arc<crate::context::Bound>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                crate::context::swap(self.0.take());
            }
        }
        let _restore = Restore(prev);
        inner.poll(cx)
    }
}

/// A future with or without a span context.
enum Context2<F> {
    In(InRemote<F>),
    Plain(F),
}

impl<F: Future> Future for Context2<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: structural pinning of the only field of either variant; never moved.
        unsafe {
            match self.get_unchecked_mut() {
                Context2::In(f) => Pin::new_unchecked(f).poll(cx),
                Context2::Plain(f) => Pin::new_unchecked(f).poll(cx),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_valid_traceparents() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = RemoteContext::from_traceparent(ok).unwrap();
        assert_eq!(c.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(RemoteContext::from_traceparent(&ok.replace("-01", "-00")).map(|c| c.is_sampled()), Some(false));
        // A later version may carry more fields.
        assert!(
            RemoteContext::from_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some()
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(RemoteContext::from_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn tracestate_is_kept_when_valid_and_dropped_otherwise() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ts = |h: &str| RemoteContext::from_headers(tp, Some(h)).unwrap().tracestate().map(str::to_owned);
        assert_eq!(ts("congo=t61rcWkgMzE"), Some("congo=t61rcWkgMzE".into()));
        assert_eq!(
            ts(" rojo=00f067aa0ba902b7 , congo=t61rcWkgMzE "),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".into())
        );
        assert_eq!(ts("tenant@vendor=x"), Some("tenant@vendor=x".into()));
        let too_many = (0..33).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
        for bad in
            ["", "novalue", "Upper=x", "k=a=b", "k=\u{7f}", "k=x\r\nset-cookie: a=b", &"k=x,".repeat(200), &too_many]
        {
            assert_eq!(ts(bad), None, "{bad:?}");
        }
        assert_eq!(RemoteContext::from_headers("garbage", Some("k=v")), None);
        // Outside a remote scope there is nothing to pass on; inside, exactly what arrived.
        let ctx = RemoteContext::from_headers(tp, Some("k=v")).unwrap();
        assert_eq!(tracestate(), None);
        ctx.in_scope(|| {
            assert_eq!(tracestate().as_deref(), Some("k=v"));
            assert_eq!(outgoing_headers(), vec![("traceparent", tp.to_owned()), ("tracestate", "k=v".to_owned())]);
            RemoteContext::from_traceparent(tp).unwrap().link_in(|| assert_eq!(tracestate(), None));
        });
        assert_eq!(tracestate(), None);
    }

    /// W3C Trace Context, level 1 and 2, `traceparent`: the cases of the W3C test harness.
    #[test]
    fn traceparent_as_w3c_writes_it() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let parent = "00f067aa0ba902b7";
        let tp = |v: &str, flags: &str| format!("{v}-{id}-{parent}-{flags}");
        let ok = |h: &str| RemoteContext::from_traceparent(h).unwrap_or_else(|| panic!("refused: {h:?}"));
        let bad = |h: &str| assert_eq!(RemoteContext::from_traceparent(h), None, "accepted: {h:?}");
        // Surrounding blanks (OWS) are allowed.
        ok(&format!(" \t{} \t", tp("00", "01")));
        // A future version: more fields after a '-', the known ones read as version 00's.
        let future = ok(&format!("{}-what-the-future-will-be-like", tp("cc", "01")));
        assert!(future.is_sampled());
        assert_eq!(future.to_traceparent(), tp("00", "01"), "sent on as version 00");
        bad(&format!("{}.what-the-future-will-be-like", tp("cc", "01")));
        bad(&tp("ff", "01"));
        bad(&tp("0", "01"));
        bad(&tp("000", "01"));
        bad(&tp("0g", "01"));
        bad(&format!("{}-extra", tp("00", "01")));
        bad(&tp("00", "0"));
        bad(&tp("00", "1g"));
        bad(&format!("00-{}-{parent}-01", "0".repeat(32)));
        bad(&format!("00-{id}-{}-01", "0".repeat(16)));
        bad(&format!("00-{}-{parent}-01", id.to_uppercase()));
        bad(&format!("00-{id}-{}-01", parent.to_uppercase()));
        bad(&format!("00-{id}-{parent}-0A"));
        bad(&format!("00-{id}{parent}-01"));
        // Flags: sampled and (level 2) random are read; unknown flags are not passed on.
        for (flags, sampled, random, sent) in [
            ("00", false, false, "00"),
            ("01", true, false, "01"),
            ("02", false, true, "02"),
            ("03", true, true, "03"),
            ("ff", true, true, "03"),
            ("fc", false, false, "00"),
        ] {
            let c = ok(&tp("00", flags));
            assert_eq!((c.is_sampled(), c.random), (sampled, random), "{flags}");
            assert_eq!(c.to_traceparent(), tp("00", sent), "{flags}");
        }
        // Fields of a request: exactly one traceparent.
        let one = tp("00", "01");
        assert!(RemoteContext::from_header_fields([one.as_str()], []).is_some());
        assert_eq!(RemoteContext::from_header_fields([one.as_str(), one.as_str()], []), None, "two fields: invalid");
        assert_eq!(RemoteContext::from_header_fields([], ["k=v"]), None);
    }

    /// A trace that starts here says its id is random (level 2); a child of a caller's span
    /// sends on the caller's flag.
    #[test]
    fn the_random_flag_is_set_on_trace_ids_generated_here() {
        super::super::set_gate(true);
        static SITE: super::super::SpanSite = super::super::SpanSite {
            name: "w3c.random",
            level: crate::trace::Level::Error,
            kind: super::super::Kind::Internal,
        };
        let mut root = super::super::SpanState::start(&SITE);
        let _in = root.enter();
        let sent = traceparent().unwrap();
        assert!(sent.ends_with("-03") || sent.ends_with("-02"), "{sent}");
        drop(_in);
        let caller =
            RemoteContext::from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        caller.in_scope(|| {
            let mut child = super::super::SpanState::start(&SITE);
            let _in = child.enter();
            let sent = traceparent().unwrap();
            assert!(sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{sent}");
            assert!(!sent.ends_with("-03") && !sent.ends_with("-02"), "the caller did not say random: {sent}");
        });
    }

    /// W3C Trace Context `tracestate`: grammar, limits, combination of fields, truncation.
    #[test]
    fn tracestate_as_w3c_writes_it() {
        let ts = |fields: &[&str]| valid_tracestate(fields.iter().copied()).map(|s| s.to_string());
        // Keys: simple (starts with a lower-case letter, up to 256) and multi-tenant
        // (tenant up to 241, starting with a letter or digit; system up to 14, starting with a letter).
        let k256 = format!("a{}", "b".repeat(255));
        assert_eq!(ts(&[&format!("{k256}=v")]), Some(format!("{k256}=v")));
        assert_eq!(ts(&[&format!("{k256}b=v")]), None, "257 characters");
        assert_eq!(ts(&["1abc=v"]), None, "a simple key starts with a letter");
        assert_eq!(ts(&["1tenant@sys=v"]), Some("1tenant@sys=v".into()));
        let (t241, s14) = ("t".repeat(241), format!("s{}", "y".repeat(13)));
        assert_eq!(ts(&[&format!("{t241}@{s14}=v")]), Some(format!("{t241}@{s14}=v")));
        assert_eq!(ts(&[&format!("{t241}t@{s14}=v")]), None, "tenant of 242");
        assert_eq!(ts(&[&format!("{t241}@{s14}y=v")]), None, "system of 15");
        assert_eq!(ts(&["t@1sys=v"]), None, "a system id starts with a letter");
        assert_eq!(ts(&["a@b@c=v"]), None);
        assert_eq!(ts(&["a_-*/9=v"]), Some("a_-*/9=v".into()), "every allowed key character");
        for bad in ["A=v", "a.b=v", "a b=v", "=v", "a =v", "a= v,"] {
            if bad == "a= v," {
                // A value may start with a blank.
                assert_eq!(ts(&[bad]), Some("a= v".into()));
                continue;
            }
            assert_eq!(ts(&[bad]), None, "{bad:?}");
        }
        // Values: printable ASCII but ',' and '=', not ending with a blank, up to 256.
        let all: String = (0x20u8..=0x7e).filter(|c| *c != b',' && *c != b'=').map(char::from).collect();
        assert_eq!(ts(&[&format!("k={all}")]), Some(format!("k={all}")));
        assert_eq!(ts(&[&format!("k={}", "v".repeat(256))]).map(|s| s.len()), Some(258));
        assert_eq!(ts(&[&format!("k={}", "v".repeat(257))]), None);
        assert_eq!(ts(&["k=v "]), Some("k=v".into()), "a blank after the member is OWS");
        for bad in ["k=", "k=a=b", "k=\u{7f}", "k=é", "k=x\r\nset-cookie: a=b"] {
            assert_eq!(ts(&[bad]), None, "{bad:?}");
        }
        // Blanks around members and empty members are ignored; keys are unique.
        assert_eq!(ts(&[" \tfoo=1 ,\t, bar=2 \t"]), Some("foo=1,bar=2".into()));
        assert_eq!(ts(&["foo=1,foo=2"]), None, "duplicated keys");
        assert_eq!(ts(&[""]), None);
        assert_eq!(ts(&[" , "]), None);
        // Header fields combine into one list (RFC 9110).
        assert_eq!(ts(&["foo=1", "bar=2"]), Some("foo=1,bar=2".into()));
        assert_eq!(ts(&["foo=1", "foo=2"]), None, "duplicated across fields");
        assert_eq!(ts(&["foo=1", "b@d"]), None, "one bad field spoils the list");
        // Exactly 32 members.
        let members = |n: usize| (0..n).map(|i| format!("k{i}=v")).collect::<Vec<_>>();
        assert_eq!(ts(&[&members(32).join(",")]).map(|s| s.split(',').count()), Some(32));
        assert_eq!(ts(&[&members(33).join(",")]), None);
        let thirty_three = members(33);
        let (first, second) = thirty_three.split_at(16);
        assert_eq!(ts(&[&first.join(","), &second.join(",")]), None, "33 across two fields");
        // Over 512 characters: whole members dropped, those over 128 characters first (the last
        // of them first), then from the end.
        let long = |k: &str| format!("{k}={}", "x".repeat(150));
        let short = |i: usize| format!("s{i:02}={}", "y".repeat(26)); // 30 characters
        let mut list = vec![long("la"), short(0), long("lb"), short(1)];
        list.extend((2..16).map(short));
        let header = list.join(",");
        assert!(header.len() > 512);
        let kept = ts(&[&header]).unwrap();
        assert!(kept.len() <= 512, "{}", kept.len());
        assert!(!kept.contains("la=") && !kept.contains("lb="), "long members go first: {kept}");
        assert_eq!(kept.split(',').count(), 16, "the short ones all fit: {kept}");
        // Only short members: dropped from the end.
        let many: Vec<String> = (0..20).map(short).collect();
        let kept = ts(&[&many.join(",")]).unwrap();
        assert_eq!(kept, many[..16].join(","), "the first 16 (16 × 30 + 15 = 495 characters)");
        // Nothing left: none.
        assert_eq!(ts(&[&long("only")]).map(|s| s.len()), Some(155), "one long member under 512 stays");
    }

    /// W3C Baggage: grammar, blanks, properties, fields combined, limits.
    #[test]
    fn baggage_as_w3c_writes_it() {
        let b = |fields: &[&str]| valid_baggage(fields.iter().copied()).map(|s| s.to_string());
        assert_eq!(b(&["userId=alice"]), Some("userId=alice".into()));
        assert_eq!(b(&[" userId = alice , serverNode=DF%2028 \t"]), Some("userId=alice,serverNode=DF%2028".into()));
        assert_eq!(b(&["k=v;prop1 ; p2 = x"]), Some("k=v;prop1;p2=x".into()), "properties kept");
        assert_eq!(b(&["k="]), Some("k=".into()), "an empty value is a value");
        assert_eq!(b(&["a=1", "b=2"]), Some("a=1,b=2".into()), "fields combine");
        assert_eq!(b(&["a=1,,b=2"]), Some("a=1,b=2".into()));
        for bad in ["novalue", "=v", "k y=v", "k=v w", "k=\"v\"", "k=a\\b", "k=é", "k=v;p q", "k(=v"] {
            assert_eq!(b(&[bad]), None, "{bad:?}");
        }
        assert_eq!(b(&["a=1", "bad"]), None, "one bad field spoils the list");
        assert_eq!(b(&[""]), None);
        // At most 64 members and 8192 bytes: the rest dropped from the end.
        let many: Vec<String> = (0..70).map(|i| format!("k{i}=v")).collect();
        assert_eq!(b(&[&many.join(",")]), Some(many[..64].join(",")));
        let big: Vec<String> = (0..20).map(|i| format!("k{i:02}={}", "x".repeat(1000))).collect();
        let kept = b(&[&big.join(",")]).unwrap();
        assert!(kept.len() <= 8192 && kept.split(',').count() == 8, "{}", kept.len());
    }
}
