use obs_runtime::counted;

#[counted(metric = "lib_uptime_total")]
struct Library;

#[counted(metric = "lib_uptime_total")]
const fn tick() {}

fn main() {
    let _ = Library;
    tick();
}
