use obs_runtime::Scrub;

struct Opaque;

#[derive(Scrub)]
struct Order {
    id: u64,
    detail: Opaque,
}

fn main() {}
