//! The scrubber on arbitrary input: it never panics, never grows text without bound, and a
//! second pass finds nothing more to replace.
#![no_main]

use libfuzzer_sys::fuzz_target;
use obs_runtime::scrub::{is_sensitive_key, scrub_field, scrub_text};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let once = scrub_text(text);
    // Each replacement is at most 10 bytes and replaces at least one byte.
    assert!(once.len() <= text.len() * 10 + 16);
    assert_eq!(scrub_text(&once), once);
    let _ = is_sensitive_key(text);
    if let Some((key, value)) = text.split_once('\0') {
        let _ = scrub_field(key, value);
    }
});
