//! Outgoing HTTP calls through `obs_runtime::client::ClientTelemetry` (reqwest-middleware), to a
//! real axum server behind obs's HTTP layer on loopback, both exporting to one OTLP receiver that
//! decodes with the official types: each call is a CLIENT span under the span that made it, with
//! OpenTelemetry's HTTP client attributes; the server's span is the child of **the client span**
//! (the header names it, not the caller's span, and replaces a header the caller set); 5xx and a
//! refused connection fail the span; a second attempt carries its resend count; the duration
//! histogram is labelled by method, server and status class. The same through the tower layer
//! (`ClientTelemetryLayer`) around hyper-util's client.

#[path = "support/capture.rs"]
mod capture;
#[path = "support/otlp.rs"]
mod otlp;

use axum::Router;
use axum::http::{Extensions, StatusCode};
use axum::routing::{get, post};
use obs_runtime::client::{ClientTelemetry, ClientTelemetryLayer};
use obs_runtime::http::ObsLayer;
use obs_runtime::testing::histogram;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as OtlpStatus;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};

use otlp::{int, string};

/// Sends each request twice (as a retry middleware does after a failure), the same extensions.
struct TwoAttempts;

#[async_trait::async_trait]
impl Middleware for TwoAttempts {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let again = req.try_clone().expect("a body-less request clones");
        let _ = next.clone().run(req, extensions).await?;
        next.run(again, extensions).await
    }
}

#[obs_runtime::traced_span("checkout")]
async fn checkout(client: &ClientWithMiddleware, retrying: &ClientWithMiddleware, base: &str) -> Vec<u16> {
    let mut statuses = Vec::new();
    // Query values and userinfo must not reach the span; a traceparent set by hand is replaced.
    let created = client
        .post(format!("{base}/v1/sessions?customer=ana%40example.org&limit=3"))
        .header("traceparent", "00-11111111111111111111111111111111-2222222222222222-01")
        .send()
        .await
        .unwrap();
    statuses.push(created.status().as_u16());
    statuses.push(client.get(format!("{base}/unavailable")).send().await.unwrap().status().as_u16());
    statuses.push(retrying.get(format!("{base}/ok")).send().await.unwrap().status().as_u16());
    // Nothing listens on port 1: refused (a name in the query, which reqwest's message quotes).
    assert!(client.get("http://127.0.0.1:1/nothing?name=Ana+Silva").send().await.is_err());
    // Given up on by the caller before an answer (the server never answers): cancelled.
    let slow = client.get(format!("{base}/never")).send();
    assert!(tokio::time::timeout(std::time::Duration::from_millis(50), slow).await.is_err());
    statuses
}

type Hyper = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<axum::body::Bytes>,
>;

#[obs_runtime::traced_span("tower_calls")]
async fn tower_calls(base: &str) -> Vec<Result<u16, String>> {
    use tower::ServiceExt as _;
    let client: Hyper = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let service = tower::Layer::layer(&ClientTelemetryLayer::new(ClientTelemetry::new()), client);
    let mut out = Vec::new();
    for uri in [format!("{base}/ok?session=cs_secret"), format!("{base}/unavailable"), "http://127.0.0.1:1/".into()] {
        let req = axum::http::Request::get(uri).body(http_body_util::Empty::new()).unwrap();
        out.push(service.clone().oneshot(req).await.map(|r| r.status().as_u16()).map_err(|e| e.to_string()));
    }
    out
}

#[test]
fn outgoing_calls_are_client_spans_parenting_the_server_span() {
    let (receiver, url) = otlp::Receiver::start();
    let (_captured, config) = capture::config(url);
    let guard = obs_runtime::init(config).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let statuses = rt.block_on(async {
        let app = Router::new()
            .route("/v1/sessions", post(|| async { "created" }))
            .route("/unavailable", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
            .route("/ok", get(|| async { "ok" }))
            .route("/never", get(std::future::pending::<&'static str>))
            .layer(ObsLayer::new().access_log(false));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let telemetry = ClientTelemetry::new().duration(obs_runtime::metric_def!("lib_http_client_duration_seconds"));
        let client = ClientBuilder::new(reqwest::Client::new()).with(telemetry.clone()).build();
        let retrying = ClientBuilder::new(reqwest::Client::new()).with(TwoAttempts).with(telemetry).build();
        let statuses = checkout(&client, &retrying, &base).await;
        (statuses, tower_calls(&base).await)
    });
    let (statuses, towered) = statuses;
    assert_eq!(statuses, [200, 503, 200]);
    assert_eq!((&towered[0], &towered[1]), (&Ok(200), &Ok(503)));
    assert!(towered[2].is_err(), "refused");

    let count = |labels: &[(&str, &str)]| histogram("lib_http_client_duration_seconds", labels).map(|h| h.count);
    assert_eq!(count(&[("method", "POST"), ("server", "127.0.0.1"), ("status_class", "2xx")]), Some(1));
    assert_eq!(count(&[("method", "GET"), ("server", "127.0.0.1"), ("status_class", "5xx")]), Some(1));
    assert_eq!(count(&[("method", "GET"), ("server", "127.0.0.1"), ("status_class", "2xx")]), Some(2), "two attempts");
    assert_eq!(
        count(&[("method", "GET"), ("server", "127.0.0.1"), ("status_class", "error")]),
        Some(2),
        "the refused call and the cancelled one"
    );

    // A server span ends just after its response is sent: wait until the six the server made
    // (POST, 503 and two /ok through reqwest; /ok and 503 through tower) are exported.
    let servers = |spans: &[Span]| spans.iter().filter(|s| s.kind == SpanKind::Server as i32).count();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while servers(&receiver.spans()) < 6 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(guard.shutdown());
    let spans = receiver.spans();
    // The six, and the never-answered request's when its cancellation was seen in time.
    assert!(servers(&spans) >= 6);
    let checkout = spans.iter().find(|s| s.name == "checkout").expect("the caller's span");
    let tower = spans.iter().find(|s| s.name == "tower_calls").expect("the tower caller's span");
    let clients: Vec<&Span> =
        spans.iter().filter(|s| s.kind == SpanKind::Client as i32 && s.parent_span_id == checkout.span_id).collect();
    assert_eq!(clients.len(), 6, "{:?}", clients.iter().map(|s| &s.name).collect::<Vec<_>>());
    // The cancelled call: failed, `cancelled`.
    let cancelled = clients.iter().find(|s| string(s, "url.full").is_some_and(|u| u.ends_with("/never"))).unwrap();
    assert_eq!(string(cancelled, "error.type").as_deref(), Some("cancelled"));
    assert_eq!(cancelled.status.as_ref().map(|s| s.code), Some(OtlpStatus::Error as i32));
    // No name from a URL anywhere, the refused call's error message included.
    assert!(!format!("{spans:?}").contains("Silva"), "a query value left in a span");
    for c in &clients {
        assert_eq!(c.parent_span_id, checkout.span_id, "a child of the span that made the call");
        assert_eq!(c.trace_id, checkout.trace_id);
    }

    // The POST: named by its method, the conventions' attributes, no query value or address.
    let post = clients.iter().find(|s| s.name == "POST").unwrap();
    assert_eq!(string(post, "http.request.method").as_deref(), Some("POST"));
    assert_eq!(string(post, "server.address").as_deref(), Some("127.0.0.1"));
    assert!(int(post, "server.port").is_some_and(|p| p > 1));
    let full = string(post, "url.full").unwrap();
    assert!(full.ends_with("/v1/sessions?customer=REDACTED&limit=REDACTED"), "{full}");
    assert!(!format!("{spans:?}").contains("ana%40example.org"), "a query value left in a span");
    assert_eq!(int(post, "http.response.status_code"), Some(200));
    assert!(post.status.as_ref().is_none_or(|s| s.code != OtlpStatus::Error as i32));

    // The server's span: in the same trace, a child of the client span (not of `checkout`, and
    // not of the traceparent set by hand).
    let server = spans.iter().find(|s| s.name == "POST /v1/sessions").expect("the server span");
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert_eq!(server.trace_id, checkout.trace_id);
    assert_eq!(server.parent_span_id, post.span_id);

    // 503: failed, error.type the status code; its server span under it too.
    let unavailable = clients.iter().find(|s| int(s, "http.response.status_code") == Some(503)).unwrap();
    assert_eq!(unavailable.status.as_ref().map(|s| s.code), Some(OtlpStatus::Error as i32));
    assert_eq!(string(unavailable, "error.type").as_deref(), Some("503"));
    assert!(
        spans.iter().any(|s| s.name == "GET /unavailable" && s.parent_span_id == unavailable.span_id),
        "the 503's server span under its client span"
    );

    // The retried GET: two spans, the second with its resend count.
    let attempts: Vec<&&Span> =
        clients.iter().filter(|s| string(s, "url.full").is_some_and(|u| u.ends_with("/ok"))).collect();
    assert_eq!(attempts.len(), 2);
    let resends: Vec<Option<i64>> = attempts.iter().map(|s| int(s, "http.request.resend_count")).collect();
    assert!(resends.contains(&None) && resends.contains(&Some(1)), "{resends:?}");

    // The refused connection: failed, error.type connect, no status code.
    let refused = clients.iter().find(|s| string(s, "url.full").is_some_and(|u| u.contains(":1/"))).unwrap();
    assert!(string(refused, "url.full").is_some_and(|u| u.ends_with("/nothing?name=REDACTED")));
    assert_eq!(string(refused, "error.type").as_deref(), Some("connect"));
    assert_eq!(refused.status.as_ref().map(|s| s.code), Some(OtlpStatus::Error as i32));
    assert_eq!(int(refused, "http.response.status_code"), None);

    // The tower layer around hyper-util's client: the same spans.
    let towered: Vec<&Span> =
        spans.iter().filter(|s| s.kind == SpanKind::Client as i32 && s.parent_span_id == tower.span_id).collect();
    assert_eq!(towered.len(), 3);
    let ok = towered.iter().find(|s| int(s, "http.response.status_code") == Some(200)).unwrap();
    assert_eq!(ok.name, "GET");
    assert!(
        string(ok, "url.full").is_some_and(|u| u.ends_with("/ok?session=REDACTED")),
        "{:?}",
        string(ok, "url.full")
    );
    assert_eq!(string(ok, "server.address").as_deref(), Some("127.0.0.1"));
    let served = spans.iter().find(|s| s.name == "GET /ok" && s.parent_span_id == ok.span_id);
    assert!(served.is_some(), "the server span under the tower client span");
    let failed = towered.iter().find(|s| int(s, "http.response.status_code") == Some(503)).unwrap();
    assert_eq!(string(failed, "error.type").as_deref(), Some("503"));
    let refused = towered.iter().find(|s| int(s, "http.response.status_code").is_none()).unwrap();
    assert_eq!(refused.status.as_ref().map(|s| s.code), Some(OtlpStatus::Error as i32));
    assert_eq!(string(refused, "error.type").as_deref(), Some("hyper_util::client::legacy::client::Error"));
}
