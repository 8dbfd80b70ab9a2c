use obs_runtime::counted;

struct Branch {
    id: u64,
}

#[counted(metric = "lib_loans_total", labels(branch_id = branch.id, channel = chanel))]
fn lend(branch: &Branch, channel: &str) {
    let _ = (branch, channel);
}

fn main() {
    lend(&Branch { id: 1 }, "desk");
}
