use obs_runtime::Scrub;

#[derive(Scrub)]
struct Card {
    #[scrub(partial = 4)]
    digits: Vec<u8>,
}

fn main() {}
