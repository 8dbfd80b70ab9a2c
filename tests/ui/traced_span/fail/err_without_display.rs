use obs_runtime::traced_span;

struct SoldOut;

#[traced_span("ticket.checkout", err)]
fn checkout() -> Result<(), SoldOut> {
    Err(SoldOut)
}

#[traced_span("ticket.count", err)]
fn count() -> u32 {
    1
}

fn main() {
    let _ = checkout();
    count();
}
