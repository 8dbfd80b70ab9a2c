use obs_runtime::Scrub;

#[derive(Scrub)]
struct Card {
    #[scrub(partial = 0)]
    number: String,
}

fn main() {}
