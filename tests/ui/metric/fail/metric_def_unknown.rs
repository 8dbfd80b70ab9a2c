// `metric_def!` checks its name against the catalog like `metric!`: a typo is a compile error with
// a suggestion, not a panic when the service starts. The stand-in it leaves is accepted where the
// definition goes, so the typo is the only error.
fn main() {
    obs_runtime::task::record_queue_depth(obs_runtime::metric_def!("lib_loan_total"));
}
