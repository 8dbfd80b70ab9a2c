//! Which keys name sensitive data.

use std::sync::atomic::{AtomicPtr, Ordering};

/// Words that make a key sensitive wherever they appear as a word of it (`user_password`,
/// `new-password`, `cardCvc`, `X-Api-Token`).
const WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "token",
    "apikey",
    "cvv",
    "cvv2",
    "cvc",
    "ssn",
    "pin",
    "otp",
    "cookie",
    "authorization",
    "jwt",
    "iban",
];

/// Fragments that make a key sensitive anywhere in its letters (`cardNumber`, `creditcard_no`,
/// `social_security_number`, `accesstoken`).
const FRAGMENTS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "apikey",
    "accesskey",
    "privatekey",
    "cardnumber",
    "cardnum",
    "cardno",
    "creditcard",
    "cardcvc",
    "cardcvv",
    "securitycode",
    "socialsecurity",
    "setcookie",
    "sessionid",
    "sessionkey",
];

/// Fragments a key may end with to be sensitive (`accesstoken`, `csrftoken`), without making
/// `prompt_tokens` one.
const SUFFIXES: &[&str] = &["token", "secret", "ssn"];

/// Keys of internal ids that are kept even though a rule would match them.
const KEEP: &[&str] =
    &["userid", "organizationid", "eventid", "ticketid", "paymentid", "requestid", "traceid", "spanid", "taskid"];

/// The letters (bits 0–25) and whether a digit (bit 26) occur in `s`: a list entry can only occur
/// in a key having all its letters, so most entries are ruled out with one `and`.
const fn letters(s: &[u8]) -> u32 {
    let mut m = 0;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c.is_ascii_lowercase() {
            m |= 1 << (c - b'a');
        } else if c.is_ascii_digit() {
            m |= 1 << 26;
        }
        i += 1;
    }
    m
}

const fn masks<const N: usize>(list: &[&str]) -> [u32; N] {
    let mut out = [0; N];
    let mut i = 0;
    while i < N {
        out[i] = letters(list[i].as_bytes());
        i += 1;
    }
    out
}

const WORD_MASKS: [u32; WORDS.len()] = masks(WORDS);
const FRAGMENT_MASKS: [u32; FRAGMENTS.len()] = masks(FRAGMENTS);

/// The optional keys (`Rules::redact_address`, `Rules::redact_phone_number`).
const ADDRESS: &[&str] =
    &["address", "streetaddress", "billingaddress", "shippingaddress", "homeaddress", "postaladdress"];
const PHONE: &[&str] = &["phone", "phonenumber", "mobile", "mobilenumber", "telephone", "tel"];

/// What the scrubber redacts by key, beyond the built-in rules: set once with
/// [`Config::scrub`](crate::config::Config::scrub) (or [`set_rules`]).
///
/// ```
/// use obs_runtime::scrub::{Rules, is_sensitive_key, set_rules};
///
/// set_rules(Rules::default().redact_key("iban_hint").redact_phone_number(true).keep_key("token_id"));
/// assert!(is_sensitive_key("ibanHint"));
/// assert!(is_sensitive_key("phone_number"));
/// assert!(!is_sensitive_key("token_id"));
/// assert!(is_sensitive_key("user_password"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Rules {
    extra: Vec<String>,
    keep: Vec<String>,
    address: bool,
    phone: bool,
}

impl Rules {
    /// Also redacts keys containing `key` (compared without case, `_`, `-` or `.`).
    pub fn redact_key(mut self, key: &str) -> Self {
        let k = normalize(key);
        if !k.is_empty() {
            self.extra.push(k);
        }
        self
    }

    /// Never redacts `key` by name (its value is still scrubbed as text): for ids whose names look
    /// sensitive. The built-in kept ids are `user_id`, `organization_id`, `event_id`, `ticket_id`,
    /// `payment_id`, `request_id`, `trace_id`, `span_id` and `task_id`.
    pub fn keep_key(mut self, key: &str) -> Self {
        self.keep.push(normalize(key));
        self
    }

    /// Redacts `address` and `*_address` keys of postal addresses (not `ip_address`).
    pub fn redact_address(mut self, on: bool) -> Self {
        self.address = on;
        self
    }

    /// Redacts `phone_number`, `phone`, `mobile` and `telephone` keys.
    pub fn redact_phone_number(mut self, on: bool) -> Self {
        self.phone = on;
        self
    }

    /// These rules (the environment's) with `code`'s added: a key either redacts is redacted,
    /// address and phone keys are redacted if either says so, and `code` keeps a key only where
    /// these do not redact it (a kept key is never looked at further, so a keep would undo the
    /// environment's redaction).
    pub(crate) fn merged(mut self, code: Rules) -> Rules {
        let redacts = |k: &str| {
            self.extra.iter().any(|e| k.contains(e.as_str()))
                || (self.address && ADDRESS.contains(&k))
                || (self.phone && PHONE.contains(&k))
        };
        let keep: Vec<String> = code.keep.into_iter().filter(|k| !redacts(k)).collect();
        self.keep.extend(keep);
        self.extra.extend(code.extra);
        self.address |= code.address;
        self.phone |= code.phone;
        self
    }
}

static DEFAULT: Rules = Rules { extra: Vec::new(), keep: Vec::new(), address: false, phone: false };
static RULES: AtomicPtr<Rules> = AtomicPtr::new(std::ptr::null_mut());

/// Replaces the rules for the whole process (each call leaks the previous rules, a few bytes:
/// meant for start-up).
pub fn set_rules(rules: Rules) {
    RULES.store(Box::into_raw(Box::new(rules)), Ordering::Release);
}

pub(crate) fn rules() -> &'static Rules {
    let p = RULES.load(Ordering::Acquire);
    // SAFETY: a non-null pointer comes from `Box::into_raw` in `set_rules` and is never freed.
    if p.is_null() { &DEFAULT } else { unsafe { &*p } }
}

/// `key` in lower case without separators: `Card-Number` → `cardnumber`.
fn normalize(key: &str) -> String {
    key.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect()
}

/// Whether a value under `key` is redacted as a whole. Keys are compared without case and
/// separators, word by word (`snake_case`, `kebab-case`, `camelCase`, `dotted.keys`).
///
/// ```
/// use obs_runtime::scrub::is_sensitive_key;
///
/// for k in ["password", "user_password", "new-password", "cardNumber", "card_cvc", "X-Api-Key", "access_token"] {
///     assert!(is_sensitive_key(k), "{k}");
/// }
/// for k in ["user_id", "payment_id", "prompt_tokens", "class_name", "email_count", "ip_address"] {
///     assert!(!is_sensitive_key(k), "{k}");
/// }
/// ```
pub fn is_sensitive_key(key: &str) -> bool {
    classify(key) == KeyClass::Redact
}

/// [`classify`] for a `'static` key, such as a `tracing` field name, remembered per thread by
/// address: a log line classifies each of its keys on every event, and the same few dozen keys
/// come back. An entry is valid for the rules it was computed with.
pub(crate) fn classify_static(key: &'static str) -> KeyClass {
    #[derive(Clone, Copy)]
    struct Entry {
        addr: usize,
        len: usize,
        rules: usize,
        class: KeyClass,
    }
    const EMPTY: Entry = Entry { addr: 0, len: 0, rules: 0, class: KeyClass::Text };
    // 64 sets of two entries: two hot keys landing in the same set both stay.
    thread_local! {
        static CACHE: [std::cell::Cell<Entry>; 128] = const { [const { std::cell::Cell::new(EMPTY) }; 128] };
    }
    let (addr, len) = (key.as_ptr() as usize, key.len());
    let rules = RULES.load(Ordering::Acquire) as usize;
    let set = ((((addr ^ len) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) * 2) as usize;
    CACHE
        .try_with(|cache| {
            let hit = |e: Entry| e.addr == addr && e.len == len && e.rules == rules && addr != 0;
            let (first, second) = (cache[set].get(), cache[set + 1].get());
            if hit(first) {
                return first.class;
            }
            if hit(second) {
                // Most recently used first.
                cache[set].set(second);
                cache[set + 1].set(first);
                return second.class;
            }
            let class = classify(key);
            cache[set + 1].set(first);
            cache[set].set(Entry { addr, len, rules, class });
            class
        })
        .unwrap_or_else(|_| classify(key))
}

/// What to do with a value under a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyClass {
    /// A kept id: the value is left exactly as it is.
    Keep,
    /// A sensitive key: the value is replaced as a whole.
    Redact,
    /// Anything else: the value is scrubbed as free text.
    Text,
}

/// How a value under `key` is scrubbed.
pub(crate) fn classify(key: &str) -> KeyClass {
    let bytes = key.as_bytes();
    if bytes.len() < 3 {
        return KeyClass::Text;
    }
    // The key's letters and digits, lower-cased, and where its words start.
    let mut flat = [0u8; 128];
    let mut starts = [0u8; 64];
    let (mut n, mut words) = (0usize, 0usize);
    let (mut prev, mut before): (u8, u8) = (b'_', b'_');
    for &b in bytes {
        if n == flat.len() {
            break; // the first 128 letters and digits decide
        }
        if b.is_ascii_alphanumeric() {
            // Words: separated by anything not alphanumeric, at a lower-to-upper case change, and
            // between letters and digits (`card4111…pin` has the word `pin`).
            let new_word = !prev.is_ascii_alphanumeric()
                || (b.is_ascii_uppercase() && prev.is_ascii_lowercase())
                || (b.is_ascii_digit() != prev.is_ascii_digit());
            if new_word && words < starts.len() {
                starts[words] = n as u8;
                words += 1;
            } else if b.is_ascii_lowercase()
                && prev.is_ascii_uppercase()
                && before.is_ascii_uppercase()
                && words < starts.len()
                && starts[words - 1] as usize != n - 1
            {
                // An acronym ends where a capitalized word starts: `CVVNumber` is `CVV` `Number`.
                starts[words] = (n - 1) as u8;
                words += 1;
            }
            flat[n] = b.to_ascii_lowercase();
            n += 1;
        }
        before = prev;
        prev = b;
    }
    let flat = &flat[..n];
    let rules = rules();
    if KEEP.iter().any(|k| k.as_bytes() == flat) {
        return KeyClass::Keep;
    }
    if rules.keep.iter().any(|k| k.as_bytes() == flat) {
        // Not redacted by name, but not trusted as an id either: scrubbed as text.
        return KeyClass::Text;
    }
    let have = letters(flat);
    let contains = |f: &[u8]| flat.windows(f.len()).any(|w| w == f);
    let fragment = FRAGMENTS.iter().zip(FRAGMENT_MASKS).any(|(f, m)| m & !have == 0 && contains(f.as_bytes()));
    if fragment || SUFFIXES.iter().any(|s| flat.ends_with(s.as_bytes())) {
        return KeyClass::Redact;
    }
    if WORD_MASKS.iter().any(|m| m & !have == 0) {
        for w in 0..words {
            let start = starts[w] as usize;
            let end = if w + 1 < words { starts[w + 1] as usize } else { n };
            let word = &flat[start..end];
            if WORDS.iter().any(|s| s.as_bytes() == word) {
                return KeyClass::Redact;
            }
        }
    }
    let optional = (rules.address && ADDRESS.iter().any(|a| a.as_bytes() == flat))
        || (rules.phone && PHONE.iter().any(|p| p.as_bytes() == flat));
    if optional || rules.extra.iter().any(|e| contains(e.as_bytes())) {
        return KeyClass::Redact;
    }
    KeyClass::Text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_keys_and_their_variants() {
        for k in [
            "password",
            "password_confirmation",
            "old_password",
            "card_number",
            "cvv",
            "card_cvc",
            "ssn",
            "social_security_number",
            "PASSWORD",
            "userPassword",
            "new-password",
            "cardNumber",
            "CardNumber",
            "credit_card",
            "api_key",
            "apiKey",
            "x-api-key",
            "Authorization",
            "access_token",
            "refreshToken",
            "csrftoken",
            "client_secret",
            "session_id",
            "Set-Cookie",
            "user.ssn",
            "pin",
            // Acronyms followed by a capitalized word (the review found them kept).
            "CVVNumber",
            "CVCCode",
            "PINCode",
            "OTPCode",
            "SSNLast4",
            "userSSN",
            "IDToken",
        ] {
            assert!(is_sensitive_key(k), "{k} should be redacted");
        }
        for k in [
            "user_id",
            "organization_id",
            "event_id",
            "ticket_id",
            "payment_id",
            "request_id",
            "trace_id",
            "TraceId",
            "task_id",
            "prompt_tokens",
            "tokens_used",
            "class_name",
            "shipping",
            "address",
            "phone_number",
            "ip_address",
            "message",
            "id",
            "",
            "HTTPStatus",
            "PINGTime",
            "URLPath",
        ] {
            assert!(!is_sensitive_key(k), "{k} should be kept");
        }
    }
}
