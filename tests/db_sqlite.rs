//! Database telemetry on a real SQLite (in memory) through sqlx: every query a CLIENT span under
//! the span it runs in, with OpenTelemetry's database attributes, decoded from OTLP with the
//! official types; transactions as spans around their queries; no literal in any span or log
//! line (a value planted in the SQL text); failures with the SQLSTATE-like code; the query
//! histogram and the pool's metrics in the exposition; an acquire timeout counted.

#[path = "support/capture.rs"]
mod capture;
#[path = "support/otlp.rs"]
mod otlp;

use std::time::Duration;

use obs_runtime::db::{DbMetrics, Pool};
use obs_runtime::metric_def;
use obs_runtime::testing::{histogram, value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use sqlx::Row as _;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

const PLANTED: &str = "planted.secret@example.org";

use otlp::{int, string};

fn metrics() -> DbMetrics {
    DbMetrics::new()
        .query_duration(metric_def!("lib_db_query_duration_seconds"))
        .connections(metric_def!("lib_db_connections"))
        .max_connections(metric_def!("lib_db_max_connections"))
        .pending_acquires(metric_def!("lib_db_pending_acquires"))
        .acquire_duration(metric_def!("lib_db_acquire_duration_seconds"))
        .acquire_timeouts(metric_def!("lib_db_acquire_timeouts_total"))
}

#[obs_runtime::traced_span("checkout")]
async fn checkout(pool: &Pool<sqlx::Sqlite>) -> Result<(), sqlx::Error> {
    // A bound value never reaches the text; an inlined one is replaced.
    sqlx::query("INSERT INTO tickets (email, tier) VALUES (?, 'vip')").bind("ana@example.org").execute(pool).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO tickets (email, tier) VALUES ('{PLANTED}', 'general')")))
        .execute(pool)
        .await?;
    let rows =
        sqlx::query("SELECT id, email FROM tickets WHERE tier != ? ORDER BY id").bind("none").fetch_all(pool).await?;
    assert_eq!(rows.len(), 2);
    let one: (i64,) = sqlx::query_as("SELECT count(*) FROM tickets").fetch_one(pool).await?;
    assert_eq!(one.0, 2);
    assert!(sqlx::query("SELECT id FROM tickets WHERE id = 99").fetch_optional(pool).await?.is_none());
    Ok(())
}

#[obs_runtime::traced_span("lock_tier")]
async fn lock_tier(tx: &mut obs_runtime::db::Transaction<sqlx::Sqlite>) -> Result<i64, sqlx::Error> {
    let row =
        sqlx::query("UPDATE tiers SET sold = sold + 1 WHERE name = 'vip' RETURNING sold").fetch_one(&mut *tx).await?;
    Ok(row.get(0))
}

#[obs_runtime::traced_span("buy")]
async fn buy(pool: &Pool<sqlx::Sqlite>, commit: bool) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO tickets (email, tier) VALUES (?, 'vip')")
        .bind(format!("buyer{commit}@example.org"))
        .execute(&mut tx)
        .await?;
    let sold = lock_tier(&mut tx).await?;
    if commit {
        tx.commit().await?
    } else {
        tx.rollback().await?
    }
    Ok(sold)
}

#[obs_runtime::traced_span("unsampled_with_query")]
async fn unsampled_with_query(pool: &Pool<sqlx::Sqlite>) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT count(*) FROM tiers").fetch_one(pool).await.map(drop)
}

#[obs_runtime::traced_span("unsampled_without_query")]
async fn unsampled_without_query() {
    tokio::task::yield_now().await;
}

#[test]
fn queries_and_transactions_are_client_spans_with_the_database_conventions() {
    let (receiver, url) = otlp::Receiver::start();
    let (captured, config) = capture::config(url);
    // Every query is "slow": each writes its line, which must carry no literal either.
    let guard = obs_runtime::init(config.db_slow_query(Some(Duration::from_micros(1)))).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    rt.block_on(async {
        let options: SqliteConnectOptions = "sqlite::memory:".parse().unwrap();
        // One connection: the in-memory database lives as long as it; the timeout below needs
        // the pool exhausted.
        let sqlx_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_millis(300))
            .connect_with(options)
            .await
            .unwrap();
        let pool = Pool::new(sqlx_pool).metrics(metrics());
        sqlx::query("CREATE TABLE tickets (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, tier TEXT NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE tiers (name TEXT PRIMARY KEY, sold INTEGER NOT NULL)").execute(&pool).await.unwrap();
        sqlx::query("INSERT INTO tiers VALUES ('vip', 0)").execute(&pool).await.unwrap();

        checkout(&pool).await.unwrap();
        // A constraint violation, with the planted value inlined again.
        let dup =
            sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO tickets (email, tier) VALUES ('{PLANTED}', 'x')")))
                .execute(&pool)
                .await;
        assert!(dup.is_err());
        // A stream of rows.
        use futures_util::TryStreamExt as _;
        let streamed: Vec<_> = sqlx::query("SELECT email FROM tickets").fetch(&pool).try_collect().await.unwrap();
        assert_eq!(streamed.len(), 2);

        assert_eq!(buy(&pool, true).await.unwrap(), 1);
        assert_eq!(buy(&pool, false).await.unwrap(), 2);
        let sold: (i64,) = sqlx::query_as("SELECT sold FROM tiers").fetch_one(&pool).await.unwrap();
        assert_eq!(sold.0, 1, "the rolled-back sale is undone");

        // The one connection held by a transaction: a query on the pool waits, then times out.
        let held = pool.begin().await.unwrap();
        let timed_out = sqlx::query("SELECT 1").execute(&pool).await;
        assert!(matches!(timed_out, Err(sqlx::Error::PoolTimedOut)), "{timed_out:?}");
        drop(held);

        // Unsampled traces: the root of one with a (slow) query is kept by the tail rule, alone;
        // the root of one without is not.
        obs_runtime::trace::set_sampler(obs_runtime::config::Sampler::Ratio(0.0));
        unsampled_with_query(&pool).await.unwrap();
        unsampled_without_query().await;
        obs_runtime::trace::set_sampler(obs_runtime::config::Sampler::AlwaysOn);

        let text = obs_runtime::metrics::render();
        assert!(text.contains("lib_db_max_connections 1\n"), "{text}");
        assert!(text.contains("lib_db_connections{state=\"idle\"} "), "{text}");
        assert!(text.contains("lib_db_connections{state=\"used\"} "), "{text}");
    });
    assert_eq!(value("lib_db_acquire_timeouts_total", &[]), Some(1.0));
    assert_eq!(value("lib_db_pending_acquires", &[]), Some(0.0), "every waiter left");
    assert!(histogram("lib_db_acquire_duration_seconds", &[]).unwrap().count >= 10);
    let selects = histogram("lib_db_query_duration_seconds", &[("query_type", "select"), ("status", "ok")]).unwrap();
    assert_eq!(selects.count, 6, "3 in checkout, the stream, the count after the sales, the unsampled one");
    let errors = histogram("lib_db_query_duration_seconds", &[("query_type", "insert"), ("status", "error")]).unwrap();
    assert_eq!(errors.count, 1);
    assert!(histogram("lib_db_query_duration_seconds", &[("query_type", "commit"), ("status", "ok")]).is_some());
    assert!(
        histogram("lib_db_query_duration_seconds", &[("query_type", "select"), ("status", "error")]).is_some(),
        "the timed-out query"
    );

    assert!(guard.shutdown());
    let spans = receiver.spans();
    let by_id = |id: &[u8]| spans.iter().find(|s| s.span_id == id);
    let named = |name: &str| spans.iter().filter(|s| s.name == name).collect::<Vec<_>>();

    // No literal anywhere: names, attributes, events; log lines.
    for s in &spans {
        let dump = format!("{s:?}");
        assert!(!dump.contains("planted") && !dump.contains("'vip'"), "a literal left in a span: {dump}");
    }
    let logs = captured.text();
    assert!(!logs.contains("planted"), "a literal left in a log line: {logs}");
    assert!(logs.contains("slow database query"), "{logs}");
    assert!(logs.contains(r#""query":"INSERT INTO tickets (email, tier) VALUES (?, ?)""#), "{logs}");

    // A slow query keeps its unsampled trace's root, alone and marked; a root without one is dropped.
    let kept = named("unsampled_with_query");
    assert_eq!(kept.len(), 1, "the root of the unsampled trace with a slow query");
    assert_eq!(string(kept[0], "obs.sampling.kept").as_deref(), Some("slow_query"));
    assert!(spans.iter().all(|s| s.parent_span_id != kept[0].span_id), "its children were not recorded");
    assert!(named("unsampled_without_query").is_empty(), "an unsampled root without a slow query is dropped");

    // A query in `checkout`: a CLIENT child of it, with the conventions.
    let checkout = named("checkout")[0];
    let inserts = named("INSERT tickets");
    let insert = inserts.iter().find(|s| s.parent_span_id == checkout.span_id).expect("an insert under checkout");
    assert_eq!(insert.kind, SpanKind::Client as i32);
    assert_eq!(insert.trace_id, checkout.trace_id);
    assert_eq!(string(insert, "db.system.name").as_deref(), Some("sqlite"));
    assert_eq!(string(insert, "db.operation.name").as_deref(), Some("INSERT"));
    assert_eq!(string(insert, "db.collection.name").as_deref(), Some("tickets"));
    assert_eq!(string(insert, "db.query.summary").as_deref(), Some("INSERT tickets"));
    assert_eq!(string(insert, "db.query.text").as_deref(), Some("INSERT INTO tickets (email, tier) VALUES (?, ?)"));
    assert_eq!(string(insert, "db.namespace").as_deref(), Some(":memory:"));
    assert_eq!(int(insert, "obs.db.rows_affected"), Some(1));
    let select = named("SELECT tickets")
        .into_iter()
        .find(|s| string(s, "db.query.text").is_some_and(|t| t.contains("ORDER BY")))
        .unwrap();
    assert_eq!(int(select, "db.response.returned_rows"), Some(2));
    assert_eq!(select.parent_span_id, checkout.span_id);

    // The constraint violation: failed, with SQLite's extended code and no server text.
    let failed = inserts
        .iter()
        .find(|s| s.status.as_ref().is_some_and(|st| st.code == StatusCode::Error as i32))
        .expect("the failed insert");
    assert_eq!(string(failed, "db.response.status_code").as_deref(), Some("2067"));
    assert_eq!(string(failed, "error.type").as_deref(), Some("2067"));
    assert!(failed.parent_span_id.is_empty(), "a root: it ran outside any span");

    // The timed-out query: error.type pool_timed_out.
    let timeout = named("SELECT").into_iter().find(|s| string(s, "error.type").as_deref() == Some("pool_timed_out"));
    assert!(timeout.is_some(), "the timed-out SELECT 1");

    // Transactions: BEGIN, the insert where it began, and COMMIT/ROLLBACK under `transaction`;
    // the update in `lock_tier` under lock_tier.
    let buys = named("buy");
    assert_eq!(buys.len(), 2);
    for b in buys {
        let tx =
            spans.iter().find(|s| s.name == "transaction" && s.parent_span_id == b.span_id).expect("the transaction");
        let children: Vec<&str> =
            spans.iter().filter(|s| s.parent_span_id == tx.span_id).map(|s| s.name.as_str()).collect();
        assert!(children.contains(&"BEGIN") && children.contains(&"INSERT tickets"), "{children:?}");
        let end = string(tx, "obs.db.transaction.end").unwrap();
        assert!(children.contains(&if end == "commit" { "COMMIT" } else { "ROLLBACK" }), "{end}: {children:?}");
        let lock = spans.iter().find(|s| s.name == "lock_tier" && s.parent_span_id == b.span_id).unwrap();
        let update = spans.iter().find(|s| s.parent_span_id == lock.span_id).expect("the update under lock_tier");
        assert_eq!(update.name, "UPDATE tiers");
        assert_eq!(update.kind, SpanKind::Client as i32);
        assert!(by_id(&tx.parent_span_id).is_some());
    }
    let ends: Vec<String> = named("transaction").iter().filter_map(|t| string(t, "obs.db.transaction.end")).collect();
    assert!(
        ends.contains(&"commit".into()) && ends.contains(&"rollback".into()) && ends.contains(&"dropped".into()),
        "{ends:?}"
    );
}
