use obs_runtime::Scrub;

#[derive(Scrub)]
struct Login {
    #[scrub(hide)]
    password: String,
}

fn main() {}
