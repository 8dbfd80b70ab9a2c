use obs_runtime::Scrub;

#[derive(Scrub)]
struct Card {
    #[scrub(partial = "four")]
    number: String,
}

fn main() {}
