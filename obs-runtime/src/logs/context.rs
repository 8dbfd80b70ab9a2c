//! The context bound to a request or task (`request_id`, `endpoint`, `task_name`, …): scrubbed
//! once when bound, rendered once per format, and made current on the polling thread for each
//! poll of the request's or task's future, the way our span context is. Cheaper than a `tracing`
//! span per request (no registry slot, no subscriber calls on every poll); `tracing` spans of
//! the application are still rendered too.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use super::LogFormat;
use crate::scrub::{KeyClass, REDACTED, classify_static, scrub_text};

/// Fields with their scrubbed values, and their renderings (made on first use).
pub(crate) struct Bound {
    inner: Mutex<Inner>,
    /// The profile label of the work running in this context (`crate::profile`); 0 for none.
    profile_slot: u8,
}

struct Inner {
    fields: Vec<(&'static str, Value)>,
    json: Option<Arc<str>>,
    pretty: Option<Arc<str>>,
}

impl Value {
    /// About as long as its rendering.
    fn len(&self) -> usize {
        match self {
            Value::Text(t) | Value::Plain(t) => t.len(),
            Value::Uint(_) => 20,
        }
    }
}

/// A field value: text (scrubbed when bound), a number, or text the program itself wrote (a
/// method, a route template, an address): redacted by its key like any other, but not scanned
/// as free text.
pub(crate) enum Value {
    Text(String),
    Uint(u64),
    Plain(String),
}

impl Bound {
    /// A context whose CPU samples carry the profile label of `slot`
    /// ([`crate::profile::slot_for`]).
    pub(crate) fn labeled(fields: Vec<(&'static str, Value)>, profile_slot: u8) -> Arc<Bound> {
        debug_assert!(fields.iter().all(|(k, _)| plain_key(k)), "context keys are rendered without escaping");
        let fields = fields.into_iter().map(|(k, v)| (k, scrubbed(k, v))).collect();
        Arc::new(Bound { inner: Mutex::new(Inner { fields, json: None, pretty: None }), profile_slot })
    }

    /// The profile label slot (0: none).
    pub(crate) fn profile_slot(&self) -> u8 {
        self.profile_slot
    }

    /// Sets (or replaces) a field.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn set(&self, key: &'static str, value: Value) {
        debug_assert!(plain_key(key), "context keys are rendered without escaping");
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let value = scrubbed(key, value);
        match inner.fields.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => inner.fields.push((key, value)),
        }
        inner.json = None;
        inner.pretty = None;
    }

    /// The fields as `,"key":value` (JSON) or ` key=value` (pretty) pieces.
    pub(crate) fn rendered(&self, format: LogFormat) -> Arc<str> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let cached = match format {
            LogFormat::Json => &inner.json,
            LogFormat::Pretty => &inner.pretty,
        };
        if let Some(r) = cached {
            return r.clone();
        }
        let mut out = String::with_capacity(inner.fields.iter().map(|(k, v)| k.len() + v.len() + 6).sum());
        for (k, v) in &inner.fields {
            match (format, v) {
                // The keys are our own identifiers (`request_id`, `task_name`, …): nothing to escape.
                (LogFormat::Json, Value::Text(t) | Value::Plain(t)) => {
                    out.push_str(",\"");
                    out.push_str(k);
                    out.push_str("\":");
                    super::format::json_str(&mut out, t);
                }
                (LogFormat::Json, Value::Uint(n)) => {
                    out.push_str(",\"");
                    out.push_str(k);
                    out.push_str("\":");
                    out.push_str(itoa::Buffer::new().format(*n));
                }
                (LogFormat::Pretty, Value::Text(t) | Value::Plain(t))
                    if t.contains([' ', '"', '=']) || t.is_empty() =>
                {
                    out.push_str(&format!(" {k}={t:?}"))
                }
                (LogFormat::Pretty, Value::Text(t) | Value::Plain(t)) => out.push_str(&format!(" {k}={t}")),
                (LogFormat::Pretty, Value::Uint(n)) => out.push_str(&format!(" {k}={n}")),
            }
        }
        let r: Arc<str> = out.into();
        match format {
            LogFormat::Json => inner.json = Some(r.clone()),
            LogFormat::Pretty => inner.pretty = Some(r.clone()),
        }
        r
    }
}

/// A key JSON takes as it is.
fn plain_key(key: &str) -> bool {
    key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn scrubbed(key: &'static str, value: Value) -> Value {
    match value {
        Value::Text(t) => Value::Text(match classify_static(key) {
            KeyClass::Redact => REDACTED.to_owned(),
            KeyClass::Keep => t,
            KeyClass::Text => match scrub_text(&t) {
                std::borrow::Cow::Borrowed(_) => t,
                std::borrow::Cow::Owned(scrubbed) => scrubbed,
            },
        }),
        Value::Plain(t) => Value::Text(if classify_static(key) == KeyClass::Redact { REDACTED.to_owned() } else { t }),
        n => n,
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Bound>>> = const { RefCell::new(None) };
}

/// Makes `ctx` the thread's current context; returns the previous one (to restore).
pub(crate) fn swap(ctx: Option<Arc<Bound>>) -> Option<Arc<Bound>> {
    CURRENT.with(|c| c.replace(ctx))
}

/// The thread's current context.
pub(crate) fn current() -> Option<Arc<Bound>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// The current context's rendering, if any.
pub(crate) fn rendered(format: LogFormat) -> Option<Arc<str>> {
    CURRENT.with(|c| c.borrow().as_ref().map(|b| b.rendered(format)))
}
