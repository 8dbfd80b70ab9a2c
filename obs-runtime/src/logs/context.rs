//! The bound context (`crate::context`) rendered for log lines: once per format, cached in the
//! context until a field changes.

use std::sync::Arc;

use super::LogFormat;
use crate::context::{Bound, Inner};

impl Bound {
    /// The fields as `,"key":value` (JSON) or ` key=value` (pretty) pieces, but those named in
    /// `skip` (an event's own fields of the same names: one key per line, the event's wins).
    pub(crate) fn rendered(&self, format: LogFormat, skip: &[&str]) -> Arc<str> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.fields.iter().any(|f| skip.contains(&f.key)) {
            return render(&inner, format, skip).into();
        }
        let cached = match format {
            LogFormat::Json => &inner.json,
            LogFormat::Pretty => &inner.pretty,
        };
        if let Some(r) = cached {
            return r.clone();
        }
        let r: Arc<str> = render(&inner, format, &[]).into();
        match format {
            LogFormat::Json => inner.json = Some(r.clone()),
            LogFormat::Pretty => inner.pretty = Some(r.clone()),
        }
        r
    }
}

/// `inner`'s fields but those in `skip`, rendered.
fn render(inner: &Inner, format: LogFormat, skip: &[&str]) -> String {
    let mut out = String::with_capacity(inner.fields.iter().map(|f| f.key.len() + f.range.len() + 6).sum());
    for f in inner.fields.iter().filter(|f| !skip.contains(&f.key)) {
        let (k, v) = (f.key, &inner.text[f.range.clone()]);
        match format {
            // The keys are our own identifiers (`request_id`, `task_name`, …): nothing to escape.
            LogFormat::Json => {
                out.push_str(",\"");
                out.push_str(k);
                out.push_str("\":");
                if f.number {
                    out.push_str(v);
                } else {
                    super::format::json_str(&mut out, v);
                }
            }
            LogFormat::Pretty if !f.number && super::format::pretty_needs_quotes(v) => {
                out.push_str(&format!(" {k}={v:?}"))
            }
            LogFormat::Pretty => out.push_str(&format!(" {k}={v}")),
        }
    }
    out
}

/// The current context's rendering, if any, without the fields named in `skip`.
pub(crate) fn rendered(format: LogFormat, skip: &[&str]) -> Option<Arc<str>> {
    crate::context::with_current(|b| b.map(|b| b.rendered(format, skip)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{MAX_FIELD, Value};

    #[test]
    fn every_field_is_capped() {
        // A 60 KB path (what a scanner sends) and a long multi-byte user id.
        let path = format!("/{}", "a".repeat(60_000));
        let user = "é".repeat(5_000);
        let bound = Bound::labeled(&[("path", Some(Value::Text(&path))), ("user_id", Some(Value::Text(&user)))], 0);
        let line = bound.rendered(LogFormat::Json, &[]);
        assert!(line.len() < 2 * MAX_FIELD + 64, "{} bytes", line.len());
        let fields: serde_json::Value = serde_json::from_str(&format!("{{{}}}", &line[1..])).unwrap();
        assert!(fields["path"].as_str().unwrap().ends_with('…'));
        assert!(fields["user_id"].as_str().unwrap().len() <= MAX_FIELD + '…'.len_utf8());
        bound.set("path", Value::Text(&path));
        assert!(bound.rendered(LogFormat::Json, &[]).len() < 2 * MAX_FIELD + 64, "set is capped too");
    }

    #[test]
    fn fields_render_scrubbed_and_a_replaced_field_keeps_its_place() {
        let b = Bound::labeled(
            &[
                ("request_id", Some(Value::Text("r-1"))),
                ("user_id", None),
                ("path", Some(Value::Text("/users/ana@example.org"))),
                ("method", Some(Value::Plain("GET"))),
                ("retries", Some(Value::Uint(2))),
            ],
            0,
        );
        assert_eq!(
            &*b.rendered(LogFormat::Json, &[]),
            r#","request_id":"r-1","path":"/users/[EMAIL]","method":"GET","retries":2"#
        );
        b.set("user_id", Value::Text("7"));
        for i in 0..100 {
            b.set("request_id", Value::Text(&format!("r-{i}")));
        }
        assert_eq!(
            &*b.rendered(LogFormat::Json, &[]),
            r#","request_id":"r-99","path":"/users/[EMAIL]","method":"GET","retries":2,"user_id":"7""#
        );
        assert_eq!(
            &*b.rendered(LogFormat::Pretty, &[]),
            " request_id=r-99 path=/users/[EMAIL] method=GET retries=2 user_id=7"
        );
        let inner = b.inner.lock().unwrap();
        assert_eq!(inner.text.len(), "r-99/users/[EMAIL]GET27".len(), "no garbage left by replaced values");
    }
}
