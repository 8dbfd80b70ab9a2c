use obs_runtime::counted;

trait Lender {
    #[counted(metric = "lib_uptime_total")]
    fn lend(&self);
}

fn main() {}
