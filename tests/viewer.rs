//! The built-in viewer as an application mounts it: beside a service wrapped by the HTTP layer,
//! behind a token; its lists, filters, waterfalls, log tail, metrics and profile read back over
//! HTTP (the browser test, `tests/e2e/viewer.sh`, drives the same pages in Chromium).

#[path = "support/capture.rs"]
mod capture;

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use obs_runtime::config::Config;
use obs_runtime::{metric, metric_def, traced_span};
use serde_json::Value;
use tower::ServiceExt as _;

const TOKEN: &str = "t0ken-for-the-viewer";
const EMAIL: &str = "planted.viewer@example.org";

#[traced_span("viewer.checkout")]
async fn checkout(fail: bool) -> Result<(), String> {
    obs_runtime::trace::record("note", "<b>bold</b>");
    step_one().await;
    step_two().await;
    tracing::info!(note = "for the trace", "checkout step");
    if fail { Err(format!("card declined for {EMAIL}")) } else { Ok(()) }
}

#[traced_span("viewer.step_one")]
async fn step_one() {
    tokio::task::yield_now().await;
}

#[traced_span("viewer.step_two")]
async fn step_two() {
    tokio::task::yield_now().await;
}

async fn handler(axum::extract::Query(q): axum::extract::Query<Vec<(String, String)>>) -> StatusCode {
    let fail = q.iter().any(|(k, v)| k == "fail" && v == "1");
    match checkout(fail).await {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::BAD_GATEWAY,
    }
}

fn app(viewer: obs_runtime::viewer::Settings) -> Router {
    let api = obs_runtime::http::ObsLayer::new()
        .request_metrics(metric_def!("lib_http_requests_total"), metric_def!("lib_http_request_duration_seconds"))
        .wrap(Router::new().route("/checkout", axum::routing::get(handler)));
    Router::new().merge(obs_runtime::viewer::router(viewer)).fallback_service(api)
}

async fn call(app: &Router, path: &str, headers: &[(&str, &str)]) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut req = Request::get(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let (parts, body) = r.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20).await.unwrap();
    (parts.status, parts.headers, String::from_utf8_lossy(&body).into_owned())
}

const AUTH: (&str, &str) = ("authorization", "Bearer t0ken-for-the-viewer");

async fn page(app: &Router, path: &str) -> String {
    let (status, headers, body) = call(app, path, &[AUTH]).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    assert!(headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("script-src 'self'"));
    assert!(!body.contains(EMAIL), "the planted address on {path}");
    body
}

async fn json(app: &Router, path: &str) -> Value {
    serde_json::from_str(&page(app, path).await).unwrap()
}

/// The names and depths of a waterfall's rows, in order.
fn rows(html: &str) -> Vec<(String, usize, bool)> {
    html.split("<details class=\"span")
        .skip(1)
        .map(|row| {
            let attr =
                |name: &str| row.split(&format!("{name}=\"")).nth(1).unwrap().split('"').next().unwrap().to_owned();
            (attr("data-name"), attr("data-depth").parse().unwrap(), attr("data-failed") == "true")
        })
        .collect()
}

#[tokio::test]
async fn the_viewer_shows_what_the_service_did() {
    let dir = std::env::temp_dir().join(format!("obs-viewer-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spans_file = dir.join("spans.jsonl").to_string_lossy().into_owned();
    let logs = capture::Captured::default();
    let config = Config::from_vars(|name| match name {
        "OBS_ENV" => Some("development".into()),
        "OBS_VIEWER_TOKEN" => Some(TOKEN.into()),
        "OBS_SPANS_FILE" => Some(spans_file.clone()),
        "OBS_GRAFANA_URL" => Some("http://grafana.local:3000/".into()),
        _ => None,
    })
    .unwrap()
    .log_writer(logs.writer());
    let settings = config.viewer();
    let _guard = obs_runtime::init(config).unwrap();
    let app = app(settings);

    // --- The token: a header, or `?token=` once (into a cookie, off the address).
    let (status, headers, _) = call(&app, "/debug/obs", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(call(&app, "/debug/obs?token=wrong", &[]).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        call(&app, "/debug/obs/api/traces", &[("authorization", "Bearer wrong")]).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, headers, _) = call(&app, &format!("/debug/obs/logs?level=WARN&token={TOKEN}&trace_id="), &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/debug/obs/logs?level=WARN&trace_id=", "the token dropped, the rest kept");
    let (_, headers, _) = call(&app, &format!("/debug/obs?%74oken={TOKEN}&status=failed"), &[]).await;
    assert_eq!(headers[header::LOCATION], "/debug/obs?status=failed", "however the key is spelled");
    // Another site's page may link to the viewer, not fetch from it.
    let cross = [AUTH, ("sec-fetch-site", "cross-site"), ("sec-fetch-mode", "no-cors")];
    assert_eq!(call(&app, "/debug/obs/api/logs", &cross).await.0, StatusCode::FORBIDDEN);
    let link = [AUTH, ("sec-fetch-site", "cross-site"), ("sec-fetch-mode", "navigate")];
    assert_eq!(call(&app, "/debug/obs", &link).await.0, StatusCode::OK);
    let cookie = headers[header::SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_owned();
    assert!(headers[header::SET_COOKIE].to_str().unwrap().contains("HttpOnly"));
    assert!(
        !headers[header::SET_COOKIE].to_str().unwrap().contains("Secure"),
        "over plain HTTP it would not come back"
    );
    // Behind a TLS proxy the cookie is only ever sent over TLS.
    let (_, tls, _) = call(&app, &format!("/debug/obs?token={TOKEN}"), &[("x-forwarded-proto", "https")]).await;
    assert!(tls[header::SET_COOKIE].to_str().unwrap().ends_with("; Secure"), "{:?}", tls[header::SET_COOKIE]);
    assert_eq!(call(&app, "/debug/obs", &[("cookie", &cookie)]).await.0, StatusCode::OK);

    // --- Two requests, one failing; their traces listed within the deadline.
    let ok = call(&app, "/checkout?fail=0", &[("x-request-id", "req-ok-1")]).await;
    let failed = call(&app, "/checkout?fail=1", &[("x-request-id", "req-fail-1")]).await;
    assert_eq!((ok.0, failed.0), (StatusCode::OK, StatusCode::BAD_GATEWAY));
    let deadline = Instant::now() + Duration::from_secs(20);
    // Both traces whole: listed with their request ids, four spans each (a batch may end
    // between a trace's spans).
    let complete = |v: &Value| {
        let all = v.as_array().unwrap();
        ["req-ok-1", "req-fail-1"].iter().all(|rid| all.iter().any(|t| t["request_id"] == *rid && t["spans"] == 4))
    };
    let listed = loop {
        let listed = json(&app, "/debug/obs/api/traces?name=viewer.checkout").await;
        if complete(&listed) || Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let id_of = |rid: &str| {
        listed.as_array().unwrap().iter().find(|t| t["request_id"] == rid).unwrap()["trace_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (ok_id, failed_id) = (id_of("req-ok-1"), id_of("req-fail-1"));

    // --- Search: status, request id, span name, duration; a bad value is named.
    let ids = |v: &Value| {
        v.as_array().unwrap().iter().map(|t| t["trace_id"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&json(&app, "/debug/obs/api/traces?status=failed&name=viewer").await),
        std::slice::from_ref(&failed_id)
    );
    assert_eq!(ids(&json(&app, "/debug/obs/api/traces?request_id=req-ok-1").await), std::slice::from_ref(&ok_id));
    assert_eq!(json(&app, "/debug/obs/api/traces?name=viewer.step_two").await.as_array().unwrap().len(), 2);
    assert!(json(&app, "/debug/obs/api/traces?min_ms=600000").await.as_array().unwrap().is_empty());
    let (status, _, body) = call(&app, "/debug/obs/api/traces?min_ms=soon", &[AUTH]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("min_ms"), "{body}");
    let list = page(&app, "/debug/obs?status=failed").await;
    assert!(list.contains(&format!("href=\"/debug/obs/traces/{failed_id}\"")) && !list.contains(&ok_id));

    // --- The waterfall: parents before children, siblings in the order they ran; the failure
    // marked; values escaped; the trace's log lines beside it; a link into Grafana.
    let html = page(&app, &format!("/debug/obs/traces/{ok_id}")).await;
    let names: Vec<(String, usize, bool)> = rows(&html);
    assert_eq!(
        names,
        [
            ("GET /checkout".into(), 0, false),
            ("viewer.checkout".into(), 1, false),
            ("viewer.step_one".into(), 2, false),
            ("viewer.step_two".into(), 2, false)
        ]
    );
    assert!(html.contains("&lt;b&gt;bold&lt;/b&gt;") && !html.contains("<b>bold</b>"), "attribute values are escaped");
    assert!(html.contains("checkout step"), "the trace's log line beside it");
    assert!(html.contains("http://grafana.local:3000/explore?"), "Grafana's link");
    let loki = html.split("its logs in Grafana").next().unwrap().rsplit("href=\"").next().unwrap();
    assert!(loki.contains("%22uid%22%3A%22loki%22") && loki.contains(&ok_id), "the trace's logs in Loki: {loki}");
    let html = page(&app, &format!("/debug/obs/traces/{failed_id}")).await;
    let failed_rows = rows(&html);
    assert!(failed_rows.iter().any(|(n, _, f)| n == "viewer.checkout" && *f), "{failed_rows:?}");
    assert!(html.contains("badge bad"));
    let trace = json(&app, &format!("/debug/obs/api/traces/{failed_id}")).await;
    assert_eq!(trace["failed"], true);
    let trace_logs = trace["logs"].as_array().unwrap();
    assert!(!trace_logs.is_empty(), "the failed trace's lines: {trace}");
    assert!(trace_logs.iter().all(|l| l["line"]["trace_id"] == failed_id.as_str()));
    let (status, _, _) = call(&app, "/debug/obs/traces/0123", &[AUTH]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = call(&app, &format!("/debug/obs/traces/{:032x}", 7), &[AUTH]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // --- Logs: by level, request id and trace id.
    let by_trace = json(&app, &format!("/debug/obs/api/logs?trace_id={ok_id}")).await;
    let messages: Vec<&str> =
        by_trace.as_array().unwrap().iter().map(|l| l["line"]["message"].as_str().unwrap()).collect();
    assert!(messages.contains(&"checkout step"), "{messages:?}");
    let errors = json(&app, "/debug/obs/api/logs?level=warn").await;
    assert!(!errors.as_array().unwrap().is_empty(), "the 502's access line is a warning");
    assert!(
        errors.as_array().unwrap().iter().all(|l| ["WARN", "ERROR"].contains(&l["line"]["level"].as_str().unwrap()))
    );
    let by_request = json(&app, "/debug/obs/api/logs?request_id=req-fail-1").await;
    assert!(!by_request.as_array().unwrap().is_empty());
    assert!(by_request.as_array().unwrap().iter().all(|l| l["line"]["request_id"] == "req-fail-1"));
    page(&app, "/debug/obs/logs?level=INFO&trace_id=").await;
    let (status, _, body) = call(&app, "/debug/obs/api/logs?level=warning", &[AUTH]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an unknown level is named, not ignored");
    assert!(body.contains("level"), "{body}");

    // --- Metrics: a family's total moves; the HTTP endpoints table has the route.
    let total = |html: &str| -> f64 {
        let section = html.split("id=\"metric-lib_loans_total\"").nth(1).expect("the family's panel");
        section.split("data-value=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap()
    };
    metric!("lib_loans_total", branch_id = "7", channel = "web").inc();
    let before = total(&page(&app, "/debug/obs/metrics?q=lib_loans").await);
    for _ in 0..3 {
        metric!("lib_loans_total", branch_id = "7", channel = "web").inc();
    }
    assert_eq!(total(&page(&app, "/debug/obs/metrics?q=lib_loans&fragment=1").await), before + 3.0);
    let metrics = page(&app, "/debug/obs/metrics").await;
    let endpoints = metrics.split("<section id=\"http\">").nth(1).expect("the endpoints table");
    assert!(endpoints.split("</section>").next().unwrap().contains("/checkout"));
    let all = json(&app, "/debug/obs/api/metrics").await;
    assert!(all["families"].as_array().unwrap().iter().any(|f| f["name"] == "lib_http_request_duration_seconds"));

    // --- A profile, inline: an SVG flamegraph.
    let (status, headers, svg) = call(&app, "/debug/obs/api/profile.svg?seconds=1", &[AUTH]).await;
    assert_eq!(status, StatusCode::OK, "{svg}");
    assert_eq!(headers[header::CONTENT_TYPE], "image/svg+xml");
    assert!(svg.contains("<svg"));
    let (status, headers, last) = call(&app, "/debug/obs/api/profile/last.svg", &[AUTH]).await;
    assert_eq!((status, last == svg), (StatusCode::OK, true), "the page's frame shows the profile just taken");
    assert!(
        headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("script-src 'unsafe-inline'"),
        "zoom works"
    );
    assert_eq!(call(&app, "/debug/obs/api/profile.svg?seconds=0", &[AUTH]).await.0, StatusCode::BAD_REQUEST);
    page(&app, "/debug/obs/profile").await;
    let (status, headers, _) = call(&app, "/debug/obs/app.js", &[AUTH]).await;
    assert_eq!(
        (status, headers[header::CONTENT_TYPE].to_str().unwrap()),
        (StatusCode::OK, "text/javascript; charset=utf-8")
    );

    // --- The viewer's own requests are not the service's traffic.
    assert!(!logs.text().contains("/debug/obs"));
    assert!(!obs_runtime::metrics::render().contains("/debug/obs"));

    // --- Without a token (development's default), this machine only.
    let open = Config::from_vars(|name| (name == "OBS_ENV").then(|| "development".into())).unwrap().viewer();
    let open = app_off(open);
    assert_eq!(call(&open, "/debug/obs", &[("host", "127.0.0.1:8000")]).await.0, StatusCode::OK);
    assert_eq!(call(&open, "/debug/obs", &[("host", "localhost")]).await.0, StatusCode::OK);
    let (status, _, body) = call(&open, "/debug/obs", &[("host", "attacker.example:8000")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a rebound name gets nothing");
    assert!(body.contains("OBS_VIEWER_TOKEN"), "{body}");

    // --- Off, it answers 404.
    let off = Config::from_vars(|name| (name == "OBS_VIEWER").then(|| "false".into())).unwrap().viewer();
    let (status, _, body) = call(&app_off(off), "/debug/obs", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("OBS_VIEWER"));
    let _ = std::fs::remove_dir_all(&dir);
}

fn app_off(viewer: obs_runtime::viewer::Settings) -> Router {
    Router::new().merge(obs_runtime::viewer::router(viewer))
}
