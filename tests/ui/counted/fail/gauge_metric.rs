use obs_runtime::counted;

#[counted(metric = "lib_members_active")]
fn join() {}

fn main() {
    join();
}
