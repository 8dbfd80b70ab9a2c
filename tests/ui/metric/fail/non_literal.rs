fn main() {
    let name = "lib_uptime_total";
    obs_runtime::metric!(name).inc();
}
