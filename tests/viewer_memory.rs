//! The viewer's buffers are bounded: traces of large spans and long log lines, several times
//! what it keeps, leave the heap grown by no more than its bounds (16 MiB of spans and 2 MiB of
//! lines, as estimated) allow, measured by a counting allocator. Prints what it measured.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use obs_runtime::config::Config;
use obs_runtime::traced_span;
use tower::ServiceExt as _;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: f64 = (1 << 20) as f64;

#[traced_span("memory.request")]
fn request(payload: &str) {
    for _ in 0..20 {
        leaf(payload);
    }
}

#[traced_span("memory.leaf")]
fn leaf(payload: &str) {
    obs_runtime::trace::record("payload", payload.to_owned());
    obs_runtime::trace::record("other", payload.to_owned());
}

async fn get(app: &axum::Router, path: &str) -> String {
    let req = Request::get(path).header("host", "localhost").body(Body::empty()).unwrap();
    let r = app.clone().oneshot(req).await.unwrap();
    String::from_utf8(axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap()
}

/// Spans the viewer has kept since start, from the counter its pages poll.
async fn received(app: &axum::Router) -> u64 {
    get(app, "/debug/obs/version").await.trim().split('.').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn what_the_viewer_keeps_is_bounded() {
    let config = Config::from_vars(|name| match name {
        "OBS_ENV" => Some("development".into()),
        // No file, no collector: the viewer is the only consumer of the spans.
        "OTEL_TRACES_EXPORTER" => Some("none".into()),
        // Batches as soon as spans come (the rounds wait for the viewer to have them).
        "OTEL_BSP_SCHEDULE_DELAY" => Some("1".into()),
        _ => None,
    })
    .unwrap()
    .log_writer(|_: &[u8]| {});
    let app = axum::Router::new().merge(obs_runtime::viewer::router(config.viewer()));
    let _guard = obs_runtime::init(config).unwrap();

    let payload = "x".repeat(2048);
    let line = "y".repeat(1024);
    let mut sent = 0u64;
    // Everything allocated from here on counts, one-time allocations included (an overestimate).
    let baseline = LIVE.load(Ordering::Relaxed);
    // Each trace: 21 spans with two 2 KiB values, about 90 KiB; 600 of them, about 3 times the
    // 16 MiB kept; 6,000 log lines of 1 KiB, 3 times the 2 MiB kept.
    for _ in 0..60 {
        for _ in 0..10 {
            request(&payload);
            sent += 21;
        }
        for _ in 0..100 {
            tracing::info!(line = %line, "a long line");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while received(&app).await < sent && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(received(&app).await >= sent, "the viewer got every span");
    }
    let grown = (LIVE.load(Ordering::Relaxed) - baseline) as f64 / MIB;
    let usage = get(&app, "/debug/obs/usage").await.trim().to_owned();
    // "kept: 190 traces (0 failed or slow), 3990 spans, 16.0 of 16 MiB · 2000 log lines, 2.0 of 2 MiB · …"
    let estimated: f64 = usage.split(" spans, ").nth(1).unwrap().split(" of ").next().unwrap().parse().unwrap();
    let lines: f64 = usage.split(" log lines, ").nth(1).unwrap().split(" of ").next().unwrap().parse().unwrap();
    println!("viewer memory: {usage}; heap grown since start: {grown:.1} MiB");
    assert!(estimated <= 16.0 && estimated > 14.0, "the span store at its bound: {usage}");
    assert!(lines <= 2.0 && lines > 1.5, "the line store at its bound: {usage}");
    // What the estimate leaves out (allocator rounding, the map, metric histories) is a
    // fraction of it: the heap stays within a quarter over the two bounds.
    assert!(grown < 18.0 * 1.25, "the heap grew {grown:.1} MiB: {usage}");
}
