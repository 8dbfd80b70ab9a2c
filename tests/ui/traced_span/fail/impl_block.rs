// `#[traced_span]` on an `impl` block names each method's span `prefix.method`; options that name
// arguments differ between methods, so they are refused there, once, on the option.
use obs_runtime::traced_span;

struct Inventory;

#[traced_span("inventory", fields(n))]
impl Inventory {
    fn reserve(&self, n: u32) -> u32 {
        n
    }
}

struct Shelf;

// No prefix.
#[traced_span(level = "debug")]
impl Shelf {
    fn count(&self) -> u32 {
        0
    }
}

struct Bin;

// A misspelt level is reported once, not once per method.
#[traced_span("bin", level = "verbose")]
impl Bin {
    fn put(&self) {}
    fn take(&self) {}
}

// `skip` outside an instrumented impl block.
#[traced_span(skip)]
fn lonely() {}

fn main() {
    let _ = (Inventory.reserve(1), Shelf.count());
    Bin.put();
    Bin.take();
    lonely();
}
