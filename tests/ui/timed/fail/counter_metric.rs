use obs_runtime::timed;

#[timed(metric = "lib_calls_total", labels(function = "f"))]
fn f() {}

fn main() {
    f();
}
