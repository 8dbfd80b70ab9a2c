use obs_runtime::timed;

// `index` is used only in a label expression of an attribute with an error (an undeclared
// label): the expression is still type-checked and counts as a use, so the one error comes
// without an `unused variable` warning.
#[timed(metric = "lib_search_duration_seconds", labels(index = index, shelf = "a"))]
fn search(index: &str) {}

fn main() {
    search("title");
}
