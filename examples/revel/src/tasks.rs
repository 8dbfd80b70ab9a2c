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
    NotifyEventOpen { event_id: u64 },
}

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
        let name = match job {
            Job::NotifyEventOpen { .. } => "notify_event_open",
        };
        let task = Task::new(name).queue(QUEUE).enqueued_here();
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
            Job::NotifyEventOpen { event_id } => {
                let _ = task.run(notify_event_open(app, event_id)).await;
            }
        }
    }
}

/// Notifies the organization's members that an event opened.
async fn notify_event_open(app: App, event_id: u64) -> Outcome<usize, String> {
    let recipients = crate::flows::eligible_users(&app, event_id);
    let batch = crate::flows::render_batch(&recipients, event_id);
    let delivered = crate::flows::send_batch(&app, &batch).await;
    if !batch.is_empty() {
        obs_runtime::metric!("revel_email_delivery_rate").set(delivered as f64 / batch.len() as f64);
    }
    tracing::info!(event_id, recipients = batch.len(), delivered, "event-open notifications sent");
    match batch.len() - delivered {
        0 => Outcome::Success(delivered),
        // Mostly delivered: retry the rest later; nothing delivered: a failure.
        failed if failed < batch.len() => Outcome::Retry(format!("{failed} of {} emails failed", batch.len())),
        _ => Outcome::Failure("no email delivered".into()),
    }
}
