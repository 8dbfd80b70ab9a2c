//! Outgoing HTTP calls as `CLIENT` spans, for [reqwest](https://docs.rs/reqwest) through
//! [reqwest-middleware](https://docs.rs/reqwest-middleware) (feature `reqwest`).
//!
//! Added once where the client is built, [`ClientTelemetry`] makes each request:
//!
//! - a `CLIENT` span, a child of the current span, per OpenTelemetry's HTTP client conventions:
//!   named by the method (`POST`), with `http.request.method`, `server.address`, `server.port`,
//!   `url.full` (userinfo and every query value replaced by `REDACTED`, the rest scrubbed as
//!   text), `http.response.status_code`, `error.type` (the status code from 400 on, else the
//!   transport error's kind: `timeout`, `connect`, `request`, …), and
//!   `http.request.resend_count` from the second attempt on (place the middleware after a retry
//!   middleware to see each attempt);
//! - `traceparent`/`tracestate` (and `baggage`) headers naming **that** span as the parent, so
//!   the called service's server span is its child;
//! - an observation of the catalog histogram given to [`ClientTelemetry::duration`], labelled
//!   by any of `method`, `server` (`server.address`) and `status_class` (`2xx` … `5xx`, or
//!   `error` when no response came).
//!
//! A response from 400 on and a transport error mark the span failed (the conventions' rule for
//! client spans). A header the caller set is replaced, not duplicated.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use obs_runtime::client::ClientTelemetry;
//!
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(ClientTelemetry::new()) // add `.duration(metric_def!("…"))` for the histogram
//!     .build();
//! let response = client.post("http://127.0.0.1:9000/v1/checkout/sessions").send().await?;
//! # let _ = response;
//! # Ok(())
//! # }
//! ```

use std::borrow::Cow;
use std::time::Instant;

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use crate::metrics::{Family, MetricDef, MetricKind};
use crate::trace::{Kind, SpanSite, SpanState};

/// The middleware; see the [module](self) documentation.
#[derive(Clone, Default)]
pub struct ClientTelemetry {
    duration: Option<(&'static Family, [Slot; 3])>,
}

impl std::fmt::Debug for ClientTelemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTelemetry").field("duration", &self.duration.map(|(f, _)| f.def().name)).finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Method,
    Server,
    StatusClass,
    None,
}

impl ClientTelemetry {
    /// Spans only, no metric.
    pub fn new() -> Self {
        Self::default()
    }

    /// Each request's duration in seconds, until the response's headers (or the error): a
    /// histogram labelled by any of `method`, `server` and `status_class`.
    ///
    /// # Panics
    /// If `def` is not a histogram, or has a label the middleware cannot fill.
    pub fn duration(mut self, def: &'static MetricDef) -> Self {
        assert!(
            matches!(def.kind, MetricKind::Histogram),
            "the HTTP client metric `{}` must be a histogram",
            def.name
        );
        let slots = crate::metrics::label_slots(
            def,
            "the HTTP client middleware",
            &[("method", Slot::Method), ("server", Slot::Server), ("status_class", Slot::StatusClass)],
            Slot::None,
        );
        self.duration = Some((crate::metrics::registry().family(def), slots));
        self
    }
}

/// How many times this request went through the middleware before (a retry middleware runs
/// the rest of the chain again with the same extensions).
#[derive(Clone, Copy)]
struct Attempts(u32);

/// The span's name and the metric's `method`: OpenTelemetry's known methods, `_OTHER` else.
fn method_name(method: &http::Method) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE"];
    KNOWN.iter().copied().find(|m| *m == method.as_str()).unwrap_or("_OTHER")
}

fn site(method: &'static str) -> &'static SpanSite {
    macro_rules! sites {
        ($($m:literal),*) => {
            &[$(SpanSite { name: $m, level: 2, kind: Kind::Client }),*]
        };
    }
    static SITES: &[SpanSite] = sites!("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE");
    static OTHER: SpanSite = SpanSite { name: "HTTP", level: 2, kind: Kind::Client };
    SITES.iter().find(|s| s.name == method).unwrap_or(&OTHER)
}

/// `url` as `url.full` may show it: userinfo and query values replaced by `REDACTED` (as
/// OpenTelemetry's conventions write it), the path scrubbed as text, no fragment.
fn url_full(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_username("REDACTED");
        let _ = u.set_password(Some("REDACTED"));
    }
    if u.query().is_some() {
        let keys: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        let mut q = u.query_pairs_mut();
        q.clear();
        for k in &keys {
            q.append_pair(k, "REDACTED");
        }
        drop(q);
    }
    u.set_fragment(None);
    // The path may carry personal data (`/users/ana@example.org`): scrubbed as text.
    if let Cow::Owned(path) = crate::scrub::scrub_text(url.path()) {
        u.set_path(&path);
    }
    u.into()
}

/// `error.type` of a request that got no response.
fn transport_error(e: &reqwest_middleware::Error) -> &'static str {
    match e {
        reqwest_middleware::Error::Reqwest(e) if e.is_timeout() => "timeout",
        reqwest_middleware::Error::Reqwest(e) if e.is_connect() => "connect",
        reqwest_middleware::Error::Reqwest(e) if e.is_redirect() => "redirect",
        reqwest_middleware::Error::Reqwest(e) if e.is_body() || e.is_decode() => "body",
        reqwest_middleware::Error::Reqwest(_) => "request",
        reqwest_middleware::Error::Middleware(_) => "middleware",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[async_trait::async_trait]
impl Middleware for ClientTelemetry {
    async fn handle(
        &self,
        mut req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        if crate::is_off() {
            return next.run(req, extensions).await;
        }
        let resends = match extensions.get_mut::<Attempts>() {
            Some(a) => {
                a.0 += 1;
                a.0
            }
            None => {
                extensions.insert(Attempts(0));
                0
            }
        };
        let method = method_name(req.method());
        let mut span = SpanState::start(site(method));
        let url = req.url();
        // The metric's `server` label, kept past the request (which the call consumes).
        let server: Option<String> = self.duration.map(|_| url.host_str().unwrap_or("").to_owned());
        if span.is_recording() {
            span.set_clean_attribute("http.request.method", method);
            if method == "_OTHER" {
                span.set_attribute("http.request.method_original", req.method().as_str().to_owned());
            }
            span.set_attribute("server.address", url.host_str().unwrap_or("").to_owned());
            if let Some(port) = url.port_or_known_default() {
                span.set_clean_attribute("server.port", i64::from(port));
            }
            span.set_clean_attribute("url.full", url_full(url));
            if resends > 0 {
                span.set_clean_attribute("http.request.resend_count", i64::from(resends));
            }
        }
        // The headers name this span as the parent (not the caller's): made with it current.
        let prev = span.swap_in();
        let outgoing = crate::trace::outgoing_headers();
        span.swap_out(prev);
        let headers = req.headers_mut();
        for (name, value) in outgoing {
            if let Ok(value) = http::HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        let start = Instant::now();
        let result = next.run(req, extensions).await;
        let elapsed = start.elapsed();
        let class = match &result {
            Ok(response) => {
                let status = response.status().as_u16();
                span.set_clean_attribute("http.response.status_code", i64::from(status));
                if status >= 400 {
                    if span.is_recording() {
                        span.set_clean_attribute("error.type", status.to_string());
                    }
                    span.fail_typed("http", || format!("HTTP {status}"));
                }
                status_class(status)
            }
            Err(e) => {
                let kind = transport_error(e);
                span.set_clean_attribute("error.type", kind);
                span.fail_typed(kind, || e.to_string());
                "error"
            }
        };
        if let Some((family, slots)) = &self.duration {
            crate::metrics::series_by_slots(family, slots, |s| match s {
                Slot::Method => method,
                Slot::Server => server.as_deref().unwrap_or(""),
                Slot::StatusClass => class,
                Slot::None => "",
            })
            .observe(elapsed.as_secs_f64());
        }
        drop(span);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_full_hides_userinfo_and_query_values() {
        let u = reqwest::Url::parse("https://ana:hunter2@api.example.org:8443/v1/x?token=abc&email=a%40b.org#frag")
            .unwrap();
        let full = url_full(&u);
        assert_eq!(full, "https://REDACTED:REDACTED@api.example.org:8443/v1/x?token=REDACTED&email=REDACTED");
        let plain = reqwest::Url::parse("http://127.0.0.1:9000/v1/checkout").unwrap();
        assert_eq!(url_full(&plain), "http://127.0.0.1:9000/v1/checkout");
        // An email in the path is scrubbed as text.
        let path = reqwest::Url::parse("http://h/users/ana@example.org/x").unwrap();
        assert!(!url_full(&path).contains("ana@example.org"), "{}", url_full(&path));
    }

    #[test]
    fn methods_and_classes() {
        assert_eq!(method_name(&http::Method::POST), "POST");
        assert_eq!(method_name(&http::Method::from_bytes(b"PURGE").unwrap()), "_OTHER");
        assert_eq!(site("_OTHER").name, "HTTP");
        assert_eq!(site("PATCH").name, "PATCH");
        assert_eq!((status_class(204), status_class(404), status_class(503)), ("2xx", "4xx", "5xx"));
    }
}
