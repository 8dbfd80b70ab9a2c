//! The HTTP layer on an axum app, driven in-process: request ids honoured, generated and
//! sanitised, on success, error and panic responses; `traceparent` continued by a server span;
//! route-template labels; unmatched routes collapsed; context on every log line.

#[path = "support/capture.rs"]
mod capture;
#[path = "support/otlp.rs"]
mod otlp;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path};
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use obs_runtime::http::ObsLayer;
use obs_runtime::testing::value;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use serde_json::Value;
use tower::ServiceExt as _;

#[obs_runtime::traced_span("ticket.checkout", fields(event_id = id))]
async fn checkout(id: u64) -> Vec<(&'static str, String)> {
    tokio::task::yield_now().await;
    tracing::info!(event_id = id, "checkout for ana@example.org");
    obs_runtime::trace::outgoing_headers()
}

async fn panics() -> &'static str {
    if std::hint::black_box(true) {
        panic!("handler bug for ana@example.org");
    }
    "unreachable"
}

fn app() -> Router {
    Router::new()
        .route(
            "/events/{id}/checkout",
            post(|Path(id): Path<u64>| async move {
                let headers = checkout(id).await;
                obs_runtime::http::set_user_id("42");
                tracing::info!("after user is known");
                format!("{headers:?}")
            }),
        )
        .route("/fail", get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down") }))
        .route("/tenant", get(|| async { format!("{:?}", obs_runtime::trace::baggage("tenant")) }))
        .route("/panic", get(panics))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            })
            .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                Duration::from_millis(20),
            )),
        )
        .layer(
            ObsLayer::new()
                .request_metrics(
                    obs_runtime::metric_def!("lib_http_requests_total"),
                    obs_runtime::metric_def!("lib_http_request_duration_seconds"),
                )
                .trust_proxies(["10.0.0.0/8"])
                .unwrap()
                .user_id(|req| req.headers.get("x-user").and_then(|v| v.to_str().ok()).map(str::to_owned)),
        )
}

async fn send(req: Request<Body>) -> axum::response::Response {
    app().oneshot(req).await.unwrap()
}

fn header(r: &axum::response::Response) -> String {
    r.headers().get("x-request-id").expect("every response carries X-Request-ID").to_str().unwrap().to_owned()
}

#[test]
fn requests_through_the_layer() {
    let (receiver, url) = otlp::Receiver::start();
    let (captured, config) = capture::config(url);
    let guard = obs_runtime::init(config.baggage_attributes(["tenant", "user.email"])).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    // 1. Honoured, continued, context bound.
    let mut req = Request::post("/events/7/checkout")
        .header("x-request-id", "req-abc.1")
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .header("tracestate", "rojo=00f067aa0ba902b7")
        .header("user-agent", "curl/8.5")
        .header("x-forwarded-for", "203.0.113.9, 10.1.1.1")
        .body(Body::empty())
        .unwrap();
    req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 2], 5555))));
    let ok = rt.block_on(send(req));
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(header(&ok), "req-abc.1");
    let body = rt.block_on(axum::body::to_bytes(ok.into_body(), 1 << 16)).unwrap();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(body.contains("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "outgoing traceparent continues the trace: {body}");
    assert!(body.contains("rojo=00f067aa0ba902b7"), "tracestate passed on: {body}");

    // 1b. W3C header fields as a request may carry them: `tracestate` fields are one list; two
    // `traceparent` fields are invalid, and a new trace starts.
    let two_states = Request::post("/events/8/checkout")
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .header("tracestate", "rojo=00f067aa0ba902b7")
        .header("tracestate", "congo=t61rcWkgMzE")
        .header("baggage", "userId=alice ; source=web")
        .header("baggage", "isProduction=false")
        .body(Body::empty())
        .unwrap();
    let body = rt.block_on(axum::body::to_bytes(rt.block_on(send(two_states)).into_body(), 1 << 16)).unwrap();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(body.contains("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"), "combined: {body}");
    // W3C Baggage is passed on to the request's outgoing calls (OpenTelemetry's default
    // propagators), its fields combined.
    assert!(body.contains(r#"("baggage", "userId=alice;source=web,isProduction=false")"#), "baggage: {body}");
    // 1c. Baggage read from code; the allow-listed keys copied, scrubbed, onto the request's span
    // and log lines (checked below), the others nowhere.
    let with_baggage = Request::get("/tenant")
        .header("x-request-id", "req-baggage")
        .header("baggage", "tenant=acme,user.email=ana%40example.org,secret=s3cr3t")
        .body(Body::empty())
        .unwrap();
    let body = rt.block_on(axum::body::to_bytes(rt.block_on(send(with_baggage)).into_body(), 1 << 16)).unwrap();
    assert_eq!(String::from_utf8(body.to_vec()).unwrap(), r#"Some("acme")"#);
    let two_parents = Request::post("/events/9/checkout")
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .body(Body::empty())
        .unwrap();
    let body = rt.block_on(axum::body::to_bytes(rt.block_on(send(two_parents)).into_body(), 1 << 16)).unwrap();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        !body.contains("4bf92f3577b34da6a3ce929d0e0e4736") && !body.contains("0af7651916cd43dd8448eb211c80319c"),
        "a new trace: {body}"
    );
    // A trace that starts here has a random id: the level 2 `random` flag is sent.
    assert!(body.contains("-03\"") || body.contains("-02\""), "random flag: {body}");

    // 2. Generated, and replaced when malformed (never echoed).
    let generated = rt.block_on(send(Request::get("/fail").body(Body::empty()).unwrap()));
    assert_eq!(generated.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&generated).len(), 36);
    for bad in ["<script>alert(1)</script>", &"x".repeat(200), "a b"] {
        let r = rt.block_on(send(Request::get("/fail").header("x-request-id", bad).body(Body::empty()).unwrap()));
        assert_ne!(header(&r), bad);
        assert_eq!(header(&r).len(), 36);
    }
    let mut raw = Request::get("/fail").body(Body::empty()).unwrap();
    raw.headers_mut().insert("x-request-id", axum::http::HeaderValue::from_bytes(b"\xff\xfe").unwrap());
    raw.headers_mut().insert("user-agent", axum::http::HeaderValue::from_bytes(b"bot\xff").unwrap());
    assert_eq!(header(&rt.block_on(send(raw))).len(), 36);

    // 3. A panicking handler: a 500 with the header, the service keeps serving.
    let panicked =
        rt.block_on(send(Request::get("/panic").header("x-request-id", "req-panic").body(Body::empty()).unwrap()));
    assert_eq!(panicked.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(header(&panicked), "req-panic");

    // A timeout inside the layer: the 408 carries the request id too.
    let slow = rt.block_on(send(Request::get("/slow").header("x-request-id", "req-slow").body(Body::empty()).unwrap()));
    assert_eq!(slow.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(header(&slow), "req-slow");

    // 4. Unmatched paths share one endpoint label, however many; personal data in a path is
    // scrubbed, percent-encoded or not.
    let r = rt.block_on(send(
        Request::get("/users/ana%40example.org").header("x-request-id", "req-pii").body(Body::empty()).unwrap(),
    ));
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    for i in 0..49 {
        let r = rt.block_on(send(Request::get(format!("/wp-admin/{i}.php")).body(Body::empty()).unwrap()));
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(header(&r).len(), 36);
    }

    // 5. A service without axum's router: the route template comes from `ObsLayer::route`.
    let plain = ObsLayer::new()
        .access_log(false)
        .route(|req| req.uri.path().strip_prefix("/items/").map(|_| "/items/{id}".to_owned()));
    let items = tower::ServiceBuilder::new().layer(plain).service(tower::service_fn(|_: Request<Body>| async {
        Ok::<_, std::convert::Infallible>(axum::response::Response::new(Body::empty()))
    }));
    let r = rt.block_on(items.oneshot(Request::get("/items/42").body(Body::empty()).unwrap())).unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let requests = |m: &str, e: &str, s: &str| {
        value("lib_http_requests_total", &[("method", m), ("endpoint", e), ("status_code", s)]).unwrap_or(0.0)
    };
    assert_eq!(requests("POST", "/events/{id}/checkout", "200"), 3.0);
    assert_eq!(requests("GET", "/fail", "503"), 5.0);
    assert_eq!(requests("GET", "/panic", "500"), 1.0);
    assert_eq!(requests("GET", "unmatched", "404"), 50.0);
    assert_eq!(requests("GET", "/slow", "408"), 1.0);
    assert_eq!(requests("GET", "/tenant", "200"), 1.0);
    assert_eq!(obs_runtime::testing::series_count("lib_http_requests_total"), 6);
    let hist = obs_runtime::testing::histogram(
        "lib_http_request_duration_seconds",
        &[("method", "GET"), ("endpoint", "unmatched")],
    )
    .unwrap();
    assert_eq!(hist.count, 50);

    assert!(guard.shutdown());
    let spans = receiver.wait_for(65, Duration::from_secs(5));
    assert_eq!(
        spans.len(),
        65,
        "2 for each of 3 checkouts, 5 failures, 1 panic, 1 timeout, 50 unmatched, 1 item, 1 with baggage"
    );
    let item = spans.iter().find(|s| s.name == "GET /items/{id}").expect("the route from ObsLayer::route");
    assert!(item.attributes.iter().any(|kv| kv.key == "http.route"));
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let server = spans
        .iter()
        .find(|s| {
            s.name == "POST /events/{id}/checkout" && format!("{:?}", s.attributes).contains("/events/7/checkout")
        })
        .expect("the server span");
    assert_eq!(hex(&server.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&server.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert_eq!(server.flags & 0x300, 0x300, "the parent is marked remote");
    assert_eq!(server.trace_state, "rojo=00f067aa0ba902b7");
    let attr = |s: &opentelemetry_proto::tonic::trace::v1::Span, k: &str| {
        s.attributes.iter().find(|kv| kv.key == k).and_then(|kv| kv.value.clone()).and_then(|v| v.value)
    };
    assert_eq!(attr(server, "http.route"), Some(AnyValue::StringValue("/events/{id}/checkout".into())));
    assert_eq!(attr(server, "http.request.method"), Some(AnyValue::StringValue("POST".into())));
    assert_eq!(attr(server, "url.path"), Some(AnyValue::StringValue("/events/7/checkout".into())));
    assert_eq!(attr(server, "http.response.status_code"), Some(AnyValue::IntValue(200)));
    assert_eq!(attr(server, "client.address"), Some(AnyValue::StringValue("203.0.113.9".into())));
    assert_eq!(attr(server, "user_agent.original"), Some(AnyValue::StringValue("curl/8.5".into())));
    let tenant = spans.iter().find(|s| s.name == "GET /tenant").unwrap();
    assert_eq!(attr(tenant, "tenant"), Some(AnyValue::StringValue("acme".into())));
    assert_eq!(attr(tenant, "user.email"), Some(AnyValue::StringValue("[EMAIL]".into())));
    assert_eq!(attr(tenant, "secret"), None, "not allow-listed");
    assert_eq!(attr(server, "tenant"), None, "a request without baggage has none");
    let child = spans.iter().find(|s| s.name == "ticket.checkout" && s.trace_id == server.trace_id).unwrap();
    assert_eq!(child.parent_span_id, server.span_id, "handler spans are children of the server span");
    for name in ["GET /fail", "GET /panic"] {
        let failed = spans.iter().find(|s| s.name == name).unwrap();
        assert_eq!(failed.status.as_ref().unwrap().code, SpanStatus::Error as i32, "{name}");
    }
    let panic_span = spans.iter().find(|s| s.name == "GET /panic").unwrap();
    assert_eq!(panic_span.status.as_ref().unwrap().message, "panicked: handler bug for [EMAIL]");
    // No route: the span is named by the method alone and has no `http.route` (the metrics' and
    // logs' `endpoint` is still `unmatched`).
    let unmatched = spans.iter().find(|s| s.name == "GET").expect("unmatched requests' spans");
    assert!(unmatched.attributes.iter().all(|kv| kv.key != "http.route"), "{:?}", unmatched.attributes);
    assert!(unmatched.attributes.iter().any(|kv| kv.key == "url.path"));

    // Log lines: the request context on every line of the request, and one access line each.
    let text = captured.text();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let in_request: Vec<&Value> = lines.iter().filter(|l| l["request_id"] == "req-abc.1").collect();
    assert_eq!(in_request.len(), 3, "{in_request:#?}");
    for l in &in_request {
        assert_eq!(l["endpoint"], "/events/{id}/checkout");
        assert_eq!(l["method"], "POST");
        assert_eq!(l["path"], "/events/7/checkout");
        assert_eq!(l["ip_address"], "203.0.113.9");
        assert_eq!(l["user_agent"], "curl/8.5");
        assert_eq!(l["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    }
    assert_eq!(in_request[0]["message"], "checkout for [EMAIL]");
    assert_eq!(in_request[0]["span_id"], hex(&child.span_id));
    assert_eq!(in_request[1]["user_id"], "42", "set_user_id from the handler");
    let access = in_request[2];
    assert_eq!((access["target"].as_str(), access["status_code"].as_u64()), (Some("obs::access"), Some(200)));
    assert!(access["duration_ms"].as_f64().is_some());
    assert_eq!(access["span_id"], hex(&server.span_id));
    let panic_line = lines.iter().find(|l| l["request_id"] == "req-panic").unwrap();
    assert_eq!(panic_line["level"], "ERROR");
    assert_eq!(panic_line["error"], "panicked: handler bug for [EMAIL]");
    let baggage_line = lines.iter().find(|l| l["request_id"] == "req-baggage").unwrap();
    assert_eq!((&baggage_line["tenant"], &baggage_line["user.email"]), (&Value::from("acme"), &Value::from("[EMAIL]")));
    assert!(baggage_line.get("secret").is_none());
    assert!(!text.contains("s3cr3t") && !format!("{spans:?}").contains("s3cr3t"), "a key not allow-listed is nowhere");
    let pii = lines.iter().find(|l| l["request_id"] == "req-pii").unwrap();
    assert_eq!(pii["path"], "/users/[EMAIL]");
    let invalid_ua = lines.iter().find(|l| l["user_agent"] == "[invalid]");
    assert!(invalid_ua.is_some(), "a non-UTF-8 User-Agent is recorded as [invalid]");
    assert!(!text.contains("<script>"), "a malformed request id is never logged");
    assert!(!text.contains("ana@example.org") && !text.contains("ana%40example.org"));
    assert!(!format!("{spans:?}").contains("ana%40example.org"), "nor in url.path");
}
