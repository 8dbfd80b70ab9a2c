use obs_runtime::counted;

#[counted(metric = "lib_loans_total", labels(branch_id = "b", chanel = "desk"))]
fn lend() {}

fn main() {
    lend();
}
