use obs_runtime::traced_span;

#[traced_span("ticket.checkout", fields(tier, org_id = org.id))]
fn checkout(tier_id: u64) -> u64 {
    tier_id
}

fn main() {
    checkout(1);
}
