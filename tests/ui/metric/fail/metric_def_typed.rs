// `metric_def!` is typed by the metric's kind and labels, and each integration says in its
// signature what it records into: a wrong metric is a compile error at the call, not a panic when
// the service starts.
use obs_runtime::{metric_def, task};

fn main() {
    // A histogram where the task wrapper counts runs.
    task::record_metrics(metric_def!("lib_task_duration_seconds"), metric_def!("lib_task_duration_seconds"));
    // A counter labelled `branch_id` and `channel`: the task wrapper fills `task_name` and `status`.
    task::record_metrics(metric_def!("lib_loans_total"), metric_def!("lib_task_duration_seconds"));
    // The queue depth gauge is labelled exactly `queue_name`.
    task::record_queue_depth(metric_def!("lib_members_active"));
}
