//! What the viewer keeps: recent traces (failed and slow ones pinned longer) and recent log
//! lines, each bounded by count and by bytes.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use opentelemetry::{KeyValue, Value};

use crate::trace::{Kind, Recording};

/// Ordinary traces kept at most (the oldest goes first).
pub(crate) const MAX_TRACES: usize = 300;
/// Failed and slow traces kept at most, apart from the ordinary ones.
pub(crate) const MAX_PINNED: usize = 100;
/// Spans kept of one trace; more are counted, not kept.
pub(crate) const MAX_SPANS: usize = 1000;
/// What the traces may take in all (estimated: structures, strings and values).
pub(crate) const TRACE_BYTES: usize = 16 << 20;
/// Log lines kept at most.
pub(crate) const MAX_LINES: usize = 2000;
/// What the log lines may take in all.
pub(crate) const LINE_BYTES: usize = 2 << 20;

/// One finished span, as the viewer shows it.
pub(crate) struct ViewSpan {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    pub(crate) parent: u64,
    pub(crate) parent_remote: bool,
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    /// Unix time, nanoseconds.
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) attributes: Vec<KeyValue>,
    pub(crate) events: Vec<(String, u64, Vec<KeyValue>)>,
    /// The spans of other traces this one follows from (a task's link to its request).
    pub(crate) links: Vec<(u128, u64)>,
    /// The error status's description.
    pub(crate) error: Option<String>,
}

impl ViewSpan {
    /// A copy of `r` (which the exporter then sends); `anchor` maps instants to wall-clock time.
    pub(crate) fn of(r: &Recording, end: Instant, anchor: (SystemTime, Instant)) -> ViewSpan {
        let base = anchor.0.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let at = |t: Instant| match t.checked_duration_since(anchor.1) {
            Some(d) => base.saturating_add(d.as_nanos() as u64),
            None => base.saturating_sub(anchor.1.duration_since(t).as_nanos() as u64),
        };
        ViewSpan {
            trace_id: r.ctx.trace_id,
            span_id: r.ctx.span_id,
            parent: r.parent_span_id,
            parent_remote: r.parent_remote,
            name: r.name,
            kind: r.kind,
            start: at(r.start),
            end: at(end),
            attributes: r.attributes.clone(),
            events: r.events.iter().map(|(name, t, a)| (name.to_string(), at(*t), a.clone())).collect(),
            links: r.links.iter().map(|l| (l.trace_id, l.span_id)).collect(),
            error: match &r.status {
                opentelemetry::trace::Status::Error { description } => Some(description.to_string()),
                _ => None,
            },
        }
    }

    pub(crate) fn duration_ns(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// The memory this span holds, estimated.
    fn bytes(&self) -> usize {
        let kvs = |a: &[KeyValue]| {
            a.iter().map(|kv| size_of::<KeyValue>() + kv.key.as_str().len() + value_len(&kv.value)).sum::<usize>()
        };
        size_of::<ViewSpan>()
            + kvs(&self.attributes)
            + self
                .events
                .iter()
                .map(|(n, _, a)| size_of::<(String, u64, Vec<KeyValue>)>() + n.len() + kvs(a))
                .sum::<usize>()
            + self.links.len() * size_of::<(u128, u64)>()
            + self.error.as_ref().map_or(0, String::len)
    }

    /// An attribute's value as text.
    pub(crate) fn attribute(&self, key: &str) -> Option<Cow<'_, str>> {
        self.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| text(&kv.value))
    }
}

fn value_len(v: &Value) -> usize {
    match v {
        Value::String(s) => s.as_str().len(),
        Value::Array(_) => text(v).len(),
        _ => 0,
    }
}

/// A value as the viewer writes it: an array of strings (a header's values) as its values
/// joined by `, `.
pub(crate) fn text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::Array(opentelemetry::Array::String(items)) => {
            Cow::Owned(items.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))
        }
        other => other.as_str(),
    }
}

/// One trace's spans, as they came, and what the list shows of it (kept up to date as spans
/// come, so that listing is not a walk over every span).
pub(crate) struct Trace {
    pub(crate) spans: Vec<ViewSpan>,
    /// Spans past [`MAX_SPANS`], counted.
    pub(crate) dropped: u32,
    pub(crate) failed: bool,
    pub(crate) slow: bool,
    bytes: usize,
    start: u64,
    end: u64,
    /// The earliest local root (no parent, or a remote one), by index.
    root: Option<usize>,
    /// The earliest span carrying a request id (the HTTP layer's server span: a service it
    /// called in the same trace has its own, later), and that id.
    request: Option<(u64, String)>,
    /// Its span names, sorted, each once.
    pub(crate) names: Vec<&'static str>,
}

impl Trace {
    fn new() -> Trace {
        Trace {
            spans: Vec::new(),
            dropped: 0,
            failed: false,
            slow: false,
            bytes: 0,
            start: u64::MAX,
            end: 0,
            root: None,
            request: None,
            names: Vec::new(),
        }
    }

    /// The local root; until it has come, the earliest span.
    pub(crate) fn root(&self) -> Option<&ViewSpan> {
        self.root.map(|i| &self.spans[i]).or_else(|| self.spans.iter().min_by_key(|s| s.start))
    }

    pub(crate) fn start(&self) -> u64 {
        if self.spans.is_empty() { 0 } else { self.start }
    }

    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// The request id of the earliest span carrying one: the HTTP layer's
    /// `http.request.header.x-request-id`, or a `request_id` attribute.
    pub(crate) fn request_id(&self) -> Option<&str> {
        self.request.as_ref().map(|(_, id)| id.as_str())
    }

    fn push(&mut self, span: ViewSpan, bytes: usize) {
        let local_root = span.parent == 0 || span.parent_remote;
        if local_root && self.root.is_none_or(|r| span.start < self.spans[r].start) {
            self.root = Some(self.spans.len());
        }
        if let Some(id) = span.attribute("http.request.header.x-request-id").or_else(|| span.attribute("request_id"))
            && self.request.as_ref().is_none_or(|(at, _)| span.start < *at)
        {
            self.request = Some((span.start, id.into_owned()));
        }
        if let Err(at) = self.names.binary_search(&span.name) {
            self.names.insert(at, span.name);
        }
        self.start = self.start.min(span.start);
        self.end = self.end.max(span.end);
        self.bytes += bytes;
        self.spans.push(span);
    }
}

#[derive(Default)]
pub(crate) struct Traces {
    pub(crate) map: HashMap<u128, Trace>,
    /// Ordinary traces, oldest first.
    ordinary: VecDeque<u128>,
    /// Failed and slow traces, oldest first.
    pinned: VecDeque<u128>,
    pub(crate) bytes: usize,
    /// Spans kept since start (an increasing count the page polls for).
    pub(crate) received: u64,
}

impl Traces {
    /// Adds a span; a local root lasting `slow_ns` or more pins its trace, as does a failed span
    /// (counted, if not kept). Past [`MAX_SPANS`], only local roots are still kept: they end
    /// last, and name the trace.
    pub(crate) fn insert(&mut self, span: ViewSpan, slow_ns: u64) {
        let id = span.trace_id;
        let trace = self.map.entry(id).or_insert_with(|| {
            self.ordinary.push_back(id);
            Trace::new()
        });
        let was_pinned = trace.failed || trace.slow;
        let local_root = span.parent == 0 || span.parent_remote;
        trace.failed |= span.error.is_some();
        trace.slow |= local_root && span.duration_ns() >= slow_ns;
        if trace.spans.len() < MAX_SPANS || local_root {
            let bytes = span.bytes();
            trace.push(span, bytes);
            self.bytes += bytes;
            self.received += 1;
        } else {
            trace.dropped += 1;
        }
        if !was_pinned && (trace.failed || trace.slow) {
            self.ordinary.retain(|t| *t != id);
            self.pinned.push_back(id);
        }
        self.evict();
    }

    fn evict(&mut self) {
        while self.ordinary.len() > MAX_TRACES || (self.bytes > TRACE_BYTES && !self.ordinary.is_empty()) {
            let Some(id) = self.ordinary.pop_front() else { break };
            self.remove(id);
        }
        while self.pinned.len() > MAX_PINNED || self.bytes > TRACE_BYTES {
            let Some(id) = self.pinned.pop_front() else { break };
            self.remove(id);
        }
    }

    fn remove(&mut self, id: u128) {
        if let Some(t) = self.map.remove(&id) {
            self.bytes -= t.bytes;
        }
    }

    pub(crate) fn pinned(&self) -> usize {
        self.pinned.len()
    }
}

/// Recent log lines, as written (already scrubbed), each with its number. Shared: a reader
/// takes references under the lock and reads them after.
#[derive(Default)]
pub(crate) struct Lines {
    pub(crate) lines: VecDeque<(u64, std::sync::Arc<str>)>,
    bytes: usize,
    pub(crate) next: u64,
}

/// A line as kept (made before the lock is taken).
pub(crate) fn line(bytes: &[u8]) -> std::sync::Arc<str> {
    std::sync::Arc::from(String::from_utf8_lossy(bytes).trim_end())
}

impl Lines {
    pub(crate) fn push(&mut self, line: std::sync::Arc<str>) {
        self.bytes += line.len();
        self.lines.push_back((self.next, line));
        self.next += 1;
        while self.lines.len() > MAX_LINES || self.bytes > LINE_BYTES {
            let Some((_, old)) = self.lines.pop_front() else { break };
            self.bytes -= old.len();
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(trace: u128, id: u64, parent: u64, ms: u64, error: bool) -> ViewSpan {
        ViewSpan {
            trace_id: trace,
            span_id: id,
            parent,
            parent_remote: false,
            name: "s",
            kind: Kind::Internal,
            start: 1_000_000_000,
            end: 1_000_000_000 + ms * 1_000_000,
            attributes: vec![KeyValue::new("k", "v".repeat(100))],
            events: Vec::new(),
            links: Vec::new(),
            error: error.then(|| "boom".to_owned()),
        }
    }

    #[test]
    fn ordinary_traces_go_first_and_failed_or_slow_ones_stay_longer() {
        let mut t = Traces::default();
        t.insert(span(1, 1, 0, 5, true), 2_000_000_000);
        t.insert(span(2, 2, 0, 3_000, false), 2_000_000_000);
        for i in 0..(MAX_TRACES as u128 + 50) {
            t.insert(span(100 + i, 1, 0, 5, false), 2_000_000_000);
        }
        assert_eq!(t.map.len(), MAX_TRACES + 2);
        assert!(t.map[&1].failed && t.map.contains_key(&2) && t.map[&2].slow, "pinned traces outlive ordinary ones");
        assert!(!t.map.contains_key(&100), "the oldest ordinary trace went first");
        for i in 0..(MAX_PINNED as u128 + 1) {
            t.insert(span(10_000 + i, 1, 0, 5, true), 2_000_000_000);
        }
        assert_eq!(t.pinned(), MAX_PINNED);
        assert!(!t.map.contains_key(&1) && !t.map.contains_key(&2), "pinned traces are bounded too");
        let kept: usize = t.map.values().map(|x| x.bytes).sum();
        assert_eq!(t.bytes, kept, "the byte count follows what is kept");
    }

    #[test]
    fn the_bytes_bound_evicts_and_a_trace_keeps_at_most_max_spans() {
        let mut t = Traces::default();
        // Children (their parent, span 1, has not ended yet).
        for i in 0..(MAX_SPANS as u64 + 10) {
            t.insert(span(7, i + 2, 1, 1, false), u64::MAX);
        }
        assert_eq!((t.map[&7].spans.len(), t.map[&7].dropped), (MAX_SPANS, 10));
        let per_trace = t.map[&7].bytes;
        for i in 0..(TRACE_BYTES / per_trace + 5) as u128 {
            for s in 0..MAX_SPANS as u64 {
                t.insert(span(1_000 + i, s + 2, 1, 1, false), u64::MAX);
            }
        }
        assert!(t.bytes <= TRACE_BYTES, "{} bytes kept", t.bytes);
        assert!(!t.map.contains_key(&7));
    }

    #[test]
    fn past_max_spans_a_failed_child_still_pins_and_the_root_is_kept() {
        let mut t = Traces::default();
        for i in 0..MAX_SPANS as u64 {
            t.insert(span(9, i + 2, 1, 1, false), u64::MAX);
        }
        t.insert(span(9, 5_000, 1, 1, true), u64::MAX);
        let root = ViewSpan { attributes: vec![KeyValue::new("request_id", "r-9")], ..span(9, 1, 0, 10, false) };
        t.insert(root, u64::MAX);
        let trace = &t.map[&9];
        assert!(trace.failed && t.pinned() == 1, "a failed span past the cap still marks its trace");
        assert_eq!((trace.spans.len(), trace.dropped), (MAX_SPANS + 1, 1));
        assert_eq!(trace.root().map(|r| r.span_id), Some(1), "the root, which ends last, is kept");
        assert_eq!(trace.request_id(), Some("r-9"));
        assert_eq!(trace.names, ["s"]);
    }

    #[test]
    fn log_lines_are_bounded_by_count_and_bytes() {
        let mut l = Lines::default();
        for i in 0..(MAX_LINES + 10) {
            l.push(line(format!("line {i}\n").as_bytes()));
        }
        assert_eq!(l.lines.len(), MAX_LINES);
        assert_eq!(&*l.lines.front().unwrap().1, "line 10");
        let big = "x".repeat(64 * 1024);
        for _ in 0..(LINE_BYTES / big.len() + 3) {
            l.push(line(big.as_bytes()));
        }
        assert!(l.bytes() <= LINE_BYTES);
    }
}
