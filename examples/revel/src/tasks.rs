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
#[derive(Clone)]
pub struct Queue {
    tx: mpsc::UnboundedSender<(Task, Job)>,
    depth: Arc<AtomicUsize>,
}

impl Queue {
    /// The queue and its receiving end (for [`run_worker`]).
    pub fn new() -> (Queue, mpsc::UnboundedReceiver<(Task, Job)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Queue { tx, depth: Arc::new(AtomicUsize::new(0)) }, rx)
    }

    /// Enqueues `job`, linked to the current trace.
    pub fn enqueue(&self, job: Job) {
        let (name, attempt) = match &job {
            Job::NotifyEventOpen { attempt, .. } => ("notify_event_open", *attempt),
        };
        let task = Task::new(name).queue(QUEUE).retries(attempt).enqueued_here();
        let depth = self.depth.fetch_add(1, Ordering::Relaxed) + 1;
        obs_runtime::task::set_queue_depth(QUEUE, depth);
        if self.tx.send((task, job)).is_err() {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            tracing::error!("the worker is gone; job dropped");
        }
    }

    /// Jobs waiting.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }
}

/// Runs jobs until the queue closes.
pub async fn run_worker(app: App, mut rx: mpsc::UnboundedReceiver<(Task, Job)>) {
    while let Some((task, job)) = rx.recv().await {
        let depth = app.tasks.depth.fetch_sub(1, Ordering::Relaxed) - 1;
        obs_runtime::task::set_queue_depth(QUEUE, depth);
        let app = app.clone();
        match job {
            Job::NotifyEventOpen { event_id, only, attempt } => {
                let outcome = task.run(notify_event_open(app.clone(), event_id, only)).await;
                // A retry re-queues the recipients that were missed, a bounded number of times.
                if let Outcome::Retry(Missed(missed)) = outcome
                    && attempt + 1 < MAX_ATTEMPTS
                {
                    app.tasks.enqueue(Job::NotifyEventOpen { event_id, only: Some(missed), attempt: attempt + 1 });
                }
            }
        }
    }
}

/// Notifies the organization's members (or, on a retry, those the last attempt missed) that an
/// event opened.
async fn notify_event_open(app: App, event_id: u64, only: Option<Vec<String>>) -> Outcome<usize, Missed> {
    let recipients = match only {
        Some(r) => r,
        None => crate::flows::eligible_users(&app, event_id),
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
        // Some delivered: retry the rest; none: retry all (the queue bounds the attempts).
        _ => Outcome::Retry(Missed(failed)),
    }
}
