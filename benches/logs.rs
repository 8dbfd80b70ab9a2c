//! Logging cost, in one run: one event through obs's scrubbed JSON layer against
//! tracing-subscriber's JSON formatter (no scrubbing), both inside a request span with context
//! fields and both writing to a sink (group `log_event`: the span created for each event, so
//! both sides also pay the registry's span); one access line in a request already open (group
//! `access_line`: the line alone, what issue 20 compares); and the scrubber's throughput on
//! realistic lines with and without personal data.

#[path = "support/http1.rs"]
mod http1;
#[path = "support/measure.rs"]
mod measure;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use obs_runtime::logs::{LogFormat, LogLayer};
use obs_runtime::scrub::scrub_text;
use tracing_subscriber::layer::SubscriberExt as _;

fn event(pii: bool) {
    if pii {
        tracing::info!(
            user_id = 7,
            email = "ana@example.org",
            note = "card 4111 1111 1111 1111",
            status = 200,
            "checkout completed for ana@example.org"
        );
    } else {
        tracing::info!(user_id = 7, tier = "vip", quantity = 2, status = 200, "checkout completed for order 1042");
    }
}

fn in_request(pii: bool) {
    let span = tracing::info_span!(
        "request",
        request_id = "5f2b9c1e-8d7a-4e3b-9f6a-1c2d3e4f5a6b",
        method = "POST",
        endpoint = "/events/{id}/checkout",
        user_agent = "Mozilla/5.0 (X11; Linux x86_64)"
    );
    let _e = span.enter();
    event(pii);
}

fn log_event(c: &mut Criterion) {
    eprintln!("CPU: {}", measure::cpu_model());
    let mut g = c.benchmark_group("log_event");
    for (pii, label) in [(false, "clean"), (true, "with_pii")] {
        let obs = tracing_subscriber::registry().with(LogLayer::new(LogFormat::Json).writer(|line: &[u8]| {
            black_box(line.len());
        }));
        tracing::subscriber::with_default(obs, || {
            g.bench_function(format!("obs_json_scrubbed/{label}"), |b| b.iter(|| in_request(black_box(pii))));
        });
        let fmt =
            tracing_subscriber::registry().with(tracing_subscriber::fmt::layer().json().with_writer(std::io::sink));
        tracing::subscriber::with_default(fmt, || {
            g.bench_function(format!("tracing_subscriber_json/{label}"), |b| b.iter(|| in_request(black_box(pii))));
        });
    }
    g.finish();
}

/// The request span obs's access line is written in: six context fields, as the HTTP layer binds
/// them (obs renders them once per request, tracing-subscriber once per span).
fn request_span() -> tracing::Span {
    tracing::info_span!(
        "request",
        request_id = "5f2b9c1e-8d7a-4e3b-9f6a-1c2d3e4f5a6b",
        method = "POST",
        route = "/events/{event}/tiers/{tier}/checkout",
        path = "/events/8f14e45f/tiers/2/checkout",
        user_agent = "Mozilla/5.0 (X11; Linux x86_64)",
        client_address = "203.0.113.7"
    )
}

/// The access line as obs's HTTP layer writes it.
#[inline(never)]
fn access() {
    tracing::info!(target: "obs::access", status_code = 200u16, duration_ms = 12.875, "request completed");
}

/// Runs `f` inside a sampled obs span: obs's lines then carry its `trace_id` and `span_id`.
#[obs_runtime::traced_span("bench.request")]
#[inline(never)]
fn in_sampled_span(f: impl FnOnce()) {
    f()
}

/// One access line (12 keys with obs: timestamp, level, target, message, trace and span ids,
/// six context fields, status and duration; tracing-subscriber's JSON has no trace ids) in a
/// request already open, to a sink.
fn access_line(c: &mut Criterion) {
    let url = http1::otlp_sink();
    let config = obs_runtime::config::Config::from_vars(|_| None)
        .unwrap()
        .traces_endpoint(url)
        .sampler(obs_runtime::config::Sampler::AlwaysOn)
        .logs(false);
    let _guard = obs_runtime::init(config).unwrap();
    let mut g = c.benchmark_group("access_line");
    let written = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let last = written.clone();
    let obs = tracing_subscriber::registry().with(LogLayer::new(LogFormat::Json).writer(move |line: &[u8]| {
        // The first line kept, to check its shape below; the others only measured.
        let mut last = last.try_lock().expect("one thread");
        if last.is_empty() {
            last.push_str(std::str::from_utf8(line).unwrap());
        }
        black_box(line.len());
    }));
    tracing::subscriber::with_default(obs, || {
        in_sampled_span(|| {
            let span = request_span();
            let _e = span.enter();
            g.bench_function("obs_json_scrubbed", |b| b.iter(access));
        })
    });
    let line: serde_json::Value = serde_json::from_str(&written.lock().unwrap()).unwrap();
    let keys = line.as_object().unwrap().len();
    assert!(keys == 14 && line["trace_id"].is_string() && line["client_address"].is_string(), "{line}");
    let fmt = tracing_subscriber::registry().with(tracing_subscriber::fmt::layer().json().with_writer(std::io::sink));
    tracing::subscriber::with_default(fmt, || {
        let span = request_span();
        let _e = span.enter();
        g.bench_function("tracing_subscriber_json", |b| b.iter(access));
    });
    g.finish();
}

const CLEAN_LINE: &str = r#"{"timestamp":"2026-11-28T20:39:22.123456Z","level":"INFO","target":"revel::api","message":"GET /api/events/8f14e45f-ceea-467a-9575-b4b6b4e8b1e3/tickets?page=2&sort=date completed","status_code":200,"duration_ms":12.3,"user_agent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36","request_id":"5f2b9c1e-8d7a-4e3b-9f6a-1c2d3e4f5a6b","order":"20261128000123"}"#;
const PII_LINE: &str = r#"{"timestamp":"2026-11-28T20:39:22.123456Z","level":"INFO","target":"revel::api","message":"POST /api/checkout?token=abc123def456&lang=en for ana.lopez@example.org","card":"4111 1111 1111 1111","auth":"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N","body":{"password":"hunter2","cvv":"123"},"request_id":"5f2b9c1e-8d7a-4e3b-9f6a-1c2d3e4f5a6b"}"#;

fn scrubber(c: &mut Criterion) {
    let mut g = c.benchmark_group("scrub_text");
    let prose = "The event was published by the organizer and 42 members were notified; the questionnaire \
                 evaluation passed with a score of 0.87 after 3 retries at 2026-11-28 20:39:22. ";
    for (name, text) in [
        ("clean_json_line", CLEAN_LINE.to_owned()),
        ("pii_json_line", PII_LINE.to_owned()),
        ("clean_prose_4k", prose.repeat(4096 / prose.len() + 1)),
    ] {
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(name, |b| b.iter(|| scrub_text(black_box(&text)).len()));
    }
    g.finish();
}

criterion_group!(benches, log_event, access_line, scrubber);
criterion_main!(benches);
