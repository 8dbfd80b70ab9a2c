//! Revel, the reference service of obs. Runs with zero infrastructure:
//!
//! ```text
//! cargo run -p revel          # listens on 127.0.0.1:8000 (REVEL_ADDR to change), on the SQLite
//!                             # file revel.db (created; DATABASE_URL=postgres://… for PostgreSQL;
//!                             # REDIS_URL=redis://… for a Redis queue and cache)
//!                             # SIGTERM: requests get REVEL_DRAIN_SECONDS (10), telemetry 3 s
//! cargo run -p revel --bin revel-traffic   # mixed traffic against it, with a summary
//! curl localhost:8000/metrics
//! ```
//!
//! JSON logs go to stdout, spans to `obs-spans.jsonl` (or to an OTLP collector named by
//! `OTEL_EXPORTER_OTLP_ENDPOINT`), metrics to `/metrics`. `OBS_ENV=production` switches to the
//! production profile (10 % sampling, INFO logs). `PYROSCOPE_SERVER_ADDRESS` pushes continuous CPU
//! profiles to Pyroscope; in development, `curl -o cpu.svg 'localhost:8000/debug/pprof/flamegraph?seconds=10'`
//! takes a flamegraph, and <http://127.0.0.1:8000/debug/obs> shows traces, metrics, logs and
//! profiles in the browser.

use std::net::SocketAddr;
use std::time::Duration;

use axum::ServiceExt;
use obs_runtime::config::Config;

/// Revel, the reference service of obs: ticketing flows, instrumented, with zero infrastructure.
#[derive(clap::Parser)]
#[command(
    version,
    after_help = "Observability is configured by the environment: OBS_ENV (development, staging, production, test), \
                  ENABLE_OBSERVABILITY, OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER[_ARG] and the \
                  other OTEL_* variables, OBS_SPANS_FILE, OBS_LOG_FORMAT, OBS_PROFILING*, OBS_DB_SLOW_QUERY_MS, \
                  PYROSCOPE_SERVER_ADDRESS. \
                  Simulated services: REVEL_STRIPE_*, REVEL_LLM_*, REVEL_EMAIL_*, REVEL_PDF_* (latency and failure rate), \
                  REVEL_SIMULATORS_URL (run them apart with revel-simulators). \
                  See the README."
)]
struct Args {
    /// The address to listen on.
    #[arg(long, env = "REVEL_ADDR", default_value = "127.0.0.1:8000")]
    addr: SocketAddr,
    /// Seconds requests in flight get after SIGTERM before their connections are closed (then
    /// telemetry is flushed within 3 s).
    #[arg(long, env = "REVEL_DRAIN_SECONDS", default_value = "10", value_parser = drain_seconds)]
    drain_seconds: Duration,
    /// The database: a SQLite file (created and migrated when missing) or a PostgreSQL server
    /// (migrated), e.g. postgres://revel:secret@127.0.0.1:5432/revel.
    #[arg(long, env = "DATABASE_URL", default_value = revel::db::DEFAULT_URL, hide_env_values = true)]
    database_url: String,
    /// Redis, for the background queue and the event cache, e.g. redis://127.0.0.1:6379/0
    /// (without it, the queue runs in process and nothing is cached).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Whether the in-process Stripe simulator confirms each checkout with a signed webhook to
    /// this server, as Stripe does (off: only the webhooks others send arrive).
    #[arg(long, env = "REVEL_STRIPE_AUTO_CONFIRM", default_value = "true", action = clap::ArgAction::Set)]
    stripe_auto_confirm: bool,
}

fn drain_seconds(v: &str) -> Result<Duration, String> {
    match v.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=3600.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => Err("expected a number of seconds from 0 to 3600, e.g. 10".into()),
    }
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    let config = match Config::from_env() {
        // `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) wins when set.
        Ok(c) => revel::configure(
            c.default_service_name("revel")
                .service_version(env!("CARGO_PKG_VERSION"))
                // The commit, when the build sets REVEL_GIT_COMMIT: obs_build_info{commit}.
                .build_commit(option_env!("REVEL_GIT_COMMIT")),
        ),
        Err(e) => {
            eprintln!("revel: {e}");
            std::process::exit(2);
        }
    };
    let externals = match revel::external::Externals::from_env() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("revel: {e}");
            std::process::exit(2);
        }
    };
    let (addr, drain, database_url, redis_url) = (args.addr, args.drain_seconds, args.database_url, args.redis_url);
    let auto_confirm = args.stripe_auto_confirm;
    // Webhooks signed with a secret everyone can read would let anyone confirm a payment.
    let development = config.environment() == obs_runtime::config::Environment::Development;
    if !development && std::env::var("REVEL_STRIPE_WEBHOOK_SECRET").ok().is_none_or(|s| s.trim().is_empty()) {
        eprintln!(
            "revel: REVEL_STRIPE_WEBHOOK_SECRET must be set outside development (the Stripe webhook signing secret, whsec_…)"
        );
        std::process::exit(2);
    }
    // CPU profiles on demand at /debug/pprof/{profile,flamegraph}: on in development, elsewhere
    // only with OBS_PROFILING_ENDPOINTS=true (and OBS_PROFILING_TOKEN to require a token).
    let profiling = config.profiling_endpoints();
    // The telemetry viewer at /debug/obs: on in development, elsewhere only with OBS_VIEWER=true
    // and OBS_VIEWER_TOKEN.
    let viewer = config.viewer();
    let guard = obs_runtime::init(config).unwrap_or_else(|e| {
        eprintln!("revel: {e}");
        std::process::exit(2);
    });
    revel::register_metrics();
    // The simulated services fail now and then by default: say so, with how to change it.
    tracing::info!(
        stripe = %externals.stripe,
        llm = %externals.llm,
        email = %externals.email,
        pdf = %externals.pdf,
        "simulated external services (REVEL_<SERVICE>_LATENCY_MS, REVEL_<SERVICE>_FAILURE_RATE)"
    );
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    // Workers, busy time, queue depth and alive tasks at each scrape.
    obs_runtime::metrics::watch_tokio_runtime("main", rt.handle());
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap_or_else(|e| {
            eprintln!("revel: cannot listen on {addr}: {e}");
            std::process::exit(1);
        });
        let mut externals = externals;
        if externals.simulators_url.is_none() && auto_confirm {
            // The in-process Stripe simulator confirms each checkout with a signed webhook to
            // this server, as Stripe does.
            let mut local = listener.local_addr().unwrap_or(addr);
            if local.ip().is_unspecified() {
                local.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            externals.webhook_url = Some(format!("http://{local}/stripe/webhook"));
        }
        // A bad URL or an unreachable server: one clear line, at start-up.
        let (app, jobs) = revel::App::new(externals, &database_url, redis_url.as_deref()).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "revel cannot start");
            eprintln!("revel: {e}");
            std::process::exit(2);
        });
        tokio::spawn(revel::tasks::run_worker(app.clone(), jobs));
        tokio::spawn(revel::sweep_active_users(app.clone()));
        tracing::info!(%addr, "revel listening; metrics at /metrics");
        let service = ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<SocketAddr>(
            revel::service(app, profiling, viewer),
        );
        // Graceful shutdown, bounded: after the signal, requests in flight get `drain`; a client
        // that never finishes its request (a body trickled a byte at a time) cannot hold the
        // process past it.
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let server = axum::serve(listener, service).with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!(drain_seconds = drain.as_secs_f64(), "shutting down: draining requests in flight");
            let _ = stop_tx.send(true);
        });
        tokio::select! {
            served = server => served.expect("the server"),
            _ = async {
                let _ = stop_rx.wait_for(|stopped| *stopped).await;
                tokio::time::sleep(drain).await;
            } => tracing::warn!(
                drain_seconds = drain.as_secs_f64(),
                "requests still in flight after the drain deadline: their connections are closed"
            ),
        }
    });
    // The runtime first: the connections still open are dropped with it (their requests are
    // counted and logged as cancelled, status 499) and the tasks' telemetry is written. Then what
    // is queued is flushed, within the guard's deadline.
    rt.shutdown_timeout(Duration::from_secs(1));
    drop(guard);
}

/// Ctrl-C, or SIGTERM (what container runtimes send).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    // A profile being taken over HTTP would hold the graceful shutdown for its whole length.
    obs_runtime::profile::interrupt();
}
