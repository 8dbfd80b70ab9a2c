//! Keeping personal data and secrets out of telemetry.
//!
//! Everything that leaves the process goes through here: log messages and fields, span
//! attributes, events and error text, metric label values. Two mechanisms:
//!
//! - **by key**: a value under a sensitive key (`password`, `user_password`, `new-password`,
//!   `cardNumber`, `card_cvc`, `api_key`, `Authorization`, …; see [`is_sensitive_key`]) is
//!   replaced by `[REDACTED]` as a whole, also inside JSON, maps, `Debug` output and query
//!   strings. Internal ids (`user_id`, `payment_id`, `request_id`, `trace_id`, …) are never
//!   touched. [`Rules`] adds keys, keeps others, and turns on the optional `address` and
//!   `phone_number` keys.
//! - **by value** ([`scrub_text`]): emails, card numbers, bearer tokens, JWTs and secrets in
//!   URLs, wherever they appear in text.
//!
//! Types derive [`Scrub`](trait@Scrub) to be safe to log by construction.
//!
//! The scrubber never panics (a fuzz target in `fuzz/` and property tests check it) and does not
//! allocate for text with nothing to replace; see `docs/design/logs-and-scrubbing.md` for what it matches
//! and what it cannot.

mod keys;
mod text;
mod value;

use std::borrow::Cow;

pub(crate) use keys::{KeyClass, classify, classify_static};
pub use keys::{Rules, is_sensitive_key, set_rules};
pub use text::{CARD, EMAIL, REDACTED, TOKEN, scrub_text};
pub(crate) use text::{is_card_number, percent_decode};
pub use value::{Safe, Scrub, Scrubbed};

/// The text `value` of a field named `key`, as it may leave the process: `[REDACTED]` under a
/// sensitive key, unchanged under a kept id, scrubbed as free text otherwise.
///
/// ```
/// use obs_runtime::scrub::scrub_field;
///
/// assert_eq!(scrub_field("new_password", "hunter2"), "[REDACTED]");
/// assert_eq!(scrub_field("comment", "mail me: ana@example.org"), "mail me: [EMAIL]");
/// assert_eq!(scrub_field("payment_id", "4111111111111111"), "4111111111111111");
/// ```
pub fn scrub_field<'a>(key: &str, value: &'a str) -> Cow<'a, str> {
    match classify(key) {
        KeyClass::Redact => Cow::Borrowed(REDACTED),
        KeyClass::Keep => Cow::Borrowed(value),
        KeyClass::Text => scrub_text(value),
    }
}

/// A span attribute as it may be exported (strings scrubbed, sensitive keys redacted).
pub(crate) fn attribute(key: &'static str, value: opentelemetry::Value) -> opentelemetry::Value {
    use opentelemetry::{StringValue, Value};
    match classify_static(key) {
        KeyClass::Redact => Value::String(StringValue::from(REDACTED)),
        KeyClass::Keep => value,
        KeyClass::Text => match value {
            Value::String(s) => match scrub_text(s.as_str()) {
                Cow::Borrowed(_) => Value::String(s),
                Cow::Owned(o) => Value::String(o.into()),
            },
            Value::Array(opentelemetry::Array::String(items)) => Value::Array(opentelemetry::Array::String(
                items.into_iter().map(|s| StringValue::from(scrub_text(s.as_str()).into_owned())).collect(),
            )),
            Value::I64(n) if is_card_number(n.unsigned_abs() as u128) => Value::String(StringValue::from(CARD)),
            other => other,
        },
    }
}
