//! The five critical flows, instrumented with the span names of the spec, and the business
//! metrics where the original design records them. Every lookup and change is a query on the
//! database: their spans (`SELECT events`, `UPDATE tiers`, `BEGIN` … `COMMIT`) are the children
//! of the flow's spans.

use obs_runtime::{Scrub, counted, metric, traced_span};

use crate::domain::{Event, EventStatus, PaymentMethod, PaymentStatus, Stored as _, TicketStatus, Visibility};
use crate::external::{self, Externals};
use crate::{App, FlowError};

type Row<T> = Result<Option<T>, sqlx::Error>;

/// An event's row.
async fn load_event(app: &App, event_id: u64) -> Result<Option<Event>, FlowError> {
    let row: Option<(i64, String, String, String, Option<i64>, i64)> = sqlx::query_as(
        "SELECT org_id, name, status, visibility, questionnaire_id, rsvp_open FROM events WHERE id = $1",
    )
    .bind(event_id as i64)
    .fetch_optional(&app.db)
    .await?;
    Ok(row.map(|(org_id, name, status, visibility, questionnaire_id, rsvp_open)| Event {
        id: event_id,
        org_id: org_id as u64,
        name,
        status: EventStatus::parse(&status).unwrap_or(EventStatus::Cancelled),
        visibility: Visibility::parse(&visibility).unwrap_or(Visibility::Private),
        questionnaire_id: questionnaire_id.map(|q| q as u64),
        rsvp_open: rsvp_open != 0,
    }))
}

/// Whether a query finds a row (`SELECT 1 … `).
async fn exists(app: &App, sql: &'static str, a: u64, b: u64) -> Result<bool, FlowError> {
    let found: Row<i64> = sqlx::query_scalar(sql).bind(a as i64).bind(b as i64).fetch_optional(&app.db).await;
    Ok(found?.is_some())
}

// ---------------------------------------------------------------------------------------------
// 1. Checkout

/// What a buyer sends. Card data never reaches telemetry: `card_number` and `cvv` are redacted
/// by name, the email is scrubbed.
#[derive(Scrub, serde::Deserialize)]
pub struct CheckoutRequest {
    pub user_id: u64,
    /// Redacted whole: pattern scrubbing would miss an address without a dotted domain.
    #[scrub(redact)]
    pub email: String,
    #[serde(default)]
    pub card_number: Option<String>,
    #[serde(default)]
    pub cvv: Option<String>,
}

#[derive(serde::Serialize, Debug)]
pub struct CheckoutOutcome {
    pub ticket_id: u64,
    pub status: &'static str,
    pub checkout_url: Option<String>,
}

/// The currency of every price (the seed's `currency` field and revenue label).
pub const CURRENCY: &str = "EUR";

#[traced_span("ticket.checkout", fields(event_id, tier_id, request = req))]
pub async fn checkout(
    app: &App,
    event_id: u64,
    tier_id: u64,
    req: &CheckoutRequest,
) -> Result<CheckoutOutcome, FlowError> {
    check_eligibility(app, event_id, req.user_id).await?;
    let (org_id, method, price) = lock_tier(app, event_id, tier_id).await?;
    obs_runtime::trace::record("organization_id", org_id);
    // The seat goes back on sale unless a ticket holds it: on an error, and when the request is
    // dropped halfway (the client went away during the Stripe call).
    let hold = SeatHold { app: Some(app.clone()), tier_id };
    tracing::info!(event_id, tier_id, payment_method = method.as_str(), "checkout");
    if method == PaymentMethod::Online {
        let session = match external::create_checkout_session(&app.externals, price).await {
            Ok(s) => s,
            Err(e) => {
                metric!("revel_payments_total", organization_id = org_id, status = "failed", payment_method = "online")
                    .inc();
                return Err(FlowError::Upstream(e));
            }
        };
        metric!("revel_payment_checkout_sessions_created_total").inc();
        // The event may have been cancelled during the Stripe call: both steps check again in
        // the transaction they write with (a cancelled event's tickets and checkouts are
        // cancelled by `cancel`, which cannot see a ticket not created yet).
        let ticket_id = create_ticket(app, event_id, tier_id, req.user_id, TicketStatus::Pending).await?;
        hold.keep();
        let payment_id = create_payment(app, org_id, ticket_id, &session.id, price).await?;
        // The seed's payment event, with its fields (ids only: no PII).
        tracing::info!(
            payment_id,
            ticket_id,
            organization_id = org_id,
            event_id,
            amount_cents = price,
            currency = CURRENCY,
            stripe_session_id = %session.id,
            "stripe_checkout_session_created"
        );
        return Ok(CheckoutOutcome { ticket_id, status: "pending_payment", checkout_url: Some(session.url) });
    }
    // Free, offline and at-the-door tickets are issued at once (offline and at-door are paid later).
    let ticket_id = create_ticket(app, event_id, tier_id, req.user_id, TicketStatus::Active).await?;
    hold.keep();
    metric!(
        "revel_tickets_sold_total",
        organization_id = org_id,
        event_id = event_id,
        tier_id = tier_id,
        payment_method = method.as_str()
    )
    .inc();
    Ok(CheckoutOutcome { ticket_id, status: "issued", checkout_url: None })
}

/// Every check runs, in order, until one refuses; each is a span of its own, doing its own
/// query (what a slow check costs shows on its span).
#[traced_span("ticket.check_eligibility", fields(event_id, user_id))]
async fn check_eligibility(app: &App, event_id: u64, user_id: u64) -> Result<(), FlowError> {
    let event = load_event(app, event_id).await?.ok_or(FlowError::NotFound("event"))?;
    if event.status != EventStatus::Open {
        return Err(FlowError::Forbidden("the event is not open".into()));
    }
    // A ticket needs someone to hold it (and to send it to).
    let staff: Row<i64> = sqlx::query_scalar("SELECT is_staff FROM users WHERE id = $1")
        .bind(user_id as i64)
        .fetch_optional(&app.db)
        .await;
    let Some(staff) = staff? else {
        return Err(FlowError::NotFound("user"));
    };
    if check_privileged_access(staff) {
        return Ok(());
    }
    if !check_invitation(app, &event, user_id).await? {
        return Err(FlowError::Forbidden("invitation required".into()));
    }
    if !check_membership(app, &event, user_id).await? {
        return Err(FlowError::Forbidden("members only".into()));
    }
    if !check_questionnaire(app, &event, user_id).await? {
        return Err(FlowError::Forbidden("the questionnaire must be passed first".into()));
    }
    Ok(())
}

/// Staff may buy for any open event.
#[traced_span("eligibility.check_privileged_access")]
fn check_privileged_access(is_staff: i64) -> bool {
    is_staff != 0
}

/// A private event needs an invitation.
#[traced_span("eligibility.check_invitation")]
async fn check_invitation(app: &App, event: &Event, user_id: u64) -> Result<bool, FlowError> {
    if event.visibility != Visibility::Private {
        return Ok(true);
    }
    exists(app, "SELECT 1 FROM invitations WHERE event_id = $1 AND user_id = $2", event.id, user_id).await
}

/// A members-only event needs membership of its organization.
#[traced_span("eligibility.check_membership")]
async fn check_membership(app: &App, event: &Event, user_id: u64) -> Result<bool, FlowError> {
    if event.visibility != Visibility::MembersOnly {
        return Ok(true);
    }
    exists(app, "SELECT 1 FROM memberships WHERE org_id = $1 AND user_id = $2", event.org_id, user_id).await
}

/// An event with a questionnaire needs it passed.
#[traced_span("eligibility.check_questionnaire")]
async fn check_questionnaire(app: &App, event: &Event, user_id: u64) -> Result<bool, FlowError> {
    let Some(q) = event.questionnaire_id else { return Ok(true) };
    exists(app, "SELECT 1 FROM questionnaire_passes WHERE questionnaire_id = $1 AND user_id = $2", q, user_id).await
}

/// Takes a seat: the tier's row locked (`FOR UPDATE` on PostgreSQL, the writer's lock of
/// `BEGIN IMMEDIATE` on SQLite), checked, and its count raised, in one transaction: two buyers of
/// the last seat never both get it.
#[traced_span("ticket.lock_tier", fields(tier_id))]
async fn lock_tier(app: &App, event_id: u64, tier_id: u64) -> Result<(u64, PaymentMethod, u64), FlowError> {
    let mut tx = app.begin_write().await?;
    let row: Option<(i64, i64, i64, String, i64, String)> = sqlx::query_as(app.sql(
        "SELECT t.sold, t.capacity, t.price_cents, t.payment_method, e.org_id, e.status \
         FROM tiers t JOIN events e ON e.id = t.event_id WHERE t.id = $1 AND t.event_id = $2",
        "SELECT t.sold, t.capacity, t.price_cents, t.payment_method, e.org_id, e.status \
         FROM tiers t JOIN events e ON e.id = t.event_id WHERE t.id = $1 AND t.event_id = $2 FOR UPDATE OF t",
    ))
    .bind(tier_id as i64)
    .bind(event_id as i64)
    .fetch_optional(&mut *tx)
    .await?;
    let (sold, capacity, price, method, org_id, status) = row.ok_or(FlowError::NotFound("tier"))?;
    // Checked again where the seat is taken: the event may have been cancelled since the
    // eligibility check.
    if status != EventStatus::Open.as_str() {
        return Err(FlowError::Conflict("the event is not open".into()));
    }
    if sold >= capacity {
        return Err(FlowError::SoldOut);
    }
    sqlx::query("UPDATE tiers SET sold = sold + 1 WHERE id = $1").bind(tier_id as i64).execute(&mut *tx).await?;
    tx.commit().await?;
    let method = PaymentMethod::parse(&method).unwrap_or(PaymentMethod::Online);
    Ok((org_id as u64, method, price as u64))
}

/// A seat taken by `lock_tier`, released when dropped unless a ticket now holds it.
struct SeatHold {
    app: Option<App>,
    tier_id: u64,
}

impl SeatHold {
    fn keep(mut self) {
        self.app = None;
    }
}

impl Drop for SeatHold {
    fn drop(&mut self) {
        if let Some(app) = self.app.take() {
            // The request may be going away (dropped): the release runs on its own, in its trace.
            let tier_id = self.tier_id;
            tokio::spawn(obs_runtime::trace::with_current_context(async move { release_tier(&app, tier_id).await }));
        }
    }
}

async fn release_tier(app: &App, tier_id: u64) {
    let released = app
        .write(|| {
            sqlx::query("UPDATE tiers SET sold = sold - 1 WHERE id = $1 AND sold > 0")
                .bind(tier_id as i64)
                .execute(&app.db)
        })
        .await;
    if released.is_err() {
        tracing::error!(tier_id, "a held seat was not released: the tier shows one more sold than it has");
    }
}

/// A ticket, if its event is still open (its row read under a lock `cancel` waits for).
#[traced_span("ticket.create")]
async fn create_ticket(
    app: &App,
    event_id: u64,
    tier_id: u64,
    user_id: u64,
    status: TicketStatus,
) -> Result<u64, FlowError> {
    let mut tx = app.begin_write().await?;
    let event: Option<String> = sqlx::query_scalar(
        app.sql("SELECT status FROM events WHERE id = $1", "SELECT status FROM events WHERE id = $1 FOR SHARE"),
    )
    .bind(event_id as i64)
    .fetch_optional(&mut *tx)
    .await?;
    if event.as_deref() != Some(EventStatus::Open.as_str()) {
        return Err(FlowError::Conflict("the event was cancelled".into()));
    }
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO tickets (event_id, tier_id, user_id, status) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(event_id as i64)
    .bind(tier_id as i64)
    .bind(user_id as i64)
    .bind(status.as_str())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    obs_runtime::trace::record("ticket_id", id);
    Ok(id as u64)
}

/// The payment of a checkout: pending, unless its ticket was cancelled meanwhile (its event
/// was): then recorded expired, so that Stripe's later webhooks for the session find it and
/// change nothing, and the buyer is told.
#[traced_span("payment.create", fields(stripe_session_id = session_id))]
async fn create_payment(
    app: &App,
    org_id: u64,
    ticket_id: u64,
    session_id: &str,
    amount_cents: u64,
) -> Result<u64, FlowError> {
    let mut tx = app.begin_write().await?;
    let ticket: Option<String> = sqlx::query_scalar(
        app.sql("SELECT status FROM tickets WHERE id = $1", "SELECT status FROM tickets WHERE id = $1 FOR SHARE"),
    )
    .bind(ticket_id as i64)
    .fetch_optional(&mut *tx)
    .await?;
    let cancelled = ticket.is_none_or(|s| s == TicketStatus::Cancelled.as_str());
    let status = if cancelled { PaymentStatus::Expired } else { PaymentStatus::Pending };
    let payment_id: i64 = sqlx::query_scalar(
        "INSERT INTO payments (ticket_id, session_id, amount_cents, status) VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(ticket_id as i64)
    .bind(session_id)
    .bind(amount_cents as i64)
    .bind(status.as_str())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    obs_runtime::trace::record("payment_id", payment_id);
    if cancelled {
        return Err(FlowError::Conflict("the event was cancelled".into()));
    }
    metric!("revel_payments_total", organization_id = org_id, status = "pending", payment_method = "online").inc();
    Ok(payment_id as u64)
}

// ---------------------------------------------------------------------------------------------
// 2. Questionnaire evaluation

#[derive(Scrub, serde::Deserialize)]
pub struct Submission {
    pub user_id: u64,
    pub answers: Vec<usize>,
    /// What the applicant wrote: personal by nature (names, places, contacts pattern scrubbing
    /// would miss), so never in telemetry.
    #[scrub(redact)]
    pub free_text: String,
}

#[derive(serde::Serialize, Debug)]
pub struct Evaluation {
    pub passed: bool,
    pub score: f64,
    /// `approved`, `rejected`, or `pending_review` (a manual questionnaire: a reviewer decides,
    /// see [`review`]).
    pub status: &'static str,
}

async fn load_questionnaire(app: &App, id: u64) -> Result<crate::domain::Questionnaire, FlowError> {
    let row: Option<(i64, String, String, f64)> =
        sqlx::query_as("SELECT org_id, evaluation_mode, questions, pass_ratio FROM questionnaires WHERE id = $1")
            .bind(id as i64)
            .fetch_optional(&app.db)
            .await?;
    let (org_id, mode, questions, pass_ratio) = row.ok_or(FlowError::NotFound("questionnaire"))?;
    Ok(crate::domain::Questionnaire {
        id,
        org_id: org_id as u64,
        mode: crate::domain::EvaluationMode::parse(&mode).unwrap_or(crate::domain::EvaluationMode::Manual),
        questions: serde_json::from_str(&questions).unwrap_or_default(),
        pass_ratio,
    })
}

#[traced_span("questionnaire.evaluate", fields(questionnaire_id, submission))]
pub async fn evaluate(app: &App, questionnaire_id: u64, submission: &Submission) -> Result<Evaluation, FlowError> {
    let q = load_questionnaire(app, questionnaire_id).await?;
    metric!(
        "revel_questionnaire_submissions_total",
        organization_id = q.org_id,
        questionnaire_id = q.id,
        // Awaiting its evaluation, which is counted below.
        status = "pending"
    )
    .inc();
    let submission_id: i64 = app
        .write(|| {
            sqlx::query_scalar(
                "INSERT INTO submissions (questionnaire_id, user_id, status) VALUES ($1, $2, 'pending') RETURNING id",
            )
            .bind(questionnaire_id as i64)
            .bind(submission.user_id as i64)
            .fetch_one(&app.db)
        })
        .await?;
    obs_runtime::trace::record("submission_id", submission_id);
    obs_runtime::trace::record("organization_id", q.org_id);
    // The seed's evaluation event, with its fields: a person decides a manual questionnaire, the
    // LLM the free text of the others.
    let evaluator_backend = if q.mode == crate::domain::EvaluationMode::Manual { "reviewer" } else { "llm" };
    tracing::info!(
        submission_id,
        questionnaire_id,
        organization_id = q.org_id,
        evaluation_mode = q.mode.as_str(),
        evaluator_backend,
        "questionnaire_evaluation_started"
    );
    let score = score_multiple_choice(&q.questions, &submission.answers);
    if q.mode == crate::domain::EvaluationMode::Manual {
        // A person reads it: nothing is decided, or counted as evaluated, until they do.
        app.write(|| {
            sqlx::query(
                "INSERT INTO pending_reviews (questionnaire_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(questionnaire_id as i64)
            .bind(submission.user_id as i64)
            .execute(&app.db)
        })
        .await?;
        return Ok(Evaluation { passed: false, score, status: "pending_review" });
    }
    let free_text_ok = evaluate_free_text(&app.externals, &submission.free_text).await?;
    let fatal = check_fatal_flags(&q.questions, &submission.answers);
    let passed = !fatal && free_text_ok && score >= q.pass_ratio;
    conclude(app, &q, submission.user_id, passed).await?;
    Ok(Evaluation { passed, score, status: if passed { "approved" } else { "rejected" } })
}

/// A reviewer's decision on a submission to a manual questionnaire.
#[traced_span("questionnaire.review", fields(questionnaire_id, user_id))]
pub async fn review(app: &App, questionnaire_id: u64, user_id: u64, approved: bool) -> Result<(), FlowError> {
    let taken = app
        .write(|| {
            sqlx::query("DELETE FROM pending_reviews WHERE questionnaire_id = $1 AND user_id = $2")
                .bind(questionnaire_id as i64)
                .bind(user_id as i64)
                .execute(&app.db)
        })
        .await?;
    if taken.rows_affected() == 0 {
        return Err(FlowError::NotFound("submission awaiting review"));
    }
    let q = load_questionnaire(app, questionnaire_id).await?;
    conclude(app, &q, user_id, approved).await
}

/// Records an evaluation's outcome, counts it, and tells the applicant.
async fn conclude(app: &App, q: &crate::domain::Questionnaire, user_id: u64, passed: bool) -> Result<(), FlowError> {
    create_evaluation(app, q.id, user_id, passed).await?;
    metric!(
        "revel_questionnaire_evaluations_total",
        organization_id = q.org_id,
        evaluation_mode = q.mode.as_str(),
        result = if passed { "approved" } else { "rejected" }
    )
    .inc();
    send_evaluation_result(app, user_id, passed).await;
    Ok(())
}

#[traced_span("questionnaire.score_multiple_choice")]
fn score_multiple_choice(questions: &[crate::domain::Question], answers: &[usize]) -> f64 {
    let right = questions.iter().zip(answers).filter(|(q, a)| q.correct == **a).count();
    right as f64 / questions.len().max(1) as f64
}

#[traced_span("questionnaire.evaluate_free_text")]
async fn evaluate_free_text(ext: &Externals, text: &str) -> Result<bool, FlowError> {
    let verdict = external::llm_evaluate(ext, text).await.map_err(FlowError::Upstream)?;
    Ok(verdict.passed)
}

#[traced_span("questionnaire.check_fatal_flags")]
fn check_fatal_flags(questions: &[crate::domain::Question], answers: &[usize]) -> bool {
    // An unanswered fatal question fails too.
    questions.iter().enumerate().any(|(i, q)| q.fatal && answers.get(i) != Some(&q.correct))
}

/// Stores the outcome and sets the questionnaire's pass rate (before the commit, under the
/// writer's lock, so that two evaluations finishing together cannot leave the older rate in the
/// gauge).
#[traced_span("questionnaire.create_evaluation")]
async fn create_evaluation(app: &App, questionnaire_id: u64, user_id: u64, passed: bool) -> Result<(), FlowError> {
    let mut tx = app.begin_write().await?;
    sqlx::query(
        "UPDATE submissions SET status = $1 WHERE questionnaire_id = $2 AND user_id = $3 AND status = 'pending'",
    )
    .bind(if passed { "approved" } else { "rejected" })
    .bind(questionnaire_id as i64)
    .bind(user_id as i64)
    .execute(&mut *tx)
    .await?;
    if passed {
        sqlx::query(
            "INSERT INTO questionnaire_passes (questionnaire_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(questionnaire_id as i64)
        .bind(user_id as i64)
        .execute(&mut *tx)
        .await?;
    }
    let (org_id, submissions, passes): (i64, i64, i64) = sqlx::query_as(
        "UPDATE questionnaires SET submissions = submissions + 1, passed = passed + $1 WHERE id = $2 \
         RETURNING org_id, submissions, passed",
    )
    .bind(i64::from(passed))
    .bind(questionnaire_id as i64)
    .fetch_one(&mut *tx)
    .await?;
    let rate = passes as f64 / submissions.max(1) as f64;
    metric!("revel_questionnaire_pass_rate", organization_id = org_id, questionnaire_id = questionnaire_id).set(rate);
    tx.commit().await?;
    Ok(())
}

#[traced_span("notification.send_evaluation_result")]
async fn send_evaluation_result(app: &App, user_id: u64, passed: bool) {
    let email: Row<String> =
        sqlx::query_scalar("SELECT email FROM users WHERE id = $1").bind(user_id as i64).fetch_optional(&app.db).await;
    let Ok(Some(email)) = email else {
        tracing::warn!(user_id, "no such user (or no database): evaluation result not sent");
        return;
    };
    let kind = if passed { "evaluation_passed" } else { "evaluation_failed" };
    // A notification that fails is logged, not fatal to the evaluation.
    if let Err(e) = external::send_email(&app.externals, kind, &email).await {
        tracing::warn!(error = %e, "evaluation result not sent");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Eligibility (the event page's "can I get a ticket?")

#[derive(serde::Serialize, Debug)]
pub struct Eligibility {
    pub allowed: bool,
    pub reason: Option<&'static str>,
}

/// The gates, in order, each a span doing its own query; the first that refuses gives the
/// reason.
#[traced_span("event.check_eligibility", fields(event_id, user_id))]
pub async fn event_eligibility(app: &App, event_id: u64, user_id: u64) -> Result<Eligibility, FlowError> {
    let event = load_event(app, event_id).await?.ok_or(FlowError::NotFound("event"))?;
    let refused = |reason| Ok(Eligibility { allowed: false, reason: Some(reason) });
    // Staff skip the gates of an open event (checkout refuses any event that is not open).
    if gate_privileged_access(app, &event, user_id).await? {
        return Ok(Eligibility { allowed: true, reason: None });
    }
    if !gate_event_status(&event) {
        return refused("event_not_open");
    }
    if !gate_invitation(app, &event, user_id).await? {
        return refused("invitation_required");
    }
    if !gate_membership(app, &event, user_id).await? {
        return refused("members_only");
    }
    if !gate_questionnaire(app, &event, user_id).await? {
        return refused("questionnaire_required");
    }
    if !gate_ticket_availability(app, &event).await? {
        return refused("sold_out");
    }
    if !gate_rsvp_deadline(&event) {
        return refused("rsvp_closed");
    }
    Ok(Eligibility { allowed: true, reason: None })
}

#[traced_span("gate.privileged_access")]
async fn gate_privileged_access(app: &App, event: &Event, user_id: u64) -> Result<bool, FlowError> {
    if event.status != EventStatus::Open {
        return Ok(false);
    }
    exists(app, "SELECT 1 FROM users WHERE id = $1 AND is_staff = $2", user_id, 1).await
}
#[traced_span("gate.event_status")]
fn gate_event_status(event: &Event) -> bool {
    event.status == EventStatus::Open
}
#[traced_span("gate.invitation")]
async fn gate_invitation(app: &App, event: &Event, user_id: u64) -> Result<bool, FlowError> {
    check_invitation(app, event, user_id).await
}
#[traced_span("gate.membership")]
async fn gate_membership(app: &App, event: &Event, user_id: u64) -> Result<bool, FlowError> {
    check_membership(app, event, user_id).await
}
#[traced_span("gate.questionnaire")]
async fn gate_questionnaire(app: &App, event: &Event, user_id: u64) -> Result<bool, FlowError> {
    check_questionnaire(app, event, user_id).await
}
#[traced_span("gate.ticket_availability")]
async fn gate_ticket_availability(app: &App, event: &Event) -> Result<bool, FlowError> {
    let left: Row<i64> = sqlx::query_scalar("SELECT id FROM tiers WHERE event_id = $1 AND sold < capacity LIMIT 1")
        .bind(event.id as i64)
        .fetch_optional(&app.db)
        .await;
    Ok(left?.is_some())
}
#[traced_span("gate.rsvp_deadline")]
fn gate_rsvp_deadline(event: &Event) -> bool {
    event.rsvp_open
}

// ---------------------------------------------------------------------------------------------
// 4. Stripe webhooks

#[derive(Scrub, serde::Deserialize)]
pub struct WebhookEvent {
    #[serde(rename = "type")]
    pub kind: String,
    /// Absent from some of the types Revel does not handle (and acknowledges all the same).
    #[serde(default)]
    pub data: WebhookData,
}

#[derive(Scrub, serde::Deserialize, Default)]
pub struct WebhookData {
    #[serde(default)]
    pub session_id: String,
}

/// Verifies and applies a webhook; counted by type and outcome.
#[traced_span("stripe.webhook.handle")]
#[counted(metric = "revel_stripe_webhooks_processed_total", labels(webhook_type = webhook_type(payload)), outcome(label = "status"))]
pub async fn handle_webhook(app: &App, signature: &str, payload: &[u8]) -> Result<(), FlowError> {
    external::verify_signature(&app.externals.webhook_secret, signature, payload).map_err(FlowError::BadSignature)?;
    let event: WebhookEvent = serde_json::from_slice(payload).map_err(|e| FlowError::BadRequest(e.to_string()))?;
    obs_runtime::trace::record("webhook_type", event.kind.clone());
    match event.kind.as_str() {
        "checkout.session.completed" => {
            let session_id = &event.data.session_id;
            // The payment and its ticket change together: an event cancelled in between would
            // leave a paid payment with a cancelled ticket that nobody refunds.
            let mut tx = app.begin_write().await?;
            let applied =
                update_payment_status(app, &mut tx, session_id, &[PaymentStatus::Pending], PaymentStatus::Succeeded)
                    .await?;
            if let Some((ticket_id, ..)) = applied {
                activate_ticket(&mut tx, ticket_id).await?;
            }
            tx.commit().await?;
            let Some((ticket_id, org_id, event_id, tier_id, amount)) = applied else {
                return refund_if_expired(app, session_id).await;
            };
            // Counted once the payment is recorded as succeeded, whatever fails afterwards (the
            // ticket PDF or the email are retried by nobody, and the money is in).
            let revenue = amount as f64 / 100.0;
            metric!("revel_payments_total", organization_id = org_id, status = "succeeded", payment_method = "online")
                .inc();
            metric!(
                "revel_tickets_sold_total",
                organization_id = org_id,
                event_id = event_id,
                tier_id = tier_id,
                payment_method = "online"
            )
            .inc();
            metric!("revel_revenue_total", organization_id = org_id, currency = CURRENCY).inc_by(revenue);
            metric!("revel_platform_fees_total", organization_id = org_id, currency = CURRENCY).inc_by(revenue * 0.05);
            match external::generate_pdf(&app.externals, ticket_id).await {
                Ok(pdf) => {
                    let name = load_event(app, event_id).await.ok().flatten().map(|e| e.name).unwrap_or_default();
                    let ics = external::generate_ics(&name, event_id);
                    send_confirmation(app, ticket_id, pdf.len() + ics.len()).await;
                }
                // Acknowledged all the same: a retry would find the payment done and change nothing.
                Err(e) => tracing::error!(error = %e, ticket_id, "ticket PDF not generated; confirmation not sent"),
            }
            Ok(())
        }
        "charge.refunded" => {
            // Stripe does not order deliveries: a refund may come before the completion it
            // undoes, which then finds the payment refunded and changes nothing.
            let from = [PaymentStatus::Succeeded, PaymentStatus::Pending];
            let mut tx = app.begin_write().await?;
            let refunded =
                update_payment_status(app, &mut tx, &event.data.session_id, &from, PaymentStatus::Refunded).await?;
            tx.commit().await?;
            let Some((ticket_id, org_id, event_id, tier_id, _)) = refunded else {
                return Ok(());
            };
            metric!("revel_payments_total", organization_id = org_id, status = "refunded", payment_method = "online")
                .inc();
            // Its ticket, unless the event's cancellation cancelled it already.
            if cancel_ticket(app, ticket_id).await? {
                release_tier(app, tier_id).await;
                metric!(
                    "revel_tickets_cancelled_total",
                    organization_id = org_id,
                    event_id = event_id,
                    reason = "refund"
                )
                .inc();
            }
            Ok(())
        }
        "checkout.session.expired" => {
            // The seat held for the unpaid checkout goes back on sale.
            let mut tx = app.begin_write().await?;
            let expired = update_payment_status(
                app,
                &mut tx,
                &event.data.session_id,
                &[PaymentStatus::Pending],
                PaymentStatus::Expired,
            )
            .await?;
            tx.commit().await?;
            if let Some((ticket_id, _, _, tier_id, _)) = expired {
                if cancel_ticket(app, ticket_id).await? {
                    release_tier(app, tier_id).await;
                }
                metric!("revel_payment_checkout_sessions_expired_total").inc();
            }
            Ok(())
        }
        // Stripe sends every event type the endpoint subscribes to and retries what is not
        // answered 2xx for days: an event Revel does not handle is acknowledged, not failed.
        other => {
            tracing::debug!(webhook_type = other, "webhook type not handled; acknowledged");
            Ok(())
        }
    }
}

/// The webhook's type as a bounded label value (anything else is `other`).
fn webhook_type(payload: &[u8]) -> &'static str {
    let kind =
        serde_json::from_slice::<serde_json::Value>(payload).ok().and_then(|v| v["type"].as_str().map(str::to_owned));
    match kind.as_deref() {
        Some("checkout.session.completed") => "checkout.session.completed",
        Some("charge.refunded") => "charge.refunded",
        Some("checkout.session.expired") => "checkout.session.expired",
        _ => "other",
    }
}

/// A payment's ticket, organization, event, tier and amount (cents).
type PaymentRef = (u64, u64, u64, u64, u64);

/// Moves the session's payment from one of `from` to `to`, in `tx` (its row locked); returns
/// its ticket, organization, event, tier and amount, or `None` when it is in none of `from` (a
/// duplicate or late webhook: Stripe delivers at least once, so applying one twice must change
/// nothing).
#[traced_span("payment.update_status", fields(stripe_session_id = session_id))]
async fn update_payment_status(
    app: &App,
    tx: &mut crate::db::Transaction,
    session_id: &str,
    from: &[PaymentStatus],
    to: PaymentStatus,
) -> Result<Option<PaymentRef>, FlowError> {
    let row: Option<(String, i64, i64, i64, i64, i64, i64)> = sqlx::query_as(app.sql(
        "SELECT p.status, p.ticket_id, p.amount_cents, t.event_id, t.tier_id, e.org_id, p.id \
         FROM payments p JOIN tickets t ON t.id = p.ticket_id JOIN events e ON e.id = t.event_id \
         WHERE p.session_id = $1",
        "SELECT p.status, p.ticket_id, p.amount_cents, t.event_id, t.tier_id, e.org_id, p.id \
         FROM payments p JOIN tickets t ON t.id = p.ticket_id JOIN events e ON e.id = t.event_id \
         WHERE p.session_id = $1 FOR UPDATE OF p",
    ))
    .bind(session_id)
    .fetch_optional(&mut *tx)
    .await?;
    let (status, ticket_id, amount, event_id, tier_id, org_id, payment_id) =
        row.ok_or(FlowError::NotFound("payment"))?;
    obs_runtime::trace::record("payment_id", payment_id);
    obs_runtime::trace::record("organization_id", org_id);
    if !from.iter().any(|f| f.as_str() == status) {
        obs_runtime::trace::record("payment.already", status);
        return Ok(None);
    }
    sqlx::query("UPDATE payments SET status = $1 WHERE session_id = $2")
        .bind(to.as_str())
        .bind(session_id)
        .execute(&mut *tx)
        .await?;
    Ok(Some((ticket_id as u64, org_id as u64, event_id as u64, tier_id as u64, amount as u64)))
}

/// Cancels a ticket; `false` if it was cancelled already.
async fn cancel_ticket(app: &App, ticket_id: u64) -> Result<bool, FlowError> {
    let done = app
        .write(|| {
            sqlx::query("UPDATE tickets SET status = 'cancelled' WHERE id = $1 AND status != 'cancelled'")
                .bind(ticket_id as i64)
                .execute(&app.db)
        })
        .await?;
    Ok(done.rows_affected() == 1)
}

/// A paid ticket becomes valid (only from pending: a cancelled one stays cancelled).
#[traced_span("ticket.activate")]
async fn activate_ticket(tx: &mut crate::db::Transaction, ticket_id: u64) -> Result<(), FlowError> {
    sqlx::query("UPDATE tickets SET status = 'active' WHERE id = $1 AND status = 'pending'")
        .bind(ticket_id as i64)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// A checkout paid after Revel expired it (its event was cancelled meanwhile): the buyer got no
/// ticket, so the money goes back. A failed refund fails the webhook, which Stripe delivers
/// again.
async fn refund_if_expired(app: &App, session_id: &str) -> Result<(), FlowError> {
    if refund(app, session_id, PaymentStatus::Expired).await.map_err(FlowError::Upstream)? {
        tracing::warn!("a checkout was paid after its event was cancelled; refunded");
    }
    Ok(())
}

#[traced_span("email.send_confirmation")]
async fn send_confirmation(app: &App, ticket_id: u64, attachment_bytes: usize) {
    let email: Row<String> =
        sqlx::query_scalar("SELECT u.email FROM tickets t JOIN users u ON u.id = t.user_id WHERE t.id = $1")
            .bind(ticket_id as i64)
            .fetch_optional(&app.db)
            .await;
    let email = email.ok().flatten().unwrap_or_default();
    if email.is_empty() {
        tracing::warn!(ticket_id, "the ticket holder has no email address; confirmation not sent");
        return;
    }
    tracing::debug!(attachment_bytes, ticket_id, "sending the ticket confirmation");
    if let Err(e) = external::send_email(&app.externals, "ticket_confirmation", &email).await {
        tracing::warn!(error = %e, ticket_id, "confirmation not sent");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Publishing an event, and the notification task

#[traced_span("event.publish", fields(event_id))]
pub async fn publish(app: &App, event_id: u64) -> Result<(), FlowError> {
    let mut tx = app.begin_write().await?;
    let org_id = update_status(app, &mut tx, event_id, &[EventStatus::Draft], EventStatus::Open).await?;
    let (visibility, tiers): (String, i64) = sqlx::query_as(
        "SELECT e.visibility, (SELECT count(*) FROM tiers t WHERE t.event_id = e.id) FROM events e WHERE e.id = $1",
    )
    .bind(event_id as i64)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    let event_type = crate::domain::Visibility::parse(&visibility).map_or("unknown", |v| v.event_type());
    obs_runtime::trace::record("organization_id", org_id);
    // The seed's lifecycle event, with its fields.
    tracing::info!(event_id, organization_id = org_id, event_type, has_tickets = tiers > 0, "event_published");
    app.forget_event(event_id).await;
    trigger_notification(app, event_id).await;
    Ok(())
}

/// Moves the event from one of `from` to `to`, in `tx` (its row locked); anything else is
/// refused (re-publishing would notify every member again; a cancelled event stays cancelled).
/// Returns its organization.
#[traced_span("event.update_status")]
async fn update_status(
    app: &App,
    tx: &mut crate::db::Transaction,
    event_id: u64,
    from: &[EventStatus],
    to: EventStatus,
) -> Result<u64, FlowError> {
    let row: Option<(String, i64)> = sqlx::query_as(app.sql(
        "SELECT status, org_id FROM events WHERE id = $1",
        "SELECT status, org_id FROM events WHERE id = $1 FOR UPDATE",
    ))
    .bind(event_id as i64)
    .fetch_optional(&mut *tx)
    .await?;
    let (status, org_id) = row.ok_or(FlowError::NotFound("event"))?;
    if !from.iter().any(|f| f.as_str() == status) {
        return Err(FlowError::Conflict(format!("the event is {status}")));
    }
    sqlx::query("UPDATE events SET status = $1 WHERE id = $2")
        .bind(to.as_str())
        .bind(event_id as i64)
        .execute(&mut *tx)
        .await?;
    let active: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE status = 'open'").fetch_one(&mut *tx).await?;
    // Set before the commit, under the writer's lock: two changes cannot leave the older count.
    metric!("revel_events_active").set(active as f64);
    Ok(org_id as u64)
}

#[traced_span("task.trigger_notification", kind = "producer")]
async fn trigger_notification(app: &App, event_id: u64) {
    app.tasks.enqueue(crate::tasks::Job::NotifyEventOpen { event_id, only: None, attempt: 0 }).await;
}

/// What `GET /events/{event}` answers (and the notification emails are titled with).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventDetails {
    pub id: u64,
    pub organization_id: u64,
    pub name: String,
    pub status: String,
    pub visibility: String,
}

/// An event's details: from the Redis cache when there is one (`revel_cache_requests_total`,
/// cache `event`), else from the database (then cached for [`crate::cache::EVENT_TTL_SECONDS`]).
/// Redis failing is not the request's failure: the database answers.
#[traced_span("event.details", fields(event_id))]
pub async fn event_details(app: &App, event_id: u64) -> Result<Option<EventDetails>, FlowError> {
    use redis::AsyncCommands as _;
    let key = crate::cache::event_key(event_id);
    if let Some(redis) = &app.redis {
        match redis.conn.clone().cache_get::<_, String>("event", &key).await {
            Ok(Some(cached)) => match serde_json::from_str(&cached) {
                Ok(details) => return Ok(Some(details)),
                Err(_) => tracing::warn!(event_id, "a cached event cannot be read; reading the database"),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(error_kind = ?e.kind(), "the event cache is unavailable; reading the database"),
        }
    }
    let row: Option<(i64, i64, String, String, String)> =
        sqlx::query_as("SELECT id, org_id, name, status, visibility FROM events WHERE id = $1")
            .bind(event_id as i64)
            .fetch_optional(&app.db)
            .await?;
    let details = row.map(|(id, org, name, status, visibility)| EventDetails {
        id: id as u64,
        organization_id: org as u64,
        name,
        status,
        visibility,
    });
    if let (Some(redis), Some(d)) = (&app.redis, &details) {
        let json = serde_json::to_string(d).expect("details serialize");
        let set: redis::RedisResult<()> = redis.conn.clone().set_ex(&key, json, crate::cache::EVENT_TTL_SECONDS).await;
        if let Err(e) = set {
            tracing::warn!(error_kind = ?e.kind(), "an event was not cached");
        }
    }
    Ok(details)
}

#[traced_span("event.cancel", fields(event_id))]
pub async fn cancel(app: &App, event_id: u64) -> Result<(), FlowError> {
    // The status and the sweep in one transaction: a payment completing in between would
    // activate a ticket of a cancelled event, count it sold and send its confirmation.
    let mut tx = app.begin_write().await?;
    let org_id =
        update_status(app, &mut tx, event_id, &[EventStatus::Draft, EventStatus::Open], EventStatus::Cancelled).await?;
    // Its tickets go with it (a cancelled ticket cannot be checked in); checkouts still waiting
    // for Stripe expire (one paid later is refunded: `refund_if_expired`); paid ones are
    // refunded below.
    let cancelled =
        sqlx::query("UPDATE tickets SET status = 'cancelled' WHERE event_id = $1 AND status != 'cancelled'")
            .bind(event_id as i64)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    sqlx::query(
        "UPDATE payments SET status = 'expired' WHERE status = 'pending' \
         AND ticket_id IN (SELECT id FROM tickets WHERE event_id = $1)",
    )
    .bind(event_id as i64)
    .execute(&mut *tx)
    .await?;
    let paid: Vec<String> = sqlx::query_scalar(
        "SELECT session_id FROM payments WHERE status = 'succeeded' \
         AND ticket_id IN (SELECT id FROM tickets WHERE event_id = $1)",
    )
    .bind(event_id as i64)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    app.forget_event(event_id).await;
    metric!("revel_events_cancelled_total", organization_id = org_id, cancellation_reason = "organizer").inc();
    if cancelled > 0 {
        metric!(
            "revel_tickets_cancelled_total",
            organization_id = org_id,
            event_id = event_id,
            reason = "event_cancelled"
        )
        .inc_by(cancelled);
    }
    // In a task of its own: the organizer's request waits for the refunds, but a client that goes
    // away (or a timeout) does not stop them halfway.
    let owed = paid.len();
    let refunds = {
        let app = app.clone();
        obs_runtime::trace::with_current_context(async move {
            let mut unrefunded = 0;
            for session_id in &paid {
                if let Err(e) = refund(&app, session_id, PaymentStatus::Succeeded).await {
                    // Left succeeded: this line is what says a refund is owed.
                    tracing::error!(error = %e, event_id, "refund of a cancelled event's ticket failed");
                    unrefunded += 1;
                }
            }
            unrefunded
        })
    };
    let unrefunded = tokio::spawn(refunds).await.unwrap_or(owed);
    tracing::info!(event_id, tickets = cancelled, refunds = owed - unrefunded, unrefunded, "event cancelled");
    Ok(())
}

/// Refunds the session's payment, which is in `from`: claimed first (marked refunded, so that a
/// duplicate webhook arriving meanwhile does not refund it twice), put back if Stripe fails or
/// the refund is dropped halfway; counted once Stripe did it. `Ok(false)`: not in `from` any more.
async fn refund(app: &App, session_id: &str, from: PaymentStatus) -> Result<bool, String> {
    /// Puts the claim back unless the refund was done.
    struct Claim {
        app: Option<App>,
        session_id: String,
        from: PaymentStatus,
    }
    impl Drop for Claim {
        fn drop(&mut self) {
            let Some(app) = self.app.take() else { return };
            let (session_id, from) = (std::mem::take(&mut self.session_id), self.from);
            tokio::spawn(obs_runtime::trace::with_current_context(async move {
                let put_back = app
                    .write(|| {
                        sqlx::query("UPDATE payments SET status = $1 WHERE session_id = $2 AND status = 'refunded'")
                            .bind(from.as_str())
                            .bind(&session_id)
                            .execute(&app.db)
                    })
                    .await;
                if put_back.is_err() {
                    tracing::error!("a refund claim was not put back: the payment shows refunded, and is not");
                }
            }));
        }
    }
    let mut tx = app.begin_write().await.map_err(|e| e.to_string())?;
    let claimed = update_payment_status(app, &mut tx, session_id, &[from], PaymentStatus::Refunded)
        .await
        .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    let Some((_, org_id, ..)) = claimed else { return Ok(false) };
    let mut claim = Claim { app: Some(app.clone()), session_id: session_id.to_owned(), from };
    external::refund(&app.externals, session_id).await?;
    claim.app = None;
    metric!("revel_payments_total", organization_id = org_id, status = "refunded", payment_method = "online").inc();
    Ok(true)
}

#[traced_span("notification.get_eligible_users")]
pub async fn eligible_users(app: &App, event_id: u64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT u.email FROM events e JOIN memberships m ON m.org_id = e.org_id JOIN users u ON u.id = m.user_id \
         WHERE e.id = $1 ORDER BY u.id",
    )
    .bind(event_id as i64)
    .fetch_all(&app.db)
    .await
}

#[traced_span("email.render_batch")]
pub fn render_batch(recipients: &[String], event_name: &str) -> Vec<(String, String)> {
    recipients.iter().map(|to| (to.clone(), format!("{event_name} is open for tickets"))).collect()
}

/// Sends a batch; returns the recipients it could not reach.
#[traced_span("email.send_batch")]
pub async fn send_batch(app: &App, batch: &[(String, String)]) -> Vec<String> {
    let mut failed = Vec::new();
    for (to, _body) in batch {
        if external::send_email(&app.externals, "event_open", to).await.is_err() {
            failed.push(to.clone());
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::external::{Behaviour, Externals};

    async fn app_with_slow_stripe() -> App {
        let mut ext = Externals::instant();
        ext.stripe = Behaviour { latency: std::time::Duration::from_secs(30), failure_rate: 0.0 };
        App::for_tests(ext).await.0
    }

    async fn sold(app: &App, tier: u64) -> i64 {
        sqlx::query_scalar("SELECT sold FROM tiers WHERE id = $1").bind(tier as i64).fetch_one(&app.db).await.unwrap()
    }

    /// Waits (bounded, for a loaded machine) until the tier shows `n` sold: a release runs on a
    /// task of its own.
    async fn sold_becomes(app: &App, tier: u64, n: i64) -> i64 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let now = sold(app, tier).await;
            if now == n || std::time::Instant::now() > deadline {
                return now;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_checkout_dropped_during_the_stripe_call_gives_its_seat_back() {
        let app = app_with_slow_stripe().await;
        let req = CheckoutRequest { user_id: 5, email: "u5@example.org".into(), card_number: None, cvv: None };
        let dropped = tokio::time::timeout(std::time::Duration::from_millis(200), checkout(&app, 1, 1, &req)).await;
        assert!(dropped.is_err(), "still waiting for Stripe when the client left");
        assert_eq!(sold_becomes(&app, 1, 0).await, 0, "the seat is back on sale");
        // A completed checkout keeps its seat.
        let free = checkout(&app, 1, 2, &req).await.unwrap();
        assert_eq!(free.status, "issued");
        assert_eq!(sold(&app, 2).await, 1);
    }

    fn buyer() -> CheckoutRequest {
        CheckoutRequest { user_id: 5, email: "u5@example.org".into(), card_number: None, cvv: None }
    }

    async fn webhook(app: &App, kind: &str, session_id: &str) -> Result<(), FlowError> {
        let body = serde_json::json!({ "type": kind, "data": { "session_id": session_id } }).to_string();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let signature = external::sign_webhook(&app.externals.webhook_secret, body.as_bytes(), now);
        handle_webhook(app, &signature, body.as_bytes()).await
    }

    async fn payment(app: &App, ticket_id: u64) -> (String, PaymentStatus) {
        let (session, status): (String, String) =
            sqlx::query_as("SELECT session_id, status FROM payments WHERE ticket_id = $1")
                .bind(ticket_id as i64)
                .fetch_one(&app.db)
                .await
                .expect("a payment for the ticket");
        (session, PaymentStatus::parse(&status).unwrap())
    }

    async fn ticket_status(app: &App, ticket_id: u64) -> TicketStatus {
        let s: String = sqlx::query_scalar("SELECT status FROM tickets WHERE id = $1")
            .bind(ticket_id as i64)
            .fetch_one(&app.db)
            .await
            .unwrap();
        TicketStatus::parse(&s).unwrap()
    }

    /// The tests that count refunds (organization 1's counter): one at a time.
    static REFUNDS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    fn refunded() -> f64 {
        obs_runtime::testing::value(
            "revel_payments_total",
            &[("organization_id", "1"), ("status", "refunded"), ("payment_method", "online")],
        )
        .unwrap_or(0.0)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_event_cancelled_during_the_stripe_call_sells_no_ticket() {
        let mut ext = Externals::instant();
        ext.stripe = Behaviour { latency: std::time::Duration::from_millis(300), failure_rate: 0.0 };
        let app = App::for_tests(ext).await.0;
        let req = buyer();
        let (outcome, cancelled) = tokio::join!(checkout(&app, 1, 1, &req), async {
            // Once the seat is taken (the checkout is at Stripe), the organizer cancels.
            sold_becomes(&app, 1, 1).await;
            cancel(&app, 1).await
        });
        cancelled.unwrap();
        assert!(matches!(outcome, Err(FlowError::Conflict(_))), "the buyer is told, not sent to pay: {outcome:?}");
        assert_eq!(sold_becomes(&app, 1, 0).await, 0, "the seat is released");
        let live: i64 = sqlx::query_scalar("SELECT count(*) FROM tickets WHERE status IN ('pending', 'active')")
            .fetch_one(&app.db)
            .await
            .unwrap();
        assert_eq!(live, 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_cancelled_event_refunds_what_was_paid_and_what_is_paid_later() {
        let _serial = REFUNDS.lock().await;
        crate::register_metrics();
        let app = App::for_tests(Externals::instant()).await.0;
        let before = refunded();
        let (paid, late) =
            (checkout(&app, 1, 1, &buyer()).await.unwrap(), checkout(&app, 1, 1, &buyer()).await.unwrap());
        let (paid_session, _) = payment(&app, paid.ticket_id).await;
        webhook(&app, "checkout.session.completed", &paid_session).await.unwrap();
        assert_eq!(payment(&app, paid.ticket_id).await.1, PaymentStatus::Succeeded);

        cancel(&app, 1).await.unwrap();
        assert_eq!(payment(&app, paid.ticket_id).await.1, PaymentStatus::Refunded, "a paid ticket is refunded");
        let (late_session, status) = payment(&app, late.ticket_id).await;
        assert_eq!(status, PaymentStatus::Expired, "a checkout still open expires");
        // The buyer pays the expired checkout anyway (Stripe's page was still open): refunded,
        // and the ticket stays cancelled.
        webhook(&app, "checkout.session.completed", &late_session).await.unwrap();
        assert_eq!(payment(&app, late.ticket_id).await.1, PaymentStatus::Refunded);
        assert_eq!(ticket_status(&app, late.ticket_id).await, TicketStatus::Cancelled);
        assert_eq!(refunded(), before + 2.0);
        // Stripe's own refund notifications, and a duplicate completion, change nothing.
        webhook(&app, "charge.refunded", &paid_session).await.unwrap();
        webhook(&app, "checkout.session.completed", &late_session).await.unwrap();
        assert_eq!(refunded(), before + 2.0);
        // An event type Revel does not handle may have no data at all: acknowledged.
        let body = br#"{"type":"customer.created"}"#;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let signature = external::sign_webhook(&app.externals.webhook_secret, body, now);
        handle_webhook(&app, &signature, body).await.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_refund_stripe_refuses_leaves_the_payment_paid_and_uncounted() {
        let _serial = REFUNDS.lock().await;
        crate::register_metrics();
        let app = App::for_tests(Externals::instant()).await.0;
        let sale = checkout(&app, 1, 1, &buyer()).await.unwrap();
        let (session, _) = payment(&app, sale.ticket_id).await;
        webhook(&app, "checkout.session.completed", &session).await.unwrap();
        // The same database, and a Stripe that now refuses every call.
        let mut down = Externals::instant();
        down.stripe.failure_rate = 1.0;
        let app = App { externals: std::sync::Arc::new(down), ..app };
        let before = refunded();
        cancel(&app, 1).await.unwrap();
        // The claim is put back by a task of its own.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while payment(&app, sale.ticket_id).await.1 != PaymentStatus::Succeeded && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(
            payment(&app, sale.ticket_id).await.1,
            PaymentStatus::Succeeded,
            "the claim is put back: a refund is owed"
        );
        assert_eq!(refunded(), before, "not counted as refunded");
        assert_eq!(ticket_status(&app, sale.ticket_id).await, TicketStatus::Cancelled);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn staff_are_eligible_only_for_open_events() {
        let app = App::for_tests(Externals::instant()).await.0;
        assert!(event_eligibility(&app, 1, 1).await.unwrap().allowed);
        let draft = event_eligibility(&app, 3, 1).await.unwrap();
        assert_eq!((draft.allowed, draft.reason), (false, Some("event_not_open")));
    }

    /// Many buyers, one seat left: exactly one gets it, whatever the interleaving (the row lock
    /// of `lock_tier`), and the tier never shows more sold than its capacity.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_buyers_of_the_last_seat_never_oversell() {
        let app = App::for_tests(Externals::instant()).await.0;
        // Tier 5 (3 seats, at the door) belongs to the draft event 3: open it, two seats sold.
        sqlx::query("UPDATE events SET status = 'open' WHERE id = 3").execute(&app.db).await.unwrap();
        sqlx::query("UPDATE tiers SET sold = 2 WHERE id = 5").execute(&app.db).await.unwrap();
        let buyers: Vec<_> = (2..18u64)
            .map(|user_id| {
                let app = app.clone();
                tokio::spawn(async move {
                    let req = CheckoutRequest {
                        user_id,
                        email: format!("u{user_id}@example.org"),
                        card_number: None,
                        cvv: None,
                    };
                    checkout(&app, 3, 5, &req).await
                })
            })
            .collect();
        let mut issued = 0;
        for b in buyers {
            match b.await.unwrap() {
                Ok(o) => {
                    assert_eq!(o.status, "issued");
                    issued += 1;
                }
                Err(FlowError::SoldOut) => {}
                Err(e) => panic!("a buyer failed otherwise: {e:?}"),
            }
        }
        assert_eq!(issued, 1, "one seat, one ticket");
        assert_eq!(sold(&app, 5).await, 3);
        let tickets: i64 =
            sqlx::query_scalar("SELECT count(*) FROM tickets WHERE tier_id = 5").fetch_one(&app.db).await.unwrap();
        assert_eq!(tickets, 1);
    }
}
