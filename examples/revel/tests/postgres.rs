//! Revel on a real PostgreSQL. `tests/e2e/infra.sh` starts a throwaway cluster (Debian's
//! `postgresql`, loopback only) and runs this with `--features postgres-e2e`, naming the
//! database in `REVEL_TEST_POSTGRES_URL`:
//!
//! - the real binary on that database, its spans sent to an OTLP receiver that decodes them with
//!   the official types: the checkout's queries are CLIENT spans under the flow's steps, with
//!   `db.system.name=postgresql`, `db.namespace`, `server.address`/`server.port`, the row lock's
//!   `FOR UPDATE`, and no literal anywhere;
//! - many buyers of the last seat at once, in process: exactly one ticket;
//! - a value planted in a literal of a query's text never reaches a span or a log line.

#[path = "../../../tests/support/capture.rs"]
mod capture;
#[path = "../../../tests/support/otlp.rs"]
mod otlp;
mod support {
    pub mod raw_http;
}
use support::raw_http;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

fn url() -> String {
    std::env::var("REVEL_TEST_POSTGRES_URL")
        .expect("REVEL_TEST_POSTGRES_URL names the test database (tests/e2e/infra.sh sets it)")
}

fn attr(span: &Span, key: &str) -> Option<Value> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone()).and_then(|v| v.value)
}

fn post(addr: SocketAddr, path: &str, body: &str) -> String {
    raw_http::request(addr, "POST", path, body)
}

/// The binary on PostgreSQL: a free checkout and a paid one, then SIGTERM (spans flushed).
#[test]
fn the_binary_on_postgresql_traces_its_real_queries() {
    let (receiver, traces) = otlp::Receiver::start();
    let addr: SocketAddr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut revel = Command::new(env!("CARGO_BIN_EXE_revel"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("REVEL_ADDR", addr.to_string())
        .env("DATABASE_URL", url())
        .env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces)
        .env("OBS_PROFILING", "false")
        .env("REVEL_STRIPE_LATENCY_MS", "0")
        .env("REVEL_STRIPE_FAILURE_RATE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = revel.stdout.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::BufReader::new(stdout).read_to_string(&mut s);
        s
    });
    let up = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(up.elapsed() < Duration::from_secs(120), "revel did not start");
        assert!(revel.try_wait().unwrap().is_none(), "revel exited at start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let free = post(addr, "/events/1/tiers/2/checkout", r#"{"user_id":5,"email":"pg.buyer@example.org"}"#);
    assert!(free.starts_with("HTTP/1.1 200"), "{free}");
    let paid = post(
        addr,
        "/events/1/tiers/1/checkout",
        r#"{"user_id":6,"email":"pg.payer@example.org","card_number":"4111 1111 1111 1111"}"#,
    );
    assert!(paid.starts_with("HTTP/1.1 200"), "{paid}");
    let metrics = raw_http::request(addr, "GET", "/metrics", "");
    assert!(metrics.contains(r#"revel_database_query_duration_seconds_count{query_type="update"}"#), "{metrics}");
    assert!(metrics.contains(r#"revel_database_pool_connections{state="used"}"#), "{metrics}");
    assert!(Command::new("kill").args(["-TERM", &revel.id().to_string()]).status().unwrap().success());
    assert!(revel.wait().unwrap().success());
    let logs = logs.join().unwrap();

    let spans = receiver.spans();
    let checkout = spans
        .iter()
        .find(|s| {
            s.name == "ticket.checkout"
                && spans.iter().any(|c| c.parent_span_id == s.span_id && c.name == "payment.create")
        })
        .expect("the paid checkout's span");
    let in_trace: Vec<&Span> = spans.iter().filter(|s| s.trace_id == checkout.trace_id).collect();
    let step = |name: &str| in_trace.iter().find(|s| s.name == name).copied().unwrap_or_else(|| panic!("{name}"));
    let lock = step("ticket.lock_tier");
    let tx =
        in_trace.iter().find(|s| s.name == "transaction" && s.parent_span_id == lock.span_id).expect("its transaction");
    let select = in_trace
        .iter()
        .find(|s| s.parent_span_id == tx.span_id && s.name == "SELECT tiers events")
        .expect("the row lock's SELECT");
    let text = match attr(select, "db.query.text") {
        Some(Value::StringValue(t)) => t,
        other => panic!("{other:?}"),
    };
    assert!(text.ends_with("FOR UPDATE OF t") && text.contains("t.id = $1"), "{text}");
    for (k, v) in [("db.system.name", "postgresql"), ("db.operation.name", "SELECT"), ("server.address", "127.0.0.1")] {
        assert_eq!(attr(select, k), Some(Value::StringValue(v.into())), "{k}");
    }
    let port = url().rsplit_once(':').unwrap().1.split('/').next().unwrap().parse::<i64>().unwrap();
    assert_eq!(attr(select, "server.port"), Some(Value::IntValue(port)));
    assert!(matches!(attr(select, "db.namespace"), Some(Value::StringValue(n)) if !n.is_empty()));
    assert_eq!(select.kind, SpanKind::Client as i32);
    let names = |parent: &Span| -> Vec<String> {
        let mut n: Vec<&Span> = in_trace.iter().filter(|s| s.parent_span_id == parent.span_id).copied().collect();
        n.sort_by_key(|s| s.start_time_unix_nano);
        n.iter().map(|s| s.name.clone()).collect()
    };
    assert_eq!(names(tx), ["BEGIN", "SELECT tiers events", "UPDATE tiers", "COMMIT"]);
    let create = step("ticket.create");
    let create_tx = in_trace.iter().find(|s| s.name == "transaction" && s.parent_span_id == create.span_id).unwrap();
    assert_eq!(names(create_tx), ["BEGIN", "SELECT events", "INSERT tickets", "COMMIT"]);
    // No literal, no planted value: in spans, and in log lines.
    for s in &spans {
        // What a span says (not its ids and times, whose digits may spell 4111).
        let dump = format!("{} {:?} {:?} {:?}", s.name, s.attributes, s.events, s.status);
        assert!(!dump.contains("pg.buyer") && !dump.contains("pg.payer") && !dump.contains("4111"), "{dump}");
        if let Some(Value::StringValue(t)) = attr(s, "db.query.text") {
            assert!(!t.contains('\''), "a literal in {}: {t}", s.name);
        }
    }
    assert!(!logs.contains("pg.buyer") && !logs.contains("4111 1111"), "{logs}");
}

/// Sixteen buyers of the last seat, at once, in process: one ticket.
#[test]
fn parallel_buyers_of_the_last_seat_never_oversell_on_postgresql() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let (app, _jobs) = revel::App::new(revel::external::Externals::instant(), &url(), None).await.unwrap();
        // An event of its own, open, with one seat left.
        let event: i64 = sqlx::query_scalar(
            "INSERT INTO events (org_id, name, status, visibility) VALUES (1, 'Race', 'open', 'public') RETURNING id",
        )
        .fetch_one(app.db.sqlx())
        .await
        .unwrap();
        let tier: i64 = sqlx::query_scalar(
            "INSERT INTO tiers (event_id, price_cents, capacity, sold, payment_method) VALUES ($1, 0, 3, 2, 'free') RETURNING id",
        )
        .bind(event)
        .fetch_one(app.db.sqlx())
        .await
        .unwrap();
        let buyers: Vec<_> = (2..18u64)
            .map(|user_id| {
                let app = app.clone();
                tokio::spawn(async move {
                    let req: revel::flows::CheckoutRequest =
                        serde_json::from_value(serde_json::json!({"user_id": user_id, "email": "x@example.org"})).unwrap();
                    revel::flows::checkout(&app, event as u64, tier as u64, &req).await
                })
            })
            .collect();
        let mut issued = 0;
        for b in buyers {
            match b.await.unwrap() {
                Ok(_) => issued += 1,
                Err(revel::FlowError::SoldOut) => {}
                Err(e) => panic!("a buyer failed otherwise: {e:?}"),
            }
        }
        assert_eq!(issued, 1);
        let (sold, tickets): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT sold FROM tiers WHERE id = $1), (SELECT count(*) FROM tickets WHERE tier_id = $1)",
        )
        .bind(tier)
        .fetch_one(app.db.sqlx())
        .await
        .unwrap();
        assert_eq!((sold, tickets), (3, 1));
    });
}

/// A literal inlined into a query's text (here an email) is replaced in the span and the
/// slow-query line; a failure carries the SQLSTATE.
#[test]
fn a_literal_in_the_text_never_leaves_the_process() {
    let (receiver, traces) = otlp::Receiver::start();
    let (captured, config) = capture::config(traces);
    let guard = obs_runtime::init(revel::configure(config).db_slow_query(Some(Duration::from_micros(1)))).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let (app, _jobs) = revel::App::new(revel::external::Externals::instant(), &url(), None).await.unwrap();
        let found: Option<i64> =
            sqlx::query_scalar("SELECT id FROM users WHERE email = 'planted.pg@example.org' AND id > 12345")
                .fetch_optional(&app.db)
                .await
                .unwrap();
        assert_eq!(found, None);
        let failed = sqlx::query(
            "INSERT INTO tiers (event_id, price_cents, capacity, payment_method) VALUES (1, -5, 1, 'free')",
        )
        .execute(&app.db)
        .await;
        assert!(failed.is_err(), "the CHECK refuses a negative price");
    });
    assert!(guard.shutdown());
    let spans = receiver.spans();
    let select = spans
        .iter()
        .find(|s| s.name == "SELECT users" && format!("{:?}", attr(s, "db.query.text")).contains("email = ?"))
        .expect("the SELECT");
    assert_eq!(
        attr(select, "db.query.text"),
        Some(Value::StringValue("SELECT id FROM users WHERE email = ? AND id > ?".into()))
    );
    let insert = spans.iter().find(|s| s.name == "INSERT tiers").expect("the INSERT");
    assert_eq!(attr(insert, "db.response.status_code"), Some(Value::StringValue("23514".into())), "check_violation");
    assert_eq!(attr(insert, "error.type"), Some(Value::StringValue("23514".into())));
    for s in &spans {
        assert!(!format!("{s:?}").contains("planted"), "{s:?}");
    }
    let logs = captured.text();
    assert!(logs.contains("slow database query") && !logs.contains("planted"), "{logs}");
}
