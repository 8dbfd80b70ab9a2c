use obs_runtime::traced_span;

#[traced_span("")]
fn checkout() {}

fn main() {
    checkout();
}
