// A mistake in the body is reported once, on the user's code (the macro writes a sync body
// twice: with the span off and inside it).
use obs_runtime::traced_span;

#[traced_span("ticket.price")]
fn price(tier: u64) -> u64 {
    let cents: u32 = tier;
    cents
}

fn main() {
    let _ = price(1);
}
