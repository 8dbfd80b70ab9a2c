//! An OTLP/HTTP trace receiver for the end-to-end scripts, built from the official
//! `opentelemetry-proto` types (`tests/support/otlp.rs`), never from obs's code: it prints its
//! traces URL, then keeps the file named by its argument listing every `trace_id span_id` pair
//! received (hex, one span per line), rewritten as spans arrive.
//!
//! `obs-otlp-sink /tmp/spans.txt` → `http://127.0.0.1:PORT/v1/traces` on stdout.

#[path = "../support/otlp.rs"]
mod otlp;

use std::io::Write as _;
use std::time::Duration;

fn main() {
    let Some(out) = std::env::args().nth(1) else {
        eprintln!("usage: obs-otlp-sink <file listing the spans received>");
        std::process::exit(2);
    };
    let (receiver, url) = otlp::Receiver::start();
    println!("{url}");
    std::io::stdout().flush().expect("stdout");
    let mut written = usize::MAX;
    loop {
        let spans = receiver.spans();
        if spans.len() != written {
            let text: String = spans.iter().map(|s| format!("{} {}\n", hex(&s.trace_id), hex(&s.span_id))).collect();
            // Whole or not at all: a reader never sees half a list.
            let tmp = format!("{out}.tmp");
            std::fs::write(&tmp, text).expect("write the span list");
            std::fs::rename(&tmp, &out).expect("rename the span list");
            written = spans.len();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
