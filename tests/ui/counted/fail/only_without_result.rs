use obs_runtime::counted;

#[counted(metric = "lib_calls_total", labels(function = "f"), only = "ok")]
fn not_a_result() -> u32 {
    1
}

fn main() {
    not_a_result();
}
