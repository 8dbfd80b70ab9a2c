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
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
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

/// One finished span as the OTLP message. `base` is `anchor`'s wall-clock time in nanoseconds.
fn proto_span(r: Recording, end: Instant, base: u64, anchor: Instant) -> Span {
    let at = |t: Instant| match t.checked_duration_since(anchor) {
        Some(d) => base.saturating_add(d.as_nanos() as u64),
        None => base.saturating_sub(anchor.duration_since(t).as_nanos() as u64),
    };
    let kind = match r.kind {
        Kind::Internal => span::SpanKind::Internal,
        Kind::Server => span::SpanKind::Server,
        Kind::Client => span::SpanKind::Client,
        Kind::Producer => span::SpanKind::Producer,
        Kind::Consumer => span::SpanKind::Consumer,
    };
    let (code, message) = match r.status {
        opentelemetry::trace::Status::Unset => (status::StatusCode::Unset, String::new()),
        opentelemetry::trace::Status::Ok => (status::StatusCode::Ok, String::new()),
        opentelemetry::trace::Status::Error { description } => (status::StatusCode::Error, description.into_owned()),
    };
    Span {
        trace_id: r.ctx.trace_id.to_be_bytes().to_vec(),
        span_id: r.ctx.span_id.to_be_bytes().to_vec(),
        // Validated (and normalised) as the SDK does: an invalid list is sent empty.
        trace_state: r
            .trace_state
            .as_deref()
            .and_then(|ts| ts.parse::<opentelemetry::trace::TraceState>().ok())
            .map(|ts| ts.header())
            .unwrap_or_default(),
        parent_span_id: if r.parent_span_id == 0 { Vec::new() } else { r.parent_span_id.to_be_bytes().to_vec() },
        flags: flags(true, r.ctx.random, r.parent_remote),
        name: r.name.to_owned(),
        kind: kind as i32,
        start_time_unix_nano: at(r.start),
        end_time_unix_nano: at(end),
        attributes: Attributes::from(r.attributes).0,
        dropped_attributes_count: r.dropped_attributes,
        events: r
            .events
            .into_iter()
            .map(|(name, t, attributes)| span::Event {
                time_unix_nano: at(t),
                name: name.into_owned(),
                attributes: Attributes::from(attributes).0,
                dropped_attributes_count: 0,
            })
            .collect(),
        dropped_events_count: 0,
        links: r
            .links
            .iter()
            .map(|l| span::Link {
                trace_id: l.trace_id.to_be_bytes().to_vec(),
                span_id: l.span_id.to_be_bytes().to_vec(),
                trace_state: String::new(),
                attributes: Vec::new(),
                dropped_attributes_count: 0,
                flags: flags(l.sampled, l.random, true),
            })
            .collect(),
        dropped_links_count: 0,
        status: Some(Status { message, code: code as i32 }),
    }
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

    pub(crate) fn span_data(r: Recording, end: Instant, anchor: (SystemTime, Instant), scope: &InstrumentationScope) -> SpanData {
        let at = |t: Instant| match t.checked_duration_since(anchor.1) {
            Some(d) => anchor.0 + d,
            None => anchor.0 - anchor.1.duration_since(t),
        };
        let mut links = SpanLinks::default();
        links.links = r
            .links
            .iter()
            .map(|l| {
                let flags = TraceFlags::new(l.sampled as u8 | if l.random { 0x02 } else { 0 });
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
                TraceFlags::new(0x01 | if r.ctx.random { 0x02 } else { 0 }),
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
        Recording {
            ctx: Ctx { trace_id: 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736 + u128::from(i), span_id: 0xf067 + i, sampled: true, random: i % 2 == 0 },
            parent_span_id: if i % 3 == 0 { 0 } else { 0xab + i },
            name: "ticket.checkout",
            start: anchor - Duration::from_millis(5 + i),
            attributes: vec![
                KeyValue::new("http.route", "/events/{event}/tiers/{tier}/checkout"),
                KeyValue::new("owned", format!("value {i}")),
                KeyValue::new("count", i as i64),
                KeyValue::new("ratio", 0.25),
                KeyValue::new("ok", true),
                KeyValue::new("list", Value::Array(vec![1i64, 2].into())),
            ],
            dropped_attributes: (i % 2) as u32,
            status: statuses[i as usize % 3].clone(),
            events: vec![(
                Cow::Borrowed("exception"),
                anchor - Duration::from_millis(1),
                vec![KeyValue::new("exception.message", "declined")],
            )],
            links: vec![Ctx { trace_id: 7, span_id: 8, sampled: i % 2 == 1, random: true }],
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
    fn the_messages_are_the_sdks() {
        let anchor = (SystemTime::now(), Instant::now());
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_attributes([KeyValue::new("service.name", "revel"), KeyValue::new("host.name", "h")])
            .build();
        let scope = SdkScope::builder("obs").with_version(env!("CARGO_PKG_VERSION")).build();
        let end = anchor.1 + Duration::from_micros(250);
        let sdk: Vec<_> = (0..15)
            .map(|i| span_data(recording(i, anchor.1), end, anchor, &scope))
            .collect();
        let expected = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(sdk, &(&resource).into()),
        };
        let batch = Batch { spans: (0..15).map(|i| (recording(i, anchor.1), end)).collect(), anchor };
        let ours = Envelope::new(&resource).request(batch.into_proto());
        assert_eq!(ours, expected);
        // Every kind, status, flag and trace state form was there to compare.
        let spans = &ours.resource_spans[0].scope_spans[0].spans;
        assert!(spans.iter().any(|s| s.flags & SpanFlags::ContextIsRemoteMask as u32 != 0));
        assert!(spans.iter().any(|s| s.trace_state.contains("congo")));
        assert!(spans.iter().any(|s| s.status.as_ref().unwrap().message == "payment declined"));
        assert_eq!(spans.iter().map(|s| s.kind).collect::<std::collections::BTreeSet<_>>().len(), 5);
    }
}
