//! Revel, the reference service of obs: an event-ticketing platform on a real database (SQLite by
//! default, PostgreSQL by `DATABASE_URL`) with every critical flow instrumented the way the spec
//! names it. `cargo run -p revel` runs it with zero infrastructure; see the README for the LGTM
//! stack.

pub mod cache;
pub mod db;
pub mod domain;
pub mod external;
pub mod flows;
pub mod simulators;
pub mod tasks;

use std::sync::Arc;

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
    pub db: db::Pool,
    pub backend: db::Backend,
    pub externals: Arc<external::Externals>,
    pub tasks: tasks::Queue,
    /// Redis (`REDIS_URL`): the queue's backend and the event cache; `None` runs in process.
    pub redis: Option<cache::Redis>,
    /// Whose turn it is to write (SQLite's one writer, queued in the process).
    pub writer: db::Writer,
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
    /// The database failed (its span and log line say how; the client is told no more).
    Database(sqlx::Error),
}

impl From<sqlx::Error> for FlowError {
    fn from(e: sqlx::Error) -> Self {
        FlowError::Database(e)
    }
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
            FlowError::Database(sqlx::Error::PoolTimedOut) => f.write_str("the database is busy; try again"),
            FlowError::Database(_) => f.write_str("database error"),
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
            FlowError::Database(sqlx::Error::PoolTimedOut) => StatusCode::SERVICE_UNAVAILABLE,
            FlowError::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if let FlowError::Database(e) = &self {
            // Its text may quote a value: the kind only (the query's span has the code).
            tracing::error!(error_kind = database_error_kind(e), "database error");
        }
        (status, Json(serde_json::json!({ "error": self.to_string() }))).into_response()
    }
}

/// A database error's kind, for a log line (never its text, which may quote a value).
fn database_error_kind(e: &sqlx::Error) -> String {
    match e.as_database_error() {
        Some(d) => format!("{:?} ({})", d.kind(), d.code().unwrap_or_default()),
        None => match e {
            sqlx::Error::PoolTimedOut => "pool_timed_out".into(),
            sqlx::Error::Io(_) => "io".into(),
            _ => "other".into(),
        },
    }
}

impl App {
    /// Connects to `database_url` (migrating it) and, when given, to Redis at `redis_url` (the
    /// queue's backend and the event cache), with the given external services; the worker's
    /// queue end is returned for [`tasks::run_worker`].
    pub async fn new(
        externals: external::Externals,
        database_url: &str,
        redis_url: Option<&str>,
    ) -> Result<(App, tasks::Receiver), String> {
        let (db, backend) = db::connect(database_url, 16).await?;
        let redis = match redis_url {
            Some(url) => Some(cache::Redis::connect(url).await?),
            None => None,
        };
        App::with_db(db, backend, externals, redis).await
    }

    /// A database of its own (a SQLite file under the temporary directory), for tests; the
    /// in-process queue.
    pub async fn for_tests(externals: external::Externals) -> (App, tasks::Receiver) {
        let (db, backend) = db::for_tests().await;
        App::with_db(db, backend, externals, None).await.expect("a test app")
    }

    /// An app on a pool already connected and migrated, and on `redis` if any.
    pub async fn with_db(
        db: db::Pool,
        backend: db::Backend,
        externals: external::Externals,
        redis: Option<cache::Redis>,
    ) -> Result<(App, tasks::Receiver), String> {
        let (queue, rx) = match &redis {
            Some(r) => tasks::Queue::redis(r),
            None => tasks::Queue::new(),
        };
        let writer = db::Writer::for_backend(backend);
        let app = App { db, backend, externals: Arc::new(externals), tasks: queue, redis, writer };
        let start = async {
            let active: i64 =
                sqlx::query_scalar("SELECT count(*) FROM events WHERE status = 'open'").fetch_one(&app.db).await?;
            metric!("revel_events_active").set(active as f64);
            let members: Vec<(i64, i64)> =
                sqlx::query_as("SELECT org_id, count(*) FROM memberships GROUP BY org_id").fetch_all(&app.db).await?;
            for (org, n) in members {
                metric!("revel_organization_members", organization_id = org).set(n as f64);
            }
            Ok::<_, sqlx::Error>(())
        };
        start.await.map_err(|e| format!("reading the database at start-up: {e}"))?;
        Ok((app, rx))
    }

    /// Drops an event's cached details (after a change to it is committed).
    pub async fn forget_event(&self, event_id: u64) {
        use redis::AsyncCommands as _;
        if let Some(redis) = &self.redis {
            let removed: redis::RedisResult<i64> = redis.conn.clone().del(cache::event_key(event_id)).await;
            if let Err(e) = removed {
                tracing::warn!(event_id, error_kind = ?e.kind(), "a cached event was not dropped (it expires by itself)");
            }
        }
    }

    /// A transaction that writes (see [`db::Backend::begin_write`]), begun in its writer's turn
    /// ([`db::Writer`]).
    pub async fn begin_write(&self) -> Result<db::Tx, sqlx::Error> {
        self.writer.begin(&self.db, self.backend).await
    }

    /// Runs one `INSERT`, `UPDATE` or `DELETE` on [`App::db`], outside a transaction, in its
    /// writer's turn ([`db::Writer`]): `statement` is called once the turn is taken (so its span
    /// and timing start then), e.g. `app.write(|| sqlx::query("…").execute(&app.db)).await`. Never
    /// while this task holds a [`db::Tx`]: it would wait for itself, 5 s.
    pub async fn write<F: std::future::Future>(&self, statement: impl FnOnce() -> F) -> F::Output {
        let _turn = self.writer.turn().await;
        statement().await
    }

    /// `sqlite` or `postgres`, for the backend in use.
    pub fn sql(&self, sqlite: &'static str, postgres: &'static str) -> &'static str {
        self.backend.pick(sqlite, postgres)
    }

    /// Notes that a user did something: a user not active in the last 7 days counts in
    /// `revel_users_active_weekly` at once; [`sweep_active_users`] takes out those who stopped.
    /// Unknown users are ignored (client-sent ids must not create anything); the time is written
    /// at most once a minute per user.
    pub async fn touch(&self, user: u64) {
        if let Err(e) = note_active(self, user).await {
            tracing::warn!(error_kind = database_error_kind(&e), user_id = user, "user activity not recorded");
        }
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

async fn note_active(app: &App, user: u64) -> Result<(), sqlx::Error> {
    let last: Option<Option<i64>> = sqlx::query_scalar("SELECT last_active_at FROM users WHERE id = $1")
        .bind(user as i64)
        .fetch_optional(&app.db)
        .await?;
    let Some(last) = last else { return Ok(()) };
    let now = now_secs();
    if last.is_some_and(|t| now - t < 60) {
        return Ok(());
    }
    app.write(|| {
        sqlx::query("UPDATE users SET last_active_at = $1 WHERE id = $2").bind(now).bind(user as i64).execute(&app.db)
    })
    .await?;
    if last.is_none_or(|t| now - t >= domain::ACTIVE_WINDOW.as_secs() as i64) {
        metric!("revel_users_active_weekly").inc();
    }
    Ok(())
}

/// Every minute, sets `revel_users_active_weekly` to the users active in the last 7 days (a user
/// whose week ran out is counted until the next sweep).
pub async fn sweep_active_users(app: App) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        every.tick().await;
        let since = now_secs() - domain::ACTIVE_WINDOW.as_secs() as i64;
        match sqlx::query_scalar::<_, i64>("SELECT count(*) FROM users WHERE last_active_at >= $1")
            .bind(since)
            .fetch_one(&app.db)
            .await
        {
            Ok(active) => metric!("revel_users_active_weekly").set(active as f64),
            Err(e) => tracing::warn!(error_kind = database_error_kind(&e), "active users not counted"),
        }
    }
}

/// Revel's additions to the telemetry configuration, before `obs_runtime::init`.
///
/// `stripe_session_id` is kept in logs and spans although its name contains `session_id`, which
/// obs redacts by default (a web session id is a credential). A Stripe Checkout session id is
/// not: it is what support searches Stripe's dashboard with, and the seed logs it on
/// `stripe_checkout_session_created`. Its value is still scrubbed as text.
pub fn configure(config: obs_runtime::config::Config) -> obs_runtime::config::Config {
    let config = config.scrub(obs_runtime::scrub::Rules::default().keep_key("stripe_session_id"));
    // Health checks and scrapes are never traced, every checkout is; the rest at the sampler's
    // ratio (10 % in production). `OBS_TRACES_SAMPLING_RULES` replaces these.
    if std::env::var_os("OBS_TRACES_SAMPLING_RULES").is_some() {
        return config;
    }
    use obs_runtime::config::SamplingRule;
    config.sampling_rules([
        SamplingRule::route("/healthz").never(),
        SamplingRule::route("/metrics").never(),
        SamplingRule::route("/events/{event}/tiers/{tier}/checkout").method("POST").always(),
    ])
}

/// Registers the catalog and the task metrics (once per process).
pub fn register_metrics() {
    obs_runtime::metrics::register_catalog(obs_runtime::catalog!());
    obs_runtime::task::record_metrics(
        obs_runtime::metric_def!("revel_celery_tasks_total"),
        obs_runtime::metric_def!("revel_celery_task_duration_seconds"),
    );
    obs_runtime::task::record_queue_depth(obs_runtime::metric_def!("revel_celery_queue_depth"));
}

/// The HTTP API's routes (serve [`service`]: it is observed).
pub fn router(app: App) -> Router {
    Router::new()
        .route("/register", post(register))
        .route("/organizations/{org}/events", post(create_event))
        .route("/organizations/{org}/membership-requests", post(membership_request))
        .route("/organizations/{org}/questionnaires", post(create_questionnaire))
        .route("/events/{event}", get(event_details))
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
/// layer, so that every request is seen (an unknown path's 404 included) whatever is merged in;
/// beside it, the telemetry viewer at `/debug/obs`, outside the layer (its pages, polling four
/// times a second, are not the service's traffic).
pub fn service(
    app: App,
    profiling: obs_runtime::profile::EndpointSettings,
    viewer: obs_runtime::viewer::Settings,
) -> Router {
    Router::new().merge(obs_runtime::viewer::router(viewer)).fallback_service(api(app, profiling))
}

/// The API and the profiling endpoints, wrapped by the HTTP layer.
fn api(app: App, profiling: obs_runtime::profile::EndpointSettings) -> obs_runtime::http::ObsService<Router> {
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
    let id: i64 = app
        .write(|| {
            sqlx::query_scalar("INSERT INTO users (email, is_staff) VALUES ($1, 0) RETURNING id")
                .bind(&form.email)
                .fetch_one(&app.db)
        })
        .await?;
    metric!("revel_users_registered_total", registration_method = "email").inc();
    app.touch(id as u64).await;
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

/// Whether the organization exists (its id labels metrics: only existing ones may create series).
async fn organization_exists(app: &App, org: u64) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM organizations WHERE id = $1")
        .bind(org as i64)
        .fetch_optional(&app.db)
        .await?;
    Ok(found.is_some())
}

/// A value for a BIGINT column (the API's numbers are unsigned; the database's signed).
fn column(n: u64, what: &'static str) -> Result<i64, FlowError> {
    i64::try_from(n).map_err(|_| FlowError::BadRequest(format!("{what} is too large")))
}

async fn create_event(
    State(app): State<App>,
    Path(org): Path<u64>,
    Json(new): Json<NewEvent>,
) -> Result<Json<serde_json::Value>, FlowError> {
    use domain::Stored as _;
    if !organization_exists(&app, org).await? {
        return Err(FlowError::NotFound("organization"));
    }
    let mut tx = app.begin_write().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO events (org_id, name, status, visibility) VALUES ($1, $2, 'draft', $3) RETURNING id",
    )
    .bind(org as i64)
    .bind(&new.name)
    .bind(new.visibility.as_str())
    .fetch_one(&mut *tx)
    .await?;
    let mut tier_ids = Vec::new();
    for t in &new.tiers {
        let tier_id: i64 = sqlx::query_scalar(
            "INSERT INTO tiers (event_id, price_cents, capacity, payment_method) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(id)
        .bind(column(t.price_cents, "price_cents")?)
        .bind(column(t.capacity, "capacity")?)
        .bind(t.payment_method.as_str())
        .fetch_one(&mut *tx)
        .await?;
        tier_ids.push(tier_id);
    }
    tx.commit().await?;
    let event_type = new.visibility.event_type();
    metric!(
        "revel_events_created_total",
        organization_id = org,
        event_type = event_type,
        has_tickets = !new.tiers.is_empty()
    )
    .inc();
    for t in &new.tiers {
        metric!("revel_ticket_tiers_by_type_total", organization_id = org, payment_method = t.payment_method.as_str())
            .inc();
    }
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
    use domain::Stored as _;
    if new.questions.is_empty() {
        return Err(FlowError::BadRequest("a questionnaire needs at least one question".into()));
    }
    if !(0.0..=1.0).contains(&new.pass_ratio) {
        return Err(FlowError::BadRequest("pass_ratio must be between 0 and 1".into()));
    }
    if !organization_exists(&app, org).await? {
        return Err(FlowError::NotFound("organization"));
    }
    let questions = serde_json::to_string(&new.questions).map_err(|e| FlowError::BadRequest(e.to_string()))?;
    let insert = "INSERT INTO questionnaires (org_id, evaluation_mode, questions, pass_ratio) \
                  VALUES ($1, $2, $3, $4) RETURNING id";
    let id: i64 = app
        .write(|| {
            sqlx::query_scalar(insert)
                .bind(org as i64)
                .bind(new.evaluation_mode.as_str())
                .bind(questions)
                .bind(new.pass_ratio)
                .fetch_one(&app.db)
        })
        .await?;
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
    if !organization_exists(&app, org).await? {
        return Err(FlowError::NotFound("organization"));
    }
    // Users known to the platform are approved; others rejected.
    let user = column(req.user_id, "user_id")?;
    let known: Option<i64> =
        sqlx::query_scalar("SELECT id FROM users WHERE id = $1").bind(user).fetch_optional(&app.db).await?;
    let approved = known.is_some();
    app.touch(req.user_id).await;
    let status = if approved { "approved" } else { "rejected" };
    metric!("revel_membership_requests_total", organization_id = org, status = status).inc();
    if approved {
        let mut tx = app.begin_write().await?;
        sqlx::query("INSERT INTO memberships (org_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(org as i64)
            .bind(user)
            .execute(&mut *tx)
            .await?;
        let members: i64 = sqlx::query_scalar("SELECT count(*) FROM memberships WHERE org_id = $1")
            .bind(org as i64)
            .fetch_one(&mut *tx)
            .await?;
        // Set before the commit, under the writer's lock: two requests cannot leave the older count.
        metric!("revel_organization_members", organization_id = org).set(members as f64);
        tx.commit().await?;
    }
    Ok(Json(serde_json::json!({ "status": status })))
}

async fn event_details(State(app): State<App>, Path(event): Path<u64>) -> Result<Json<flows::EventDetails>, FlowError> {
    flows::event_details(&app, event).await?.map(Json).ok_or(FlowError::NotFound("event"))
}

async fn publish(State(app): State<App>, Path(event): Path<u64>) -> Result<StatusCode, FlowError> {
    flows::publish(&app, event).await.map(|()| StatusCode::ACCEPTED)
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
    app.touch(who.user_id).await;
    flows::event_eligibility(&app, event, who.user_id).await.map(Json)
}

async fn checkout(
    State(app): State<App>,
    Path((event, tier)): Path<(u64, u64)>,
    Json(req): Json<flows::CheckoutRequest>,
) -> Result<Json<flows::CheckoutOutcome>, FlowError> {
    obs_runtime::http::set_user_id(&req.user_id.to_string());
    app.touch(req.user_id).await;
    flows::checkout(&app, event, tier, &req).await.map(Json)
}

async fn check_in(State(app): State<App>, Path(ticket): Path<u64>) -> Result<StatusCode, FlowError> {
    let ticket = column(ticket, "ticket")?;
    let mut tx = app.begin_write().await?;
    let row: Option<(String, String, i64, i64)> = sqlx::query_as(app.sql(
        "SELECT t.status, e.status, e.org_id, t.event_id FROM tickets t JOIN events e ON e.id = t.event_id WHERE t.id = $1",
        "SELECT t.status, e.status, e.org_id, t.event_id FROM tickets t JOIN events e ON e.id = t.event_id WHERE t.id = $1 FOR UPDATE OF t",
    ))
    .bind(ticket)
    .fetch_optional(&mut *tx)
    .await?;
    let (ticket_status, event_status, org_id, event_id) = row.ok_or(FlowError::NotFound("ticket"))?;
    if ticket_status != "active" {
        return Err(FlowError::Forbidden("the ticket is not active".into()));
    }
    if event_status != "open" {
        return Err(FlowError::Forbidden("the event is not open".into()));
    }
    sqlx::query("UPDATE tickets SET status = 'checked_in' WHERE id = $1").bind(ticket).execute(&mut *tx).await?;
    tx.commit().await?;
    metric!("revel_tickets_checked_in_total", organization_id = org_id, event_id = event_id).inc();
    Ok(StatusCode::OK)
}

async fn submit(
    State(app): State<App>,
    Path(id): Path<u64>,
    Json(submission): Json<flows::Submission>,
) -> Result<Json<flows::Evaluation>, FlowError> {
    app.touch(submission.user_id).await;
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
