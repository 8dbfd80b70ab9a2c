use obs_runtime::timed;

// A histogram of pages, not of seconds: its catalog entry declares no unit.
#[timed(metric = "lib_pages_scanned")]
fn scan() {}

fn main() {
    scan();
}
