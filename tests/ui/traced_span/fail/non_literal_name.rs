use obs_runtime::traced_span;

const NAME: &str = "ticket.checkout";

#[traced_span(NAME)]
fn checkout() {}

#[traced_span(level = "info")]
fn no_name() {}

fn main() {
    checkout();
    no_name();
}
