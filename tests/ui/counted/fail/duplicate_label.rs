use obs_runtime::counted;

#[counted(metric = "lib_loans_total", labels(branch_id = "b", channel = "desk", branch_id = "c"))]
fn lend() {}

#[counted(metric = "lib_returns_total", labels(branch_id = "b", status = "late"), outcome(label = "status"))]
fn give_back() -> Result<(), ()> {
    Ok(())
}

fn main() {
    lend();
    let _ = give_back();
}
