fn main() {
    // A counter cannot be observed, a histogram cannot be incremented, a counter cannot go down.
    obs_runtime::metric!("lib_fines_total", currency = "EUR").observe(1.0);
    obs_runtime::metric!("lib_pages_scanned").inc();
    obs_runtime::metric!("lib_uptime_total").dec();
}
