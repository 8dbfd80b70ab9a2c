use obs_runtime::counted;

#[counted(metric = "lib_loans_total", labels(branch_id = "b"))]
fn lend() {}

#[counted(metric = "lib_loans_total")]
fn lend_without_labels() {}

fn main() {
    lend();
    lend_without_labels();
}
