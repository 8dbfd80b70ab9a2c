//! Revel, the reference service of obs (early cut: the metric catalog, a checkout and a webhook
//! flow, and `/metrics`). Runs with zero infrastructure:
//!
//! ```text
//! cargo run -p revel            # listens on 127.0.0.1:8000 (REVEL_ADDR to change)
//! curl -X POST localhost:8000/orgs/1/events/7/tiers/3/checkout
//! curl localhost:8000/metrics
//! ```

use std::net::SocketAddr;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post};
use obs_runtime::{counted, metric, timed};

#[derive(Debug)]
struct SoldOut;

/// A checkout: counts the ticket sold per organization, event and tier, the revenue by amount.
#[counted(metric = "revel_tickets_sold_total",
          labels(organization_id = org, event_id = event, tier_id = tier, payment_method = "online"),
          only = "ok")]
#[counted(metric = "revel_payments_total",
          labels(organization_id = org, payment_method = "online"),
          outcome(label = "status", ok = "succeeded", err = "failed"))]
#[timed(metric = "revel_database_query_duration_seconds", labels(query_type = "checkout"))]
fn checkout(org: u64, event: u64, tier: u64) -> Result<u64, SoldOut> {
    if tier == 0 {
        return Err(SoldOut);
    }
    let price_cents = 1500 + tier * 500;
    metric!("revel_revenue_total", organization_id = org, currency = "EUR").inc_by(price_cents as f64 / 100.0);
    metric!("revel_payment_checkout_sessions_created_total").inc();
    Ok(price_cents)
}

/// A Stripe webhook: success/failure by webhook type.
#[counted(metric = "revel_stripe_webhooks_processed_total",
          labels(webhook_type = kind), outcome(label = "status"))]
fn handle_webhook(kind: &str) -> Result<(), String> {
    match kind {
        "checkout.session.completed" | "charge.refunded" => Ok(()),
        other => Err(format!("unhandled webhook type {other}")),
    }
}

async fn checkout_route(Path((org, event, tier)): Path<(u64, u64, u64)>) -> (StatusCode, String) {
    match checkout(org, event, tier) {
        Ok(cents) => (StatusCode::OK, format!("charged {cents} cents\n")),
        Err(SoldOut) => (StatusCode::CONFLICT, "sold out\n".into()),
    }
}

async fn webhook_route(Path(kind): Path<String>) -> StatusCode {
    match handle_webhook(&kind) {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

async fn publish_route() -> StatusCode {
    metric!("revel_events_active").inc();
    StatusCode::OK
}

/// The service's routes.
fn app() -> Router {
    Router::new()
        .route("/orgs/{org}/events/{event}/tiers/{tier}/checkout", post(checkout_route))
        .route("/stripe/webhooks/{kind}", post(webhook_route))
        .route("/events/publish", post(publish_route))
        .route("/metrics", get(obs_runtime::metrics::metrics_handler))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Every family of the catalog is exposed from start-up, with HELP and TYPE.
    obs_runtime::metrics::register_catalog(obs_runtime::catalog!());
    let addr: SocketAddr = match std::env::var("REVEL_ADDR") {
        Ok(v) => v.parse().unwrap_or_else(|e| {
            eprintln!("REVEL_ADDR={v:?} is not a socket address such as 127.0.0.1:8000: {e}");
            std::process::exit(2)
        }),
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 8000)),
    };
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap_or_else(|e| {
        eprintln!("cannot listen on {addr}: {e}");
        std::process::exit(1)
    });
    eprintln!("revel listening on http://{addr} (metrics at /metrics)");
    axum::serve(listener, app())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .expect("server error");
}
