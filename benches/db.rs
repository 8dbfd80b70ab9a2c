//! Per-query cost of obs's database telemetry, in one run, on a real SQLite (in memory, one
//! connection, a primary-key lookup in a table of 1,000 rows, on a current-thread runtime):
//! the bare sqlx query; the same through `obs_runtime::db::Pool` before `init` (off), sampled
//! out (ratio 0), and sampled and exported with its histogram; and what a user wires by hand
//! with `tracing`: the query inside a CLIENT `info_span!` exported by tracing-opentelemetry on the
//! OpenTelemetry SDK's batch pipeline (AlwaysOn), which also turns sqlx's own `sqlx::query` event
//! into a span event. Both pipelines export over OTLP/HTTP to the same receiver on loopback.
//!
//! Two measures of each: `db_query` is wall-clock time per query, dominated by sqlx-sqlite's
//! hand-off to its worker thread (tens of µs, and faster whenever another thread keeps the
//! second core awake: read it for the order of magnitude only); `db_query_cpu` is the CPU time of
//! the calling thread per query (the thread's clock), where the instrumentation runs and which
//! no wake-up latency blurs: the difference between two of its lines is what obs costs.

#[path = "support/http1.rs"]
mod http1;
#[path = "support/measure.rs"]
mod measure;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use obs_runtime::config::{Config, Sampler};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::Sampler as SdkSampler;
use sqlx::sqlite::SqlitePoolOptions;
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;

const LOOKUP: &str = "SELECT id, email FROM users WHERE id = ?";

async fn pool() -> sqlx::SqlitePool {
    let pool = SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await.unwrap();
    sqlx::query("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL)").execute(&pool).await.unwrap();
    sqlx::query(
        "WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) \
         INSERT INTO users (id, email) SELECT i, 'user' || i || '@example.org' FROM n",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool
}

fn queries(c: &mut Criterion) {
    eprintln!("CPU: {}", measure::cpu_model());
    let url = http1::otlp_sink();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let raw = rt.block_on(pool());
    obs_runtime::metrics::register_catalog(obs_runtime::catalog!());
    let obs = obs_runtime::db::Pool::new(raw.clone()).metrics(
        obs_runtime::db::DbMetrics::new().query_duration(obs_runtime::metric_def!("bench_db_query_duration_seconds")),
    );
    let mut id = 0i64;
    let mut next = move || {
        id = id % 1000 + 1;
        id
    };
    // Each variant, in both measures.
    let both = |c: &mut Criterion, name: &str, one: &mut dyn FnMut()| measure::wall_and_cpu(c, "db_query", name, one);
    both(c, "sqlx_bare", &mut || {
        rt.block_on(async { black_box(sqlx::query(LOOKUP).bind(next()).fetch_optional(&raw).await.unwrap()) });
    });
    both(c, "obs_disabled", &mut || {
        rt.block_on(async { black_box(sqlx::query(LOOKUP).bind(next()).fetch_optional(&obs).await.unwrap()) });
    });

    let config =
        Config::from_vars(|_| None).unwrap().traces_endpoint(url.clone()).sampler(Sampler::Ratio(0.0)).logs(false);
    let guard = obs_runtime::init(config).unwrap();
    both(c, "obs_sampled_out", &mut || {
        rt.block_on(async { black_box(sqlx::query(LOOKUP).bind(next()).fetch_optional(&obs).await.unwrap()) });
    });
    obs_runtime::trace::set_sampler(Sampler::AlwaysOn);
    both(c, "obs_sampled_exported", &mut || {
        rt.block_on(async { black_box(sqlx::query(LOOKUP).bind(next()).fetch_optional(&obs).await.unwrap()) });
    });
    obs_runtime::trace::set_enabled(false);

    let provider = measure::sdk_provider(&url, SdkSampler::AlwaysOn);
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")));
    tracing::subscriber::with_default(subscriber, || {
        both(c, "tracing_otel_always_on", &mut || {
            rt.block_on(async {
                let span = tracing::info_span!(
                    "SELECT users",
                    otel.kind = "client",
                    db.system.name = "sqlite",
                    db.operation.name = "SELECT",
                    db.collection.name = "users",
                    db.query.text = LOOKUP,
                );
                black_box(sqlx::query(LOOKUP).bind(next()).fetch_optional(&raw).instrument(span).await.unwrap())
            });
        });
    });
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
    targets = queries
}
criterion_main!(benches);
