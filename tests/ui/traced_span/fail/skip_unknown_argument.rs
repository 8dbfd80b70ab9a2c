use obs_runtime::traced_span;

#[traced_span("ticket.checkout", skip(request))]
fn checkout(req: String) -> usize {
    req.len()
}

fn main() {
    checkout(String::new());
}
