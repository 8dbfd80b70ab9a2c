//! Background tasks: context on every log line (`task_id`, `task_name`, `queue`, `retries`), a
//! span linked to the trace that enqueued the task, and task metrics. Runtime-agnostic: it wraps
//! a future, whatever runs it. Each task ends with one `obs::task` line and one count, by
//! `status`: `success`, `failure` (an error or a panic), `retry` ([`Outcome::Retry`]), or
//! `cancelled` (its future dropped before it completed, e.g. at shutdown; dropped inside the
//! task's context).
//!
//! ```
//! use obs_runtime::task::{self, Task};
//!
//! // Once at start-up: the catalog metrics tasks are recorded into.
//! task::record_metrics(
//!     obs_runtime::metric_def!("shop_tasks_total"),            // counter: task_name, status
//!     obs_runtime::metric_def!("shop_task_duration_seconds"),  // histogram: task_name
//! );
//! task::record_queue_depth(obs_runtime::metric_def!("shop_queue_depth")); // gauge: queue_name
//!
//! // When enqueueing (inside the request): remember where the task comes from.
//! let job = Task::new("send_receipt").queue("emails").enqueued_here();
//!
//! // In the worker: run it inside its context.
//! # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! rt.block_on(job.run(async {
//!     tracing::info!("sending"); // carries task_id, task_name, queue, retries
//!     Ok::<(), std::io::Error>(())
//! }))
//! .unwrap();
//! task::set_queue_depth("emails", 0);
//! ```

use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use crate::metrics::{Def, Exactly, Family, FilledBy, by, kind, label};
use crate::trace::{RemoteContext, SpanSite, SpanState};

struct Metrics {
    tasks: (&'static Family, [Slot; 2]),
    duration: (&'static Family, [Slot; 2]),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Name,
    Status,
    None,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();
static DEPTH: OnceLock<&'static Family> = OnceLock::new();

/// Records every task run from now on into `tasks` (a counter labelled by any of `task_name` and
/// `status`: `success`, `failure`, `retry`) and `duration` (a histogram labelled by
/// `task_name` or nothing); another kind or label is a compile error. Call it once, at start-up;
/// later calls are ignored.
pub fn record_metrics<T, D>(tasks: Def<kind::Counter, T>, duration: Def<kind::Histogram, D>)
where
    T: FilledBy<by::TaskRuns>,
    D: FilledBy<by::TaskDuration>,
{
    let (tasks, duration) = (tasks.get(), duration.get());
    let t = crate::metrics::label_slots(
        tasks,
        "the task wrapper",
        &[("task_name", Slot::Name), ("status", Slot::Status)],
        Slot::None,
    );
    let d = crate::metrics::label_slots(duration, "the task wrapper", &[("task_name", Slot::Name)], Slot::None);
    let registry = crate::metrics::registry();
    let _ = METRICS.set(Metrics { tasks: (registry.family(tasks), t), duration: (registry.family(duration), d) });
}

/// Records the queue depths reported with [`set_queue_depth`] into `depth` (a gauge labelled
/// exactly `queue_name`). Call it once, at start-up; later calls are ignored.
pub fn record_queue_depth<L: Exactly<(label::queue_name,)>>(depth: Def<kind::Gauge, L>) {
    let _ = DEPTH.set(crate::metrics::registry().family(depth.get()));
}

/// Reports how many tasks wait in `queue` (into the gauge given to [`record_queue_depth`]).
pub fn set_queue_depth(queue: &str, depth: usize) {
    if crate::is_off() {
        return;
    }
    if let Some(family) = DEPTH.get() {
        family.series_for(&[queue]).set_f64(depth as f64);
    }
}

/// How a task ended, for its metrics and span.
pub trait TaskResult {
    /// `success`, `failure` or `retry`, and the error text of the latter two.
    fn outcome(&self) -> (&'static str, Option<String>);

    /// The error's type (`exception.type` on the task's span).
    fn error_type(&self) -> &'static str {
        "error"
    }
}

impl<T, E: std::fmt::Display> TaskResult for Result<T, E> {
    fn outcome(&self) -> (&'static str, Option<String>) {
        match self {
            Ok(_) => ("success", None),
            Err(e) => ("failure", Some(e.to_string())),
        }
    }

    fn error_type(&self) -> &'static str {
        std::any::type_name::<E>()
    }
}

impl TaskResult for () {
    fn outcome(&self) -> (&'static str, Option<String>) {
        ("success", None)
    }
}

/// A task result that distinguishes an attempt to be retried from a final failure.
#[derive(Debug)]
pub enum Outcome<T, E> {
    /// Done.
    Success(T),
    /// Failed; the queue will run it again.
    Retry(E),
    /// Failed for good.
    Failure(E),
}

impl<T, E: std::fmt::Display> TaskResult for Outcome<T, E> {
    fn outcome(&self) -> (&'static str, Option<String>) {
        match self {
            Outcome::Success(_) => ("success", None),
            Outcome::Retry(e) => ("retry", Some(e.to_string())),
            Outcome::Failure(e) => ("failure", Some(e.to_string())),
        }
    }

    fn error_type(&self) -> &'static str {
        std::any::type_name::<E>()
    }
}

/// One run of a background task; see the [module](self) documentation.
#[derive(Clone, Debug)]
pub struct Task {
    name: &'static str,
    queue: &'static str,
    id: String,
    retries: u32,
    origin: Option<RemoteContext>,
}

impl Task {
    /// A run of the task `name` (a fixed name: it labels metrics), with a new id, on the
    /// `default` queue.
    pub fn new(name: &'static str) -> Task {
        let r = crate::trace::random_u128();
        Task { name, queue: "default", id: format!("{r:032x}"), retries: 0, origin: None }
    }

    /// The queue it runs from.
    pub fn queue(mut self, queue: &'static str) -> Task {
        self.queue = queue;
        self
    }

    /// The id the queue gave it.
    pub fn id(mut self, id: impl Into<String>) -> Task {
        self.id = id.into();
        self
    }

    /// How many times it was retried before this run.
    pub fn retries(mut self, retries: u32) -> Task {
        self.retries = retries;
        self
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The queue it runs from.
    pub fn queue_name(&self) -> &'static str {
        self.queue
    }

    /// Its id: what an external queue stores with the job, to give it back with
    /// [`id`](Self::id) when the job is taken.
    pub fn task_id(&self) -> &str {
        &self.id
    }

    /// How many times it was retried before this run.
    pub fn retry_count(&self) -> u32 {
        self.retries
    }

    /// Where it was enqueued: what an external queue stores with the job (as
    /// [`RemoteContext::to_traceparent`] and [`RemoteContext::tracestate`]), to give it back with
    /// [`enqueued_from`](Self::enqueued_from) when the job is taken.
    ///
    /// ```
    /// use obs_runtime::task::Task;
    /// use obs_runtime::trace::RemoteContext;
    ///
    /// let origin = RemoteContext::from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    /// let task = Task::new("send_receipt").enqueued_from(origin);
    /// // Stored with the job: the id and the traceparent; in the worker, the same task again.
    /// let (id, traceparent) = (task.task_id().to_owned(), task.origin().map(|o| o.to_traceparent()));
    /// let taken = Task::new("send_receipt")
    ///     .id(id)
    ///     .enqueued_from(RemoteContext::from_traceparent(&traceparent.unwrap()).unwrap());
    /// assert_eq!(taken.task_id(), task.task_id());
    /// assert_eq!(taken.origin().unwrap().trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    /// ```
    pub fn origin(&self) -> Option<&RemoteContext> {
        self.origin.as_ref()
    }

    /// Links the task's trace to `origin` (stored with the job when it was enqueued, e.g. as a
    /// `traceparent` string: [`RemoteContext::from_traceparent`]), and samples it as `origin`
    /// was sampled (see [`enqueued_here`](Self::enqueued_here)).
    pub fn enqueued_from(mut self, origin: RemoteContext) -> Task {
        self.origin = Some(origin);
        self
    }

    /// Links the task's trace to the current span: call it where the task is enqueued, ideally
    /// inside a span of kind producer (`#[traced_span("task.send_receipt", kind = "producer")]`),
    /// which OpenTelemetry pairs with the task's consumer span. Under a
    /// parent-based sampler (the default) the task's trace is sampled if and only if the current
    /// span's is (a failed or slow task is kept all the same), so the link of a sampled request
    /// always leads to its task.
    pub fn enqueued_here(mut self) -> Task {
        self.origin = RemoteContext::current();
        self
    }

    /// `fut` run as this task: a span `task.<name>` (kind consumer) starting a trace of its own, linked to the
    /// origin; the task context on every log line; metrics when it ends. A panic is recorded as
    /// a failure and keeps unwinding; a task dropped before it ends is counted as `cancelled`.
    pub fn run<F: Future>(self, fut: F) -> TaskFuture<F>
    where
        F::Output: TaskResult,
    {
        if crate::is_off() {
            // Observability disabled: the future as it is.
            return TaskFuture { inner: ManuallyDrop::new(fut), state: None, off: true };
        }
        // A root: a task created inside a request must not carry the request's context.
        use crate::context::{Bound, Value};
        let bound = Bound::labeled(
            &[
                ("task_id", Some(Value::Text(&self.id))),
                ("task_name", Some(Value::Plain(self.name))),
                ("queue", Some(Value::Plain(self.queue))),
                ("retries", Some(Value::Uint(u64::from(self.retries)))),
            ],
            crate::profile::slot_for("task", self.name),
        );
        // The baggage of the request that enqueued it: readable in the task, its allow-listed
        // keys on the task's log lines (scrubbed when set) and span (scrubbed when recorded).
        let mut baggage_attributes = Vec::new();
        if let Some(baggage) = self.origin.as_ref().and_then(RemoteContext::baggage_arc) {
            baggage_attributes = crate::trace::baggage_attributes(&baggage);
            for (key, value) in &baggage_attributes {
                bound.set(key, Value::Text(value));
            }
            bound.set_baggage(baggage);
        }
        let site = site(self.name);
        let span = match &self.origin {
            Some(origin) => origin.link_in(|| SpanState::start(site)),
            // A new trace, whatever the thread was doing.
            None => RemoteContext::none_in(|| SpanState::start(site)),
        };
        let mut running = Running {
            span,
            bound,
            start: Instant::now(),
            name: self.name,
            id: self.id,
            queue: self.queue,
            retries: self.retries,
            baggage_attributes,
        };
        if running.span.is_recording() {
            running.span_attributes();
        }
        TaskFuture { inner: ManuallyDrop::new(fut), state: Some(running), off: false }
    }
}

fn site(name: &'static str) -> &'static SpanSite {
    static SITES: OnceLock<Mutex<std::collections::HashMap<&'static str, &'static SpanSite>>> = OnceLock::new();
    let mut sites = SITES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    sites.entry(name).or_insert_with(|| {
        let span_name: &'static str = Box::leak(format!("task.{name}").into_boxed_str());
        // A task taken from a queue: OpenTelemetry's consumer kind.
        Box::leak(Box::new(SpanSite {
            name: span_name,
            level: crate::trace::Level::Info,
            kind: crate::trace::Kind::Consumer,
        }))
    })
}

struct Running {
    span: SpanState,
    bound: std::sync::Arc<crate::context::Bound>,
    start: Instant,
    name: &'static str,
    id: String,
    queue: &'static str,
    retries: u32,
    /// The allow-listed baggage members of the origin (`Config::baggage_attributes`).
    baggage_attributes: Vec<(&'static str, String)>,
}

impl Running {
    /// Set when the task starts if it is sampled, or when it ends if its unsampled root is kept.
    fn span_attributes(&mut self) {
        self.span.mark_profiled();
        self.span.set_attribute("task.id", self.id.clone());
        self.span.set_attribute("task.queue", self.queue);
        // OpenTelemetry's messaging conventions, for tools that read them.
        self.span.set_attribute("messaging.destination.name", self.queue);
        self.span.set_attribute("messaging.operation.type", "process");
        self.span.set_attribute("task.retries", i64::from(self.retries));
        for (key, value) in &self.baggage_attributes {
            self.span.set_attribute(key, value.clone());
        }
    }

    fn finish(mut self, status: &'static str, error: Option<String>, kind: &'static str) {
        if let Some(e) = &error {
            self.span.set_error(e.clone(), kind);
        }
        if let Some(m) = METRICS.get() {
            let value = |slot: Slot| match slot {
                Slot::Name => self.name,
                Slot::Status => status,
                Slot::None => "",
            };
            // After the outcome: an unsampled root kept for its error is an exemplar too.
            let exemplar = self.span.exemplar_ids();
            crate::metrics::series_by_slots(m.tasks.0, &m.tasks.1, value).inc_with(exemplar);
            crate::metrics::series_by_slots(m.duration.0, &m.duration.1, value)
                .observe_with(self.start.elapsed().as_secs_f64(), exemplar);
        }
        // An unsampled root kept for its error or its duration: as searchable as a sampled one.
        if self.span.kept_by_tail() {
            self.span_attributes();
        }
        self.span.set_attribute("task.status", status);
        // To the microsecond, as the access line's.
        let duration_ms = self.start.elapsed().as_micros() as f64 / 1000.0;
        self.span.run_in(Some(self.bound.clone()), None, || match &error {
            None => tracing::info!(target: "obs::task", status, duration_ms, "task completed"),
            Some(_) if status == CANCELLED => {
                tracing::warn!(target: "obs::task", status, duration_ms, "task cancelled before it completed")
            }
            Some(e) => tracing::warn!(target: "obs::task", status, duration_ms, error = %e, "task failed"),
        });
        self.span.finish();
    }
}

/// A task's future (see [`Task::run`]).
pub struct TaskFuture<F> {
    /// Dropped by hand: a cancelled task's future is dropped inside its context.
    inner: ManuallyDrop<F>,
    state: Option<Running>,
    /// Observability disabled: the future as it is.
    off: bool,
}

impl<F: Future> Future for TaskFuture<F>
where
    F::Output: TaskResult,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `inner` is structurally pinned and never moved; `state` is not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        let inner = unsafe { Pin::new_unchecked(&mut *this.inner) };
        if this.off {
            return inner.poll(cx);
        }
        let state = this.state.as_mut().expect("TaskFuture polled after completion");
        // A task's trace is its own: no `tracestate` of a request awaiting it inline.
        let bound = state.bound.clone();
        let polled =
            state.span.run_in(Some(bound), None, || std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))));
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => {
                let (status, error) = out.outcome();
                this.state.take().expect("checked above").finish(status, error, out.error_type());
                Poll::Ready(out)
            }
            Err(panic) => {
                this.state.take().expect("checked above").finish("failure", Some("panicked".into()), "panic");
                std::panic::resume_unwind(panic)
            }
        }
    }
}

impl<F> Drop for TaskFuture<F> {
    fn drop(&mut self) {
        let Some(mut state) = self.state.take() else {
            // Completed, or observability off.
            // SAFETY: dropped exactly once, here; never used again.
            unsafe { ManuallyDrop::drop(&mut self.inner) };
            return;
        };
        // Cancelled (dropped before it completed, e.g. at shutdown): its future is dropped inside
        // the task's context (what its destructors log carries `task_id`, their spans are
        // children), then it counts as `cancelled`, with a span failed and a log line.
        let inner = &mut self.inner;
        // SAFETY: as above; the closure runs once.
        let bound = state.bound.clone();
        state.span.run_in(Some(bound), None, || unsafe { ManuallyDrop::drop(inner) });
        state.finish(CANCELLED, Some(CANCELLED.into()), CANCELLED);
    }
}

/// The status of a task dropped before it completed.
const CANCELLED: &str = "cancelled";
