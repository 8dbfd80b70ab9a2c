//! Structured logs from `tracing` events: one JSON object per line for Loki (or a readable line
//! for a terminal), scrubbed, carrying the ids of the current span.
//!
//! [`init`](crate::init) installs this layer as the global subscriber (unless
//! [`Config::logs`](crate::config::Config::logs) is off). To add it to a subscriber of your own:
//!
//! ```
//! use tracing_subscriber::layer::SubscriberExt as _;
//! use tracing_subscriber::Layer as _;
//! use obs_runtime::logs::{LogFormat, LogLayer};
//!
//! let layer = LogLayer::new(LogFormat::Json)
//!     .with_filter("info,hyper=warn".parse::<tracing_subscriber::filter::Targets>().unwrap());
//! let subscriber = tracing_subscriber::registry().with(layer);
//! tracing::subscriber::with_default(subscriber, || {
//!     tracing::info!(user_id = 7, password = "hunter2", "signed in as ana@example.org");
//!     // {"timestamp":"…","level":"INFO","target":"rust_out","message":"signed in as [EMAIL]","user_id":7,"password":"[REDACTED]"}
//! });
//! ```
//!
//! A line holds, in order: `timestamp` (RFC 3339, UTC, microseconds), `level`, `target`,
//! `message`, `trace_id` and `span_id` of the current span (the ids the exported spans carry),
//! the request or task context bound by `obs_runtime::http` or [`crate::task`], the fields of the
//! enclosing `tracing` spans from the outermost in, then the event's fields. Every string goes
//! through [`crate::scrub`] first.

pub(crate) mod context;
pub(crate) mod format;
pub(crate) mod otlp;
pub(crate) mod writer;

pub(crate) use writer::{Stream, Writer};

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, SpanRef};

use crate::scrub::{KeyClass, REDACTED, classify_static, scrub_text};

pub(crate) use crate::config::LineFn;
pub use crate::config::LogFormat;

/// Where lines go.
#[derive(Clone)]
enum Sink {
    Stdout,
    Stderr,
    /// Written by the calling thread, in order with the program's own `println!` (development).
    Direct(Stream),
    Custom(LineFn),
    /// No console: the OTLP log exporter only.
    Discard,
}

/// The `tracing` layer writing scrubbed structured logs; see the [module](self) documentation.
#[derive(Clone)]
pub struct LogLayer {
    format: LogFormat,
    sink: Sink,
}

impl std::fmt::Debug for LogLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogLayer").field("format", &self.format).finish_non_exhaustive()
    }
}

/// Handed each line as written (scrubbed): the viewer's copy.
#[cfg(feature = "viewer")]
pub(crate) static LINE_TAP: std::sync::OnceLock<fn(&[u8])> = std::sync::OnceLock::new();

impl LogLayer {
    /// Lines in `format` on standard output.
    pub fn new(format: LogFormat) -> Self {
        LogLayer { format, sink: Sink::Stdout }
    }

    /// Lines on standard error instead.
    pub fn stderr(mut self) -> Self {
        self.sink = Sink::Stderr;
        self
    }

    /// Each line (with its `\n`) handed to `write` instead: for tests, or a file of your own.
    pub fn writer(self, write: impl Fn(&[u8]) + Send + Sync + 'static) -> Self {
        self.shared_writer(Arc::new(write))
    }

    /// Lines written by the thread that logs, as `tracing-subscriber`'s formatter does: in order
    /// with the program's own output, at the cost of a system call per line and a wait on a slow
    /// terminal. `init` picks this in development only.
    pub(crate) fn synchronous(mut self) -> Self {
        self.sink = match self.sink {
            Sink::Stdout => Sink::Direct(Stream::Stdout),
            Sink::Stderr => Sink::Direct(Stream::Stderr),
            other => other,
        };
        self
    }

    pub(crate) fn shared_writer(mut self, write: LineFn) -> Self {
        self.sink = Sink::Custom(write);
        self
    }

    fn emit(&self, line: &[u8]) {
        // Standard streams are written by a thread of their own (see `writer`): no system call
        // and no wait on the request path.
        match &self.sink {
            Sink::Stdout => Writer::append(Stream::Stdout, line),
            Sink::Stderr => Writer::append(Stream::Stderr, line),
            Sink::Direct(stream) => Writer::write_now(*stream, line),
            Sink::Custom(f) => f(line),
            Sink::Discard => {}
        }
        // And as an OTLP log record, when those are exported (a copy queued, see `otlp`).
        otlp::enqueue(line);
        #[cfg(feature = "viewer")]
        if let Some(tap) = LINE_TAP.get() {
            tap(line);
        }
    }

    /// Writes lines nowhere but to the OTLP log exporter (`OTEL_LOGS_EXPORTER=otlp`).
    pub(crate) fn without_console(mut self) -> Self {
        self.sink = Sink::Discard;
        self
    }
}

/// A span's fields as each format renders them: two log layers of different formats may share a
/// registry (JSON to stdout, pretty to a file).
#[derive(Default)]
struct SpanRenderings {
    json: Option<SpanFields>,
    pretty: Option<SpanFields>,
}

impl SpanRenderings {
    fn get(&self, format: LogFormat) -> Option<&SpanFields> {
        match format {
            LogFormat::Json => self.json.as_ref(),
            LogFormat::Pretty => self.pretty.as_ref(),
        }
    }

    fn slot(&mut self, format: LogFormat) -> &mut Option<SpanFields> {
        match format {
            LogFormat::Json => &mut self.json,
            LogFormat::Pretty => &mut self.pretty,
        }
    }
}

/// The rendered fields of a `tracing` span (`,"key":value` pieces, or ` key=value` pieces), each
/// field once: a field recorded again later replaces its value.
struct SpanFields {
    joined: String,
    /// Where each field's piece is in `joined`.
    pieces: Vec<(&'static str, std::ops::Range<usize>)>,
}

/// Renders each field into `out`, noting where its piece is.
struct Pieces<'a> {
    format: LogFormat,
    out: &'a mut String,
    pieces: Vec<(&'static str, std::ops::Range<usize>)>,
}

impl Pieces<'_> {
    fn with(&mut self, field: &Field, f: impl FnOnce(&mut Fields<'_>)) {
        let start = self.out.len();
        f(&mut Fields { out: self.out, format: self.format, message: None, names: None });
        self.pieces.push((field.name(), start..self.out.len()));
    }
}

impl Visit for Pieces<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.with(field, |f| f.record_str(field, value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.with(field, |f| f.record_debug(field, value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.with(field, |f| f.record_error(field, value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.with(field, |f| f.record_i64(field, value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.with(field, |f| f.record_u64(field, value));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.with(field, |f| f.record_i128(field, value));
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.with(field, |f| f.record_u128(field, value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.with(field, |f| f.record_f64(field, value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.with(field, |f| f.record_bool(field, value));
    }
}

impl SpanFields {
    /// One string for all the fields (one allocation per span in the common case): a span's
    /// fields when it is created (`attrs.record`), or those recorded later (`values.record`),
    /// rendered before the span's extensions are locked: their `Debug` may log, and a line
    /// inside the span reads those extensions.
    fn rendered(format: LogFormat, record: impl FnOnce(&mut dyn Visit)) -> SpanFields {
        let mut joined = String::new();
        let mut p = Pieces { format, out: &mut joined, pieces: Vec::new() };
        record(&mut p);
        let pieces = p.pieces;
        SpanFields { joined, pieces }
    }

    /// Merges fields recorded later: rebuilt, a field recorded again keeping its place.
    fn merge(&mut self, later: SpanFields) {
        let SpanFields { joined: fresh, pieces: new_pieces } = later;
        let mut joined = String::with_capacity(self.joined.len() + fresh.len());
        let mut pieces = Vec::with_capacity(self.pieces.len() + new_pieces.len());
        for (name, range) in &self.pieces {
            let source = match new_pieces.iter().find(|(n, _)| n == name) {
                Some((_, r)) => &fresh[r.clone()],
                None => &self.joined[range.clone()],
            };
            let start = joined.len();
            joined.push_str(source);
            pieces.push((*name, start..joined.len()));
        }
        for (name, r) in &new_pieces {
            if !self.pieces.iter().any(|(n, _)| n == name) {
                let start = joined.len();
                joined.push_str(&fresh[r.clone()]);
                pieces.push((*name, start..joined.len()));
            }
        }
        self.joined = joined;
        self.pieces = pieces;
    }
}

/// The buffers a line is built in: the line, the event's fields, its message.
#[derive(Default)]
struct Buffers {
    line: String,
    fields: String,
    message: String,
    /// The event's field names (a context field of the same name is left out).
    names: Vec<&'static str>,
}

thread_local! {
    /// Reused from line to line (a conversion inside an event may log again: then fresh ones).
    static BUFFERS: RefCell<Buffers> = RefCell::new(Buffers::default());
}

impl<S> tracing_subscriber::Layer<S> for LogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        // Rendered before the extensions are locked (a field's `Debug` may log).
        let fields = SpanFields::rendered(self.format, |v| attrs.record(v));
        let mut ext = span.extensions_mut();
        match ext.get_mut::<SpanRenderings>() {
            Some(r) => *r.slot(self.format) = Some(fields),
            None => {
                let mut r = SpanRenderings::default();
                *r.slot(self.format) = Some(fields);
                ext.insert(r);
            }
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let later = SpanFields::rendered(self.format, |v| values.record(v));
        let mut ext = span.extensions_mut();
        if let Some(fields) = ext.get_mut::<SpanRenderings>().and_then(|r| r.slot(self.format).as_mut()) {
            fields.merge(later);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if crate::context::is_exporter_thread() && !event.metadata().target().starts_with("obs") {
            return;
        }
        let render = |b: &mut Buffers| {
            b.line.clear();
            b.fields.clear();
            b.message.clear();
            b.names.clear();
            self.render(event, &ctx, b);
            self.emit(b.line.as_bytes());
        };
        let reused = BUFFERS.with(|l| match l.try_borrow_mut() {
            Ok(mut b) => {
                render(&mut b);
                // Do not keep a huge buffer around after one huge line.
                if b.line.capacity() > 64 * 1024 {
                    *b = Buffers::default();
                }
                true
            }
            Err(_) => false,
        });
        if !reused {
            render(&mut Buffers::default());
        }
    }
}

impl LogLayer {
    fn render<S>(&self, event: &Event<'_>, ctx: &Context<'_, S>, b: &mut Buffers)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let meta = event.metadata();
        let ids = crate::trace::current_ids();
        // The event's fields first (into their own buffer), so the message can go up front.
        let Buffers { line, fields, message, names } = b;
        event.record(&mut Fields { out: fields, format: self.format, message: Some(message), names: Some(names) });
        let message = capped(scrub_text(message));
        match self.format {
            LogFormat::Json => {
                line.push_str("{\"timestamp\":\"");
                format::rfc3339(line, std::time::SystemTime::now());
                line.push_str("\",\"level\":\"");
                line.push_str(meta.level().as_str());
                line.push_str("\",\"target\":");
                format::json_str(line, meta.target());
                line.push_str(",\"message\":");
                format::json_str(line, &message);
                if let Some((trace_id, span_id)) = ids {
                    line.push_str(",\"trace_id\":\"");
                    format::hex(line, trace_id, 32);
                    line.push_str("\",\"span_id\":\"");
                    format::hex(line, span_id.into(), 16);
                    line.push('"');
                }
                self.context_and_spans(event, ctx, names, line);
                line.push_str(fields);
                line.push_str("}\n");
            }
            LogFormat::Pretty => {
                format::rfc3339(line, std::time::SystemTime::now());
                let _ = write!(line, " {:>5} {}: ", meta.level().as_str(), meta.target());
                format::pretty_message(line, &message);
                self.context_and_spans(event, ctx, names, line);
                line.push_str(fields);
                if let Some((trace_id, span_id)) = ids {
                    let _ = write!(line, " trace_id={trace_id:032x} span_id={span_id:016x}");
                }
                line.push('\n');
            }
        }
    }

    /// The bound context's fields, then the fields of the spans around the event, outermost
    /// first, each key once (the event's fields win over a span's, an inner span's over an outer
    /// one's, a span's over the context's). One span around the event, the common case, is read
    /// once: its extensions are locked once and no list of spans is built.
    fn context_and_spans<S>(
        &self,
        event: &Event<'_>,
        ctx: &Context<'_, S>,
        names: &mut Vec<&'static str>,
        line: &mut String,
    ) where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let Some(leaf) = ctx.event_span(event) else {
            if let Some(bound) = context::rendered(self.format, names) {
                line.push_str(&bound);
            }
            return;
        };
        if leaf.parent().is_some() {
            let spans = self.span_names(event, ctx, names);
            if let Some(bound) = context::rendered(self.format, names) {
                line.push_str(&bound);
            }
            return self.spans(spans, names, line);
        }
        let ext = leaf.extensions();
        let fields = ext.get::<SpanRenderings>().and_then(|r| r.get(self.format));
        let event_names = names.len();
        if let Some(f) = fields {
            names.extend(f.pieces.iter().map(|(n, _)| *n));
        }
        if let Some(bound) = context::rendered(self.format, names) {
            line.push_str(&bound);
        }
        let Some(f) = fields else { return };
        let shadowed = |n: &str| names[..event_names].contains(&n);
        if !f.pieces.iter().any(|(n, _)| shadowed(n)) {
            line.push_str(&f.joined);
            return;
        }
        for (_, range) in f.pieces.iter().filter(|(n, _)| !shadowed(n)) {
            line.push_str(&f.joined[range.clone()]);
        }
    }

    /// The spans around the event, outermost first; adds their field names to `names` (after
    /// the event's), so that the context leaves out the fields a span or the event has.
    fn span_names<'a, S>(
        &self,
        event: &Event<'_>,
        ctx: &'a Context<'_, S>,
        names: &mut Vec<&'static str>,
    ) -> Option<Around<'a, S>>
    where
        S: Subscriber + for<'b> LookupSpan<'b>,
    {
        let event_names = names.len();
        let spans = ctx
            .event_scope(event)?
            .from_root()
            .map(|span| {
                let before = names.len();
                if let Some(f) = span.extensions().get::<SpanRenderings>().and_then(|r| r.get(self.format)) {
                    names.extend(f.pieces.iter().map(|(n, _)| *n));
                }
                let count = names.len() - before;
                (span, count)
            })
            .collect();
        Some((event_names, spans))
    }

    /// The spans' fields, outermost first, one key per line: a field is left out when the event
    /// or an inner span has one of the same name.
    fn spans<S>(&self, spans: Option<Around<'_, S>>, names: &[&'static str], line: &mut String)
    where
        S: Subscriber + for<'b> LookupSpan<'b>,
    {
        let Some((event_names, spans)) = spans else { return };
        // `names` holds the event's names, then each span's, outermost first: a span's own
        // names start at `seen`, the inner spans' follow them.
        let mut seen = event_names;
        for (span, count) in &spans {
            let own = seen..seen + count;
            seen = own.end;
            let ext = span.extensions();
            let Some(f) = ext.get::<SpanRenderings>().and_then(|r| r.get(self.format)) else { continue };
            let shadowed = |n: &str| names[..event_names].contains(&n) || names[own.end..].contains(&n);
            if !f.pieces.iter().any(|(n, _)| shadowed(n)) {
                line.push_str(&f.joined);
                continue;
            }
            for (_, range) in f.pieces.iter().filter(|(n, _)| !shadowed(n)) {
                line.push_str(&f.joined[range.clone()]);
            }
        }
    }
}

/// The spans around an event, outermost first, each with how many field names it added to the
/// line's names; and how many names the event itself has (they come first).
type Around<'a, S> = (usize, Vec<(SpanRef<'a, S>, usize)>);

/// Renders fields, scrubbed by key and value.
struct Fields<'a> {
    out: &'a mut String,
    format: LogFormat,
    /// Where the event's `message` goes (events); `None` for span fields.
    message: Option<&'a mut String>,
    /// Where the event's field names go (events).
    names: Option<&'a mut Vec<&'static str>>,
}

/// The longest value (message or field) a line carries, in bytes: a request body or a dump
/// logged whole would make a line that Loki cuts or refuses (256 KiB by default), or that the
/// writer's buffer cannot take at all (then the whole line is lost).
pub(crate) const MAX_VALUE: usize = 32 * 1024;

/// `value` cut to [`MAX_VALUE`] bytes (at a character boundary, after scrubbing, so that no
/// secret is cut in two and half of it let through), saying how much was cut.
fn capped(value: std::borrow::Cow<'_, str>) -> std::borrow::Cow<'_, str> {
    if value.len() <= MAX_VALUE {
        return value;
    }
    let end = (0..=MAX_VALUE).rev().find(|&i| value.is_char_boundary(i)).unwrap_or(0);
    std::borrow::Cow::Owned(format!("{}…[{} bytes cut]", &value[..end], value.len() - end))
}

/// Keys every line has: a field of the same name is written `fields.<name>`.
const RESERVED: [&str; 6] = ["timestamp", "level", "target", "message", "trace_id", "span_id"];

impl Fields<'_> {
    fn key(&mut self, name: &'static str) {
        if let Some(names) = self.names.as_deref_mut() {
            names.push(name);
        }
        let prefix = if RESERVED.contains(&name) { "fields." } else { "" };
        match self.format {
            LogFormat::Json => {
                self.out.push(',');
                if prefix.is_empty() {
                    format::json_str(self.out, name);
                } else {
                    format::json_str(self.out, &format!("{prefix}{name}"));
                }
                self.out.push(':');
            }
            LogFormat::Pretty => {
                self.out.push(' ');
                self.out.push_str(prefix);
                self.out.push_str(name);
                self.out.push('=');
            }
        }
    }

    fn text(&mut self, field: &Field, value: &str) {
        if field.name() == "message"
            && let Some(m) = self.message.as_deref_mut()
        {
            m.push_str(value);
            return;
        }
        let value = match classify_static(field.name()) {
            KeyClass::Redact => std::borrow::Cow::Borrowed(REDACTED),
            KeyClass::Keep => std::borrow::Cow::Borrowed(value),
            KeyClass::Text => scrub_text(value),
        };
        let value = capped(value);
        self.key(field.name());
        match self.format {
            LogFormat::Json => format::json_str(self.out, &value),
            LogFormat::Pretty if format::pretty_needs_quotes(&value) => {
                let _ = write!(self.out, "{value:?}");
            }
            LogFormat::Pretty => self.out.push_str(&value),
        }
    }

    /// An integer: a card number is scrubbed like the same digits in text (not under a kept id).
    fn integer(&mut self, field: &Field, magnitude: u128, value: impl itoa::Integer) {
        if crate::scrub::is_card_number(magnitude) && classify_static(field.name()) != KeyClass::Keep {
            return self.text(field, crate::scrub::CARD);
        }
        if self.redacted(field) {
            return;
        }
        self.out.push_str(itoa::Buffer::new().format(value));
    }

    /// A finite float: the shortest form that reads back the same (`ryu`, several times faster
    /// than `Display`; in JSON only, where `1e-7` is as valid as `0.0000001`). A whole number of
    /// thousandths (a duration in milliseconds to the microsecond, as the access line's) is
    /// written with integers: the same text, a third of the time.
    fn float(&mut self, field: &Field, value: f64) {
        if self.redacted(field) {
            return;
        }
        match self.format {
            LogFormat::Json if format::thousandths(self.out, value) => {}
            LogFormat::Json => self.out.push_str(ryu::Buffer::new().format_finite(value)),
            LogFormat::Pretty => {
                let _ = write!(self.out, "{value}");
            }
        }
    }

    /// Writes the key of a number field, or the whole field redacted (`true`) under a sensitive
    /// key.
    fn redacted(&mut self, field: &Field) -> bool {
        if classify_static(field.name()) == KeyClass::Redact {
            self.text(field, "");
            return true;
        }
        self.key(field.name());
        false
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message"
            && let Some(m) = self.message.as_deref_mut()
        {
            // Scrubbed as a whole once the event is recorded.
            let _ = write!(m, "{value:?}");
            return;
        }
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        self.text(field, &s);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut s = String::new();
        let _ = write!(s, "{value}");
        self.text(field, &s);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.integer(field, value.unsigned_abs().into(), value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.integer(field, value.into(), value);
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.integer(field, value.unsigned_abs(), value);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.integer(field, value, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.float(field, value);
        } else {
            self.text(field, &value.to_string());
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if !self.redacted(field) {
            self.out.push_str(if value { "true" } else { "false" });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tracing_subscriber::layer::SubscriberExt as _;

    fn capture(format: LogFormat, f: impl FnOnce()) -> String {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let layer = LogLayer::new(format).writer(move |line| sink.lock().unwrap().extend_from_slice(line));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), f);
        String::from_utf8(out.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn pretty_lines_are_readable_and_scrubbed() {
        let text = capture(LogFormat::Pretty, || {
            tracing::info_span!("request", request_id = "r-1").in_scope(|| {
                tracing::warn!(password = "hunter2", n = 3, note = "two words", "hello ana@example.org");
            });
        });
        let line = text.trim_end();
        assert_eq!(text.lines().count(), 1);
        let (ts, rest) = line.split_once(' ').unwrap();
        assert!(ts.ends_with('Z') && ts.len() == 27, "{ts}");
        assert_eq!(
            rest,
            " WARN obs_runtime::logs::tests: hello [EMAIL] request_id=r-1 password=[REDACTED] n=3 note=\"two words\""
        );
    }

    #[test]
    fn every_key_once_per_line() {
        use crate::context::{Bound, Value as V};
        let bound = Bound::labeled(&[("request_id", Some(V::Text("r-1"))), ("user_id", Some(V::Text("7")))], 0);
        let text = capture(LogFormat::Json, || {
            let prev = crate::context::swap(Some(bound));
            // The event's `user_id` (the user looked up) wins over the context's (the requester);
            // fields named like the line's own keys are prefixed.
            tracing::info!(user_id = 42, level = "gold", target = "eu", "no such user");
            tracing::info!("plain");
            crate::context::swap(prev);
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0].matches("\"user_id\":").count(), 1, "{}", lines[0]);
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!((&first["user_id"], &first["request_id"]), (&serde_json::json!(42), &serde_json::json!("r-1")));
        assert_eq!(
            (&first["level"], &first["fields.level"], &first["fields.target"]),
            (&serde_json::json!("INFO"), &serde_json::json!("gold"), &serde_json::json!("eu"))
        );
        // Without a clash, the context is whole.
        let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(second["user_id"], "7");
    }

    #[test]
    fn every_key_once_per_line_with_spans_around() {
        use crate::context::{Bound, Value as V};
        let bound = Bound::labeled(&[("request_id", Some(V::Text("r-1"))), ("user_id", Some(V::Text("7")))], 0);
        let text = capture(LogFormat::Json, || {
            let prev = crate::context::swap(Some(bound));
            // The event wins over the spans, an inner span over an outer one, a span over the
            // context (the review found every one of these keys written twice).
            tracing::info_span!("checkout", user_id = 8, order_id = 1, step = "outer", tier = 3).in_scope(|| {
                tracing::info_span!("charge", order_id = 2, step = "inner").in_scope(|| {
                    tracing::info!(tier = 4, "charged");
                    tracing::info!("plain");
                });
            });
            crate::context::swap(prev);
        });
        let lines: Vec<&str> = text.lines().collect();
        for line in &lines {
            for key in ["request_id", "user_id", "order_id", "step", "tier"] {
                assert_eq!(line.matches(&format!("\"{key}\":")).count(), 1, "{key} in {line}");
            }
        }
        let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        let get = |k: &str| first[k].clone();
        assert_eq!(
            [get("request_id"), get("user_id"), get("order_id"), get("step"), get("tier")],
            [serde_json::json!("r-1"), 8.into(), 2.into(), "inner".into(), 4.into()]
        );
        let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(second["tier"], 3, "without a clash, the outer span's field stays");
    }

    #[test]
    fn every_key_once_per_line_with_one_span_around() {
        use crate::context::{Bound, Value as V};
        let bound = Bound::labeled(&[("request_id", Some(V::Text("r-1"))), ("user_id", Some(V::Text("7")))], 0);
        for format in [LogFormat::Json, LogFormat::Pretty] {
            let text = capture(format, || {
                let prev = crate::context::swap(Some(bound.clone()));
                // One span (the path that reads it once): the event wins over it, it over the
                // context.
                tracing::info_span!("checkout", user_id = 8, tier = 3, step = "outer").in_scope(|| {
                    tracing::info!(tier = 4, "charged");
                    tracing::info!("plain");
                });
                crate::context::swap(prev);
            });
            let lines: Vec<&str> = text.lines().collect();
            let key = |k: &str| match format {
                LogFormat::Json => format!("\"{k}\":"),
                LogFormat::Pretty => format!(" {k}="),
            };
            for line in &lines {
                for k in ["request_id", "user_id", "tier", "step"] {
                    assert_eq!(line.matches(&key(k)).count(), 1, "{k} in {line}");
                }
            }
            if format == LogFormat::Json {
                let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
                assert_eq!(
                    (&first["user_id"], &first["tier"], &first["request_id"]),
                    (&8.into(), &4.into(), &"r-1".into())
                );
                let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
                assert_eq!((&second["user_id"], &second["tier"]), (&8.into(), &3.into()));
            } else {
                assert!(lines[0].contains(" tier=4") && lines[0].contains(" user_id=8"), "{}", lines[0]);
            }
        }
    }

    #[test]
    fn two_log_layers_of_different_formats_share_a_registry() {
        let (json, pretty) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let (j, p) = (json.clone(), pretty.clone());
        let subscriber = tracing_subscriber::registry()
            .with(LogLayer::new(LogFormat::Json).writer(move |l| j.lock().unwrap().extend_from_slice(l)))
            .with(LogLayer::new(LogFormat::Pretty).writer(move |l| p.lock().unwrap().extend_from_slice(l)));
        // It used to panic: both layers stored their rendering under the same type.
        tracing::subscriber::with_default(subscriber, || {
            tracing::info_span!("request", order_id = 5).in_scope(|| tracing::info!("x"));
        });
        let json = String::from_utf8(json.lock().unwrap().clone()).unwrap();
        let pretty = String::from_utf8(pretty.lock().unwrap().clone()).unwrap();
        assert!(json.contains(r#","order_id":5"#), "{json}");
        assert!(pretty.contains(" order_id=5") && !pretty.contains('{'), "{pretty}");
    }

    #[test]
    fn a_field_whose_debug_logs_does_not_deadlock() {
        struct Loud;
        impl std::fmt::Debug for Loud {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                tracing::warn!("formatting a field");
                f.write_str("loud")
            }
        }
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let text = capture(LogFormat::Json, || {
                let span = tracing::info_span!("request", value = tracing::field::Empty);
                // The field's `Debug` logs inside the span, which reads the span's fields.
                span.in_scope(|| span.record("value", tracing::field::debug(Loud)));
                span.in_scope(|| tracing::info!("after"));
            });
            done.send(text).unwrap();
        });
        let text = finished.recv_timeout(std::time::Duration::from_secs(20)).expect("recording a field deadlocked");
        assert!(text.contains("formatting a field") && text.contains(r#""value":"loud""#), "{text}");
    }

    #[test]
    fn huge_values_are_cut_after_scrubbing() {
        let big = format!("{}4111 1111 1111 1111 {}", "é".repeat(MAX_VALUE / 2 - 5), "x".repeat(MAX_VALUE));
        let text = capture(LogFormat::Json, || tracing::info!(body = big.as_str(), "{big}"));
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        for key in ["body", "message"] {
            let v = line[key].as_str().unwrap();
            assert!(v.len() < MAX_VALUE + 64, "{key}: {} bytes", v.len());
            assert!(v.ends_with(" bytes cut]"), "{key} says it was cut");
            assert!(v.contains("[CARD]") && !v.contains("4111"), "{key}: scrubbed before it was cut");
        }
    }

    #[test]
    fn a_pretty_line_stays_one_line() {
        let text = capture(LogFormat::Pretty, || {
            tracing::info!(path = "/x\nERROR forged: line", "first\nERROR forged: second");
        });
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains(r#": first\nERROR forged: second path="/x\nERROR forged: line""#), "{text}");
    }

    #[test]
    fn a_field_recorded_again_replaces_its_value() {
        let text = capture(LogFormat::Json, || {
            let span = tracing::info_span!("request", user_id = "anonymous", n = tracing::field::Empty);
            span.record("user_id", "42");
            span.record("n", 1);
            span.in_scope(|| tracing::info!("x"));
        });
        assert_eq!(text.matches("\"user_id\"").count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!((v["user_id"].as_str(), v["n"].as_u64()), (Some("42"), Some(1)));
    }

    #[test]
    fn json_lines_escape_and_keep_types() {
        let text = capture(LogFormat::Json, || {
            tracing::error!(
                ok = true,
                ratio = 0.5,
                big = u64::MAX,
                nan = f64::NAN,
                quote = "a\"b\nc",
                card = 4111111111111111u64,
                payment_id = 4111111111111111u64,
                "done"
            );
        });
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["level"], "ERROR");
        assert_eq!(v["ok"], true);
        assert_eq!(v["ratio"], 0.5);
        assert_eq!(v["big"], u64::MAX);
        assert_eq!(v["nan"], "NaN");
        assert_eq!(v["quote"], "a\"b\nc");
        assert_eq!(v["message"], "done");
        assert_eq!(v["card"], "[CARD]", "an integer card number is scrubbed too");
        assert_eq!(v["payment_id"], 4111111111111111u64, "kept ids are never touched");
    }
}
