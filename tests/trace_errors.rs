//! Errors mark spans without the `err` option: a function whose return type is written
//! `…Result<…>` records its `Err`, whatever the error type (its `Display`, else its `Debug`, else
//! its type name); `err = false` turns that off; a type merely named `Result` records nothing.

#[path = "support/otlp.rs"]
mod otlp;

use std::time::Duration;

use obs_runtime::config::{Config, Sampler};
use obs_runtime::traced_span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

#[traced_span("err.display")]
fn display(fail: bool) -> Result<u8, String> {
    if fail { Err("card declined for ana@example.org".into()) } else { Ok(1) }
}

#[derive(Debug)]
#[allow(dead_code)] // read through `Debug`
struct Declined {
    code: u16,
}

#[traced_span("err.debug")]
fn debug() -> Result<(), Declined> {
    Err(Declined { code: 402 })
}

struct Opaque;

#[traced_span("err.opaque")]
fn opaque() -> Result<(), Opaque> {
    Err(Opaque)
}

#[traced_span("err.generic")]
fn generic<E>(e: E) -> Result<(), E> {
    Err(e)
}

#[traced_span("err.off", err = false)]
fn off() -> Result<(), String> {
    Err("an expected outcome, not a failure".into())
}

#[traced_span("err.io")]
async fn io() -> std::io::Result<()> {
    tokio::task::yield_now().await;
    Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "smtp timed out"))
}

#[traced_span("err.async_off", err = false)]
async fn async_off() -> Result<(), String> {
    Err("expected".into())
}

mod custom {
    /// Not `core::result::Result`, only named so.
    pub struct Result<T>(pub T);
}

#[traced_span("err.custom")]
fn custom() -> custom::Result<u8> {
    custom::Result(1)
}

#[test]
fn err_returns_mark_spans_without_the_option() {
    let (receiver, url) = otlp::Receiver::start();
    let config = Config::from_vars(|_| None).unwrap().traces_endpoint(url).sampler(Sampler::AlwaysOn);
    let guard = obs_runtime::init(config).unwrap();
    assert_eq!(display(false), Ok(1));
    assert!(display(true).is_err());
    assert!(debug().is_err());
    assert!(opaque().is_err());
    assert!(generic(7u8).is_err());
    assert!(off().is_err());
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert!(rt.block_on(io()).is_err());
    assert!(rt.block_on(async_off()).is_err());
    assert_eq!(custom().0, 1);
    assert!(guard.shutdown());
    let spans = receiver.wait_for(9, Duration::from_secs(5));
    assert_eq!(spans.len(), 9);
    // (span name, error message) for each span, sorted.
    let mut seen: Vec<(String, Option<String>)> = spans
        .iter()
        .map(|s| {
            let status = s.status.clone().unwrap_or_default();
            let error = (status.code == StatusCode::Error as i32).then_some(status.message);
            (s.name.clone(), error)
        })
        .collect();
    seen.sort();
    let failed = |name: &str, message: &str| (name.to_owned(), Some(message.to_owned()));
    let fine = |name: &str| (name.to_owned(), None);
    assert_eq!(
        seen,
        [
            fine("err.async_off"),
            fine("err.custom"),
            failed("err.debug", "Declined { code: 402 }"),
            fine("err.display"),
            // Scrubbed like any error text.
            failed("err.display", "card declined for [EMAIL]"),
            // A generic error without bounds: its type name.
            failed("err.generic", "u8"),
            failed("err.io", "smtp timed out"),
            fine("err.off"),
            failed("err.opaque", "trace_errors::Opaque"),
        ]
    );
}
