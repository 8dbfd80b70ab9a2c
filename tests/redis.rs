//! Redis telemetry on a real Redis server (`OBS_TEST_REDIS_URL`; `tests/e2e/infra.sh` starts one
//! and runs this with `--features redis-e2e`): each command inside a span a CLIENT span with
//! OpenTelemetry's Redis attributes, decoded from OTLP with the official types; no key or value
//! in any span; a server error with its prefix and without its text (which quotes the
//! arguments); a pipeline as one `BATCH` span; a command outside any span timed, not traced;
//! cache hits and misses counted.

#[path = "support/capture.rs"]
mod capture;
#[path = "support/otlp.rs"]
mod otlp;

use obs_runtime::metric_def;
use obs_runtime::redis::{Connection, RedisMetrics};
use obs_runtime::testing::{histogram, value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use otlp::{int, string};
use redis::AsyncCommands as _;

const KEY: &str = "obs-test:planted.key@example.org";
const VALUE: &str = "planted-value-s3cret";

type Conn = Connection<redis::aio::MultiplexedConnection>;

#[obs_runtime::traced_span("warm_cache")]
async fn warm_cache(conn: &mut Conn) -> redis::RedisResult<()> {
    let _: () = conn.set_ex(KEY, VALUE, 60).await?;
    let hit: Option<String> = conn.cache_get("profiles", KEY).await?;
    assert_eq!(hit.as_deref(), Some(VALUE));
    let miss: Option<String> = conn.cache_get("profiles", "obs-test:absent").await?;
    assert_eq!(miss, None);
    Ok(())
}

#[obs_runtime::traced_span("misuse")]
async fn misuse(conn: &mut Conn) {
    // LPUSH on a string: WRONGTYPE.
    let wrong: redis::RedisResult<i64> = conn.lpush(KEY, VALUE).await;
    assert!(wrong.is_err());
    // An unknown command: the server's error quotes its arguments.
    let unknown: redis::RedisResult<()> = redis::cmd("NOSUCHCOMMAND").arg(VALUE).query_async(conn).await;
    let e = unknown.unwrap_err();
    assert!(e.to_string().contains(VALUE), "the server echoes the argument: {e}");
}

#[obs_runtime::traced_span("batch")]
async fn batch(conn: &mut Conn) -> redis::RedisResult<()> {
    let (a, b): (Option<String>, Option<String>) =
        redis::pipe().get(KEY).get("obs-test:absent").query_async(conn).await?;
    assert_eq!(a.as_deref(), Some(VALUE));
    assert_eq!(b, None);
    let _: () = redis::pipe().atomic().set("obs-test:a", 1).incr("obs-test:a", 1).ignore().query_async(conn).await?;
    Ok(())
}

#[test]
fn commands_are_client_spans_without_keys_or_values() {
    let url = std::env::var("OBS_TEST_REDIS_URL").expect("OBS_TEST_REDIS_URL: tests/e2e/infra.sh starts a server");
    let (receiver, endpoint) = otlp::Receiver::start();
    let (captured, config) = capture::config(endpoint);
    let guard = obs_runtime::init(config).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    rt.block_on(async {
        let client = redis::Client::open(url.as_str()).unwrap();
        let raw = client.get_multiplexed_async_connection().await.unwrap();
        let mut conn = Connection::new(raw, client.get_connection_info()).metrics(
            RedisMetrics::new()
                .command_duration(metric_def!("lib_redis_command_duration_seconds"))
                .cache_requests(metric_def!("lib_cache_requests_total")),
        );
        warm_cache(&mut conn).await.unwrap();
        misuse(&mut conn).await;
        batch(&mut conn).await.unwrap();
        // Outside any span (a worker's poll): timed, no span.
        let _: Option<String> = conn.clone().get("obs-test:outside").await.unwrap();
        let _: () = conn.del(&[KEY, "obs-test:a"]).await.unwrap();
    });

    assert_eq!(value("lib_cache_requests_total", &[("cache", "profiles"), ("result", "hit")]), Some(1.0));
    assert_eq!(value("lib_cache_requests_total", &[("cache", "profiles"), ("result", "miss")]), Some(1.0));
    let gets = histogram("lib_redis_command_duration_seconds", &[("command", "get"), ("status", "ok")]).unwrap();
    assert_eq!(gets.count, 3, "two cache lookups and the one outside any span");
    let errors = histogram("lib_redis_command_duration_seconds", &[("command", "lpush"), ("status", "error")]).unwrap();
    assert_eq!(errors.count, 1);
    assert!(
        histogram("lib_redis_command_duration_seconds", &[("command", "nosuchcommand"), ("status", "error")]).is_some()
    );
    let batches = histogram("lib_redis_command_duration_seconds", &[("command", "batch"), ("status", "ok")]);
    assert_eq!(batches.map(|h| h.count), Some(2), "{}", obs_runtime::metrics::render());

    assert!(guard.shutdown());
    let spans = receiver.spans();
    let named = |name: &str| spans.iter().filter(|s| s.name == name).collect::<Vec<_>>();
    for s in &spans {
        let dump = format!("{s:?}");
        assert!(!dump.contains("planted"), "a key or a value in a span: {dump}");
    }
    assert!(!captured.text().contains("planted"), "a key or a value in a log line");

    let warm = named("warm_cache")[0];
    let set = named("SETEX");
    let set =
        set.first().unwrap_or_else(|| panic!("a SETEX span: {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>()));
    assert_eq!(set.parent_span_id, warm.span_id);
    assert_eq!(set.trace_id, warm.trace_id);
    assert_eq!(set.kind, SpanKind::Client as i32);
    assert_eq!(string(set, "db.system.name").as_deref(), Some("redis"));
    assert_eq!(string(set, "db.operation.name").as_deref(), Some("SETEX"));
    assert_eq!(string(set, "db.query.text").as_deref(), Some("SETEX ? ? ?"));
    assert_eq!(string(set, "db.namespace").as_deref(), Some("0"));
    assert_eq!(string(set, "server.address").as_deref(), Some("127.0.0.1"));
    assert!(int(set, "server.port").is_some_and(|p| p > 0));
    assert_eq!(named("GET").iter().filter(|s| s.parent_span_id == warm.span_id).count(), 2);

    let misuse = named("misuse")[0];
    let lpush = named("LPUSH")[0];
    assert_eq!(lpush.parent_span_id, misuse.span_id);
    assert_eq!(lpush.status.as_ref().map(|s| s.code), Some(StatusCode::Error as i32));
    assert_eq!(string(lpush, "db.response.status_code").as_deref(), Some("WRONGTYPE"));
    assert_eq!(string(lpush, "error.type").as_deref(), Some("WRONGTYPE"));
    let unknown = named("NOSUCHCOMMAND")[0];
    assert_eq!(string(unknown, "db.response.status_code").as_deref(), Some("ERR"));

    let batch = named("batch")[0];
    let get_batch = named("BATCH GET")[0];
    assert_eq!(get_batch.parent_span_id, batch.span_id);
    assert_eq!(int(get_batch, "db.operation.batch.size"), Some(2));
    assert_eq!(string(get_batch, "db.operation.name").as_deref(), Some("BATCH GET"));
    assert_eq!(named("BATCH")[0].parent_span_id, batch.span_id, "SET then INCR");

    // The command outside any span and the DEL after it: no span, no trace of their own.
    assert!(named("DEL").is_empty());
    assert_eq!(named("GET").len(), 2, "only the two inside warm_cache");
}
