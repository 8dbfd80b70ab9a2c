use obs_runtime::counted;

// The functions return a `Result`: the message says `outcome(..)` could supply a missing label.
#[counted(metric = "lib_tasks_total", labels(task_name = "reindex"))]
fn reindex() -> Result<(), String> {
    Ok(())
}

#[counted(metric = "lib_tasks_total")]
fn retry() -> std::io::Result<()> {
    Ok(())
}

fn main() {
    let _ = reindex();
    let _ = retry();
}
