fn main() {
    obs_runtime::metric!("lib_fine_total", currency = "EUR").inc_by(1.0);
}
