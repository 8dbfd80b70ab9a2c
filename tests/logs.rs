//! Log lines as Loki gets them, from `init`'s own subscriber: JSON, scrubbed, with the ids of the
//! exported spans and the context of the enclosing `tracing` spans. One process-wide `init`.

#[path = "support/capture.rs"]
mod capture;
#[path = "support/otlp.rs"]
mod otlp;

use std::collections::HashMap;
use std::time::Duration;

use obs_runtime::{Scrub, traced_span};
use serde_json::Value;

#[derive(Scrub)]
struct Registration {
    email: String,
    password: String,
    password_confirmation: String,
    #[scrub(partial = 4)]
    phone: String,
    organization_id: u64,
}

#[traced_span("ticket.checkout", fields(tier))]
fn checkout(tier: u64) {
    tracing::info!(
        user_id = 7,
        password = "hunter2",
        email = "ana@example.org",
        note = "paid with 4111-1111-1111-1111",
        "checkout of tier {tier} for ana@example.org"
    );
    nested();
}

#[traced_span("ticket.reserve")]
fn nested() {
    tracing::debug!(payment_id = "4111111111111111", "reserved");
}

#[traced_span("questionnaire.evaluate")]
async fn evaluate() {
    tokio::task::yield_now().await;
    tracing::warn!(score = 0.25, "low score");
}

fn lines(captured: &capture::Captured) -> Vec<Value> {
    let text = captured.text();
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[test]
fn logs_are_json_scrubbed_and_correlated_with_spans() {
    let (receiver, url) = otlp::Receiver::start();
    let (captured, config) = capture::config(url);
    let guard = obs_runtime::init(config).unwrap();

    tracing::info!("outside any span");
    let request =
        tracing::info_span!("request", request_id = "req-1", method = "POST", endpoint = "/events/{id}/checkout");
    request.in_scope(|| checkout(3));
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(evaluate());
    let form = Registration {
        email: "bo@example.org".into(),
        password: "s3cr3t-pw".into(),
        password_confirmation: "s3cr3t-pw".into(),
        phone: "+4915112345678".into(),
        organization_id: 12,
    };
    tracing::info!(form = ?form, "registration");
    let body = HashMap::from([("cardNumber", "5500005555555559"), ("user_id", "42")]);
    tracing::error!(body = ?body, json = r#"{"user":{"new-password":"pw-123456"}}"#, "webhook payload");

    assert!(guard.shutdown());
    let spans = receiver.wait_for(3, Duration::from_secs(5));
    let lines = lines(&captured);
    assert_eq!(lines.len(), 6, "{lines:#?}");

    // The shape of a line.
    let outside = &lines[0];
    let ts = outside["timestamp"].as_str().unwrap();
    assert!(ts.len() == 27 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
    assert_eq!(outside["level"], "INFO");
    assert_eq!(outside["target"], "logs");
    assert_eq!(outside["message"], "outside any span");
    assert!(outside.get("trace_id").is_none(), "no span, no trace id");

    // Inside a span: the exported span's ids, the request context, everything scrubbed.
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let checkout_span = spans.iter().find(|s| s.name == "ticket.checkout").unwrap();
    let line = &lines[1];
    assert_eq!(line["message"], "checkout of tier 3 for [EMAIL]");
    assert_eq!(line["trace_id"], hex(&checkout_span.trace_id));
    assert_eq!(line["span_id"], hex(&checkout_span.span_id));
    assert_eq!(line["request_id"], "req-1");
    assert_eq!(line["endpoint"], "/events/{id}/checkout");
    assert_eq!(line["user_id"], 7);
    assert_eq!(line["password"], "[REDACTED]");
    assert_eq!(line["email"], "[EMAIL]");
    assert_eq!(line["note"], "paid with [CARD]");

    // A child span: same trace, its own span id; a kept id is never touched; debug is on in
    // development.
    let reserve_span = spans.iter().find(|s| s.name == "ticket.reserve").unwrap();
    let line = &lines[2];
    assert_eq!(line["level"], "DEBUG");
    assert_eq!(line["trace_id"], hex(&checkout_span.trace_id));
    assert_eq!(line["span_id"], hex(&reserve_span.span_id));
    assert_eq!(line["payment_id"], "4111111111111111");

    // Across an await.
    let eval_span = spans.iter().find(|s| s.name == "questionnaire.evaluate").unwrap();
    assert_eq!(lines[3]["span_id"], hex(&eval_span.span_id));
    assert_eq!(lines[3]["score"], 0.25);
    assert!(lines[3].get("request_id").is_none(), "context does not leak out of its span");

    // A derived Scrub type logged with `?`, a map and a JSON string as values.
    let form = lines[4]["form"].as_str().unwrap();
    assert_eq!(
        form,
        r#"Registration { email: "[EMAIL]", password: [REDACTED], password_confirmation: [REDACTED], phone: "****5678", organization_id: 12 }"#
    );
    let body = lines[5]["body"].as_str().unwrap();
    assert!(body.contains(r#""cardNumber": "[REDACTED]""#) && body.contains(r#""user_id": "42""#), "{body}");
    assert_eq!(lines[5]["json"], r#"{"user":{"new-password":"[REDACTED]"}}"#);

    let all = captured.text();
    for secret in
        ["hunter2", "ana@example.org", "4111-1111", "s3cr3t", "bo@example.org", "5500005555555559", "pw-123456"]
    {
        assert!(!all.contains(secret), "{secret} leaked into the logs:\n{all}");
    }
}
