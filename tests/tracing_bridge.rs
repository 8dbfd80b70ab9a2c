//! The `tracing` bridge (`Config::tracing_spans`, `OBS_TRACING_SPANS`): `tracing` spans of the
//! listed targets, started inside a sampled obs span, are exported as its children, decoded from
//! OTLP with the official types: `#[tracing::instrument]` code, a manual `info_span!`, a library's
//! span (reqwest-tracing's CLIENT span for an outgoing request), obs spans
//! nested inside them; fields as scrubbed attributes (personal data planted in random shapes,
//! proptest), events as span events, an ERROR event failing the span, `otel.kind` read. Spans of
//! other targets, outside any obs span, or in an unsampled trace are not exported.

#[path = "support/capture.rs"]
mod capture;
#[path = "support/otlp.rs"]
mod otlp;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;

use otlp::string;

/// Code of an older part of the service (or a library), instrumented with `tracing`.
mod legacy_billing {
    #[tracing::instrument(fields(otel.kind = "client", customer = %email, attempt = 1))]
    pub async fn charge(email: &str) -> u32 {
        tracing::info!(amount_cents = 4200, "charging card 4111 1111 1111 1111");
        let receipt = super::store_receipt().await;
        {
            let nested = tracing::info_span!("legacy.render");
            let _entered = nested.enter();
            tracing::debug!("rendered");
        }
        tracing::Span::current().record("attempt", 2);
        receipt
    }

    #[tracing::instrument]
    pub fn refuse() {
        tracing::error!("card declined");
    }

    #[tracing::instrument(skip_all, fields(email = %address, password = %key))]
    pub fn planted(address: &str, key: &str) {}
}

mod elsewhere {
    #[tracing::instrument]
    pub fn not_listed() {}
}

#[obs_runtime::traced_span("billing.store_receipt")]
async fn store_receipt() -> u32 {
    tokio::task::yield_now().await;
    7
}

#[obs_runtime::traced_span("checkout")]
async fn checkout() -> u32 {
    elsewhere::not_listed();
    legacy_billing::refuse();
    // A library's own span: reqwest-tracing's, around a request nobody answers (port 1).
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(reqwest_tracing::TracingMiddleware::<reqwest_tracing::DefaultSpanBackend>::new())
        .build();
    assert!(client.get("http://127.0.0.1:1/pay?customer=ana%40example.org").send().await.is_err());
    legacy_billing::charge("ana@example.org").await
}

#[obs_runtime::traced_span("planting")]
fn planting(cases: &[(String, String)]) {
    for (email, secret) in cases {
        legacy_billing::planted(email, secret);
    }
}

#[obs_runtime::traced_span("unsampled_root")]
fn unsampled_root() {
    legacy_billing::refuse();
}

#[test]
fn listed_tracing_spans_join_the_obs_trace() {
    let (receiver, url) = otlp::Receiver::start();
    let (_captured, config) = capture::config(url);
    let filter: tracing_subscriber::filter::Targets =
        "tracing_bridge::legacy_billing=debug,reqwest_tracing=info".parse().unwrap();
    let guard = obs_runtime::init(config.tracing_spans(Some(filter))).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    assert_eq!(rt.block_on(checkout()), 7);
    // Outside any obs span: not exported.
    rt.block_on(legacy_billing::charge("outside@example.org"));
    // Personal data planted in random shapes, in a field and under a sensitive key.
    let mut runner = TestRunner::deterministic();
    let local = r"[a-z][a-z0-9]{1,12}(\.[a-z0-9]{1,8})?";
    let cases: Vec<(String, String)> = (0..64)
        .map(|_| {
            let l = local.new_tree(&mut runner).unwrap().current();
            let s = "[A-Za-z0-9]{12,20}".new_tree(&mut runner).unwrap().current();
            (format!("{l}@example.org"), s)
        })
        .collect();
    planting(&cases);
    // An unsampled trace: the bridge does nothing.
    obs_runtime::trace::set_sampler(obs_runtime::config::Sampler::Ratio(0.0));
    unsampled_root();
    obs_runtime::trace::set_sampler(obs_runtime::config::Sampler::AlwaysOn);

    assert!(guard.shutdown());
    let spans = receiver.spans();
    let one = |name: &str| -> &Span {
        let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "{name}: {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>());
        found[0]
    };
    let checkout = one("checkout");
    let charge = one("charge");
    assert_eq!(charge.parent_span_id, checkout.span_id, "a child of the obs span it ran in");
    assert_eq!(charge.trace_id, checkout.trace_id);
    assert_eq!(charge.kind, SpanKind::Client as i32, "otel.kind read");
    // Fields, scrubbed; a field recorded later.
    assert_eq!(string(charge, "customer").as_deref(), Some("[EMAIL]"));
    assert!(
        charge
            .attributes
            .iter()
            .any(|kv| kv.key == "attempt"
                && kv.value.as_ref().and_then(|v| v.value.as_ref()) == Some(&Value::IntValue(2)))
    );
    // Its event: the message scrubbed, its fields.
    let event = charge.events.iter().find(|e| e.name.starts_with("charging card")).expect("the event");
    assert!(!event.name.contains("4111"), "{}", event.name);
    assert!(event.attributes.iter().any(|kv| kv.key == "amount_cents"));
    // An obs span inside the bridged one is its child; so is a nested tracing span.
    assert!(spans.iter().any(|s| s.name == "billing.store_receipt" && s.parent_span_id == charge.span_id));
    let render = one("legacy.render");
    assert_eq!(render.parent_span_id, charge.span_id);
    assert!(render.events.iter().any(|e| e.name == "rendered"), "a DEBUG event, as the directive allows");
    // The library's span: a CLIENT child of the obs span it ran in, with its HTTP fields, no
    // address from the query.
    let library = spans
        .iter()
        .find(|s| s.parent_span_id == checkout.span_id && s.attributes.iter().any(|kv| kv.key == "http.request.method"))
        .expect("reqwest-tracing's span");
    assert_eq!(library.kind, SpanKind::Client as i32, "{library:?}");
    assert_eq!(library.status.as_ref().map(|s| s.code), Some(StatusCode::Error as i32), "otel.status_code read");
    assert!(!format!("{library:?}").contains("ana%40example.org"), "{library:?}");
    // An ERROR event fails the span.
    let refuse = spans.iter().find(|s| s.name == "refuse" && s.parent_span_id == checkout.span_id).unwrap();
    assert_eq!(refuse.status.as_ref().map(|s| s.code), Some(StatusCode::Error as i32));
    // Not listed, outside any obs span, or unsampled: nothing.
    assert!(spans.iter().all(|s| s.name != "not_listed"));
    assert_eq!(spans.iter().filter(|s| s.name == "charge").count(), 1, "the call outside any obs span");
    assert!(spans.iter().all(|s| s.name != "unsampled_root"));
    assert_eq!(spans.iter().filter(|s| s.name == "refuse").count(), 1, "the unsampled trace's refuse");

    // The planted values: 64 spans, none of the values in any of them.
    let planted: Vec<&Span> = spans.iter().filter(|s| s.name == "planted").collect();
    assert_eq!(planted.len(), 64);
    let dump = format!("{spans:?}");
    for (email, secret) in &cases {
        assert!(!dump.contains(email.as_str()), "{email} left in a span");
        assert!(!dump.contains(secret.as_str()), "{secret} left in a span");
    }
    assert!(planted.iter().all(|s| string(s, "password").as_deref() == Some("[REDACTED]")));
}
