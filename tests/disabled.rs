//! `ENABLE_OBSERVABILITY=false` turns everything off: after `init` with it, the metric macros
//! record nothing (not even their labels are formatted), the HTTP layer and the task wrapper pass
//! through (the request id stays: handlers may read it), no log line is written and no span is
//! exported. The families stay registered, so `/metrics` still lists them.

#[path = "support/capture.rs"]
mod capture;
#[path = "support/otlp.rs"]
mod otlp;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Extension;
use axum::http::Request;
use axum::routing::get;
use obs_runtime::config::{Config, Sampler};
use obs_runtime::http::{ObsLayer, RequestId};
use obs_runtime::task::{self, Task};
use obs_runtime::testing::{histogram, value};
use obs_runtime::{counted, metric, timed};
use tower::ServiceExt as _;

/// How many times a label value was formatted.
static FORMATTED: AtomicUsize = AtomicUsize::new(0);

struct Branch(u64);

impl std::fmt::Display for Branch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        FORMATTED.fetch_add(1, Ordering::Relaxed);
        write!(f, "{}", self.0)
    }
}

#[counted(metric = "lib_loans_total", labels(branch_id = branch, channel = "desk"))]
#[timed(metric = "lib_search_duration_seconds", labels(index = branch))]
fn lend(branch: &Branch) -> u64 {
    branch.0
}

#[counted(metric = "lib_returns_total", labels(branch_id = branch), outcome(label = "status", ok = "on_time", err = "late"))]
fn give_back(branch: &Branch, ok: bool) -> Result<(), String> {
    if ok { Ok(()) } else { Err("late".into()) }
}

async fn panics() -> &'static str {
    if std::hint::black_box(true) {
        panic!("a handler bug");
    }
    "unreachable"
}

#[obs_runtime::traced_span("loan.lend")]
fn traced() {
    tracing::error!("an error line that must not be written");
}

#[test]
fn disabled_observability_records_nothing() {
    let (receiver, url) = otlp::Receiver::start();
    let captured = capture::Captured::default();
    let config = Config::from_vars(|k| (k == "ENABLE_OBSERVABILITY").then(|| "false".to_owned()))
        .unwrap()
        .traces_endpoint(url)
        .sampler(Sampler::AlwaysOn)
        .log_writer(captured.writer());
    let guard = obs_runtime::init(config).unwrap();
    // As a service does at start-up: every family listed from the start.
    obs_runtime::metrics::register_catalog(obs_runtime::catalog!());

    // The macros: no value, no label formatted, the functions' results unchanged.
    assert_eq!(lend(&Branch(7)), 7);
    assert_eq!(give_back(&Branch(9), true), Ok(()));
    assert_eq!(give_back(&Branch(9), false), Err("late".into()));
    let gauge = metric!("lib_members_active");
    gauge.set(5.0);
    metric!("lib_calls_total", function = Branch(10)).inc();
    metric!("lib_loans_total", branch_id = "lit", channel = "desk").inc();
    assert_eq!(gauge.get(), 0.0, "a handle reads 0 while metrics are off");
    assert_eq!(FORMATTED.load(Ordering::Relaxed), 0, "labels are not formatted while metrics are off");
    assert_eq!(value("lib_loans_total", &[("branch_id", "7"), ("channel", "desk")]), None);
    assert_eq!(value("lib_loans_total", &[("branch_id", "lit"), ("channel", "desk")]), None);
    assert_eq!(value("lib_returns_total", &[("branch_id", "9"), ("status", "on_time")]), None);
    assert_eq!(value("lib_returns_total", &[("branch_id", "9"), ("status", "late")]), None);
    assert_eq!(value("lib_members_active", &[]), Some(0.0), "listed at 0 from start-up, never set");
    assert_eq!(value("lib_calls_total", &[("function", "10")]), None);
    assert_eq!(histogram("lib_search_duration_seconds", &[("index", "7")]), None);
    traced();

    // The HTTP layer: the request id only.
    let app = Router::new()
        .route("/id", get(|Extension(id): Extension<RequestId>| async move { id.0 }))
        .route("/panic", get(panics))
        .layer(ObsLayer::new().request_metrics(
            obs_runtime::metric_def!("lib_http_requests_total"),
            obs_runtime::metric_def!("lib_http_request_duration_seconds"),
        ));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let response = rt
        .block_on(
            app.clone().oneshot(Request::get("/id").header("x-request-id", "req-off").body(Body::empty()).unwrap()),
        )
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "req-off");
    let body = rt.block_on(axum::body::to_bytes(response.into_body(), 1024)).unwrap();
    assert_eq!(&body[..], b"req-off", "the handler sees the request id");
    let generated = rt.block_on(app.clone().oneshot(Request::get("/id").body(Body::empty()).unwrap())).unwrap();
    assert_eq!(generated.headers()["x-request-id"].len(), 36);
    // A panicking handler is still answered: a 500 with the request id.
    let req = Request::get("/panic").header("x-request-id", "req-panic").body(Body::empty()).unwrap();
    let panicked = rt.block_on(app.oneshot(req)).unwrap();
    assert_eq!(panicked.status(), 500);
    assert_eq!(panicked.headers()["x-request-id"], "req-panic");
    assert_eq!(
        value("lib_http_requests_total", &[("method", "GET"), ("endpoint", "/id"), ("status_code", "200")]),
        None
    );

    // The task wrapper: the future's output, no metric.
    task::record_metrics(
        obs_runtime::metric_def!("lib_tasks_total"),
        obs_runtime::metric_def!("lib_task_duration_seconds"),
    );
    task::record_queue_depth(obs_runtime::metric_def!("lib_queue_depth"));
    let out = rt.block_on(Task::new("off_task").run(async { Ok::<_, String>(41 + 1) }));
    assert_eq!(out, Ok(42));
    task::set_queue_depth("off_queue", 3);
    assert_eq!(value("lib_tasks_total", &[("task_name", "off_task"), ("status", "success")]), None);
    assert_eq!(value("lib_queue_depth", &[("queue_name", "off_queue")]), None);

    // Families stay listed (HELP/TYPE) without samples.
    let text = obs_runtime::metrics::render();
    assert!(text.contains("# TYPE lib_loans_total counter"), "{text}");
    assert!(!text.contains("branch_id=\"7\""), "{text}");

    assert!(guard.shutdown());
    assert_eq!(receiver.wait_for(1, Duration::from_millis(300)).len(), 0, "no span exported");
    assert_eq!(captured.text(), "", "no log line");
}
