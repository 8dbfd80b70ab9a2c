// `metric_def!` checks its name against the catalog like `metric!`: a typo is a compile error with
// a suggestion, not a panic when the service starts.
fn main() {
    let _ = obs_runtime::metric_def!("lib_loan_total");
}
