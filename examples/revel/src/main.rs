//! Revel, the reference service of obs. Runs with zero infrastructure:
//!
//! ```text
//! cargo run -p revel          # listens on 127.0.0.1:8000 (REVEL_ADDR to change)
//! cargo run -p revel --bin revel-traffic   # mixed traffic against it, with a summary
//! curl localhost:8000/metrics
//! ```
//!
//! JSON logs go to stdout, spans to `obs-spans.jsonl` (or to an OTLP collector named by
//! `OTEL_EXPORTER_OTLP_ENDPOINT`), metrics to `/metrics`. `OBS_ENV=production` switches to the
//! production profile (10 % sampling, INFO logs). `PYROSCOPE_SERVER_ADDRESS` pushes continuous CPU
//! profiles to Pyroscope; in development, `curl -o cpu.svg 'localhost:8000/debug/pprof/flamegraph?seconds=10'`
//! takes a flamegraph.

use std::net::SocketAddr;

use obs_runtime::config::Config;

fn main() {
    let config = match Config::from_env() {
        // `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) wins when set.
        Ok(c) => c.default_service_name("revel").service_version(env!("CARGO_PKG_VERSION")),
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
    let addr: SocketAddr = match std::env::var("REVEL_ADDR").as_deref().unwrap_or("127.0.0.1:8000").parse() {
        Ok(a) => a,
        Err(_) => {
            eprintln!("revel: REVEL_ADDR must be an address such as 127.0.0.1:8000");
            std::process::exit(2);
        }
    };
    // Webhooks signed with a secret everyone can read would let anyone confirm a payment.
    let development = config.environment() == obs_runtime::config::Environment::Development;
    if !development && std::env::var_os("REVEL_STRIPE_WEBHOOK_SECRET").is_none() {
        eprintln!(
            "revel: REVEL_STRIPE_WEBHOOK_SECRET must be set outside development (the Stripe webhook signing secret, whsec_…)"
        );
        std::process::exit(2);
    }
    // CPU profiles on demand at /debug/pprof/{profile,flamegraph}: on in development, elsewhere
    // only with OBS_PROFILING_ENDPOINTS=true (and OBS_PROFILING_TOKEN to require a token).
    let profiling = config.profiling_endpoints();
    let guard = obs_runtime::init(config).unwrap_or_else(|e| {
        eprintln!("revel: {e}");
        std::process::exit(2);
    });
    revel::register_metrics();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    rt.block_on(async move {
        let (app, jobs) = revel::App::new(externals);
        tokio::spawn(revel::tasks::run_worker(app.clone(), jobs));
        tokio::spawn(revel::sweep_active_users(app.clone()));
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap_or_else(|e| {
            eprintln!("revel: cannot listen on {addr}: {e}");
            std::process::exit(1);
        });
        tracing::info!(%addr, "revel listening; metrics at /metrics");
        let service = revel::router(app)
            .merge(obs_runtime::profile::router(profiling))
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service).with_graceful_shutdown(shutdown_signal()).await.expect("the server");
    });
    // The runtime first (its tasks' telemetry included), then what is queued is flushed, within
    // the shutdown deadline.
    drop(rt);
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
