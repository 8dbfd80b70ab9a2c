//! Revel on a real Redis. `tests/e2e/infra.sh` starts a throwaway `redis-server` (Debian's
//! package, loopback only) and runs this with `--features redis-e2e`, naming it in
//! `REVEL_TEST_REDIS_URL`:
//!
//! - the real binary with `REDIS_URL`: publishing an event enqueues its notification task on
//!   Redis inside the producer span (an `EVAL` CLIENT span), the worker takes it and the task's
//!   span, linked to the producer, has its own Redis commands as CLIENT spans (the event cache);
//!   `GET /events/{id}` misses then hits the cache, counted; no key or value in any span;
//! - in process, the queue's depth gauge reads the real list, and a full list refuses a job,
//!   counted;
//! - a failing job retried through the sorted set of delayed retries, then given up.

#[path = "../../../tests/support/otlp.rs"]
mod otlp;
mod support {
    pub mod raw_http;
}
use support::raw_http::request;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use otlp::string;

/// The in-process tests read and write the same process-wide metrics (the queue's depth): one at
/// a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn url() -> String {
    std::env::var("REVEL_TEST_REDIS_URL")
        .expect("REVEL_TEST_REDIS_URL names the test server (tests/e2e/infra.sh sets it)")
}

/// A database of each Redis server's sixteen: one per test, emptied first.
async fn flushed(db: u8) -> String {
    let url = format!("{}/{db}", url().trim_end_matches('/'));
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();
    url
}

/// The binary with `REDIS_URL`: a publication's task through the Redis queue, and the cache.
#[test]
fn the_binary_on_redis_traces_the_queue_and_the_cache() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let redis_url = rt.block_on(flushed(1));
    let (receiver, traces) = otlp::Receiver::start();
    let addr: SocketAddr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir = std::env::temp_dir().join(format!("revel-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut revel = Command::new(env!("CARGO_BIN_EXE_revel"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("REVEL_ADDR", addr.to_string())
        .env("DATABASE_URL", format!("sqlite://{}/revel.db?mode=rwc", dir.display()))
        .env("REDIS_URL", &redis_url)
        .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces)
        .env("OBS_PROFILING", "false")
        .env("REVEL_EMAIL_LATENCY_MS", "0")
        .env("REVEL_EMAIL_FAILURE_RATE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let up = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(up.elapsed() < Duration::from_secs(120), "revel did not start");
        assert!(revel.try_wait().unwrap().is_none(), "revel exited at start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let first = request(addr, "GET", "/events/1", "");
    assert!(first.starts_with("HTTP/1.1 200") && first.contains("Rust Meetup"), "{first}");
    let second = request(addr, "GET", "/events/1", "");
    assert!(second.contains("Rust Meetup"), "{second}");
    assert!(request(addr, "POST", "/events/3/publish", "{}").starts_with("HTTP/1.1 202"));
    // The task ran once its span arrived; waited for (spans are exported in batches).
    let waited = Instant::now();
    while !receiver.spans().iter().any(|s| s.name == "task.notify_event_open") {
        assert!(waited.elapsed() < Duration::from_secs(60), "the task's span never came");
        std::thread::sleep(Duration::from_millis(20));
    }
    let metrics = request(addr, "GET", "/metrics", "");
    assert!(Command::new("kill").args(["-TERM", &revel.id().to_string()]).status().unwrap().success());
    assert!(revel.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
    let spans = receiver.spans();

    // The cache: a miss (then the event is cached), a hit, a miss for the task's lookup after the
    // publication dropped the published event's entry.
    let series = |s: &str| metrics.lines().find_map(|l| l.strip_prefix(s)?.trim().parse::<f64>().ok());
    assert_eq!(series(r#"revel_cache_requests_total{cache="event",result="hit"}"#), Some(1.0), "{metrics}");
    assert_eq!(series(r#"revel_cache_requests_total{cache="event",result="miss"}"#), Some(2.0), "{metrics}");
    assert!(
        series(r#"revel_redis_command_duration_seconds_count{command="eval",status="ok"}"#).is_some_and(|n| n >= 2.0)
    );
    assert!(series(r#"revel_redis_command_duration_seconds_count{command="brpop",status="ok"}"#).is_some());
    assert_eq!(series(r#"revel_celery_queue_depth{queue_name="notifications"}"#), Some(0.0), "the list is empty");
    assert_eq!(
        series(r#"revel_celery_tasks_total{task_name="notify_event_open",status="success"}"#),
        Some(1.0),
        "{metrics}"
    );

    for s in &spans {
        let dump = format!("{s:?}");
        assert!(!dump.contains("revel:event:") && !dump.contains("revel:queue:"), "a key in a span: {dump}");
        assert!(!dump.contains("\"job\""), "a stored job in a span: {dump}");
    }
    let one = |name: &str| spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no span {name}"));
    let children =
        |parent: &Span| -> Vec<&Span> { spans.iter().filter(|s| s.parent_span_id == parent.span_id).collect() };
    let redis_child = |parent: &Span, name: &str| -> Span {
        let c = children(parent)
            .into_iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name} under {}", parent.name));
        assert_eq!(c.kind, SpanKind::Client as i32);
        assert_eq!(string(c, "db.system.name").as_deref(), Some("redis"));
        c.clone()
    };

    // The producer: its Redis command, the bounded push.
    let trigger = one("task.trigger_notification");
    assert_eq!(trigger.kind, SpanKind::Producer as i32);
    let push = redis_child(trigger, "EVAL");
    assert_eq!(string(&push, "db.query.text").as_deref(), Some("EVAL ? ? ? ? ?"));
    // The consumer: a trace of its own, linked to the producer, with its Redis commands.
    let task = one("task.notify_event_open");
    assert_eq!(task.kind, SpanKind::Consumer as i32);
    assert!(task.parent_span_id.is_empty());
    assert_eq!((&task.links[0].trace_id, &task.links[0].span_id), (&trigger.trace_id, &trigger.span_id));
    let details = children(task).into_iter().find(|c| c.name == "event.details").expect("the task's cache lookup");
    redis_child(details, "GET");
    redis_child(details, "SETEX");
    // The request's lookups: a miss that caches, a hit with no database query.
    let lookups: Vec<&Span> =
        spans.iter().filter(|s| s.name == "event.details" && s.trace_id != task.trace_id).collect();
    assert_eq!(lookups.len(), 2);
    let names = |s: &Span| {
        let mut n: Vec<String> = children(s).iter().map(|c| c.name.clone()).collect();
        n.sort();
        n
    };
    let mut seen: Vec<Vec<String>> = lookups.iter().map(|s| names(s)).collect();
    seen.sort();
    assert_eq!(seen, [vec!["GET".to_owned()], vec!["GET".to_owned(), "SELECT events".to_owned(), "SETEX".to_owned()]]);
    // The worker's poll is timed, not traced.
    assert!(spans.iter().all(|s| s.name != "BRPOP"), "a poll made a span");
}

/// In process, on Redis: the depth gauge reads the list, and a full list refuses a job.
#[test]
fn the_redis_queue_reports_its_real_depth_and_refuses_when_full() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        revel::register_metrics();
        let url = flushed(2).await;
        let redis = revel::cache::Redis::connect(&url).await.unwrap();
        let (queue, _rx) = revel::tasks::Queue::redis(&redis);
        let job = || revel::tasks::Job::NotifyEventOpen { event_id: 1, only: None, attempt: 0 };
        let depth = || obs_runtime::testing::value("revel_celery_queue_depth", &[("queue_name", "notifications")]);
        let dropped =
            || obs_runtime::testing::value("revel_celery_tasks_dropped_total", &[("queue_name", "notifications")]);
        for _ in 0..3 {
            queue.enqueue(job()).await;
        }
        // Set from the list by the worker (none runs here: asked directly).
        queue.refresh_depth().await;
        assert_eq!(depth(), Some(3.0));
        // Another producer (another replica) filled the list: the gauge follows the list.
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut raw = client.get_multiplexed_async_connection().await.unwrap();
        let filler: Vec<String> = (0..revel::tasks::CAPACITY - 4).map(|i| format!("other-{i}")).collect();
        let _: () =
            redis::cmd("RPUSH").arg("revel:queue:notifications").arg(&filler).query_async(&mut raw).await.unwrap();
        queue.enqueue(job()).await;
        queue.refresh_depth().await;
        assert_eq!(depth(), Some(revel::tasks::CAPACITY as f64));
        let before = dropped().unwrap_or(0.0);
        queue.enqueue(job()).await;
        assert_eq!(dropped(), Some(before + 1.0), "full: refused and counted");
        let len: usize = redis::cmd("LLEN").arg("revel:queue:notifications").query_async(&mut raw).await.unwrap();
        assert_eq!(len, revel::tasks::CAPACITY);
        let _: () = redis::cmd("FLUSHDB").query_async(&mut raw).await.unwrap();
    });
}

/// In process, on Redis: a job whose every email bounces is retried through the sorted set of
/// delayed retries (after the backoff), a bounded number of times, then fails for good; nothing
/// is left in the list or the set.
#[test]
fn the_redis_queue_retries_through_its_delayed_set_then_gives_up() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        revel::register_metrics();
        let url = flushed(4).await;
        let dir = std::env::temp_dir().join(format!("revel-redis-retry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut externals = revel::external::Externals::instant();
        externals.email.failure_rate = 1.0;
        let database = format!("sqlite://{}/revel.db?mode=rwc", dir.display());
        let (app, rx) = revel::App::new(externals, &database, Some(&url)).await.unwrap();
        app.tasks.set_retry_base(Duration::from_millis(5));
        let count = |status: &str| {
            obs_runtime::testing::value(
                "revel_celery_tasks_total",
                &[("task_name", "notify_event_open"), ("status", status)],
            )
            .unwrap_or(0.0)
        };
        let (retries, failures) = (count("retry"), count("failure"));
        let worker = tokio::spawn(revel::tasks::run_worker(app.clone(), rx));
        app.tasks.enqueue(revel::tasks::Job::NotifyEventOpen { event_id: 1, only: None, attempt: 0 }).await;
        let waited = Instant::now();
        while count("failure") <= failures {
            assert!(waited.elapsed() < Duration::from_secs(60), "the job never failed for good");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(count("retry"), retries + 2.0, "two attempts asked for a retry");
        assert_eq!(count("failure"), failures + 1.0, "the third failed for good");
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut raw = client.get_multiplexed_async_connection().await.unwrap();
        let waiting: usize = redis::cmd("LLEN").arg("revel:queue:notifications").query_async(&mut raw).await.unwrap();
        let delayed: usize =
            redis::cmd("ZCARD").arg("revel:queue:notifications:delayed").query_async(&mut raw).await.unwrap();
        assert_eq!((waiting, delayed), (0, 0), "nothing left behind");
        worker.abort();
        let _ = std::fs::remove_dir_all(&dir);
    });
}
