use obs_runtime::timed;

#[timed(metric = "lib_book_size_bytes")]
fn digitise() {}

fn main() {
    digitise();
}
