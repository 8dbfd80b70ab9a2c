//! Revel's simulated external services (Stripe, the LLM provider, email) as a process of their
//! own, so that they appear as a service of their own in traces (`revel-simulators`) and Revel
//! reaches them by `REVEL_SIMULATORS_URL`:
//!
//! ```text
//! cargo run -p revel --bin revel-simulators -- --webhook-url http://127.0.0.1:8000/stripe/webhook
//! REVEL_SIMULATORS_URL=http://127.0.0.1:9000 cargo run -p revel
//! ```

use std::net::SocketAddr;

use obs_runtime::config::Config;

/// Revel's simulated Stripe, LLM and email services, over HTTP.
#[derive(clap::Parser)]
#[command(
    name = "revel-simulators",
    version,
    after_help = "Latency and failure rate of each service: REVEL_STRIPE_*, REVEL_LLM_*, REVEL_EMAIL_* (as for revel). \
                  Observability is configured by the environment, as for revel."
)]
struct Args {
    /// The address to listen on.
    #[arg(long, env = "REVEL_SIMULATORS_ADDR", default_value = "127.0.0.1:9000")]
    addr: SocketAddr,
    /// Where the Stripe simulator posts each checkout's signed `checkout.session.completed`
    /// webhook (Revel's /stripe/webhook); none: it posts none.
    #[arg(long, env = "REVEL_STRIPE_WEBHOOK_URL")]
    webhook_url: Option<String>,
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    let config = match Config::from_env() {
        Ok(c) => {
            revel::configure(c.default_service_name("revel-simulators").service_version(env!("CARGO_PKG_VERSION")))
        }
        Err(e) => {
            eprintln!("revel-simulators: {e}");
            std::process::exit(2);
        }
    };
    let mut externals = revel::external::Externals::from_env().unwrap_or_else(|e| {
        eprintln!("revel-simulators: {e}");
        std::process::exit(2);
    });
    externals.webhook_url = args.webhook_url;
    let guard = obs_runtime::init(config).unwrap_or_else(|e| {
        eprintln!("revel-simulators: {e}");
        std::process::exit(2);
    });
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.addr).await.unwrap_or_else(|e| {
            eprintln!("revel-simulators: cannot listen on {}: {e}", args.addr);
            std::process::exit(1);
        });
        tracing::info!(addr = %args.addr, "revel-simulators listening");
        let served = axum::serve(listener, revel::simulators::router(externals.simulated()))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await;
        if let Err(e) = served {
            eprintln!("revel-simulators: {e}");
        }
    });
    drop(guard);
}
