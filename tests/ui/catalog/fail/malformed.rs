// Compiled with OBS_CATALOG pointing at catalogs/malformed.toml.
use obs_runtime::counted;

#[counted(metric = "lib_loans_total", labels(branch_id = "b"))]
fn lend() {}

fn main() {
    lend();
}
