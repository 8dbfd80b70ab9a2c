//! W3C Trace Context: `traceparent` in and out, and links from a background task to the trace
//! that enqueued it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{CURRENT, Ctx, PENDING_LINK};

/// A span context that crosses a process or queue boundary, as a W3C `traceparent`.
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
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RemoteContext {
    trace_id: u128,
    span_id: u64,
    sampled: bool,
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
        (trace_id != 0 && span_id != 0).then_some(RemoteContext { trace_id, span_id, sampled: flags & 1 == 1 })
    }

    /// The `traceparent` header value.
    pub fn to_traceparent(&self) -> String {
        format!("00-{:032x}-{:016x}-{:02x}", self.trace_id, self.span_id, self.sampled as u8)
    }

    /// The context of the current span, to send with an outgoing request (see [`traceparent`])
    /// or to store with a background job; `None` outside any span.
    pub fn current() -> Option<RemoteContext> {
        let c = CURRENT.with(|c| c.get());
        (c.trace_id != 0).then_some(RemoteContext { trace_id: c.trace_id, span_id: c.span_id, sampled: c.sampled })
    }

    /// Whether the trace is sampled upstream (children follow it).
    pub fn is_sampled(&self) -> bool {
        self.sampled
    }

    /// The trace id as 32 hex digits.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    fn ctx(self) -> Ctx {
        Ctx { trace_id: self.trace_id, span_id: self.span_id, sampled: self.sampled }
    }

    /// Runs `f` as if inside the remote span: spans started in it are its children, in its trace,
    /// following its sampling decision. For a request that arrived with a `traceparent`.
    pub fn in_scope<R>(self, f: impl FnOnce() -> R) -> R {
        let prev = CURRENT.with(|c| c.replace(self.ctx()));
        let _restore = RestoreCtx(prev);
        f()
    }

    /// `fut` run as if inside the remote span, on every poll.
    pub fn instrument<F: Future>(self, fut: F) -> InRemote<F> {
        InRemote { inner: fut, ctx: self.ctx(), link: false }
    }

    /// Runs `f` so that the next root span it starts (a background task's) begins a new trace
    /// linked to this context (the request that enqueued the task).
    pub fn link_in<R>(self, f: impl FnOnce() -> R) -> R {
        let prev_ctx = CURRENT.with(|c| c.replace(Ctx { trace_id: 0, span_id: 0, sampled: false }));
        let prev_link = PENDING_LINK.with(|l| l.replace(Some(self.ctx())));
        let _restore = (RestoreCtx(prev_ctx), RestoreLink(prev_link));
        f()
    }

    /// `fut` run as with [`link_in`](Self::link_in): on every poll outside any trace, the link
    /// pending until the first root span takes it.
    pub fn link_instrument<F: Future>(self, fut: F) -> InRemote<F> {
        InRemote { inner: fut, ctx: self.ctx(), link: true }
    }
}

struct RestoreCtx(Ctx);
impl Drop for RestoreCtx {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
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
    link: bool,
}

impl<F: Future> Future for InRemote<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `inner` is structurally pinned and never moved.
        let this = unsafe { self.get_unchecked_mut() };
        let inner = unsafe { Pin::new_unchecked(&mut this.inner) };
        let remote =
            RemoteContext { trace_id: this.ctx.trace_id, span_id: this.ctx.span_id, sampled: this.ctx.sampled };
        if !this.link {
            return remote.in_scope(|| inner.poll(cx));
        }
        // A task linked to its origin: outside any trace on every poll, with the link pending
        // until a root span takes it.
        let prev_ctx = CURRENT.with(|c| c.replace(Ctx { trace_id: 0, span_id: 0, sampled: false }));
        let prev_link = PENDING_LINK.with(|l| l.replace(Some(this.ctx)));
        let _restore = RestoreCtx(prev_ctx);
        let poll = inner.poll(cx);
        if PENDING_LINK.with(|l| l.replace(prev_link)).is_none() {
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
    RemoteContext::current().map(|c| c.to_traceparent())
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
}
