use obs_runtime::counted;

#[counted(metric = "lib_calls_total", lables(function = "f"))]
fn f() {}

#[counted(metric = "lib_calls_total", labels(function = "g"), only = "sometimes")]
fn g() -> Result<(), ()> {
    Ok(())
}

fn main() {
    f();
    let _ = g();
}
