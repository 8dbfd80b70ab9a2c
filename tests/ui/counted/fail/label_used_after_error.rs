use obs_runtime::counted;

// `branch` is used only in a label expression of an attribute with an error: the expression is
// still type-checked and counts as a use, so the one error comes without an `unused variable`
// warning.
#[counted(metric = "lib_loan_total", labels(branch_id = branch, channel = "desk"))]
fn lend(branch: u64) {}

fn main() {
    lend(1);
}
