use obs_runtime::traced_span;

#[traced_span("")]
fn checkout() {}

// Both mistakes are reported, not only the first one found.
#[traced_span(" ", levl = "info")]
fn refund() {}

fn main() {
    checkout();
    refund();
}
