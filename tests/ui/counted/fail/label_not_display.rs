use obs_runtime::counted;

struct Branch;

#[counted(metric = "lib_loans_total", labels(branch_id = branch, channel = "desk"))]
fn lend(branch: Branch) {
    let _ = branch;
}

fn main() {
    lend(Branch);
}
