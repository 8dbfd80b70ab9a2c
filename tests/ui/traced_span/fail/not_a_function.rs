use obs_runtime::traced_span;

// On the item's name, as `#[counted]` says it.
#[traced_span("library")]
struct Library;

trait Checkout {
    #[traced_span("checkout")]
    fn checkout(&self);
}

fn main() {
    let _ = Library;
}
