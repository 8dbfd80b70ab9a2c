use obs_runtime::counted;

#[counted(metric = "lib_loan_total", labels(branch_id = "b", channel = "desk"))]
fn lend() {}

fn main() {
    lend();
}
