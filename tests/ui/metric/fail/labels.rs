fn main() {
    let branch = 3;
    obs_runtime::metric!("lib_loans_total", branch_id = branch).inc();
    obs_runtime::metric!("lib_loans_total", branch_id = branch, channel = "desk", chanel = "x").inc();
}
