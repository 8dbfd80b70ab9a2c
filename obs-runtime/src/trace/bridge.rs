//! `tracing` spans of chosen targets as obs spans: the bridge `OBS_TRACING_SPANS` (or
//! [`Config::tracing_spans`](crate::config::Config::tracing_spans)) turns on.
//!
//! A `tracing` span whose target and level the directives accept, created while a **sampled**
//! obs span is current, becomes an obs span, a child of it: named by the `tracing` span's name,
//! its fields as attributes (scrubbed like every attribute; `otel.kind` sets the kind and
//! `otel.status_code = "ERROR"` fails it with `otel.status_message`, as tracing-opentelemetry
//! reads them), the events of listed targets inside it as span events (an ERROR event fails
//! it). While it is entered, it is the current obs span: obs spans and bridged spans inside it
//! are its children. A span created anywhere else (no obs span, an unsampled trace) is not
//! bridged: its creation costs one thread-local read past `tracing`'s own work, and each of its
//! records, events, entries and exits one look at its extensions. Spans of targets not listed
//! never reach the bridge.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use opentelemetry::{KeyValue, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use super::{CURRENT, Kind, SpanSite, SpanState};

/// The layer (installed by `init` under the directives' filter).
pub(crate) struct BridgeLayer;

/// The obs span a bridged `tracing` span became, in the span's extensions, and whether it was
/// marked failed already (a library may record `otel.status_code` more than once).
struct Bridged(SpanState, bool);

thread_local! {
    /// The obs context each entered bridged span replaced on this thread, innermost last, with
    /// the span's id: an exit restores its own entry's context, wherever it is in the stack
    /// (exits out of order, an entry left on another thread).
    static ENTERED: RefCell<Vec<(u64, super::Prev)>> = const { RefCell::new(Vec::new()) };
}

/// One site per `tracing` callsite and kind, made once (process-wide, under a lock) and then
/// found in a per-thread cache. Level 4: the directives decide, not obs's span level.
fn site(meta: &'static Metadata<'static>, kind: Kind) -> &'static SpanSite {
    type Sites = HashMap<(usize, u8), &'static SpanSite>;
    static SITES: OnceLock<Mutex<Sites>> = OnceLock::new();
    thread_local! {
        static CACHE: RefCell<Sites> = RefCell::new(HashMap::new());
    }
    let key = (meta as *const Metadata<'static> as usize, kind as u8);
    CACHE.with(|c| {
        if let Some(s) = c.borrow().get(&key) {
            return *s;
        }
        let mut sites = SITES.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
        let s = *sites.entry(key).or_insert_with(|| {
            Box::leak(Box::new(SpanSite { name: meta.name(), level: crate::trace::Level::Error, kind }))
        });
        c.borrow_mut().insert(key, s);
        s
    })
}

fn kind_of(value: &str) -> Option<Kind> {
    Some(match value.to_ascii_lowercase().as_str() {
        "client" => Kind::Client,
        "server" => Kind::Server,
        "producer" => Kind::Producer,
        "consumer" => Kind::Consumer,
        "internal" => Kind::Internal,
        _ => return None,
    })
}

/// A span's or event's fields as attributes (scrubbed by key and as text), `otel.*` aside.
#[derive(Default)]
struct Fields {
    attributes: Vec<KeyValue>,
    kind: Option<Kind>,
    message: Option<String>,
    /// `otel.status_code = "ERROR"` (tracing-opentelemetry's convention): the span failed.
    error: bool,
    /// `error.message`, the failure's text when there is one.
    error_message: Option<String>,
}

impl Fields {
    fn push(&mut self, field: &Field, value: Value) {
        let key = field.name();
        if key == "message" {
            self.message = Some(value.as_str().into_owned());
        } else if key == "otel.kind" {
            self.kind = kind_of(&value.as_str());
        } else if key == "otel.status_code" {
            self.error = value.as_str().eq_ignore_ascii_case("error");
        } else if key == "otel.status_message" {
            self.error_message = Some(crate::scrub::scrub_text(&value.as_str()).into_owned());
        } else if !key.starts_with("otel.") && !key.starts_with("log.") {
            let value = crate::scrub::attribute(key, value);
            if key == "error.message" && self.error_message.is_none() {
                self.error_message = Some(value.as_str().into_owned());
            }
            self.attributes.push(KeyValue::new(key, value));
        }
    }

    /// Fails `state` if the fields say the span failed, once.
    fn apply_status(&mut self, state: &mut SpanState, failed: &mut bool) {
        if self.error && !*failed {
            *failed = true;
            let message = self.error_message.take().unwrap_or_else(|| "error".to_owned());
            state.fail_typed("error", || message);
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, Value::from(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Value::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, i64::try_from(value).map_or_else(|_| Value::from(value.to_string()), Value::I64));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, Value::F64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::Bool(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push(field, Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.push(field, Value::from(format!("{value:?}")));
    }
}

impl<S> tracing_subscriber::Layer<S> for BridgeLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        // Only inside a sampled obs span: everything else costs this one read.
        if !CURRENT.with(Cell::get).sampled() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        // Rendered before the extensions are locked (a field's `Debug` may log).
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let mut state = SpanState::start(site(attrs.metadata(), fields.kind.unwrap_or(Kind::Internal)));
        if !state.is_recording() {
            return;
        }
        let mut failed = false;
        fields.apply_status(&mut state, &mut failed);
        for kv in fields.attributes {
            state.push_clean(kv);
        }
        span.extensions_mut().insert(Bridged(state, failed));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if span.extensions().get::<Bridged>().is_none() {
            return;
        }
        let mut fields = Fields::default();
        values.record(&mut fields);
        if let Some(Bridged(state, failed)) = span.extensions_mut().get_mut::<Bridged>() {
            fields.apply_status(state, failed);
            for kv in fields.attributes {
                state.push_clean(kv);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.event_span(event) else { return };
        if span.extensions().get::<Bridged>().is_none() {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let name: Cow<'static, str> = match fields.message {
            Some(m) => match crate::scrub::scrub_text(&m) {
                Cow::Borrowed(_) => Cow::Owned(m),
                Cow::Owned(s) => Cow::Owned(s),
            },
            None => Cow::Borrowed(event.metadata().name()),
        };
        let error = *event.metadata().level() == Level::ERROR;
        if let Some(Bridged(state, _)) = span.extensions_mut().get_mut::<Bridged>() {
            if error {
                let text = name.clone().into_owned();
                state.fail_typed("error", || text);
            } else {
                state.add_event(name, fields.attributes);
            }
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if let Some(Bridged(state, _)) = span.extensions().get::<Bridged>() {
            let prev = state.swap_in();
            ENTERED.with(|e| e.borrow_mut().push((id.into_u64(), prev)));
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if let Some(Bridged(state, _)) = span.extensions_mut().get_mut::<Bridged>() {
            let own = id.into_u64();
            let prev = ENTERED.with(|e| {
                let mut e = e.borrow_mut();
                let at = e.iter().rposition(|(i, _)| *i == own)?;
                Some(e.remove(at).1)
            });
            // Not entered on this thread: nothing of ours to restore here.
            if let Some(prev) = prev {
                state.swap_out(prev);
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let taken = span.extensions_mut().remove::<Bridged>();
        // Ended (and handed to the exporter) with the extensions unlocked.
        drop(taken);
    }
}
