use obs_runtime::timed;
use std::future::Future;

// (A function returning `Box::pin(<future>)`, as `#[async_trait]` writes its methods, is timed to
// the future's completion: tests/counted.rs.)
#[timed(metric = "lib_search_duration_seconds", labels(index = "future"))]
fn search() -> impl Future<Output = u32> {
    async { 1 }
}

fn main() {
    let _ = search();
}
