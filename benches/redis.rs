//! Per-command cost of obs's Redis telemetry, in one run, against a connection that answers at
//! once in process (no network: what is measured is the wrapper, not Redis): inside a parent
//! span each time, the bare connection; obs's `Connection` outside any span (timed only), in a
//! sampled-out trace, and in a sampled and exported one with its histogram; and what a user
//! wires by hand with `tracing`: the command inside a CLIENT `info_span!` with the same
//! attributes, exported by tracing-opentelemetry on the OpenTelemetry SDK's batch pipeline
//! (AlwaysOn). Both pipelines export over OTLP/HTTP to the same receiver on loopback. The
//! difference between two lines is the cost of what differs; a real command adds a round trip
//! (tens of µs on loopback) to every line.

#[path = "support/http1.rs"]
mod http1;
#[path = "support/measure.rs"]
mod measure;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_executor::block_on;
use obs_runtime::config::{Config, Sampler};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::Sampler as SdkSampler;
use redis::aio::ConnectionLike;
use redis::{Cmd, IntoConnectionInfo as _, Pipeline, RedisFuture, Value};
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;

/// A connection that answers every command with nil, at once.
#[derive(Clone)]
struct Instant;

impl ConnectionLike for Instant {
    fn req_packed_command<'a>(&'a mut self, _: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async { Ok(Value::Nil) })
    }

    fn req_packed_commands<'a>(&'a mut self, _: &'a Pipeline, _: usize, n: usize) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move { Ok(vec![Value::Nil; n]) })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

async fn get<C: ConnectionLike + Send>(conn: &mut C) -> Option<String> {
    redis::cmd("GET").arg("session:42").query_async(conn).await.unwrap()
}

#[obs_runtime::traced_span("bench.parent")]
async fn parent_bare(conn: &mut Instant) -> Option<String> {
    get(conn).await
}

#[obs_runtime::traced_span("bench.parent")]
async fn parent_obs(conn: &mut obs_runtime::redis::Connection<Instant>) -> Option<String> {
    get(conn).await
}

fn commands(c: &mut Criterion) {
    eprintln!("CPU: {}", measure::cpu_model());
    let url = http1::otlp_sink();
    obs_runtime::metrics::register_catalog(obs_runtime::catalog!());
    let info = "redis://127.0.0.1:6379/0".into_connection_info().unwrap();
    let mut bare = Instant;
    let mut obs = obs_runtime::redis::Connection::new(Instant, &info).metrics(
        obs_runtime::redis::RedisMetrics::new()
            .command_duration(obs_runtime::metric_def!("bench_redis_command_duration_seconds")),
    );
    let mut group = c.benchmark_group("redis_command");

    let config =
        Config::from_vars(|_| None).unwrap().traces_endpoint(url.clone()).sampler(Sampler::Ratio(0.0)).logs(false);
    let guard = obs_runtime::init(config).unwrap();
    group.bench_function("bare_in_sampled_out_parent", |b| b.iter(|| black_box(block_on(parent_bare(&mut bare)))));
    group.bench_function("obs_outside_any_span", |b| b.iter(|| black_box(block_on(get(&mut obs)))));
    group.bench_function("obs_in_sampled_out_parent", |b| b.iter(|| black_box(block_on(parent_obs(&mut obs)))));
    obs_runtime::trace::set_sampler(Sampler::AlwaysOn);
    group.bench_function("bare_in_exported_parent", |b| b.iter(|| black_box(block_on(parent_bare(&mut bare)))));
    group.bench_function("obs_in_exported_parent", |b| b.iter(|| black_box(block_on(parent_obs(&mut obs)))));
    obs_runtime::trace::set_enabled(false);

    let provider = measure::sdk_provider(&url, SdkSampler::AlwaysOn);
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")));
    tracing::subscriber::with_default(subscriber, || {
        group.bench_function("tracing_otel_bare_in_parent", |b| {
            b.iter(|| {
                let parent = tracing::info_span!("bench.parent");
                black_box(block_on(get(&mut bare).instrument(parent)))
            })
        });
        group.bench_function("tracing_otel_client_span_in_parent", |b| {
            b.iter(|| {
                let parent = tracing::info_span!("bench.parent");
                let call = async {
                    let span = tracing::info_span!(
                        "GET",
                        otel.kind = "client",
                        db.system.name = "redis",
                        db.operation.name = "GET",
                        db.query.text = "GET ?",
                        db.namespace = "0",
                        server.address = "127.0.0.1",
                        server.port = 6379,
                    );
                    get(&mut bare).instrument(span).await
                };
                black_box(block_on(call.instrument(parent)))
            })
        });
    });
    group.finish();
    let _ = provider.shutdown();

    let exported = obs_runtime::testing::value("obs_spans_exported_total", &[]).unwrap_or(0.0);
    eprintln!("obs spans exported: {exported}");
    assert!(exported > 0.0, "the sampled benchmark exported nothing: it measured no real pipeline");
    drop(guard);
}

fn config() -> Criterion {
    Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = commands
}
criterion_main!(benches);
