use obs_runtime::counted;

#[counted(metric = "lib_search_duration_seconds", labels(index = "title"))]
fn search() {}

fn main() {
    search();
}
