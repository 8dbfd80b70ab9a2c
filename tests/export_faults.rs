//! The fault-injection suite of span export: the sample service (`obs-fault-service`, configured
//! only through the standard `OTEL_*` variables) against a mock OTLP/HTTP collector in each mode:
//! accept, refuse, blackhole, slow, 429 with `Retry-After`, 503 without, 400. The collector
//! decodes every request with the official `opentelemetry-proto` types.
//!
//! For every mode, with numeric criteria:
//! - every span is accounted for: produced = exported + dropped (by reason), exactly (nothing is
//!   left queued after shutdown: what was is counted as `shutdown`);
//! - what obs counted as exported is what the collector received;
//! - the process exits within the shutdown deadline (3 s) plus a margin;
//! - memory stays flat (the queue is bounded);
//! - one warning per loss episode, however many batches fail;
//! - the mode's own promise: the drop reason, retries only where OTLP allows them, the backoff a
//!   throttling collector asks for, `OTEL_EXPORTER_OTLP_TIMEOUT` bounding an export.

use std::io::{BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use obs_tests::peers;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde_json::Value;

#[derive(Clone, Copy, Debug)]
enum Mode {
    Accept,
    Refuse,
    /// Reads the request, never answers, keeps the connection until the client closes it.
    Blackhole,
    /// Answers 200 after this long.
    Slow(Duration),
    /// Answers this status, with this `Retry-After` (seconds) if any.
    Status(u16, Option<u64>),
    /// Answers 200 with a partial success refusing this many spans of each request.
    Partial(i64),
}

/// What the collector saw: each request's arrival, its spans, and for a blackhole how long the
/// client held the connection before giving up.
#[derive(Default)]
struct Seen {
    requests: Vec<(Instant, usize)>,
    held: Vec<Duration>,
    /// Each request's headers (a name may repeat).
    headers: Vec<Vec<(String, String)>>,
    connections: usize,
}

struct Collector {
    url: String,
    seen: Arc<Mutex<Seen>>,
}

fn collector(mode: Mode) -> Collector {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    if let Mode::Refuse = mode {
        // Nothing listens on the port any more: every connection is refused.
        drop(listener);
        return Collector { url, seen };
    }
    let shared = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            shared.lock().unwrap().connections += 1;
            let shared = shared.clone();
            std::thread::spawn(move || serve(conn, mode, &shared));
        }
    });
    Collector { url, seen }
}

fn serve(conn: TcpStream, mode: Mode, seen: &Mutex<Seen>) {
    let Ok(read_half) = conn.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    let mut conn = conn;
    while let Ok(Some(req)) = peers::read_request(&mut reader) {
        let arrived = Instant::now();
        let spans = ExportTraceServiceRequest::decode(&req.body[..])
            .expect("an OTLP ExportTraceServiceRequest")
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        let mut s = seen.lock().unwrap();
        s.requests.push((arrived, spans));
        s.headers.push(req.headers.clone());
        drop(s);
        let (status, retry_after) = match mode {
            Mode::Blackhole => {
                // Until the client gives up and closes.
                let mut sink = [0u8; 1024];
                while matches!(reader.get_mut().read(&mut sink), Ok(n) if n > 0) {}
                seen.lock().unwrap().held.push(arrived.elapsed());
                return;
            }
            Mode::Slow(d) => {
                std::thread::sleep(d);
                (200, None)
            }
            Mode::Status(s, r) => (s, r),
            Mode::Accept | Mode::Refuse | Mode::Partial(_) => (200, None),
        };
        let mut response = ExportTraceServiceResponse::default();
        if let Mode::Partial(k) = mode {
            response.partial_success = Some(ExportTracePartialSuccess {
                rejected_spans: k.min(spans as i64),
                error_message: "span name too long".into(),
            });
        }
        let body = if status == 200 { response.encode_to_vec() } else { Vec::new() };
        let mut head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(secs) = retry_after {
            head.push_str(&format!("Retry-After: {secs}\r\n"));
        }
        head.push_str("\r\n");
        if conn.write_all(head.as_bytes()).and_then(|()| conn.write_all(&body)).is_err() {
            return;
        }
    }
}

struct Run {
    report: Value,
    /// The service's JSON log lines.
    logs: Vec<Value>,
}

impl Run {
    fn dropped(&self, reason: &str) -> u64 {
        self.report["dropped"][reason].as_u64().unwrap()
    }

    fn total_dropped(&self) -> u64 {
        self.report["dropped"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum()
    }

    fn n(&self, key: &str) -> u64 {
        self.report[key].as_u64().unwrap()
    }

    fn warnings(&self, prefix: &str) -> usize {
        self.logs
            .iter()
            .filter(|l| l["level"] == "WARN" && l["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
            .count()
    }
}

/// Runs the sample service against `url` with `vars` on top of the suite's defaults.
fn run(name: &str, url: &str, vars: &[(&str, &str)]) -> Run {
    let report = std::env::temp_dir().join(format!("obs-fault-{name}-{}.json", std::process::id()));
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_obs-fault-service"));
    cmd.env_clear()
        .env("OBS_ENV", "production")
        .env("OTEL_TRACES_SAMPLER", "always_on")
        .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url)
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "1000")
        .env("OTEL_BSP_EXPORT_TIMEOUT", "5000")
        .env("OTEL_BSP_MAX_QUEUE_SIZE", "2048")
        .env("OBS_PROFILING", "false")
        .env("FAULT_REPORT", &report);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{name}: {:?}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let logs = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let run = Run { report, logs };
    // The invariants of every mode.
    assert_eq!(
        run.n("produced"),
        run.n("exported") + run.total_dropped(),
        "{name}: every span exported or counted as dropped: {}",
        run.report
    );
    assert!(run.n("shutdown_ms") < 3_000 + 2_000, "{name}: shutdown took {} ms (deadline 3 s)", run.n("shutdown_ms"));
    let (mid, end) = (run.n("rss_mid_kib"), run.n("rss_end_kib"));
    assert!(end < mid + 32 * 1024, "{name}: memory grew from {mid} KiB to {end} KiB");
    assert!(run.warnings("span export failed") <= 1, "{name}: one warning per loss episode");
    run
}

fn received(c: &Collector) -> u64 {
    c.seen.lock().unwrap().requests.iter().map(|(_, n)| *n as u64).sum()
}

#[test]
fn accept() {
    let c = collector(Mode::Accept);
    let run = run("accept", &c.url, &[]);
    assert_eq!(run.total_dropped(), 0, "{}", run.report);
    assert_eq!(run.n("exported"), run.n("produced"));
    assert_eq!(received(&c), run.n("exported"), "the collector got what obs counted");
    assert_eq!(run.warnings("span export failed"), 0);
}

#[test]
fn refuse() {
    let c = collector(Mode::Refuse);
    let run = run("refuse", &c.url, &[]);
    assert_eq!(run.n("exported"), 0);
    assert!(run.dropped("unreachable") > 0, "{}", run.report);
    assert_eq!(run.dropped("export_failed"), 0, "a refused connection is `unreachable`: {}", run.report);
    assert_eq!(run.warnings("span export failed"), 1);
    let line =
        run.logs.iter().find(|l| l["message"].as_str().is_some_and(|m| m.starts_with("span export failed"))).unwrap();
    assert_eq!(line["reason"], "unreachable");
}

#[test]
fn blackhole_and_the_timeout_variable() {
    let c = collector(Mode::Blackhole);
    let run = run("blackhole", &c.url, &[]);
    assert_eq!(run.n("exported"), 0);
    assert!(run.dropped("timeout") + run.dropped("shutdown") > 0, "{}", run.report);
    let line =
        run.logs.iter().find(|l| l["message"].as_str().is_some_and(|m| m.starts_with("span export failed"))).unwrap();
    assert_eq!(line["reason"], "timeout");
    assert!(line["error"].as_str().unwrap().contains("1000 ms"), "{line}");
    // OTEL_EXPORTER_OTLP_TIMEOUT=1000: each attempt is given up after about a second (the
    // default would wait 10 s); the margin is for a loaded machine.
    // Spans lost at the shutdown deadline are said in the logs, whose last flush keeps time for it.
    if run.dropped("shutdown") > 0 {
        assert_eq!(run.warnings("spans not exported by the shutdown deadline"), 1, "{:#?}", run.logs);
    }
    let held = c.seen.lock().unwrap().held.clone();
    assert!(!held.is_empty());
    for d in &held {
        assert!(*d < Duration::from_millis(3_000), "an export held the connection {d:?}");
    }
}

#[test]
fn slow() {
    let c = collector(Mode::Slow(Duration::from_secs(3)));
    let run = run("slow", &c.url, &[]);
    assert!(run.dropped("timeout") > 0, "{}", run.report);
    assert_eq!(run.n("exported") + run.total_dropped(), run.n("produced"));
}

#[test]
fn throttled_with_retry_after() {
    let c = collector(Mode::Status(429, Some(2)));
    let run = run("throttled", &c.url, &[]);
    assert_eq!(run.n("exported"), 0);
    assert!(run.dropped("throttled") > 0, "{}", run.report);
    let requests = c.seen.lock().unwrap().requests.clone();
    // Retry-After: 2 is honoured: while the service runs (about 3 s), a request every 2 s at
    // most; at shutdown each batch still queued gets one attempt (2048 / 512 = 4). Without
    // backoff it was about 200 a second.
    let run_secs = run.n("run_ms") / 1000 + 1;
    assert!(
        requests.len() as u64 <= run_secs / 2 + 2 + 5,
        "{} requests in a {run_secs} s run: {:?}",
        requests.len(),
        requests.iter().map(|(t, _)| t.duration_since(requests[0].0)).collect::<Vec<_>>()
    );
    // The first retry waited the 2 s asked for.
    assert!(requests.len() >= 2);
    let gap = requests[1].0.duration_since(requests[0].0);
    assert!(gap >= Duration::from_millis(1_900), "the retry came after {gap:?}");
}

#[test]
fn unavailable_backs_off() {
    let c = collector(Mode::Status(503, None));
    let run = run("unavailable", &c.url, &[]);
    assert!(run.dropped("unavailable") > 0, "{}", run.report);
    let requests = c.seen.lock().unwrap().requests.len();
    // Exponential backoff from 0.5 s (jittered down to 0.25 s at least), doubling: a handful of
    // attempts in a 3 s run, plus one per queued batch at shutdown.
    assert!(requests <= 8 + 5, "{requests} requests");
}

#[test]
fn rejected_is_never_retried() {
    let c = collector(Mode::Status(400, None));
    let run = run("rejected", &c.url, &[]);
    assert_eq!(run.n("exported"), 0);
    assert!(run.dropped("rejected") > 0, "{}", run.report);
    // Each batch was sent once: the spans the collector saw are exactly those counted rejected.
    assert_eq!(received(&c), run.dropped("rejected"), "{}", run.report);
}

/// `OTEL_EXPORTER_OTLP_HEADERS` read once, by obs: a name given twice is sent once, with the last
/// value (the SDK reads the variable again on its own; what obs sets wins), percent-decoded.
#[test]
fn export_headers_are_sent_once() {
    let c = collector(Mode::Accept);
    let run = run(
        "headers",
        &c.url,
        &[
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-scope-orgid=first,x-scope-orgid=tenant-b,authorization=Basic%20YWxh"),
            ("FAULT_ROUNDS", "3"),
        ],
    );
    assert_eq!(run.n("exported"), run.n("produced"));
    let seen = c.seen.lock().unwrap();
    assert!(!seen.headers.is_empty());
    for headers in &seen.headers {
        let values =
            |name: &str| headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
        assert_eq!(values("x-scope-orgid"), ["tenant-b"], "{headers:?}");
        assert_eq!(values("authorization"), ["Basic YWxh"], "{headers:?}");
    }
}

/// Bursts above what one exporter sends: the second exporter takes full batches (its own
/// connection), and the accounting stays exact with two threads exporting.
#[test]
fn bursts_engage_the_second_exporter() {
    let c = collector(Mode::Accept);
    let run = run(
        "burst",
        &c.url,
        &[
            ("FAULT_ROUNDS", "10"),
            ("FAULT_PER_ROUND", "20000"),
            ("FAULT_PAUSE_MS", "50"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "16384"),
        ],
    );
    assert_eq!(received(&c), run.n("exported"), "{}", run.report);
    assert!(run.n("exported") > 0);
    assert!(c.seen.lock().unwrap().connections >= 2, "the second exporter sent batches on its own connection");
}

/// An accepted request whose response refuses some spans (OTLP partial success): those are
/// counted as `rejected`, not exported, and said once.
#[test]
fn partial_success_counts_the_refused_spans() {
    let c = collector(Mode::Partial(5));
    let run = run("partial", &c.url, &[]);
    let requests = c.seen.lock().unwrap().requests.clone();
    let refused: u64 = requests.iter().map(|(_, n)| (*n as u64).min(5)).sum();
    assert_eq!(run.dropped("rejected"), refused, "{}", run.report);
    assert_eq!(run.n("exported") + refused, received(&c), "{}", run.report);
    assert_eq!(run.warnings("span export failed"), 1);
}
