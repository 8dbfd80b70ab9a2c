//! The types `#[traced_span]` expands to. Public only to be re-exported by `crate::__private`,
//! the macros' seam: this module is private, so they are not reachable as `obs_runtime::trace::…`
//! (the rest of the crate uses them through `trace`).

use std::mem::ManuallyDrop;
use std::sync::atomic::Ordering;

/// A span's role (OpenTelemetry's span kind), chosen at the call site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Work inside the service (the default).
    Internal,
    /// The service's side of a call it answers (the HTTP layer's spans).
    Server,
    /// A call to another service or a database, waited for.
    Client,
    /// Work handed to a queue for later (a task enqueued).
    Producer,
    /// Work taken from a queue (a task run).
    Consumer,
}

/// A span's level (`#[traced_span(.., level = "debug")]`): recorded when at least the
/// environment's minimum. The one encoding of span levels, for the macros and the runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    /// `trace`.
    Trace = 0,
    /// `debug`.
    Debug = 1,
    /// `info`, the default.
    Info = 2,
    /// `warn`.
    Warn = 3,
    /// `error`.
    Error = 4,
}

/// One call site of `#[traced_span]`.
pub struct SpanSite {
    /// The span name.
    pub name: &'static str,
    /// The span's level.
    pub level: Level,
    /// The span's kind.
    pub kind: Kind,
}

/// Whether a span of `site` would start now (one relaxed load).
#[inline(always)]
pub fn span_enabled(site: &SpanSite) -> bool {
    site.level as u8 >= super::GATE.load(Ordering::Relaxed)
}

/// A span from its start to its end; recording only when sampled.
pub struct SpanState(pub(super) super::State);

/// An entered synchronous span; ends it when dropped (a panic unwinding through it marks it
/// failed).
#[must_use = "the span ends when this guard drops"]
pub struct Entered<'a> {
    pub(super) state: &'a mut SpanState,
    pub(super) prev: super::Prev,
    pub(super) was_panicking: bool,
}

/// A future run inside a span: entered on every poll, ended when it completes or is dropped.
pub struct Instrumented<F> {
    /// Dropped by hand, inside the span, before the span ends.
    pub(super) inner: ManuallyDrop<F>,
    pub(super) state: SpanState,
}

/// An [`Instrumented`] future whose `Err` output marks the span failed (the `err` option).
pub struct InstrumentedResult<F>(pub(super) Instrumented<F>);

/// An [`Instrumented`] future whose output is checked before its span ends.
pub struct InstrumentedCheck<F, G>(pub(super) Instrumented<F>, pub(super) G);
