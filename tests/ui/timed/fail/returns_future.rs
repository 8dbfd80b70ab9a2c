use obs_runtime::timed;
use std::future::Future;
use std::pin::Pin;

#[timed(metric = "lib_search_duration_seconds", labels(index = "future"))]
fn search() -> impl Future<Output = u32> {
    async { 1 }
}

#[timed(metric = "lib_search_duration_seconds", labels(index = "boxed"))]
fn search_boxed() -> Pin<Box<dyn Future<Output = u32> + Send>> {
    Box::pin(async { 1 })
}

fn main() {
    let _ = search();
    let _ = search_boxed();
}
