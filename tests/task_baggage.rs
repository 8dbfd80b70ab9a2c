//! W3C baggage follows a background task: taken where the task is enqueued inside a request
//! (`Task::enqueued_here`), or stored with the job and given back (`RemoteContext::with_baggage`),
//! it is readable in the task (`trace::baggage`) and its allow-listed keys are on the task's span
//! (at the OTLP receiver, official proto types) and log lines, scrubbed; other keys nowhere.

#[path = "support/capture.rs"]
mod capture;
#[path = "support/otlp.rs"]
mod otlp;

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use obs_runtime::http::ObsLayer;
use obs_runtime::task::Task;
use obs_runtime::trace::RemoteContext;
use tower::ServiceExt as _;

/// The task a request enqueues: reads the tenant and logs a line.
async fn send_receipt() -> Result<Option<String>, String> {
    tracing::info!("receipt sent");
    Ok(obs_runtime::trace::baggage("tenant"))
}

#[test]
fn baggage_follows_a_task() {
    let (receiver, url) = otlp::Receiver::start();
    let (captured, config) = capture::config(url);
    let guard = obs_runtime::init(config.baggage_attributes(["tenant", "user.email"])).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    // Enqueued inside a request that came with baggage; the job keeps its origin as an
    // external queue would (traceparent and baggage strings), and a worker runs it later.
    let app = axum::Router::new()
        .route(
            "/checkout",
            get(|| async {
                let origin = RemoteContext::current().expect("inside the request's span");
                format!("{}\n{}", origin.to_traceparent(), origin.baggage().unwrap_or(""))
            }),
        )
        .layer(ObsLayer::new());
    let request = Request::get("/checkout")
        .header("baggage", "tenant=acme,user.email=ana%40example.org,secret=s3cr3t")
        .body(Body::empty())
        .unwrap();
    let response = rt.block_on(app.oneshot(request)).unwrap();
    let stored =
        String::from_utf8(rt.block_on(axum::body::to_bytes(response.into_body(), 1 << 16)).unwrap().to_vec()).unwrap();
    let (traceparent, baggage) = stored.split_once('\n').unwrap();
    assert!(baggage.contains("tenant=acme"), "{stored}");

    let origin = RemoteContext::from_traceparent(traceparent).unwrap().with_baggage(baggage);
    let read = rt.block_on(Task::new("send_receipt").enqueued_from(origin).run(send_receipt())).unwrap();
    assert_eq!(read.as_deref(), Some("acme"), "the baggage is readable in the task");
    // A task without an origin has none.
    let none = rt.block_on(Task::new("send_receipt").run(send_receipt())).unwrap();
    assert_eq!(none, None);

    let spans = receiver.wait_for(3, Duration::from_secs(20));
    let tasks: Vec<_> = spans.iter().filter(|s| s.name == "task.send_receipt").collect();
    assert_eq!(tasks.len(), 2, "{spans:?}");
    let with = tasks.iter().find(|s| otlp::string(s, "tenant").is_some()).expect("a task span with the tenant");
    assert_eq!(otlp::string(with, "tenant").as_deref(), Some("acme"));
    assert_eq!(otlp::string(with, "user.email").as_deref(), Some("[EMAIL]"), "scrubbed");
    assert!(tasks.iter().all(|s| otlp::attr(s, "secret").is_none()), "not allow-listed");
    assert_eq!(tasks.iter().filter(|s| otlp::string(s, "tenant").is_some()).count(), 1);

    let lines: Vec<serde_json::Value> = captured
        .text()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &serde_json::Value| l["message"] == "receipt sent")
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!((&lines[0]["tenant"], &lines[0]["user.email"]), (&"acme".into(), &"[EMAIL]".into()), "{}", lines[0]);
    assert!(lines[0].get("secret").is_none() && lines[1].get("tenant").is_none(), "{lines:?}");
    assert!(!captured.text().contains("s3cr3t") && !format!("{spans:?}").contains("s3cr3t"));
    guard.shutdown();
}
