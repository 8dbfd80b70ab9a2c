use obs_runtime::Scrub;

#[derive(Scrub)]
struct Login {
    #[scrub(hide)]
    password: String,
}

fn main() {
    // One mistake, one error: the type still has `Debug` and `Scrub` (the whole value redacted).
    let login = Login { password: "hunter2".into() };
    println!("{login:?}");
    let _ = obs_runtime::scrub::Scrub::scrub(&login);
}
