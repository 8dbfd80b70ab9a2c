//! Spans of nested sync and async functions reach an OTLP/HTTP receiver decoding with the
//! official `opentelemetry-proto` types: names, parent links, attributes, status, error events,
//! resource. One test: `init` sets up the process's single pipeline.

#[path = "support/otlp.rs"]
mod otlp;

use std::time::Duration;

use obs_runtime::config::{Config, Sampler};
use obs_runtime::traced_span;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{Span, status::StatusCode};

#[derive(Debug, PartialEq)]
struct SoldOut;

impl std::fmt::Display for SoldOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("tier sold out")
    }
}

#[traced_span("ticket.checkout", fields(tier_id = tier, organization = %org, tier), err)]
fn checkout(tier: u64, org: &str) -> Result<u64, SoldOut> {
    check_eligibility(tier);
    obs_runtime::trace::record("ticket.price_cents", 1500i64);
    if tier == 0 {
        return Err(SoldOut);
    }
    Ok(tier * 500)
}

#[derive(obs_runtime::Scrub)]
struct PaymentForm {
    email: String,
    card_number: String,
    amount_cents: u64,
}

/// Personal data in fields, recorded attributes and the error never reaches the collector.
#[traced_span("payment.submit", fields(form, note, customer = %form.email), err)]
fn submit(form: &PaymentForm, note: &str) -> Result<(), String> {
    obs_runtime::trace::record("password", "hunter2");
    obs_runtime::trace::record("callback", "https://shop.example/cb?token=s3cr3t&step=2");
    Err(format!("card {} declined for {}", form.card_number, form.email))
}

/// State in a traced function's body is one state, whether its span is off or on.
#[traced_span("pool.acquire")]
fn acquisitions() -> u32 {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
}

#[traced_span("ticket.check_eligibility", level = "debug")]
fn check_eligibility(tier: u64) -> bool {
    tier < 100
}

#[traced_span("questionnaire.evaluate", fields(questionnaire_id = id))]
async fn evaluate(id: u32) -> u32 {
    let score = llm_call(id).await.unwrap_or(0);
    tokio::task::yield_now().await;
    score + 1
}

#[traced_span("llm.api_call", err)]
async fn llm_call(id: u32) -> Result<u32, String> {
    tokio::task::yield_now().await;
    if id == 0 { Err("the LLM timed out".into()) } else { Ok(id * 2) }
}

/// A method of an `#[async_trait]` impl: the impl's attribute expands first and turns the method
/// into a function returning `Box::pin(async move { .. })`; the span must still cover the future.
#[async_trait::async_trait]
trait Store {
    async fn load(&self, id: u32) -> Result<u32, String>;
}

struct Db;

#[async_trait::async_trait]
impl Store for Db {
    #[traced_span("store.load", fields(id))]
    async fn load(&self, id: u32) -> Result<u32, String> {
        tokio::task::yield_now().await;
        // Started after an await: a child only if the span is entered on every poll.
        let v = evaluate(id).await;
        if v == 1 { Err("nothing stored".into()) } else { Ok(v) }
    }
}

/// Every method of an `impl` block at once, named `inventory.<method>`: but a method with an
/// attribute of its own, one opted out, and a `const fn`.
struct Inventory(u32);

#[traced_span("inventory")]
impl Inventory {
    fn reserve(&self, n: u32) -> Result<u32, String> {
        if n > self.0 { Err(format!("only {} left", self.0)) } else { Ok(n) }
    }

    async fn restock(&mut self, n: u32) -> u32 {
        tokio::task::yield_now().await;
        self.0 += n;
        self.0
    }

    #[traced_span(skip)]
    fn peek(&self) -> Option<String> {
        obs_runtime::trace::current_span_id()
    }

    #[traced_span("inventory.audit.full", kind = "client")]
    fn audit(&self) -> u32 {
        self.0
    }

    const fn capacity() -> u32 {
        100
    }
}

/// An `#[async_trait]` impl instrumented whole, the attributes in either order.
struct Archive;

#[traced_span("archive", level = "warn")]
#[async_trait::async_trait]
impl Store for Archive {
    async fn load(&self, id: u32) -> Result<u32, String> {
        tokio::task::yield_now().await;
        Ok(id)
    }
}

struct Vault;

#[async_trait::async_trait]
#[traced_span("vault")]
impl Store for Vault {
    async fn load(&self, id: u32) -> Result<u32, String> {
        tokio::task::yield_now().await;
        Err(format!("{id} is sealed"))
    }
}

#[traced_span("ticket.lock_tier")]
#[obs_runtime::counted(metric = "lib_calls_total", labels(function = "lock_tier"), only = "ok")]
fn lock_tier(free: bool) -> Result<(), String> {
    if free { Ok(()) } else { Err("taken".into()) }
}

#[obs_runtime::timed(metric = "lib_search_duration_seconds", labels(index = "traced"))]
#[traced_span("ticket.lock_tier_timed", err)]
fn lock_tier_timed(free: bool) -> Result<(), String> {
    if free { Ok(()) } else { Err("taken".into()) }
}

#[traced_span("stripe.webhook.handle")]
fn webhook() -> Vec<(&'static str, String)> {
    obs_runtime::trace::outgoing_headers()
}

#[traced_span("task.notify_event_open")]
async fn notify_task() {
    tokio::task::yield_now().await;
}

/// Filtered out by its level (development records debug and above).
#[traced_span("helper.trace_level", level = "trace", err)]
fn helper() -> Result<(), String> {
    Err("handled by the caller".into())
}

#[traced_span("parent.handles_error")]
fn handles_error() {
    let _ = helper();
}

#[traced_span("request.cancelled")]
async fn cancelled_parent() {
    forever().await
}

#[traced_span("child.never_finishes")]
async fn forever() {
    std::future::pending::<()>().await
}

#[traced_span("worker.panics")]
fn panics() {
    panic!("boom");
}

use otlp::attr;

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[test]
fn spans_reach_an_otlp_receiver() {
    let (receiver, url) = otlp::Receiver::start();
    let config = Config::from_vars(|_| None)
        .unwrap()
        .service_name("obs-tests")
        .service_version("9.9.9")
        .traces_endpoint(url)
        .otlp_header("X-Scope-OrgID", "tenant%41")
        .sampler(Sampler::AlwaysOn);
    assert_eq!(acquisitions(), 1, "before init: spans off");
    let guard = obs_runtime::init(config).unwrap();
    assert_eq!(acquisitions(), 2, "after init: spans on, the same static");
    // Spans leave without a flush, also once the exporter has gone to sleep for want of spans.
    assert_eq!(receiver.wait_for(1, Duration::from_secs(10)).len(), 1, "exported without a flush");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(acquisitions(), 3);
    assert_eq!(receiver.wait_for(2, Duration::from_secs(10)).len(), 2, "a span wakes an idle exporter");

    assert_eq!(checkout(3, "Acme \"Events\""), Ok(1500));
    assert!(checkout(0, "Acme").is_err());
    let form =
        PaymentForm { email: "ana@example.org".into(), card_number: "4111 1111 1111 1111".into(), amount_cents: 1200 };
    assert!(submit(&form, "call ana@example.org").is_err());
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    assert_eq!(rt.block_on(evaluate(7)), 15);
    assert_eq!(rt.block_on(evaluate(0)), 1);
    assert_eq!(rt.block_on(Db.load(7)), Ok(15));
    assert!(rt.block_on(Db.load(0)).is_err());
    assert!(std::panic::catch_unwind(panics).is_err());
    // W3C trace context in: the span joins the caller's trace, as a child of its span.
    let incoming = obs_runtime::trace::RemoteContext::from_headers(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
    )
    .unwrap();
    let outgoing = incoming.in_scope(webhook);
    assert_eq!(outgoing.len(), 2, "traceparent and tracestate inside a span: {outgoing:?}");
    let (_, traceparent) = &outgoing[0];
    assert!(traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && traceparent.ends_with("-01"));
    assert!(!traceparent.contains("00f067aa0ba902b7"), "out: the new span's id, not the caller's");
    assert_eq!(outgoing[1], ("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".to_owned()));
    // A background task: a new trace, linked to the request that enqueued it (its root span starts
    // on a later poll than the first).
    rt.block_on(incoming.link_instrument(async {
        tokio::task::yield_now().await;
        notify_task().await
    }));
    // An error recorded by a span filtered out by its level does not fail its parent.
    handles_error();
    // A cancelled future ends its child span before its own.
    rt.block_on(async { tokio::time::timeout(Duration::from_millis(20), cancelled_parent()).await.unwrap_err() });
    // Composes with #[counted] / #[timed] in either order.
    assert!(lock_tier(true).is_ok() && lock_tier(false).is_err());
    assert!(lock_tier_timed(true).is_ok() && lock_tier_timed(false).is_err());
    assert_eq!(obs_runtime::testing::value("lib_calls_total", &[("function", "lock_tier")]), Some(1.0));
    assert_eq!(
        obs_runtime::testing::histogram("lib_search_duration_seconds", &[("index", "traced")]).unwrap().count,
        2
    );
    // A whole impl block.
    let mut inventory = Inventory(2);
    assert_eq!(inventory.reserve(1), Ok(1));
    assert!(inventory.reserve(5).is_err());
    assert_eq!(rt.block_on(inventory.restock(3)), 5);
    assert_eq!(inventory.peek(), None, "opted out: no span");
    assert_eq!(inventory.audit(), 5);
    assert_eq!(Inventory::capacity(), 100);
    assert_eq!(rt.block_on(Archive.load(4)), Ok(4));
    assert!(rt.block_on(Vault.load(4)).is_err());
    assert!(obs_runtime::trace::current_trace_id().is_none(), "no span stays entered");

    assert!(guard.shutdown(), "everything queued was exported within the deadline");
    let spans = receiver.wait_for(33, Duration::from_secs(5));
    let mut names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "archive.load",
            "child.never_finishes",
            "inventory.audit.full",
            "inventory.reserve",
            "inventory.reserve",
            "inventory.restock",
            "llm.api_call",
            "llm.api_call",
            "llm.api_call",
            "llm.api_call",
            "parent.handles_error",
            "payment.submit",
            "pool.acquire",
            "pool.acquire",
            "questionnaire.evaluate",
            "questionnaire.evaluate",
            "questionnaire.evaluate",
            "questionnaire.evaluate",
            "request.cancelled",
            "store.load",
            "store.load",
            "stripe.webhook.handle",
            "task.notify_event_open",
            "ticket.check_eligibility",
            "ticket.check_eligibility",
            "ticket.checkout",
            "ticket.checkout",
            "ticket.lock_tier",
            "ticket.lock_tier",
            "ticket.lock_tier_timed",
            "ticket.lock_tier_timed",
            "vault.load",
            "worker.panics"
        ]
    );
    assert!(receiver.paths.lock().unwrap().iter().all(|p| p == "/v1/traces"));
    let tenants = receiver.tenants.lock().unwrap().clone();
    // Sent as given: the SDK's own percent-decoding does not turn `%41` into `A`.
    assert!(tenants.iter().all(|t| t.as_deref() == Some("tenant%41")), "every export carries the header: {tenants:?}");

    // Resource attributes.
    let requests = receiver.requests.lock().unwrap();
    let resource = requests[0].resource_spans[0].resource.as_ref().unwrap();
    let res = |k: &str| {
        resource.attributes.iter().find(|kv| kv.key == k).and_then(|kv| kv.value.clone()).and_then(|v| v.value)
    };
    assert_eq!(res("service.name"), Some(Value::StringValue("obs-tests".into())));
    assert_eq!(res("service.version"), Some(Value::StringValue("9.9.9".into())));
    assert_eq!(res("deployment.environment"), Some(Value::StringValue("development".into())));
    // Detected: what tells two replicas apart.
    assert_eq!(res("process.pid"), Some(Value::IntValue(i64::from(std::process::id()))));
    assert_eq!(res("process.runtime.name"), Some(Value::StringValue("rustc".into())));
    let instance = match res("service.instance.id") {
        Some(Value::StringValue(id)) => id,
        other => panic!("service.instance.id: {other:?}"),
    };
    assert_eq!((instance.len(), &instance[14..15]), (36, "4"), "a version 4 UUID: {instance}");
    assert!(
        requests.iter().all(|r| r.resource_spans.iter().all(|rs| rs.resource.as_ref() == Some(resource))),
        "one resource for the whole process"
    );
    assert!(matches!(res("host.name"), Some(Value::StringValue(h)) if !h.is_empty()));
    drop(requests);

    // Parent links: each check_eligibility is a child of a checkout, in its trace.
    let checkouts = named(&spans, "ticket.checkout");
    for child in named(&spans, "ticket.check_eligibility") {
        let parent = checkouts.iter().find(|p| p.span_id == child.parent_span_id).expect("parent checkout");
        assert_eq!(parent.trace_id, child.trace_id);
        assert!(parent.parent_span_id.is_empty(), "checkout is a root span");
        assert!(child.start_time_unix_nano >= parent.start_time_unix_nano);
        assert!(child.end_time_unix_nano <= parent.end_time_unix_nano);
    }
    // ... and across `.await`: llm.api_call is a child of questionnaire.evaluate.
    let evaluations = named(&spans, "questionnaire.evaluate");
    for child in named(&spans, "llm.api_call") {
        let parent = evaluations.iter().find(|p| p.span_id == child.parent_span_id).expect("parent evaluation");
        assert_eq!(parent.trace_id, child.trace_id);
    }
    assert_ne!(checkouts[0].trace_id, checkouts[1].trace_id, "each root starts a trace");
    // An `#[async_trait]` method's span covers its future: what it awaits is its child, and its
    // `Err` fails it.
    for load in named(&spans, "store.load") {
        let child = evaluations.iter().find(|e| e.parent_span_id == load.span_id).expect("its evaluation, a child");
        assert!(child.end_time_unix_nano <= load.end_time_unix_nano, "the span ended before its future did");
        let failed = load.status.as_ref().is_some_and(|s| s.code == StatusCode::Error as i32);
        assert_eq!(failed, attr(load, "id") == Some(&Value::IntValue(0)), "only load(0) fails");
    }
    // An impl block's methods: `Err` fails the span, the method's own options win, and the
    // #[async_trait] shape is covered in either attribute order.
    let failed = |s: &Span| s.status.as_ref().is_some_and(|s| s.code == StatusCode::Error as i32);
    let reserves = named(&spans, "inventory.reserve");
    assert_eq!(reserves.iter().filter(|s| failed(s)).count(), 1, "reserve(5) failed, reserve(1) did not");
    assert_eq!(named(&spans, "inventory.audit.full")[0].kind, SpanKind::Client as i32);
    assert_eq!(named(&spans, "inventory.restock")[0].kind, SpanKind::Internal as i32);
    assert!(!failed(named(&spans, "archive.load")[0]));
    assert!(failed(named(&spans, "vault.load")[0]), "the boxed future's Err");

    // Attributes: typed, Display, added from the body.
    let ok = checkouts.iter().find(|s| attr(s, "tier_id") == Some(&Value::IntValue(3))).expect("checkout(3)");
    assert_eq!(attr(ok, "tier"), Some(&Value::IntValue(3)));
    assert_eq!(attr(ok, "organization"), Some(&Value::StringValue("Acme \"Events\"".into())));
    assert_eq!(attr(ok, "ticket.price_cents"), Some(&Value::IntValue(1500)));
    assert_eq!(ok.status.as_ref().map_or(0, |s| s.code), StatusCode::Unset as i32);

    // An Err return: status error with the message, and an exception event.
    let failed = checkouts.iter().find(|s| attr(s, "tier_id") == Some(&Value::IntValue(0))).expect("checkout(0)");
    let status = failed.status.as_ref().unwrap();
    assert_eq!((status.code, status.message.as_str()), (StatusCode::Error as i32, "tier sold out"));
    let event = failed.events.iter().find(|e| e.name == "exception").expect("exception event");
    assert_eq!(
        event
            .attributes
            .iter()
            .find(|kv| kv.key == "exception.message")
            .and_then(|kv| kv.value.clone())
            .and_then(|v| v.value),
        Some(Value::StringValue("tier sold out".into()))
    );
    let llm_failed = named(&spans, "llm.api_call")
        .into_iter()
        .filter(|s| s.status.as_ref().is_some_and(|s| s.code == StatusCode::Error as i32))
        .count();
    assert_eq!(llm_failed, 2, "the async Err is recorded too (evaluate(0), called directly and by load(0))");
    let timed_failed = named(&spans, "ticket.lock_tier_timed")
        .into_iter()
        .filter(|s| s.status.as_ref().is_some_and(|s| s.code == StatusCode::Error as i32))
        .count();
    assert_eq!(timed_failed, 1);

    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let joined = named(&spans, "stripe.webhook.handle")[0];
    assert_eq!(hex(&joined.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&joined.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(joined.trace_state, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
    let task = named(&spans, "task.notify_event_open")[0];
    assert_ne!(hex(&task.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736", "the task has a trace of its own");
    assert!(task.parent_span_id.is_empty());
    assert_eq!(task.trace_state, "", "a new trace does not inherit the origin's tracestate");
    assert_eq!(task.links.len(), 1);
    assert_eq!(hex(&task.links[0].trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&task.links[0].span_id), "00f067aa0ba902b7");

    // Scrubbed before export: a Scrub field, free text, a sensitive key, a URL, the error.
    let payment = named(&spans, "payment.submit")[0];
    let text = |k: &str| match attr(payment, k) {
        Some(Value::StringValue(s)) => s.clone(),
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(text("form"), r#"{"email":"[EMAIL]","card_number":"[REDACTED]","amount_cents":1200}"#);
    assert_eq!(text("note"), "call [EMAIL]");
    assert_eq!(text("customer"), "[EMAIL]");
    assert_eq!(text("password"), "[REDACTED]");
    assert_eq!(text("callback"), "https://shop.example/cb?token=[REDACTED]&step=2");
    let status = payment.status.as_ref().unwrap();
    assert_eq!(status.message, "card [CARD] declined for [EMAIL]");
    // The exception event, as OpenTelemetry's conventions name it: the error's type and message.
    let event = &payment.events[0];
    assert_eq!(event.name, "exception");
    let exception = |key: &str| {
        event.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.clone())
    };
    assert_eq!(exception("exception.message"), Some(Value::StringValue(status.message.clone())));
    assert_eq!(exception("exception.type"), Some(Value::StringValue("alloc::string::String".into())));
    let wire = format!("{spans:?}");
    // The card in any spacing ("4111" alone also turns up inside nanosecond timestamps).
    for secret in ["ana@example.org", "4111 1111", "41111111", "1111 1111 1111", "hunter2", "s3cr3t"] {
        assert!(!wire.contains(secret), "{secret} reached the collector");
    }

    let handled = named(&spans, "parent.handles_error")[0];
    assert_eq!(handled.status.as_ref().map_or(0, |s| s.code), StatusCode::Unset as i32);
    let (cancelled, child) = (named(&spans, "request.cancelled")[0], named(&spans, "child.never_finishes")[0]);
    assert_eq!(child.parent_span_id, cancelled.span_id);
    assert!(child.end_time_unix_nano <= cancelled.end_time_unix_nano, "the child ends first");

    // A panic ends the span as failed.
    let panicked = named(&spans, "worker.panics")[0];
    assert_eq!(panicked.status.as_ref().map(|s| s.message.as_str()), Some("panicked"));
    let panic_type = panicked.events[0].attributes.iter().find(|kv| kv.key == "exception.type");
    assert_eq!(
        panic_type.and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.clone()),
        Some(Value::StringValue("panic".into()))
    );
    assert_eq!(
        obs_runtime::testing::value("obs_spans_exported_total", &[]),
        Some(spans.len() as f64),
        "the exporter counts what the backend accepted"
    );
}
