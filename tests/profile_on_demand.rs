//! Profiles on demand: a CPU-bound function is found in the decoded pprof profile and in the
//! SVG flamegraph, directly and through the HTTP endpoints; one profile at a time, bounded, and
//! behind the token. One test: the process has one profiler.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use obs_runtime::profile::{self, EndpointSettings, Format, ProfileError, ProfileRequest};
use pprof::protos::Message as _;
use tower::ServiceExt as _;

/// The function the profiles must find: nothing but arithmetic until told to stop.
#[inline(never)]
fn burn_cpu_for_profile(stop: &AtomicBool) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.rotate_left(7) ^ x.wrapping_mul(0x2545_f491_4f6c_dd1d));
        }
    }
    x
}

struct Burner(Arc<AtomicBool>, Option<std::thread::JoinHandle<u64>>);

impl Burner {
    fn start() -> Burner {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        Burner(stop, Some(std::thread::spawn(move || burn_cpu_for_profile(&s))))
    }
}

impl Drop for Burner {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        let _ = self.1.take().map(|t| t.join());
    }
}

/// Decodes a pprof profile and returns (samples of stacks holding `function`, all samples).
fn samples_in(pprof_bytes: &[u8], function: &str) -> (i64, i64) {
    let p = pprof::protos::Profile::decode(pprof_bytes).expect("a pprof Profile");
    assert_eq!(p.string_table[0], "", "pprof's string table starts with the empty string");
    let s = |i: i64| p.string_table[i as usize].as_str();
    let types: Vec<(&str, &str)> = p.sample_type.iter().map(|t| (s(t.ty), s(t.unit))).collect();
    assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
    let hits: std::collections::HashSet<u64> =
        p.function.iter().filter(|f| s(f.name).contains(function)).map(|f| f.id).collect();
    let locations: std::collections::HashMap<u64, u64> =
        p.location.iter().map(|l| (l.id, l.line[0].function_id)).collect();
    let mut with = 0;
    let mut all = 0;
    for sample in &p.sample {
        assert_eq!(sample.value.len(), 2);
        assert_eq!(sample.value[1], sample.value[0] * p.period, "cpu time is samples times the period");
        all += sample.value[0];
        if sample.location_id.iter().any(|l| hits.contains(&locations[l])) {
            with += sample.value[0];
        }
    }
    (with, all)
}

#[test]
fn profiles_on_demand() {
    // 1. Directly: 3 s at 200 Hz while one thread burns.
    let burner = Burner::start();
    let p = profile::take(ProfileRequest::new(Duration::from_secs(3)).frequency(200)).unwrap();
    drop(burner);
    assert_eq!(p.frequency(), 200);
    let (with, all) = samples_in(&p.render(Format::Pprof), "burn_cpu_for_profile");
    // One busy thread for 3 s at 200 Hz is about 600 samples; leave room for a slow machine.
    assert!(all >= 150, "only {all} samples");
    assert!(with * 2 >= all, "the burning function is in {with} of {all} samples");
    let svg = String::from_utf8(p.render(Format::Flamegraph)).unwrap();
    assert!(svg.contains("<svg") && svg.contains("burn_cpu_for_profile"), "{}", &svg[..svg.len().min(400)]);
    // The sampler's own frames are not in the stacks.
    assert!(!svg.contains("perf_signal_handler"), "signal handler frames left in the flamegraph");

    // 2. Bounded: one at a time, a duration and a frequency in range.
    // Two asked at once (no sleep to order them: whichever comes second, by up to 2 s, is refused).
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let both: Vec<_> = (0..2)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                profile::take(ProfileRequest::new(Duration::from_secs(2)))
            })
        })
        .collect();
    let both: Vec<_> = both.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(both.iter().filter(|r| r.is_ok()).count(), 1, "one profile completes");
    assert_eq!(both.iter().filter(|r| r.as_ref().err() == Some(&ProfileError::Busy)).count(), 1, "one is refused");
    let long = profile::take(ProfileRequest::new(Duration::from_secs(301))).unwrap_err();
    assert!(matches!(long, ProfileError::Duration { .. }), "{long:?}");
    assert!(long.to_string().contains("300 seconds"), "{long}");
    assert_eq!(
        profile::take(ProfileRequest::new(Duration::from_secs(1)).frequency(5000)).unwrap_err(),
        ProfileError::Frequency(5000)
    );

    // A requester that goes away frees the profiler at once (not after its 60 s).
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let gone = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_millis(300),
            profile::take_async(ProfileRequest::new(Duration::from_secs(60))),
        )
        .await
    });
    assert!(gone.is_err(), "the request was given up");
    let freed = Instant::now();
    let next = loop {
        match profile::take(ProfileRequest::new(Duration::from_secs(1))) {
            Err(ProfileError::Busy) if freed.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            other => break other,
        }
    };
    assert!(next.is_ok(), "{next:?}");
    assert!(freed.elapsed() < Duration::from_secs(10), "the abandoned 60 s profile kept the profiler");

    // 3. Over HTTP, behind a token.
    let app = |settings: EndpointSettings| -> Router { Router::new().merge(profile::router(settings)) };
    let settings = EndpointSettings::default().token("s3cret").max_duration(Duration::from_secs(5));
    let get = |app: Router, uri: &str, token: Option<&str>| {
        let mut req = Request::get(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        rt.block_on(async {
            let r = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
            let status = r.status();
            let ctype = r.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
            let www = r.headers().get("www-authenticate").is_some();
            let body = axum::body::to_bytes(r.into_body(), 64 << 20).await.unwrap().to_vec();
            (status, ctype, www, body)
        })
    };
    let (status, _, www, _) = get(app(settings.clone()), "/debug/pprof/profile?seconds=1", None);
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(www, "401 names the scheme");
    assert_eq!(get(app(settings.clone()), "/debug/pprof/profile?seconds=1", Some("wrong")).0, StatusCode::UNAUTHORIZED);
    // An empty token would let a request without the header in: refused where it is set.
    for blank in ["", "  "] {
        let set = std::panic::catch_unwind(|| EndpointSettings::default().token(blank));
        assert!(set.is_err(), "an empty token {blank:?} is refused");
    }
    let (status, _, _, body) = get(app(settings.clone()), "/debug/pprof/profile?seconds=10", Some("s3cret"));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("`seconds` is a whole number from 1 to 5; got `10`"));
    let (status, _, _, body) = get(app(settings.clone()), "/debug/pprof/flamegraph?frequency=fast", Some("s3cret"));
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("`frequency`"));
    assert_eq!(
        get(app(settings.clone().enabled(false)), "/debug/pprof/profile", Some("s3cret")).0,
        StatusCode::NOT_FOUND
    );

    let burner = Burner::start();
    let (status, ctype, _, body) =
        get(app(settings.clone()), "/debug/pprof/profile?seconds=2&frequency=250", Some("s3cret"));
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(ctype, "application/octet-stream");
    let (with, all) = samples_in(&body, "burn_cpu_for_profile");
    assert!(all >= 100 && with * 2 >= all, "{with} of {all} samples in the burning function");
    let (status, ctype, _, body) = get(app(settings.clone()), "/debug/pprof/flamegraph?seconds=1", Some("s3cret"));
    drop(burner);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ctype, "image/svg+xml");
    assert!(String::from_utf8_lossy(&body).contains("burn_cpu_for_profile"));

    // Two at once over HTTP: one is refused with 409 (whichever comes second, by up to 2 s).
    let statuses = rt.block_on(async {
        let ask = || {
            app(settings.clone()).oneshot(
                Request::get("/debug/pprof/profile?seconds=2")
                    .header("authorization", "Bearer s3cret")
                    .body(Body::empty())
                    .unwrap(),
            )
        };
        let started = Instant::now();
        let (a, b) = tokio::join!(ask(), ask());
        assert!(started.elapsed() >= Duration::from_secs(2));
        let mut statuses = [a.unwrap().status(), b.unwrap().status()];
        statuses.sort();
        statuses
    });
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);

    // Last (it closes the profiler for good): `interrupt`, for a shutdown signal, ends the
    // profile being taken with what was sampled, and refuses later ones.
    let long = std::thread::spawn(|| {
        loop {
            match profile::take(ProfileRequest::new(Duration::from_secs(60))) {
                Err(ProfileError::Busy) => std::thread::sleep(Duration::from_millis(5)),
                other => break other,
            }
        }
    });
    let waiting = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        if matches!(profile::take(ProfileRequest::new(Duration::from_secs(1))), Err(ProfileError::Busy)) {
            break;
        }
        assert!(waiting.elapsed() < Duration::from_secs(20), "the 60 s profile never started");
    }
    profile::interrupt();
    let cut = long.join().unwrap().expect("an interrupted profile is still a profile");
    assert!(cut.duration() < Duration::from_secs(30), "{:?}", cut.duration());
    assert_eq!(profile::take(ProfileRequest::new(Duration::from_secs(1))).unwrap_err(), ProfileError::Stopped);
}
