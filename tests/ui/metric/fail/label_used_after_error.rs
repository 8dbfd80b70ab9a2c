// `branch` is used only in a label expression of a `metric!` with an error: the expression is
// still type-checked and counts as a use, so the one error comes without an `unused variable`
// warning.
fn lend(branch: u64) {
    obs_runtime::metric!("lib_loan_total", branch_id = branch, channel = "desk").inc();
}

fn main() {
    lend(1);
}
