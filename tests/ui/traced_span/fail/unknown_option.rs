use obs_runtime::traced_span;

#[traced_span("ticket.checkout", feilds(tier))]
fn checkout(tier: u64) -> u64 {
    tier
}

#[traced_span("ticket.lock_tier", level = "verbose")]
fn lock(tier: u64) -> u64 {
    tier
}

#[traced_span("stripe.create_checkout_session", kind = "outgoing")]
fn call(tier: u64) -> u64 {
    tier
}

fn main() {
    checkout(1);
    lock(1);
    call(1);
}
