//! The background queue: a tokio channel and a worker, each job run as an obs task (context on its
//! log lines, a span linked to the request that enqueued it, task metrics), with the queue depth
//! reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use obs_runtime::task::{Outcome, Task};
use tokio::sync::mpsc;

use crate::App;

/// A job and the task run it belongs to.
#[derive(Debug)]
pub enum Job {
    /// Tell the organization's members an event opened; a retry sends `only` to the recipients
    /// the previous attempt missed.
    NotifyEventOpen { event_id: u64, only: Option<Vec<String>>, attempt: u32 },
    /// A job that panics (tests: the worker must survive it).
    #[cfg(test)]
    Panic,
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

/// The sending side, cheap to clone.
/// The worker's end of the queue.
pub type Receiver = mpsc::UnboundedReceiver<(Task, Job)>;

#[derive(Clone)]
pub struct Queue {
    tx: mpsc::UnboundedSender<(Task, Job)>,
    depth: Arc<AtomicUsize>,
}

impl Queue {
    /// The queue and its receiving end (for [`run_worker`]).
    pub fn new() -> (Queue, Receiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Queue { tx, depth: Arc::new(AtomicUsize::new(0)) }, rx)
    }

    /// Enqueues `job`, linked to the current trace.
    pub fn enqueue(&self, job: Job) {
        let name = match &job {
            Job::NotifyEventOpen { .. } => "notify_event_open",
            #[cfg(test)]
            Job::Panic => "notify_event_open",
        };
        self.send(Task::new(name).queue(QUEUE).enqueued_here(), job);
    }

    /// Enqueues the next attempt of `task`'s job: same task id, same link to the request that
    /// first enqueued it, one more retry.
    fn retry(&self, task: Task, job: Job) {
        let attempt = match &job {
            Job::NotifyEventOpen { attempt, .. } => *attempt,
            #[cfg(test)]
            Job::Panic => 0,
        };
        self.send(task.retries(attempt), job);
    }

    fn send(&self, task: Task, job: Job) {
        let depth = self.depth.fetch_add(1, Ordering::Relaxed) + 1;
        obs_runtime::task::set_queue_depth(QUEUE, depth);
        if self.tx.send((task, job)).is_err() {
            self.taken();
            tracing::error!("the worker is gone; job dropped");
        }
    }

    /// One job fewer waits (taken by the worker, or refused), reported. Saturating: a stopping
    /// worker may have zeroed the count in between.
    fn taken(&self) {
        let before = self.depth.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| Some(d.saturating_sub(1)));
        obs_runtime::task::set_queue_depth(QUEUE, before.unwrap_or(1).saturating_sub(1));
    }

    /// Jobs waiting.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }
}

/// Runs jobs one at a time until the queue closes. A job that panics is counted as a failed task
/// (by the task wrapper) and the worker goes on with the next.
pub async fn run_worker(app: App, rx: mpsc::UnboundedReceiver<(Task, Job)>) {
    /// The receiving end. Whatever ends the worker, it closes the queue first (so that no job
    /// is accepted after) and the jobs still queued are gone: the depth reads 0, not a backlog
    /// that no one will ever drain.
    struct Worker {
        rx: mpsc::UnboundedReceiver<(Task, Job)>,
        depth: Arc<AtomicUsize>,
    }
    impl Drop for Worker {
        fn drop(&mut self) {
            self.rx.close();
            let lost = self.depth.swap(0, Ordering::Relaxed);
            obs_runtime::task::set_queue_depth(QUEUE, 0);
            if lost > 0 {
                tracing::error!(lost, "the worker stopped; queued jobs dropped");
            }
        }
    }
    let mut worker = Worker { rx, depth: app.tasks.depth.clone() };
    while let Some((task, job)) = worker.rx.recv().await {
        app.tasks.taken();
        let app = app.clone();
        match job {
            Job::NotifyEventOpen { event_id, only, attempt } => {
                let last = attempt + 1 >= MAX_ATTEMPTS;
                // On a task of its own, so that a panic ends the job, not the worker.
                let run = tokio::spawn(task.clone().run(notify_event_open(app.clone(), event_id, only, last)));
                match run.await {
                    // A retry re-queues the recipients that were missed, a bounded number of times.
                    Ok(Outcome::Retry(Missed(missed))) => app.tasks.retry(
                        task,
                        Job::NotifyEventOpen {
                            event_id,
                            // None missed by name: the database failed, everyone again.
                            only: (!missed.is_empty()).then_some(missed),
                            attempt: attempt + 1,
                        },
                    ),
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
    let batch = crate::flows::render_batch(&recipients, event_id);
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
            app.tasks.enqueue(Job::Panic);
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
            app.tasks.enqueue(Job::NotifyEventOpen { event_id: 1, only: None, attempt: 0 });
        }
        assert_eq!(value("revel_celery_queue_depth", &[("queue_name", QUEUE)]), Some(3.0));
        worker.abort();
        assert!(worker.await.unwrap_err().is_cancelled());
        assert_eq!(app.tasks.depth(), 0);
        assert_eq!(value("revel_celery_queue_depth", &[("queue_name", QUEUE)]), Some(0.0));
        // And a job enqueued afterwards is refused without counting as waiting.
        app.tasks.enqueue(Job::NotifyEventOpen { event_id: 1, only: None, attempt: 0 });
        assert_eq!(value("revel_celery_queue_depth", &[("queue_name", QUEUE)]), Some(0.0));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_job_is_retried_a_bounded_number_of_times_then_fails_for_good() {
        let _serial = SERIAL.lock().await;
        crate::register_metrics();
        let mut externals = Externals::instant();
        externals.email.failure_rate = 1.0; // every email bounces
        let (app, rx) = App::for_tests(externals).await;
        let worker = tokio::spawn(run_worker(app.clone(), rx));
        let count = |status| {
            value("revel_celery_tasks_total", &[("task_name", "notify_event_open"), ("status", status)]).unwrap_or(0.0)
        };
        let (retries, failed) = (count("retry"), failures());
        app.tasks.enqueue(Job::NotifyEventOpen { event_id: 1, only: None, attempt: 0 });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while failures() <= failed && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(failures(), failed + 1.0, "the last attempt fails for good");
        assert_eq!(count("retry"), retries + f64::from(MAX_ATTEMPTS - 1), "the ones before ask for a retry");
        assert_eq!(app.tasks.depth(), 0, "nothing left queued");
        worker.abort();
    }
}
