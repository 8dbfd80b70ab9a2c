//! End to end: Revel on a free port, every critical flow driven over HTTP, then the span trees an
//! OTLP receiver got (names and parent links), the catalog metrics on `/metrics`, the JSON log
//! lines (request context, trace ids), and no planted secret anywhere.

#[path = "../../../tests/support/capture.rs"]
mod capture;
#[path = "../../../tests/support/otlp.rs"]
mod otlp;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::ServiceExt;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{Value, json};

/// One HTTP/1.1 request; the status and the body.
fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let out = exchange(addr, method, path, headers, body);
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// One HTTP/1.1 request; the whole response as it came.
fn exchange(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("content-type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn post(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    let (status, body) = http(addr, "POST", path, &[], &body.to_string());
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn signed_webhook(addr: SocketAddr, secret: &str, kind: &str, session: &str) -> u16 {
    let body = json!({"type": kind, "data": {"session_id": session}}).to_string();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let sig = revel::external::sign_webhook(secret, body.as_bytes(), now);
    http(addr, "POST", "/stripe/webhook", &[("stripe-signature", &sig)], &body).0
}

/// A database span (a query, or a transaction around queries).
fn is_db(span: &Span) -> bool {
    span.name == "transaction" || span.attributes.iter().any(|kv| kv.key == "db.system.name")
}

/// The names of `parent`'s children, database spans left out (see [`queries`]).
fn children<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a str> {
    let mut names: Vec<&str> = spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id && s.trace_id == parent.trace_id && !is_db(s))
        .map(|s| s.name.as_str())
        .collect();
    names.sort();
    names
}

/// The queries `parent` ran: its database children, and theirs (a transaction's), in order.
fn queries<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a str> {
    let mut found: Vec<&Span> = Vec::new();
    let mut stack = vec![parent];
    while let Some(p) = stack.pop() {
        for s in spans.iter().filter(|s| s.parent_span_id == p.span_id && s.trace_id == p.trace_id && is_db(s)) {
            if s.name == "transaction" {
                stack.push(s);
            } else {
                found.push(s);
            }
        }
    }
    found.sort_by_key(|s| s.start_time_unix_nano);
    found.iter().map(|s| s.name.as_str()).collect()
}

fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "exactly one {name} span");
    found[0]
}

const PLANTED: [&str; 6] = [
    "hunter2-Secret!",
    "4111 1111 1111 1111",
    "4111111111111111",
    "cvv-9z",
    "ana.buyer@example.org",
    "bo.applicant@example.org",
];

#[test]
fn every_flow_end_to_end() {
    let (receiver, url) = otlp::Receiver::start();
    let (logs, config) = capture::config(url);
    let config = revel::configure(config.service_name("revel").queue_capacity(100_000));
    let viewer = config.viewer();
    let guard = obs_runtime::init(config).unwrap();
    revel::register_metrics();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (addr, app) = rt.block_on(async {
        let (app, jobs) = revel::App::for_tests(revel::external::Externals::instant()).await;
        let store_side = app.clone();
        tokio::spawn(revel::tasks::run_worker(app.clone(), jobs));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<SocketAddr>(
            revel::service(app, obs_runtime::profile::EndpointSettings::default(), viewer),
        );
        tokio::spawn(async move { axum::serve(listener, service).await.unwrap() });
        (addr, store_side)
    });

    // Registration (a password planted).
    let (status, user) = post(addr, "/register", json!({"email": PLANTED[4], "password": PLANTED[0]}));
    assert_eq!(status, 200);
    let ana = user["user_id"].as_u64().unwrap();
    // 1. Checkout of an online ticket, continuing the caller's trace, with card data planted.
    // Ana buys: her confirmation email goes through the notification path too.
    let checkout =
        json!({"user_id": ana, "email": PLANTED[4], "card_number": PLANTED[1], "cvv": PLANTED[3]}).to_string();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (status, body) = http(
        addr,
        "POST",
        "/events/1/tiers/1/checkout",
        &[("traceparent", traceparent), ("x-request-id", "req-checkout")],
        &checkout,
    );
    assert_eq!(status, 200, "{body}");
    let outcome: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(outcome["status"], "pending_payment");
    let session = outcome["checkout_url"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    // 4. Stripe's webhook confirms it; a forged one is refused; a refund.
    assert_eq!(signed_webhook(addr, "whsec_test", "checkout.session.completed", &session), 200);
    // Stripe delivers at least once: a duplicate changes nothing (checked in the metrics below).
    assert_eq!(signed_webhook(addr, "whsec_test", "checkout.session.completed", &session), 200);
    assert_eq!(signed_webhook(addr, "whsec_forged", "checkout.session.completed", &session), 401);
    // A free ticket, checked in.
    let (status, free) = post(addr, "/events/1/tiers/2/checkout", json!({"user_id": 6, "email": "u6@example.org"}));
    assert_eq!((status, free["status"].as_str()), (200, Some("issued")));
    let ticket = free["ticket_id"].as_u64().unwrap();
    assert_eq!(post(addr, &format!("/tickets/{ticket}/check-in"), json!({})).0, 200);
    // 3. Eligibility: a member passes every gate; a stranger is stopped at the membership gate.
    let (status, body) = http(addr, "GET", "/events/1/eligibility?user_id=5", &[], "");
    assert_eq!((status, serde_json::from_str::<Value>(&body).unwrap()["allowed"].as_bool()), (200, Some(true)));
    let (_, body) = http(addr, "GET", "/events/2/eligibility?user_id=40", &[], "");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["reason"], "members_only");
    // 2. A questionnaire, evaluated with the LLM (an email planted in the free text).
    let answer = format!("I organise meetups for our community, write to {}", PLANTED[5]);
    let (status, eval) =
        post(addr, "/questionnaires/1/submissions", json!({"user_id": 3, "answers": [1, 0, 2], "free_text": answer}));
    assert_eq!((status, eval["passed"].as_bool()), (200, Some(true)), "{eval}");
    // 5. Publishing an event notifies the members in a background task; publishing it again is
    // refused (it would notify everyone twice).
    assert_eq!(post(addr, "/events/3/publish", json!({})).0, 202);
    assert_eq!(post(addr, "/events/3/publish", json!({})).0, 409);
    let value = obs_runtime::testing::value;
    for _ in 0..500 {
        if value("revel_celery_tasks_total", &[("task_name", "notify_event_open"), ("status", "success")]).is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Membership, a new event, a refund, a cancellation.
    assert_eq!(post(addr, "/organizations/1/membership-requests", json!({"user_id": 40})).1["status"], "approved");
    let (_, created) = post(
        addr,
        "/organizations/1/events",
        json!({"name": "Workshop", "visibility": "private", "tiers": [{"price_cents": 900, "capacity": 10, "payment_method": "at_door"}]}),
    );
    assert!(created["event_id"].as_u64().is_some());
    let manual = json!({"evaluation_mode": "manual", "questions": [{"correct": 1}, {"correct": 0, "fatal": true}], "pass_ratio": 0.5});
    let (status, questionnaire) = post(addr, "/organizations/1/questionnaires", manual);
    assert!(status == 200 && questionnaire["questionnaire_id"].as_u64().is_some(), "{questionnaire}");
    // A manual questionnaire waits for a reviewer: nothing is decided (or counted as evaluated)
    // until one does, once.
    let manual_id = questionnaire["questionnaire_id"].as_u64().unwrap();
    let submission = json!({"user_id": 4, "answers": [1, 0], "free_text": "I run the Rust meetup"});
    let (status, eval) = post(addr, &format!("/questionnaires/{manual_id}/submissions"), submission);
    assert_eq!((status, eval["status"].as_str(), eval["passed"].as_bool()), (200, Some("pending_review"), Some(false)));
    let review = format!("/questionnaires/{manual_id}/submissions/4/review");
    assert_eq!(post(addr, &review, json!({"approved": true})).0, 200);
    assert_eq!(post(addr, &review, json!({"approved": false})).0, 404, "reviewed once");
    let empty = json!({"evaluation_mode": "automatic", "questions": [], "pass_ratio": 0.5});
    assert_eq!(post(addr, "/organizations/1/questionnaires", empty).0, 400, "no question: refused, not counted");
    assert_eq!(signed_webhook(addr, "whsec_test", "charge.refunded", &session), 200);
    assert_eq!(post(addr, "/events/3/cancel", json!({})).0, 200);
    // Cancelling an event cancels its tickets: one cannot be checked in afterwards.
    let meetup = json!({"name": "Meetup", "visibility": "public", "tiers": [{"price_cents": 0, "capacity": 5, "payment_method": "free"}]});
    let (_, meetup) = post(addr, "/organizations/1/events", meetup);
    let (event, tier) = (meetup["event_id"].as_u64().unwrap(), meetup["tier_ids"][0].as_u64().unwrap());
    // Opened in the database, not published: a publication would notify the members a second time.
    rt.block_on(
        sqlx::query("UPDATE events SET status = 'open' WHERE id = $1").bind(event as i64).execute(app.db.sqlx()),
    )
    .unwrap();
    let (status, free) =
        post(addr, &format!("/events/{event}/tiers/{tier}/checkout"), json!({"user_id": 9, "email": "u9@example.org"}));
    assert_eq!(status, 200, "{free}");
    assert_eq!(post(addr, &format!("/events/{event}/cancel"), json!({})).0, 200);
    let cancelled_ticket = free["ticket_id"].as_u64().unwrap();
    assert_eq!(post(addr, &format!("/tickets/{cancelled_ticket}/check-in"), json!({})).0, 403);
    // A user that does not exist gets no ticket; a webhook type Revel does not handle is
    // acknowledged (Stripe retries anything else for days).
    assert_eq!(post(addr, "/events/1/tiers/2/checkout", json!({"user_id": 999_999, "email": "x@example.org"})).0, 404);
    assert_eq!(signed_webhook(addr, "whsec_test", "customer.created", &session), 200);

    assert_eq!(
        post(addr, "/organizations/999/membership-requests", json!({"user_id": 41})).0,
        404,
        "no such organization"
    );
    // Paths no route knows (a scanner's), answered by the default fallback of the router merged
    // last, and a known path with the wrong method: each seen like any other request.
    let scanned = exchange(addr, "GET", "/wp-login.php", &[("x-request-id", "req-scanner")], "");
    assert!(scanned.starts_with("HTTP/1.1 404"), "{scanned}");
    assert!(scanned.to_ascii_lowercase().contains("\r\nx-request-id: req-scanner\r\n"), "{scanned}");
    for i in 0..20 {
        assert_eq!(http(addr, "GET", &format!("/scan/{i}/.env"), &[], "").0, 404);
    }
    assert_eq!(http(addr, "GET", "/stripe/webhook", &[("x-request-id", "req-wrong-method")], "").0, 405);
    // Every error answers JSON, those axum answers itself included, their text and headers kept.
    let error = |response: &str| -> Value {
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.to_ascii_lowercase().contains("\r\ncontent-type: application/json\r\n"), "{response}");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
    };
    assert_eq!(error(&scanned), json!({"error": "Not Found"}));
    let wrong_method = exchange(addr, "GET", "/stripe/webhook", &[], "");
    assert_eq!(error(&wrong_method), json!({"error": "Method Not Allowed"}));
    assert!(wrong_method.to_ascii_lowercase().contains("\r\nallow: post\r\n"), "{wrong_method}");
    let bad_json = exchange(addr, "POST", "/register", &[], "{\"email\":");
    assert!(bad_json.starts_with("HTTP/1.1 400"), "{bad_json}");
    assert!(error(&bad_json)["error"].as_str().unwrap().contains("parse the request body as JSON"), "{bad_json}");
    let (_, exposition) = http(addr, "GET", "/metrics", &[], "");
    // Stripe confirming on its own: Externals whose Stripe simulator posts the signed webhook
    // back to this server (what `revel` does), after a checkout (made after the metrics above
    // were read, which count the test's own webhooks exactly).
    let mut confirming = revel::external::Externals::instant();
    confirming.webhook_url = Some(format!("http://{addr}/stripe/webhook"));
    let confirming = revel::App { externals: std::sync::Arc::new(confirming), ..app.clone() };
    let auto_session = rt.block_on(async {
        let buyer =
            revel::flows::CheckoutRequest { user_id: 5, email: "u5@example.org".into(), card_number: None, cvv: None };
        let sale = revel::flows::checkout(&confirming, 1, 1, &buyer).await.unwrap();
        let ticket = sale.ticket_id as i64;
        let paid = "SELECT p.session_id FROM payments p WHERE p.ticket_id = $1 AND p.status = 'succeeded'";
        for _ in 0..3000 {
            let session: Option<String> =
                sqlx::query_scalar(paid).bind(ticket).fetch_optional(app.db.sqlx()).await.unwrap();
            if let Some(s) = session {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the Stripe simulator's webhook never confirmed the payment");
    });
    // The payment is committed before the webhook's request ends: wait for its root span to be
    // exported (the exporter looks every 200 ms), not for a guessed delay.
    let webhook_exported = |spans: &[Span]| {
        spans.iter().any(|u| {
            u.name == "payment.update_status"
                && format!("{:?}", u.attributes).contains(&auto_session)
                && spans.iter().any(|r| r.trace_id == u.trace_id && r.name == "POST /stripe/webhook")
        })
    };
    // Health checks and scrapes: answered, never traced (Revel's sampling rules), while every
    // request here is otherwise sampled (development).
    for path in ["/healthz", "/metrics"] {
        assert_eq!(http(addr, "GET", path, &[], "").0, 200, "{path}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !webhook_exported(&receiver.spans()) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(guard.shutdown(), "every span exported within the deadline");
    let spans = receiver.wait_for(60, Duration::from_secs(5));

    // The simulator's webhook: a trace of its own at Revel (Stripe sends no trace context), a
    // SERVER root with the webhook's handling under it.
    let update = spans
        .iter()
        .find(|s| s.name == "payment.update_status" && format!("{:?}", s.attributes).contains(&auto_session))
        .expect("the webhook's payment update");
    let root = spans
        .iter()
        .find(|s| s.trace_id == update.trace_id && s.parent_span_id.is_empty())
        .expect("the webhook trace's root");
    assert_eq!((root.name.as_str(), root.kind), ("POST /stripe/webhook", 2), "a SERVER root");
    assert!(spans.iter().any(|s| s.trace_id == root.trace_id && s.name == "stripe.webhook.handle"));

    for name in ["GET /healthz", "GET /metrics"] {
        assert!(!spans.iter().any(|s| s.name == name), "{name} is never sampled (Revel's rules)");
    }
    assert!(
        spans.iter().any(|s| s.name == "GET /events/{event}/eligibility"),
        "other routes at the ratio (1 in development)"
    );

    // --- Span trees.
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let server = spans
        .iter()
        .find(|s| {
            s.name == "POST /events/{event}/tiers/{tier}/checkout"
                && hex(&s.trace_id) == "4bf92f3577b34da6a3ce929d0e0e4736"
        })
        .expect("the checkout continued the caller's trace");
    assert_eq!(hex(&server.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(children(&spans, server), ["ticket.checkout"]);
    let checkout = spans.iter().find(|s| s.name == "ticket.checkout" && s.parent_span_id == server.span_id).unwrap();
    assert_eq!(
        children(&spans, checkout),
        [
            "payment.create",
            "stripe.create_checkout_session",
            "ticket.check_eligibility",
            "ticket.create",
            "ticket.lock_tier"
        ]
    );
    // The checkout's real queries, under the spans that ran them.
    let under = |name: &str| {
        let span = spans.iter().find(|s| s.name == name && s.trace_id == checkout.trace_id).unwrap();
        queries(&spans, span)
    };
    assert_eq!(under("ticket.lock_tier"), ["BEGIN", "SELECT tiers events", "UPDATE tiers", "COMMIT"]);
    assert_eq!(under("ticket.create"), ["BEGIN", "SELECT events", "INSERT tickets", "COMMIT"]);
    assert_eq!(under("payment.create"), ["BEGIN", "SELECT tickets", "INSERT payments", "COMMIT"]);
    assert_eq!(under("ticket.check_eligibility"), ["SELECT events", "SELECT users"]);
    let lock = spans.iter().find(|s| s.name == "ticket.lock_tier" && s.trace_id == checkout.trace_id).unwrap();
    let transaction = spans.iter().find(|s| s.name == "transaction" && s.parent_span_id == lock.span_id).unwrap();
    let end = transaction.attributes.iter().find(|kv| kv.key == "obs.db.transaction.end");
    assert!(end.is_some_and(|kv| format!("{:?}", kv.value).contains("commit")), "{end:?}");
    // Every query: a CLIENT span with the database conventions, and no literal in its text.
    let db_spans: Vec<&Span> = spans.iter().filter(|s| is_db(s) && s.name != "transaction").collect();
    assert!(db_spans.len() > 50, "{}", db_spans.len());
    for s in &db_spans {
        assert_eq!(s.kind, opentelemetry_proto::tonic::trace::v1::span::SpanKind::Client as i32, "{}", s.name);
        let attr = |k: &str| s.attributes.iter().find(|kv| kv.key == k).map(|kv| format!("{:?}", kv.value));
        assert!(attr("db.system.name").is_some_and(|v| v.contains("sqlite")), "{}", s.name);
        let text = attr("db.query.text").unwrap_or_default();
        assert!(!text.contains('\''), "a literal in {}: {text}", s.name);
    }
    // Span kinds: the flow steps internal, the calls out client, the task's two ends producer
    // and consumer (OpenTelemetry's kinds, which Tempo's service graph pairs).
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind as K;
    for (name, kind) in [
        ("ticket.checkout", K::Internal),
        ("stripe.create_checkout_session", K::Internal),
        ("task.trigger_notification", K::Producer),
        ("task.notify_event_open", K::Consumer),
    ] {
        let span = spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(span.kind, kind as i32, "{name}");
    }
    // The call to Stripe: a CLIENT span over HTTP, and the Stripe simulator's own SERVER span
    // its child, in the checkout's trace (the traceparent named the client span).
    let create = spans
        .iter()
        .find(|s| s.name == "stripe.create_checkout_session" && s.trace_id == checkout.trace_id)
        .expect("the Stripe call of the checkout");
    let call = spans.iter().find(|s| s.parent_span_id == create.span_id).expect("its HTTP call");
    assert_eq!((call.name.as_str(), call.kind), ("POST", K::Client as i32));
    let attr = |s: &Span, k: &str| s.attributes.iter().find(|kv| kv.key == k).map(|kv| format!("{:?}", kv.value));
    assert!(attr(call, "url.full").is_some_and(|u| u.contains("/stripe/v1/checkout/sessions")));
    let served = spans.iter().find(|s| s.parent_span_id == call.span_id).expect("the simulator's server span");
    assert_eq!((served.name.as_str(), served.kind), ("POST /stripe/v1/checkout/sessions", K::Server as i32));
    assert_eq!(served.trace_id, checkout.trace_id);
    let eligibility =
        spans.iter().find(|s| s.name == "ticket.check_eligibility" && s.parent_span_id == checkout.span_id).unwrap();
    assert_eq!(
        children(&spans, eligibility),
        [
            "eligibility.check_invitation",
            "eligibility.check_membership",
            "eligibility.check_privileged_access",
            "eligibility.check_questionnaire"
        ]
    );
    // The automatic one (the manual submission's span stops after scoring, awaiting review).
    let evaluate = spans
        .iter()
        .find(|s| s.name == "questionnaire.evaluate" && children(&spans, s).len() > 1)
        .expect("the evaluated submission");
    assert_eq!(
        children(&spans, evaluate),
        [
            "notification.send_evaluation_result",
            "questionnaire.check_fatal_flags",
            "questionnaire.create_evaluation",
            "questionnaire.evaluate_free_text",
            "questionnaire.score_multiple_choice"
        ]
    );
    assert_eq!(children(&spans, one(&spans, "questionnaire.evaluate_free_text")), ["llm.api_call"]);
    // The review that decided (the second one found nothing to review).
    let reviews: Vec<_> =
        spans.iter().filter(|s| s.name == "questionnaire.review").map(|s| children(&spans, s)).collect();
    assert_eq!(reviews.len(), 2);
    assert!(
        reviews.contains(&vec!["notification.send_evaluation_result", "questionnaire.create_evaluation"]),
        "{reviews:?}"
    );
    let gates = spans
        .iter()
        .find(|s| s.name == "event.check_eligibility" && children(&spans, s).len() == 7)
        .expect("all gates");
    assert_eq!(
        children(&spans, gates),
        [
            "gate.event_status",
            "gate.invitation",
            "gate.membership",
            "gate.privileged_access",
            "gate.questionnaire",
            "gate.rsvp_deadline",
            "gate.ticket_availability"
        ]
    );
    let webhook = spans
        .iter()
        .find(|s| s.name == "stripe.webhook.handle" && children(&spans, s).contains(&"ticket.activate"))
        .expect("the completed checkout's webhook");
    assert_eq!(
        children(&spans, webhook),
        [
            "email.send_confirmation",
            "ics.generate",
            "payment.update_status",
            "pdf.generate",
            "stripe.verify_signature",
            "ticket.activate"
        ]
    );
    let publish = spans
        .iter()
        .find(|s| s.name == "event.publish" && children(&spans, s).contains(&"task.trigger_notification"))
        .expect("the accepted publication");
    let refused = spans.iter().find(|s| s.name == "event.publish" && s.span_id != publish.span_id).unwrap();
    assert_eq!(refused.status.as_ref().map(|s| s.code), Some(2), "the second publication failed");
    assert_eq!(children(&spans, publish), ["event.update_status", "task.trigger_notification"]);
    let task = one(&spans, "task.notify_event_open");
    assert!(task.parent_span_id.is_empty(), "the task starts a trace of its own");
    let trigger = one(&spans, "task.trigger_notification");
    assert_eq!(
        (&task.links[0].trace_id, &task.links[0].span_id),
        (&trigger.trace_id, &trigger.span_id),
        "linked to the request that enqueued it"
    );
    assert_eq!(
        children(&spans, task),
        ["email.render_batch", "email.send_batch", "event.details", "notification.get_eligible_users"]
    );

    // --- Metrics.
    let metric = |series: &str| -> f64 {
        exposition
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {series} in\n{exposition}"))
    };
    // Every metric of the catalog was recorded by some flow (a histogram through its `_count`),
    // but Redis's (no Redis here: tests/redis.rs) and the full queue's (src/tasks.rs).
    let elsewhere =
        ["revel_redis_command_duration_seconds", "revel_cache_requests_total", "revel_celery_tasks_dropped_total"];
    let silent: Vec<&str> = obs_runtime::catalog!()
        .iter()
        .map(|def| def.name)
        .filter(|name| !elsewhere.contains(name))
        .filter(|name| {
            !exposition.lines().any(|l| {
                l.strip_prefix(name)
                    .map(|rest| rest.strip_prefix("_count").unwrap_or(rest))
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
            })
        })
        .collect();
    assert!(silent.is_empty(), "catalog metrics no flow recorded: {silent:?}");
    assert_eq!(
        metric(r#"revel_tickets_sold_total{organization_id="1",event_id="1",tier_id="1",payment_method="online"}"#),
        1.0
    );
    assert_eq!(
        metric(r#"revel_tickets_sold_total{organization_id="1",event_id="1",tier_id="2",payment_method="free"}"#),
        1.0
    );
    assert_eq!(metric(r#"revel_payments_total{organization_id="1",status="succeeded",payment_method="online"}"#), 1.0);
    assert_eq!(metric(r#"revel_payments_total{organization_id="1",status="refunded",payment_method="online"}"#), 1.0);
    assert_eq!(metric(r#"revel_payments_total{organization_id="1",status="pending",payment_method="online"}"#), 1.0);
    assert_eq!(metric(r#"revel_tickets_cancelled_total{organization_id="1",event_id="1",reason="refund"}"#), 1.0);
    let by_cancellation =
        format!(r#"revel_tickets_cancelled_total{{organization_id="1",event_id="{event}",reason="event_cancelled"}}"#);
    assert_eq!(metric(&by_cancellation), 1.0);
    assert_eq!(
        metric(r#"revel_stripe_webhooks_processed_total{webhook_type="other",status="success"}"#),
        1.0,
        "acknowledged"
    );
    assert_eq!(metric(r#"revel_revenue_total{organization_id="1",currency="EUR"}"#), 25.0);
    assert_eq!(metric(r#"revel_platform_fees_total{organization_id="1",currency="EUR"}"#), 1.25);
    assert_eq!(metric(r#"revel_tickets_checked_in_total{organization_id="1",event_id="1"}"#), 1.0);
    assert_eq!(
        metric(r#"revel_emails_sent_total{email_type="confirmation",status="success"}"#),
        1.0,
        "once, despite the duplicate"
    );
    assert_eq!(
        metric(r#"revel_stripe_webhooks_processed_total{webhook_type="checkout.session.completed",status="failure"}"#),
        1.0
    );
    assert_eq!(
        metric(
            r#"revel_questionnaire_evaluations_total{organization_id="1",evaluation_mode="hybrid",result="approved"}"#
        ),
        1.0
    );
    assert_eq!(metric(r#"revel_questionnaire_pass_rate{organization_id="1",questionnaire_id="1"}"#), 1.0);
    assert!(metric(r#"revel_llm_tokens_consumed_total{model="gpt-4o-mini",evaluation_backend="openai"}"#) > 100.0);
    assert_eq!(metric(r#"revel_users_registered_total{registration_method="email"}"#), 1.0);
    // Ana, and users 3, 4, 5, 6, 9 and 40 (41 asked to join an organization that does not exist;
    // 999999 does not exist).
    assert_eq!(metric("revel_users_active_weekly "), 7.0);
    assert_eq!(metric(r#"revel_questionnaires_created_total{organization_id="1",evaluation_mode="manual"}"#), 1.0);
    assert_eq!(
        metric(
            r#"revel_questionnaire_evaluations_total{organization_id="1",evaluation_mode="manual",result="approved"}"#
        ),
        1.0
    );
    assert!(!exposition.contains(r#"evaluation_mode="automatic"}"#), "the refused questionnaire is not counted");
    assert_eq!(metric(r#"revel_membership_requests_total{organization_id="1",status="approved"}"#), 1.0);
    assert_eq!(metric(r#"revel_organization_members{organization_id="1"}"#), 20.0);
    assert_eq!(
        metric(r#"revel_events_created_total{organization_id="1",event_type="private",has_tickets="true"}"#),
        1.0
    );
    assert_eq!(
        metric(r#"revel_events_cancelled_total{organization_id="1",cancellation_reason="organizer"}"#),
        2.0,
        "event 3 and the meetup"
    );
    assert_eq!(metric(r#"revel_celery_tasks_total{task_name="notify_event_open",status="success"}"#), 1.0);
    assert_eq!(
        metric(r#"revel_emails_sent_total{email_type="notification",status="success"}"#),
        21.0,
        "the 19 members at publication, and the two evaluation results (automatic, reviewed)"
    );
    assert_eq!(
        metric(
            r#"revel_api_requests_total{method="POST",endpoint="/events/{event}/tiers/{tier}/checkout",status_code="200"}"#
        ),
        3.0,
        "Ana's, user 6's and user 9's"
    );
    assert_eq!(metric(r#"revel_api_requests_total{method="POST",endpoint="/stripe/webhook",status_code="401"}"#), 1.0);
    assert_eq!(metric(r#"revel_api_requests_total{method="GET",endpoint="unmatched",status_code="404"}"#), 21.0);
    assert_eq!(metric(r#"revel_api_requests_total{method="GET",endpoint="/stripe/webhook",status_code="405"}"#), 2.0);
    let scanner_span = spans
        .iter()
        .find(|s| s.name == "GET" && format!("{:?}", s.attributes).contains("/wp-login.php"))
        .expect("a server span for the unknown path");
    assert_eq!(scanner_span.kind, 2, "SERVER");
    assert!(spans.iter().any(|s| s.name == "GET /stripe/webhook"), "the 405 is named after its route");

    // --- Logs: request context and the trace ids of the exported spans.
    let text = logs.text();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let in_checkout: Vec<&Value> = lines.iter().filter(|l| l["request_id"] == "req-checkout").collect();
    assert!(in_checkout.len() >= 2, "the checkout line and the access line: {in_checkout:#?}");
    for l in &in_checkout {
        assert_eq!(l["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(l["endpoint"], "/events/{event}/tiers/{tier}/checkout");
        assert_eq!(l["user_id"], ana.to_string());
    }
    let access = |id: &str| {
        lines
            .iter()
            .find(|l| l["request_id"] == id && l["target"] == "obs::access")
            .unwrap_or_else(|| panic!("no access line for {id}"))
    };
    assert_eq!(
        (access("req-scanner")["endpoint"].as_str(), access("req-scanner")["status_code"].as_u64()),
        (Some("unmatched"), Some(404))
    );
    assert_eq!(access("req-wrong-method")["endpoint"], "/stripe/webhook");
    assert_eq!(access("req-checkout")["endpoint"], "/events/{event}/tiers/{tier}/checkout");
    let task_line = lines
        .iter()
        .find(|l| l["task_name"] == "notify_event_open" && l["message"] == "event-open notifications sent")
        .unwrap();
    assert_eq!(task_line["trace_id"], hex(&task.trace_id));
    assert_eq!(task_line["queue"], "notifications");

    // --- The seed's three domain events, each with the fields the seed lists.
    let event = |message: &str, fields: &[&str]| -> &Value {
        let line = lines.iter().find(|l| l["message"] == message).unwrap_or_else(|| panic!("no {message} line"));
        for f in fields {
            assert!(!line[f].is_null(), "{message} without {f}: {line}");
        }
        line
    };
    let session = event(
        "stripe_checkout_session_created",
        &["payment_id", "ticket_id", "organization_id", "event_id", "amount_cents", "currency", "stripe_session_id"],
    );
    assert_eq!(session["request_id"], "req-checkout");
    assert_eq!(session["currency"], "EUR");
    assert!(session["stripe_session_id"].as_str().is_some_and(|s| s.starts_with("cs_")), "{session}");
    let started = event(
        "questionnaire_evaluation_started",
        &["submission_id", "questionnaire_id", "organization_id", "evaluation_mode", "evaluator_backend"],
    );
    assert!(started["submission_id"].as_i64().is_some_and(|id| id > 0), "{started}");
    let published = event("event_published", &["event_id", "organization_id", "event_type", "has_tickets"]);
    assert!(published["has_tickets"].is_boolean(), "{published}");
    // The ids the seed puts on spans.
    let span_attr = |name: &str, key: &str| {
        spans.iter().filter(|s| s.name == name).any(|s| s.attributes.iter().any(|kv| kv.key == key))
    };
    for (name, key) in [
        ("ticket.checkout", "organization_id"),
        ("payment.create", "payment_id"),
        ("payment.create", "stripe_session_id"),
        ("payment.update_status", "payment_id"),
        ("questionnaire.evaluate", "submission_id"),
        ("event.publish", "organization_id"),
    ] {
        assert!(span_attr(name, key), "{name} without {key}");
    }

    // --- No planted secret anywhere.
    let exported = format!("{spans:?}");
    for secret in PLANTED {
        assert!(!text.contains(secret), "{secret} in the logs");
        assert!(!exported.contains(secret), "{secret} in the spans");
        assert!(!exposition.contains(secret), "{secret} in the metrics");
    }

    // --- The viewer, as Revel serves it: the checkout's trace listed, its waterfall in the
    // order the spans ran, its log lines beside it; no secret on any page; its own requests
    // are not traffic.
    let id = hex(&checkout.trace_id);
    let get = |path: &str| {
        let (status, body) = http(addr, "GET", path, &[], "");
        assert_eq!(status, 200, "{path}: {body}");
        body
    };
    let listed: Value = serde_json::from_str(&get("/debug/obs/api/traces?name=ticket.checkout")).unwrap();
    assert!(
        listed.as_array().unwrap().iter().any(|t| t["trace_id"] == id.as_str()),
        "the checkout is listed: {listed}"
    );
    let trace: Value = serde_json::from_str(&get(&format!("/debug/obs/api/traces/{id}"))).unwrap();
    let checkout_id = hex(&checkout.span_id);
    let under: Vec<&str> = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["parent_span_id"] == checkout_id.as_str())
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        under,
        [
            "ticket.check_eligibility",
            "ticket.lock_tier",
            "stripe.create_checkout_session",
            "ticket.create",
            "payment.create"
        ],
        "the waterfall's order is the order they ran"
    );
    assert!(
        trace["logs"].as_array().unwrap().iter().any(|l| l["line"]["message"] == "checkout"),
        "the trace's log lines beside it: {}",
        trace["logs"]
    );
    let pages = [
        "/debug/obs".to_owned(),
        format!("/debug/obs/traces/{id}"),
        "/debug/obs/logs".to_owned(),
        "/debug/obs/metrics".to_owned(),
        "/debug/obs/api/logs".to_owned(),
        "/debug/obs/api/metrics".to_owned(),
    ];
    for page in &pages {
        let body = get(page);
        for secret in PLANTED {
            assert!(!body.contains(secret), "{secret} on {page}");
        }
    }
    assert!(get(&format!("/debug/obs/traces/{id}")).contains("ticket.lock_tier"));
    let task_page = get(&format!("/debug/obs/traces/{}", hex(&task.trace_id)));
    assert!(
        task_page.contains(&format!("href=\"/debug/obs/traces/{}\"", hex(&trigger.trace_id))),
        "a task's link jumps to the request that enqueued it"
    );
    let (_, exposition) = http(addr, "GET", "/metrics", &[], "");
    assert!(!exposition.contains("/debug/obs"), "the viewer's requests are not counted as the service's");
    assert!(!logs.text().contains("/debug/obs"), "nor logged");
}
