//! Revel, the reference service of obs: an event-ticketing platform with its domain in memory and
//! every critical flow instrumented the way the spec names it. `cargo run -p revel` runs it with
//! zero infrastructure; see the README for the LGTM stack.

pub mod domain;
pub mod external;
pub mod flows;
pub mod tasks;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use obs_runtime::http::ObsLayer;
use obs_runtime::{Scrub, metric};

/// Everything a handler needs.
#[derive(Clone)]
pub struct App {
    pub store: Arc<Mutex<domain::Store>>,
    pub externals: Arc<external::Externals>,
    pub tasks: tasks::Queue,
}

/// Why a flow failed; each maps to an HTTP status.
#[derive(Debug)]
pub enum FlowError {
    NotFound(&'static str),
    Forbidden(String),
    SoldOut,
    BadRequest(String),
    BadSignature(String),
    Conflict(String),
    Upstream(String),
}

impl std::fmt::Display for FlowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlowError::NotFound(what) => write!(f, "{what} not found"),
            FlowError::Forbidden(why) => write!(f, "not allowed: {why}"),
            FlowError::SoldOut => f.write_str("sold out"),
            FlowError::BadRequest(why) => write!(f, "bad request: {why}"),
            FlowError::BadSignature(why) => write!(f, "bad signature: {why}"),
            FlowError::Conflict(why) => write!(f, "conflict: {why}"),
            FlowError::Upstream(why) => write!(f, "upstream failure: {why}"),
        }
    }
}

impl IntoResponse for FlowError {
    fn into_response(self) -> Response {
        let status = match self {
            FlowError::NotFound(_) => StatusCode::NOT_FOUND,
            FlowError::Forbidden(_) => StatusCode::FORBIDDEN,
            FlowError::SoldOut => StatusCode::CONFLICT,
            FlowError::BadRequest(_) => StatusCode::BAD_REQUEST,
            FlowError::BadSignature(_) => StatusCode::UNAUTHORIZED,
            FlowError::Conflict(_) => StatusCode::CONFLICT,
            FlowError::Upstream(_) => StatusCode::BAD_GATEWAY,
        };
        (status, Json(serde_json::json!({ "error": self.to_string() }))).into_response()
    }
}

impl App {
    /// The store, locked. A handler that panicked while holding it (answered 500 by the HTTP
    /// layer) leaves whatever it wrote before the panic, and the other requests go on rather than
    /// all failing on a poisoned lock, as they would with `lock().unwrap()`: for an in-memory
    /// demo, availability over a possibly half-done change (a database would roll it back).
    pub fn store(&self) -> std::sync::MutexGuard<'_, domain::Store> {
        self.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A seeded store and the given external services; the worker's queue end is returned for
    /// [`tasks::run_worker`].
    pub fn new(
        externals: external::Externals,
    ) -> (App, tokio::sync::mpsc::UnboundedReceiver<(obs_runtime::task::Task, tasks::Job)>) {
        let (queue, rx) = tasks::Queue::new();
        let store = domain::Store::seeded();
        metric!("revel_events_active").set(store.active_events() as f64);
        metric!("revel_organization_members", organization_id = 1).set(store.members[&1].len() as f64);
        (App { store: Arc::new(Mutex::new(store)), externals: Arc::new(externals), tasks: queue }, rx)
    }

    /// Notes that a user did something: a user not active in the last 7 days counts in
    /// `revel_users_active_weekly` at once; [`sweep_active_users`] takes out those who stopped.
    pub fn touch(&self, user: u64) {
        note_active(&mut self.store(), user);
    }
}

/// [`App::touch`] for a handler that holds the store already.
fn note_active(store: &mut domain::Store, user: u64) {
    if store.touch(user, std::time::Instant::now()) {
        metric!("revel_users_active_weekly").inc();
    }
}

/// Every minute, sets `revel_users_active_weekly` to the users active in the last 7 days (a user
/// whose week ran out is counted until the next sweep).
pub async fn sweep_active_users(app: App) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        every.tick().await;
        let mut store = app.store();
        let active = store.prune_active(std::time::Instant::now());
        metric!("revel_users_active_weekly").set(active as f64);
    }
}

/// Registers the catalog and the task metrics (once per process).
pub fn register_metrics() {
    obs_runtime::metrics::register_catalog(obs_runtime::catalog!());
    obs_runtime::task::record_metrics(
        obs_runtime::metric_def!("revel_celery_tasks_total"),
        obs_runtime::metric_def!("revel_celery_task_duration_seconds"),
        Some(obs_runtime::metric_def!("revel_celery_queue_depth")),
    );
}

/// The HTTP API's routes (serve [`service`]: it is observed).
pub fn router(app: App) -> Router {
    Router::new()
        .route("/register", post(register))
        .route("/organizations/{org}/events", post(create_event))
        .route("/organizations/{org}/membership-requests", post(membership_request))
        .route("/organizations/{org}/questionnaires", post(create_questionnaire))
        .route("/events/{event}/publish", post(publish))
        .route("/events/{event}/cancel", post(cancel))
        .route("/events/{event}/eligibility", get(eligibility))
        .route("/events/{event}/tiers/{tier}/checkout", post(checkout))
        .route("/tickets/{ticket}/check-in", post(check_in))
        .route("/questionnaires/{id}/submissions", post(submit))
        .route("/questionnaires/{id}/submissions/{user}/review", post(review))
        .route("/stripe/webhook", post(webhook))
        .route("/metrics", get(obs_runtime::metrics::metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(app)
}

/// The longest a request may take, reading its body included.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The service as it is served: the API and the profiling endpoints, wrapped whole by the HTTP
/// layer, so that every request is seen (an unknown path's 404 included) whatever is merged in.
pub fn service(app: App, profiling: obs_runtime::profile::EndpointSettings) -> obs_runtime::http::ObsService<Router> {
    ObsLayer::new()
        .request_metrics(
            obs_runtime::metric_def!("revel_api_requests_total"),
            obs_runtime::metric_def!("revel_api_request_duration_seconds"),
        )
        // An id, parsed: a client's header value is never logged as it came.
        .user_id(|req| req.headers.get("x-user-id")?.to_str().ok()?.parse::<u64>().ok().map(|id| id.to_string()))
        .wrap(
            router(app)
                // A request that has not finished in 30 s (a client trickling its body) gets a 408:
                // a client cannot hold a connection, or a graceful shutdown, forever. The
                // profiling endpoints are left out: a profile takes as long as it is asked to.
                .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                    axum::http::StatusCode::REQUEST_TIMEOUT,
                    REQUEST_TIMEOUT,
                ))
                .merge(obs_runtime::profile::router(profiling))
                .layer(axum::middleware::map_response(json_errors)),
        )
}

/// Every error of the API answers `{"error": "…"}`, like [`FlowError`]'s: the ones axum and
/// tower-http answer themselves in plain text or with no body (a body over the size limit (413),
/// JSON that does not parse (400/422), a wrong content type (415), an unknown path (404), a
/// wrong method (405), the request timeout (408)) are rewritten here, their text kept.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    // These bodies are one line of text; 64 KiB bounds what is read of one that is not.
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let message = match String::from_utf8_lossy(&text).trim() {
        "" => status.canonical_reason().unwrap_or("error").to_owned(),
        text => text.to_owned(),
    };
    let mut json = (status, Json(serde_json::json!({ "error": message }))).into_response();
    // The other headers stay (a 405's `Allow`, a 401's `WWW-Authenticate`).
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            json.headers_mut().append(name, value.clone());
        }
    }
    json
}

#[derive(Scrub, serde::Deserialize)]
struct Registration {
    #[scrub(redact)]
    email: String,
    password: String,
}

async fn register(
    State(app): State<App>,
    Json(form): Json<Registration>,
) -> Result<Json<serde_json::Value>, FlowError> {
    tracing::info!(form = ?form, "registration");
    if form.password.len() < 8 {
        return Err(FlowError::BadRequest("the password is too short".into()));
    }
    let mut store = app.store();
    let id = store.next_id();
    store.users.insert(id, domain::User { id, email: form.email, is_staff: false });
    metric!("revel_users_registered_total", registration_method = "email").inc();
    note_active(&mut store, id);
    Ok(Json(serde_json::json!({ "user_id": id })))
}

#[derive(Scrub, serde::Deserialize)]
struct NewEvent {
    name: String,
    visibility: domain::Visibility,
    #[serde(default)]
    tiers: Vec<NewTier>,
}

#[derive(Scrub, serde::Deserialize)]
struct NewTier {
    price_cents: u64,
    capacity: u64,
    payment_method: domain::PaymentMethod,
}

async fn create_event(
    State(app): State<App>,
    Path(org): Path<u64>,
    Json(new): Json<NewEvent>,
) -> Result<Json<serde_json::Value>, FlowError> {
    let mut store = app.store();
    // Organization ids label metrics: only existing ones may create series.
    if !store.members.contains_key(&org) {
        return Err(FlowError::NotFound("organization"));
    }
    let id = store.next_id();
    let event_type = match new.visibility {
        domain::Visibility::Public => "public",
        domain::Visibility::Private => "private",
        domain::Visibility::MembersOnly => "members-only",
    };
    metric!(
        "revel_events_created_total",
        organization_id = org,
        event_type = event_type,
        has_tickets = !new.tiers.is_empty()
    )
    .inc();
    let mut tier_ids = Vec::new();
    for t in new.tiers {
        let tier_id = store.next_id();
        metric!("revel_ticket_tiers_by_type_total", organization_id = org, payment_method = t.payment_method.as_str())
            .inc();
        store.tiers.insert(
            tier_id,
            domain::Tier {
                id: tier_id,
                event_id: id,
                price_cents: t.price_cents,
                capacity: t.capacity,
                sold: 0,
                payment_method: t.payment_method,
            },
        );
        tier_ids.push(tier_id);
    }
    store.events.insert(
        id,
        domain::Event {
            id,
            org_id: org,
            name: new.name,
            status: domain::EventStatus::Draft,
            visibility: new.visibility,
            questionnaire_id: None,
            rsvp_open: true,
            tier_ids: tier_ids.clone(),
        },
    );
    Ok(Json(serde_json::json!({ "event_id": id, "tier_ids": tier_ids })))
}

#[derive(Scrub, serde::Deserialize)]
struct NewQuestionnaire {
    evaluation_mode: domain::EvaluationMode,
    questions: Vec<domain::Question>,
    /// The share of multiple-choice answers that must be right (0 to 1).
    pass_ratio: f64,
}

async fn create_questionnaire(
    State(app): State<App>,
    Path(org): Path<u64>,
    Json(new): Json<NewQuestionnaire>,
) -> Result<Json<serde_json::Value>, FlowError> {
    if new.questions.is_empty() {
        return Err(FlowError::BadRequest("a questionnaire needs at least one question".into()));
    }
    if !(0.0..=1.0).contains(&new.pass_ratio) {
        return Err(FlowError::BadRequest("pass_ratio must be between 0 and 1".into()));
    }
    let mut store = app.store();
    if !store.members.contains_key(&org) {
        return Err(FlowError::NotFound("organization"));
    }
    let id = store.next_id();
    store.questionnaires.insert(
        id,
        domain::Questionnaire {
            id,
            org_id: org,
            mode: new.evaluation_mode,
            questions: new.questions,
            pass_ratio: new.pass_ratio,
            submissions: 0,
            passed: 0,
        },
    );
    metric!(
        "revel_questionnaires_created_total",
        organization_id = org,
        evaluation_mode = new.evaluation_mode.as_str()
    )
    .inc();
    Ok(Json(serde_json::json!({ "questionnaire_id": id })))
}

#[derive(Scrub, serde::Deserialize)]
struct MembershipRequest {
    user_id: u64,
}

async fn membership_request(
    State(app): State<App>,
    Path(org): Path<u64>,
    Json(req): Json<MembershipRequest>,
) -> Result<Json<serde_json::Value>, FlowError> {
    let mut store = app.store();
    if !store.members.contains_key(&org) {
        return Err(FlowError::NotFound("organization"));
    }
    // Users known to the platform are approved; others rejected.
    let approved = store.users.contains_key(&req.user_id);
    note_active(&mut store, req.user_id);
    let status = if approved { "approved" } else { "rejected" };
    metric!("revel_membership_requests_total", organization_id = org, status = status).inc();
    if approved {
        let members = store.members.entry(org).or_default();
        members.insert(req.user_id);
        metric!("revel_organization_members", organization_id = org).set(members.len() as f64);
    }
    Ok(Json(serde_json::json!({ "status": status })))
}

async fn publish(State(app): State<App>, Path(event): Path<u64>) -> Result<StatusCode, FlowError> {
    flows::publish(&app, event).map(|()| StatusCode::ACCEPTED)
}

async fn cancel(State(app): State<App>, Path(event): Path<u64>) -> Result<StatusCode, FlowError> {
    flows::cancel(&app, event).await.map(|()| StatusCode::OK)
}

#[derive(Scrub, serde::Deserialize)]
struct Who {
    user_id: u64,
}

async fn eligibility(
    State(app): State<App>,
    Path(event): Path<u64>,
    Query(who): Query<Who>,
) -> Result<Json<flows::Eligibility>, FlowError> {
    app.touch(who.user_id);
    flows::event_eligibility(&app, event, who.user_id).map(Json)
}

async fn checkout(
    State(app): State<App>,
    Path((event, tier)): Path<(u64, u64)>,
    Json(req): Json<flows::CheckoutRequest>,
) -> Result<Json<flows::CheckoutOutcome>, FlowError> {
    obs_runtime::http::set_user_id(&req.user_id.to_string());
    app.touch(req.user_id);
    flows::checkout(&app, event, tier, &req).await.map(Json)
}

async fn check_in(State(app): State<App>, Path(ticket): Path<u64>) -> Result<StatusCode, FlowError> {
    let mut store = app.store();
    let open = store.tickets.get(&ticket).and_then(|t| store.events.get(&t.event_id)).map(|e| e.status);
    let t = store.tickets.get_mut(&ticket).ok_or(FlowError::NotFound("ticket"))?;
    if t.status != domain::TicketStatus::Active {
        return Err(FlowError::Forbidden("the ticket is not active".into()));
    }
    if open != Some(domain::EventStatus::Open) {
        return Err(FlowError::Forbidden("the event is not open".into()));
    }
    t.status = domain::TicketStatus::CheckedIn;
    let event_id = t.event_id;
    let org_id = store.events.get(&event_id).map(|e| e.org_id).unwrap_or_default();
    metric!("revel_tickets_checked_in_total", organization_id = org_id, event_id = event_id).inc();
    Ok(StatusCode::OK)
}

async fn submit(
    State(app): State<App>,
    Path(id): Path<u64>,
    Json(submission): Json<flows::Submission>,
) -> Result<Json<flows::Evaluation>, FlowError> {
    app.touch(submission.user_id);
    flows::evaluate(&app, id, &submission).await.map(Json)
}

#[derive(serde::Deserialize, Scrub)]
struct Review {
    approved: bool,
}

async fn review(
    State(app): State<App>,
    Path((id, user)): Path<(u64, u64)>,
    Json(review): Json<Review>,
) -> Result<StatusCode, FlowError> {
    flows::review(&app, id, user, review.approved).await.map(|()| StatusCode::OK)
}

async fn webhook(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Result<StatusCode, FlowError> {
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
    flows::handle_webhook(&app, signature, &body).await.map(|()| StatusCode::OK)
}
