// Compiled with OBS_CATALOG pointing at a file that does not exist.
fn main() {
    obs_runtime::metric!("lib_loans_total").inc();
}
