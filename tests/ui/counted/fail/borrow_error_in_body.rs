use obs_runtime::counted;

#[counted(metric = "lib_calls_total", labels(function = "f"), only = "ok")]
fn f(v: &mut Vec<u32>) -> Result<(), ()> {
    let first = &v[0];
    v.push(*first);
    println!("{first}");
    Ok(())
}

fn main() {
    let _ = f(&mut vec![1]);
}
