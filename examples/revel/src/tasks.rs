//! The background queue: in process by default (a bounded tokio channel), on Redis with
//! `REDIS_URL` (a list, with the retries waiting their turn in a sorted set). Each job runs as an
//! obs task (context on its log lines, a span linked to the request that enqueued it, task
//! metrics), with the queue depth reported: on Redis, the list's real length.
//!
//! Both backends are bounded ([`CAPACITY`]: a full queue refuses the job, counted in
//! `revel_celery_tasks_dropped_total`) and retry a failed attempt after an exponential backoff
//! with jitter ([`backoff`]).

use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use obs_runtime::task::{Outcome, Task};
use obs_runtime::trace::RemoteContext;
use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::App;
use crate::cache::{Conn, Redis};

/// A job and the task run it belongs to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Job {
    /// Tell the organization's members an event opened; a retry sends `only` to the recipients
    /// the previous attempt missed.
    NotifyEventOpen { event_id: u64, only: Option<Vec<String>>, attempt: u32 },
    /// A job that panics (tests: the worker must survive it).
    #[cfg(test)]
    Panic,
}

impl Job {
    fn name(&self) -> &'static str {
        match self {
            Job::NotifyEventOpen { .. } => "notify_event_open",
            #[cfg(test)]
            Job::Panic => "notify_event_open",
        }
    }

    fn attempt(&self) -> u32 {
        match self {
            Job::NotifyEventOpen { attempt, .. } => *attempt,
            #[cfg(test)]
            Job::Panic => 0,
        }
    }
}

/// Recipients an attempt could not reach (its `Display`, recorded on the task's span, says how
/// many, not who).
#[derive(Debug)]
pub struct Missed(pub Vec<String>);

impl std::fmt::Display for Missed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} emails not delivered", self.0.len())
    }
}

/// Attempts per job, the first included.
const MAX_ATTEMPTS: u32 = 3;

pub const QUEUE: &str = "notifications";

/// The most jobs that wait in the queue; beyond, a job is refused and counted (the backlog
/// alert fires at 1000).
pub const CAPACITY: usize = 10_000;

/// The Redis list the jobs wait in, and the sorted set of retries by the time they are due (ms).
const LIST: &str = "revel:queue:notifications";
const DELAYED: &str = "revel:queue:notifications:delayed";

/// Pushes ARGV[1] unless the list already holds ARGV[2] jobs; the new length, or -1 when full.
const PUSH_BOUNDED: &str = "if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return -1 end \
                            return redis.call('LPUSH', KEYS[1], ARGV[1])";
/// Moves the retries due by ARGV[1] (ms) from the sorted set to the list; how many.
const PROMOTE_DUE: &str = "local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 100) \
                           for _, job in ipairs(due) do redis.call('ZREM', KEYS[2], job) redis.call('LPUSH', KEYS[1], job) end \
                           return #due";

/// A job as it is stored in Redis: the job and what its task needs to continue the trace.
#[derive(Serialize, Deserialize)]
struct Envelope {
    id: String,
    retries: u32,
    traceparent: Option<String>,
    tracestate: Option<String>,
    /// The W3C baggage of the request that enqueued it (absent in jobs stored before it was kept).
    #[serde(default)]
    baggage: Option<String>,
    job: Job,
}

impl Envelope {
    fn of(task: &Task, job: Job) -> Envelope {
        Envelope {
            id: task.task_id().to_owned(),
            retries: task.retry_count(),
            traceparent: task.origin().map(RemoteContext::to_traceparent),
            tracestate: task.origin().and_then(|o| o.tracestate().map(str::to_owned)),
            baggage: task.origin().and_then(|o| o.baggage().map(str::to_owned)),
            job,
        }
    }

    fn into_task(self) -> (Task, Job) {
        let mut task = Task::new(self.job.name()).queue(QUEUE).id(self.id).retries(self.retries);
        if let Some(origin) =
            self.traceparent.as_deref().and_then(|tp| RemoteContext::from_headers(tp, self.tracestate.as_deref()))
        {
            let origin = match self.baggage.as_deref() {
                Some(baggage) => origin.with_baggage(baggage),
                None => origin,
            };
            task = task.enqueued_from(origin);
        }
        (task, self.job)
    }
}

/// How long the attempt after `attempt` waits: `base` doubled per attempt (at most 5 minutes),
/// the second half drawn at random so that jobs failing together do not retry together.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let full = base.saturating_mul(1 << attempt.min(16)).min(Duration::from_secs(300));
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    full / 2 + full.mul_f64((random >> 11) as f64 / (1u64 << 53) as f64 / 2.0)
}

enum Backend {
    Local(mpsc::Sender<(Task, Job)>),
    Redis(Conn),
}

struct Inner {
    backend: Backend,
    /// Jobs waiting (in process), or the list's last length read (Redis).
    depth: AtomicUsize,
    /// The backoff's base, in microseconds.
    retry_base_us: AtomicU64,
}

/// The sending side, cheap to clone.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

/// The worker's end of the queue.
pub enum Receiver {
    Local(mpsc::Receiver<(Task, Job)>),
    Redis(Redis),
}

impl Queue {
    /// The in-process queue (holding [`CAPACITY`] jobs) and its receiving end (for [`run_worker`]).
    pub fn new() -> (Queue, Receiver) {
        Self::with_capacity(CAPACITY)
    }

    /// The in-process queue holding `capacity` jobs.
    pub fn with_capacity(capacity: usize) -> (Queue, Receiver) {
        let (tx, rx) = mpsc::channel(capacity);
        (Self::of(Backend::Local(tx)), Receiver::Local(rx))
    }

    /// The queue on `redis` (the list `revel:queue:notifications`).
    pub fn redis(redis: &Redis) -> (Queue, Receiver) {
        (Self::of(Backend::Redis(redis.conn.clone())), Receiver::Redis(redis.clone()))
    }

    fn of(backend: Backend) -> Queue {
        // Shown at 0 from the start, so that `increase()` sees the first refusal.
        obs_runtime::metric!("revel_celery_tasks_dropped_total", queue_name = QUEUE).inc_by(0);
        let inner = Inner { backend, depth: AtomicUsize::new(0), retry_base_us: AtomicU64::new(1_000_000) };
        Queue { inner: Arc::new(inner) }
    }

    /// The backoff's base: the first retry waits between half of it and all of it (1 s unless
    /// set; tests make it short).
    pub fn set_retry_base(&self, base: Duration) {
        self.inner.retry_base_us.store(base.as_micros().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    /// Enqueues `job`, linked to the current trace.
    pub async fn enqueue(&self, job: Job) {
        self.send(Task::new(job.name()).queue(QUEUE).enqueued_here(), job).await;
    }

    /// Enqueues the next attempt of `task`'s job after the backoff: same task id, same link to
    /// the request that first enqueued it, one more retry.
    async fn retry(&self, task: Task, job: Job) {
        let attempt = job.attempt();
        let delay = backoff(Duration::from_micros(self.inner.retry_base_us.load(Ordering::Relaxed)), attempt - 1);
        let task = task.retries(attempt);
        match &self.inner.backend {
            Backend::Local(_) => {
                let queue = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    queue.send(task, job).await;
                });
            }
            Backend::Redis(conn) => {
                let due = now_ms() + delay.as_millis() as u64;
                let stored = serde_json::to_string(&Envelope::of(&task, job)).expect("a job serializes");
                let added: redis::RedisResult<i64> = conn.clone().zadd(DELAYED, stored, due).await;
                if let Err(e) = added {
                    self.dropped(&format!("{:?}", e.kind()));
                }
            }
        }
    }

    async fn send(&self, task: Task, job: Job) {
        match &self.inner.backend {
            Backend::Local(tx) => {
                // Counted first: the worker may take it before `try_send` returns.
                let depth = self.inner.depth.fetch_add(1, Ordering::Relaxed) + 1;
                obs_runtime::task::set_queue_depth(QUEUE, depth);
                if let Err(e) = tx.try_send((task, job)) {
                    self.taken();
                    match e {
                        mpsc::error::TrySendError::Full(_) => self.dropped("full"),
                        mpsc::error::TrySendError::Closed(_) => tracing::error!("the worker is gone; job dropped"),
                    }
                }
            }
            Backend::Redis(conn) => {
                let stored = serde_json::to_string(&Envelope::of(&task, job)).expect("a job serializes");
                let pushed: redis::RedisResult<i64> = redis::cmd("EVAL")
                    .arg(PUSH_BOUNDED)
                    .arg(1)
                    .arg(LIST)
                    .arg(stored)
                    .arg(CAPACITY)
                    .query_async(&mut conn.clone())
                    .await;
                // The depth gauge is the worker's to set (from the list, see `run_redis`): a
                // producer's answer can arrive after the worker read the list emptied.
                match pushed {
                    Ok(-1) => self.dropped("full"),
                    Ok(_) => {}
                    Err(e) => self.dropped(&format!("{:?}", e.kind())),
                }
            }
        }
    }

    /// A job refused: counted, and said once per job (the reason, never the job's content).
    fn dropped(&self, why: &str) {
        obs_runtime::metric!("revel_celery_tasks_dropped_total", queue_name = QUEUE).inc();
        tracing::warn!(queue = QUEUE, reason = why, "background job refused");
    }

    /// Reads the Redis list's length into the depth gauge (the worker does, at every poll and
    /// every job taken); nothing in process.
    pub async fn refresh_depth(&self) {
        if let Backend::Redis(conn) = &self.inner.backend
            && let Ok(len) = conn.clone().llen::<_, usize>(LIST).await
        {
            self.set_depth(len);
        }
    }

    fn set_depth(&self, depth: usize) {
        self.inner.depth.store(depth, Ordering::Relaxed);
        obs_runtime::task::set_queue_depth(QUEUE, depth);
    }

    /// One job fewer waits (taken by the worker, or refused), reported. Saturating: a stopping
    /// worker may have zeroed the count in between.
    fn taken(&self) {
        let before = self.inner.depth.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| Some(d.saturating_sub(1)));
        obs_runtime::task::set_queue_depth(QUEUE, before.unwrap_or(1).saturating_sub(1));
    }

    /// Jobs waiting (on Redis: the list's length when last read).
    pub fn depth(&self) -> usize {
        self.inner.depth.load(Ordering::Relaxed)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Runs jobs one at a time until the queue closes (in process) or forever (Redis). A job that
/// panics is counted as a failed task (by the task wrapper) and the worker goes on with the next.
pub async fn run_worker(app: App, rx: Receiver) {
    match rx {
        Receiver::Local(rx) => run_local(app, rx).await,
        Receiver::Redis(redis) => run_redis(app, redis).await,
    }
}

async fn run_local(app: App, rx: mpsc::Receiver<(Task, Job)>) {
    /// The receiving end. Whatever ends the worker, it closes the queue first (so that no job
    /// is accepted after) and the jobs still queued are gone: the depth reads 0, not a backlog
    /// that no one will ever drain.
    struct Worker {
        rx: mpsc::Receiver<(Task, Job)>,
        queue: Queue,
    }
    impl Drop for Worker {
        fn drop(&mut self) {
            self.rx.close();
            let lost = self.queue.inner.depth.swap(0, Ordering::Relaxed);
            obs_runtime::task::set_queue_depth(QUEUE, 0);
            if lost > 0 {
                tracing::error!(lost, "the worker stopped; queued jobs dropped");
            }
        }
    }
    let mut worker = Worker { rx, queue: app.tasks.clone() };
    while let Some((task, job)) = worker.rx.recv().await {
        app.tasks.taken();
        run_job(&app, task, job).await;
    }
}

/// How long a pop waits on an empty list before the worker looks at the due retries again.
const POLL: Duration = Duration::from_secs(1);

async fn run_redis(app: App, redis: Redis) {
    // A connection of its own: the pop blocks it for up to `POLL`.
    let mut conn = loop {
        match redis.dedicated(POLL + Duration::from_secs(4)).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error_kind = ?e.kind(), "the Redis queue is unreachable; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    loop {
        // Outside any span: timed, not traced (a poll a second would be a trace a second).
        let promoted: redis::RedisResult<i64> = redis::cmd("EVAL")
            .arg(PROMOTE_DUE)
            .arg(2)
            .arg(LIST)
            .arg(DELAYED)
            .arg(now_ms())
            .query_async(&mut conn)
            .await;
        // The real queue's length, for the depth gauge: at every poll (at most `POLL` old when
        // idle), and below at every job taken.
        app.tasks.refresh_depth().await;
        let popped: redis::RedisResult<Option<(String, String)>> = match promoted {
            Ok(_) => conn.brpop(LIST, POLL.as_secs_f64()).await,
            Err(e) => Err(e),
        };
        let stored = match popped {
            Ok(Some((_, stored))) => stored,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error_kind = ?e.kind(), "the Redis queue is unavailable; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        app.tasks.refresh_depth().await;
        match serde_json::from_str::<Envelope>(&stored) {
            Ok(envelope) => {
                let (task, job) = envelope.into_task();
                run_job(&app, task, job).await;
            }
            // Not one of ours (or from an incompatible version): said, without its content.
            Err(e) => {
                // serde's message can quote the value: its category and position only.
                tracing::error!(
                    error_category = ?e.classify(),
                    line = e.line(),
                    column = e.column(),
                    bytes = stored.len(),
                    "a job in the Redis queue cannot be read; dropped"
                )
            }
        }
    }
}

/// Runs one job as its task; a failed attempt that asks for it is retried after the backoff.
async fn run_job(app: &App, task: Task, job: Job) {
    match job {
        Job::NotifyEventOpen { event_id, only, attempt } => {
            let last = attempt + 1 >= MAX_ATTEMPTS;
            // On a task of its own, so that a panic ends the job, not the worker.
            let run = tokio::spawn(task.clone().run(notify_event_open(app.clone(), event_id, only, last)));
            match run.await {
                // A retry re-queues the recipients that were missed, a bounded number of times.
                Ok(Outcome::Retry(Missed(missed))) => {
                    app.tasks
                        .retry(
                            task,
                            Job::NotifyEventOpen {
                                event_id,
                                // None missed by name: the database failed, everyone again.
                                only: (!missed.is_empty()).then_some(missed),
                                attempt: attempt + 1,
                            },
                        )
                        .await
                }
                Ok(_) => {}
                Err(e) => tracing::error!(event_id, error = %e, "notify_event_open ended abnormally"),
            }
        }
        #[cfg(test)]
        Job::Panic => {
            let run = tokio::spawn(task.run(async { panic!("a job that panics") as Outcome<(), Missed> }));
            let _ = run.await;
        }
    }
}

/// Notifies the organization's members (or, on a retry, those the last attempt missed) that an
/// event opened. The `last` attempt fails for good rather than asking for a retry.
async fn notify_event_open(app: App, event_id: u64, only: Option<Vec<String>>, last: bool) -> Outcome<usize, Missed> {
    // Cancelled (or gone) since it was published: nobody is told it opened, retries included.
    let status = sqlx::query_scalar::<_, String>("SELECT status FROM events WHERE id = $1")
        .bind(event_id as i64)
        .fetch_optional(&app.db)
        .await;
    match status {
        Ok(Some(s)) if s == "open" => {}
        Ok(_) => {
            tracing::info!(event_id, "the event is no longer open; members not notified");
            return Outcome::Success(0);
        }
        // The database is down: the whole job is tried again.
        Err(_) if !last => return Outcome::Retry(Missed(Vec::new())),
        Err(_) => return Outcome::Failure(Missed(Vec::new())),
    }
    let recipients = match only {
        Some(r) => r,
        None => match crate::flows::eligible_users(&app, event_id).await {
            Ok(r) => r,
            Err(_) if !last => return Outcome::Retry(Missed(Vec::new())),
            Err(_) => return Outcome::Failure(Missed(Vec::new())),
        },
    };
    // The title, from the event cache when there is one (the status above is read from the
    // database: a stale cache must not notify anyone of a cancelled event).
    let name = match crate::flows::event_details(&app, event_id).await {
        Ok(Some(d)) => d.name,
        _ => format!("Event {event_id}"),
    };
    let batch = crate::flows::render_batch(&recipients, &name);
    let failed = crate::flows::send_batch(&app, &batch).await;
    let delivered = batch.len() - failed.len();
    if !batch.is_empty() {
        obs_runtime::metric!("revel_email_delivery_rate").set(delivered as f64 / batch.len() as f64);
    }
    tracing::info!(event_id, recipients = batch.len(), delivered, "event-open notifications sent");
    match failed.len() {
        0 => Outcome::Success(delivered),
        _ if last => Outcome::Failure(Missed(failed)),
        // Some delivered: retry the rest; none: retry all.
        _ => Outcome::Retry(Missed(failed)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::external::Externals;
    use obs_runtime::testing::value;

    /// The tests count the same task metric: one at a time.
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    fn failures() -> f64 {
        value("revel_celery_tasks_total", &[("task_name", "notify_event_open"), ("status", "failure")]).unwrap_or(0.0)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panicking_job_spares_the_worker_and_a_stopped_worker_leaves_no_backlog() {
        let _serial = SERIAL.lock().await;
        crate::register_metrics();
        let (app, rx) = App::for_tests(Externals::instant()).await;
        let worker = tokio::spawn(run_worker(app.clone(), rx));
        let before = failures();
        for _ in 0..2 {
            app.tasks.enqueue(Job::Panic).await;
        }
        // Waited for, with a bound for a loaded machine.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while failures() < before + 2.0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(failures(), before + 2.0, "both panics counted as failed tasks");
        assert!(!worker.is_finished(), "the worker survived them");
        assert_eq!(app.tasks.depth(), 0);

        // Jobs queued when the worker stops are gone: the gauge must not report them forever.
        // (One thread: the worker does not run between these lines.)
        for _ in 0..3 {
            app.tasks.enqueue(Job::NotifyEventOpen { event_id: 1, only: None, attempt: 0 }).await;
        }
        assert_eq!(value("revel_celery_queue_depth", &[("queue_name", QUEUE)]), Some(3.0));
        worker.abort();
        assert!(worker.await.unwrap_err().is_cancelled());
        assert_eq!(app.tasks.depth(), 0);
        assert_eq!(value("revel_celery_queue_depth", &[("queue_name", QUEUE)]), Some(0.0));
        // And a job enqueued afterwards is refused without counting as waiting.
        app.tasks.enqueue(Job::NotifyEventOpen { event_id: 1, only: None, attempt: 0 }).await;
        assert_eq!(value("revel_celery_queue_depth", &[("queue_name", QUEUE)]), Some(0.0));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_job_is_retried_a_bounded_number_of_times_then_fails_for_good() {
        let _serial = SERIAL.lock().await;
        crate::register_metrics();
        let mut externals = Externals::instant();
        externals.email.failure_rate = 1.0; // every email bounces
        let (app, rx) = App::for_tests(externals).await;
        app.tasks.set_retry_base(Duration::from_millis(1));
        let worker = tokio::spawn(run_worker(app.clone(), rx));
        let count = |status| {
            value("revel_celery_tasks_total", &[("task_name", "notify_event_open"), ("status", status)]).unwrap_or(0.0)
        };
        let (retries, failed) = (count("retry"), failures());
        app.tasks.enqueue(Job::NotifyEventOpen { event_id: 1, only: None, attempt: 0 }).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while failures() <= failed && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(failures(), failed + 1.0, "the last attempt fails for good");
        assert_eq!(count("retry"), retries + f64::from(MAX_ATTEMPTS - 1), "the ones before ask for a retry");
        assert_eq!(app.tasks.depth(), 0, "nothing left queued");
        worker.abort();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_queue_refuses_a_job_and_counts_it() {
        let _serial = SERIAL.lock().await;
        crate::register_metrics();
        let dropped = || value("revel_celery_tasks_dropped_total", &[("queue_name", QUEUE)]).unwrap_or(0.0);
        let before = dropped();
        let (queue, _rx) = Queue::with_capacity(2);
        for _ in 0..3 {
            queue.enqueue(Job::NotifyEventOpen { event_id: 1, only: None, attempt: 0 }).await;
        }
        assert_eq!(queue.depth(), 2, "two wait");
        assert_eq!(dropped(), before + 1.0, "the third is refused and counted");
        assert_eq!(value("revel_celery_queue_depth", &[("queue_name", QUEUE)]), Some(2.0));
    }

    #[test]
    fn a_stored_job_keeps_its_origin_and_baggage() {
        let origin = RemoteContext::from_headers(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Some("rojo=00f067aa0ba902b7"),
        )
        .unwrap()
        .with_baggage("tenant=acme");
        let task = Task::new("notify_event_open").enqueued_from(origin.clone());
        let job = Job::NotifyEventOpen { event_id: 1, only: None, attempt: 0 };
        let stored = serde_json::to_string(&Envelope::of(&task, job)).unwrap();
        let (taken, _) = serde_json::from_str::<Envelope>(&stored).unwrap().into_task();
        let back = taken.origin().unwrap();
        assert_eq!(
            (back.to_traceparent(), back.tracestate(), back.baggage()),
            (origin.to_traceparent(), Some("rojo=00f067aa0ba902b7"), Some("tenant=acme"))
        );
        // A job stored before the baggage was kept still reads.
        let old = stored.replace(r#""baggage":"tenant=acme","#, "");
        assert!(!old.contains("baggage"), "{old}");
        let (taken, _) = serde_json::from_str::<Envelope>(&old).unwrap().into_task();
        assert_eq!(taken.origin().unwrap().baggage(), None);
    }

    #[test]
    fn retries_back_off_exponentially_with_jitter_and_a_ceiling() {
        let base = Duration::from_secs(1);
        for attempt in 0..4 {
            let full = base * (1 << attempt);
            let draws: Vec<Duration> = (0..50).map(|_| backoff(base, attempt)).collect();
            assert!(draws.iter().all(|d| *d >= full / 2 && *d <= full), "attempt {attempt}: {draws:?}");
            assert!(draws.iter().any(|d| *d != draws[0]), "jittered: {draws:?}");
        }
        assert!(backoff(base, 40) <= Duration::from_secs(300));
    }
}
