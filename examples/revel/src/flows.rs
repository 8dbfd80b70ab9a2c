//! The five critical flows, instrumented with the span names of the spec, and the business
//! metrics where the original design records them.

use obs_runtime::{Scrub, counted, metric, traced_span};

use crate::domain::{Event, EventStatus, PaymentMethod, PaymentStatus, Store, Ticket, TicketStatus};
use crate::external::{self, Externals};
use crate::{App, FlowError};

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

#[traced_span("ticket.checkout", fields(event_id, tier_id, request = req))]
pub async fn checkout(
    app: &App,
    event_id: u64,
    tier_id: u64,
    req: &CheckoutRequest,
) -> Result<CheckoutOutcome, FlowError> {
    check_eligibility(app, event_id, req.user_id)?;
    let (org_id, method, price) = lock_tier(app, event_id, tier_id)?;
    // The seat goes back on sale unless a ticket holds it: on an error, and when the request is
    // dropped halfway (the client went away during the Stripe call).
    let hold = SeatHold { app, tier_id, kept: false };
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
        // The event may have been cancelled during the Stripe call: both steps check again under
        // the lock they write with (a cancelled event's tickets and checkouts are cancelled by
        // `cancel`, which cannot see a ticket not created yet).
        let ticket_id = create_ticket(app, event_id, tier_id, req.user_id, TicketStatus::Pending)?;
        hold.keep();
        create_payment(app, org_id, ticket_id, &session.id, price)?;
        return Ok(CheckoutOutcome { ticket_id, status: "pending_payment", checkout_url: Some(session.url) });
    }
    // Free, offline and at-the-door tickets are issued at once (offline and at-door are paid later).
    let ticket_id = create_ticket(app, event_id, tier_id, req.user_id, TicketStatus::Active)?;
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
/// lookup (what a slow check costs shows on its span).
#[traced_span("ticket.check_eligibility", fields(event_id, user_id))]
fn check_eligibility(app: &App, event_id: u64, user_id: u64) -> Result<(), FlowError> {
    let store = app.store();
    let event = store.events.get(&event_id).ok_or(FlowError::NotFound("event"))?;
    if event.status != EventStatus::Open {
        return Err(FlowError::Forbidden("the event is not open".into()));
    }
    // A ticket needs someone to hold it (and to send it to).
    if !store.users.contains_key(&user_id) {
        return Err(FlowError::NotFound("user"));
    }
    if check_privileged_access(&store, user_id) {
        return Ok(());
    }
    if !check_invitation(&store, event, user_id) {
        return Err(FlowError::Forbidden("invitation required".into()));
    }
    if !check_membership(&store, event, user_id) {
        return Err(FlowError::Forbidden("members only".into()));
    }
    if !check_questionnaire(&store, event, user_id) {
        return Err(FlowError::Forbidden("the questionnaire must be passed first".into()));
    }
    Ok(())
}

/// Staff may buy for any open event.
#[traced_span("eligibility.check_privileged_access")]
fn check_privileged_access(store: &Store, user_id: u64) -> bool {
    store.is_staff(user_id)
}

/// A private event needs an invitation.
#[traced_span("eligibility.check_invitation")]
fn check_invitation(store: &Store, event: &Event, user_id: u64) -> bool {
    store.invited(event, user_id)
}

/// A members-only event needs membership of its organization.
#[traced_span("eligibility.check_membership")]
fn check_membership(store: &Store, event: &Event, user_id: u64) -> bool {
    store.admitted_as_member(event, user_id)
}

/// An event with a questionnaire needs it passed.
#[traced_span("eligibility.check_questionnaire")]
fn check_questionnaire(store: &Store, event: &Event, user_id: u64) -> bool {
    store.questionnaire_passed(event, user_id)
}

#[traced_span("ticket.lock_tier", fields(tier_id))]
#[obs_runtime::timed(metric = "revel_database_query_duration_seconds", labels(query_type = "lock_tier"))]
fn lock_tier(app: &App, event_id: u64, tier_id: u64) -> Result<(u64, PaymentMethod, u64), FlowError> {
    let mut store = app.store();
    let event = store.events.get(&event_id).ok_or(FlowError::NotFound("event"))?;
    // Checked again under the lock that takes the seat: the event may have been cancelled since
    // the eligibility check.
    if event.status != EventStatus::Open {
        return Err(FlowError::Conflict("the event is not open".into()));
    }
    let org_id = event.org_id;
    let tier = store.tiers.get_mut(&tier_id).filter(|t| t.event_id == event_id).ok_or(FlowError::NotFound("tier"))?;
    if tier.sold >= tier.capacity {
        return Err(FlowError::SoldOut);
    }
    tier.sold += 1;
    Ok((org_id, tier.payment_method, tier.price_cents))
}

/// A seat taken by `lock_tier`, released when dropped unless a ticket now holds it.
struct SeatHold<'a> {
    app: &'a App,
    tier_id: u64,
    kept: bool,
}

impl SeatHold<'_> {
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for SeatHold<'_> {
    fn drop(&mut self) {
        if !self.kept {
            release_tier(self.app, self.tier_id);
        }
    }
}

fn release_tier(app: &App, tier_id: u64) {
    if let Some(t) = app.store().tiers.get_mut(&tier_id) {
        t.sold = t.sold.saturating_sub(1);
    }
}

/// A ticket, if its event is still open.
#[traced_span("ticket.create")]
fn create_ticket(app: &App, event_id: u64, tier_id: u64, user_id: u64, status: TicketStatus) -> Result<u64, FlowError> {
    let mut store = app.store();
    if store.events.get(&event_id).map(|e| e.status) != Some(EventStatus::Open) {
        return Err(FlowError::Conflict("the event was cancelled".into()));
    }
    let id = store.next_id();
    store.tickets.insert(id, Ticket { id, event_id, tier_id, user_id, status });
    obs_runtime::trace::record("ticket_id", id);
    Ok(id)
}

/// The payment of a checkout: pending, unless its ticket was cancelled meanwhile (its event
/// was): then recorded expired, so that Stripe's later webhooks for the session find it and
/// change nothing, and the buyer is told.
#[traced_span("payment.create")]
fn create_payment(
    app: &App,
    org_id: u64,
    ticket_id: u64,
    session_id: &str,
    amount_cents: u64,
) -> Result<(), FlowError> {
    let mut store = app.store();
    let cancelled = store.tickets.get(&ticket_id).is_none_or(|t| t.status == TicketStatus::Cancelled);
    let id = store.next_id();
    let status = if cancelled { PaymentStatus::Expired } else { PaymentStatus::Pending };
    let payment = crate::domain::Payment { id, ticket_id, session_id: session_id.to_owned(), amount_cents, status };
    store.payments.insert(session_id.to_owned(), payment);
    if cancelled {
        return Err(FlowError::Conflict("the event was cancelled".into()));
    }
    metric!("revel_payments_total", organization_id = org_id, status = "pending", payment_method = "online").inc();
    Ok(())
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

#[traced_span("questionnaire.evaluate", fields(questionnaire_id, submission))]
pub async fn evaluate(app: &App, questionnaire_id: u64, submission: &Submission) -> Result<Evaluation, FlowError> {
    let q = app.store().questionnaires.get(&questionnaire_id).cloned().ok_or(FlowError::NotFound("questionnaire"))?;
    metric!(
        "revel_questionnaire_submissions_total",
        organization_id = q.org_id,
        questionnaire_id = q.id,
        // Awaiting its evaluation, which is counted below.
        status = "pending"
    )
    .inc();
    let score = score_multiple_choice(&q.questions, &submission.answers);
    if q.mode == crate::domain::EvaluationMode::Manual {
        // A person reads it: nothing is decided, or counted as evaluated, until they do.
        app.store().pending_reviews.insert((questionnaire_id, submission.user_id));
        return Ok(Evaluation { passed: false, score, status: "pending_review" });
    }
    let free_text_ok = evaluate_free_text(&app.externals, &submission.free_text).await?;
    let fatal = check_fatal_flags(&q.questions, &submission.answers);
    let passed = !fatal && free_text_ok && score >= q.pass_ratio;
    conclude(app, &q, submission.user_id, passed).await;
    Ok(Evaluation { passed, score, status: if passed { "approved" } else { "rejected" } })
}

/// A reviewer's decision on a submission to a manual questionnaire.
#[traced_span("questionnaire.review", fields(questionnaire_id, user_id))]
pub async fn review(app: &App, questionnaire_id: u64, user_id: u64, approved: bool) -> Result<(), FlowError> {
    let q = {
        let mut store = app.store();
        if !store.pending_reviews.remove(&(questionnaire_id, user_id)) {
            return Err(FlowError::NotFound("submission awaiting review"));
        }
        store.questionnaires.get(&questionnaire_id).cloned().ok_or(FlowError::NotFound("questionnaire"))?
    };
    conclude(app, &q, user_id, approved).await;
    Ok(())
}

/// Records an evaluation's outcome, counts it, and tells the applicant.
async fn conclude(app: &App, q: &crate::domain::Questionnaire, user_id: u64, passed: bool) {
    create_evaluation(app, q.id, user_id, passed);
    metric!(
        "revel_questionnaire_evaluations_total",
        organization_id = q.org_id,
        evaluation_mode = q.mode.as_str(),
        result = if passed { "approved" } else { "rejected" }
    )
    .inc();
    send_evaluation_result(app, user_id, passed).await;
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

/// Stores the outcome and sets the questionnaire's pass rate (under the store's lock, so that
/// two evaluations finishing together cannot leave the older rate in the gauge).
#[traced_span("questionnaire.create_evaluation")]
fn create_evaluation(app: &App, questionnaire_id: u64, user_id: u64, passed: bool) {
    let mut store = app.store();
    if passed {
        store.passed_questionnaires.insert((questionnaire_id, user_id));
    }
    let q = store.questionnaires.get_mut(&questionnaire_id).expect("looked up by the caller");
    q.submissions += 1;
    q.passed += passed as u64;
    let rate = q.passed as f64 / q.submissions as f64;
    metric!("revel_questionnaire_pass_rate", organization_id = q.org_id, questionnaire_id = q.id).set(rate);
}

#[traced_span("notification.send_evaluation_result")]
async fn send_evaluation_result(app: &App, user_id: u64, passed: bool) {
    let Some(email) = app.store().users.get(&user_id).map(|u| u.email.clone()) else {
        tracing::warn!(user_id, "no such user: evaluation result not sent");
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

/// The gates, in order, each a span doing its own lookup; the first that refuses gives the
/// reason.
#[traced_span("event.check_eligibility", fields(event_id, user_id))]
pub fn event_eligibility(app: &App, event_id: u64, user_id: u64) -> Result<Eligibility, FlowError> {
    let store = app.store();
    let event = store.events.get(&event_id).ok_or(FlowError::NotFound("event"))?;
    // Staff skip the gates of an open event (checkout refuses any event that is not open).
    if gate_privileged_access(&store, event, user_id) {
        return Ok(Eligibility { allowed: true, reason: None });
    }
    type Gate = (fn(&Store, &Event, u64) -> bool, &'static str);
    let gates: [Gate; 6] = [
        (gate_event_status, "event_not_open"),
        (gate_invitation, "invitation_required"),
        (gate_membership, "members_only"),
        (gate_questionnaire, "questionnaire_required"),
        (gate_ticket_availability, "sold_out"),
        (gate_rsvp_deadline, "rsvp_closed"),
    ];
    for (gate, reason) in gates {
        if !gate(&store, event, user_id) {
            return Ok(Eligibility { allowed: false, reason: Some(reason) });
        }
    }
    Ok(Eligibility { allowed: true, reason: None })
}

#[traced_span("gate.privileged_access")]
fn gate_privileged_access(store: &Store, event: &Event, user_id: u64) -> bool {
    event.status == EventStatus::Open && store.is_staff(user_id)
}
#[traced_span("gate.event_status")]
fn gate_event_status(_: &Store, event: &Event, _: u64) -> bool {
    event.status == EventStatus::Open
}
#[traced_span("gate.invitation")]
fn gate_invitation(store: &Store, event: &Event, user_id: u64) -> bool {
    store.invited(event, user_id)
}
#[traced_span("gate.membership")]
fn gate_membership(store: &Store, event: &Event, user_id: u64) -> bool {
    store.admitted_as_member(event, user_id)
}
#[traced_span("gate.questionnaire")]
fn gate_questionnaire(store: &Store, event: &Event, user_id: u64) -> bool {
    store.questionnaire_passed(event, user_id)
}
#[traced_span("gate.ticket_availability")]
fn gate_ticket_availability(store: &Store, event: &Event, _: u64) -> bool {
    store.seats_left(event)
}
#[traced_span("gate.rsvp_deadline")]
fn gate_rsvp_deadline(_: &Store, event: &Event, _: u64) -> bool {
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
            let applied = {
                let mut store = app.store();
                let applied =
                    update_payment_status(&mut store, session_id, &[PaymentStatus::Pending], PaymentStatus::Succeeded)?;
                if let Some((ticket_id, ..)) = applied {
                    activate_ticket(&mut store, ticket_id);
                }
                applied
            };
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
            metric!("revel_revenue_total", organization_id = org_id, currency = "EUR").inc_by(revenue);
            metric!("revel_platform_fees_total", organization_id = org_id, currency = "EUR").inc_by(revenue * 0.05);
            match external::generate_pdf(&app.externals, ticket_id).await {
                Ok(pdf) => {
                    let name = app.store().events.get(&event_id).map(|e| e.name.clone()).unwrap_or_default();
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
            let refunded =
                update_payment_status(&mut app.store(), &event.data.session_id, &from, PaymentStatus::Refunded)?;
            let Some((ticket_id, org_id, event_id, tier_id, _)) = refunded else {
                return Ok(());
            };
            metric!("revel_payments_total", organization_id = org_id, status = "refunded", payment_method = "online")
                .inc();
            // Its ticket, unless the event's cancellation cancelled it already.
            if cancel_ticket(app, ticket_id) {
                release_tier(app, tier_id);
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
            let expired = update_payment_status(
                &mut app.store(),
                &event.data.session_id,
                &[PaymentStatus::Pending],
                PaymentStatus::Expired,
            )?;
            if let Some((ticket_id, _, _, tier_id, _)) = expired {
                if cancel_ticket(app, ticket_id) {
                    release_tier(app, tier_id);
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

/// Moves the session's payment from one of `from` to `to`; returns its ticket, organization,
/// event, tier and amount, or `None` when it is in none of `from` (a duplicate or late webhook:
/// Stripe delivers at least once, so applying one twice must change nothing).
#[traced_span("payment.update_status")]
fn update_payment_status(
    store: &mut Store,
    session_id: &str,
    from: &[PaymentStatus],
    to: PaymentStatus,
) -> Result<Option<PaymentRef>, FlowError> {
    let payment = store.payments.get_mut(session_id).ok_or(FlowError::NotFound("payment"))?;
    if !from.contains(&payment.status) {
        obs_runtime::trace::record("payment.already", format!("{:?}", payment.status));
        return Ok(None);
    }
    payment.status = to;
    let (ticket_id, amount) = (payment.ticket_id, payment.amount_cents);
    let ticket = store.tickets.get(&ticket_id).ok_or(FlowError::NotFound("ticket"))?;
    let (event_id, tier_id) = (ticket.event_id, ticket.tier_id);
    let org_id = store.events.get(&event_id).map(|e| e.org_id).unwrap_or_default();
    Ok(Some((ticket_id, org_id, event_id, tier_id, amount)))
}

/// Cancels a ticket; `false` if it was cancelled already.
fn cancel_ticket(app: &App, ticket_id: u64) -> bool {
    let mut store = app.store();
    match store.tickets.get_mut(&ticket_id) {
        Some(t) if t.status != TicketStatus::Cancelled => {
            t.status = TicketStatus::Cancelled;
            true
        }
        _ => false,
    }
}

/// A paid ticket becomes valid (only from pending: a cancelled one stays cancelled).
#[traced_span("ticket.activate")]
fn activate_ticket(store: &mut Store, ticket_id: u64) {
    if let Some(t) = store.tickets.get_mut(&ticket_id).filter(|t| t.status == TicketStatus::Pending) {
        t.status = TicketStatus::Active;
    }
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
    let email = {
        let store = app.store();
        let user = store.tickets.get(&ticket_id).and_then(|t| store.users.get(&t.user_id));
        user.map(|u| u.email.clone()).unwrap_or_default()
    };
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
pub fn publish(app: &App, event_id: u64) -> Result<(), FlowError> {
    update_status(&mut app.store(), event_id, &[EventStatus::Draft], EventStatus::Open)?;
    trigger_notification(app, event_id);
    Ok(())
}

/// Moves the event from one of `from` to `to`; anything else is refused (re-publishing would
/// notify every member again; a cancelled event stays cancelled).
#[traced_span("event.update_status")]
fn update_status(store: &mut Store, event_id: u64, from: &[EventStatus], to: EventStatus) -> Result<(), FlowError> {
    let event = store.events.get_mut(&event_id).ok_or(FlowError::NotFound("event"))?;
    if !from.contains(&event.status) {
        return Err(FlowError::Conflict(format!("the event is {:?}", event.status).to_lowercase()));
    }
    event.status = to;
    let active = store.active_events();
    metric!("revel_events_active").set(active as f64);
    Ok(())
}

#[traced_span("task.trigger_notification")]
fn trigger_notification(app: &App, event_id: u64) {
    app.tasks.enqueue(crate::tasks::Job::NotifyEventOpen { event_id, only: None, attempt: 0 });
}

#[traced_span("event.cancel", fields(event_id))]
pub async fn cancel(app: &App, event_id: u64) -> Result<(), FlowError> {
    // The status and the sweep in one critical section: a payment completing in between would
    // activate a ticket of a cancelled event, count it sold and send its confirmation.
    let (org_id, cancelled, paid) = {
        let mut store = app.store();
        update_status(&mut store, event_id, &[EventStatus::Draft, EventStatus::Open], EventStatus::Cancelled)?;
        let org_id = store.events.get(&event_id).map(|e| e.org_id).unwrap_or_default();
        // Its tickets go with it (a cancelled ticket cannot be checked in); checkouts still
        // waiting for Stripe expire (one paid later is refunded: `refund_if_expired`); paid
        // ones are refunded below.
        let Store { tickets, payments, .. } = &mut *store;
        let mut cancelled = std::collections::HashSet::new();
        for t in tickets.values_mut().filter(|t| t.event_id == event_id && t.status != TicketStatus::Cancelled) {
            t.status = TicketStatus::Cancelled;
            cancelled.insert(t.id);
        }
        let mut paid = Vec::new();
        for p in payments.values_mut().filter(|p| cancelled.contains(&p.ticket_id)) {
            match p.status {
                PaymentStatus::Pending => p.status = PaymentStatus::Expired,
                PaymentStatus::Succeeded => paid.push(p.session_id.clone()),
                _ => {}
            }
        }
        (org_id, cancelled.len(), paid)
    };
    metric!("revel_events_cancelled_total", organization_id = org_id, cancellation_reason = "organizer").inc();
    if cancelled > 0 {
        metric!(
            "revel_tickets_cancelled_total",
            organization_id = org_id,
            event_id = event_id,
            reason = "event_cancelled"
        )
        .inc_by(cancelled as u64);
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
    struct Claim<'a> {
        app: &'a App,
        session_id: &'a str,
        from: PaymentStatus,
        done: bool,
    }
    impl Drop for Claim<'_> {
        fn drop(&mut self) {
            if !self.done
                && let Some(p) = self.app.store().payments.get_mut(self.session_id)
                && p.status == PaymentStatus::Refunded
            {
                p.status = self.from;
            }
        }
    }
    let claimed = update_payment_status(&mut app.store(), session_id, &[from], PaymentStatus::Refunded)
        .map_err(|e| e.to_string())?;
    let Some((_, org_id, ..)) = claimed else { return Ok(false) };
    let mut claim = Claim { app, session_id, from, done: false };
    external::refund(&app.externals, session_id).await?;
    claim.done = true;
    metric!("revel_payments_total", organization_id = org_id, status = "refunded", payment_method = "online").inc();
    Ok(true)
}

#[traced_span("notification.get_eligible_users")]
pub fn eligible_users(app: &App, event_id: u64) -> Vec<String> {
    let store = app.store();
    let Some(event) = store.events.get(&event_id) else { return Vec::new() };
    let members = store.members.get(&event.org_id).cloned().unwrap_or_default();
    members.iter().filter_map(|id| store.users.get(id)).map(|u| u.email.clone()).collect()
}

#[traced_span("email.render_batch")]
pub fn render_batch(recipients: &[String], event_id: u64) -> Vec<(String, String)> {
    recipients.iter().map(|to| (to.clone(), format!("Event {event_id} is open for tickets"))).collect()
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

    fn app_with_slow_stripe() -> App {
        let mut ext = Externals::instant();
        ext.stripe = Behaviour { latency: std::time::Duration::from_secs(30), failure_rate: 0.0 };
        App::new(ext).0
    }

    fn sold(app: &App, tier: u64) -> u64 {
        app.store().tiers[&tier].sold
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_checkout_dropped_during_the_stripe_call_gives_its_seat_back() {
        let app = app_with_slow_stripe();
        let req = CheckoutRequest { user_id: 5, email: "u5@example.org".into(), card_number: None, cvv: None };
        let dropped = tokio::time::timeout(std::time::Duration::from_millis(20), checkout(&app, 1, 1, &req)).await;
        assert!(dropped.is_err(), "still waiting for Stripe when the client left");
        assert_eq!(sold(&app, 1), 0, "the seat is back on sale");
        // A completed checkout keeps its seat.
        let free = checkout(&app, 1, 2, &req).await.unwrap();
        assert_eq!(free.status, "issued");
        assert_eq!(sold(&app, 2), 1);
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

    fn payment(app: &App, ticket_id: u64) -> (String, PaymentStatus) {
        let store = app.store();
        let p = store.payments.values().find(|p| p.ticket_id == ticket_id).expect("a payment for the ticket");
        (p.session_id.clone(), p.status)
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
        ext.stripe = Behaviour { latency: std::time::Duration::from_millis(200), failure_rate: 0.0 };
        let app = App::new(ext).0;
        let req = buyer();
        let (outcome, cancelled) = tokio::join!(checkout(&app, 1, 1, &req), async {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            cancel(&app, 1).await
        });
        cancelled.unwrap();
        assert!(matches!(outcome, Err(FlowError::Conflict(_))), "the buyer is told, not sent to pay");
        assert_eq!(sold(&app, 1), 0, "the seat is released");
        assert!(
            app.store().tickets.values().all(|t| t.status != TicketStatus::Pending && t.status != TicketStatus::Active)
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_cancelled_event_refunds_what_was_paid_and_what_is_paid_later() {
        let _serial = REFUNDS.lock().await;
        crate::register_metrics();
        let app = App::new(Externals::instant()).0;
        let before = refunded();
        let (paid, late) =
            (checkout(&app, 1, 1, &buyer()).await.unwrap(), checkout(&app, 1, 1, &buyer()).await.unwrap());
        let (paid_session, _) = payment(&app, paid.ticket_id);
        webhook(&app, "checkout.session.completed", &paid_session).await.unwrap();
        assert_eq!(payment(&app, paid.ticket_id).1, PaymentStatus::Succeeded);

        cancel(&app, 1).await.unwrap();
        assert_eq!(payment(&app, paid.ticket_id).1, PaymentStatus::Refunded, "a paid ticket is refunded");
        let (late_session, status) = payment(&app, late.ticket_id);
        assert_eq!(status, PaymentStatus::Expired, "a checkout still open expires");
        // The buyer pays the expired checkout anyway (Stripe's page was still open): refunded,
        // and the ticket stays cancelled.
        webhook(&app, "checkout.session.completed", &late_session).await.unwrap();
        assert_eq!(payment(&app, late.ticket_id).1, PaymentStatus::Refunded);
        assert_eq!(app.store().tickets[&late.ticket_id].status, TicketStatus::Cancelled);
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
        let app = App::new(Externals::instant()).0;
        let sale = checkout(&app, 1, 1, &buyer()).await.unwrap();
        let (session, _) = payment(&app, sale.ticket_id);
        webhook(&app, "checkout.session.completed", &session).await.unwrap();
        // The same store, and a Stripe that now refuses every call.
        let mut down = Externals::instant();
        down.stripe.failure_rate = 1.0;
        let app = App { externals: std::sync::Arc::new(down), ..app };
        let before = refunded();
        cancel(&app, 1).await.unwrap();
        assert_eq!(
            payment(&app, sale.ticket_id).1,
            PaymentStatus::Succeeded,
            "the claim is put back: a refund is owed"
        );
        assert_eq!(refunded(), before, "not counted as refunded");
        assert_eq!(app.store().tickets[&sale.ticket_id].status, TicketStatus::Cancelled);
    }

    #[test]
    fn staff_are_eligible_only_for_open_events() {
        let app = App::new(Externals::instant()).0;
        assert!(event_eligibility(&app, 1, 1).unwrap().allowed);
        let draft = event_eligibility(&app, 3, 1).unwrap();
        assert_eq!((draft.allowed, draft.reason), (false, Some("event_not_open")));
    }
}
