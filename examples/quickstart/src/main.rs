//! The README's quickstart, exactly (a test keeps the two the same): a small axum service whose
//! requests are traced, logged and counted, with one span and one metric of its own.
//!
//! `cargo run -p quickstart`, then `curl localhost:3000/hello/ada@example.com` and
//! `curl localhost:3000/metrics`. `QUICKSTART_ADDR` changes the address.

use axum::{Router, extract::Path, routing::get};
use obs_runtime::{counted, traced_span};

// Step 3: instrument a function: a span, a counter checked against metrics.toml, a log line.
#[traced_span("greeting.compose", fields(style))]
#[counted(metric = "quickstart_greetings_total", labels(style = style))]
fn compose(name: &str, style: &str) -> String {
    tracing::info!(name, "composing a greeting"); // an email in `name` is logged as [EMAIL]
    if style == "formal" { format!("Good day, {name}.") } else { format!("Hello, {name}!") }
}

async fn hello(Path(name): Path<String>) -> String {
    compose(&name, "casual")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Step 4: start observability, configured by the environment (OBS_ENV, OTEL_*, RUST_LOG).
    let config = obs_runtime::config::Config::from_env()?.default_service_name("quickstart");
    let _guard = obs_runtime::init(config)?; // flushes logs and spans when dropped
    obs_runtime::metrics::register_catalog(obs_runtime::catalog!());

    // Step 5: serve, with every request traced, logged and counted.
    let app =
        Router::new().route("/hello/{name}", get(hello)).route("/metrics", get(obs_runtime::metrics::metrics_handler));
    let service = obs_runtime::http::ObsLayer::new()
        .request_metrics(
            obs_runtime::metric_def!("quickstart_http_requests_total"),
            obs_runtime::metric_def!("quickstart_http_request_duration_seconds"),
        )
        .wrap(app);
    let addr = std::env::var("QUICKSTART_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    axum::serve(listener, service.into_make_service())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
