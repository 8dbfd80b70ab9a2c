use obs_runtime::counted;

const METRIC: &str = "lib_loans_total";

#[counted(metric = METRIC, labels(branch_id = "b", channel = "desk"))]
fn lend() {}

fn main() {
    lend();
}
