// Compiled with OBS_CATALOG pointing at catalogs/syntax.toml.
fn main() {
    obs_runtime::metric!("lib_loans_total").inc();
}
