// Compiled with OBS_CATALOG pointing at catalogs/malformed.toml. The catalog's problems are
// reported once, at the first macro use; the others compile silently: no second error, no
// "unused variable" for what only their labels use, no "unreachable" after `catalog!()`,
// and `metric_def!` stands in a definition.
use obs_runtime::counted;

#[counted(metric = "lib_loans_total", labels(branch_id = branch, channel = "desk"))]
fn lend(branch: u64) {}

fn main() {
    lend(1);
    let currency = "EUR";
    obs_runtime::metric!("lib_fines_total", currency = currency).inc_by(2.0);
    let defs: &'static [obs_runtime::metrics::MetricDef] = obs_runtime::catalog!();
    let _ = defs.len();
    obs_runtime::task::record_queue_depth(obs_runtime::metric_def!("lib_loans_total"));
}
