//! The external services and how Revel calls them: a Stripe-like payment API with webhooks
//! signed and verified as Stripe does (HMAC-SHA256 over `{timestamp}.{payload}`), an LLM
//! evaluator with token counts and cost, an email sender, called over HTTP through obs's client
//! middleware (each call a `CLIENT` span; the services are the simulators of
//! [`crate::simulators`]); PDF and ICS generation, in process. Each service has a latency and a
//! failure rate, configurable from the environment (`REVEL_<SERVICE>_LATENCY_MS`,
//! `REVEL_<SERVICE>_FAILURE_RATE`), so that errors and slow calls show up in traces and alerts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use obs_runtime::traced_span;
use sha2::Sha256;

/// Latency and failure rate of one simulated service.
#[derive(Clone, Copy, Debug)]
pub struct Behaviour {
    pub latency: Duration,
    pub failure_rate: f64,
}

impl Behaviour {
    /// From `REVEL_<NAME>_LATENCY_MS` and `REVEL_<NAME>_FAILURE_RATE` as `lookup` finds them,
    /// with defaults.
    pub fn from_vars(
        lookup: &impl Fn(&str) -> Option<String>,
        name: &str,
        latency_ms: u64,
        failure_rate: f64,
    ) -> Result<Behaviour, String> {
        let var = |suffix: &str| lookup(&format!("REVEL_{name}_{suffix}")).filter(|v| !v.trim().is_empty());
        let latency_ms = match var("LATENCY_MS") {
            None => latency_ms,
            Some(v) => v.trim().parse().map_err(|_| {
                format!("REVEL_{name}_LATENCY_MS={v:?} is invalid: expected a whole number of milliseconds")
            })?,
        };
        let failure_rate =
            match var("FAILURE_RATE") {
                None => failure_rate,
                Some(v) => v.trim().parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r)).ok_or_else(|| {
                    format!("REVEL_{name}_FAILURE_RATE={v:?} is invalid: expected a number from 0 to 1")
                })?,
            };
        Ok(Behaviour { latency: Duration::from_millis(latency_ms), failure_rate })
    }

    /// Waits the latency, then fails at the configured rate.
    pub async fn call(&self, what: &str) -> Result<(), String> {
        if !self.latency.is_zero() {
            // ±50 % jitter, so latency histograms have a shape.
            let jitter = 0.5 + random_unit();
            tokio::time::sleep(self.latency.mul_f64(jitter)).await;
        }
        if random_unit() < self.failure_rate { Err(format!("{what}: upstream error (simulated)")) } else { Ok(()) }
    }
}

impl std::fmt::Display for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ms, {} % failures", self.latency.as_millis(), self.failure_rate * 100.0)
    }
}

/// A uniform number in [0, 1) (splitmix64 over a global counter: no `rand` needed).
pub fn random_unit() -> f64 {
    static STATE: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let mut z = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

/// The external services.
#[derive(Clone, Debug)]
pub struct Externals {
    pub stripe: Behaviour,
    pub llm: Behaviour,
    pub email: Behaviour,
    pub pdf: Behaviour,
    /// The webhook signing secret (`REVEL_STRIPE_WEBHOOK_SECRET`).
    pub webhook_secret: String,
    /// Where the simulated services are (`REVEL_SIMULATORS_URL`); none: started in process at the
    /// first call, with the behaviours above.
    pub simulators_url: Option<String>,
    /// Where the in-process Stripe simulator posts its webhooks (Revel's `/stripe/webhook`); none:
    /// it posts none (tests post their own).
    pub webhook_url: Option<String>,
    http: Arc<tokio::sync::OnceCell<Http>>,
}

/// The client the calls go through, and the services' base URL.
struct Http {
    client: reqwest_middleware::ClientWithMiddleware,
    base: String,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http").field("base", &self.base).finish_non_exhaustive()
    }
}

impl Externals {
    /// From the process environment (see [`Externals::from_vars`]).
    pub fn from_env() -> Result<Externals, String> {
        Externals::from_vars(|name| std::env::var(name).ok())
    }

    /// From `lookup`: each service's `REVEL_<SERVICE>_LATENCY_MS` and `_FAILURE_RATE`, and
    /// `REVEL_STRIPE_WEBHOOK_SECRET`. By default the services take time and fail now and then
    /// (Stripe 2 %, LLM 3 %, email 5 %), so that failed and slow traces show.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Externals, String> {
        Ok(Externals {
            stripe: Behaviour::from_vars(&lookup, "STRIPE", 40, 0.02)?,
            llm: Behaviour::from_vars(&lookup, "LLM", 400, 0.03)?,
            email: Behaviour::from_vars(&lookup, "EMAIL", 20, 0.05)?,
            pdf: Behaviour::from_vars(&lookup, "PDF", 10, 0.0)?,
            webhook_secret: lookup("REVEL_STRIPE_WEBHOOK_SECRET")
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| "whsec_revel_dev".into()),
            simulators_url: lookup("REVEL_SIMULATORS_URL").filter(|s| !s.trim().is_empty()),
            webhook_url: None,
            http: Arc::default(),
        })
    }

    /// Instant and reliable: for tests.
    pub fn instant() -> Externals {
        let none = Behaviour { latency: Duration::ZERO, failure_rate: 0.0 };
        Externals {
            stripe: none,
            llm: none,
            email: none,
            pdf: none,
            webhook_secret: "whsec_test".into(),
            simulators_url: None,
            webhook_url: None,
            http: Arc::default(),
        }
    }

    /// The simulators' configuration (for `revel-simulators` and the in-process start).
    pub fn simulated(&self) -> crate::simulators::Simulated {
        crate::simulators::Simulated {
            stripe: self.stripe,
            llm: self.llm,
            email: self.email,
            webhook_secret: self.webhook_secret.clone(),
            webhook_url: self.webhook_url.clone(),
        }
    }

    /// The client, and the simulators started on first use (unless `simulators_url` names them).
    async fn http(&self) -> Result<&Http, String> {
        self.http
            .get_or_try_init(|| async {
                let base = match &self.simulators_url {
                    Some(url) => url.trim_end_matches('/').to_owned(),
                    None => crate::simulators::start(self.simulated())
                        .await
                        .map_err(|e| format!("the simulated external services could not start: {e}"))?,
                };
                let inner = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .map_err(|e| format!("the HTTP client could not be built: {e}"))?;
                let telemetry = obs_runtime::client::ClientTelemetry::new()
                    .duration(obs_runtime::metric_def!("revel_external_request_duration_seconds"));
                let client = reqwest_middleware::ClientBuilder::new(inner).with(telemetry).build();
                Ok(Http { client, base })
            })
            .await
    }

    /// POSTs `body` as JSON to the service at `path`; its JSON answer, or an error naming `what`.
    async fn post(&self, what: &str, path: &str, body: serde_json::Value) -> Result<serde_json::Value, String> {
        let http = self.http().await?;
        let response = http
            .client
            .post(format!("{}{path}", http.base))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| format!("{what}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{what}: upstream error (HTTP {})", status.as_u16()));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("{what}: unreadable answer: {e}"))
    }
}

/// A Stripe Checkout session.
#[derive(Clone, Debug)]
pub struct CheckoutSession {
    pub id: String,
    pub url: String,
}

#[traced_span("stripe.create_checkout_session", fields(amount_cents))]
pub async fn create_checkout_session(ext: &Externals, amount_cents: u64) -> Result<CheckoutSession, String> {
    let session =
        ext.post("stripe", "/stripe/v1/checkout/sessions", serde_json::json!({ "amount_cents": amount_cents })).await?;
    let text = |k: &str| session.get(k).and_then(serde_json::Value::as_str).map(str::to_owned);
    match (text("id"), text("url")) {
        (Some(id), Some(url)) => Ok(CheckoutSession { id, url }),
        _ => Err("stripe: a checkout session without id or url".into()),
    }
}

/// Refunds what was paid through a checkout session (Stripe then sends `charge.refunded`, which
/// finds the payment refunded and changes nothing).
#[traced_span("stripe.refund")]
pub async fn refund(ext: &Externals, session_id: &str) -> Result<(), String> {
    ext.post("stripe", "/stripe/v1/refunds", serde_json::json!({ "session_id": session_id })).await.map(drop)
}

/// The `Stripe-Signature` header for `payload`, as Stripe computes it.
pub fn sign_webhook(secret: &str, payload: &[u8], timestamp: u64) -> String {
    format!("t={timestamp},v1={}", hmac_hex(secret, timestamp, payload))
}

fn hmac_hex(secret: &str, timestamp: u64, payload: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Verifies a `Stripe-Signature` header: a `v1` HMAC-SHA256 of `{t}.{payload}` with the secret, in
/// constant time, and a timestamp within five minutes.
#[traced_span("stripe.verify_signature")]
pub fn verify_signature(secret: &str, header: &str, payload: &[u8]) -> Result<(), String> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<u64>().ok(),
            Some(("v1", s)) => signatures.push(s),
            _ => {}
        }
    }
    let t = timestamp.ok_or("the Stripe-Signature header has no timestamp")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    // As Stripe's libraries do: only a timestamp older than the tolerance is refused (a sender
    // clock slightly ahead is not a replay).
    if now.saturating_sub(t) > 300 {
        return Err("the webhook timestamp is older than the 5 minute tolerance".into());
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    let ok = signatures.iter().any(|s| {
        let bytes: Option<Vec<u8>> =
            (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect();
        bytes.is_some_and(|b| mac.clone().verify_slice(&b).is_ok())
    });
    if ok { Ok(()) } else { Err("no valid v1 signature in Stripe-Signature".into()) }
}

/// What an LLM evaluation of a free-text answer returned.
#[derive(Clone, Debug)]
pub struct LlmVerdict {
    pub passed: bool,
    pub tokens: u64,
    pub cost_usd: f64,
}

pub const LLM_MODEL: &str = "gpt-4o-mini";

#[traced_span("llm.api_call", fields(model = LLM_MODEL))]
pub async fn llm_evaluate(ext: &Externals, answer: &str) -> Result<LlmVerdict, String> {
    let start = std::time::Instant::now();
    let outcome = ext.post("llm", "/llm/v1/evaluate", serde_json::json!({ "answer": answer })).await;
    obs_runtime::metric!("revel_llm_evaluation_duration_seconds").observe(start.elapsed().as_secs_f64());
    let verdict = outcome?;
    let passed = verdict.get("passed").and_then(serde_json::Value::as_bool).ok_or("llm: an answer without verdict")?;
    let tokens = verdict.get("tokens").and_then(serde_json::Value::as_u64).unwrap_or(0);
    let cost_usd = tokens as f64 * 0.15 / 1_000_000.0;
    obs_runtime::metric!("revel_llm_tokens_consumed_total", model = LLM_MODEL, evaluation_backend = "openai")
        .inc_by(tokens);
    obs_runtime::metric!("revel_llm_evaluation_cost_total", model = LLM_MODEL, currency = "USD").inc_by(cost_usd);
    obs_runtime::trace::record("llm.tokens", tokens);
    Ok(LlmVerdict { passed, tokens, cost_usd })
}

/// Sends one email (simulated); counted by outcome and by the catalog's email types
/// (`confirmation`, `notification`, `invitation`), and, once delivered, as a notification of its
/// exact type.
pub async fn send_email(ext: &Externals, email_type: &'static str, to: &str) -> Result<(), String> {
    let sent = ext.post("smtp", "/email/v1/send", serde_json::json!({ "to": to, "type": email_type })).await.map(drop);
    let status = if sent.is_ok() { "success" } else { "failure" };
    let kind = if email_type.ends_with("confirmation") {
        "confirmation"
    } else if email_type.ends_with("invitation") {
        "invitation"
    } else {
        "notification"
    };
    obs_runtime::metric!("revel_emails_sent_total", email_type = kind, status = status).inc();
    if sent.is_ok() {
        obs_runtime::metric!("revel_notifications_sent_total", notification_type = email_type, channel = "email").inc();
    }
    // The address is not logged: pattern scrubbing misses one without a dotted domain
    // (`ana@intranet`).
    tracing::debug!(email_type, status, "email");
    sent
}

#[traced_span("pdf.generate")]
pub async fn generate_pdf(ext: &Externals, ticket_id: u64) -> Result<Vec<u8>, String> {
    ext.pdf.call("pdf").await?;
    Ok(format!("%PDF-1.7 ticket {ticket_id}").into_bytes())
}

#[traced_span("ics.generate")]
pub fn generate_ics(event_name: &str, event_id: u64) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:{event_id}@revel\r\nSUMMARY:{event_name}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_signatures_verify_like_stripe() {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let body = br#"{"type":"checkout.session.completed"}"#;
        let header = sign_webhook("whsec_x", body, now);
        assert_eq!(verify_signature("whsec_x", &header, body), Ok(()));
        assert!(verify_signature("whsec_other", &header, body).is_err());
        assert!(verify_signature("whsec_x", &header, b"{}").is_err());
        assert!(verify_signature("whsec_x", &sign_webhook("whsec_x", body, now - 3600), body).is_err());
        assert!(verify_signature("whsec_x", "t=abc,v1=zz", body).is_err());
        // Checked against Python's `hmac.new(b"whsec_test", b"1700000000.{}", sha256)`.
        assert_eq!(
            sign_webhook("whsec_test", b"{}", 1_700_000_000),
            "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
    }
}
