//! Continuous profiling against a fake Grafana Pyroscope 1.x server in-process: what is pushed
//! follows the push API (`POST /push.v1.PusherService/Push`, `application/proto`, a
//! `PushRequest`), carries `service_name`, `environment` and `version`, one series per endpoint
//! or task, and each series' profile decodes as pprof and holds the function that burned CPU
//! there. The messages are decoded with types written here from Pyroscope's `push.proto`, not
//! with obs's own. Span profiles: the samples taken in a sampled request or task carry its span's
//! id as the `span_id` sample label, the id its exported span names in `pyroscope.profile.id`;
//! unsampled requests' samples carry none.

#[path = "support/capture.rs"]
mod capture;

use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::Request;
use axum::routing::get;
use obs_runtime::config::Config;
use obs_runtime::http::ObsLayer;
use obs_runtime::task::Task;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use pprof::protos::Message as _;
use tower::ServiceExt as _;

// grafana/pyroscope api/push/v1/push.proto and api/types/v1/types.proto.
#[derive(Clone, PartialEq, prost::Message)]
struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    series: Vec<RawProfileSeries>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct RawProfileSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<LabelPair>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<RawSample>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct LabelPair {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}
#[derive(Clone, PartialEq, prost::Message)]
struct RawSample {
    #[prost(bytes = "vec", tag = "1")]
    raw_profile: Vec<u8>,
    #[prost(string, tag = "2")]
    id: String,
}

struct Push {
    path: String,
    content_type: String,
    tenant: Option<String>,
    authorization: Option<String>,
    request: PushRequest,
}

/// Answers every push with 200 and an empty `PushResponse`; keeps what it got.
fn fake_pyroscope() -> (Arc<Mutex<Vec<Push>>>, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let pushes = Arc::new(Mutex::new(Vec::new()));
    let shared = pushes.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let shared = shared.clone();
            std::thread::spawn(move || -> std::io::Result<()> {
                let mut reader = BufReader::new(conn.try_clone()?);
                let mut conn = conn;
                while let Some(req) = obs_tests::peers::read_request(&mut reader)? {
                    let request = prost::Message::decode(&req.body[..]).expect("a pyroscope PushRequest");
                    let content_type = req.header("content-type").unwrap_or_default().to_owned();
                    let tenant = req.header("x-scope-orgid").map(str::to_owned);
                    let authorization = req.header("authorization").map(str::to_owned);
                    shared.lock().unwrap().push(Push { path: req.path, content_type, tenant, authorization, request });
                    write!(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/proto\r\nContent-Length: 0\r\n\r\n")?;
                }
                Ok(())
            });
        }
    });
    (pushes, url)
}

/// Samples of the request's and the task's function in `pushes`, whatever their labels.
/// Samples of the function `function`, by their `span_id` label (`None`: without one).
fn samples_by_span(pushes: &[Push], function: &str) -> BTreeMap<Option<String>, i64> {
    let mut out = BTreeMap::new();
    for series in pushes.iter().flat_map(|p| &p.request.series) {
        for sample in &series.samples {
            let p = pprof::protos::Profile::decode(&sample.raw_profile[..]).expect("pprof");
            let name = |i: i64| p.string_table[i as usize].as_str();
            let functions: BTreeMap<u64, &str> = p.function.iter().map(|f| (f.id, name(f.name))).collect();
            let function_of: BTreeMap<u64, u64> = p.location.iter().map(|l| (l.id, l.line[0].function_id)).collect();
            for s in &p.sample {
                if s.location_id.iter().any(|l| functions[&function_of[l]].contains(function)) {
                    let span = s.label.iter().find(|l| name(l.key) == "span_id").map(|l| name(l.str).to_owned());
                    *out.entry(span).or_insert(0) += s.value[0];
                }
            }
        }
    }
    out
}

fn sampled(pushes: &[Push]) -> (i64, i64) {
    let (mut in_request, mut in_task) = (0, 0);
    for series in pushes.iter().flat_map(|p| &p.request.series) {
        for sample in &series.samples {
            for (name, count) in functions(&sample.raw_profile) {
                if name.contains("burn_cpu_in_request") {
                    in_request += count;
                } else if name.contains("burn_cpu_in_task") {
                    in_task += count;
                }
            }
        }
    }
    (in_request, in_task)
}

#[inline(never)]
fn burn_cpu_in_request(ms: u64) -> u64 {
    let end = Instant::now() + Duration::from_millis(ms);
    let mut x = 1u64;
    while Instant::now() < end {
        for _ in 0..5_000 {
            x = std::hint::black_box(x.rotate_left(5) ^ x.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
    }
    x
}

#[inline(never)]
fn burn_cpu_in_task(ms: u64) -> u64 {
    let end = Instant::now() + Duration::from_millis(ms);
    let mut x = 3u64;
    while Instant::now() < end {
        for _ in 0..5_000 {
            x = std::hint::black_box(x.rotate_right(3) ^ x.wrapping_mul(0x2545_f491_4f6c_dd1d));
        }
    }
    x
}

/// Function names of the stacks in a pprof profile, with their sample counts.
fn functions(pprof_bytes: &[u8]) -> BTreeMap<String, i64> {
    let p = pprof::protos::Profile::decode(pprof_bytes).expect("raw_profile is a pprof Profile");
    // Pyroscope makes a series of every sample label: pushed profiles carry none per thread.
    let thread = p.string_table.iter().position(|s| s == "thread").map(|i| i as i64);
    assert!(p.sample.iter().all(|s| s.label.iter().all(|l| Some(l.key) != thread)), "thread labels pushed");
    let names: BTreeMap<u64, &str> =
        p.function.iter().map(|f| (f.id, p.string_table[f.name as usize].as_str())).collect();
    let by_location: BTreeMap<u64, u64> = p.location.iter().map(|l| (l.id, l.line[0].function_id)).collect();
    let mut out = BTreeMap::new();
    for s in &p.sample {
        for l in &s.location_id {
            *out.entry(names[&by_location[l]].to_owned()).or_insert(0) += s.value[0];
        }
    }
    out
}

#[test]
fn continuous_profiles_reach_pyroscope_labelled_by_endpoint_and_task() {
    let (pushes, url) = fake_pyroscope();
    let captured = capture::Captured::default();
    let dir = std::env::temp_dir().join(format!("obs-profile-pyroscope-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let vars: BTreeMap<&str, String> = [
        ("OBS_ENV", "staging".to_owned()),
        ("OTEL_SERVICE_NAME", "checkout-svc".to_owned()),
        ("OTEL_RESOURCE_ATTRIBUTES", "service.version=1.2.3".to_owned()),
        ("PYROSCOPE_SERVER_ADDRESS", url),
        ("OBS_PROFILING_HZ", "250".to_owned()),
        ("PYROSCOPE_TENANT_ID", "team-checkout".to_owned()),
        ("PYROSCOPE_BASIC_AUTH_USER", "pusher".to_owned()),
        ("PYROSCOPE_BASIC_AUTH_PASSWORD", "s3cret".to_owned()),
        // Half the requests sampled: span profiles for those, none for the others.
        ("OTEL_TRACES_SAMPLER_ARG", "0.5".to_owned()),
    ]
    .into();
    let config = Config::from_vars(|k| vars.get(k).cloned())
        .unwrap()
        .spans_file(dir.join("spans.jsonl"))
        .profiling_interval(Duration::from_secs(2))
        .log_writer(captured.writer());
    let guard = obs_runtime::init(config).unwrap();

    let app = Router::new()
        .route("/burn/{ms}", get(|Path(ms): Path<u64>| async move { burn_cpu_in_request(ms).to_string() }))
        .layer(ObsLayer::new());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // Burn until the pushes so far hold enough of each function's samples (and two windows at
    // least), however little CPU a loaded machine gives this process: the test waits on what it
    // checks, not on the clock. The bound is only there to fail rather than hang.
    let start = Instant::now();
    loop {
        let (in_request, in_task) = sampled(&pushes.lock().unwrap());
        let by_span = samples_by_span(&pushes.lock().unwrap(), "burn_cpu_in_request");
        let (with_span, without) =
            (by_span.iter().filter(|(s, _)| s.is_some()).map(|(_, c)| c).sum::<i64>(), by_span.get(&None).copied());
        if pushes.lock().unwrap().len() >= 2
            && in_request >= 100
            && in_task >= 100
            && with_span >= 20
            && without.unwrap_or(0) >= 20
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "after 300 s: {} pushes, {in_request} request samples ({with_span} with a span id, {without:?} without), \
             {in_task} task samples",
            pushes.lock().unwrap().len()
        );
        let r = rt.block_on(app.clone().oneshot(Request::get("/burn/150").body(Body::empty()).unwrap())).unwrap();
        assert!(r.status().is_success());
        rt.block_on(Task::new("burn_task").run(async { Ok::<_, std::convert::Infallible>(burn_cpu_in_task(150)) }))
            .unwrap();
    }
    // The last window is pushed at shutdown.
    assert!(guard.shutdown(), "the last window pushed within the shutdown deadline");

    let pushes = pushes.lock().unwrap();
    assert!(pushes.len() >= 2, "{} pushes with a 2 s interval", pushes.len());
    let mut request_fn = 0;
    let mut task_fn = 0;
    let mut request_fn_elsewhere = 0;
    for push in pushes.iter() {
        assert_eq!(push.path, "/push.v1.PusherService/Push");
        assert_eq!(push.content_type, "application/proto");
        assert_eq!(push.tenant.as_deref(), Some("team-checkout"));
        // base64("pusher:s3cret")
        assert_eq!(push.authorization.as_deref(), Some("Basic cHVzaGVyOnMzY3JldA=="));
        assert!(!push.request.series.is_empty());
        for series in &push.request.series {
            let labels: BTreeMap<&str, &str> =
                series.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
            assert_eq!(labels.get("__name__"), Some(&"process_cpu"), "{labels:?}");
            assert_eq!(labels.get("service_name"), Some(&"checkout-svc"), "{labels:?}");
            assert_eq!(labels.get("environment"), Some(&"staging"), "{labels:?}");
            assert_eq!(labels.get("version"), Some(&"1.2.3"), "{labels:?}");
            assert_eq!(series.samples.len(), 1);
            let f = functions(&series.samples[0].raw_profile);
            let in_request = f.iter().filter(|(n, _)| n.contains("burn_cpu_in_request")).map(|(_, c)| c).sum::<i64>();
            let in_task = f.iter().filter(|(n, _)| n.contains("burn_cpu_in_task")).map(|(_, c)| c).sum::<i64>();
            match (labels.get("endpoint"), labels.get("task")) {
                (Some(&"/burn/{ms}"), None) => {
                    request_fn += in_request;
                    assert_eq!(in_task, 0, "a task's samples in the endpoint's series");
                    assert!(f.contains_key("endpoint: /burn/{ms}"), "the label is a frame too: {:?}", f.keys());
                }
                (None, Some(&"burn_task")) => {
                    task_fn += in_task;
                    assert_eq!(in_request, 0, "a request's samples in the task's series");
                }
                (None, None) => request_fn_elsewhere += in_request,
                other => panic!("unexpected labels {other:?} in {labels:?}"),
            }
        }
    }
    // What the loop waited for, now counted under the right labels only.
    assert!(request_fn >= 100, "{request_fn} samples of the request's function under its endpoint");
    assert!(task_fn >= 100, "{task_fn} samples of the task's function under its name");
    assert_eq!(request_fn_elsewhere, 0, "request samples without the endpoint label");

    // Span profiles: every span id on a sample is a sampled request's server span, exported with
    // `pyroscope.profile.id` naming it.
    let text = std::fs::read_to_string(dir.join("spans.jsonl")).unwrap();
    let mut profiled = BTreeMap::new();
    for line in text.lines() {
        let request: ExportTraceServiceRequest = serde_json::from_str(line).unwrap();
        for span in request.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans) {
            let hex: String = span.span_id.iter().map(|b| format!("{b:02x}")).collect();
            let attribute = span.attributes.iter().find(|kv| kv.key == "pyroscope.profile.id");
            if let Some(kv) = attribute {
                assert_eq!(
                    kv.value.as_ref().and_then(|v| v.value.clone()),
                    Some(AnyValue::StringValue(hex.clone())),
                    "{}: the attribute names the span itself",
                    span.name
                );
                profiled.insert(hex, span.name.clone());
            } else {
                assert!(span.parent_span_id.len() == 8, "{}: a sampled root without pyroscope.profile.id", span.name);
            }
        }
    }
    let by_span = samples_by_span(&pushes, "burn_cpu_in_request");
    let mut labelled_requests = 0;
    for (span, count) in &by_span {
        let Some(span) = span else { continue };
        assert_eq!(
            profiled.get(span).map(String::as_str),
            Some("GET /burn/{ms}"),
            "span_id {span} on {count} samples is no exported server span: {profiled:?}"
        );
        labelled_requests += 1;
    }
    assert!(labelled_requests >= 1 && by_span.get(&None).copied().unwrap_or(0) >= 20, "{by_span:?}");
    // A task's root span is a local root too: its samples carry its id.
    let task_spans: Vec<String> = samples_by_span(&pushes, "burn_cpu_in_task").into_keys().flatten().collect();
    assert!(!task_spans.is_empty(), "no task sample carries its span");
    for span in task_spans {
        assert_eq!(profiled.get(&span).map(String::as_str), Some("task.burn_task"), "{span}: {profiled:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
