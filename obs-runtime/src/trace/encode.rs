//! Finished spans as the official OTLP messages (`opentelemetry-proto`'s generated types), built
//! straight from obs's own record of each span: no `SpanData` in between, no grouping by scope
//! (every span obs records has the same resource and scope). This is the OTLP/HTTP and spans-file
//! path; the SDK's exporter (and `span_data`) is kept for gRPC only. Why, and what it
//! saves: `docs/design/tracing.md`, "Export".
//!
//! The messages are the same as the SDK's transform builds from `SpanData` (checked field by
//! field in the tests below, for spans with every kind of content).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, SpanFlags, Status, span, status};
use opentelemetry_proto::transform::common::tonic::{Attributes, ResourceAttributesWithSchema};

use super::{Kind, Recording};

/// What every batch shares: the resource, its schema and obs's instrumentation scope.
pub(crate) struct Envelope {
    resource: Resource,
    schema_url: String,
    scope: InstrumentationScope,
}

impl Envelope {
    pub(crate) fn new(resource: &opentelemetry_sdk::Resource) -> Envelope {
        let ResourceAttributesWithSchema { attributes, schema_url } = resource.into();
        Envelope {
            resource: Resource { attributes: attributes.0, dropped_attributes_count: 0, entity_refs: Vec::new() },
            schema_url: schema_url.unwrap_or_default(),
            scope: InstrumentationScope {
                name: "obs".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                attributes: Vec::new(),
                dropped_attributes_count: 0,
            },
        }
    }

    /// The bytes of [`request`](Self::request)`(spans)` as prost encodes it (a test compares
    /// them), with each span's length computed once. prost computes a nested message's length
    /// again at every level it is nested in: for a span's attributes, seven passes over the
    /// batch; here four. The envelope is three length-delimited fields written with prost's own
    /// primitives, in the field order and with the field numbers of the official `.proto`
    /// (`ExportTraceServiceRequest.resource_spans = 1`; `ResourceSpans.resource = 1`,
    /// `scope_spans = 2`, `schema_url = 3`; `ScopeSpans.scope = 1`, `spans = 2`).
    pub(crate) fn encode(&self, spans: &[Span]) -> Vec<u8> {
        use prost::Message as _;
        use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len, message, string};
        let framed = |tag: u32, len: usize| key_len(tag) + encoded_len_varint(len as u64) + len;
        let lens: Vec<usize> = spans.iter().map(|s| s.encoded_len()).collect();
        let scope_spans = message::encoded_len(1, &self.scope) + lens.iter().map(|&l| framed(2, l)).sum::<usize>();
        let schema = if self.schema_url.is_empty() { 0 } else { string::encoded_len(3, &self.schema_url) };
        let resource_spans = message::encoded_len(1, &self.resource) + framed(2, scope_spans) + schema;
        let mut buf = Vec::with_capacity(framed(1, resource_spans));
        encode_key(1, WireType::LengthDelimited, &mut buf);
        encode_varint(resource_spans as u64, &mut buf);
        message::encode(1, &self.resource, &mut buf);
        encode_key(2, WireType::LengthDelimited, &mut buf);
        encode_varint(scope_spans as u64, &mut buf);
        message::encode(1, &self.scope, &mut buf);
        for (span, &len) in spans.iter().zip(&lens) {
            encode_key(2, WireType::LengthDelimited, &mut buf);
            encode_varint(len as u64, &mut buf);
            span.encode_raw(&mut buf);
        }
        if !self.schema_url.is_empty() {
            string::encode(3, &self.schema_url, &mut buf);
        }
        debug_assert_eq!(buf.len(), buf.capacity(), "the lengths computed are the lengths written");
        buf
    }

    /// One export request holding `spans`.
    pub(crate) fn request(&self, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans { scope: Some(self.scope.clone()), spans, schema_url: String::new() }],
                schema_url: self.schema_url.clone(),
            }],
        }
    }
}

/// A batch of finished spans, each with the instant it ended, and the clock reading that turns
/// those instants into wall-clock times (taken once per batch, so a suspend or a clock step
/// skews one batch at most).
pub(crate) struct Batch {
    pub(crate) spans: Vec<(Recording, Instant)>,
    pub(crate) anchor: (SystemTime, Instant),
}

impl Batch {
    pub(crate) fn with_capacity(n: usize) -> Batch {
        Batch { spans: Vec::with_capacity(n), anchor: (SystemTime::now(), Instant::now()) }
    }

    pub(crate) fn len(&self) -> usize {
        self.spans.len()
    }

    /// The spans as OTLP messages.
    pub(crate) fn into_proto(self) -> Vec<Span> {
        let Batch { spans, anchor } = self;
        let base = unix_nanos(anchor.0);
        spans.into_iter().map(|(r, end)| proto_span(r, end, base, anchor.1)).collect()
    }
}

/// Encodes batches into proto spans kept from batch to batch: each batch overwrites the strings
/// and byte vectors the last one left, so a steady flow of spans allocates nothing here but the
/// request's bytes (the first batches do, and a value longer than any before at its place).
/// Attribute entries a span does not use wait in `spare` for the next span that needs them.
/// Memory kept: one ordinary batch's messages (a buffer grown past 16 KiB by one large value is
/// let go at the next small one).
pub(crate) struct Encoder {
    envelope: Envelope,
    spans: Vec<Span>,
    spare: Vec<KeyValue>,
}

impl Encoder {
    pub(crate) fn new(resource: &opentelemetry_sdk::Resource) -> Encoder {
        Encoder { envelope: Envelope::new(resource), spans: Vec::new(), spare: Vec::new() }
    }

    /// The batch as the bytes of an `ExportTraceServiceRequest`.
    pub(crate) fn encode(&mut self, batch: Batch) -> Vec<u8> {
        let Batch { spans, anchor } = batch;
        let n = spans.len();
        if self.spans.len() < n {
            self.spans.resize_with(n, Span::default);
        }
        let base = unix_nanos(anchor.0);
        for ((r, end), slot) in spans.into_iter().zip(&mut self.spans) {
            fill(slot, &mut self.spare, r, end, base, anchor.1);
        }
        self.envelope.encode(&self.spans[..n])
    }
}

/// `v` into `s`, its buffer reused; but a buffer grown by one large value (a long statement)
/// is not kept for small ones: the memory kept stays that of ordinary batches.
fn set_str(s: &mut String, v: &str) {
    const LARGE: usize = 16 << 10;
    if s.capacity() > LARGE && v.len() <= LARGE / 4 {
        *s = v.to_owned();
        return;
    }
    s.clear();
    s.push_str(v);
}

fn set_bytes(b: &mut Vec<u8>, v: &[u8]) {
    b.clear();
    b.extend_from_slice(v);
}

/// `attrs` into `out`, reusing its entries (and those in `spare`) where it can.
fn set_attributes(out: &mut Vec<KeyValue>, spare: &mut Vec<KeyValue>, attrs: Vec<opentelemetry::KeyValue>) {
    while out.len() > attrs.len() {
        spare.extend(out.pop());
    }
    while out.len() < attrs.len() {
        out.push(spare.pop().unwrap_or_default());
    }
    for (slot, kv) in out.iter_mut().zip(attrs) {
        set_str(&mut slot.key, kv.key.as_str());
        slot.key_strindex = 0;
        let any = slot.value.get_or_insert_with(AnyValue::default);
        match (kv.value, &mut any.value) {
            (opentelemetry::Value::String(s), Some(any_value::Value::StringValue(t))) => set_str(t, s.as_str()),
            (opentelemetry::Value::String(s), v) => *v = Some(any_value::Value::StringValue(s.as_str().to_owned())),
            (opentelemetry::Value::I64(i), v) => *v = Some(any_value::Value::IntValue(i)),
            (opentelemetry::Value::F64(f), v) => *v = Some(any_value::Value::DoubleValue(f)),
            (opentelemetry::Value::Bool(b), v) => *v = Some(any_value::Value::BoolValue(b)),
            (other, v) => *v = AnyValue::from(other).value,
        }
    }
}

/// One finished span into an OTLP message already there, its buffers reused.
fn fill(s: &mut Span, spare: &mut Vec<KeyValue>, r: Recording, end: Instant, base: u64, anchor: Instant) {
    let Recording {
        ctx,
        parent_span_id,
        name,
        start,
        attributes,
        dropped_attributes,
        status,
        events,
        links,
        trace_state,
        kind,
        parent_remote,
        profiled: _,
    } = r;
    let at = |t: Instant| at(t, base, anchor);
    set_bytes(&mut s.trace_id, &ctx.trace_id.to_be_bytes());
    set_bytes(&mut s.span_id, &ctx.span_id.to_be_bytes());
    s.trace_state.clear();
    if let Some(ts) = trace_state.as_deref() {
        s.trace_state = trace_state_header(ts);
    }
    s.parent_span_id.clear();
    if parent_span_id != 0 {
        s.parent_span_id.extend_from_slice(&parent_span_id.to_be_bytes());
    }
    s.flags = flags(true, ctx.random(), parent_remote);
    set_str(&mut s.name, name);
    s.kind = span_kind(kind) as i32;
    s.start_time_unix_nano = at(start);
    s.end_time_unix_nano = at(end);
    set_attributes(&mut s.attributes, spare, attributes);
    s.dropped_attributes_count = dropped_attributes;
    s.events.clear();
    s.events.extend(events.into_iter().map(|(name, t, attributes)| span::Event {
        time_unix_nano: at(t),
        name: name.into_owned(),
        attributes: Attributes::from(attributes).0,
        dropped_attributes_count: 0,
    }));
    s.dropped_events_count = 0;
    s.links.clear();
    s.links.extend(links.iter().map(link));
    s.dropped_links_count = 0;
    let st = s.status.get_or_insert_with(Status::default);
    let (code, message) = status_parts(&status);
    st.code = code as i32;
    set_str(&mut st.message, message);
}

fn at(t: Instant, base: u64, anchor: Instant) -> u64 {
    match t.checked_duration_since(anchor) {
        Some(d) => base.saturating_add(d.as_nanos() as u64),
        None => base.saturating_sub(anchor.duration_since(t).as_nanos() as u64),
    }
}

/// A `tracestate` validated (and normalised) as the SDK does: an invalid list is sent empty.
fn trace_state_header(ts: &str) -> String {
    ts.parse::<opentelemetry::trace::TraceState>().map(|ts| ts.header()).unwrap_or_default()
}

fn span_kind(kind: Kind) -> span::SpanKind {
    match kind {
        Kind::Internal => span::SpanKind::Internal,
        Kind::Server => span::SpanKind::Server,
        Kind::Client => span::SpanKind::Client,
        Kind::Producer => span::SpanKind::Producer,
        Kind::Consumer => span::SpanKind::Consumer,
    }
}

fn status_parts(status: &opentelemetry::trace::Status) -> (status::StatusCode, &str) {
    match status {
        opentelemetry::trace::Status::Unset => (status::StatusCode::Unset, ""),
        opentelemetry::trace::Status::Ok => (status::StatusCode::Ok, ""),
        opentelemetry::trace::Status::Error { description } => (status::StatusCode::Error, description),
    }
}

fn link(l: &crate::context::Ctx) -> span::Link {
    span::Link {
        trace_id: l.trace_id.to_be_bytes().to_vec(),
        span_id: l.span_id.to_be_bytes().to_vec(),
        trace_state: String::new(),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
        flags: flags(l.sampled(), l.random(), true),
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// OTLP's span flags: the W3C trace flags (sampled, random) in the low byte, and whether the
/// parent (or a link's span) is remote.
fn flags(sampled: bool, random: bool, remote: bool) -> u32 {
    let mut flags = u32::from(sampled) | (u32::from(random) << 1) | SpanFlags::ContextHasIsRemoteMask as u32;
    if remote {
        flags |= SpanFlags::ContextIsRemoteMask as u32;
    }
    flags
}

/// One finished span as a new OTLP message. `base` is `anchor`'s wall-clock time in nanoseconds.
fn proto_span(r: Recording, end: Instant, base: u64, anchor: Instant) -> Span {
    let mut s = Span::default();
    fill(&mut s, &mut Vec::new(), r, end, base, anchor);
    s
}

#[cfg(any(feature = "grpc", test))]
pub(crate) use sdk::span_data;

/// The SDK's record of a span, for the SDK's gRPC exporter (and, in the tests, the reference
/// the messages above are compared with).
#[cfg(any(feature = "grpc", test))]
mod sdk {
    use std::borrow::Cow;
    use std::time::{Instant, SystemTime};

    use opentelemetry::InstrumentationScope;
    use opentelemetry::trace::{Event, SpanContext, SpanId, SpanKind, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

    use super::super::{Kind, Recording};

    pub(crate) fn span_data(
        r: Recording,
        end: Instant,
        anchor: (SystemTime, Instant),
        scope: &InstrumentationScope,
    ) -> SpanData {
        let at = |t: Instant| match t.checked_duration_since(anchor.1) {
            Some(d) => anchor.0 + d,
            None => anchor.0 - anchor.1.duration_since(t),
        };
        let mut links = SpanLinks::default();
        links.links = r
            .links
            .iter()
            .map(|l| {
                let flags = TraceFlags::new(l.sampled() as u8 | if l.random() { 0x02 } else { 0 });
                opentelemetry::trace::Link::with_context(SpanContext::new(
                    TraceId::from(l.trace_id),
                    SpanId::from(l.span_id),
                    flags,
                    true,
                    TraceState::default(),
                ))
            })
            .collect();
        let mut events = SpanEvents::default();
        events.events = r.events.into_iter().map(|(name, t, attrs)| Event::new(name, at(t), attrs, 0)).collect();
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(r.ctx.trace_id),
                SpanId::from(r.ctx.span_id),
                TraceFlags::new(0x01 | if r.ctx.random() { 0x02 } else { 0 }),
                false,
                r.trace_state.as_deref().and_then(|ts| ts.parse().ok()).unwrap_or_default(),
            ),
            parent_span_id: SpanId::from(r.parent_span_id),
            parent_span_is_remote: r.parent_remote,
            span_kind: match r.kind {
                Kind::Internal => SpanKind::Internal,
                Kind::Server => SpanKind::Server,
                Kind::Client => SpanKind::Client,
                Kind::Producer => SpanKind::Producer,
                Kind::Consumer => SpanKind::Consumer,
            },
            name: Cow::Borrowed(r.name),
            start_time: at(r.start),
            end_time: at(end),
            attributes: r.attributes,
            dropped_attributes_count: r.dropped_attributes,
            events,
            links,
            status: r.status,
            instrumentation_scope: scope.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::time::Duration;

    use opentelemetry::{InstrumentationScope as SdkScope, KeyValue, Value};
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;

    use super::*;
    use crate::context::Ctx;

    fn recording(i: u64, anchor: Instant) -> Recording {
        let kinds = [Kind::Internal, Kind::Server, Kind::Client, Kind::Producer, Kind::Consumer];
        let statuses = [
            opentelemetry::trace::Status::Unset,
            opentelemetry::trace::Status::Ok,
            opentelemetry::trace::Status::error("payment declined"),
        ];
        let attributes = vec![
            KeyValue::new("http.route", "/events/{event}/tiers/{tier}/checkout"),
            KeyValue::new("owned", if i == 600 { "x".repeat(20_000) } else { format!("value {i}") }),
            KeyValue::new("count", i as i64),
            KeyValue::new("ratio", 0.25),
            KeyValue::new("ok", true),
            KeyValue::new("list", Value::Array(vec![1i64, 2].into())),
        ];
        Recording {
            ctx: Ctx::new(
                0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736 + u128::from(i),
                0xf067 + i,
                true,
                i.is_multiple_of(2),
            ),
            parent_span_id: if i.is_multiple_of(3) { 0 } else { 0xab + i },
            name: "ticket.checkout",
            start: anchor - Duration::from_millis(5 + i),
            // A value of another type, or none, at each place from one span to the next.
            attributes: {
                let mut a = attributes;
                a.rotate_left(i as usize % 6);
                a.truncate(6 - i as usize % 4);
                a
            },
            dropped_attributes: (i % 2) as u32,
            status: statuses[i as usize % 3].clone(),
            events: vec![(
                Cow::Borrowed("exception"),
                anchor - Duration::from_millis(1),
                vec![KeyValue::new("exception.message", "declined")],
            )],
            links: vec![Ctx::new(7, 8, i % 2 == 1, true)],
            trace_state: match i % 3 {
                0 => None,
                1 => Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7".into()),
                _ => Some("not a valid=list=".into()),
            },
            kind: kinds[i as usize % 5],
            parent_remote: i % 4 == 1,
            profiled: false,
        }
    }

    #[test]
    fn the_envelope_is_encoded_as_prost_encodes_it() {
        let anchor = (SystemTime::now(), Instant::now());
        for schema in [None, Some("https://opentelemetry.io/schemas/1.26.0")] {
            let resource = match schema {
                Some(url) => opentelemetry_sdk::Resource::builder_empty().with_schema_url([], url).build(),
                None => opentelemetry_sdk::Resource::builder_empty().build(),
            };
            let envelope = Envelope::new(&resource);
            // No span, one, and enough (and long enough) for multi-byte lengths at every level.
            for n in [0, 1, 300] {
                let batch = Batch { spans: (0..n).map(|i| (recording(i, anchor.1), anchor.1)).collect(), anchor };
                let spans = batch.into_proto();
                let bytes = envelope.encode(&spans);
                assert_eq!(bytes, prost::Message::encode_to_vec(&envelope.request(spans)), "{n} spans, {schema:?}");
            }
        }
    }

    /// The SDK's encoding of spans `from..from + n` (the reference).
    fn sdk_bytes(resource: &opentelemetry_sdk::Resource, from: u64, n: u64, anchor: (SystemTime, Instant)) -> Vec<u8> {
        let scope = SdkScope::builder("obs").with_version(env!("CARGO_PKG_VERSION")).build();
        let sdk = (from..from + n).map(|i| span_data(recording(i, anchor.1), anchor.1, anchor, &scope)).collect();
        let request =
            ExportTraceServiceRequest { resource_spans: group_spans_by_resource_and_scope(sdk, &resource.into()) };
        prost::Message::encode_to_vec(&request)
    }

    #[test]
    fn the_encoder_reuses_its_buffers_and_writes_the_sdks_bytes() {
        let anchor = (SystemTime::now(), Instant::now());
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_attributes([KeyValue::new("service.name", "revel")])
            .build();
        let mut encoder = Encoder::new(&resource);
        // Batches of other sizes and shapes one after another: every place of every span
        // overwritten by a value of another type, or left empty, at some point.
        for (from, n) in [(0, 15), (100, 3), (200, 40), (300, 1), (400, 7), (500, 40), (600, 1), (606, 1)] {
            let batch = Batch { spans: (from..from + n).map(|i| (recording(i, anchor.1), anchor.1)).collect(), anchor };
            assert_eq!(encoder.encode(batch), sdk_bytes(&resource, from, n, anchor), "batch from {from}");
        }
        // The 20 KB value of span 600 is not kept once a small one (span 606, the same place) took it.
        let kept = |kv: &opentelemetry_proto::tonic::common::v1::KeyValue| match kv
            .value
            .as_ref()
            .and_then(|v| v.value.as_ref())
        {
            Some(any_value::Value::StringValue(s)) => s.capacity(),
            _ => 0,
        };
        assert!(encoder.spans[0].attributes.iter().all(|kv| kept(kv) < 16 << 10), "a large buffer kept");
    }

    #[test]
    fn the_messages_are_the_sdks() {
        let anchor = (SystemTime::now(), Instant::now());
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_attributes([KeyValue::new("service.name", "revel"), KeyValue::new("host.name", "h")])
            .build();
        let scope = SdkScope::builder("obs").with_version(env!("CARGO_PKG_VERSION")).build();
        let end = anchor.1 + Duration::from_micros(250);
        let sdk: Vec<_> = (0..15).map(|i| span_data(recording(i, anchor.1), end, anchor, &scope)).collect();
        let expected =
            ExportTraceServiceRequest { resource_spans: group_spans_by_resource_and_scope(sdk, &(&resource).into()) };
        let batch = Batch { spans: (0..15).map(|i| (recording(i, anchor.1), end)).collect(), anchor };
        let envelope = Envelope::new(&resource);
        let spans = batch.into_proto();
        // The bytes posted are prost's encoding of the request.
        assert_eq!(envelope.encode(&spans), prost::Message::encode_to_vec(&expected));
        let ours = envelope.request(spans);
        assert_eq!(ours, expected);
        // Every kind, status, flag and trace state form was there to compare.
        let spans = &ours.resource_spans[0].scope_spans[0].spans;
        assert!(spans.iter().any(|s| s.flags & SpanFlags::ContextIsRemoteMask as u32 != 0));
        assert!(spans.iter().any(|s| s.trace_state.contains("congo")));
        assert!(spans.iter().any(|s| s.status.as_ref().unwrap().message == "payment declined"));
        assert_eq!(spans.iter().map(|s| s.kind).collect::<std::collections::BTreeSet<_>>().len(), 5);
    }
}
