//! Context never leaks: 1,000 requests through the HTTP layer, each spawning work of its own and
//! enqueueing a background task, interleaved on a multi-threaded runtime across `.await` points.
//! Every captured log line carries exactly its own request's or task's context.

#[path = "support/capture.rs"]
mod capture;
#[path = "support/otlp.rs"]
mod otlp;

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::Request;
use axum::routing::get;
use obs_runtime::http::ObsLayer;
use obs_runtime::task::{Outcome, Task};
use obs_runtime::trace::with_current_context;
use serde_json::Value;
use tower::ServiceExt as _;

const N: u64 = 1_000;

/// A pseudo-random short pause, so that requests and tasks interleave differently each step.
async fn pause(n: u64, step: u64) {
    let micros = (n.wrapping_mul(2_654_435_761).wrapping_add(step * 40_503)) % 700;
    tokio::time::sleep(Duration::from_micros(micros)).await;
    tokio::task::yield_now().await;
}

#[obs_runtime::traced_span("notification.get_eligible_users")]
async fn eligible(n: u64) -> u64 {
    pause(n, 7).await;
    n % 3
}

async fn handler(Path(n): Path<u64>) -> String {
    for step in 0..3 {
        pause(n, step).await;
        tracing::info!(n, step, "handling");
    }
    // Work spawned from the request keeps its context (only with `with_current_context`).
    tokio::spawn(with_current_context(async move {
        pause(n, 3).await;
        tracing::info!(n, "spawned work");
    }))
    .await
    .unwrap();
    // A background task, linked to this request's trace, with a context of its own.
    let job = Task::new("notify_event_open").id(format!("task-{n}")).queue("notifications").retries((n % 2) as u32);
    let job = job.enqueued_here();
    tokio::spawn(job.run(async move {
        pause(n, 4).await;
        let users = eligible(n).await;
        tracing::info!(n, users, "in task");
        if n % 10 == 0 { Outcome::Retry("smtp busy") } else { Outcome::Success(users) }
    }));
    format!("{n}")
}

#[test]
fn each_line_carries_exactly_its_own_context() {
    let (receiver, url) = otlp::Receiver::start();
    let (captured, config) = capture::config(url);
    let config = config.queue_capacity(100_000);
    let guard = obs_runtime::init(config).unwrap();
    obs_runtime::task::record_metrics(
        obs_runtime::metric_def!("lib_tasks_total"),
        obs_runtime::metric_def!("lib_task_duration_seconds"),
    );
    obs_runtime::task::record_queue_depth(obs_runtime::metric_def!("lib_queue_depth"));
    let app = Router::new().route("/r/{n}", get(handler)).layer(ObsLayer::new().access_log(false));

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    rt.block_on(async {
        let mut requests = tokio::task::JoinSet::new();
        for n in 0..N {
            let app = app.clone();
            requests.spawn(async move {
                let req = Request::get(format!("/r/{n}")).header("x-request-id", format!("req-{n}"));
                let res = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
                assert_eq!(res.headers()["x-request-id"], format!("req-{n}").as_str());
            });
        }
        while let Some(r) = requests.join_next().await {
            r.unwrap();
        }
        // The tasks were spawned and not awaited: wait for their lines.
        for _ in 0..500 {
            let done = obs_runtime::testing::value(
                "lib_tasks_total",
                &[("task_name", "notify_event_open"), ("status", "success")],
            )
            .unwrap_or(0.0)
                + obs_runtime::testing::value(
                    "lib_tasks_total",
                    &[("task_name", "notify_event_open"), ("status", "retry")],
                )
                .unwrap_or(0.0);
            if done as u64 == N {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    obs_runtime::task::set_queue_depth("notifications", 3);
    assert_eq!(obs_runtime::testing::value("lib_queue_depth", &[("queue_name", "notifications")]), Some(3.0));
    // A task dropped before it completes counts as `cancelled`, and its future is dropped inside
    // its context.
    struct Cleanup;
    impl Drop for Cleanup {
        fn drop(&mut self) {
            tracing::info!("stuck job cleaned up");
        }
    }
    let stuck = Task::new("stuck_job").id("stuck-1").run(async {
        let _cleanup = Cleanup;
        std::future::pending::<Outcome<(), String>>().await
    });
    rt.block_on(async { assert!(tokio::time::timeout(Duration::from_millis(10), stuck).await.is_err()) });
    let cancelled = [("task_name", "stuck_job"), ("status", "cancelled")];
    assert_eq!(obs_runtime::testing::value("lib_tasks_total", &cancelled), Some(1.0));
    assert!(guard.shutdown());
    let text = captured.text();
    let line = |message: &str| -> Value {
        let found = text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).find(|l| l["message"] == message);
        found.unwrap_or_else(|| panic!("no line {message:?} in\n{text}"))
    };
    assert_eq!(line("stuck job cleaned up")["task_id"], "stuck-1", "dropped inside the task's context");
    assert_eq!(line("task cancelled before it completed")["task_name"], "stuck_job");

    let text = captured.text();
    let mut per_n: HashMap<u64, Vec<Value>> = HashMap::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if let Some(n) = v["n"].as_u64() {
            per_n.entry(n).or_default().push(v);
        }
    }
    assert_eq!(per_n.len() as u64, N);
    let mut task_traces = 0;
    for (n, lines) in &per_n {
        assert_eq!(lines.len(), 5, "request {n}: {lines:#?}");
        let request_trace = lines.iter().find(|l| l["message"] == "handling").unwrap()["trace_id"].clone();
        for l in lines {
            match l["message"].as_str().unwrap() {
                "handling" | "spawned work" => {
                    assert_eq!(l["request_id"], format!("req-{n}"), "{l}");
                    assert_eq!(l["endpoint"], "/r/{n}");
                    assert_eq!(l["trace_id"], request_trace, "one trace per request: {l}");
                    assert!(l.get("task_id").is_none(), "{l}");
                }
                "in task" => {
                    assert_eq!(l["task_id"], format!("task-{n}"), "{l}");
                    assert_eq!(l["task_name"], "notify_event_open");
                    assert_eq!(l["queue"], "notifications");
                    assert_eq!(l["retries"], n % 2);
                    assert!(l.get("request_id").is_none(), "a task does not inherit its request's context: {l}");
                    assert_ne!(l["trace_id"], request_trace, "a task has a trace of its own, linked");
                    assert!(l["trace_id"].is_string());
                    task_traces += 1;
                }
                other => panic!("unexpected line {other}"),
            }
        }
    }
    assert_eq!(task_traces, N);
    let count = |status| {
        obs_runtime::testing::value("lib_tasks_total", &[("task_name", "notify_event_open"), ("status", status)])
    };
    assert_eq!((count("success"), count("retry")), (Some(900.0), Some(100.0)));
    // Task lines when each task ends: one per task, with its outcome (and the cancelled one's).
    let ends = text.lines().filter(|l| l.contains("\"target\":\"obs::task\"")).count() as u64;
    assert_eq!(ends, N + 1);

    // Each task's span starts a trace linked to the server span of the request that enqueued it.
    let spans = receiver.wait_for(3 * N as usize, Duration::from_secs(10));
    let attr = |s: &opentelemetry_proto::tonic::trace::v1::Span, k: &str| {
        s.attributes.iter().find(|kv| kv.key == k).and_then(|kv| kv.value.clone()).and_then(|v| v.value)
    };
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    let servers: HashMap<String, _> = spans
        .iter()
        .filter(|s| s.name == "GET /r/{n}")
        .filter_map(|s| match attr(s, "http.request.header.x-request-id") {
            Some(V::ArrayValue(ids)) => match ids.values.first().and_then(|v| v.value.clone()) {
                Some(V::StringValue(id)) => Some((id, s)),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(servers.len() as u64, N);
    let tasks: Vec<_> = spans.iter().filter(|s| s.name == "task.notify_event_open").collect();
    assert_eq!(tasks.len() as u64, N);
    for t in tasks {
        let Some(V::StringValue(id)) = attr(t, "task.id") else { panic!("task.id") };
        let server = servers[&id.replace("task-", "req-")];
        assert!(t.parent_span_id.is_empty(), "a root of its own");
        assert_eq!(t.links.len(), 1);
        assert_eq!((&t.links[0].trace_id, &t.links[0].span_id), (&server.trace_id, &server.span_id));
        let child = spans.iter().find(|s| s.name == "notification.get_eligible_users" && s.trace_id == t.trace_id);
        assert_eq!(child.map(|c| &c.parent_span_id), Some(&t.span_id), "the task's own spans nest under it");
    }
}
