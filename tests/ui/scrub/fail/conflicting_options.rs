use obs_runtime::Scrub;

#[derive(Scrub)]
struct Login {
    #[scrub(redact, keep)]
    password: String,
}

fn main() {}
