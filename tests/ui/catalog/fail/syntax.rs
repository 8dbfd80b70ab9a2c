// Compiled with OBS_CATALOG pointing at catalogs/syntax.toml. The syntax error is reported once,
// at the first macro use; the others compile silently.
use obs_runtime::timed;

fn main() {
    let branch = 3;
    obs_runtime::metric!("lib_loans_total", branch_id = branch, channel = "desk").inc();
    search("title");
    let defs = obs_runtime::catalog!();
    let _ = defs.len();
}

#[timed(metric = "lib_search_duration_seconds", labels(index = index))]
fn search(index: &str) {}
