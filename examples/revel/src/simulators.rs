//! The external services Revel calls (Stripe, the LLM provider, the email provider), simulated as
//! HTTP servers: started in-process on an ephemeral loopback port by default, so that
//! `cargo run -p revel` needs nothing installed, or reached at `REVEL_SIMULATORS_URL`
//! (`revel-simulators` serves them on their own).
//!
//! Each answers after its [`Behaviour`]'s latency and fails at its rate (502 or 503), as the
//! real services would. Behind obs's HTTP layer: each call Revel makes is a `CLIENT` span in
//! Revel's trace and the simulator's own `SERVER` span its child, joined by the `traceparent` the
//! client sent. After a checkout session is created, the Stripe simulator posts the signed
//! `checkout.session.completed` webhook back to Revel (when it knows where: `webhook_url`), from a
//! trace of its own, as Stripe does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};

use crate::external::{Behaviour, random_unit, sign_webhook};

/// What the simulators do.
#[derive(Clone, Debug)]
pub struct Simulated {
    pub stripe: Behaviour,
    pub llm: Behaviour,
    pub email: Behaviour,
    /// Signs the webhooks the Stripe simulator posts.
    pub webhook_secret: String,
    /// Where the Stripe simulator posts `checkout.session.completed` (none: it does not).
    pub webhook_url: Option<String>,
}

/// The simulators' routes (mounted at the root of their server).
pub fn router(sim: Simulated) -> Router {
    Router::new()
        .route("/stripe/v1/checkout/sessions", post(create_session))
        .route("/stripe/v1/refunds", post(refund))
        .route("/llm/v1/evaluate", post(evaluate))
        .route("/email/v1/send", post(send))
        .with_state(sim)
        // Their own server spans; no access lines and no request metrics (not Revel's traffic).
        .layer(obs_runtime::http::ObsLayer::new().access_log(false))
}

/// Serves the simulators on an ephemeral loopback port; returns their base URL.
pub async fn start(sim: Simulated) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(sim)).await {
            tracing::error!(error = %e, "the simulated external services stopped");
        }
    });
    Ok(base)
}

fn failed(what: &str) -> (StatusCode, Json<Value>) {
    (StatusCode::BAD_GATEWAY, Json(json!({ "error": format!("{what}: upstream error (simulated)") })))
}

async fn create_session(State(sim): State<Simulated>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    if sim.stripe.call("stripe").await.is_err() {
        return failed("stripe");
    }
    let id = format!("cs_{:016x}", (random_unit() * u64::MAX as f64) as u64);
    if let Some(url) = sim.webhook_url.clone() {
        // Stripe confirms the payment later, from its own systems: a new trace at Revel.
        let (secret, session) = (sim.webhook_secret.clone(), id.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            post_webhook(&url, &secret, "checkout.session.completed", &session).await;
        });
    }
    let amount = body.get("amount_cents").and_then(Value::as_u64).unwrap_or(0);
    (
        StatusCode::OK,
        Json(json!({ "id": id, "url": format!("https://checkout.stripe.example/{id}"), "amount_total": amount })),
    )
}

/// Posts a signed webhook as Stripe does (no trace context: Stripe sends none).
async fn post_webhook(url: &str, secret: &str, kind: &str, session: &str) {
    let body = json!({ "type": kind, "data": { "session_id": session } }).to_string();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let signature = sign_webhook(secret, body.as_bytes(), now);
    let sent = reqwest::Client::new()
        .post(url)
        .header("stripe-signature", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    if let Err(e) = sent {
        tracing::warn!(error = %e, "the Stripe simulator could not deliver a webhook");
    }
}

async fn refund(State(sim): State<Simulated>) -> (StatusCode, Json<Value>) {
    if sim.stripe.call("stripe").await.is_err() {
        return failed("stripe");
    }
    (StatusCode::OK, Json(json!({ "status": "succeeded" })))
}

async fn evaluate(State(sim): State<Simulated>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    if sim.llm.call("llm").await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": "llm: overloaded (simulated)" })));
    }
    let answer = body.get("answer").and_then(Value::as_str).unwrap_or("");
    // A thoughtful answer passes.
    let passed = answer.split_whitespace().count() >= 5;
    let tokens = 120 + answer.len() as u64 / 3;
    (StatusCode::OK, Json(json!({ "passed": passed, "tokens": tokens })))
}

async fn send(State(sim): State<Simulated>) -> (StatusCode, Json<Value>) {
    if sim.email.call("smtp").await.is_err() {
        return failed("smtp");
    }
    (StatusCode::ACCEPTED, Json(json!({ "queued": true })))
}
