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

/// The longest `tracestate` passed on (W3C: at least 512 characters must be propagated).
const MAX_TRACESTATE: usize = 512;
/// The most list members a `tracestate` may hold (W3C).
const MAX_MEMBERS: usize = 32;

/// `header` if it is a valid W3C `tracestate` (`key=value` list, lower-case keys, printable values,
/// at most 32 members and 512 characters), with blanks around members trimmed.
fn valid_tracestate(header: &str) -> Option<Arc<str>> {
    if header.len() > MAX_TRACESTATE {
        return None;
    }
    let mut members = Vec::new();
    for member in header.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let (key, value) = member.split_once('=')?;
        let key_ok = !key.is_empty()
            && key.len() <= 256
            && key.as_bytes()[0].is_ascii_alphanumeric()
            && key
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'*' | b'/' | b'@'));
        let value_ok = !value.is_empty()
            && value.len() <= 256
            && !value.ends_with(' ')
            && value.bytes().all(|c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=');
        if !key_ok || !value_ok {
            return None;
        }
        members.push(member);
    }
    (!members.is_empty() && members.len() <= MAX_MEMBERS).then(|| members.join(",").into())
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
    tracestate: Option<Arc<str>>,
    /// Parsed from a header (the parent is in another process), not taken from this one.
    remote: bool,
}

impl RemoteContext {
    /// Parses a `traceparent` header; `None` for anything malformed (all-zero ids, upper-case or
    /// non-hex digits, version `ff`, wrong lengths).
    pub fn from_traceparent(header: &str) -> Option<RemoteContext> {
        let h = header.trim();
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
            tracestate: None,
            remote: true,
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

    /// This context with a `tracestate` header to pass on (dropped if it is not valid W3C
    /// `tracestate`: at most 32 `key=value` members and 512 characters).
    pub fn with_tracestate(mut self, header: &str) -> RemoteContext {
        self.tracestate = valid_tracestate(header);
        self
    }

    /// The `tracestate` to send on, if any.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// The `traceparent` header value.
    pub fn to_traceparent(&self) -> String {
        format!("00-{:032x}-{:016x}-{:02x}", self.trace_id, self.span_id, self.sampled as u8)
    }

    /// The context of the current span, to send with an outgoing request (see [`traceparent`])
    /// or to store with a background job; `None` outside any span.
    pub fn current() -> Option<RemoteContext> {
        let c = CURRENT.with(|c| c.get());
        (c.trace_id != 0).then(|| RemoteContext {
            trace_id: c.trace_id,
            span_id: c.span_id,
            sampled: c.sampled,
            tracestate: TRACESTATE.with(|t| t.borrow().clone()),
            remote: false,
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
        Ctx { trace_id: self.trace_id, span_id: self.span_id, sampled: self.sampled }
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
        let prev_ctx = CURRENT.with(|c| c.replace(Ctx { trace_id: 0, span_id: 0, sampled: false }));
        let prev_link = PENDING_LINK.with(|l| l.replace(Some(self.ctx())));
        let prev_state = TRACESTATE.with(|t| t.take());
        let _restore = (RestoreCtx(prev_ctx), RestoreLink(prev_link), RestoreState(prev_state));
        f()
    }

    /// Runs `f` outside any trace: a span it starts begins a new one.
    pub(crate) fn none_in<R>(f: impl FnOnce() -> R) -> R {
        let prev_ctx = CURRENT.with(|c| c.replace(Ctx { trace_id: 0, span_id: 0, sampled: false }));
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
        let prev_ctx = CURRENT.with(|c| c.replace(Ctx { trace_id: 0, span_id: 0, sampled: false }));
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
            this.ctx = Ctx { trace_id: 0, span_id: 0, sampled: false };
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
/// `tracestate` when the trace carries one. Empty outside any span.
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
    if !PROPAGATE.load(std::sync::atomic::Ordering::Relaxed) {
        return Vec::new();
    }
    let Some(ctx) = RemoteContext::current() else { return Vec::new() };
    let mut headers = vec![("traceparent", ctx.to_traceparent())];
    if let Some(ts) = ctx.tracestate {
        headers.push(("tracestate", ts.to_string()));
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
    WithBound { inner, bound: crate::logs::context::current() }.instrument(tracing::Span::current())
}

/// A future run with a log context (the request's or task's fields) current on every poll.
struct WithBound<F> {
    inner: F,
    bound: Option<Arc<crate::logs::context::Bound>>,
}

impl<F: Future> Future for WithBound<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `inner` is structurally pinned and never moved.
        let this = unsafe { self.get_unchecked_mut() };
        let inner = unsafe { Pin::new_unchecked(&mut this.inner) };
        let prev = crate::logs::context::swap(this.bound.clone());
        struct Restore(Option<Arc<crate::logs::context::Bound>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                crate::logs::context::swap(self.0.take());
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
}
